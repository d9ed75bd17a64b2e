import Backbone
import Foundation
import ImageInput

/// The JSON file that sits beside an `.onnx` model and says how to feed it and which node holds the features.
///
/// A user brings any ONNX CNN by writing one of these:
/// ```json
/// { "name": "efficientnet-lite0", "onnx": "model.onnx",
///   "input": {"name": "input", "layout": "NCHW"},
///   "preprocess": {"resizeShorterSide": 256, "crop": 224, "filter": "bilinear", "colorOrder": "RGB",
///                  "mean": [127, 127, 127], "std": [128, 128, 128],
///                  "resize": "exact", "exifOrientation": false},
///   "featureNode": "features", "logitsNode": "logits", "classes": "classes.txt" }
/// ```
public struct ModelConfig: Codable, Sendable {
    /// The graph input and its layout.
    public struct Input: Codable, Sendable {
        /// The ONNX graph input name.
        public var name: String
        /// NCHW or NHWC: the layout the model's input expects.
        public var layout: TensorLayout
    }

    /// A short name for the backbone, recorded with every output.
    public var name: String
    /// The ONNX file, relative to the config's folder.
    public var onnx: String
    public var input: Input
    /// Resize, crop, colour order and normalisation.
    public var preprocess: Preprocessing
    /// The tensor whose values are the features (for example the pooled node before the classifier).
    public var featureNode: String
    /// The model's own class scores, if it has a head worth keeping (used for sanity checks).
    public var logitsNode: String?
    /// A file of class names for the logits, one per line, relative to the config's folder.
    public var classes: String?
    /// Convolution precision; `nil` means fp32. int8 needs a calibration file (`featstream calibrate`).
    public var precision: Precision?
    /// The int8 calibration file, relative to the config's folder (default `calibration.json`).
    public var calibration: String?

    /// The folder the config was read from; relative paths resolve against it.
    public internal(set) var directory: URL = URL(fileURLWithPath: ".")
    /// The absolute path of the config file itself.
    public internal(set) var configPath: String = ""
    /// For a bare `.onnx` with no config beside it: each value guessed from the graph (JSON key → why).
    /// Empty for a config read from a file.
    public internal(set) var guessed: [String: String] = [:]

    private enum CodingKeys: String, CodingKey {
        case name, onnx, input, preprocess, featureNode, logitsNode, classes, precision, calibration
    }

    /// The absolute path of the ONNX file.
    public var onnxPath: String { resolve(onnx).path }

    /// Loads a config from a model folder (`model.json` inside), a `.json` file, or an `.onnx` file
    /// (the `.json` with the same stem, or `model.json`, beside it).
    public static func load(_ path: String) throws -> ModelConfig {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw ModelConfigError(path: path, reason: "no such file or folder")
        }
        let candidates: [URL]
        if isDirectory.boolValue {
            candidates = [url.appendingPathComponent("model.json")]
        } else if url.pathExtension == "onnx" {
            candidates = [url.deletingPathExtension().appendingPathExtension("json"),
                          url.deletingLastPathComponent().appendingPathComponent("model.json")]
        } else {
            candidates = [url]
        }
        guard let configURL = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
            // A bare model: the same inference as `featstream model init`, with the guesses recorded.
            if url.pathExtension == "onnx" { return try inferred(fromONNX: url.path).config }
            throw ModelConfigError(path: path, reason: "no model config found (looked for \(candidates.map(\.path).joined(separator: ", ")))")
        }
        var config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: Data(contentsOf: configURL))
        } catch let error as DecodingError {
            throw ModelConfigError(path: configURL.path, reason: "invalid model config: \(describe(error))")
        }
        config.directory = configURL.deletingLastPathComponent().standardizedFileURL
        config.configPath = configURL.standardizedFileURL.path
        if url.pathExtension == "onnx" { config.onnx = url.path }
        try config.validate(at: configURL.path)
        return config
    }

    /// The precision this config extracts at, named as stores, reports and `extract`'s metadata name it
    /// ("fp32" when the config says none).
    public var precisionName: String { (precision ?? .fp32).rawValue }

    /// Where the int8 calibration is (or will be written by `featstream calibrate`).
    public var calibrationPath: String { resolve(calibration ?? "calibration.json").path }

    /// The calibration the engine needs for `precision`: `nil` for fp32.
    /// - Throws: `ModelConfigError` when int8 is asked for and no calibration file exists yet.
    public func int8Calibration() throws -> Calibration? {
        guard precision == .int8 else { return nil }
        guard let data = FileManager.default.contents(atPath: calibrationPath) else {
            throw ModelConfigError(path: calibrationPath, reason: "int8 needs a calibration; run `featstream calibrate --model \(configPath) --data DATASET` first")
        }
        do {
            return try JSONDecoder().decode(Calibration.self, from: data)
        } catch {
            throw ModelConfigError(path: calibrationPath, reason: "invalid calibration file: \(error)")
        }
    }

    /// The class names for the logits node, if the config names a classes file.
    public func classNames() throws -> [String]? {
        guard let classes else { return nil }
        let text = try String(contentsOf: resolve(classes), encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
    }

    private func resolve(_ relative: String) -> URL {
        relative.hasPrefix("/") ? URL(fileURLWithPath: relative) : directory.appendingPathComponent(relative)
    }

    private func validate(at path: String) throws {
        do { try preprocess.validate() } catch { throw ModelConfigError(path: path, reason: "\(error)") }
        guard FileManager.default.fileExists(atPath: onnxPath) else {
            throw ModelConfigError(path: path, reason: "the ONNX file \(onnxPath) does not exist")
        }
    }
}

/// A model config that cannot be used, with the file and the reason.
public struct ModelConfigError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "model config \(path): \(reason)" }
}

private func describe(_ error: DecodingError) -> String {
    switch error {
    case .keyNotFound(let key, let context):
        return "missing \"\(key.stringValue)\"" + at(context)
    case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
        return context.debugDescription + at(context)
    @unknown default:
        return "\(error)"
    }
}

private func at(_ context: DecodingError.Context) -> String {
    context.codingPath.isEmpty ? "" : " at " + context.codingPath.map(\.stringValue).joined(separator: ".")
}
