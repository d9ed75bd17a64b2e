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
        let fd = try openForReading(path)
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw DatasetError(reason: "cannot stat \(path): \(errnoText())") }
        return try preadExactly(fd: fd, offset: 0, size: Int(info.st_size), what: path)
    case .tarMember(let shard, let offset, let size):
        let fd = try openForReading(shard)
        defer { close(fd) }
        return try preadExactly(fd: fd, offset: offset, size: size, what: "\(shard) at offset \(offset)")
    }
}

func openForReading(_ path: String) throws -> Int32 {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw DatasetError(reason: "cannot open \(path): \(errnoText())") }
    return fd
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// Reads exactly `size` bytes or throws; a short read means the file shrank or a tar lies about a member size.
func preadExactly(fd: Int32, offset: Int64, size: Int, what: String) throws -> [UInt8] {
    var failure: String?
    let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
        var done = 0
        while done < size {
            let n = pread(fd, buffer.baseAddress! + done, size - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                failure = "cannot read \(what): \(errnoText())"
                break
            }
            if n == 0 {
                failure = "unexpected end of file reading \(what) (\(done) of \(size) bytes)"
                break
            }
            done += n
        }
        count = failure == nil ? size : 0
    }
    if let failure { throw DatasetError(reason: failure) }
    return bytes
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
