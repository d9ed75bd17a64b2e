import WireProtocol

/// A feature batch whose payload has already been decompressed into rows of a store's element type.
///
/// Field meanings are those of `FeatureBatch`; `featureBytes` holds `offsets.count * dimension`
/// little-endian values of `dtype`, row-major. Keeping the received element type (f16, usually) all
/// the way to the store spares the head a widen-and-narrow round trip per value.
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
    /// Element type of `featureBytes`.
    public var dtype: FeatureDType
    /// Row-major little-endian feature values of `dtype`.
    public var featureBytes: [UInt8]

    /// Wraps already-decoded bytes; consistency is checked by `ShardLedger.receive`, not here.
    public init(shardID: UInt32, attempt: UInt32, shardItemCount: UInt32, offsets: [UInt32], indexes: [UInt64],
                labels: [Int32], keys: [String], deadLetters: [DeadLetterEntry], dtype: FeatureDType, featureBytes: [UInt8]) {
        self.shardID = shardID
        self.attempt = attempt
        self.shardItemCount = shardItemCount
        self.offsets = offsets
        self.indexes = indexes
        self.labels = labels
        self.keys = keys
        self.deadLetters = deadLetters
        self.dtype = dtype
        self.featureBytes = featureBytes
    }

    /// Wraps `Float` values as f32 rows.
    public init(shardID: UInt32, attempt: UInt32, shardItemCount: UInt32, offsets: [UInt32], indexes: [UInt64],
                labels: [Int32], keys: [String], deadLetters: [DeadLetterEntry], features: [Float]) {
        self.init(shardID: shardID, attempt: attempt, shardItemCount: shardItemCount, offsets: offsets, indexes: indexes,
                  labels: labels, keys: keys, deadLetters: deadLetters, dtype: .f32,
                  featureBytes: FeatureDType.f32.littleEndianBytes(of: features))
    }

    /// Takes the row metadata from `batch` and `decodedPayload` as its little-endian values of `batch.dtype`.
    public init(_ batch: FeatureBatch, decodedPayload: [UInt8]) {
        self.init(shardID: batch.shardID, attempt: batch.attempt, shardItemCount: batch.shardItemCount,
                  offsets: batch.offsets, indexes: batch.indexes, labels: batch.labels, keys: batch.keys,
                  deadLetters: batch.deadLetters, dtype: batch.dtype, featureBytes: decodedPayload)
    }

    /// The feature values, widened to `Float`; nil when the bytes are not a whole number of values.
    public var features: [Float]? { dtype.floats(fromLittleEndian: featureBytes) }
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
    /// Element type of `featureBytes`.
    public var dtype: FeatureDType
    /// Row-major little-endian feature values of `dtype`, `rowCount * dimension` of them.
    public var featureBytes: [UInt8]
    /// Items that produced no feature, sorted by offset.
    public var deadLetters: [DeadLetterEntry]

    /// Wraps rows that the caller promises are sorted by offset; `FeatureStore.commit` re-checks the counts.
    public init(shardItemCount: UInt32, dimension: Int, offsets: [UInt32], indexes: [UInt64], labels: [Int32],
                keys: [String], dtype: FeatureDType, featureBytes: [UInt8], deadLetters: [DeadLetterEntry]) {
        self.shardItemCount = shardItemCount
        self.dimension = dimension
        self.offsets = offsets
        self.indexes = indexes
        self.labels = labels
        self.keys = keys
        self.dtype = dtype
        self.featureBytes = featureBytes
        self.deadLetters = deadLetters
    }

    /// Wraps `Float` rows (kept as f32; the store narrows them to its own dtype on commit).
    public init(shardItemCount: UInt32, dimension: Int, offsets: [UInt32], indexes: [UInt64], labels: [Int32],
                keys: [String], features: [Float], deadLetters: [DeadLetterEntry]) {
        self.init(shardItemCount: shardItemCount, dimension: dimension, offsets: offsets, indexes: indexes, labels: labels,
                  keys: keys, dtype: .f32, featureBytes: FeatureDType.f32.littleEndianBytes(of: features),
                  deadLetters: deadLetters)
    }

    /// Number of feature rows.
    public var rowCount: Int { offsets.count }

    /// The feature values widened to `Float`, row-major (a copy; the training pass reads these).
    public var features: [Float] { dtype.floats(fromLittleEndian: featureBytes) ?? [] }
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
/// others' data is dropped); offsets already seen by an attempt are dropped; a sender (a worker, which
/// works one shard at a time) has at most one open attempt: its batch of a new attempt abandons its
/// older unfinished one; no more than `maxOpenAttempts` attempts are buffered at a time, and a batch that
/// would open one more is refused (never is a live attempt evicted to make room, which would starve
/// progress: the head derives the bound from the number of workers it tracks).
public struct ShardLedger: Sendable {
    private struct AttemptKey: Hashable, Sendable {
        var shardID: UInt32
        var attempt: UInt32
    }

    private struct PartialAttempt: Sendable {
        var shardItemCount: UInt32
        var rowSlotByOffset: [UInt32: Int] = [:]
        var indexes: [UInt64] = []
        var labels: [Int32] = []
        var keys: [String] = []
        var featureBytes: [UInt8] = []
        var deadLetterByOffset: [UInt32: DeadLetterEntry] = [:]

        var coveredOffsets: Int { rowSlotByOffset.count + deadLetterByOffset.count }
        func hasSeen(_ offset: UInt32) -> Bool {
            rowSlotByOffset[offset] != nil || deadLetterByOffset[offset] != nil
        }
    }

    /// Values per feature row; batches with a different row width are rejected.
    public let dimension: Int
    /// Element type the ledger buffers; batches of another dtype are rejected.
    public let dtype: FeatureDType
    private let rowBytes: Int
    /// Most attempts buffered at once.
    public let maxOpenAttempts: Int
    /// Shards whose batches are answered `.alreadyCommitted`.
    public private(set) var committed: Set<UInt32>
    /// Shards that completed but whose commit has not been confirmed by `markCommitted` or undone by `commitFailed`.
    public private(set) var completing: Set<UInt32> = []
    /// Batches discarded because their shard was already committed or completing.
    public private(set) var discardedBatches = 0
    /// Batches refused as inconsistent, or because `maxOpenAttempts` attempts were open.
    public private(set) var rejectedBatches = 0
    /// Unfinished attempts dropped because their sender moved on to another attempt (or was forgotten).
    public private(set) var abandonedAttempts = 0

    private var attempts: [AttemptKey: PartialAttempt] = [:]
    /// Each sender's open attempt.
    private var openAttemptBySender: [[UInt8]: AttemptKey] = [:]

    /// Starts with the shards the store has already committed; `maxOpenAttempts` is raised to at least 1.
    public init(dimension: Int, dtype: FeatureDType = .f32, committed: Set<UInt32>, maxOpenAttempts: Int = 1024) {
        self.dimension = dimension
        self.dtype = dtype
        self.rowBytes = dimension * dtype.width
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
    /// `sender` identifies who sent the batch (a worker's connection); nil for callers that do not track
    /// senders, whose attempts are then bounded by `maxOpenAttempts` alone.
    public mutating func receive(_ batch: DecodedBatch, from sender: [UInt8]? = nil) -> LedgerOutcome {
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

        var partial: PartialAttempt
        if let existing = attempts.removeValue(forKey: key) {
            partial = existing
        } else {
            if let sender, let previous = openAttemptBySender[sender], previous != key, attempts.removeValue(forKey: previous) != nil {
                abandonedAttempts += 1
            }
            guard attempts.count < maxOpenAttempts else {
                rejectedBatches += 1
                return .rejected("shard \(batch.shardID) attempt \(batch.attempt): \(maxOpenAttempts) attempts are already open")
            }
            partial = PartialAttempt(shardItemCount: batch.shardItemCount)
            // One allocation per attempt instead of repeated regrowth while rows stream in.
            let expectedRows = Int(batch.shardItemCount)
            partial.featureBytes.reserveCapacity(expectedRows * rowBytes)
            partial.indexes.reserveCapacity(expectedRows)
            partial.labels.reserveCapacity(expectedRows)
            partial.keys.reserveCapacity(expectedRows)
            partial.rowSlotByOffset.reserveCapacity(expectedRows)
        }
        if let sender { openAttemptBySender[sender] = key }

        var newRows = 0
        var duplicates = 0
        let rowBytes = rowBytes
        if batch.offsets.allSatisfy({ !partial.hasSeen($0) }) && Set(batch.offsets).count == batch.offsets.count {
            // The usual batch, all new: its rows go in with one copy.
            for (row, offset) in batch.offsets.enumerated() { partial.rowSlotByOffset[offset] = partial.indexes.count + row }
            partial.indexes += batch.indexes
            partial.labels += batch.labels
            partial.keys += batch.keys
            partial.featureBytes += batch.featureBytes
            newRows = batch.offsets.count
        } else {
            for (row, offset) in batch.offsets.enumerated() {
                if partial.hasSeen(offset) { duplicates += 1; continue }
                partial.rowSlotByOffset[offset] = partial.indexes.count
                partial.indexes.append(batch.indexes[row])
                partial.labels.append(batch.labels[row])
                partial.keys.append(batch.keys[row])
                partial.featureBytes.append(contentsOf: batch.featureBytes[(row * rowBytes)..<((row + 1) * rowBytes)])
                newRows += 1
            }
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

    /// Drops the sender's open attempt (its session ended).
    public mutating func forget(sender: [UInt8]) {
        guard let key = openAttemptBySender.removeValue(forKey: sender) else { return }
        if attempts.removeValue(forKey: key) != nil { abandonedAttempts += 1 }
    }

    private func inconsistency(of batch: DecodedBatch, existing: PartialAttempt?) -> String? {
        let rows = batch.offsets.count
        guard batch.indexes.count == rows, batch.labels.count == rows, batch.keys.count == rows else {
            return "shard \(batch.shardID) attempt \(batch.attempt): \(rows) offsets but \(batch.indexes.count) indexes, "
                + "\(batch.labels.count) labels, \(batch.keys.count) keys"
        }
        guard batch.dtype == dtype else {
            return "shard \(batch.shardID) attempt \(batch.attempt): \(batch.dtype.name) rows, "
                + "the ledger holds \(dtype.name)"
        }
        let (expectedBytes, overflow) = rows.multipliedReportingOverflow(by: rowBytes)
        guard !overflow, batch.featureBytes.count == expectedBytes else {
            return "shard \(batch.shardID) attempt \(batch.attempt): \(batch.featureBytes.count) feature bytes "
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

    private func contents(of partial: PartialAttempt) -> ShardContents {
        let ordered = partial.rowSlotByOffset.sorted { $0.key < $1.key }
        let deadLetters = partial.deadLetterByOffset.values.sorted { $0.offset < $1.offset }
        if ordered.enumerated().allSatisfy({ $0.offset == $0.element.value }) {
            // Rows arrived in offset order (the usual case): the buffers are already sorted, no copy needed.
            return ShardContents(shardItemCount: partial.shardItemCount, dimension: dimension, offsets: ordered.map(\.key),
                                 indexes: partial.indexes, labels: partial.labels, keys: partial.keys,
                                 dtype: dtype, featureBytes: partial.featureBytes, deadLetters: deadLetters)
        }
        var featureBytes: [UInt8] = []
        featureBytes.reserveCapacity(ordered.count * rowBytes)
        for (_, slot) in ordered {
            featureBytes.append(contentsOf: partial.featureBytes[(slot * rowBytes)..<((slot + 1) * rowBytes)])
        }
        return ShardContents(
            shardItemCount: partial.shardItemCount,
            dimension: dimension,
            offsets: ordered.map(\.key),
            indexes: ordered.map { partial.indexes[$0.value] },
            labels: ordered.map { partial.labels[$0.value] },
            keys: ordered.map { partial.keys[$0.value] },
            dtype: dtype,
            featureBytes: featureBytes,
            deadLetters: deadLetters)
    }
}
