import Backbone
import Foundation
import NumpyFormat
import XCTest

/// The two real backbones against onnxruntime on the same preprocessed input tensors.
final class ModelGoldenTests: XCTestCase {
    static let home = featureStreamHome(anchor: #filePath)

    /// Loads a model, runs the golden input (4 images) at batch 4 and in smaller batches, and compares.
    func compare(model: String, input inputName: String, outputs: [(node: String, golden: String)]) throws {
        let modelDir = Self.home.appendingPathComponent("models/\(model)")
        let goldenDir = Self.home.appendingPathComponent("goldens/models/\(model)")
        let input = try NumpyArray(contentsOf: goldenDir.appendingPathComponent("input.npy"))
        let batch = input.shape[0]
        let engine = try BackboneEngine(modelPath: modelDir.appendingPathComponent("model.onnx").path,
                                        input: inputName, outputs: outputs.map(\.node), maxBatch: batch, threads: 2)
        XCTAssertEqual(engine.referenceKernels, [], "\(model) must not fall back to oneDNN reference kernels")
        let results = try input.values.withUnsafeBufferPointer { try engine.run($0, batch: batch) }
        for (index, output) in outputs.enumerated() {
            let expected = try NumpyArray(contentsOf: goldenDir.appendingPathComponent(output.golden))
            XCTAssertEqual(results[index].count, expected.values.count, "\(model) \(output.node) size")
            let error = maxRelativeError(results[index], expected.values)
            print("\(model) \(output.node): relative error \(error) over \(batch) images")
            XCTAssertLessThan(error, 1e-4, "\(model) \(output.node) differs from onnxruntime")
        }
        // A smaller batch compiles its own network; image 2 alone must give the same features.
        let width = engine.outputWidths[0]
        let one = try input.values.withUnsafeBufferPointer { all in
            try engine.run(UnsafeBufferPointer(rebasing: all[(2 * engine.imageElementCount)...]), batch: 1)
        }[0]
        XCTAssertLessThan(maxRelativeError(one, Array(results[0][(2 * width)..<(3 * width)])), 1e-5,
                          "\(model): batch 1 disagrees with batch \(batch)")
    }

    func testEfficientNetLite0FeaturesAndLogitsMatchOnnxruntime() throws {
        try compare(model: "efficientnet-lite0", input: "input",
                    outputs: [("features", "features.npy"), ("logits", "logits.npy")])
    }

    func testOpenNSFWPooledFeaturesMatchOnnxruntime() throws {
        try compare(model: "open-nsfw", input: "input:0", outputs: [("pool/AvgPool:0", "features.npy")])
    }

    /// A model with several unsupported ops fails at load listing every one, each with its node.
    func testEveryUnsupportedOpIsListedWithItsNode() throws {
        let path = Self.home.appendingPathComponent("goldens/errors/unsupported_many/model.onnx").path
        XCTAssertThrowsError(try BackboneEngine(modelPath: path, input: "x", outputs: ["y"], maxBatch: 1)) { error in
            XCTAssertEqual(error as? BackboneError, .unsupportedOps([
                UnsupportedNode(op: "Round", node: "round_node", detail: ""),
                UnsupportedNode(op: "Hardmax", node: "hardmax_node", detail: ""),
                UnsupportedNode(op: "Sign", node: "sign_node", detail: ""),
            ]), "\(error)")
            XCTAssertTrue("\(error)".contains("3 unsupported op types (Hardmax, Round, Sign)"), "\(error)")
        }
    }

    /// A primitive on oneDNN's reference kernel is a load error unless explicitly allowed, and then it runs.
    func testReferenceKernelIsALoadErrorUnlessAllowed() throws {
        let dir = Self.home.appendingPathComponent("goldens/errors/reference_kernel")
        let path = dir.appendingPathComponent("model.onnx").path
        XCTAssertThrowsError(try BackboneEngine(modelPath: path, input: "x", outputs: ["y"], maxBatch: 2)) { error in
            guard case .referenceKernels(let steps)? = error as? BackboneError else { return XCTFail("\(error)") }
            XCTAssertEqual(steps.count, 1, "\(steps)")
            XCTAssertTrue(steps[0].contains("ReduceSum") && steps[0].contains("ref"), "\(steps)")
            XCTAssertTrue("\(error)".contains("--allow-reference-kernels"))
        }
        let engine = try BackboneEngine(modelPath: path, input: "x", outputs: ["y"], maxBatch: 2, allowReferenceKernels: true)
        XCTAssertEqual(engine.referenceKernels.count, 1)
        let input = try NumpyArray(contentsOf: dir.appendingPathComponent("input.npy"))
        let sums = try input.values.withUnsafeBufferPointer { try engine.run($0, batch: 2) }[0]
        // ReduceSum over the 8 channels, checked against a plain Swift sum.
        XCTAssertEqual(sums.count, 2 * 12 * 12)
        for (n, p) in [(0, 0), (1, 77), (1, 143)] {
            let expected = (0..<8).reduce(Float(0)) { $0 + input.values[(n * 8 + $1) * 144 + p] }
            XCTAssertEqual(sums[n * 144 + p], expected, accuracy: 1e-5)
        }
    }

    func testUnknownFeatureNodeAndBadFilesAreClearErrors() throws {
        let path = Self.home.appendingPathComponent("models/open-nsfw/model.onnx").path
        XCTAssertThrowsError(try BackboneEngine(modelPath: path, outputs: ["no-such-node"])) { error in
            XCTAssertEqual(error as? BackboneError, .unknownTensor("no-such-node"))
        }
        let garbage = FileManager.default.temporaryDirectory.appendingPathComponent("garbage-\(getpid()).onnx")
        try Data("this is not a protobuf".utf8).write(to: garbage)
        defer { try? FileManager.default.removeItem(at: garbage) }
        XCTAssertThrowsError(try BackboneEngine(modelPath: garbage.path, outputs: ["y"])) { error in
            guard case .unreadableModel(let file, _)? = error as? BackboneError else { return XCTFail("\(error)") }
            XCTAssertEqual(file, garbage.path)
        }
    }
}
