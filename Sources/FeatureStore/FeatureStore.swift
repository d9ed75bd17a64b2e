import CFileSpace
import Foundation
import WireProtocol
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Descriptive information recorded in `store.json`; never interpreted by the store.
public struct StoreMetadata: Codable, Equatable, Sendable {
    /// Name of the backbone that produced the features.
    public var model: String?
    /// Class names, indexed by label.
    public var classNames: [String]?

    /// Metadata with any subset of fields.
    public init(model: String? = nil, classNames: [String]? = nil) {
        self.model = model
        self.classNames = classNames
    }
}

/// Why a store could not be created, opened, committed to or read.
public enum FeatureStoreError: Error, Equatable, CustomStringConvertible {
    /// `create` found an existing `store.json`.
    case alreadyExists(path: String)
    /// `open` found no `store.json`.
    case notAStore(path: String)
    /// `store.json` is unreadable, of an unknown format version, or describes an impossible store.
    case badManifest(path: String, reason: String)
    /// A committed record failed verification; the store refuses to open rather than hide it.
    case corruptShard(path: String, reason: String)
    /// `segments/` holds something that is not a segment file.
    case unexpectedEntry(path: String)
    /// Contents handed to `commit` are internally inconsistent or do not fit the store.
    case invalidContents(shardID: UInt32, reason: String)
    /// `commit` or `append` on a store opened without `forWriting`.
    case readOnly(path: String)
    /// A system call failed.
    case io(path: String, operation: String, errno: Int32)
    /// Another process writes this store (`holder` says which, when it could be read).
    case locked(path: String, holder: String)

    /// One line naming the path and the problem.
    public var description: String {
        switch self {
        case .alreadyExists(let path): "\(path): a feature store already exists here"
        case .notAStore(let path): "\(path): not a feature store (no store.json)"
        case .badManifest(let path, let reason): "\(path): \(reason)"
        case .corruptShard(let path, let reason): "\(path): corrupt shard: \(reason)"
        case .unexpectedEntry(let path): "\(path): unexpected entry in the shards directory"
        case .invalidContents(let shardID, let reason): "shard \(shardID): cannot commit: \(reason)"
        case .readOnly(let path): "\(path): opened read-only; open it for writing to commit"
        case .io(let path, let operation, let code): "\(path): \(operation) failed: \(String(cString: strerror(code)))"
        case .locked(let path, let holder): "\(path): the store is being written by \(holder); one writer at a time (stop it first, or use another store)"
        }
    }
}

/// A shard as committed: what its record's header says.
public struct CommittedShard: Equatable, Sendable {
    /// The shard's identifier.
    public var shardID: UInt32
    /// The lease attempt whose data was stored.
    public var attempt: UInt32
    /// Items in the shard; always `rows + deadLetters`.
    public var shardItemCount: UInt32
    /// Feature rows stored.
    public var rows: Int
    /// Items stored as dead letters.
    public var deadLetters: Int
    /// Bytes of the shard's record in its segment.
    public var bytes: Int
}

/// The `fdatasync` that makes appended shards durable, taken out of the store so that another thread
/// can wait for the disk while the store's owner goes on appending.
///
/// Made by `FeatureStore.prepareSync`, performed once (on any thread), then handed back to
/// `FeatureStore.completeSync` on the owner's thread. Holds its own descriptor of the segment, so the
/// store may roll to a new segment meanwhile.
public final class SyncTicket: @unchecked Sendable {
    /// The shards this sync makes durable, in append order.
    public let shardIDs: [UInt32]
    private let descriptor: Int32
    private let path: String
    private var performed = false

    init(shardIDs: [UInt32], descriptor: Int32, path: String) {
        self.shardIDs = shardIDs
        self.descriptor = descriptor
        self.path = path
    }

    deinit { if descriptor >= 0 { _ = close(descriptor) } }

    /// Waits until every shard of the ticket is on disk, then lets the page cache drop it. Call once.
    public func perform() throws {
        precondition(!performed, "a SyncTicket is performed once")
        performed = true
        guard descriptor >= 0 else { return }
        guard fdatasync(descriptor) == 0 else { throw FeatureStoreError.io(path: path, operation: "fdatasync", errno: errno) }
        Durable.dropCachedPages(descriptor)
    }
}

/// An append-only, crash-safe store of feature rows, committed one whole shard at a time.
///
/// Layout: `store.json`, and `segments/NNNNNN.seg` files of commit records (one per shard: header,
/// the feature rows as received, the row columns, CRC-32C; `Protocols/STORE.md`). A segment is only
/// ever appended to, and a new one is started past `segmentLimit` bytes.
///
/// Promises: a shard is visible after `open` exactly when its record is whole and its CRC matches,
/// whatever point a process was killed at; a shard `commit` returned true for (or `completeSync`
/// reported) survives power loss; a shard is committed at most once; `open` refuses a store whose
/// damage is not an interrupted append (a bad record before the last segment, a shard twice) rather
/// than silently skipping it. One process writes a store at a time (`open(... forWriting: true)`
/// truncates an interrupted append, which would include a concurrent writer's).
public final class FeatureStore {
    /// The store's root directory.
    public let root: URL
    /// Element type of stored features, fixed at creation.
    public let dtype: FeatureDTypeCode
    /// Values per row, fixed at creation.
    public let dimension: Int
    /// Model and class names recorded at creation.
    public let metadata: StoreMetadata
    /// Creation time (ISO 8601), as recorded.
    public let created: String
    /// Bytes after which appends go to a new segment. Bounds the work of `open`, which re-verifies
    /// every record of the last segment (only there can an unsynced append have been torn).
    public let segmentLimit: Int

    /// Durable shards.
    private var shardsByID: [UInt32: ShardLocation]
    /// Appended, not yet reported durable, in append order.
    private var pending: [ShardLocation] = []
    private var writer: SegmentWriter?
    private let writable: Bool
    /// Set when a failed append could not be undone: the segment's tail is unknown, so no more appends.
    private var poisoned: String?
    /// Held while the store is open for writing.
    private let writerLock: StoreWriterLock?

    /// Test hook: called at each commit stage so tests can kill the process there.
    var commitStageObserver: ((CommitStage) -> Void)?

    enum CommitStage: String {
        case recordStarted, appended, durable
    }

    static let formatVersion = 2
    /// 256 MiB: `open` re-verifies at most this much.
    public static let defaultSegmentLimit = 256 << 20

    private init(root: URL, manifest: StoreManifest, dtype: FeatureDTypeCode, shards: [UInt32: ShardLocation],
                 writer: SegmentWriter?, writable: Bool, segmentLimit: Int, writerLock: StoreWriterLock?) {
        self.root = root
        self.writerLock = writerLock
        self.dtype = dtype
        self.dimension = manifest.dimension
        self.metadata = StoreMetadata(model: manifest.model, classNames: manifest.classNames)
        self.created = manifest.created
        self.shardsByID = shards
        self.writer = writer
        self.writable = writable
        self.segmentLimit = max(segmentLimit, 1)
    }

    private static func segmentsDirectory(_ root: URL) -> URL { root.appendingPathComponent("segments", isDirectory: true) }

    static func segmentName(_ number: Int) -> String {
        let digits = String(number)
        return String(repeating: "0", count: max(0, 6 - digits.count)) + digits + ".seg"
    }

    // MARK: creating and opening

    /// Creates an empty store at `root` (creating the directory if needed), makes `store.json` durable,
    /// and returns it open for writing.
    ///
    /// Takes the store's writer lock, or uses `lock` when the caller already holds it.
    public static func create(at root: URL, dtype: FeatureDTypeCode, dimension: Int,
                              metadata: StoreMetadata = StoreMetadata(),
                              segmentLimit: Int = defaultSegmentLimit, lock: StoreWriterLock? = nil) throws -> FeatureStore {
        guard dimension > 0 else {
            throw FeatureStoreError.badManifest(path: root.path, reason: "dimension must be positive, not \(dimension)")
        }
        let fileManager = FileManager.default
        let manifestURL = root.appendingPathComponent("store.json")
        let writerLock = try lock ?? StoreWriterLock.acquire(root: root)
        if fileManager.fileExists(atPath: manifestURL.path) { throw FeatureStoreError.alreadyExists(path: root.path) }
        try fileManager.createDirectory(at: segmentsDirectory(root), withIntermediateDirectories: true)

        let manifest = StoreManifest(formatVersion: formatVersion, dtype: FeatureEncoding.name(of: dtype), dimension: dimension,
                                     created: ISO8601DateFormatter().string(from: Date()),
                                     model: metadata.model, classNames: metadata.classNames)
        // store.json appears whole or not at all, so a crash during create never leaves a half-written manifest.
        let staging = root.appendingPathComponent(".store.json.tmp-\(UUID().uuidString)")
        try Durable.writeFile(try jsonEncoder().encode(manifest), to: staging)
        try Durable.renameItem(staging, to: manifestURL)
        try Durable.syncDirectory(segmentsDirectory(root))
        try Durable.syncDirectory(root)
        return FeatureStore(root: root, manifest: manifest, dtype: dtype, shards: [:], writer: nil, writable: true,
                            segmentLimit: segmentLimit, writerLock: writerLock)
    }

    /// Opens an existing store: validates `store.json` and walks every segment's record headers. Every
    /// record of the last segment is checked against its CRC (an unsynced append can only be torn
    /// there); with `verifyChecksums` every record of every segment is. Throws naming the first bad one.
    ///
    /// A bad tail of the last segment is an interrupted append. Read-only, it is ignored (it may be a
    /// live writer's append in progress); `forWriting`, it is truncated away and appends continue there.
    /// `forWriting` takes the store's writer lock first (or uses `lock` when the caller holds it), so a
    /// second writer is refused before it can touch anything.
    public static func open(at root: URL, verifyChecksums: Bool = false, forWriting: Bool = false,
                            segmentLimit: Int = defaultSegmentLimit, lock: StoreWriterLock? = nil) throws -> FeatureStore {
        let fileManager = FileManager.default
        let manifestURL = root.appendingPathComponent("store.json")
        guard fileManager.fileExists(atPath: manifestURL.path) else { throw FeatureStoreError.notAStore(path: root.path) }
        let writerLock = forWriting ? try lock ?? StoreWriterLock.acquire(root: root) : nil
        let manifest: StoreManifest
        do {
            manifest = try JSONDecoder().decode(StoreManifest.self, from: Data(contentsOf: manifestURL))
        } catch {
            throw FeatureStoreError.badManifest(path: manifestURL.path, reason: "unreadable: \(error)")
        }
        guard manifest.formatVersion == formatVersion else {
            throw FeatureStoreError.badManifest(path: manifestURL.path, reason: "unsupported format version \(manifest.formatVersion)")
        }
        guard let dtype = FeatureEncoding.dtype(named: manifest.dtype) else {
            throw FeatureStoreError.badManifest(path: manifestURL.path, reason: "unknown dtype \(manifest.dtype)")
        }
        guard manifest.dimension > 0 else {
            throw FeatureStoreError.badManifest(path: manifestURL.path, reason: "dimension must be positive, not \(manifest.dimension)")
        }
        if forWriting {
            for name in (try? fileManager.contentsOfDirectory(atPath: root.path)) ?? [] where name.hasPrefix(".store.json.tmp-") {
                try? fileManager.removeItem(at: root.appendingPathComponent(name))
            }
        }

        let directory = segmentsDirectory(root)
        let names: [String]
        do {
            names = try fileManager.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw FeatureStoreError.badManifest(path: directory.path, reason: "segments directory unreadable: \(error)")
        }
        var numbers: [Int] = []
        for name in names {
            guard name.hasSuffix(".seg"), let number = Int(name.dropLast(4)), name == segmentName(number) else {
                throw FeatureStoreError.unexpectedEntry(path: directory.appendingPathComponent(name).path)
            }
            numbers.append(number)
        }
        numbers.sort()

        var shards: [UInt32: ShardLocation] = [:]
        var writer: SegmentWriter?
        for (position, number) in numbers.enumerated() {
            let url = directory.appendingPathComponent(segmentName(number))
            let last = position == numbers.count - 1
            let scan = try SegmentScan(url: url, segment: number, dtype: dtype, dimension: manifest.dimension,
                                       verifyChecksums: verifyChecksums || last)
            if let damage = scan.damage, !last {
                throw FeatureStoreError.corruptShard(path: url.path, reason: "record at byte \(scan.validLength): \(damage)")
            }
            for location in scan.records {
                if shards[location.header.shardID] != nil {
                    throw FeatureStoreError.corruptShard(path: url.path,
                                                         reason: "shard \(location.header.shardID) is stored twice (again at byte \(location.offset))")
                }
                shards[location.header.shardID] = location
            }
            if last && forWriting {
                writer = try SegmentWriter(url: url, number: number, truncatingTo: scan.validLength)
                writer?.reservationCeiling = segmentLimit
            }
        }
        return FeatureStore(root: root, manifest: manifest, dtype: dtype, shards: shards, writer: writer, writable: forWriting,
                            segmentLimit: segmentLimit, writerLock: writerLock)
    }

    // MARK: committing

    /// Shards whose data is durably stored (appended shards join once their sync completes).
    public var committedShards: Set<UInt32> { Set(shardsByID.keys) }

    /// Shards appended whose sync has not completed yet, in append order.
    public var pendingShards: [UInt32] { pending.map(\.header.shardID) }

    /// What each committed shard holds, in shard order.
    public var shards: [CommittedShard] {
        sortedLocations.map(\.committedShard)
    }

    /// Feature rows stored.
    public var rowCount: Int { shardsByID.values.reduce(0) { $0 + $1.header.rows } }
    /// Dead letters stored.
    public var deadLetterCount: Int { shardsByID.values.reduce(0) { $0 + $1.header.deadLetters } }
    /// Committed shards.
    public var shardCount: Int { shardsByID.count }

    /// Durably stores one shard: `append`, then a sync. When this returns true the shard survives any
    /// crash; if the process dies before, the shard is either absent or whole after the next `open`.
    /// Returns false, writing nothing, when the shard is already committed or appended.
    @discardableResult
    public func commit(_ contents: ShardContents, shardID: UInt32, attempt: UInt32) throws -> Bool {
        guard try append(contents, shardID: shardID, attempt: attempt) else { return false }
        let ticket = prepareSync()
        try ticket.perform()
        completeSync(ticket)
        return true
    }

    /// Writes one shard's record at the end of the current segment, without waiting for the disk.
    /// The shard joins `committedShards` when a sync that covers it completes (`prepareSync`).
    /// Returns false, writing nothing, when the shard is already committed or appended. Features are
    /// converted to the store's dtype when they arrive in another.
    ///
    /// A failed append is undone (the segment truncated back); if even that fails, the store refuses
    /// further appends.
    @discardableResult
    public func append(_ contents: ShardContents, shardID: UInt32, attempt: UInt32) throws -> Bool {
        guard writable else { throw FeatureStoreError.readOnly(path: root.path) }
        if let poisoned { throw FeatureStoreError.io(path: root.path, operation: "append after failed undo (\(poisoned))", errno: EIO) }
        if shardsByID[shardID] != nil || pending.contains(where: { $0.header.shardID == shardID }) { return false }
        try validate(contents, shardID: shardID)

        let features: [UInt8]
        if contents.dtype == dtype {
            features = contents.featureBytes
        } else {
            features = FeatureEncoding.littleEndianBytes(
                of: FeatureEncoding.floats(fromLittleEndian: contents.featureBytes, dtype: contents.dtype) ?? [], dtype: dtype)
        }
        let columns = CommitRecord.encodeColumns(.init(indexes: contents.indexes, labels: contents.labels, keys: contents.keys,
                                                       deadLetters: contents.deadLetters))
        let header = CommitRecord.Header(dtype: dtype, shardID: shardID, attempt: attempt, shardItemCount: contents.shardItemCount,
                                         rows: contents.rowCount, deadLetters: contents.deadLetters.count, dimension: dimension,
                                         columnsLength: columns.count)
        let headerBytes = CommitRecord.encodeHeader(header)
        var crc = CRC32C.checksum(headerBytes)
        crc = features.withUnsafeBytes { CRC32C.checksum($0, seed: crc) }
        crc = CRC32C.checksum(columns, seed: crc)
        let unpadded = CommitRecord.headerSize + features.count + columns.count
        let trailer = CommitRecord.trailer(crcSoFar: crc, recordLength: header.recordLength, unpaddedLength: unpadded)

        let segment = try writableSegment(for: header.recordLength)
        let offset = segment.length
        do {
            if let observer = commitStageObserver {
                try segment.write([headerBytes], at: offset)
                observer(.recordStarted)
                try segment.write([features, columns, trailer], at: offset + headerBytes.count)
            } else {
                try segment.write([headerBytes, features, columns, trailer], at: offset)
            }
        } catch {
            if ftruncate(segment.descriptor, off_t(offset)) != 0 { poisoned = "\(error)" }
            throw error
        }
        segment.length = offset + header.recordLength
        pending.append(ShardLocation(segment: segment.number, offset: offset, header: header))
        commitStageObserver?(.appended)
        return true
    }

    /// A sync covering every shard appended so far; `perform` it (on any thread), then `completeSync`.
    public func prepareSync() -> SyncTicket {
        let ids = pending.map(\.header.shardID)
        guard !ids.isEmpty, let writer else { return SyncTicket(shardIDs: ids, descriptor: -1, path: root.path) }
        return SyncTicket(shardIDs: ids, descriptor: dup(writer.descriptor), path: writer.url.path)
    }

    /// Records that `ticket` was performed: its shards join `committedShards`, and are returned.
    /// Tickets complete in the order they were prepared.
    @discardableResult
    public func completeSync(_ ticket: SyncTicket) -> [CommittedShard] {
        precondition(pending.prefix(ticket.shardIDs.count).map(\.header.shardID) == ticket.shardIDs,
                     "sync tickets complete in the order they were prepared")
        let done = pending.prefix(ticket.shardIDs.count)
        pending.removeFirst(done.count)
        for location in done { shardsByID[location.header.shardID] = location }
        if !done.isEmpty { commitStageObserver?(.durable) }
        return done.map(\.committedShard)
    }

    /// The segment the next record of `recordLength` bytes goes to: the current one, or a new one when
    /// the current one would pass `segmentLimit`. The old segment is synced before the new one exists,
    /// so only the last segment can ever hold an unsynced (possibly torn) record.
    private func writableSegment(for recordLength: Int) throws -> SegmentWriter {
        if let writer, writer.length == 0 || writer.length + recordLength <= segmentLimit { return writer }
        let directory = Self.segmentsDirectory(root)
        if let writer {
            guard fdatasync(writer.descriptor) == 0 else {
                throw FeatureStoreError.io(path: writer.url.path, operation: "fdatasync", errno: errno)
            }
            Durable.dropCachedPages(writer.descriptor)
        }
        let number = (writer?.number ?? 0) + 1
        let next = try SegmentWriter(creating: directory.appendingPathComponent(Self.segmentName(number)), number: number)
        next.reservationCeiling = segmentLimit
        try Durable.syncDirectory(directory)
        writer = next
        return next
    }

    private func validate(_ contents: ShardContents, shardID: UInt32) throws {
        func invalid(_ reason: String) -> FeatureStoreError { .invalidContents(shardID: shardID, reason: reason) }
        let rows = contents.rowCount
        guard contents.dimension == dimension else { throw invalid("dimension \(contents.dimension), store has \(dimension)") }
        guard contents.featureBytes.count == rows * dimension * FeatureEncoding.width(of: contents.dtype) else {
            throw invalid("\(contents.featureBytes.count) feature bytes for \(rows) rows of dimension \(dimension)")
        }
        guard contents.indexes.count == rows, contents.labels.count == rows, contents.keys.count == rows else {
            throw invalid("\(rows) offsets but \(contents.indexes.count) indexes, \(contents.labels.count) labels, \(contents.keys.count) keys")
        }
        guard rows + contents.deadLetters.count == Int(contents.shardItemCount) else {
            throw invalid("\(rows) rows + \(contents.deadLetters.count) dead letters ≠ \(contents.shardItemCount) items")
        }
        // Offsets are not stored, so this is the last chance to prove each item of the shard appears exactly once:
        // with the counts above, increasing, in-range and disjoint offsets cover 0..<shardItemCount.
        let deadOffsets = contents.deadLetters.map(\.offset)
        for (name, offsets) in [("row", contents.offsets), ("dead letter", deadOffsets)] {
            guard zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }) else { throw invalid("\(name) offsets are not increasing") }
            guard offsets.last.map({ $0 < contents.shardItemCount }) ?? true else { throw invalid("\(name) offset beyond the shard") }
        }
        if !deadOffsets.isEmpty {
            let rowOffsets = Set(contents.offsets)
            if let both = deadOffsets.first(where: rowOffsets.contains) {
                throw invalid("offset \(both) is both a row and a dead letter")
            }
        }
    }

    // MARK: reading

    /// Every stored row in (shard, offset) order, with features memory-mapped (one mapping per segment).
    public func rows() throws -> StoreRows {
        var segments: [StoreRows.Segment] = []
        var indexes: [UInt64] = []
        var labels: [Int32] = []
        var keys: [String] = []
        var mapped: [Int: Data] = [:]
        for location in sortedLocations where location.header.rows > 0 {
            let header = location.header
            if mapped[location.segment] == nil {
                mapped[location.segment] = try Data(contentsOf: segmentURL(location.segment), options: .alwaysMapped)
            }
            let file = mapped[location.segment]!
            let featuresStart = location.offset + CommitRecord.headerSize
            let columnsStart = featuresStart + header.featuresLength
            guard columnsStart + header.columnsLength <= file.count else {
                throw FeatureStoreError.corruptShard(path: segmentURL(location.segment).path, reason: "segment shrank since open")
            }
            segments.append(.init(shardID: header.shardID, firstRow: indexes.count, rowCount: header.rows,
                                  featureBytes: file[featuresStart..<columnsStart]))
            let columns = try file[columnsStart..<(columnsStart + header.columnsLength)].withUnsafeBytes {
                try decodeColumns($0, location)
            }
            indexes += columns.indexes
            labels += columns.labels
            keys += columns.keys
        }
        return StoreRows(dtype: dtype, dimension: dimension, segments: segments, indexes: indexes, labels: labels, keys: keys)
    }

    /// Every dead letter in (shard, offset) order.
    public func deadLetters() throws -> [(shardID: UInt32, entry: DeadLetterEntry)] {
        var result: [(shardID: UInt32, entry: DeadLetterEntry)] = []
        for location in sortedLocations where location.header.deadLetters > 0 {
            result += try readColumns(location).deadLetters.map { (location.header.shardID, $0) }
        }
        return result
    }

    /// Checks that each of `expectedIndexes` is stored exactly once, as a feature row or a dead letter.
    ///
    /// Dead letters carry only their shard offset and key, so `deadLetterIndex` must name their dataset
    /// index (for example by looking the key up) for them to count; those it cannot name are only counted
    /// as unresolved, so leave dead-lettered items out of `expectedIndexes` when passing no resolver.
    public func exactlyOnceReport(expectedIndexes: Set<UInt64>,
                                  deadLetterIndex: (_ shardID: UInt32, _ entry: DeadLetterEntry) -> UInt64? = { _, _ in nil })
        -> ExactlyOnceReport {
        var counts: [UInt64: Int] = [:]
        var report = tally(deadLetterIndex: deadLetterIndex) { counts[$0, default: 0] += 1 }
        report.expectedCount = expectedIndexes.count
        report.missing = expectedIndexes.filter { counts[$0] == nil }.sorted()
        report.duplicated = counts.filter { $0.value > 1 }
        report.unexpected = counts.keys.filter { !expectedIndexes.contains($0) }.sorted()
        return report
    }

    /// `exactlyOnceReport` for a contiguous range of indexes, using one byte per expected index.
    public func exactlyOnceReport(expectedIndexes: Range<UInt64>,
                                  deadLetterIndex: (_ shardID: UInt32, _ entry: DeadLetterEntry) -> UInt64? = { _, _ in nil })
        -> ExactlyOnceReport {
        var inRange = [UInt8](repeating: 0, count: expectedIndexes.count)
        var outside: [UInt64: Int] = [:]
        var report = tally(deadLetterIndex: deadLetterIndex) { index in
            if expectedIndexes.contains(index) {
                let slot = Int(index - expectedIndexes.lowerBound)
                if inRange[slot] < UInt8.max { inRange[slot] += 1 }
            } else {
                outside[index, default: 0] += 1
            }
        }
        report.expectedCount = expectedIndexes.count
        for (slot, count) in inRange.enumerated() where count != 1 {
            let index = expectedIndexes.lowerBound + UInt64(slot)
            if count == 0 { report.missing.append(index) } else { report.duplicated[index] = Int(count) }
        }
        for (index, count) in outside where count > 1 { report.duplicated[index] = count }
        report.unexpected = outside.keys.sorted()
        return report
    }

    private func tally(deadLetterIndex: (UInt32, DeadLetterEntry) -> UInt64?, record: (UInt64) -> Void) -> ExactlyOnceReport {
        var report = ExactlyOnceReport(expectedCount: 0, rows: 0, deadLetters: 0, missing: [], duplicated: [:], unexpected: [],
                                       unresolvedDeadLetters: 0, unreadableShards: [:])
        for location in sortedLocations {
            let shardID = location.header.shardID
            do {
                let columns = try readColumns(location, keys: location.header.deadLetters > 0)
                report.rows += columns.indexes.count
                report.deadLetters += columns.deadLetters.count
                columns.indexes.forEach(record)
                for letter in columns.deadLetters {
                    if let index = deadLetterIndex(shardID, letter) { record(index) } else { report.unresolvedDeadLetters += 1 }
                }
            } catch {
                report.unreadableShards[shardID] = "\(error)"
            }
        }
        return report
    }

    /// A summary for humans; problems reading dead letters are reported inside it rather than thrown.
    public func inspect() -> StoreSummary {
        let shardList = shards
        var firstDeadLetters: [(shardID: UInt32, entry: DeadLetterEntry)] = []
        var problems: [String] = []
        for location in sortedLocations where location.header.deadLetters > 0 {
            if firstDeadLetters.count >= 5 { break }
            do {
                firstDeadLetters += try readColumns(location).deadLetters.prefix(5 - firstDeadLetters.count)
                    .map { (location.header.shardID, $0) }
            } catch {
                problems.append("shard \(location.header.shardID): \(error)")
            }
        }
        let ids = shardList.map(\.shardID)
        return StoreSummary(path: root.path, dtype: dtype, dimension: dimension, created: created, metadata: metadata,
                            shards: shardList.count, shardIDRange: ids.first.flatMap { first in ids.last.map { first...$0 } },
                            rows: rowCount, deadLetters: deadLetterCount, bytes: shardList.reduce(0) { $0 + $1.bytes },
                            firstDeadLetters: firstDeadLetters, problems: problems)
    }

    // MARK: files

    private var sortedLocations: [ShardLocation] { shardsByID.values.sorted { $0.header.shardID < $1.header.shardID } }

    func segmentURL(_ number: Int) -> URL { Self.segmentsDirectory(root).appendingPathComponent(Self.segmentName(number)) }

    /// The columns block of a record, read with one `pread`.
    private func readColumns(_ location: ShardLocation, keys: Bool = true) throws -> CommitRecord.Columns {
        let url = segmentURL(location.segment)
        let descriptor = systemOpen(url.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FeatureStoreError.io(path: url.path, operation: "open", errno: errno) }
        defer { _ = close(descriptor) }
        let start = location.offset + CommitRecord.headerSize + location.header.featuresLength
        let bytes = try Durable.read(descriptor, count: location.header.columnsLength, at: start, path: url.path)
        return try bytes.withUnsafeBytes { try decodeColumns($0, location, keys: keys) }
    }

    private func decodeColumns(_ bytes: UnsafeRawBufferPointer, _ location: ShardLocation, keys: Bool = true) throws
        -> CommitRecord.Columns {
        do {
            return try CommitRecord.decodeColumns(bytes, header: location.header, keys: keys)
        } catch {
            throw FeatureStoreError.corruptShard(path: segmentURL(location.segment).path,
                                                 reason: "shard \(location.header.shardID) at byte \(location.offset): \(error)")
        }
    }

    private static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

// MARK: - on-disk records

struct StoreManifest: Codable {
    var formatVersion: Int
    var dtype: String
    var dimension: Int
    var created: String
    var model: String?
    var classNames: [String]?
}

/// Where a shard's record is.
struct ShardLocation: Equatable {
    var segment: Int
    var offset: Int
    var header: CommitRecord.Header

    var committedShard: CommittedShard {
        CommittedShard(shardID: header.shardID, attempt: header.attempt, shardItemCount: header.shardItemCount,
                       rows: header.rows, deadLetters: header.deadLetters, bytes: header.recordLength)
    }
}

/// The records of one segment file, walked from its start up to the first that is not whole.
struct SegmentScan {
    /// Whole records, in file order.
    var records: [ShardLocation] = []
    /// Bytes from the start that hold whole records.
    var validLength = 0
    /// Why the record at `validLength` is not whole; nil when the file ends there.
    var damage: String?

    init(url: URL, segment: Int, dtype: FeatureDTypeCode, dimension: Int, verifyChecksums: Bool) throws {
        let mapped: Data
        do {
            mapped = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw FeatureStoreError.corruptShard(path: url.path, reason: "unreadable segment: \(error)")
        }
        try mapped.withUnsafeBytes { (file: UnsafeRawBufferPointer) in
            while validLength < file.count {
                let rest = UnsafeRawBufferPointer(rebasing: file[validLength...])
                do {
                    let header = try CommitRecord.decodeHeader(rest)
                    guard header.recordLength <= rest.count else {
                        throw CommitRecord.DecodeError.short(needed: header.recordLength, have: rest.count)
                    }
                    if verifyChecksums { try CommitRecord.verify(rest, header: header) }
                    guard header.dtype == dtype, header.dimension == dimension || header.rows == 0 else {
                        // A whole, checksummed record that does not fit the store is no torn append.
                        throw FeatureStoreError.corruptShard(
                            path: url.path, reason: "record at byte \(validLength) holds \(FeatureEncoding.name(of: header.dtype)) "
                                + "\(header.dimension)-d rows; the store is \(FeatureEncoding.name(of: dtype)) \(dimension)-d")
                    }
                    records.append(ShardLocation(segment: segment, offset: validLength, header: header))
                    validLength += header.recordLength
                } catch let error as CommitRecord.DecodeError {
                    damage = "\(error)"
                    return
                }
            }
        }
    }
}

/// The segment being appended to.
final class SegmentWriter {
    let url: URL
    let number: Int
    let descriptor: Int32
    /// Bytes of whole records; the next record goes here.
    var length: Int

    /// Opens an existing segment, cutting off anything after its last whole record.
    init(url: URL, number: Int, truncatingTo length: Int) throws {
        self.url = url
        self.number = number
        descriptor = systemOpen(url.path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { throw FeatureStoreError.io(path: url.path, operation: "open", errno: errno) }
        self.length = length
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw FeatureStoreError.io(path: url.path, operation: "fstat", errno: errno) }
        if Int(status.st_size) != length {
            guard ftruncate(descriptor, off_t(length)) == 0, fdatasync(descriptor) == 0 else {
                throw FeatureStoreError.io(path: url.path, operation: "truncate an interrupted append", errno: errno)
            }
        }
    }

    /// Creates a new, empty segment (the caller syncs the directory).
    init(creating url: URL, number: Int) throws {
        self.url = url
        self.number = number
        descriptor = systemOpen(url.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FeatureStoreError.io(path: url.path, operation: "create", errno: errno) }
        length = 0
    }

    /// Appends ask the file system for blocks this far ahead at a time.
    static let reservationStep = 32 << 20
    /// Blocks are reserved up to here (beyond the file's size; see `write`); 0 while nothing is.
    private var reservedEnd = 0
    /// Never reserve past this size: the store's segment limit, where the next segment starts (a small
    /// limit on tmpfs, as in the simulator, made each 32 MiB reservation zero 32 MiB of memory).
    var reservationCeiling = Int.max

    deinit {
        // Truncating to the current size changes no byte; it hands back the blocks reserved past the end.
        if reservedEnd > 0 {
            var status = stat()
            if fstat(descriptor, &status) == 0 { _ = ftruncate(descriptor, status.st_size) }
        }
        _ = close(descriptor)
    }

    /// Writes `pieces` one after another from `offset`, retrying short writes.
    ///
    /// Before writing past the blocks reserved so far, it reserves the next `reservationStep` bytes
    /// (keeping the file's size): appends into reserved blocks cost the kernel about a quarter less
    /// than appends that allocate page by page (ext4, README "Cluster benchmarks"). Reserving is best
    /// effort; where the file system cannot, or the disk is too full to, the write itself says so.
    func write(_ pieces: [[UInt8]], at offset: Int) throws {
        let end = offset + pieces.reduce(0) { $0 + $1.count }
        if end > reservedEnd {
            let from = max(reservedEnd, offset)
            let to = min(end + Self.reservationStep, max(end, reservationCeiling))
            if to > from, fs_reserve_space(descriptor, off_t(from), off_t(to - from)) == 0 { reservedEnd = to }
        }
        var position = offset
        for piece in pieces where !piece.isEmpty {
            try piece.withUnsafeBytes { bytes in
                var done = 0
                while done < bytes.count {
                    let result = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(position + done))
                    if result < 0 {
                        if errno == EINTR { continue }
                        throw FeatureStoreError.io(path: url.path, operation: "write", errno: errno)
                    }
                    done += result
                }
            }
            position += piece.count
        }
    }
}

/// fsync-backed file operations: each returns only once its effect survives power loss.
enum Durable {
    static func writeFile(_ data: Data, to url: URL) throws {
        let descriptor = systemOpen(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FeatureStoreError.io(path: url.path, operation: "open", errno: errno) }
        defer { _ = close(descriptor) }
        try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var written = 0
            while written < bytes.count {
                let result = systemWrite(descriptor, bytes.baseAddress! + written, bytes.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    throw FeatureStoreError.io(path: url.path, operation: "write", errno: errno)
                }
                written += result
            }
        }
        guard fsync(descriptor) == 0 else { throw FeatureStoreError.io(path: url.path, operation: "fsync", errno: errno) }
    }

    /// Asks the kernel to drop the file's clean cached pages (dirty ones stay until written).
    ///
    /// The head writes each feature once and reads it back, if ever, long after, so keeping what is
    /// synced in the page cache only makes every later append take fresh pages. Handing them back
    /// right away lets the next appends reuse them: on this project's VM, appending 1 GB in 2.6 MB
    /// records with a sync every 8 took 0.3 s of kernel time instead of 1.0-1.3 s (README,
    /// "Cluster benchmarks"). Advice only: nothing fails if the kernel ignores it.
    static func dropCachedPages(_ descriptor: Int32) {
        _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
    }

    static func syncDirectory(_ url: URL) throws {
        let descriptor = systemOpen(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard descriptor >= 0 else { throw FeatureStoreError.io(path: url.path, operation: "open", errno: errno) }
        defer { _ = close(descriptor) }
        guard fsync(descriptor) == 0 else { throw FeatureStoreError.io(path: url.path, operation: "fsync", errno: errno) }
    }

    static func renameItem(_ source: URL, to destination: URL) throws {
        guard rename(source.path, destination.path) == 0 else {
            throw FeatureStoreError.io(path: destination.path, operation: "rename", errno: errno)
        }
    }

    /// Exactly `count` bytes from `offset`; a file that ends sooner is an error.
    static func read(_ descriptor: Int32, count: Int, at offset: Int, path: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        try bytes.withUnsafeMutableBytes { buffer in
            while done < count {
                let result = pread(descriptor, buffer.baseAddress! + done, count - done, off_t(offset + done))
                if result < 0 {
                    if errno == EINTR { continue }
                    throw FeatureStoreError.io(path: path, operation: "read", errno: errno)
                }
                if result == 0 { throw FeatureStoreError.corruptShard(path: path, reason: "segment ends inside a record") }
                done += result
            }
        }
        return bytes
    }
}

/// The C `open` and `write`, out of reach of `FeatureStore.open` and `SegmentWriter.write` inside those types.
private func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 { open(path, flags, mode) }
private func systemWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int { write(descriptor, bytes, count) }
