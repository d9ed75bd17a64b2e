import WireProtocol

/// A feature batch whose payload has already been decompressed into `Float` values.
///
/// Field meanings are those of `FeatureBatch`; `features` holds `offsets.count * dimension` values, row-major.
public struct DecodedBatch: Equatable, Sendable {
    /// Shard the rows belong to.
    public var shardID: UInt32
    /// Lease attempt that produced the rows; attempts of one shard never mix their data.
    public var attempt: UInt32
    /// Items in the whole shard, as the worker's lease stated it.
    public var shardItemCount: UInt32
    /// Position within the shard of each row.
    public var offsets: [UInt32]
    /// Dataset index of each row.
    public var indexes: [UInt64]
    /// Label of each row (-1 when unlabeled).
    public var labels: [Int32]
    /// Key of each row.
    public var keys: [String]
    /// Items of this batch that produced no feature.
    public var deadLetters: [DeadLetterEntry]
    /// Row-major feature values, `offsets.count * dimension` of them.
    public var features: [Float]

    /// Wraps already-decoded values; consistency is checked by `ShardLedger.receive`, not here.
    public init(shardID: UInt32, attempt: UInt32, shardItemCount: UInt32, offsets: [UInt32], indexes: [UInt64],
                labels: [Int32], keys: [String], deadLetters: [DeadLetterEntry], features: [Float]) {
        self.shardID = shardID
        self.attempt = attempt
        self.shardItemCount = shardItemCount
        self.offsets = offsets
        self.indexes = indexes
        self.labels = labels
        self.keys = keys
        self.deadLetters = deadLetters
        self.features = features
    }

    /// Takes the row metadata from `batch` and reads `decodedPayload` as little-endian values of `batch.dtype`
    /// (f16 values are widened exactly); nil when the payload is not a whole number of values.
    public init?(_ batch: FeatureBatch, decodedPayload: [UInt8]) {
        guard let values = FeatureEncoding.floats(fromLittleEndian: decodedPayload, dtype: batch.dtype) else { return nil }
        self.init(shardID: batch.shardID, attempt: batch.attempt, shardItemCount: batch.shardItemCount,
                  offsets: batch.offsets, indexes: batch.indexes, labels: batch.labels, keys: batch.keys,
                  deadLetters: batch.deadLetters, features: values)
    }
}

/// Everything one shard attempt delivered, ready to be committed: rows sorted by offset, and dead letters.
///
/// Every offset in `0..<shardItemCount` appears exactly once, either in `offsets` or in `deadLetters`.
public struct ShardContents: Equatable, Sendable {
    /// Items in the shard (rows plus dead letters).
    public var shardItemCount: UInt32
    /// Values per row.
    public var dimension: Int
    /// Position within the shard of each row, strictly increasing.
    public var offsets: [UInt32]
    /// Dataset index of each row.
    public var indexes: [UInt64]
    /// Label of each row (-1 when unlabeled).
    public var labels: [Int32]
    /// Key of each row.
    public var keys: [String]
    /// Row-major feature values, `rowCount * dimension` of them.
    public var features: [Float]
    /// Items that produced no feature, sorted by offset.
    public var deadLetters: [DeadLetterEntry]

    /// Wraps rows that the caller promises are sorted by offset; `FeatureStore.commit` re-checks the counts.
    public init(shardItemCount: UInt32, dimension: Int, offsets: [UInt32], indexes: [UInt64], labels: [Int32],
                keys: [String], features: [Float], deadLetters: [DeadLetterEntry]) {
        self.shardItemCount = shardItemCount
        self.dimension = dimension
        self.offsets = offsets
        self.indexes = indexes
        self.labels = labels
        self.keys = keys
        self.features = features
        self.deadLetters = deadLetters
    }

    /// Number of feature rows.
    public var rowCount: Int { offsets.count }
}

/// What the head should do after `ShardLedger.receive`.
public enum LedgerOutcome: Equatable, Sendable {
    /// The batch was merged into its attempt; `duplicates` counts rows and dead letters already seen (dropped).
    case accepted(newRows: Int, duplicates: Int)
    /// This batch completed its attempt: store the contents durably, then call `markCommitted`.
    /// All buffered data of the shard (this and every other attempt) has been released.
    case completed(ShardContents)
    /// The shard is already committed; the batch was discarded.
    case alreadyCommitted
    /// The batch is inconsistent with itself, the ledger's dimension or earlier batches of its attempt;
    /// nothing of it was kept.
    case rejected(String)
}

/// The head's bookkeeping of partially received shard attempts; performs no I/O.
///
/// Promises: a shard completes at most once (the first attempt to cover every offset wins and the
/// others' data is dropped); offsets already seen by an attempt are dropped; no more than
/// `maxOpenAttempts` attempts are buffered at a time (the least recently touched is evicted, and its data
/// comes back when the coordinator re-leases the shard).
public struct ShardLedger: Sendable {
    private struct AttemptKey: Hashable, Sendable {
        var shardID: UInt32
        var attempt: UInt32
    }

    private struct PartialAttempt: Sendable {
        var shardItemCount: UInt32
        var lastTouched: UInt64
        var rowSlotByOffset: [UInt32: Int] = [:]
        var indexes: [UInt64] = []
        var labels: [Int32] = []
        var keys: [String] = []
        var features: [Float] = []
        var deadLetterByOffset: [UInt32: DeadLetterEntry] = [:]

        var coveredOffsets: Int { rowSlotByOffset.count + deadLetterByOffset.count }
        func hasSeen(_ offset: UInt32) -> Bool {
            rowSlotByOffset[offset] != nil || deadLetterByOffset[offset] != nil
        }
    }

    /// Values per feature row; batches with a different row width are rejected.
    public let dimension: Int
    /// Most attempts buffered at once.
    public let maxOpenAttempts: Int
    /// Shards whose batches are answered `.alreadyCommitted`.
    public private(set) var committed: Set<UInt32>
    /// Shards that completed but whose commit has not been confirmed by `markCommitted` or undone by `commitFailed`.
    public private(set) var completing: Set<UInt32> = []
    /// Batches discarded because their shard was already committed or completing.
    public private(set) var discardedBatches = 0
    /// Attempts dropped to respect `maxOpenAttempts`.
    public private(set) var evictedAttempts = 0
    /// Batches refused as inconsistent.
    public private(set) var rejectedBatches = 0

    private var attempts: [AttemptKey: PartialAttempt] = [:]
    private var clock: UInt64 = 0

    /// Starts with the shards the store has already committed; `maxOpenAttempts` is raised to at least 1.
    public init(dimension: Int, committed: Set<UInt32>, maxOpenAttempts: Int = 64) {
        self.dimension = dimension
        self.committed = committed
        self.maxOpenAttempts = max(1, maxOpenAttempts)
    }

    /// Attempts currently buffering partial data (never more than `maxOpenAttempts`).
    public var openAttempts: Int { attempts.count }

    /// Feature rows currently buffered across all open attempts.
    public var bufferedRows: Int { attempts.values.reduce(0) { $0 + $1.rowSlotByOffset.count } }

    /// Merges a batch into its shard attempt and says what the caller must do next.
    ///
    /// A rejected batch leaves the ledger unchanged. Batches of a shard that is completing (between
    /// `.completed` and `markCommitted`) are answered `.accepted(newRows: 0, duplicates: all)`, since
    /// the contents being committed already cover them.
    public mutating func receive(_ batch: DecodedBatch) -> LedgerOutcome {
        if committed.contains(batch.shardID) {
            discardedBatches += 1
            return .alreadyCommitted
        }
        let key = AttemptKey(shardID: batch.shardID, attempt: batch.attempt)
        if let problem = inconsistency(of: batch, existing: attempts[key]) {
            rejectedBatches += 1
            return .rejected(problem)
        }
        if completing.contains(batch.shardID) {
            discardedBatches += 1
            return .accepted(newRows: 0, duplicates: batch.offsets.count + batch.deadLetters.count)
        }

        clock += 1
        var partial: PartialAttempt
        if let existing = attempts.removeValue(forKey: key) {
            partial = existing
        } else {
            // Evict before inserting so the bound holds even transiently.
            while attempts.count >= maxOpenAttempts { evictLeastRecentlyTouched() }
            partial = PartialAttempt(shardItemCount: batch.shardItemCount, lastTouched: clock)
            // One allocation per attempt instead of repeated regrowth while rows stream in.
            let expectedRows = Int(batch.shardItemCount)
            partial.features.reserveCapacity(expectedRows * dimension)
            partial.indexes.reserveCapacity(expectedRows)
            partial.labels.reserveCapacity(expectedRows)
            partial.keys.reserveCapacity(expectedRows)
            partial.rowSlotByOffset.reserveCapacity(expectedRows)
        }
        partial.lastTouched = clock

        var newRows = 0
        var duplicates = 0
        for (row, offset) in batch.offsets.enumerated() {
            if partial.hasSeen(offset) { duplicates += 1; continue }
            partial.rowSlotByOffset[offset] = partial.indexes.count
            partial.indexes.append(batch.indexes[row])
            partial.labels.append(batch.labels[row])
            partial.keys.append(batch.keys[row])
            partial.features.append(contentsOf: batch.features[(row * dimension)..<((row + 1) * dimension)])
            newRows += 1
        }
        for letter in batch.deadLetters {
            if partial.hasSeen(letter.offset) { duplicates += 1; continue }
            partial.deadLetterByOffset[letter.offset] = letter
        }

        guard partial.coveredOffsets == Int(partial.shardItemCount) else {
            attempts[key] = partial
            return .accepted(newRows: newRows, duplicates: duplicates)
        }
        // The winner is decided here; losing attempts can never complete, so their memory goes now.
        attempts = attempts.filter { $0.key.shardID != batch.shardID }
        completing.insert(batch.shardID)
        return .completed(contents(of: partial))
    }

    /// Records that the store made the shard durable: its future batches are discarded.
    public mutating func markCommitted(_ shardID: UInt32) {
        committed.insert(shardID)
        completing.remove(shardID)
        attempts = attempts.filter { $0.key.shardID != shardID }
    }

    /// Records that storing a completed shard failed, so a later attempt may complete it again.
    public mutating func commitFailed(_ shardID: UInt32) {
        completing.remove(shardID)
    }

    private func inconsistency(of batch: DecodedBatch, existing: PartialAttempt?) -> String? {
        let rows = batch.offsets.count
        guard batch.indexes.count == rows, batch.labels.count == rows, batch.keys.count == rows else {
            return "shard \(batch.shardID) attempt \(batch.attempt): \(rows) offsets but \(batch.indexes.count) indexes, "
                + "\(batch.labels.count) labels, \(batch.keys.count) keys"
        }
        let (expectedValues, overflow) = rows.multipliedReportingOverflow(by: dimension)
        guard !overflow, batch.features.count == expectedValues else {
            return "shard \(batch.shardID) attempt \(batch.attempt): \(batch.features.count) feature values "
                + "for \(rows) rows of dimension \(dimension)"
        }
        if let existing, existing.shardItemCount != batch.shardItemCount {
            return "shard \(batch.shardID) attempt \(batch.attempt): shardItemCount changed from "
                + "\(existing.shardItemCount) to \(batch.shardItemCount)"
        }
        let outOfRange = batch.offsets.first { $0 >= batch.shardItemCount }
            ?? batch.deadLetters.first { $0.offset >= batch.shardItemCount }?.offset
        if let outOfRange {
            return "shard \(batch.shardID) attempt \(batch.attempt): offset \(outOfRange) is not below "
                + "shardItemCount \(batch.shardItemCount)"
        }
        return nil
    }

    private mutating func evictLeastRecentlyTouched() {
        guard let oldest = attempts.min(by: { $0.value.lastTouched < $1.value.lastTouched })?.key else { return }
        attempts.removeValue(forKey: oldest)
        evictedAttempts += 1
    }

    private func contents(of partial: PartialAttempt) -> ShardContents {
        let ordered = partial.rowSlotByOffset.sorted { $0.key < $1.key }
        let deadLetters = partial.deadLetterByOffset.values.sorted { $0.offset < $1.offset }
        if ordered.enumerated().allSatisfy({ $0.offset == $0.element.value }) {
            // Rows arrived in offset order (the usual case): the buffers are already sorted, no copy needed.
            return ShardContents(shardItemCount: partial.shardItemCount, dimension: dimension, offsets: ordered.map(\.key),
                                 indexes: partial.indexes, labels: partial.labels, keys: partial.keys,
                                 features: partial.features, deadLetters: deadLetters)
        }
        var features: [Float] = []
        features.reserveCapacity(ordered.count * dimension)
        for (_, slot) in ordered {
            features.append(contentsOf: partial.features[(slot * dimension)..<((slot + 1) * dimension)])
        }
        return ShardContents(
            shardItemCount: partial.shardItemCount,
            dimension: dimension,
            offsets: ordered.map(\.key),
            indexes: ordered.map { partial.indexes[$0.value] },
            labels: ordered.map { partial.labels[$0.value] },
            keys: ordered.map { partial.keys[$0.value] },
            features: features,
            deadLetters: deadLetters)
    }
}
