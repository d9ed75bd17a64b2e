import ArgumentParser
import Backbone
import Extraction
import Foundation
import ImageInput
import WireProtocol

extension DatasetFormat: ExpressibleByArgument {}
extension FeatureDType: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
    public static var allValueStrings: [String] { allCases.map(\.name) }
}
extension ResizeMode: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}

struct Extract: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Extract one feature vector per image on this host.",
        discussion: """
        Datasets: an ImageFolder (class subfolders, optional train/ and
        val/), WebDataset tar shards, or a CSV/JSONL manifest (path,label).

        Corrupt, truncated, empty, oversized and non-image files are skipped
        and listed in dead_letters.csv with the reason; the run goes on.
        Output rows follow the dataset's deterministic order.
        """
    )

    @Option(help: "Model folder, model config (.json) or .onnx file (without a config beside it, one is inferred and printed).")
    var model: String

    @Option(help: "Dataset: ImageFolder root, .tar shard or folder of shards, or .csv/.jsonl manifest.")
    var data: String

    @Option(help: "Dataset format (imagefolder, webdataset, manifest); detected from the path when omitted.")
    var format: DatasetFormat?

    @Option(help: "Output folder.")
    var out: String

    @Option(help: "Images per backbone run.")
    var batch = 16

    @Option(help: "oneDNN threads (default: all cores).")
    var threads: Int?

    @Option(help: "Decoder threads when the engine leaves cores free (decoding then overlaps the backbone); otherwise each batch is decoded between engine runs, one thread a core.")
    var decodeThreads = 1

    @Option(help: "Feature element type in features.npy: f32 or f16.")
    var dtype: FeatureDType = .f32

    @Option(help: "Only this split (train or val) of an ImageFolder or manifest.")
    var split: String?

    @Option(help: "Stop after this many images (in dataset order).")
    var limit: Int?

    @Option(help: "Images whose header claims more pixels are dead-lettered without decoding.")
    var maxPixels = ImageDecoder.defaultPixelLimit

    @Option(help: "fast (scale JPEG and WebP while decoding) or exact (full decode, as torchvision); overrides the model config's preprocess.resize.")
    var resize: ResizeMode?

    @Flag(help: "Turn images upright by their EXIF Orientation tag (overrides the model config's preprocess.exifOrientation).")
    var exifOrientation = false

    @Option(help: "Convolution precision: fp32, or int8 (needs `featstream calibrate` first). Default: the model config's.")
    var precision: Precision?

    @Flag(help: "Also write the model's own logits (the config's logitsNode) to logits.npy.")
    var logits = false

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard decodeThreads >= 1 else { throw ValidationError("--decode-threads must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        do {
            try extract()
        } catch let error as ValidationError {
            throw error
        } catch {
            printError("featstream extract: \(error)")
            throw ExitCode.failure
        }
    }

    private func extract() throws {
        var config = try ModelConfig.load(model)
        if let resize { config.preprocess.resize = resize }
        if exifOrientation { config.preprocess.exifOrientation = true }
        announceInferredConfig(config, command: "extract")
        if let precision { config.precision = precision }
        let dataset = try DatasetIndex.open(path: data, format: format)
        var items = dataset.items
        if let split {
            items = items.filter { $0.split == split }
            guard !items.isEmpty else {
                let splits = Set(dataset.items.compactMap(\.split)).sorted()
                throw DatasetError(reason: "\(data) has no items in split '\(split)'; "
                                   + (splits.isEmpty ? "it has no splits." : "its splits are \(splits.joined(separator: ", "))."))
            }
        }
        if let limit { items = Array(items.prefix(limit)) }
        let extractor = try FeatureExtractor(config: config, batchSize: batch, threads: threads,
                                             includeLogits: logits, pixelLimit: maxPixels)
        let writer = try ExtractionWriter(directory: URL(fileURLWithPath: out), dtype: dtype,
                                          featureWidth: extractor.featureWidth, logitsWidth: extractor.logitsWidth,
                                          classes: dataset.classes)
        writer.record(dataset.deadLetters)
        try extractor.engine.warmUp()
        let progress = ProgressLine(total: items.count, label: "extract")
        let start = Date()
        var done = 0
        try extractor.extract(items, decodeThreads: decodeThreads) { batch in
            try writer.append(batch)
            done += batch.items.count + batch.deadLetters.count
            progress.update(done: done, deadLetters: writer.deadLetters.count)
        }
        let seconds = Date().timeIntervalSince(start)
        let rate = seconds > 0 ? Double(items.count) / seconds : 0
        try writer.finish(summary: [
            "model": config.name, "featureNode": config.featureNode, "featureWidth": extractor.featureWidth,
            "dtype": dtype.name, "precision": (config.precision ?? .fp32).rawValue, "dataset": data, "format": dataset.format.rawValue,
            "images": items.count, "features": writer.rows, "deadLetters": writer.deadLetters.count,
            "seconds": seconds, "imagesPerSecond": rate, "batch": batch, "threads": extractor.engine.threads,
            "resize": config.preprocess.resize.rawValue, "exifOrientation": config.preprocess.exifOrientation,
        ])
        print(String(format: "Extracted %d features (%d-d %@) from %d images with %d dead letters at %.1f img/s into %@ (%@ resize).",
                     writer.rows, extractor.featureWidth, dtype.name, items.count, writer.deadLetters.count, rate, out,
                     config.preprocess.resize.rawValue))
    }
}
