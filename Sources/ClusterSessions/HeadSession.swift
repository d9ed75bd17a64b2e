import FeatureStore
import WireProtocol

/// Settings of a `HeadSession`; durations are milliseconds of the caller's monotonic clock.
public struct HeadSessionSettings: Sendable {
    /// Batches a worker may have outstanding (sent and not yet credited back).
    public var creditWindow: UInt32 = 4
    /// How often the head beats to the coordinator and to its workers, and retries its `headHello`.
    public var heartbeatMs: UInt64 = 500
    /// Most worker identities the head keeps a credit session and an open attempt for. The ledger's bound on
    /// open attempts is derived from it (one per worker), so no live attempt is ever evicted to make room;
    /// a new identity beyond it displaces the one idle longest.
    public var maxWorkers = 1024

    /// The defaults: a window of 4, beats every 500 ms, at most 1,024 workers.
    public init() {}
}

/// Something the head's driver must do for the session. The session performs no I/O: it asks.
public enum HeadEffect: Equatable, Sendable {
    /// Create the store with this row width before performing the next `append` (the first decodable batch
    /// of a new store fixes it).
    case createStore(dimension: Int)
    /// Append the shard's record to the store without waiting for the disk, then call `appended` (or
    /// `appendFailed`). Syncs are the driver's to schedule; report each finished sync with `synced`.
    case append(shardID: UInt32, attempt: UInt32, contents: ShardContents)
    /// The shard is durable and the coordinator was told: hand its contents to the online training pass.
    case committed(ShardContents)
    /// The coordinator ended the job: record it and stop serving.
    case jobComplete(reason: String)
    /// The first `welcome` named the job's shard plan: record it durably in the store before anything else,
    /// so the store can never take shards of another job (PROTOCOL.md §8.1).
    case bindPlan(UInt64)
    /// The coordinator serves another plan than the one the store belongs to: stop with an error naming
    /// both; nothing was accepted.
    case planMismatch(store: UInt64, coordinator: UInt64)
}

/// What the head sends, and to whom.
public enum HeadOutput: Equatable, Sendable {
    /// A message for the coordinator (control socket).
    case toCoordinator(Message)
    /// A message for the worker with this data-socket identity.
    case toWorker([UInt8], Message)
    /// Work for the driver.
    case effect(HeadEffect)
}

/// Counts of what the head refused or discarded, for metrics and `ingest.json`.
public struct HeadSessionCounters: Equatable, Sendable {
    /// Batches that arrived beyond the credit limit their worker was granted (dropped unprocessed).
    public var creditViolations = 0
    /// Batches whose payload did not decode.
    public var corruptPayloads = 0
    /// Batches the ledger refused as inconsistent.
    public var rejectedBatches = 0
    /// Batches of shards already committed (each answered with a re-sent `shardCommitted`).
    public var lateBatches = 0
    /// Rows that were already buffered for their attempt.
    public var duplicateRows = 0
    /// Worker sessions displaced to keep within `maxWorkers`.
    public var displacedWorkers = 0
    /// Batches whose row width differs from the store's.
    public var wrongDimension = 0

    /// All zero.
    public init() {}
}

/// The capabilities of a worker's data-plane `hello` (PROTOCOL.md §8.4, §8.1): `"sent"`, the batches it sent
/// to this head epoch (decimal), and `"plan"`, its job's shard plan as its coordinator's `welcome` named it
/// (16 hex digits). The one place both sides read and write them.
public enum DataHello {
    /// The capabilities for a worker that sent `sent` batches and serves `plan` (none before its welcome).
    public static func capabilities(sent: UInt64, plan: UInt64?) -> [String: String] {
        var result = ["sent": String(sent)]
        if let plan { result["plan"] = String(plan, radix: 16) }
        return result
    }

    /// The batches the worker says it sent, if it said.
    public static func sent(_ capabilities: [String: String]) -> UInt64? { capabilities["sent"].flatMap { UInt64($0) } }

    /// The plan the worker says it serves, if it said.
    public static func plan(_ capabilities: [String: String]) -> UInt64? { capabilities["plan"].flatMap { UInt64($0, radix: 16) } }
}

/// The head's protocol rules as a pure state machine (PROTOCOL.md §8): fed decoded messages, finished
/// store appends and syncs, and the time; it answers with messages to send and effects to perform.
///
/// Rules it owns, each in one place:
/// - **Credits** (§8.4): per worker, a cumulative limit `accepted − withheld + window`; a batch beyond the
///   limit is dropped and counted; the credit of a batch that completed a shard is withheld until that
///   shard is durable. A data-plane `hello` carries the worker's count of batches sent, which repairs lost
///   credit messages.
/// - **Acknowledgement** (§8.3.5): `shardCommitted` only after the driver reported the shard durable; a
///   batch of a shard already committed is answered by re-sending `shardCommitted`.
/// - **Announcement** (§8.1): `headHello` with every committed shard is re-sent each heartbeat until the
///   coordinator answers `welcome`, and again whenever a coordinator heartbeat shows a new epoch.
/// - **Binding** (§8.1): a store belongs to one shard plan; the first `welcome` binds an unbound store, a
///   `welcome` naming another plan stops the head. Credit goes only to a worker whose data-plane `hello`
///   declares the store's plan (`"plan"`, from its own `welcome`), or, for one that declares none, once a
///   `welcome` of this incarnation named the store's plan: a store bound earlier never takes another
///   job's batches, not even while its head waits to hear which job its coordinator serves.
/// - **Bounded buffering** (§8.3.3): the ledger keeps one open attempt per worker (a worker works one shard
///   at a time), and at most `maxWorkers` workers are tracked.
public struct HeadSession: Sendable {
    private struct WorkerState: Sendable {
        var name: String
        /// The shard plan the worker's hello declared (its coordinator's), if any.
        var plan: UInt64?
        /// Batches counted against credits this head epoch (the worker's own count when it told us more).
        var accepted: UInt64 = 0
        /// Credits of shard-completing batches, returned once their shard is durable.
        var withheld: UInt64 = 0
        /// The highest limit granted so far.
        var limit: UInt64 = 0
        var lastSeen: UInt64
    }

    /// This head incarnation's epoch.
    public let epoch: UInt64
    /// The settings the session was made with.
    public let settings: HeadSessionSettings
    /// The store's dtype (fixed).
    public let dtype: FeatureDType
    /// Row width, once known (from an existing store, the job's model, or the first decodable batch).
    public private(set) var dimension: Int?
    /// Refusals and discards so far.
    public private(set) var counters = HeadSessionCounters()
    private var ledger: ShardLedger?
    private var committedAtStart: Set<UInt32>
    private var workers: [[UInt8]: WorkerState] = [:]
    /// Appended shards waiting for their sync: attempt, contents, and the worker whose credit is withheld.
    private var awaitingSync: [UInt32: (attempt: UInt32, contents: ShardContents, creditTo: [UInt8]?)] = [:]
    /// Shards handed to the driver to append and not yet reported appended.
    private var appending: Set<UInt32> = []
    private var coordinatorEpoch: UInt64 = 0
    private var welcomed = false
    private var lastHelloAt: UInt64?
    private var lastBeatAt: UInt64?
    private var finished = false
    /// The shard plan the store belongs to: the store's record, or the first `welcome`'s. No credit is
    /// granted before it is known, so no batch of another job can reach the store.
    public private(set) var plan: UInt64?
    /// A `welcome` of this incarnation named `plan`: credits may be granted.
    private var planConfirmed = false

    /// A session for a store that already holds `committed` shards and belongs to `plan` (nil: a store not
    /// yet bound to a job). `dimension` is the store's, or the job's model width, or nil to let the first
    /// decodable batch fix it.
    public init(epoch: UInt64, dtype: FeatureDType, dimension: Int?, committed: Set<UInt32>, plan: UInt64? = nil,
                settings: HeadSessionSettings = HeadSessionSettings()) {
        precondition(epoch != 0, "epoch 0 means 'unknown' on the wire")
        self.epoch = epoch
        self.settings = settings
        self.dtype = dtype
        self.dimension = dimension
        self.committedAtStart = committed
        self.plan = plan
        if let dimension {
            ledger = ShardLedger(dimension: dimension, dtype: dtype, committed: committed, maxOpenAttempts: settings.maxWorkers)
        }
    }

    /// Shards durably stored, ascending.
    public var committedShards: [UInt32] { (ledger?.committed ?? committedAtStart).sorted() }

    /// Whether appended shards still wait for a sync.
    public var awaitingDurability: Bool { !awaitingSync.isEmpty || !appending.isEmpty }

    /// Worker sessions currently tracked (never more than `maxWorkers`).
    public var workerCount: Int { workers.count }

    /// Attempts buffering partial data (never more than `maxWorkers`).
    public var openAttempts: Int { ledger?.openAttempts ?? 0 }

    /// Credits granted to the worker with this identity and not yet used, if it is tracked.
    public func creditsInFlight(of identity: [UInt8]) -> UInt64? {
        workers[identity].map { $0.limit > $0.accepted ? $0.limit - $0.accepted : 0 }
    }

    /// The credit limit granted to the worker with this identity, if it is tracked.
    public func creditLimit(of identity: [UInt8]) -> UInt64? { workers[identity]?.limit }

    // MARK: - Inputs

    /// Starts the session: introduces the head to the coordinator.
    public mutating func start(now: UInt64) -> [HeadOutput] {
        lastHelloAt = now
        lastBeatAt = now
        return [.toCoordinator(helloMessage)]
    }

    /// A message from the coordinator.
    public mutating func receiveControl(_ message: Message, now: UInt64) -> [HeadOutput] {
        guard !finished else { return [] }
        switch message {
        case .welcome(let peerEpoch, _, _, _, let peerPlan):
            if let plan, plan != peerPlan {
                finished = true
                return [.effect(.planMismatch(store: plan, coordinator: peerPlan))]
            }
            coordinatorEpoch = peerEpoch
            welcomed = true
            guard !planConfirmed else { return [] }
            planConfirmed = true
            let binds = plan == nil
            plan = peerPlan
            // Workers that said hello before the plan was confirmed were granted nothing; grant now (after
            // recording a new binding, so no batch reaches the store before its job is on disk).
            let grants = workers.keys.sorted { $0.lexicographicallyPrecedes($1) }.map { grant($0, force: true) }
            return binds ? [.effect(.bindPlan(peerPlan))] + grants : grants
        case .heartbeat(let peerEpoch, _):
            guard peerEpoch != coordinatorEpoch else { return [] }
            // A coordinator incarnation we have not introduced ourselves to: it may have lost commits that
            // were in flight when its predecessor died. Tell it everything, until it answers.
            coordinatorEpoch = peerEpoch
            welcomed = false
            lastHelloAt = now
            return [.toCoordinator(helloMessage)]
        case .shutdown(let reason):
            finished = true
            return [.effect(.jobComplete(reason: reason))]
        default:
            return []
        }
    }

    /// A worker's data-plane `hello`: (re)opens its credit session. `batchesSent` is the worker's own
    /// count of batches sent to this head epoch, when it said so.
    public mutating func workerHello(from identity: [UInt8], name: String, batchesSent: UInt64?, plan: UInt64? = nil, now: UInt64) -> [HeadOutput] {
        guard !finished else { return [] }
        var outputs = admit(identity, name: name, now: now)
        workers[identity]!.plan = plan
        if let batchesSent, batchesSent > workers[identity]!.accepted {
            // Batches (or credits) were lost on the way; the worker's count is the truth about what it spent.
            workers[identity]!.accepted = batchesSent
        }
        outputs.append(grant(identity, force: true))
        return outputs
    }

    /// Any other sign of life on the data socket (a worker heartbeat).
    public mutating func workerHeartbeat(from identity: [UInt8], now: UInt64) {
        workers[identity]?.lastSeen = now
    }

    /// Counts a batch that just arrived from `identity` against its credit limit, as it is read from the
    /// socket. Returns false (and counts a violation) when the sender already used every credit granted, or
    /// never said hello: the batch must then be dropped unprocessed.
    ///
    /// Drivers read every waiting frame (admitting each) before processing any, so a sender that bursts
    /// ahead of its credits is caught even though processing raises its limit as it goes.
    public mutating func admitBatch(from identity: [UInt8], now: UInt64) -> Bool {
        guard !finished, var worker = workers[identity], worker.accepted < worker.limit else {
            counters.creditViolations += 1
            return false
        }
        worker.accepted += 1
        worker.lastSeen = now
        workers[identity] = worker
        return true
    }

    /// Processes a batch that `admitBatch` let in, with its payload already decoded by the driver (or the
    /// decoding error). Returns what to send and do.
    public mutating func receiveBatch(from identity: [UInt8], batch: FeatureBatch,
                                      decoded: Result<DecodedBatch, Error>, now: UInt64) -> [HeadOutput] {
        guard !finished, workers[identity] != nil else { return [] }
        var outputs: [HeadOutput] = []

        guard case .success(let rows) = decoded else {
            counters.corruptPayloads += 1
            outputs.append(grant(identity))
            return outputs
        }
        if ledger == nil {
            // Only a batch whose payload decoded may fix a new store's width.
            dimension = Int(batch.dimension)
            ledger = ShardLedger(dimension: Int(batch.dimension), dtype: dtype, committed: committedAtStart,
                                 maxOpenAttempts: settings.maxWorkers)
            outputs.append(.effect(.createStore(dimension: Int(batch.dimension))))
        }
        guard Int(batch.dimension) == dimension else {
            counters.wrongDimension += 1
            outputs.append(grant(identity))
            return outputs
        }
        switch ledger!.receive(rows, from: identity) {
        case .accepted(_, let duplicates):
            counters.duplicateRows += duplicates
            outputs.append(grant(identity))
        case .completed(let contents):
            appending.insert(batch.shardID)
            awaitingSync[batch.shardID] = (batch.attempt, contents, identity)
            workers[identity]!.withheld += 1
            outputs.append(.effect(.append(shardID: batch.shardID, attempt: batch.attempt, contents: contents)))
        case .alreadyCommitted:
            counters.lateBatches += 1
            // §8.3.5: the coordinator re-leased a shard we hold, so our acknowledgement was lost. Say it again.
            outputs.append(.toCoordinator(.shardCommitted(shardID: batch.shardID, attempt: batch.attempt, items: 0, deadLetters: 0)))
            outputs.append(grant(identity))
        case .rejected:
            counters.rejectedBatches += 1
            outputs.append(grant(identity))
        }
        return outputs
    }

    /// The driver performed an `append`: `stored` is false when the store already held the shard (it is then
    /// committed at once, with nothing to wait for).
    public mutating func appended(shardID: UInt32, stored: Bool, now: UInt64) -> [HeadOutput] {
        appending.remove(shardID)
        guard !stored else { return [] }
        return synced([shardID], now: now)
    }

    /// The driver could not append the shard (the store refuses it); another attempt may complete it later.
    public mutating func appendFailed(shardID: UInt32, now: UInt64) -> [HeadOutput] {
        appending.remove(shardID)
        ledger?.commitFailed(shardID)
        guard let waiting = awaitingSync.removeValue(forKey: shardID), let identity = waiting.creditTo,
              workers[identity] != nil else { return [] }
        workers[identity]!.withheld -= 1
        return [grant(identity)]
    }

    /// A sync finished: these shards are durable. Acknowledges each to the coordinator, returns the withheld
    /// credits, and hands the contents to the training pass.
    public mutating func synced(_ shardIDs: [UInt32], now: UInt64) -> [HeadOutput] {
        var outputs: [HeadOutput] = []
        for shardID in shardIDs {
            ledger?.markCommitted(shardID)
            guard let waiting = awaitingSync.removeValue(forKey: shardID) else { continue }
            let contents = waiting.contents
            outputs.append(.toCoordinator(.shardCommitted(shardID: shardID, attempt: waiting.attempt, items: UInt32(contents.rowCount),
                                                          deadLetters: UInt32(contents.deadLetters.count))))
            if let identity = waiting.creditTo, workers[identity] != nil {
                workers[identity]!.withheld -= 1
                outputs.append(grant(identity))
            }
            outputs.append(.effect(.committed(contents)))
        }
        return outputs
    }

    /// Advances time: heartbeats, and the `headHello` retry until the coordinator has answered.
    public mutating func tick(now: UInt64) -> [HeadOutput] {
        guard !finished else { return [] }
        var outputs: [HeadOutput] = []
        if !welcomed, let last = lastHelloAt, now >= last, now - last >= settings.heartbeatMs {
            lastHelloAt = now
            outputs.append(.toCoordinator(helloMessage))
        }
        if let last = lastBeatAt, now >= last, now - last < settings.heartbeatMs { return outputs }
        lastBeatAt = now
        outputs.append(.toCoordinator(.heartbeat(epoch: epoch, sequence: now)))
        for identity in workers.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            outputs.append(.toWorker(identity, .heartbeat(epoch: epoch, sequence: now)))
        }
        return outputs
    }

    // MARK: - Internals

    private var helloMessage: Message { .headHello(epoch: epoch, committed: committedShards, plan: plan ?? 0) }

    /// Tracks a worker identity, displacing the one idle longest when `maxWorkers` are tracked.
    private mutating func admit(_ identity: [UInt8], name: String, now: UInt64) -> [HeadOutput] {
        if workers[identity] != nil {
            workers[identity]!.name = name
            workers[identity]!.lastSeen = now
            return []
        }
        if workers.count >= settings.maxWorkers,
           let idlest = workers.min(by: { a, b in
               a.value.lastSeen != b.value.lastSeen ? a.value.lastSeen < b.value.lastSeen : a.key.lexicographicallyPrecedes(b.key)
           })?.key {
            workers.removeValue(forKey: idlest)
            ledger?.forget(sender: idlest)
            counters.displacedWorkers += 1
        }
        workers[identity] = WorkerState(name: name, lastSeen: now)
        return []
    }

    /// Raises the worker's credit limit to `accepted − withheld + window` and says so (also when unchanged
    /// if `force`, so a `hello` always gets an answer).
    private mutating func grant(_ identity: [UInt8], force: Bool = false) -> HeadOutput {
        var worker = workers[identity]!
        let sameJob = plan != nil && (worker.plan == plan || (worker.plan == nil && planConfirmed))
        guard sameJob else { return .toWorker(identity, .credit(epoch: epoch, limit: UInt32(truncatingIfNeeded: worker.limit))) }
        let limit = max(worker.limit, worker.accepted - worker.withheld + UInt64(settings.creditWindow))
        worker.limit = limit
        workers[identity] = worker
        return .toWorker(identity, .credit(epoch: epoch, limit: UInt32(truncatingIfNeeded: limit)))
    }

    /// The worker's name as it introduced itself, for metrics.
    public func workerName(_ identity: [UInt8]) -> String? { workers[identity]?.name }
}
