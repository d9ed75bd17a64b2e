import Backbone
import Foundation
import NumpyFormat
import XCTest

/// The model zoo (Ops/models/make_zoo.py: ResNet-50, MobileNetV2/V3, EfficientNet-B0, RegNetY,
/// DenseNet-121, SqueezeNet, GoogLeNet, ConvNeXt-Tiny, a TF-style and a PyTorch dynamic-batch graph,
/// random weights, 224×224) against onnxruntime on the same input tensor, batch 1.
final class ZooTests: XCTestCase {
    static let zoo = featureStreamHome(anchor: #filePath).appendingPathComponent("zoo")
    static let models = ["resnet50", "mobilenet-v2", "mobilenet-v3-large", "efficientnet-b0", "regnety-800mf", "densenet121",
                         "squeezenet1.1", "googlenet", "convnext-tiny", "tf-style-mobilenet", "pytorch-dynamic-flatten"]

    /// Zoo model `name` as a batch-1 engine up to its feature node, with its input tensor and onnxruntime's features.
    static func load(_ name: String) throws -> (engine: BackboneEngine, input: NumpyArray, expected: NumpyArray) {
        let dir = zoo.appendingPathComponent(name)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("model.json"))) as! [String: Any]
        let engine = try BackboneEngine(modelPath: dir.appendingPathComponent("model.onnx").path, input: "input",
                                        outputs: [config["featureNode"] as! String], maxBatch: 1, threads: 2)
        return (engine, try NumpyArray(contentsOf: dir.appendingPathComponent("input.npy")),
                try NumpyArray(contentsOf: dir.appendingPathComponent("features.npy")))
    }

    /// Every zoo model loads with no reference kernel (a load error by default) and its features
    /// match onnxruntime's within 1e-4 relative error.
    func testEveryZooModelMatchesOnnxruntimeWithoutReferenceKernels() throws {
        guard FileManager.default.fileExists(atPath: Self.zoo.path) else {
            return XCTFail("zoo missing at \(Self.zoo.path): run `bash Ops/setup.sh --goldens`")
        }
        for name in Self.models {
            do {
                let (engine, input, expected) = try Self.load(name)
                XCTAssertEqual(engine.referenceKernels, [], name)
                let features = try input.values.withUnsafeBufferPointer { try engine.run($0, batch: 1) }[0]
                XCTAssertEqual(features.count, expected.values.count, "\(name): feature width")
                let error = maxRelativeError(features, expected.values)
                print("zoo \(name): \(features.count)-d features, relative error \(error), \(engine.implementations.count) primitives")
                XCTAssertLessThan(error, 1e-4, "\(name) differs from onnxruntime")
            } catch {
                XCTFail("\(name): \(error)")
            }
        }
    }

    /// At batch 1, every Concat of DenseNet-121 (each layer's growing feature list), SqueezeNet's
    /// Fire modules and GoogLeNet's Inception blocks copies nothing: its inputs are written in place
    /// (no Concat primitive, no reorder into a Concat), and the features still match onnxruntime.
    func testZooConcatsRunInPlaceAtBatch1() throws {
        guard FileManager.default.fileExists(atPath: Self.zoo.path) else {
            return XCTFail("zoo missing at \(Self.zoo.path): run `bash Ops/setup.sh --goldens`")
        }
        for (name, concats) in [("densenet121", 58), ("squeezenet1.1", 8), ("googlenet", 9)] {
            let (engine, input, expected) = try Self.load(name)
            XCTAssertEqual(engine.inPlaceConcats.count, concats, name)
            XCTAssertEqual(engine.implementations.map(\.step).filter { $0.contains("Concat") }, [], name)
            let features = try input.values.withUnsafeBufferPointer { try engine.run($0, batch: 1) }[0]
            XCTAssertLessThan(maxRelativeError(features, expected.values), 1e-4, name)
        }
    }

    /// At batch 1, ResNet-50's thirteen 3×3 stride-1 convolutions run oneDNN's Winograd kernels, which its
    /// `auto` algorithm takes only from batch 4 up (ResNet-50 at batch 1: 1.24× onnxruntime with them,
    /// 1.06× without, README's engine figures). oneDNN has Winograd only for AVX-512.
    func testResNetThreeByThreeConvolutionsRunWinogradAtBatch1() throws {
        let (engine, input, expected) = try Self.load("resnet50")
        let implementations = engine.implementations.map(\.implementation)
        try XCTSkipUnless(implementations.contains { $0.contains("avx512") }, "oneDNN has Winograd kernels only for AVX-512")
        XCTAssertEqual(implementations.filter { $0.contains("wino") }.count, 13, "\(implementations)")
        let features = try input.values.withUnsafeBufferPointer { try engine.run($0, batch: 1) }[0]
        XCTAssertLessThan(maxRelativeError(features, expected.values), 1e-4)
    }
}
