import DatasetIndex
import Foundation
import NumpyFormat
import WireProtocol

/// Writes what `featstream extract` produces into one folder:
/// - `features.npy`: `[N, D]` in `f32` or `f16`, row `i` for metadata row `i`;
/// - `logits.npy`: `[N, K]` f32, when logits were requested;
/// - `metadata.csv`: `row,index,key,label,label_name,split` per feature row (`index` is the item's position
///   in the dataset index; `label` is empty for an unlabelled item);
/// - `classes.txt`: the dataset's class names, one per line, line `i` is label `i`;
/// - `dead_letters.csv`: `key,reason` for every skipped input: the index scan's rejects first, then the
///   items that failed to decode, in dataset order;
/// - `extraction.json`: what ran and how fast.
///
/// Every file streams to disk (memory does not grow with the dataset) under a `.partial` name and is
/// renamed at `finish`, the `.npy` headers rewritten with the final row count, so a folder never holds a
/// partial result that looks complete.
public final class ExtractionWriter {
    /// The output folder.
    public let directory: URL
    /// Feature rows written so far.
    public private(set) var rows = 0
    /// Dead letters recorded so far.
    public private(set) var deadLetterCount = 0

    private let dtype: FeatureDType
    private let classes: [String]
    private let split: (IndexedItem) -> String
    private let features: NumpyStreamWriter
    private let logits: NumpyStreamWriter?
    private let metadata: StreamedTextFile
    private let deadLetters: StreamedTextFile

    /// Creates the folder (if needed) and starts the streaming files. `split` gives an item's
    /// `metadata.csv` split column (empty when the dataset has none).
    public init(directory: URL, dtype: FeatureDType, featureWidth: Int, logitsWidth: Int?, classes: [String],
                split: @escaping (IndexedItem) -> String = { _ in "" }) throws {
        self.directory = directory
        self.dtype = dtype
        self.classes = classes
        self.split = split
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        features = try NumpyStreamWriter(url: directory.appendingPathComponent("features.npy"), descr: dtype.npyDescr, width: featureWidth)
        logits = try logitsWidth.map {
            try NumpyStreamWriter(url: directory.appendingPathComponent("logits.npy"), descr: "<f4", width: $0)
        }
        metadata = try StreamedTextFile(url: directory.appendingPathComponent("metadata.csv"), header: "row,index,key,label,label_name,split\n")
        deadLetters = try StreamedTextFile(url: directory.appendingPathComponent("dead_letters.csv"), header: "key,reason\n")
    }

    /// Appends a batch's rows and dead letters.
    public func append(_ batch: ExtractedBatch) throws {
        try dtype.littleEndianBytes(of: batch.features).withUnsafeBytes { try features.append($0, rows: batch.items.count) }
        if let logits, let values = batch.logits {
            try values.withUnsafeBytes { try logits.append($0, rows: batch.items.count) }
        }
        for item in batch.items {
            let label = item.label >= 0 ? Int(item.label) : nil
            let labelName = label.flatMap { $0 < classes.count ? classes[$0] : nil } ?? ""
            try metadata.append([String(rows), String(item.position), csvField(item.key), label.map(String.init) ?? "",
                                 csvField(labelName), csvField(split(item))].joined(separator: ",") + "\n")
            rows += 1
        }
        for letter in batch.deadLetters { try writeDeadLetter(key: letter.key, reason: letter.reason) }
    }

    /// Records an input the index scan rejected; call for each before the first batch, so that
    /// `dead_letters.csv` lists them first.
    public func record(_ letter: IndexDeadLetter) throws { try writeDeadLetter(key: letter.key, reason: letter.reason) }

    private func writeDeadLetter(key: String, reason: String) throws {
        try deadLetters.append(csvField(key) + "," + csvField(reason) + "\n")
        deadLetterCount += 1
    }

    /// Finalises every file; `summary` becomes `extraction.json`.
    public func finish(summary: [String: Any]) throws {
        try features.finish()
        try logits?.finish()
        try metadata.finish()
        try deadLetters.finish()
        try Data(classes.map { $0 + "\n" }.joined().utf8).write(to: directory.appendingPathComponent("classes.txt"), options: .atomic)
        let json = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: directory.appendingPathComponent("extraction.json"), options: .atomic)
    }
}

/// A text file appended line by line through a 64 KiB buffer, as `NAME.partial`, renamed over `url` by
/// `finish` (like `NumpyStreamWriter`): metadata for 100M items never sits in memory.
private final class StreamedTextFile {
    private let url: URL
    private let partial: URL
    private let handle: FileHandle
    private var buffer: [UInt8] = []

    init(url: URL, header: String) throws {
        self.url = url
        partial = url.appendingPathExtension("partial")
        guard FileManager.default.createFile(atPath: partial.path, contents: Data(header.utf8)) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: partial.path])
        }
        handle = try FileHandle(forWritingTo: partial)
        try handle.seekToEnd()
        buffer.reserveCapacity(1 << 16)
    }

    func append(_ text: String) throws {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= 1 << 16 { try flush() }
    }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        try handle.write(contentsOf: buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    func finish() throws {
        try flush()
        try handle.synchronize()
        try handle.close()
        if FileManager.default.fileExists(atPath: url.path) { try FileManager.default.removeItem(at: url) }
        try FileManager.default.moveItem(at: partial, to: url)
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
func csvField(_ value: String) -> String {
    guard value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return value }
    return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
