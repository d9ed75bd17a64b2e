/// Every message FeatureStream processes exchange, as plain values.
///
/// The byte layout of each is specified in Protocols/PROTOCOL.md and implemented by `FrameCodec`.
/// Control plane: worker and head (DEALER) ↔ coordinator (ROUTER).
/// Data plane: worker (DEALER) → head (ROUTER), with credits flowing back.

/// Where a worker reads an item's bytes, as the coordinator's dataset index resolved it (INDEX.md §4.2):
/// assignments carry it, so workers never open or index the dataset themselves.
public enum ItemLocator: Equatable, Hashable, Sendable {
    /// A whole file (absolute path).
    case file(path: String)
    /// `size` bytes at `offset` inside the tar at `path` (absolute).
    case tarMember(path: String, offset: UInt64, size: UInt32)
    /// No bytes: the coordinator's scan rejected this input (a bad manifest line, a truncated tar); the
    /// worker sends it as a dead letter with this reason, so it is recorded with its shard, exactly once.
    case rejected(reason: String)
}

/// A dataset item as a shard names it: its position in the dataset index, key, label and where its bytes
/// are.
public struct ItemRef: Equatable, Hashable, Sendable {
    /// Position in the coordinator's dataset index (global, stable across restarts); for a `.rejected`
    /// entry, `rejectedIndexBase` + the dead letter's number in the index.
    public var index: UInt64
    /// Relative path, `shard.tar:key`, or the rejected input's `manifest.csv:17`.
    public var key: String
    /// Class index, or -1 when unlabeled.
    public var label: Int32
    /// Where the bytes are.
    public var locator: ItemLocator

    /// Indexes at or above this name index-time dead letters, not items (top bit set: no index reaches it).
    public static let rejectedIndexBase: UInt64 = 1 << 63

    /// An item reference with the given fields, stored as given.
    public init(index: UInt64, key: String, label: Int32, locator: ItemLocator) {
        self.index = index
        self.key = key
        self.label = label
        self.locator = locator
    }
}

/// An item that produced no feature, and why.
public struct DeadLetterEntry: Equatable, Hashable, Sendable {
    /// Position of the item within its shard (0..<shardItemCount).
    public var offset: UInt32
    /// The item's key, as the assignment named it.
    public var key: String
    /// Short `category: detail` text, e.g. `decode: truncated JPEG` (PROTOCOL.md §8.3).
    public var reason: String

    /// A dead letter with the given fields, stored as given.
    public init(offset: UInt32, key: String, reason: String) {
        self.offset = offset
        self.key = key
        self.reason = reason
    }
}

/// How a feature payload is compressed.
public enum CodecID: UInt8, Sendable {
    /// Raw little-endian values.
    case raw = 0
    /// LZ4 block over the raw values.
    case lz4 = 1
    /// LZ4 block over byte-shuffled values (byte k of every value grouped together).
    case shuffleLZ4 = 2
}

/// A batch of features from one shard attempt: rows for decoded items, dead letters for the rest.
public struct FeatureBatch: Equatable, Sendable {
    /// The shard these items belong to.
    public var shardID: UInt32
    /// The lease attempt that produced them; the head discards batches of superseded attempts.
    public var attempt: UInt32
    /// Items in the whole shard; the head commits the shard once it has seen all of them.
    public var shardItemCount: UInt32
    /// Position within the shard of each feature row.
    public var offsets: [UInt32]
    /// Dataset index of each feature row.
    public var indexes: [UInt64]
    /// Label of each feature row (-1 when unlabeled).
    public var labels: [Int32]
    /// Key of each feature row.
    public var keys: [String]
    /// Items of this batch that produced no row; together with the rows they cover each offset once.
    public var deadLetters: [DeadLetterEntry]
    /// Element type of the decoded payload.
    public var dtype: FeatureDType
    /// Values per feature row.
    public var dimension: UInt32
    /// How `payload` encodes the `rows × dimension` matrix.
    public var codec: CodecID
    /// Bytes of the decoded payload (`rows * dimension * width(dtype)`); decoding never produces more.
    public var rawLength: UInt32
    /// The encoded feature values.
    public var payload: [UInt8]

    /// A batch with the given fields, stored as given; `FrameCodec.validate` checks their consistency.
    public init(shardID: UInt32, attempt: UInt32, shardItemCount: UInt32, offsets: [UInt32], indexes: [UInt64],
                labels: [Int32], keys: [String], deadLetters: [DeadLetterEntry], dtype: FeatureDType,
                dimension: UInt32, codec: CodecID, rawLength: UInt32, payload: [UInt8]) {
        self.shardID = shardID
        self.attempt = attempt
        self.shardItemCount = shardItemCount
        self.offsets = offsets
        self.indexes = indexes
        self.labels = labels
        self.keys = keys
        self.deadLetters = deadLetters
        self.dtype = dtype
        self.dimension = dimension
        self.codec = codec
        self.rawLength = rawLength
        self.payload = payload
    }
}

/// One message of the protocol.
public enum Message: Equatable, Sendable {
    /// The reason category of a `shardFailed` from a worker whose extraction made no progress for its stall
    /// limit, and which exits to be restarted: the coordinator counts the attempt as lost with its worker,
    /// towards isolating a poison item (PROTOCOL.md §8.3.7).
    public static let stalledReasonPrefix = "stalled:"
    /// The `hello` capability naming the worker process (PROTOCOL.md §5 `hello`): a `hello` with the
    /// incarnation the worker already had is the same process introducing itself again, not a restart.
    public static let incarnationCapability = "incarnation"

    // MARK: control plane, worker → coordinator
    /// First message of a worker (and again whenever it sees a new coordinator epoch).
    case hello(workerID: String, host: String, pid: UInt32, capabilities: [String: String])
    /// The worker is idle and wants a shard.
    case shardRequest(workerID: String)
    /// The worker sent every batch of the shard to the head.
    case shardDone(shardID: UInt32, attempt: UInt32, items: UInt32, deadLetters: UInt32)
    /// The worker gave up on the shard (for example it is draining on SIGTERM).
    case shardFailed(shardID: UInt32, attempt: UInt32, reason: String)

    // MARK: control plane, coordinator → worker / head
    /// Reply to hello: how to reach the head, how often to beat, and the job's shard-plan fingerprint (a
    /// head refuses a store that belongs to another plan, §8.1).
    case welcome(epoch: UInt64, headAddress: String, heartbeatIntervalMs: UInt32, deadAfterBeats: UInt32, plan: UInt64)
    /// A shard lease: the worker owns this attempt until the lease expires or is renewed by heartbeats.
    case assignment(shardID: UInt32, attempt: UInt32, leaseMs: UInt32, items: [ItemRef])
    /// A lease to *probe* items of a shard suspected of holding a poison item (3.1, PROTOCOL.md §8.3.7):
    /// the worker extracts `items` as it would an assignment's, sends nothing to the head, and reports
    /// `shardDone` once it survived them all. Sent only to workers whose hello says `fswp` 3.1 or later.
    case probe(shardID: UInt32, attempt: UInt32, leaseMs: UInt32, items: [ItemRef])
    /// Nothing to lease right now; ask again after the given delay.
    case noWork(retryAfterMs: UInt32)
    /// The job is over (or the coordinator is stopping): finish and exit.
    case shutdown(reason: String)

    // MARK: control plane, both ways
    /// Liveness; `epoch` identifies the sender's incarnation so peers notice restarts.
    case heartbeat(epoch: UInt64, sequence: UInt64)

    // MARK: head ↔ coordinator
    /// First message of a head (and again on a new coordinator epoch): what its store has committed, and
    /// the shard plan the store is bound to (0: none yet). A coordinator takes the commits only from a
    /// store of its own plan (3.1; §8.1 *One job per store*).
    case headHello(epoch: UInt64, committed: [UInt32], plan: UInt64)
    /// The head durably stored every item of this shard attempt.
    case shardCommitted(shardID: UInt32, attempt: UInt32, items: UInt32, deadLetters: UInt32)

    // MARK: data plane
    /// Worker → head: features of one batch.
    case featureBatch(FeatureBatch)
    /// Head → worker: the worker may have sent this many batches in all to this head epoch (a cumulative
    /// limit, so a lost or repeated credit is harmless).
    case credit(epoch: UInt64, limit: UInt32)
}
