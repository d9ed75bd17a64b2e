import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One growing section of an index under construction: appends go to a fixed raw buffer (no per-append
/// allocation or exclusivity check on an array), are checksummed as they reach the file, and are readable
/// through `file` by other threads once flushed.
final class PartFile {
    let path: String
    let file: DurableFile
    private let storage: UnsafeMutableRawPointer
    private let capacity: Int
    private var used = 0
    /// Bytes flushed to the file.
    private(set) var flushed: UInt64 = 0
    private(set) var crc = RunningCRC()

    init(path: String, bufferLimit: Int = 1 << 20) throws {
        self.path = path
        capacity = bufferLimit
        file = try indexIO { try DurableFile.open(path, access: .readWrite, creation: .truncating(mode: 0o644)) }
        storage = .allocate(byteCount: bufferLimit, alignment: 16)
    }

    deinit {
        storage.deallocate()
    }

    /// Bytes appended so far, flushed or not.
    var length: UInt64 { flushed + UInt64(used) }

    @inline(__always) func append(_ bytes: UnsafeRawBufferPointer) throws {
        if used + bytes.count > capacity {
            try flush()
            if bytes.count > capacity { return try writeThrough(bytes) }
        }
        if let base = bytes.baseAddress { (storage + used).copyMemory(from: base, byteCount: bytes.count) }
        used += bytes.count
    }

    func append(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try append($0) } }

    /// Appends one 32-byte item record (Protocols/INDEX.md §4.2) in place.
    @inline(__always) func appendRecord(keyOffset: UInt64, keyLength: UInt32, label: Int32, memberOffset: UInt64,
                                        memberSize: UInt32, source: UInt32) throws {
        if used + 32 > capacity { try flush() }
        let p = storage + used
        p.storeBytes(of: keyOffset.littleEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: keyLength.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: UInt32(bitPattern: label).littleEndian, toByteOffset: 12, as: UInt32.self)
        p.storeBytes(of: memberOffset.littleEndian, toByteOffset: 16, as: UInt64.self)
        p.storeBytes(of: memberSize.littleEndian, toByteOffset: 24, as: UInt32.self)
        p.storeBytes(of: source.littleEndian, toByteOffset: 28, as: UInt32.self)
        used += 32
    }

    private func writeThrough(_ bytes: UnsafeRawBufferPointer) throws {
        crc.add(bytes)
        try indexIO { try file.write(bytes, at: Int(flushed)) }
        flushed += UInt64(bytes.count)
    }

    func flush() throws {
        guard used > 0 else { return }
        try writeThrough(UnsafeRawBufferPointer(start: storage, count: used))
        used = 0
    }
}

/// One dataset entry whose state is part of the dataset fingerprint (Protocols/INDEX.md §5).
public struct FingerprintEntry: Sendable, Equatable {
    /// What the entry stands for.
    public enum Kind: UInt32, Sendable {
        /// A directory walked by the scan: its mtime changes when entries are added, removed or renamed.
        case directory = 1
        /// The manifest file.
        case manifest = 2
        /// A tar shard.
        case tar = 3
        /// An item's file sampled at the end of the scan.
        case sampledFile = 4
    }
    /// Path relative to the index root (`.` for the root itself).
    public var path: String
    public var kind: Kind
    /// `st_size` when the scan saw it.
    public var size: UInt64
    /// `st_mtim` in nanoseconds since the epoch.
    public var mtimeNs: Int64
    /// FNV-1a of sampled blocks (§5); 0 for directories.
    public var sampleHash: UInt64

    /// An entry with the given fields, stored as given.
    public init(path: String, kind: Kind, size: UInt64, mtimeNs: Int64, sampleHash: UInt64) {
        self.path = path
        self.kind = kind
        self.size = size
        self.mtimeNs = mtimeNs
        self.sampleHash = sampleHash
    }
}

/// Writes an index file section by section while a scan runs, then assembles the file atomically.
///
/// The scanners call it; tests call it directly to reproduce the byte-exact vectors. Not thread-safe: one
/// scan thread writes, and `IndexScan` reads the flushed records through its own descriptors.
public final class IndexWriter {
    let kind: DatasetKind
    let root: String
    let selection: String
    let building: String
    let records, keys, sources, deadLetters, fingerprint, text: PartFile
    /// Items appended so far.
    public private(set) var itemCount = 0
    /// Dead letters appended so far.
    public private(set) var deadLetterCount = 0
    /// Source (tar) paths, by source id; kept for readers of items before the file is finished.
    public private(set) var sourcePaths: [String] = []
    private var fingerprintHash = FNV1a64()
    private var scratch: [UInt8] = []
    /// Checkpoints of an earlier scan this one must reach unchanged (`expect`), by entry count.
    private var expected: [ScanCheckpoint] = []
    /// Entries (items plus dead letters) at which the next expected checkpoint is compared; `Int.max` when none.
    private var nextExpectedEntries = Int.max
    /// CRC-32C over each dead letter's key, reason (each followed by its u32 length) and u64 position.
    private var deadLetterDigest = RunningCRC()

    /// Starts an index under `buildingDirectory` (created if needed; its part files are replaced).
    /// `root` is the folder item paths are relative to; `selection` is the canonical selection text (§2).
    public init(buildingDirectory: String, kind: DatasetKind, root: String, selection: String) throws {
        if mkdir(buildingDirectory, 0o755) != 0 && errno != EEXIST {
            throw IndexError("cannot create \(buildingDirectory): \(errnoText())")
        }
        building = buildingDirectory
        self.kind = kind
        self.root = root
        self.selection = selection
        records = try PartFile(path: buildingDirectory + "/records.part")
        keys = try PartFile(path: buildingDirectory + "/keys.part")
        sources = try PartFile(path: buildingDirectory + "/sources.part", bufferLimit: 1 << 16)
        deadLetters = try PartFile(path: buildingDirectory + "/deadletters.part", bufferLimit: 1 << 16)
        fingerprint = try PartFile(path: buildingDirectory + "/fingerprint.part", bufferLimit: 1 << 16)
        text = try PartFile(path: buildingDirectory + "/text.part", bufferLimit: 1 << 16)
        scratch.reserveCapacity(64)
    }

    private func addText(_ string: String) throws -> (offset: UInt64, length: UInt32) {
        let bytes = Array(string.utf8)
        let offset = text.length
        try text.append(bytes)
        return (offset, UInt32(bytes.count))
    }

    /// Registers a tar shard (path relative to the root) and returns its source id for `appendItem`.
    public func addSource(_ path: String) throws -> UInt32 {
        let ref = try addText(path)
        scratch.removeAll(keepingCapacity: true)
        scratch.appendLE(ref.offset); scratch.appendLE(ref.length); scratch.appendLE(UInt32(0))
        try sources.append(scratch)
        sourcePaths.append(path)
        return UInt32(sourcePaths.count - 1)
    }

    /// Appends the next item. `source` is `IndexLayout.keyIsPath` for a file item (the key is its path) or a
    /// source id with the member's data offset and size.
    @inline(__always)
    public func appendItem(key: UnsafeRawBufferPointer, label: Int32, source: UInt32 = 0xFFFF_FFFF,
                           memberOffset: UInt64 = 0, memberSize: UInt32 = 0) throws {
        try records.appendRecord(keyOffset: keys.length, keyLength: UInt32(key.count), label: label,
                                 memberOffset: memberOffset, memberSize: memberSize, source: source)
        try keys.append(key)
        itemCount += 1
        if itemCount + deadLetterCount == nextExpectedEntries { try verifyExpected() }
    }

    /// `appendItem` with a `String` key.
    public func appendItem(key: String, label: Int32, source: UInt32 = 0xFFFF_FFFF,
                           memberOffset: UInt64 = 0, memberSize: UInt32 = 0) throws {
        var key = key
        try key.withUTF8 { try appendItem(key: UnsafeRawBufferPointer($0), label: label, source: source,
                                          memberOffset: memberOffset, memberSize: memberSize) }
    }

    /// Records an input that did not become an item; its position is the number of items before it.
    public func addDeadLetter(key: String, reason: String) throws {
        let k = try addText(key)
        let r = try addText(reason)
        scratch.removeAll(keepingCapacity: true)
        scratch.appendLE(k.offset); scratch.appendLE(k.length); scratch.appendLE(r.length)
        scratch.appendLE(r.offset); scratch.appendLE(UInt64(itemCount))
        try deadLetters.append(scratch)
        deadLetterCount += 1
        // The digest covers what the dead letter says, not its record: the record points into the text section,
        // which also holds fingerprint paths (a manifest read from a pipe has none), so equal dead letters can
        // sit at other offsets in two scans of the same entries.
        for part in [key, reason] {
            var part = part
            part.withUTF8 { deadLetterDigest.add(UnsafeRawBufferPointer($0)) }
            withUnsafeBytes(of: UInt32(part.utf8.count).littleEndian) { deadLetterDigest.add($0) }
        }
        withUnsafeBytes(of: UInt64(itemCount).littleEndian) { deadLetterDigest.add($0) }
        if itemCount + deadLetterCount == nextExpectedEntries { try verifyExpected() }
    }

    /// Makes the scan fail, naming the dataset as changed, unless it reaches each of `checkpoints` (taken by an
    /// earlier scan of the same selection, `checkpoint()`) with the same items, dead letters and bytes: a
    /// restarted coordinator rescans and must not lease entries that differ from those it leased before
    /// (Protocols/INDEX.md §6). Call before the first append.
    public func expect(_ checkpoints: [ScanCheckpoint]) {
        expected = checkpoints.filter { $0.entries > 0 }.sorted { $0.entries < $1.entries }
        nextExpectedEntries = expected.first.map { Int($0.entries) } ?? Int.max
    }

    /// The entries written so far and their digest (`ScanCheckpoint`); flushes the records, keys, dead letters
    /// and the text they point into, so other threads can read every entry counted.
    public func checkpoint() throws -> ScanCheckpoint {
        for part in [keys, records, deadLetters, text] { try part.flush() }
        return ScanCheckpoint(items: UInt64(itemCount), deadLetters: UInt64(deadLetterCount), recordsCRC: records.crc.value,
                              keysCRC: keys.crc.value, deadLettersCRC: deadLetterDigest.value)
    }

    private func verifyExpected() throws {
        let reached = try checkpoint()
        let wanted = expected.removeFirst()
        nextExpectedEntries = expected.first.map { Int($0.entries) } ?? Int.max
        guard reached == wanted else {
            throw IndexError("the dataset changed since this job leased its first \(wanted.entries) entries: the scan now finds "
                + "\(reached.items) items and \(reached.deadLetters) rejected inputs there, where it found \(wanted.items) and "
                + "\(wanted.deadLetters)\(reached.items == wanted.items && reached.deadLetters == wanted.deadLetters ? ", with other paths, labels or reasons" : "")")
        }
    }

    /// Throws when the scan ended before an expected checkpoint (the dataset shrank since it was taken).
    func verifyNothingExpectedIsLeft() throws {
        guard let wanted = expected.first else { return }
        throw IndexError("the dataset changed since this job leased its first \(wanted.entries) entries: the scan now ends "
            + "after \(itemCount + deadLetterCount) (\(itemCount) items, \(deadLetterCount) rejected inputs)")
    }

    /// Adds one entry to the dataset fingerprint.
    public func addFingerprint(_ entry: FingerprintEntry) throws {
        let p = try addText(entry.path)
        scratch.removeAll(keepingCapacity: true)
        scratch.appendLE(p.offset); scratch.appendLE(p.length); scratch.appendLE(entry.kind.rawValue)
        scratch.appendLE(entry.size); scratch.appendLE(UInt64(bitPattern: entry.mtimeNs)); scratch.appendLE(entry.sampleHash)
        try fingerprint.append(scratch)
        fingerprintHash.add(UInt64(p.length))
        fingerprintHash.add(bytes: entry.path.utf8)
        fingerprintHash.add(UInt64(entry.kind.rawValue))
        fingerprintHash.add(entry.size)
        fingerprintHash.add(UInt64(bitPattern: entry.mtimeNs))
        fingerprintHash.add(entry.sampleHash)
    }

    /// Assembles the finished file at `path` (written to `path.tmp`, fsync'd, renamed, directory fsync'd) and
    /// removes the part files. `classCount` must be set for `.integers` (max label + 1); `classNames` for
    /// `.names` and `.folders`. `skipped` counts inputs left out by the selection (not dead letters).
    public func finish(labelKind: LabelKind, classNames: [String], classCount: Int, skipped: Int, to path: String) throws {
        var classEntries: [UInt8] = []
        for name in classNames {
            let ref = try addText(name)
            classEntries.appendLE(ref.offset); classEntries.appendLE(ref.length); classEntries.appendLE(UInt32(0))
        }
        let rootRef = try addText(root)
        let selectionRef = try addText(selection)
        for part in [records, keys, sources, deadLetters, fingerprint, text] { try part.flush() }

        let temporary = path + ".tmp"
        let file = try indexIO { try DurableFile.open(temporary, access: .readWrite, creation: .truncating(mode: 0o644)) }
        func put(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try indexIO { try file.write(bytes, at: Int(offset)) } }
        var header = [UInt8](repeating: 0, count: IndexLayout.headerLength)
        var end = UInt64(IndexLayout.headerLength)
        let zeros = [UInt8](repeating: 0, count: 8)
        func place(_ section: Section, length: UInt64, crc: UInt32, write: (UInt64) throws -> Void) throws {
            let aligned = (end + 7) & ~7
            if aligned > end { try zeros.withUnsafeBytes { try put(UnsafeRawBufferPointer(rebasing: $0[0..<Int(aligned - end)]), at: end) } }
            try write(aligned)
            let slot = IndexLayout.sectionTableOffset + section.rawValue * 24
            header.storeLE(aligned, at: slot)
            header.storeLE(length, at: slot + 8)
            header.storeLE(crc, at: slot + 16)
            end = aligned + length
        }
        let parts: [(Section, PartFile)] = [(.records, records), (.keys, keys), (.sources, sources)]
        for (section, part) in parts {
            try place(section, length: part.length, crc: part.crc.value) { try copy(part, to: file, at: $0) }
        }
        let classCRC = classEntries.withUnsafeBytes { RunningCRC().adding($0) }
        try place(.classes, length: UInt64(classEntries.count), crc: classCRC) { at in
            try classEntries.withUnsafeBytes { try put($0, at: at) }
        }
        for (section, part) in [(Section.deadLetters, deadLetters), (.fingerprint, fingerprint), (.text, text)] {
            try place(section, length: part.length, crc: part.crc.value) { try copy(part, to: file, at: $0) }
        }

        header.replaceSubrange(0..<4, with: IndexLayout.magic)
        header.replaceSubrange(4..<6, with: withUnsafeBytes(of: IndexLayout.version.littleEndian) { Array($0) })
        header.replaceSubrange(6..<8, with: withUnsafeBytes(of: UInt16(IndexLayout.headerLength).littleEndian) { Array($0) })
        header[8] = kind.rawValue
        header[9] = labelKind.rawValue
        header.storeLE(UInt32(classCount), at: 12)
        header.storeLE(UInt64(itemCount), at: 16)
        header.storeLE(UInt64(deadLetterCount), at: 24)
        header.storeLE(UInt64(skipped), at: 32)
        header.storeLE(fingerprintHash.value, at: 40)
        header.storeLE(selectionRef.offset, at: 48)
        header.storeLE(rootRef.offset, at: 224)
        header.storeLE(rootRef.length, at: 232)
        header.storeLE(selectionRef.length, at: 236)
        var contentID = FNV1a64()
        contentID.add(bytes: header[0..<240])
        header.storeLE(contentID.value, at: 240)
        let headerCRC = header.withUnsafeBytes { RunningCRC().adding(UnsafeRawBufferPointer(rebasing: $0[0..<252])) }
        header.storeLE(headerCRC, at: 252)
        try header.withUnsafeBytes { try put($0, at: 0) }
        try indexIO { try file.sync() }
        file.close()
        try indexIO { try DurableFile.rename(temporary, to: path) }
        // Best effort: the index is a cache of the scan; a lost rename means only a rescan.
        try? DurableFile.syncParentDirectory(of: path)
        for part in [records, keys, sources, deadLetters, fingerprint, text] { unlink(part.path) }
        rmdir(building)
    }
}

extension RunningCRC {
    func adding(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var copy = self
        copy.add(bytes)
        return copy.value
    }
}

private func copy(_ part: PartFile, to file: DurableFile, at start: UInt64) throws {
    let chunk = UInt64(1 << 20)
    var done: UInt64 = 0
    while done < part.length {
        let bytes = try indexIO { try part.file.read(count: Int(min(chunk, part.length - done)), at: Int(done)) }
        try indexIO { try file.write(bytes, at: Int(start + done)) }
        done += UInt64(bytes.count)
    }
}

/// Runs a file operation, reporting its failure as the index's error ("cannot write …: reason").
func indexIO<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let DurableFileError.io(path, operation, code) {
        throw IndexError("cannot \(operation) \(path): \(String(cString: strerror(code)))")
    } catch let DurableFileError.endOfFile(path, offset, wanted, read) {
        throw IndexError("cannot read \(path): unexpected end (\(read) of \(wanted) bytes at \(offset))")
    } catch let DurableFileError.locked(path, _) {
        throw IndexError("cannot lock \(path): it is in use")
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// Why a file operation failed, in the index's wording: the system's text for a failed call (as
/// `errnoText`), else the error's own description (it names the file).
func failureText(_ error: any Error) -> String {
    if let failure = error as? DurableFileError, case let .io(_, _, code) = failure { return String(cString: strerror(code)) }
    return "\(error)"
}
