import FeatStreamTestSupport
import Foundation
import NumpyFormat
import ONNXProto
import XCTest
@testable import HeadExport

final class ONNXClassifierExporterTests: XCTestCase {
    var checkScript: URL { repositoryRoot.appendingPathComponent("Tests/Tools/check_onnx_classifier.py") }

    /// EfficientNet-Lite0 (opset 13): `features` is declared `[N, 1280]`, so no Flatten; a 2-layer MLP.
    func testLite0ClassifierMatchesSwiftInOnnxruntime() throws {
        try checkRealBackbone(
            model: "efficientnet-lite0", featureNode: "features", inputShape: [2, 3, 224, 224],
            inputRange: -1...1, hidden: 32, classes: 10, expectFlatten: false)
    }

    /// open-nsfw (tf2onnx, opset 9, IR 4): `pool/AvgPool:0` is `[N, 1024, 1, 1]`; softmax regression.
    func testOpenNSFWClassifierMatchesSwiftInOnnxruntime() throws {
        try checkRealBackbone(
            model: "open-nsfw", featureNode: "pool/AvgPool:0", inputShape: [2, 224, 224, 3],
            inputRange: -120...130, hidden: nil, classes: 3, expectFlatten: true)
    }

    private func checkRealBackbone(
        model: String, featureNode: String, inputShape: [Int], inputRange: ClosedRange<Float>,
        hidden: Int?, classes: Int, expectFlatten: Bool
    ) throws {
        let backboneURL = featureStreamHome.appendingPathComponent("models/\(model)/model.onnx")
        guard FileManager.default.fileExists(atPath: backboneURL.path) else {
            throw XCTSkip("\(backboneURL.path) is missing; bash Ops/setup.sh installs the bundled models")
        }
        let scratch = try makeScratchDirectory(self)
        try requirePython(["numpy", "onnx", "onnxruntime"], scratch: scratch)

        var generator = SplitMix64(seed: 2024)
        let input = randomFloats(inputShape.reduce(1, *), in: inputRange, using: &generator)
        let inputURL = scratch.appendingPathComponent("input.npy")
        try NumpyEncoding.float32Array(input, shape: inputShape).write(to: inputURL)

        let featuresURL = scratch.appendingPathComponent("features.npy")
        let extraction = try runProgram(["python3", checkScript.path, "--features", backboneURL.path, featureNode, inputURL.path, featuresURL.path], in: scratch)
        XCTAssertEqual(extraction.status, 0, extraction.stderr)
        let features = try readFloat32Numpy(featuresURL)
        let rows = features.shape[0]
        let dimension = features.shape.dropFirst().reduce(1, *)

        // Statistics near the real ones keep the standardised features O(1), so the softmax is not
        // saturated and the comparison actually exercises every class.
        var head = sampleHead(featureDimension: dimension, hidden: hidden, classes: classes, seed: 77)
        for column in 0..<dimension {
            let values = (0..<rows).map { features.values[$0 * dimension + column] }
            let mean = values.reduce(0, +) / Float(rows)
            head.mean[column] = mean + 0.01 * head.mean[column]
            head.std[column] = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(rows)).squareRoot() + head.std[column] * 0.1
        }
        head.backbone = model
        head.featureNode = featureNode

        let classifierURL = scratch.appendingPathComponent("classifier.onnx")
        try ONNXClassifierExporter.export(backboneONNX: backboneURL, featureNode: featureNode, head: head, to: classifierURL)

        let probabilities = try head.probabilities(for: features.values, rows: rows)
        XCTAssertLessThan(probabilities.max()!, 0.999, "a saturated softmax would hide errors")
        let expectedURL = scratch.appendingPathComponent("expected.npy"), logitsURL = scratch.appendingPathComponent("logits.npy")
        try NumpyEncoding.float32Array(probabilities, shape: [rows, classes]).write(to: expectedURL)
        try NumpyEncoding.float32Array(try head.logits(for: features.values, rows: rows), shape: [rows, classes]).write(to: logitsURL)
        let check = try runProgram(["python3", checkScript.path, classifierURL.path, inputURL.path, expectedURL.path, "--expected-logits", logitsURL.path], in: scratch)
        XCTAssertEqual(check.status, 0, "onnxruntime disagrees: \(check.stdout)\n\(check.stderr)")
        print("\(model): \(check.stdout)")

        let backbone = try Onnx_ModelProto(serializedBytes: try Data(contentsOf: backboneURL))
        let classifier = try Onnx_ModelProto(serializedBytes: try Data(contentsOf: classifierURL))
        XCTAssertEqual(classifier.irVersion, backbone.irVersion)
        XCTAssertEqual(classifier.opsetImport, backbone.opsetImport)
        XCTAssertEqual(classifier.graph.input, backbone.graph.input)
        XCTAssertEqual(classifier.graph.output.map(\.name), ["probabilities", "logits"])
        XCTAssertEqual(classifier.graph.node.contains { $0.opType == "Flatten" && $0.name.hasPrefix("featurestream_head/") }, expectFlatten)
        let headNodes = classifier.graph.node.filter { $0.name.hasPrefix("featurestream_head/") || ["logits", "probabilities"].contains($0.name) }
        XCTAssertLessThan(classifier.graph.node.count - headNodes.count, backbone.graph.node.count, "the backbone's own head was pruned")
        let metadata = Dictionary(uniqueKeysWithValues: classifier.metadataProps.map { ($0.key, $0.value) })
        XCTAssertEqual(metadata["backbone"], model)
        XCTAssertEqual(metadata["featureNode"], featureNode)
        XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(metadata["classNames"]!.utf8)) as? [String], head.classNames)
    }

    // MARK: Synthetic graphs: fast checks of pruning and refusals, no Python needed.

    /// x → Relu → feat → Sigmoid → old_head (an output), plus an initializer only the old head uses.
    private func tinyBackbone(opset: Int64 = 13, featureShape: [Int64]? = nil) -> Onnx_ModelProto {
        func node(_ op: String, _ inputs: [String], _ output: String) -> Onnx_NodeProto {
            var node = Onnx_NodeProto()
            node.opType = op
            node.input = inputs
            node.output = [output]
            return node
        }
        func info(_ name: String, _ dims: [Int64]) -> Onnx_ValueInfoProto {
            var info = Onnx_ValueInfoProto()
            info.name = name
            info.type.tensorType.elemType = 1
            info.type.tensorType.shape.dim = dims.map { value in
                var dimension = Onnx_TensorShapeProto.Dimension()
                if value < 0 { dimension.dimParam = "batch" } else { dimension.dimValue = value }
                return dimension
            }
            return info
        }
        var model = Onnx_ModelProto()
        model.irVersion = 7
        var opsetID = Onnx_OperatorSetIdProto()
        opsetID.version = opset
        model.opsetImport = [opsetID]
        var unused = Onnx_TensorProto()
        unused.name = "old_scale"
        unused.dataType = 1
        unused.dims = [1]
        unused.floatData = [2]
        model.graph.initializer = [unused]
        model.graph.node = [node("Relu", ["x"], "feat"), node("Mul", ["feat", "old_scale"], "scaled"), node("Sigmoid", ["scaled"], "old_head")]
        model.graph.input = [info("x", [-1, 4])]
        model.graph.output = [info("old_head", [-1, 4])]
        if let featureShape { model.graph.valueInfo = [info("feat", featureShape), info("scaled", [-1, 4])] }
        return model
    }

    func testPrunesTheBackbonesOwnHeadAndAppendsTheNewOne() throws {
        let head = sampleHead(featureDimension: 4, hidden: 3, classes: 2, seed: 5)
        let model = try ONNXClassifierExporter.classifier(backbone: tinyBackbone(featureShape: [-1, 4]), featureNode: "feat", head: head)
        XCTAssertEqual(model.graph.node.map(\.opType), ["Relu", "Sub", "Div", "Gemm", "Relu", "Gemm", "Softmax"])
        XCTAssertFalse(model.graph.initializer.contains { $0.name == "old_scale" })
        XCTAssertEqual(model.graph.valueInfo.map(\.name), ["feat"])
        XCTAssertEqual(model.graph.output.map(\.name), ["probabilities", "logits"])
        XCTAssertEqual(model.graph.output[0].type.tensorType.shape.dim.map(\.dimParam), ["batch", ""], "the batch dimension keeps the input's name")
        XCTAssertEqual(model.graph.output[0].type.tensorType.shape.dim[1].dimValue, 2)
        let gemm = try XCTUnwrap(model.graph.node.first { $0.opType == "Gemm" })
        XCTAssertEqual(gemm.attribute.first { $0.name == "transB" }?.i, 1)
        let weight = try XCTUnwrap(model.graph.initializer.first { $0.name == gemm.input[1] })
        XCTAssertEqual(weight.dims, [3, 4])
        XCTAssertEqual(weight.rawData.count, 12 * 4)
    }

    func testFlattensWhenTheFeatureRankIsUnknown() throws {
        let head = sampleHead(featureDimension: 4, hidden: nil, classes: 2, seed: 5)
        let model = try ONNXClassifierExporter.classifier(backbone: tinyBackbone(), featureNode: "feat", head: head)
        XCTAssertEqual(model.graph.node.map(\.opType), ["Relu", "Flatten", "Sub", "Div", "Gemm", "Softmax"])
    }

    func testRefusesWhatItCannotExport() {
        let head = sampleHead(featureDimension: 4, hidden: nil, classes: 2, seed: 5)
        XCTAssertThrowsError(try ONNXClassifierExporter.classifier(backbone: tinyBackbone(), featureNode: "nope", head: head)) {
            XCTAssertTrue("\($0)".contains("nope"))
        }
        XCTAssertThrowsError(try ONNXClassifierExporter.classifier(backbone: tinyBackbone(opset: 6), featureNode: "feat", head: head))
        let wide = sampleHead(featureDimension: 5, hidden: nil, classes: 2, seed: 5)
        XCTAssertThrowsError(try ONNXClassifierExporter.classifier(backbone: tinyBackbone(featureShape: [-1, 4]), featureNode: "feat", head: wide)) {
            XCTAssertTrue("\($0)".contains("expects 5"), "\($0)")
        }
        var clashing = tinyBackbone()
        clashing.graph.node[0].output = ["logits"]
        clashing.graph.node[1].input = ["logits", "old_scale"]
        XCTAssertThrowsError(try ONNXClassifierExporter.classifier(backbone: clashing, featureNode: "logits", head: head)) {
            XCTAssertTrue("\($0)".contains("logits"))
        }
    }
}
