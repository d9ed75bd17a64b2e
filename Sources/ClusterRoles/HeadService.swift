import ClusterSessions
import FeatureCodec
import FeatureStore
import Foundation
import RoleMetrics
import Transport
import WireProtocol

/// Settings of the head role.
public struct HeadOptions: Sendable {
    /// `tcp://host:port` to bind the data socket workers stream to.
    public var bind: String
    /// The coordinator's control address.
    public var coordinator: String
    /// The feature store folder; reopened on restart.
    public var storePath: String
    /// Element type the store keeps (fixed when the store is created).
    public var dtype: FeatureDType = .f16
    /// Values per feature row the job's model produces. When set, the store is created with it at start
    /// (an existing store of another width is refused), and batches of any other width are dropped and
    /// counted (`wrong_dimension`). When nil, the first decodable batch fixes the width.
    public var featureDimension: Int?
    /// Batches each worker may have in flight to this head.
    public var creditWindow: UInt32 = 4
    /// How often the head beats (and retries its introduction to the coordinator).
    public var heartbeatMs: UInt64 = 500
    /// Recorded in the store when it is created: backbone name and class names.
    public var metadata = StoreMetadata()
    /// Serve Prometheus metrics on this port (0: any free port); `nil`: no metrics.
    public var metricsPort: Int?
    /// How long a head whose store already holds a finished job waits for a coordinator to answer its
    /// introduction before going on without one (a coordinator of that job that finished already is gone).
    public var completedStoreWaitMs: UInt64 = 10_000
    /// CurveZMQ for the data socket (server: workers' keys allowed) and the control socket (client of the coordinator).
    public var dataSecurity: ZMQSecurity = .none
    public var controlSecurity: ZMQSecurity = .none

    public init(bind: String, coordinator: String, storePath: String) {
        self.bind = bind
        self.coordinator = coordinator
        self.storePath = storePath
    }
}

/// What the head saw over a run, written to `ingest.json` in the store.
public struct HeadStatistics: Codable, Sendable {
    public var batches = 0
    /// Feature rows that arrived, duplicates included (what crossed the wire).
    public var rows = 0
    public var deadLetters = 0
    public var duplicateRows = 0
    public var discardedBatches = 0
    public var rejectedBatches = 0
    public var corruptPayloads = 0
    public var rejectedFrames = 0
    public var payloadBytes = 0
    public var rawBytes = 0
    public var committedShards = 0
    /// Batches that arrived beyond the credits their worker was granted (dropped).
    public var creditViolations = 0
    /// Batches whose row width is not the store's (the job's model's), dropped.
    public var wrongDimensionBatches = 0
    /// Frame bytes received on the data socket (headers, metadata and payload).
    public var wireBytes = 0
    /// Feature rows received per worker per second since the head started: `[worker: [second: rows]]`.
    public var rowsPerSecond: [String: [Int: Int]] = [:]
}

/// A head setting that contradicts what is on disk.
public struct HeadConfigurationError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The head's store side: performs a `HeadSession`'s store effects, with syncs on a background thread
/// (group commit: what is appended while one sync runs is covered by the next).
///
/// A shard appended here is reported by `collectDurable` only once a sync covering it has finished, so
/// the session acknowledges only what survives any crash. A failed sync is thrown: what reached the disk
/// is then unknown, and the head must stop rather than acknowledge ("fsyncgate").
public final class HeadStore {
    private let url: URL
    private let dtype: FeatureDType
    private let metadata: StoreMetadata
    /// The store, once created (or reopened from disk).
    public private(set) var store: FeatureStore?
    private let syncer = StoreSyncer()
    /// Taken before anything else, even before the store exists: one head per store.
    private let lock: StoreWriterLock
    /// The shard plan the store belongs to, once bound (STORE.md §4.1).
    public private(set) var plan: UInt64?

    /// Takes the store folder's writer lock (refusing to start when another process writes it), then
    /// reopens the store at `url` for writing if one exists (cutting off an interrupted append); otherwise
    /// it is created by `create`.
    public init(url: URL, dtype: FeatureDType, metadata: StoreMetadata = StoreMetadata()) throws {
        self.url = url
        self.dtype = dtype
        self.metadata = metadata
        lock = try StoreWriterLock.acquire(root: url)
        plan = try JobPlanBinding.read(root: url)
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("store.json").path) {
            store = try FeatureStore.open(at: url, forWriting: true, lock: lock)
        }
    }

    deinit { syncer.stop() }

    /// Binds the store to the job's shard plan, durably.
    public func bind(plan: UInt64) throws {
        try JobPlanBinding.write(plan, root: url)
        self.plan = plan
    }

    /// Creates the store with rows of `dimension` values.
    public func create(dimension: Int) throws {
        guard store == nil else { return }
        store = try FeatureStore.create(at: url, dtype: dtype, dimension: dimension, metadata: metadata, lock: lock)
    }

    /// Appends a shard's record without waiting for the disk; false when the store already holds it.
    public func append(_ contents: ShardContents, shardID: UInt32, attempt: UInt32) throws -> Bool {
        guard let store else { throw FeatureStoreError.notAStore(path: url.path) }
        return try store.append(contents, shardID: shardID, attempt: attempt)
    }

    /// Whether appended shards wait for a sync.
    public var syncPending: Bool { syncer.busy || !(store?.pendingShards.isEmpty ?? true) }

    /// The shards whose sync finished since the last call, and starts the next sync when shards wait for
    /// one. With `wait`, returns only when every appended shard is durable.
    public func collectDurable(wait: Bool = false) throws -> [UInt32] {
        guard let store else { return [] }
        var durable: [UInt32] = []
        repeat {
            if let ticket = try syncer.collect(wait: wait) { durable += store.completeSync(ticket).map(\.shardID) }
            if !syncer.busy && !store.pendingShards.isEmpty { syncer.submit(store.prepareSync()) }
        } while wait && syncer.busy
        return durable
    }
}

/// Why a head stops.
public enum HeadError: Error, CustomStringConvertible {
    /// The store belongs to another job's shard plan than the coordinator serves.
    case otherJob(store: String, storePlan: UInt64, coordinatorPlan: UInt64)

    public var description: String {
        switch self {
        case let .otherJob(store, storePlan, coordinatorPlan):
            return "store \(store) belongs to another job (shard plan \(JobPlanBinding.hex(storePlan))); the coordinator "
                + "serves plan \(JobPlanBinding.hex(coordinatorPlan)) (another dataset, split, limit or shard size). "
                + "Nothing was written; give this job a new store folder, or remove \(store) to start over"
        }
    }
}

/// The head: verifies, decompresses and deduplicates feature batches, commits shards atomically to the
/// store, grants credits, and reports commits to the coordinator. A thin ZeroMQ driver around
/// `HeadSession` (the protocol rules) and `HeadStore` (the disk).
public final class HeadService {
    let options: HeadOptions
    public let log = RoleLog(role: "head")
    private let context = ZMQContext()
    /// Nil for a store that holds a finished job: such a head serves no worker, it only reports its shards.
    private let data: MessageSocket?
    private let control: MessageSocket
    private var session: HeadSession
    private let store: HeadStore
    /// Prometheus metrics; `metrics.endpoint?.port` is where they are served.
    public let metrics: RoleMetricsRegistry
    /// Called with every newly committed shard, after the commit is durable (the online training pass).
    public var onCommit: ((ShardContents) -> Void)?
    private var statistics = HeadStatistics()
    private let started = Date()
    /// The job is over for this head: the coordinator said so, or it serves the job the store already holds whole.
    private var jobComplete = false
    /// The store held a finished job when the head started (`completeMarker`): the head then only tells a
    /// coordinator what it holds, or refuses one of another job.
    private let completeAtStart: Bool

    /// Opens (or prepares to create) the store and binds the data socket (unless the store holds a finished job).
    public init(options: HeadOptions) throws {
        self.options = options
        completeAtStart = HeadService.jobComplete(storePath: options.storePath)
        store = try HeadStore(url: URL(fileURLWithPath: options.storePath), dtype: options.dtype, metadata: options.metadata)
        if let existing = store.store {
            log.event("reopened store \(options.storePath): \(existing.committedShards.count) shards committed")
            if let wanted = options.metadata.precision, let mismatch = existing.metadata.precisionMismatch(wanted: wanted, store: options.storePath) {
                throw HeadConfigurationError(message: mismatch)
            }
        }
        // The job's model fixes the row width before any peer speaks: no batch can choose it.
        if let expected = options.featureDimension {
            if let existing = store.store, existing.dimension != expected {
                throw HeadConfigurationError(message: "store \(options.storePath) holds \(existing.dimension)-value rows, "
                                             + "but the job's model produces \(expected)")
            }
            if store.store == nil {
                try store.create(dimension: expected)
                log.event("created store \(options.storePath) with \(expected)-value rows (the job's model)")
            }
        } else if store.store == nil {
            log.event("no feature width given (--feature-dimension or --model): the first batch from an authenticated worker will fix it")
        }
        var settings = HeadSessionSettings()
        settings.creditWindow = options.creditWindow
        settings.heartbeatMs = options.heartbeatMs
        session = HeadSession(epoch: newEpoch(), dtype: store.store?.dtype ?? options.dtype, dimension: store.store?.dimension,
                              committed: store.store?.committedShards ?? [], plan: store.plan, settings: settings)
        if completeAtStart {
            data = nil
        } else {
            let router = try ZMQSocket(context, .router, highWaterMark: 1000, security: options.dataSecurity)
            try router.bind(options.bind)
            data = MessageSocket(router, log: log, accepting: .headData)
        }
        let dealer = try ZMQSocket(context, .dealer, highWaterMark: 1000, security: options.controlSecurity)
        try dealer.connect(options.coordinator)
        control = MessageSocket(dealer, log: log, accepting: .headControl)
        metrics = try RoleMetricsRegistry(role: "head", port: options.metricsPort)
        data?.onReject = { [metrics] in metrics.rejected($0) }
        control.onReject = { [metrics] in metrics.rejected($0) }
        if let port = metrics.endpoint?.port { log.event("metrics on port \(port)") }
        if data != nil { log.event("listening for features on \(options.bind); coordinator \(options.coordinator)") }
    }

    /// The file a head writes into its store when the coordinator declares the job complete.
    public static let completeMarker = "job-complete"

    /// Whether the store at `path` holds a finished job (its shards are then only reported, never added to).
    public static func jobComplete(storePath: String) -> Bool {
        FileManager.default.fileExists(atPath: URL(fileURLWithPath: storePath).appendingPathComponent(completeMarker).path)
    }

    /// Records the latest training loss (the online pass, or an epoch of the final fit).
    public func recordTrainingLoss(_ loss: Double, split: String) {
        metrics.gauge(MetricName.trainingLoss, [("split", split)]).set(loss)
    }

    /// Serves until the coordinator says the job is complete. Throws when the store fails (a failed sync
    /// included): the process must stop, and a restarted head reopens the store.
    ///
    /// A store that already holds a finished job is checked against the coordinator's plan before anything
    /// else: the head introduces itself with every shard it holds, and the coordinator's `welcome` decides.
    /// The same plan: the coordinator has just recorded every shard, so it finishes at once and the head
    /// is done. Another plan: the head stops with `HeadError.otherJob`, as for an unfinished store. No
    /// answer within `completedStoreWaitMs` (that job's coordinator already finished and left): the head
    /// goes on without one, as a head restarted to train does.
    public func run() throws -> HeadStatistics {
        if completeAtStart && store.plan == nil {
            // No plan recorded (a store finished before stores were bound): no coordinator's job can be checked
            // against it, so its shards are reported to none.
            log.event("store \(options.storePath) holds a finished job of no recorded shard plan, so the head reports it to no coordinator")
            return statistics
        }
        let startedAt = nowMs()
        if completeAtStart {
            log.event("store \(options.storePath) already holds the whole job of shard plan \(JobPlanBinding.hex(store.plan!)); "
                      + "telling the coordinator, which must serve the same plan")
        }
        try dispatch(session.start(now: startedAt))
        while !jobComplete {
            // While a sync runs, look back soon: its shards are acknowledged as soon as it is done.
            let sockets = [control.socket] + (data.map { [$0.socket] } ?? [])
            let ready = try waitForInput(sockets, timeoutMs: store.syncPending ? 2 : 50)
            if ready[0] {
                while !jobComplete, let (_, message) = control.receive() {
                    try dispatch(session.receiveControl(message, now: nowMs()))
                    // A welcome of another plan has thrown; this one is the store's job, and the coordinator
                    // recorded every shard of it from the introduction before answering.
                    if completeAtStart, case .welcome = message {
                        log.event("the coordinator serves this store's job, which the store holds whole; it was told every shard")
                        jobComplete = true
                    }
                }
            }
            if completeAtStart && !jobComplete && nowMs() - startedAt >= options.completedStoreWaitMs {
                log.event("no coordinator answered within \(options.completedStoreWaitMs / 1000) s; the store holds its whole job, "
                          + "so the head goes on without one")
                break
            }
            if let data, ready[1] {
                // Read what is waiting before processing any of it: credits are checked on arrival (§8.4).
                var arrived: [(identity: [UInt8], message: Message)] = []
                while arrived.count < 256, let (identity, message) = data.receive() {
                    if case .featureBatch = message, !session.admitBatch(from: identity!, now: nowMs()) {
                        log.event("dropped a batch from \(session.workerName(identity!) ?? "a peer that never said hello"): it exceeded its credits")
                        metrics.counter(MetricName.creditViolations).increment()
                        continue
                    }
                    arrived.append((identity!, message))
                }
                for (identity, message) in arrived where !jobComplete { try handleData(message, from: identity) }
            }
            try dispatch(session.synced(try store.collectDurable(), now: nowMs()))
            try dispatch(session.tick(now: nowMs()))
        }
        return finish()
    }

    private func handleData(_ message: Message, from identity: [UInt8]) throws {
        let now = nowMs()
        switch message {
        case let .hello(workerID, _, _, capabilities):
            if session.creditLimit(of: identity) == nil { log.event("worker \(workerID) streaming") }
            try dispatch(session.workerHello(from: identity, name: workerID, batchesSent: DataHello.sent(capabilities),
                                             plan: DataHello.plan(capabilities), now: now))
        case .heartbeat:
            session.workerHeartbeat(from: identity, now: now)
        case .featureBatch(let batch):
            statistics.batches += 1
            statistics.rows += batch.offsets.count
            statistics.payloadBytes += batch.payload.count
            statistics.rawBytes += Int(batch.rawLength)
            if let expected = session.dimension, Int(batch.dimension) != expected {
                // Dropped by the session (counted there too); said here with the sender, and counted for metrics.
                log.event("dropped a batch of shard \(batch.shardID) from \(session.workerName(identity) ?? "an unknown worker"): "
                          + "its rows have \(batch.dimension) values, the store's have \(expected)")
                metrics.rejected("wrong_dimension")
            }
            let decoded = Result { try DecodedBatch(decoding: batch, as: session.dtype) }
            if case .failure(let error) = decoded {
                log.event("rejected a batch of shard \(batch.shardID) attempt \(batch.attempt): its payload does not decode (\(error))")
            }
            try dispatch(session.receiveBatch(from: identity, batch: batch, decoded: decoded, now: now))
            let worker = session.workerName(identity) ?? "unknown"
            metrics.counter(MetricName.images, [("worker", worker)]).increment(by: Int64(batch.offsets.count))
            metrics.counter(MetricName.wireBytes, [("direction", "in")]).increment(by: Int64(batch.payload.count))
            if statistics.payloadBytes > 0 {
                metrics.gauge(MetricName.compressionRatio).set(Double(statistics.rows * Int(batch.dimension) * 4) / Double(statistics.payloadBytes))
            }
            if let inFlight = session.creditsInFlight(of: identity) {
                metrics.gauge(MetricName.creditsInFlight, [("worker", worker)]).set(Double(inFlight))
            }
            let second = Int(Date().timeIntervalSince(started))
            statistics.rowsPerSecond[worker, default: [:]][second, default: 0] += batch.offsets.count
        default:
            data?.counters.unexpectedMessages += 1
        }
    }

    /// Sends the session's messages and performs its effects, feeding their results back.
    private func dispatch(_ outputs: [HeadOutput]) throws {
        for output in outputs {
            switch output {
            case .toCoordinator(let message):
                control.send(message)
            case let .toWorker(identity, message):
                data?.send(message, to: identity)
            case .effect(.createStore(let dimension)):
                try store.create(dimension: dimension)
                log.event("created store \(options.storePath) with \(dimension)-value rows")
            case let .effect(.append(shardID, attempt, contents)):
                let stored: Bool
                do {
                    stored = try store.append(contents, shardID: shardID, attempt: attempt)
                } catch {
                    // Another attempt may still complete the shard; the store stays consistent either way.
                    try dispatch(session.appendFailed(shardID: shardID, now: nowMs()))
                    throw error
                }
                try dispatch(session.appended(shardID: shardID, stored: stored, now: nowMs()))
            case .effect(.committed(let contents)):
                statistics.committedShards += 1
                statistics.deadLetters += contents.deadLetters.count
                metrics.counter(MetricName.deadLetters).increment(by: Int64(contents.deadLetters.count))
                onCommit?(contents)
            case .effect(.bindPlan(let plan)):
                try store.bind(plan: plan)
                log.event("store \(options.storePath) belongs to shard plan \(JobPlanBinding.hex(plan))")
            case let .effect(.planMismatch(storePlan, coordinatorPlan)):
                throw HeadError.otherJob(store: options.storePath, storePlan: storePlan, coordinatorPlan: coordinatorPlan)
            case .effect(.jobComplete(let reason)):
                log.event("the coordinator ended the job: \(reason)")
                // Recorded so that a head restarted after the job (say, killed while training) knows the store is whole.
                let marker = URL(fileURLWithPath: options.storePath).appendingPathComponent(HeadService.completeMarker)
                try? Data(reason.utf8).write(to: marker, options: .atomic)
                jobComplete = true
            }
        }
    }

    private func finish() -> HeadStatistics {
        // The coordinator ends the job only after every shard was acknowledged, so this finds nothing
        // unless a late duplicate completed meanwhile; it is waited for all the same.
        if let durable = try? store.collectDurable(wait: true) { try? dispatch(session.synced(durable, now: nowMs())) }
        let counters = session.counters
        statistics.duplicateRows = counters.duplicateRows
        statistics.discardedBatches = counters.lateBatches
        statistics.rejectedBatches = counters.rejectedBatches
        statistics.corruptPayloads = counters.corruptPayloads
        statistics.creditViolations = counters.creditViolations
        statistics.wrongDimensionBatches = counters.wrongDimension
        statistics.rejectedFrames = (data?.counters.rejectedTotal ?? 0) + control.counters.rejectedTotal
        statistics.wireBytes = data?.counters.bytesIn ?? 0
        // A finished store's ingest.json describes the run that filled it; this one added nothing.
        if let store = store.store, !completeAtStart {
            let url = URL(fileURLWithPath: options.storePath).appendingPathComponent("ingest.json")
            if let json = try? JSONEncoder().encode(statistics) { try? json.write(to: url, options: .atomic) }
            log.event("store: \(store.inspect().description.replacingOccurrences(of: "\n", with: "; "))")
        }
        log.event("ingested \(statistics.batches) batches; rejected \(statistics.rejectedFrames) malformed frames, "
            + "\(statistics.corruptPayloads) undecodable payloads and \(statistics.creditViolations) batches beyond their credits; "
            + "\(statistics.discardedBatches) late batches were re-acknowledged")
        return statistics
    }
}
