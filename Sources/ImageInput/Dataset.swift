import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// On-disk dataset layouts understood by `DatasetIndex`.
public enum DatasetFormat: String, Codable, Sendable, CaseIterable {
    /// `root/<class>/…` or `root/{train,val}/<class>/…`.
    case imagefolder
    /// A directory of `*.tar` shards, or one shard.
    case webdataset
    /// A CSV (`path,label`) or JSONL (`{"path":…,"label":…}`) listing.
    case manifest

    /// Guesses the format from what is at `path`: a `.tar` file or a directory holding `.tar` files is WebDataset,
    /// a `.csv`/`.jsonl`/`.ndjson` file is a manifest, any other directory is an image folder.
    public static func detect(path: String) throws -> DatasetFormat {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DatasetError(reason: "dataset path \(path) does not exist")
        }
        if isDirectory.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            return names.contains { $0.lowercased().hasSuffix(".tar") } ? .webdataset : .imagefolder
        }
        switch (path as NSString).pathExtension.lowercased() {
        case "tar": return .webdataset
        case "csv", "jsonl", "ndjson": return .manifest
        default:
            throw DatasetError(reason: "cannot tell the dataset format of \(path): expected a directory, .tar, .csv or .jsonl")
        }
    }
}

/// Where an item's encoded bytes live.
public enum ItemSource: Sendable, Equatable, Hashable, Codable {
    /// A whole file.
    case file(path: String)
    /// A byte range inside a tar shard, read with `pread` so shards are never loaded whole.
    case tarMember(shard: String, offset: Int64, size: Int)
}

/// One image to process.
public struct DatasetItem: Sendable, Equatable, Hashable {
    /// Position in the index's deterministic order.
    public let index: Int
    /// Stable identifier: path relative to the dataset root, or `shard.tar:key` for WebDataset.
    public let key: String
    /// Index into `DatasetIndex.classes`, or nil for unlabelled data.
    public let label: Int?
    /// `train`/`val` (image folder) or the manifest's `split` column; nil when the dataset has no splits.
    public let split: String?
    /// Where to read the bytes.
    public let source: ItemSource

    /// Creates an item; readers assign `index` after sorting.
    public init(index: Int, key: String, label: Int?, split: String?, source: ItemSource) {
        self.index = index
        self.key = key
        self.label = label
        self.split = split
        self.source = source
    }
}

/// An input that could not be used, with the reason; written out instead of stopping the run.
public struct DeadLetter: Codable, Sendable, Equatable, Hashable {
    /// The item's key (or shard/manifest line for problems found while indexing).
    public let key: String
    /// Human-readable explanation.
    public let reason: String

    /// Creates a dead letter.
    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }
}

/// A dataset problem that stops indexing or reading (missing paths, unreadable files, unusable manifests).
public struct DatasetError: Error, CustomStringConvertible, Sendable {
    /// Human-readable explanation.
    public let reason: String
    /// Creates an error.
    public init(reason: String) { self.reason = reason }
    /// Same as `reason`.
    public var description: String { reason }
}

/// The items of a dataset in a fixed order, with their class names.
public struct DatasetIndex: Sendable {
    /// Layout the index was read from.
    public let format: DatasetFormat
    /// Path the index was read from.
    public let root: String
    /// Class names; `DatasetItem.label` indexes into this.
    public let classes: [String]
    /// Items in deterministic order (`items[i].index == i`).
    public let items: [DatasetItem]
    /// Problems found while indexing (corrupt shards, samples without an image, bad manifest lines).
    public let deadLetters: [DeadLetter]

    /// Assembles an index; readers use this after ordering their items.
    public init(format: DatasetFormat, root: String, classes: [String], items: [DatasetItem], deadLetters: [DeadLetter] = []) {
        self.format = format
        self.root = root
        self.classes = classes
        self.items = items
        self.deadLetters = deadLetters
    }

    /// Indexes the dataset at `path`, detecting the format when `format` is nil.
    public static func open(path: String, format: DatasetFormat? = nil) throws -> DatasetIndex {
        switch try format ?? DatasetFormat.detect(path: path) {
        case .imagefolder: return try ImageFolderReader.index(root: path)
        case .webdataset: return try WebDatasetReader.index(path: path)
        case .manifest: return try ManifestReader.index(path: path)
        }
    }

    /// Reads the encoded bytes of `item`; throws `DatasetError` when the file or shard cannot be read.
    public func bytes(of item: DatasetItem) throws -> [UInt8] {
        try item.bytes()
    }
}

extension DatasetItem {
    /// Reads the item's encoded bytes from its source; throws `DatasetError` when the file or shard cannot
    /// be read. Needs no index: a worker reads the locators its assignments carry.
    public func bytes() throws -> [UInt8] { try readBytes(source) }
}

/// Reads a source's bytes with plain POSIX calls: no Foundation `Data` bridging on the hot path.
func readBytes(_ source: ItemSource) throws -> [UInt8] {
    switch source {
    case .file(let path):
        let file = try openForReading(path)
        let size: Int
        do { size = try file.size() } catch { throw DatasetError(reason: "cannot stat \(path): \(reason(error))") }
        return try preadExactly(file, offset: 0, size: size, what: path)
    case .tarMember(let shard, let offset, let size):
        return try preadExactly(openForReading(shard), offset: offset, size: size, what: "\(shard) at offset \(offset)")
    }
}

func openForReading(_ path: String) throws -> DurableFile {
    do {
        return try DurableFile.open(path, access: .readOnly)
    } catch {
        throw DatasetError(reason: "cannot open \(path): \(reason(error))")
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// The system's words for a failed file operation (`strerror`), without the path the caller names itself.
func reason(_ error: Error) -> String {
    if case let DurableFileError.io(_, _, code) = error { return String(cString: strerror(code)) }
    return "\(error)"
}

/// Reads exactly `size` bytes or throws; a short read means the file shrank or a tar lies about a member size.
func preadExactly(_ file: DurableFile, offset: Int64, size: Int, what: String) throws -> [UInt8] {
    do {
        return try file.read(count: size, at: Int(offset))
    } catch let DurableFileError.endOfFile(_, _, wanted, read) {
        throw DatasetError(reason: "unexpected end of file reading \(what) (\(read) of \(wanted) bytes)")
    } catch {
        throw DatasetError(reason: "cannot read \(what): \(reason(error))")
    }
}

/// Code-point order (what Python's `sorted` does), independent of locale and Unicode normalisation.
func codePointOrder(_ a: String, _ b: String) -> Bool {
    a.utf8.lexicographicallyPrecedes(b.utf8)
}

/// Turns raw label strings into class names plus indices: if every label is a non-negative integer the classes
/// are "0"…"max", otherwise they are the sorted distinct names.
func resolveLabels(_ raw: [String?]) -> (classes: [String], labels: [Int?]) {
    let present = raw.compactMap { $0 }
    if present.isEmpty { return ([], raw.map { _ in nil }) }
    let numbers = present.compactMap { Int($0) }
    if numbers.count == present.count, numbers.allSatisfy({ $0 >= 0 }) {
        let top = numbers.max()!
        return ((0...top).map(String.init), raw.map { $0.flatMap { Int($0) } })
    }
    let classes = Array(Set(present)).sorted(by: codePointOrder)
    let lookup = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
    return (classes, raw.map { $0.flatMap { lookup[$0] } })
}

/// WebDataset member types taken as a sample's image, in order of preference; the decoder still tells the format
/// by the bytes.
let imageExtensions = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "gif", "bmp"]

/// WebDataset member types that are never a sample's image (labels and metadata).
let annotationExtensions: Set<String> = ["cls", "cls2", "txt", "json", "jsonl", "xml", "csv", "idx", "id", "index"]
