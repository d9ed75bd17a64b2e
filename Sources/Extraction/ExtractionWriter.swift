import Foundation
import ImageInput
import NumpyFormat

/// Element type of the written features.
public enum FeatureDType: String, Codable, Sendable, CaseIterable {
    case f32, f16

    var npyDescr: String { self == .f32 ? "<f4" : "<f2" }
    var byteWidth: Int { self == .f32 ? 4 : 2 }
}

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
    private let features: StreamingNumpyFile
    private let logits: StreamingNumpyFile?
    private var metadata = "row,index,key,label,label_name,split\n"

    /// Creates the folder (if needed) and starts the streaming files.
    public init(directory: URL, dtype: FeatureDType, featureWidth: Int, logitsWidth: Int?, classes: [String]) throws {
        self.directory = directory
        self.dtype = dtype
        self.featureWidth = featureWidth
        self.logitsWidth = logitsWidth
        self.classes = classes
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        features = try StreamingNumpyFile(url: directory.appendingPathComponent("features.npy"), descr: dtype.npyDescr, width: featureWidth)
        logits = try logitsWidth.map {
            try StreamingNumpyFile(url: directory.appendingPathComponent("logits.npy"), descr: "<f4", width: $0)
        }
    }

    /// Appends a batch's rows and dead letters.
    public func append(_ batch: ExtractedBatch) throws {
        switch dtype {
        case .f32:
            try batch.features.withUnsafeBytes { try features.append($0, rows: batch.items.count) }
        case .f16:
            let halves = batch.features.map { Float16($0) }
            try halves.withUnsafeBytes { try features.append($0, rows: batch.items.count) }
        }
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

/// A `.npy` file of `[rows, width]` written row batch by row batch, whose row count is known only at the end.
final class StreamingNumpyFile {
    private let url: URL
    private let partial: URL
    private let handle: FileHandle
    private let descr: String
    private let width: Int
    private var rows = 0
    /// Room for any row count: the header is rewritten in place at the end, so its length must not change.
    private static let headerLength = 128

    init(url: URL, descr: String, width: Int) throws {
        self.url = url
        partial = url.appendingPathExtension("partial")
        self.descr = descr
        self.width = width
        FileManager.default.createFile(atPath: partial.path, contents: nil)
        handle = try FileHandle(forWritingTo: partial)
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Self.header(rows: 0, width: width, descr: descr))
    }

    func append(_ bytes: UnsafeRawBufferPointer, rows count: Int) throws {
        guard count > 0 else { return }
        try handle.write(contentsOf: Data(bytes))
        rows += count
    }

    func finish() throws {
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: Self.header(rows: rows, width: width, descr: descr))
        try handle.synchronize()
        try handle.close()
        if FileManager.default.fileExists(atPath: url.path) { try FileManager.default.removeItem(at: url) }
        try FileManager.default.moveItem(at: partial, to: url)
    }

    static func header(rows: Int, width: Int, descr: String) -> Data {
        var header = NumpyArray.header(shape: [rows, width], descr: descr)
        // NumpyArray pads to 64; widen to the fixed length by padding the dict with spaces before its newline.
        let extra = headerLength - header.count
        if extra > 0 {
            header.removeLast()
            header.append(contentsOf: [UInt8](repeating: 0x20, count: extra))
            header.append(0x0a)
            let length = UInt16(header.count - 10)
            header[8] = UInt8(length & 0xff)
            header[9] = UInt8(length >> 8)
        }
        return header
    }
}
