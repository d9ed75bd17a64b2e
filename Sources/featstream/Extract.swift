import ArgumentParser
import Backbone
import ClusterRoles
import DatasetIndex
import Extraction
import Foundation
import ImageInput
import WireProtocol

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
        Output rows follow the dataset's deterministic order. The dataset
        index is kept as dataset.index in the output folder and reused by a
        later run with the same selection while the dataset is unchanged.
        """
    )

    @Option(help: "Model folder, model config (.json) or .onnx file (without a config beside it, one is inferred and printed).")
    var model: String

    @Option(help: "Dataset: ImageFolder root, .tar shard or folder of shards, or .csv/.jsonl manifest.")
    var data: String

    @Option(help: "Dataset format (imagefolder, webdataset, manifest); detected from the path when omitted.")
    var format: DatasetKind?

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
        // The index lives in the output folder, as in a cluster job's folder: `metadata.csv`'s `index` column
        // names positions in it, and a rerun with the same selection reuses it instead of rescanning.
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let indexPath = URL(fileURLWithPath: out).appendingPathComponent("dataset.index").path
        let selection = DatasetSelection(path: data, format: format, split: split, limit: limit)
        let dataset = try selection.openIndex(at: indexPath, hasProgress: false) { printError("extract: \($0)") }
        if let split, dataset.count == 0, dataset.deadLetterCount == 0 {
            throw IndexError("\(data) has no items in split '\(split)' (\(dataset.skippedCount) are in other splits)")
        }
        let extractor = try FeatureExtractor(config: config, batchSize: batch, threads: threads,
                                             includeLogits: logits, pixelLimit: maxPixels)
        let writer = try ExtractionWriter(directory: URL(fileURLWithPath: out), dtype: dtype,
                                          featureWidth: extractor.featureWidth, logitsWidth: extractor.logitsWidth,
                                          classes: try dataset.classNames(), split: metadataSplit(dataset, selected: split))
        for i in 0..<dataset.deadLetterCount { try writer.record(try dataset.deadLetter(i)) }
        try extractor.engine.warmUp()
        let progress = ProgressLine(total: dataset.count, label: "extract")
        let start = Date()
        var done = 0
        // Ranges of the mapped index, so no item list of the whole dataset is ever built; whole batches per
        // range keep every engine run full.
        let chunk = batch * 64
        for first in stride(from: 0, to: dataset.count, by: chunk) {
            try extractor.extract(try dataset.items(first..<min(dataset.count, first + chunk)), decodeThreads: decodeThreads) { batch in
                try writer.append(batch)
                done += batch.items.count + batch.deadLetters.count
                progress.update(done: done, deadLetters: writer.deadLetterCount)
            }
        }
        let seconds = Date().timeIntervalSince(start)
        let rate = seconds > 0 ? Double(dataset.count) / seconds : 0
        try writer.finish(summary: [
            "model": config.name, "featureNode": config.featureNode, "featureWidth": extractor.featureWidth,
            "dtype": dtype.name, "precision": config.precisionName, "dataset": data, "format": dataset.kind.name,
            "images": dataset.count, "features": writer.rows, "deadLetters": writer.deadLetterCount,
            "seconds": seconds, "imagesPerSecond": rate, "batch": batch, "threads": extractor.engine.threads,
            "resize": config.preprocess.resize.rawValue, "exifOrientation": config.preprocess.exifOrientation,
        ])
        print(String(format: "Extracted %d features (%d-d %@) from %d images with %d dead letters at %.1f img/s into %@ (%@ resize).",
                     writer.rows, extractor.featureWidth, dtype.name, dataset.count, writer.deadLetterCount, rate, out,
                     config.preprocess.resize.rawValue))
    }
}

/// `metadata.csv`'s split column: the `--split` the index was scanned with; without one, an image folder's
/// split folder. The index keeps no manifest `split` column, so a manifest extracted without `--split`
/// leaves the column empty.
private func metadataSplit(_ dataset: IndexedDataset, selected: String?) -> (IndexedItem) -> String {
    if let selected { return { _ in selected } }
    return { dataset.folderSplit(of: $0) ?? "" }
}
