import Extraction
import Foundation
import HeadExport
import ImageInput

/// One image's top classes, or why it could not be classified.
public struct Prediction: Sendable {
    public var file: String
    /// Classes by descending probability: (class index, name, probability).
    public var top: [(index: Int, name: String, probability: Float)]
    /// Set when the image was not classified (corrupt, unreadable, not an image).
    public var error: String?
}

/// The backbone and a trained head together: images in, class probabilities out.
///
/// Uses the same decode, preprocessing and backbone as extraction, and the head's own maths, so
/// its top-1 agrees with the exported ONNX classifier run in onnxruntime.
public final class Predictor {
    public let manifest: PredictorManifest
    public let head: ExportedHead
    private let extractor: FeatureExtractor
    private let preprocessor: ImagePreprocessor
    private let decoder = ImageDecoder()

    /// Loads a model folder written by training: `predictor.json`, `head.safetensors`, and the backbone
    /// through `backbone.json`, which runs `classifier.onnx` up to the feature node. Nothing outside the folder is read.
    /// `resize` overrides the backbone config's `preprocess.resize` (the training job's choice).
    public init(modelDirectory: URL, threads: Int? = nil, resize: ResizeMode? = nil) throws {
        let (manifest, configPath) = try ModelFolder.manifest(in: modelDirectory)
        self.manifest = manifest
        head = try SafetensorsFile.readHead(modelDirectory.appendingPathComponent(TrainedModelFiles.head))
        let config = try ModelConfig.load(configPath)
        guard config.name == head.backbone, config.featureNode == head.featureNode else {
            throw PredictorError("the head in \(modelDirectory.path) was trained on \(head.backbone) (\(head.featureNode)), "
                                 + "but \(configPath) is \(config.name) (\(config.featureNode))")
        }
        extractor = try FeatureExtractor(config: config, batchSize: 1, threads: threads)
        guard extractor.featureWidth == head.featureDimension else {
            throw PredictorError("the backbone gives \(extractor.featureWidth)-d features but the head expects \(head.featureDimension)")
        }
        var preprocess = config.preprocess
        if let resize { preprocess.resize = resize }
        preprocessor = try ImagePreprocessor(preprocess)
    }

    /// Classifies each file; a file that cannot be read or decoded gets an `error` and the others go on.
    public func classify(_ files: [String], topK: Int = 5) -> [Prediction] {
        let input = UnsafeMutablePointer<Float>.allocate(capacity: extractor.engine.imageElementCount)
        defer { input.deallocate() }
        return files.map { classify($0, topK: topK, input: input) }
    }

    /// Classifies every file below `folder` and names every other entry, in `PredictionFolder.entries`'
    /// order (paths in `excluding` left out): a file that is not an image the decoder reads, or not a
    /// regular file, gets its reason as `error` without being decoded, so each entry is accounted for once.
    public func classify(folder: String, excluding: Set<String> = [], topK: Int = 5) throws -> [Prediction] {
        let entries = try PredictionFolder.entries(of: folder, excluding: excluding)
        let input = UnsafeMutablePointer<Float>.allocate(capacity: extractor.engine.imageElementCount)
        defer { input.deallocate() }
        return entries.map { entry in
            entry.refusal.map { Prediction(file: entry.path, top: [], error: $0) } ?? classify(entry.path, topK: topK, input: input)
        }
    }

    private func classify(_ file: String, topK: Int, input: UnsafeMutablePointer<Float>) -> Prediction {
        do {
            let bytes: Data
            do { bytes = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
                return Prediction(file: file, top: [], error: "cannot read the file: \((error as NSError).localizedDescription)")
            }
            try bytes.withUnsafeBytes { raw in
                try preprocessor.decode(raw, name: file, with: decoder, into: input, slot: 0, layout: extractor.config.input.layout)
            }
            let features = try extractor.engine.run(UnsafeBufferPointer(start: input, count: extractor.engine.imageElementCount), batch: 1)[0]
            let probabilities = try head.probabilities(for: features, rows: 1)
            let order = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] }.prefix(topK)
            return Prediction(file: file, top: order.map { ($0, head.classNames[$0], probabilities[$0]) }, error: nil)
        } catch let error as ImageDecodeError {
            return Prediction(file: file, top: [], error: error.reason)
        } catch {
            return Prediction(file: file, top: [], error: "\(error)")
        }
    }
}

/// A model folder or input that `Predictor` cannot use.
public struct PredictorError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
