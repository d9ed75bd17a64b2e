import Extraction
import Foundation
import HeadExport
import HeadTraining

/// The files a trained model folder holds. Everything `predict` reads is among them, named
/// relative to the folder, so the folder can be copied or moved anywhere.
public enum TrainedModelFiles {
    /// The head's weights, class names and backbone facts (safetensors).
    public static let head = "head.safetensors"
    /// The backbone up to its feature node, then the head: one ONNX graph. `predict` runs its backbone part.
    public static let classifier = "classifier.onnx"
    /// The backbone's model config, copied whole, with `onnx` pointing at `classifier.onnx`.
    public static let backboneConfig = "backbone.json"
    /// The `PredictorManifest`.
    public static let predictor = "predictor.json"
    /// The int8 calibration, when the job extracted in int8 (`backbone.json` then says `"precision": "int8"`).
    public static let calibration = "calibration.json"
    public static let reportJSON = "report.json"
    public static let reportHTML = "report.html"
    public static let checkpoint = "checkpoint.json"
}

/// What `featstream predict` needs to rebuild the classifier: the backbone config and the head.
public struct PredictorManifest: Codable {
    /// The backbone's model config: relative to the model folder (`backbone.json`) in folders
    /// written by this version; older folders hold an absolute path to the training host's config.
    public var backboneConfig: String
    public var backbone: String
    public var featureNode: String
    public var classNames: [String]
}

/// Writes and reads the self-contained model folder.
public enum ModelFolder {
    /// Writes the head (safetensors), the one-file ONNX classifier, the backbone config beside it
    /// and the predictor manifest into `directory`.
    ///
    /// The backbone config is copied as the JSON object it is on disk (every field, including ones
    /// this version does not know, such as future preprocessing options), with `onnx` set to the
    /// classifier, whose graph still computes the feature node. `logitsNode` and `classes` are
    /// dropped: they describe the backbone's own head, which the classifier no longer has.
    public static func write(_ model: HeadModel, classNames: [String], backbone: ModelConfig, to directory: URL) throws {
        let head = exportedHead(model, classNames: classNames, backbone: backbone)
        try SafetensorsWriter.write(head, to: directory.appendingPathComponent(TrainedModelFiles.head))
        try ONNXClassifierExporter.export(backboneONNX: URL(fileURLWithPath: backbone.onnxPath), featureNode: backbone.featureNode,
                                          head: head, to: directory.appendingPathComponent(TrainedModelFiles.classifier))
        let original = try Data(contentsOf: URL(fileURLWithPath: backbone.configPath))
        guard var config = try JSONSerialization.jsonObject(with: original) as? [String: Any] else {
            throw PredictorError("\(backbone.configPath) is not a JSON object")
        }
        config["onnx"] = TrainedModelFiles.classifier
        config["logitsNode"] = nil
        config["classes"] = nil
        // The head was trained on features of this precision, so predict must extract at it too: an int8
        // backbone's calibration goes into the folder with it (the folder stays self-contained).
        if backbone.precision == .int8 {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(TrainedModelFiles.calibration))
            try FileManager.default.copyItem(at: URL(fileURLWithPath: backbone.calibrationPath),
                                             to: directory.appendingPathComponent(TrainedModelFiles.calibration))
            config["precision"] = backbone.precision?.rawValue
            config["calibration"] = TrainedModelFiles.calibration
        }
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            .write(to: directory.appendingPathComponent(TrainedModelFiles.backboneConfig), options: .atomic)
        let manifest = PredictorManifest(backboneConfig: TrainedModelFiles.backboneConfig, backbone: backbone.name,
                                         featureNode: backbone.featureNode, classNames: classNames)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(manifest).write(to: directory.appendingPathComponent(TrainedModelFiles.predictor), options: .atomic)
    }

    /// What differs between `predict` and `classifier.onnx` when the job extracted in int8, said wherever the
    /// model folder is reported.
    public static let int8Note = "the head was trained on int8 features: `featstream predict` extracts in int8 like the job "
        + "(calibration.json in the model folder), but classifier.onnx computes the backbone in fp32, so its features differ slightly"

    /// The manifest of the folder and its backbone config's path (relative paths resolved against the folder).
    static func manifest(in directory: URL) throws -> (manifest: PredictorManifest, backboneConfig: String) {
        let manifestURL = directory.appendingPathComponent(TrainedModelFiles.predictor)
        guard let data = try? Data(contentsOf: manifestURL) else {
            throw PredictorError("\(directory.path) is not a trained model folder (no \(TrainedModelFiles.predictor))")
        }
        let manifest = try JSONDecoder().decode(PredictorManifest.self, from: data)
        let path = manifest.backboneConfig.hasPrefix("/") ? manifest.backboneConfig
            : directory.appendingPathComponent(manifest.backboneConfig).path
        return (manifest, path)
    }

    /// The trained head in the form every exporter consumes.
    public static func exportedHead(_ model: HeadModel, classNames: [String], backbone: ModelConfig) -> ExportedHead {
        var layers = [DenseLayer(weights: model.layer1Weights, bias: model.layer1Bias, inputs: model.dimension,
                                 outputs: model.layer1Bias.count)]
        if let weights = model.layer2Weights, let bias = model.layer2Bias {
            layers.append(DenseLayer(weights: weights, bias: bias, inputs: model.layer1Bias.count, outputs: bias.count))
        }
        let p = backbone.preprocess
        return ExportedHead(classNames: classNames, mean: model.standardizer.mean, std: model.standardizer.std, layers: layers,
                            backbone: backbone.name, featureNode: backbone.featureNode,
                            normalization: "\(p.colorOrder.rawValue), resize \(p.resizeShorterSide), crop \(p.crop), mean \(p.mean), std \(p.std)")
    }
}
