import Foundation
@_exported import enum WireProtocol.ItemLocator
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One item of an index: its position is its identity (keys may repeat, Protocols/INDEX.md §4).
public struct IndexedItem: Sendable, Equatable, Hashable {
    /// Position in the index, 0-based; stable for a given index file.
    public var position: UInt64
    /// Relative path, manifest path as written, or `shard.tar:sample` for WebDataset.
    public var key: String
    /// Class id, or -1 when unlabelled.
    public var label: Int32
    /// Where to read the bytes (`.file` or `.tarMember`; an index item is never `.rejected`).
    public var locator: ItemLocator

    /// An item with the given fields, stored as given.
    public init(position: UInt64, key: String, label: Int32, locator: ItemLocator) {
        self.position = position
        self.key = key
        self.label = label
        self.locator = locator
    }
}

/// An input the scan rejected, with the reason; counted in the index's totals.
public struct IndexDeadLetter: Sendable, Equatable, Hashable {
    /// `manifest.csv:17`, a path relative to the root, or `shard.tar:member`.
    public var key: String
    /// A sentence saying why.
    public var reason: String
    /// Items before it in the index (it was met between item `position - 1` and item `position`).
    public var position: UInt64

    /// A dead letter with the given fields, stored as given.
    public init(key: String, reason: String, position: UInt64) {
        self.key = key
        self.reason = reason
        self.position = position
    }
}

/// A finished index file, memory-mapped read-only: item `i`, a range of items and every table are read in
/// place in O(1) per item, and nothing per item is held in memory.
public final class IndexedDataset: @unchecked Sendable {
    /// The file this was opened from.
    public let path: String
    /// Which reader produced the index.
    public let kind: DatasetKind
    /// How labels map to classes.
    public let labelKind: LabelKind
    /// Items in the index.
    public let count: Int
    /// Dead letters in the index.
    public let deadLetterCount: Int
    /// Inputs the selection left out (other splits, past the limit): not items, not dead letters.
    public let skippedCount: Int
    /// Number of classes (for `.integers`: max label + 1).
    public let classCount: Int
    /// FNV-1a over the fingerprint entries (§5): equal for an unchanged dataset.
    public let datasetFingerprint: UInt64
    /// FNV-1a over the header (which holds every section's CRC-32C): identifies this index's content, so a
    /// shard plan made of its ranges can be tied to it.
    public let contentID: UInt64
    /// Folder that relative item paths and tar names resolve against.
    public private(set) var root: String
    /// The canonical selection text the index was built for (§2).
    public private(set) var selection: String

    private let base: UnsafeRawPointer
    private let mappedLength: Int
    private var sections: [(offset: Int, length: Int, crc: UInt32)] = []

    /// Maps the index at `path` and checks its header and section bounds (not the section checksums: see
    /// `verify`). Throws `IndexError` naming the file and the fault.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw IndexError("cannot open index \(path): \(errnoText())") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw IndexError("cannot stat index \(path): \(errnoText())") }
        let size = Int(info.st_size)
        guard size >= IndexLayout.headerLength else { throw IndexError("index \(path) is \(size) bytes, shorter than its header") }
        guard let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw IndexError("cannot map index \(path): \(errnoText())")
        }
        base = UnsafeRawPointer(map)
        mappedLength = size
        let h = UnsafeRawBufferPointer(start: base, count: IndexLayout.headerLength)
        func fail(_ what: String) -> IndexError { IndexError("index \(path) is not usable: \(what)") }
        // Fields are assigned before any check can throw so that deinit may unmap.
        kind = DatasetKind(rawValue: h[8]) ?? .manifest
        labelKind = LabelKind(rawValue: h[9]) ?? .none
        count = Int(truncatingIfNeeded: h.u64(16))
        deadLetterCount = Int(truncatingIfNeeded: h.u64(24))
        skippedCount = Int(truncatingIfNeeded: h.u64(32))
        classCount = Int(h.u32(12))
        datasetFingerprint = h.u64(40)
        contentID = h.u64(240)
        root = ""
        selection = ""
        guard Array(h[0..<4]) == IndexLayout.magic else { throw fail("bad magic (not an index file)") }
        guard h.u16(4) == IndexLayout.version else { throw fail("format version \(h.u16(4)), this build reads \(IndexLayout.version)") }
        guard Int(h.u16(6)) == IndexLayout.headerLength else { throw fail("header length \(h.u16(6))") }
        guard RunningCRC().adding(UnsafeRawBufferPointer(rebasing: h[0..<252])) == h.u32(252) else { throw fail("header checksum mismatch") }
        guard DatasetKind(rawValue: h[8]) != nil, LabelKind(rawValue: h[9]) != nil else { throw fail("unknown dataset or label kind") }
        for section in Section.allCases {
            let slot = IndexLayout.sectionTableOffset + section.rawValue * 24
            let offset = h.u64(slot), length = h.u64(slot + 8)
            guard offset >= UInt64(IndexLayout.headerLength), offset % 8 == 0, length <= UInt64(size),
                  offset <= UInt64(size) - length else { throw fail("section \(section) lies outside the file") }
            guard length % UInt64(IndexLayout.entrySizes[section.rawValue]) == 0 else { throw fail("section \(section) length \(length) is not a whole number of entries") }
            sections.append((Int(offset), Int(length), h.u32(slot + 16)))
        }
        guard sections[Section.records.rawValue].length / IndexLayout.recordSize == count else { throw fail("item count \(count) does not match the records section") }
        guard sections[Section.deadLetters.rawValue].length / IndexLayout.deadLetterSize == deadLetterCount else { throw fail("dead letter count does not match its section") }
        if labelKind == .names || labelKind == .folders {
            guard sections[Section.classes.rawValue].length / IndexLayout.stringRefSize == classCount else { throw fail("class count does not match the class section") }
        }
        guard let r = text(offset: h.u64(224), length: h.u32(232)), let s = text(offset: h.u64(48), length: h.u32(236)) else {
            throw fail("root or selection text outside the text section")
        }
        root = r
        selection = s
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), mappedLength) }

    private func bytes(_ section: Section) -> UnsafeRawBufferPointer {
        let s = sections[section.rawValue]
        return UnsafeRawBufferPointer(start: base + s.offset, count: s.length)
    }

    private func text(offset: UInt64, length: UInt32) -> String? {
        let t = bytes(.text)
        guard offset <= UInt64(t.count), UInt64(length) <= UInt64(t.count) - offset else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: t[Int(offset)..<Int(offset) + Int(length)]), as: UTF8.self)
    }

    private func stringRef(_ section: Section, _ i: Int) throws -> String {
        let b = bytes(section)
        let at = i * IndexLayout.stringRefSize
        guard i >= 0, at + IndexLayout.stringRefSize <= b.count, let s = text(offset: b.u64(at), length: b.u32(at + 8)) else {
            throw IndexError("index \(path): \(section) entry \(i) is out of range")
        }
        return s
    }

    /// Class names in id order (for `.integers`, the decimal numbers 0…max).
    public func classNames() throws -> [String] {
        switch labelKind {
        case .none: return []
        case .integers: return (0..<classCount).map(String.init)
        case .names, .folders: return try (0..<classCount).map { try stringRef(.classes, $0) }
        }
    }

    /// Tar shard paths relative to the root, by source id.
    public var sourceCount: Int { sections[Section.sources.rawValue].length / IndexLayout.stringRefSize }

    /// The path (relative to the root) of source `id`.
    public func sourcePath(_ id: Int) throws -> String { try stringRef(.sources, id) }

    /// Item `position` in O(1). Throws `IndexError` if the position is out of range or the record points
    /// outside its sections (a damaged file).
    public func item(_ position: Int) throws -> IndexedItem {
        guard position >= 0 && position < count else { throw IndexError("item \(position) is out of range (index \(path) holds \(count))") }
        let r = UnsafeRawBufferPointer(rebasing: bytes(.records)[(position * IndexLayout.recordSize)...])
        let keys = bytes(.keys)
        let keyOffset = r.u64(0), keyLength = r.u32(8)
        guard keyOffset <= UInt64(keys.count), UInt64(keyLength) <= UInt64(keys.count) - keyOffset else {
            throw IndexError("index \(path): item \(position) has its key outside the keys section")
        }
        let key = String(decoding: UnsafeRawBufferPointer(rebasing: keys[Int(keyOffset)..<Int(keyOffset) + Int(keyLength)]), as: UTF8.self)
        let source = r.u32(28)
        let locator: ItemLocator
        if source == IndexLayout.keyIsPath {
            locator = .file(path: resolve(key))
        } else {
            locator = .tarMember(path: resolve(try sourcePath(Int(source))), offset: r.u64(16), size: r.u32(24))
        }
        return IndexedItem(position: UInt64(position), key: key, label: Int32(bitPattern: r.u32(12)), locator: locator)
    }

    /// Items `range` in order (a shard is a range of the index).
    public func items(_ range: Range<Int>) throws -> [IndexedItem] { try range.map(item) }

    /// Dead letter `i`, in the order the scan met them.
    public func deadLetter(_ i: Int) throws -> IndexDeadLetter {
        guard i >= 0 && i < deadLetterCount else { throw IndexError("dead letter \(i) is out of range (index \(path) holds \(deadLetterCount))") }
        let d = UnsafeRawBufferPointer(rebasing: bytes(.deadLetters)[(i * IndexLayout.deadLetterSize)...])
        guard let key = text(offset: d.u64(0), length: d.u32(8)), let reason = text(offset: d.u64(16), length: d.u32(12)) else {
            throw IndexError("index \(path): dead letter \(i) points outside the text section")
        }
        return IndexDeadLetter(key: key, reason: reason, position: d.u64(24))
    }

    /// Every dead letter (the file holds them; call per index for large sets).
    public func deadLetters() throws -> [IndexDeadLetter] { try (0..<deadLetterCount).map(deadLetter) }

    /// The fingerprint entries, in scan order.
    public func fingerprintEntries() throws -> [FingerprintEntry] {
        let f = bytes(.fingerprint)
        return try stride(from: 0, to: f.count, by: IndexLayout.fingerprintSize).map { at in
            guard let p = text(offset: f.u64(at), length: f.u32(at + 8)), let kind = FingerprintEntry.Kind(rawValue: f.u32(at + 12)) else {
                throw IndexError("index \(path): fingerprint entry at byte \(at) is damaged")
            }
            return FingerprintEntry(path: p, kind: kind, size: f.u64(at + 16), mtimeNs: Int64(bitPattern: f.u64(at + 24)), sampleHash: f.u64(at + 32))
        }
    }

    /// Checks every section's CRC-32C and every record's references; reads the whole file (O(items)).
    public func verify() throws {
        for section in Section.allCases {
            let crc = RunningCRC().adding(bytes(section))
            guard crc == sections[section.rawValue].crc else { throw IndexError("index \(path): \(section) section checksum mismatch") }
        }
        let keys = UInt64(bytes(.keys).count)
        let records = bytes(.records)
        for i in 0..<count {
            let at = i * IndexLayout.recordSize
            let offset = records.u64(at), length = UInt64(records.u32(at + 8)), source = records.u32(at + 28)
            guard offset <= keys, length <= keys - offset else { throw IndexError("index \(path): item \(i) has its key outside the keys section") }
            guard source == IndexLayout.keyIsPath || Int(source) < sourceCount else { throw IndexError("index \(path): item \(i) names source \(source) of \(sourceCount)") }
            let label = Int32(bitPattern: records.u32(at + 12))
            guard label >= -1 && Int(label) < max(classCount, 0) || label == -1 else { throw IndexError("index \(path): item \(i) has label \(label) of \(classCount) classes") }
        }
        for i in 0..<deadLetterCount { _ = try deadLetter(i) }
        _ = try fingerprintEntries()
        _ = try classNames()
    }

    func resolve(_ relative: String) -> String {
        relative.hasPrefix("/") ? relative : (root.isEmpty ? relative : root + "/" + relative)
    }

    /// The split folder (`train` or `val`) an image-folder item's key starts with; nil for other layouts,
    /// which keep no split per item (INDEX.md §2). Exact: a root holding either folder is always read as
    /// split folders, so no class folder has these names (§3.1).
    public func folderSplit(of item: IndexedItem) -> String? {
        guard kind == .imageFolder else { return nil }
        return FolderScanner.splitNames.first { item.key.hasPrefix($0 + "/") }
    }
}
