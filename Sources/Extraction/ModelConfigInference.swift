import Backbone
import Foundation

/// A model config guessed from a bare `.onnx` file, with a record of every value that was guessed.
///
/// Read from the graph: the input's name and layout, the image size when the graph fixes it, and
/// the feature node (the pooled vector before the classifier). Guessed: the image size when the
/// graph leaves it open (224), resizing (shorter side 256/224 of the crop, bilinear), colour order
/// (RGB), and mean/std (ImageNet's, or none when the graph normalises its own input).
public struct InferredModelConfig {
    /// The config, usable as is.
    public var config: ModelConfig
    /// What the graph says (input, feature candidates with widths).
    public var inspection: ModelInspection

    /// The config as an editable `model.json` beside the model: the usual fields, plus `guessed`
    /// (each guessed key with why) and `featureCandidates` (alternatives for `featureNode`).
    public func json() throws -> Data {
        var object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)) as! [String: Any]
        object["onnx"] = URL(fileURLWithPath: config.onnxPath).lastPathComponent
        object["guessed"] = config.guessed
        object["featureCandidates"] = inspection.candidates.map { ["node": $0.name, "width": $0.width, "why": $0.reason] }
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    /// Sentences for a terminal: the input, the candidates, and what was guessed.
    public var summary: String {
        let input = inspection.input
        let dims = zip(input.shape, input.dimNames + [String?](repeating: nil, count: max(0, input.shape.count - input.dimNames.count)))
            .map { $0.map(String.init) ?? $1 ?? "?" }
        var lines = ["Input '\(input.name)': [\(dims.joined(separator: ", "))], layout \(input.layout)."]
        if inspection.candidates.isEmpty {
            lines.append("No pooled feature vector was found; set featureNode by hand.")
        } else {
            lines.append("Feature candidates (best first):")
            for (i, c) in inspection.candidates.enumerated() {
                lines.append("  \(i == 0 ? "*" : " ") \(c.name) (\(c.width) values): \(c.reason)")
            }
        }
        if !config.guessed.isEmpty {
            lines.append("Guessed (check these):")
            for key in config.guessed.keys.sorted() { lines.append("  \(key): \(config.guessed[key]!)") }
        }
        return lines.joined(separator: "\n")
    }
}

extension ModelConfig {
    /// Guesses a config for the ONNX file at `path` from its graph (see `InferredModelConfig`).
    ///
    /// - Throws: `ModelConfigError` naming the file when the graph has no usable image input or
    ///   no feature candidate the engine can compute.
    public static func inferred(fromONNX path: String) throws -> InferredModelConfig {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        let inspection: ModelInspection
        do {
            inspection = try ModelInspection(modelPath: url.path)
        } catch {
            throw ModelConfigError(path: url.path, reason: "cannot guess a model config: \(error)")
        }
        guard let feature = inspection.candidates.first else {
            throw ModelConfigError(path: url.path, reason: "no model config found, and no pooled feature vector the engine can compute was found in the graph; write a model.json (see `featstream model init`)")
        }
        var guessed: [String: String] = [:]
        if !inspection.input.layoutFromGraph { guessed["input.layout"] = "no dim of size 3; assumed NCHW" }
        let side = inspection.input.imageSize ?? 224
        if inspection.input.imageSize == nil { guessed["preprocess.crop"] = "the graph leaves the image size open; 224 assumed" }
        guessed["preprocess.resizeShorterSide"] = "the usual 256/224 of the crop"
        guessed["preprocess.colorOrder"] = "RGB assumed (Caffe-converted models often want BGR)"
        let mean: [Float], std: [Float]
        if let normalisation = inspection.inGraphNormalisation {
            (mean, std) = ([0, 0, 0], [1, 1, 1])
            guessed["preprocess.mean"] = "raw pixels 0-255: \(normalisation)"
            guessed["preprocess.std"] = guessed["preprocess.mean"]
        } else {
            (mean, std) = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
            guessed["preprocess.mean"] = "ImageNet mean in pixel units; the graph does not normalise its input"
            guessed["preprocess.std"] = "ImageNet std in pixel units"
        }
        guessed["featureNode"] = feature.reason + (inspection.candidates.count > 1
            ? "; \(inspection.candidates.count - 1) other candidate(s) in featureCandidates" : "")
        let object: [String: Any] = [
            // `model.onnx` is usually named by its folder.
            "name": url.lastPathComponent == "model.onnx" ? url.deletingLastPathComponent().lastPathComponent
                : url.deletingPathExtension().lastPathComponent,
            "onnx": url.path,
            "input": ["name": inspection.input.name, "layout": inspection.input.layout],
            "preprocess": ["resizeShorterSide": Int((Double(side) * 256 / 224).rounded()), "crop": side, "filter": "bilinear",
                           "colorOrder": "RGB", "mean": mean, "std": std],
            "featureNode": feature.name,
        ]
        var config = try JSONDecoder().decode(ModelConfig.self, from: JSONSerialization.data(withJSONObject: object))
        config.directory = url.deletingLastPathComponent()
        config.configPath = url.path
        config.guessed = guessed
        return InferredModelConfig(config: config, inspection: inspection)
    }
}
