import WireProtocol

/// The byte layout of an index file (Protocols/INDEX.md): one home for every offset and size, shared by the
/// writer and the reader.
enum IndexLayout {
    static let magic: [UInt8] = Array("FSIX".utf8)
    static let version: UInt16 = 1
    static let headerLength = 256
    static let sectionCount = 7
    static let sectionTableOffset = 56
    static let recordSize = 32
    static let stringRefSize = 16
    static let deadLetterSize = 32
    static let fingerprintSize = 40
    /// `source` value of a record whose key is itself the path of the item's file.
    static let keyIsPath: UInt32 = 0xFFFF_FFFF
    /// Entry size of each section, in section order; 1 for byte blobs.
    static let entrySizes = [recordSize, 1, stringRefSize, stringRefSize, deadLetterSize, fingerprintSize, 1]
}

/// The sections of an index file, in file order.
enum Section: Int, CaseIterable {
    case records, keys, sources, classes, deadLetters, fingerprint, text
}

/// Which reader produced an index.
public enum DatasetKind: UInt8, Sendable, CaseIterable {
    /// `root/<class>/…` or `root/{train,val}/<class>/…`: every regular file below a class folder is an item.
    case imageFolder = 1
    /// A CSV (`path,label[,split]` header) or JSONL (`{"path":…,"label":…,"split":…}`) listing.
    case manifest = 2
    /// A directory of `*.tar` shards (or one shard); an item is a sample (members sharing a key).
    case webDataset = 3

    /// The name used in selections and messages: `imagefolder`, `manifest`, `webdataset`.
    public var name: String {
        switch self {
        case .imageFolder: return "imagefolder"
        case .manifest: return "manifest"
        case .webDataset: return "webdataset"
        }
    }

    /// The kind named `name` (as printed by `name`), or nil.
    public init?(name: String) {
        guard let kind = DatasetKind.allCases.first(where: { $0.name == name }) else { return nil }
        self = kind
    }
}

/// How an index's labels map to class names.
public enum LabelKind: UInt8, Sendable {
    /// No item has a label.
    case none = 0
    /// Labels are non-negative integers; class `i` is named by its decimal digits, classes 0…max.
    case integers = 1
    /// Labels are names; class ids follow the order of first appearance in the scan.
    case names = 2
    /// Image-folder classes: the sorted class folder names, known before the first item.
    case folders = 3
}

/// Why a dataset, its index file or an item's bytes cannot be read (or the index written): one sentence
/// naming the path and the fault, fit for a log line or a dead letter's reason.
public struct IndexError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A sentence naming the file and what is wrong.
    public let description: String
    /// An error with the given sentence.
    public init(_ description: String) { self.description = description }
}

/// Little-endian appends, so the file does not depend on the host's byte order.
extension Array where Element == UInt8 {
    @inline(__always) mutating func appendLE(_ value: UInt64) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
    @inline(__always) mutating func appendLE(_ value: UInt32) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
    @inline(__always) mutating func appendLE(_ value: UInt16) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
    mutating func storeLE(_ value: UInt64, at offset: Int) {
        Swift.withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { self[offset + i] = b } }
    }
    mutating func storeLE(_ value: UInt32, at offset: Int) {
        Swift.withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { self[offset + i] = b } }
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always) func u64(_ offset: Int) -> UInt64 { UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
    @inline(__always) func u32(_ offset: Int) -> UInt32 { UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    @inline(__always) func u16(_ offset: Int) -> UInt16 { UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
}

/// 64-bit FNV-1a: tiny, dependency-free and identical on every platform; used for fingerprints, not integrity.
struct FNV1a64: Sendable {
    /// The hash of everything added so far.
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    /// A fresh hash (the FNV offset basis).
    public init() {}

    /// Adds bytes in order.
    public mutating func add<C: Collection>(bytes: C) where C.Element == UInt8 {
        var v = value
        for byte in bytes { v = (v ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        value = v
    }

    /// Adds a word as 8 little-endian bytes.
    public mutating func add(_ word: UInt64) {
        var w = word
        var v = value
        for _ in 0..<8 { v = (v ^ (w & 0xff)) &* 0x0000_0100_0000_01b3; w >>= 8 }
        value = v
    }
}

/// Streaming CRC-32C of one section while it is written.
struct RunningCRC {
    private(set) var value: UInt32 = 0
    mutating func add(_ bytes: UnsafeRawBufferPointer) { value = CRC32C.checksum(bytes, seed: value) }
}
