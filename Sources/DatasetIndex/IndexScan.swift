import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What to index: a dataset path and the selection applied while scanning (Protocols/INDEX.md §2).
public struct IndexSelection: Sendable, Equatable {
    /// Image folder, manifest file, tar shard or folder of tar shards.
    public var path: String
    /// The layout; detected from `path` when nil (see `DatasetKind.detect`).
    public var kind: DatasetKind?
    /// Only items of this split (`train`/`val` folder, or the manifest's `split` column), when set.
    public var split: String?
    /// Stop after this many items, when set.
    public var limit: Int?
    /// Manifests only: `fstatat` every listed path, so a missing or non-regular file is a dead letter at index
    /// time instead of at decode time.
    public var checkPaths: Bool

    /// A selection with the given fields.
    public init(path: String, kind: DatasetKind? = nil, split: String? = nil, limit: Int? = nil, checkPaths: Bool = true) {
        self.path = path
        self.kind = kind
        self.split = split
        self.limit = limit
        self.checkPaths = checkPaths
    }

    /// The canonical text stored in the index (§2): equal selections give equal text.
    func canonical(kind: DatasetKind, absolutePath: String) -> String {
        "kind=\(kind.name)\npath=\(absolutePath)\nsplit=\(split ?? "")\nlimit=\(limit.map(String.init) ?? "")\ncheck-paths=\(kind == .manifest && checkPaths ? 1 : 0)\n"
    }

    /// `path` made absolute and without `.`/`..` components or a trailing slash.
    var absolutePath: String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        return (absolute as NSString).standardizingPath
    }

    /// The kind to scan with: `kind`, or the detected one.
    func resolvedKind() throws -> DatasetKind {
        if let kind { return kind }
        return try DatasetKind.detect(path: absolutePath)
    }

    /// The canonical selection text for this selection (what `IndexedDataset.selection` holds when it matches).
    public func canonicalText() throws -> String { canonical(kind: try resolvedKind(), absolutePath: absolutePath) }
}

extension DatasetKind {
    /// A `.tar` file, or a directory holding at least one `.tar` file, is WebDataset; a `.csv`, `.jsonl` or
    /// `.ndjson` file is a manifest; any other directory is an image folder. Throws naming the path otherwise.
    public static func detect(path: String) throws -> DatasetKind {
        var info = stat()
        guard stat(path, &info) == 0 else { throw IndexError("dataset path \(path) cannot be read: \(errnoText())") }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            guard let dir = opendir(path) else { throw IndexError("cannot read directory \(path): \(errnoText())") }
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                if entryName(entry).lowercased().hasSuffix(".tar") { return .webDataset }
            }
            return .imageFolder
        }
        switch (path as NSString).pathExtension.lowercased() {
        case "tar": return .webDataset
        case "csv", "jsonl", "ndjson": return .manifest
        default: throw IndexError("cannot tell the dataset layout of \(path): expected a directory, .tar, .csv or .jsonl")
        }
    }
}

/// Tuning of a scan; the defaults suit a coordinator.
public struct ScanOptions: Sendable {
    /// Memory for one directory listing before it is sorted in runs on disk (external merge).
    public var sortRunBytes = 64 << 20
    /// Where sort runs go; the index's building folder when nil.
    public var temporaryDirectory: String?
    /// Items become readable (`IndexProgress.finalItems`) at least this often while the scan runs.
    public var publishIntervalMs = 100
    /// Item files sampled into the fingerprint at the end of an image-folder or manifest scan.
    public var sampledFiles = 64
    /// Checkpoints of an earlier scan of this selection that this one must reach unchanged, or fail naming
    /// the dataset as changed (`IndexWriter.expect`): a coordinator restarted before its scan finished
    /// passes those its journal recorded.
    public var expectedCheckpoints: [ScanCheckpoint] = []

    /// The default options.
    public init() {}
}

/// A prefix of a scan's entries (items and dead letters, in the order the scan wrote them) and its digest:
/// the CRC-32C of the bytes its items occupy in the index's records and keys sections, and a CRC-32C over
/// its dead letters' keys, reasons and positions. Equal checkpoints at equal entry counts mean the same
/// items at the same positions with the same dead letters between them (Protocols/INDEX.md §6); a
/// coordinator journals one before it leases shards of a prefix.
public struct ScanCheckpoint: Sendable, Equatable, Hashable {
    public var items: UInt64
    public var deadLetters: UInt64
    public var recordsCRC: UInt32
    public var keysCRC: UInt32
    public var deadLettersCRC: UInt32

    /// A checkpoint with the given fields.
    public init(items: UInt64, deadLetters: UInt64, recordsCRC: UInt32, keysCRC: UInt32, deadLettersCRC: UInt32) {
        self.items = items
        self.deadLetters = deadLetters
        self.recordsCRC = recordsCRC
        self.keysCRC = keysCRC
        self.deadLettersCRC = deadLettersCRC
    }

    /// Items plus dead letters.
    public var entries: UInt64 { items + deadLetters }
}

/// How far a scan has come; `finalItems` items are readable and will not change.
public struct IndexProgress: Sendable, Equatable {
    /// Items written and readable through `IndexScan.items`.
    public var finalItems = 0
    /// Dead letters so far, readable through `IndexScan.deadLetter`.
    public var deadLetters = 0
    /// The final entries with their CRCs at the last publication (nil before the first).
    public var checkpoint: ScanCheckpoint?
    /// Whether every item is final: `finalItems` is the total, though the file is still being assembled
    /// and synced (`finished` follows).
    public var itemsComplete = false
    /// Whether the index file is complete (or the scan failed).
    public var finished = false
    /// Why the scan stopped, when it failed.
    public var failure: String?
}

/// A scan running on its own thread: it publishes final items while it walks, so the coordinator can lease
/// the first shards before it ends, and leaves a finished `IndexedDataset` at `indexPath`.
public final class IndexScan: @unchecked Sendable {
    /// The index file the scan will produce.
    public let indexPath: String
    private let lock = NSCondition()
    private var state = IndexProgress()
    private var sources: [String] = []
    private var root = ""
    private var writer: IndexWriter?
    private var result: IndexedDataset?

    private init(indexPath: String) { self.indexPath = indexPath }

    /// Starts scanning `selection` into `indexPath` on a new thread. Throws at once when the dataset path
    /// cannot be read at all; everything wrong inside it becomes a dead letter.
    public static func start(_ selection: IndexSelection, indexPath: String, options: ScanOptions = ScanOptions()) throws -> IndexScan {
        let scan = IndexScan(indexPath: indexPath)
        let job = try ScanJob.prepare(selection, indexPath: indexPath, options: options, scan: scan)
        scan.writer = job.context.writer
        scan.root = job.context.writer.root
        let thread = Thread { job.run() }
        thread.stackSize = 8 << 20
        thread.start()
        return scan
    }

    /// Scans `selection` into `indexPath` on the calling thread and opens the result.
    public static func run(_ selection: IndexSelection, indexPath: String, options: ScanOptions = ScanOptions()) throws -> IndexedDataset {
        let scan = IndexScan(indexPath: indexPath)
        let job = try ScanJob.prepare(selection, indexPath: indexPath, options: options, scan: scan)
        scan.writer = job.context.writer
        scan.root = job.context.writer.root
        job.run()
        return try scan.finished()
    }

    /// A snapshot of the progress.
    public var progress: IndexProgress {
        lock.lock(); defer { lock.unlock() }
        return state
    }

    /// Blocks until at least `items` items are final or every item is, or `deadline` passes; returns the
    /// progress then.
    public func wait(forItems items: Int, until deadline: Date = .distantFuture) -> IndexProgress {
        lock.lock(); defer { lock.unlock() }
        while state.finalItems < items && !state.itemsComplete && !state.finished {
            // Foundation's wait(until:) overflows on distantFuture.
            if deadline == .distantFuture { lock.wait() } else if !lock.wait(until: deadline) { break }
        }
        return state
    }

    /// Blocks until the scan ends; returns the finished index or throws the scan's failure.
    public func finished() throws -> IndexedDataset {
        lock.lock()
        while !state.finished { lock.wait() }
        let (failure, result) = (state.failure, result)
        lock.unlock()
        if let failure { throw IndexError(failure) }
        return result!
    }

    /// Final items `range` (its upper bound at most `progress.finalItems`), read from the part files with
    /// `pread`: O(1) per item, nothing cached.
    public func items(_ range: Range<Int>) throws -> [IndexedItem] {
        lock.lock()
        let (final, sources, finishedIndex) = (state.finalItems, self.sources, result)
        lock.unlock()
        if let finishedIndex { return try finishedIndex.items(range) }
        guard range.lowerBound >= 0, range.upperBound <= final, let writer else {
            throw IndexError("items \(range) are not final yet (\(final) are)")
        }
        guard !range.isEmpty else { return [] }
        let records = try indexIO {
            try writer.records.file.read(count: range.count * IndexLayout.recordSize, at: range.lowerBound * IndexLayout.recordSize)
        }
        return try records.withUnsafeBytes { raw -> [IndexedItem] in
            let firstKey = raw.u64(0)
            let last = (range.count - 1) * IndexLayout.recordSize
            let keyBytes = Int(raw.u64(last) + UInt64(raw.u32(last + 8)) - firstKey)
            let keys = try indexIO { try writer.keys.file.read(count: keyBytes, at: Int(firstKey)) }
            return try (0..<range.count).map { i in
                let r = UnsafeRawBufferPointer(rebasing: raw[(i * IndexLayout.recordSize)...])
                let start = Int(r.u64(0) - firstKey)
                let key = String(decoding: keys[start..<start + Int(r.u32(8))], as: UTF8.self)
                let source = r.u32(28)
                let locator: ItemLocator
                if source == IndexLayout.keyIsPath {
                    locator = .file(path: resolve(key))
                } else {
                    guard Int(source) < sources.count else { throw IndexError("item \(range.lowerBound + i) names unknown source \(source)") }
                    locator = .tarMember(path: resolve(sources[Int(source)]), offset: r.u64(16), size: r.u32(24))
                }
                return IndexedItem(position: UInt64(range.lowerBound + i), key: key, label: Int32(bitPattern: r.u32(12)), locator: locator)
            }
        }
    }

    /// Dead letter `i` (below `progress.deadLetters`), read from the part files while the scan runs.
    public func deadLetter(_ i: Int) throws -> IndexDeadLetter {
        lock.lock()
        let (published, finishedIndex) = (state.deadLetters, result)
        lock.unlock()
        if let finishedIndex { return try finishedIndex.deadLetter(i) }
        guard i >= 0, i < published, let writer else { throw IndexError("dead letter \(i) is not final yet (\(published) are)") }
        let record = try indexIO { try writer.deadLetters.file.read(count: IndexLayout.deadLetterSize, at: i * IndexLayout.deadLetterSize) }
        return try record.withUnsafeBytes { d in
            func text(_ offset: UInt64, _ length: UInt32) throws -> String {
                String(decoding: try indexIO { try writer.text.file.read(count: Int(length), at: Int(offset)) }, as: UTF8.self)
            }
            return IndexDeadLetter(key: try text(d.u64(0), d.u32(8)), reason: try text(d.u64(16), d.u32(12)), position: d.u64(24))
        }
    }

    private func resolve(_ relative: String) -> String {
        relative.hasPrefix("/") ? relative : (root.isEmpty ? relative : root + "/" + relative)
    }

    func publish(_ checkpoint: ScanCheckpoint, sources: [String], complete: Bool = false) {
        lock.lock()
        state.finalItems = Int(checkpoint.items)
        state.checkpoint = checkpoint
        if complete { state.itemsComplete = true }
        state.deadLetters = Int(checkpoint.deadLetters)
        if sources.count != self.sources.count { self.sources = sources }
        lock.broadcast()
        lock.unlock()
    }

    func end(result: IndexedDataset?, failure: String?) {
        lock.lock()
        self.result = result
        if let result {
            state.finalItems = result.count
            state.deadLetters = result.deadLetterCount
            state.itemsComplete = true
        }
        state.failure = failure
        state.finished = true
        lock.broadcast()
        lock.unlock()
    }
}

func entryName(_ entry: UnsafeMutablePointer<dirent>) -> String {
    withUnsafePointer(to: &entry.pointee.d_name) {
        $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
    }
}

func monotonicMs() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1000 + UInt64(t.tv_nsec) / 1_000_000
}
