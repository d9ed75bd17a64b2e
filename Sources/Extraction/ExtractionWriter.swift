import Foundation
import ImageInput
import NumpyFormat
import WireProtocol

/// Writes what `featstream extract` produces into one folder:
/// - `features.npy`: `[N, D]` in `f32` or `f16`, row `i` for metadata row `i`;
/// - `logits.npy`: `[N, K]` f32, when logits were requested;
/// - `metadata.csv`: `row,index,key,label,label_name,split` per feature row;
/// - `classes.txt`: the dataset's class names, one per line, line `i` is label `i`;
/// - `dead_letters.csv`: `key,reason` for every skipped input;
/// - `extraction.json`: what ran and how fast.
///
/// The `.npy` files stream to disk; their headers are rewritten with the final row count at `finish`,
/// and every file is written under a temporary name and renamed, so a folder never holds a partial result
/// that looks complete.
public final class ExtractionWriter {
    /// The output folder.
    public let directory: URL
    /// Feature rows written so far.
    public private(set) var rows = 0
    /// Dead letters recorded so far.
    public private(set) var deadLetters: [DeadLetter] = []

    private let dtype: FeatureDType
    private let featureWidth: Int
    private let logitsWidth: Int?
    private let classes: [String]
    private let features: NumpyStreamWriter
    private let logits: NumpyStreamWriter?
    private var metadata = "row,index,key,label,label_name,split\n"

    /// Creates the folder (if needed) and starts the streaming files.
    public init(directory: URL, dtype: FeatureDType, featureWidth: Int, logitsWidth: Int?, classes: [String]) throws {
        self.directory = directory
        self.dtype = dtype
        self.featureWidth = featureWidth
        self.logitsWidth = logitsWidth
        self.classes = classes
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        features = try NumpyStreamWriter(url: directory.appendingPathComponent("features.npy"), descr: dtype.npyDescr, width: featureWidth)
        logits = try logitsWidth.map {
            try NumpyStreamWriter(url: directory.appendingPathComponent("logits.npy"), descr: "<f4", width: $0)
        }
    }

    /// Appends a batch's rows and dead letters.
    public func append(_ batch: ExtractedBatch) throws {
        try dtype.littleEndianBytes(of: batch.features).withUnsafeBytes { try features.append($0, rows: batch.items.count) }
        if let logits, let values = batch.logits {
            try values.withUnsafeBytes { try logits.append($0, rows: batch.items.count) }
        }
        for item in batch.items {
            let labelName = item.label.flatMap { $0 < classes.count ? classes[$0] : nil } ?? ""
            metadata += [String(rows), String(item.index), csvField(item.key), item.label.map(String.init) ?? "",
                         csvField(labelName), item.split ?? ""].joined(separator: ",") + "\n"
            rows += 1
        }
        deadLetters += batch.deadLetters
    }

    /// Records inputs that were rejected before extraction (for example a corrupt tar shard).
    public func record(_ letters: [DeadLetter]) { deadLetters += letters }

    /// Finalises every file; `summary` becomes `extraction.json`.
    public func finish(summary: [String: Any]) throws {
        try features.finish()
        try logits?.finish()
        try writeAtomically(metadata, to: "metadata.csv")
        try writeAtomically(classes.map { $0 + "\n" }.joined(), to: "classes.txt")
        try writeAtomically("key,reason\n" + deadLetters.map { csvField($0.key) + "," + csvField($0.reason) + "\n" }.joined(),
                            to: "dead_letters.csv")
        let json = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: directory.appendingPathComponent("extraction.json"), options: .atomic)
    }

    private func writeAtomically(_ text: String, to name: String) throws {
        try Data(text.utf8).write(to: directory.appendingPathComponent(name), options: .atomic)
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
func csvField(_ value: String) -> String {
    guard value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return value }
    return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
