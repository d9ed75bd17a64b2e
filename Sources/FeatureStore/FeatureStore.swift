import DurableFile
import Foundation
import WireProtocol

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
    public let dtype: FeatureDType
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
    private(set) var shardsByID: [UInt32: ShardLocation]
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

    private init(root: URL, manifest: StoreManifest, dtype: FeatureDType, shards: [UInt32: ShardLocation],
                 writer: SegmentWriter?, writable: Bool, segmentLimit: Int, writerLock: StoreWriterLock?) {
        self.root = root
        self.writerLock = writerLock
        self.dtype = dtype
        self.dimension = manifest.dimension
        self.metadata = StoreMetadata(model: manifest.model, classNames: manifest.classNames, precision: manifest.precision)
        self.created = manifest.created
        self.shardsByID = shards
        self.writer = writer
        self.writable = writable
        self.segmentLimit = max(segmentLimit, 1)
    }

    static func segmentsDirectory(_ root: URL) -> URL { root.appendingPathComponent("segments", isDirectory: true) }

    static func segmentName(_ number: Int) -> String {
        let digits = String(number)
        return String(repeating: "0", count: max(0, 6 - digits.count)) + digits + ".seg"
    }

    // MARK: creating and opening

    /// Creates an empty store at `root` (creating the directory if needed), makes `store.json` durable,
    /// and returns it open for writing.
    ///
    /// Takes the store's writer lock, or uses `lock` when the caller already holds it.
    public static func create(at root: URL, dtype: FeatureDType, dimension: Int,
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

        let manifest = StoreManifest(formatVersion: formatVersion, dtype: dtype.name, dimension: dimension,
                                     created: ISO8601DateFormatter().string(from: Date()),
                                     model: metadata.model, classNames: metadata.classNames, precision: metadata.precision)
        // store.json appears whole or not at all, so a crash during create never leaves a half-written manifest.
        let staging = root.appendingPathComponent(".store.json.tmp-\(UUID().uuidString)")
        try Durability.publish(try jsonEncoder().encode(manifest), staging: staging, as: manifestURL,
                               syncing: [segmentsDirectory(root), root])
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
        guard let dtype = FeatureDType(name: manifest.dtype) else {
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

        let recovered = try RecoveryScan(directory: segmentsDirectory(root), dtype: dtype, dimension: manifest.dimension,
                                         verifyChecksums: verifyChecksums, forWriting: forWriting)
        recovered.writer?.reservationCeiling = segmentLimit
        return FeatureStore(root: root, manifest: manifest, dtype: dtype, shards: recovered.shards, writer: recovered.writer, writable: forWriting,
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
            features = dtype.littleEndianBytes(of: contents.dtype.floats(fromLittleEndian: contents.featureBytes) ?? [])
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
            if (try? segment.file.truncate(to: offset)) == nil { poisoned = "\(error)" }
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
        guard !ids.isEmpty, let writer else { return SyncTicket(shardIDs: ids, file: nil) }
        return SyncTicket(shardIDs: ids, file: Result { try writer.file.duplicate() })
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
            try Durability.syncData(writer.file)
        }
        let number = (writer?.number ?? 0) + 1
        let next = try SegmentWriter(creating: directory.appendingPathComponent(Self.segmentName(number)), number: number)
        next.reservationCeiling = segmentLimit
        try Durability.syncDirectory(directory)
        writer = next
        return next
    }

    private func validate(_ contents: ShardContents, shardID: UInt32) throws {
        func invalid(_ reason: String) -> FeatureStoreError { .invalidContents(shardID: shardID, reason: reason) }
        let rows = contents.rowCount
        guard contents.dimension == dimension else { throw invalid("dimension \(contents.dimension), store has \(dimension)") }
        guard contents.featureBytes.count == rows * dimension * contents.dtype.width else {
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

    func segmentURL(_ number: Int) -> URL { Self.segmentsDirectory(root).appendingPathComponent(Self.segmentName(number)) }

    private static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
