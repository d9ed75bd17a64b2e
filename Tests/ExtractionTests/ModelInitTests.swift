import Extraction
import FeatStreamTestSupport
import Foundation
import NumpyFormat
import XCTest

/// `featstream model init` and bare-.onnx loading: the config inferred from each zoo model's graph
/// (Ops/models/make_zoo.py) names the right input, layout and feature node, says what it guessed,
/// and round-trips through model.json. (ZooTests checks those feature nodes against onnxruntime.)
final class ModelInitTests: XCTestCase {
    static let zoo = featureStreamHome(anchor: #filePath).appendingPathComponent("zoo")
    static let models = ["resnet50", "mobilenet-v2", "mobilenet-v3-large", "efficientnet-b0", "regnety-800mf", "densenet121",
                         "squeezenet1.1", "googlenet", "convnext-tiny", "tf-style-mobilenet", "pytorch-dynamic-flatten"]

    func testInferredConfigOfEveryZooModel() throws {
        guard FileManager.default.fileExists(atPath: Self.zoo.path) else {
            return XCTFail("zoo missing at \(Self.zoo.path): run `bash Ops/setup.sh --goldens`")
        }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("model-init-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        for name in Self.models {
            let source = Self.zoo.appendingPathComponent(name)
            let zooConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("model.json"))) as! [String: Any]
            let zooFeature = zooConfig["featureNode"] as! String
            let zooLayout = (zooConfig["input"] as! [String: Any])["layout"] as! String
            // A folder with only the .onnx: no config beside it.
            let dir = scratch.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let onnx = dir.appendingPathComponent("model.onnx")
            try FileManager.default.createSymbolicLink(at: onnx, withDestinationURL: source.appendingPathComponent("model.onnx"))

            // What `model init` writes and what `extract`/`run` use on a bare .onnx come from one inference.
            let inferred = try ModelConfig.inferred(fromONNX: onnx.path)
            let config = inferred.config
            XCTAssertEqual(config.input.name, "input", name)
            XCTAssertEqual(config.input.layout.rawValue, zooLayout, name)
            XCTAssertEqual(config.preprocess.crop, 224, name)
            XCTAssertEqual(config.name, name)
            for key in ["featureNode", "preprocess.mean", "preprocess.std", "preprocess.colorOrder"] {
                XCTAssertNotNil(config.guessed[key], "\(name): \(key) must be marked as guessed")
            }
            // MobileNetV3's zoo features sit after its first Linear; the pooled vector before the classifier is 960-d.
            if name == "mobilenet-v3-large" {
                XCTAssertEqual(inferred.inspection.candidates.map(\.width), [960, 960],
                               "\(name): the flattened and the plain pooled vector; SE gates are not candidates")
            } else {
                XCTAssertEqual(config.featureNode, zooFeature, "\(name): candidates \(inferred.inspection.candidates)")
            }
            XCTAssertEqual(inferred.inspection.candidates.first?.width,
                           name == "mobilenet-v3-large" ? 960 : try NumpyArray(contentsOf: source.appendingPathComponent("features.npy")).shape[1], name)

            // A bare .onnx loads with the same inference (parsing the graph again: a few small models only).
            if ["squeezenet1.1", "tf-style-mobilenet", "pytorch-dynamic-flatten"].contains(name) {
                let bare = try ModelConfig.load(onnx.path)
                XCTAssertEqual(bare.featureNode, config.featureNode, name)
                XCTAssertEqual(bare.preprocess, config.preprocess, name)
                XCTAssertEqual(bare.guessed, config.guessed, name)
            }

            // model.json as written by `model init` loads back with no guesses left and the same values.
            try inferred.json().write(to: dir.appendingPathComponent("model.json"))
            let written = try ModelConfig.load(onnx.path)
            XCTAssertTrue(written.guessed.isEmpty, name)
            XCTAssertEqual(written.featureNode, config.featureNode, name)
            XCTAssertEqual(written.preprocess, config.preprocess, name)
            XCTAssertEqual(written.onnxPath, onnx.path, name)
        }
    }
}
