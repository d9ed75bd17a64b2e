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
    public var dtype: FeatureDTypeCode = .f16
    /// Batches each worker may have in flight to this head.
    public var creditWindow: UInt32 = 4
    public var heartbeatMs: UInt64 = 500
    /// Recorded in the store when it is created: backbone name and class names.
    public var metadata = StoreMetadata()
    /// Serve Prometheus metrics on this port (0: any free port); `nil`: no metrics.
    public var metricsPort: Int?
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
    /// Frame bytes received on the data socket (headers, metadata and payload).
    public var wireBytes = 0
    /// Feature rows received per worker per second since the head started: `[worker: [second: rows]]`.
    public var rowsPerSecond: [String: [Int: Int]] = [:]
}

/// The head's ingest path without sockets: payload decoding, deduplication, shard appends, and
/// syncs on a background thread.
///
/// A completed shard is appended to the store at once and acknowledged (returned by `receive` or
/// `collectDurable`) only once a sync covering it has finished, so an acknowledged shard survives
/// any crash. `HeadService` feeds it every feature batch; `benchmarkIngest` feeds it frames from memory.
public final class BatchIngest {
    private let storeURL: URL
    private let dtype: FeatureDTypeCode
    private let metadata: StoreMetadata
    private let log: RoleLog
    /// The store, once the first batch fixed its dimension (or reopened from disk).
    public private(set) var store: FeatureStore?
    private var ledger: ShardLedger?
    private let syncer = StoreSyncer()
    /// Appended shards' contents and attempts, kept for their acknowledgement until they are durable.
    private var awaitingSync: [UInt32: (contents: ShardContents, attempt: UInt32)] = [:]
    /// Counts of everything received.
    public private(set) var statistics = HeadStatistics()

    /// Reopens the store at `storeURL` if one exists (truncating an interrupted append); otherwise it
    /// is created by the first batch.
    public init(storeURL: URL, dtype: FeatureDTypeCode, metadata: StoreMetadata = StoreMetadata(), log: RoleLog) throws {
        self.storeURL = storeURL
        self.metadata = metadata
        self.dtype = dtype
        self.log = log
        if FileManager.default.fileExists(atPath: storeURL.appendingPathComponent("store.json").path) {
            let store = try FeatureStore.open(at: storeURL, forWriting: true)
            self.store = store
            ledger = ShardLedger(dimension: store.dimension, dtype: store.dtype, committed: store.committedShards)
            log.event("reopened store \(storeURL.path): \(store.committedShards.count) shards committed")
        }
    }

    deinit { syncer.stop() }

    /// Shards durably in the store, ascending.
    public var committedShards: [UInt32] { store.map { Array($0.committedShards).sorted() } ?? [] }

    /// Whether appended shards still wait for their sync.
    public var hasPendingSyncs: Bool { !awaitingSync.isEmpty }

    /// Takes one batch. Returns the shards that became durable meanwhile (this batch's own shard
    /// usually comes back from a later call): the `shardCommitted` message to send and the shard's
    /// contents (for the online training pass).
    public func receive(_ batch: FeatureBatch) throws -> [(commit: Message, contents: ShardContents)] {
        statistics.batches += 1
        statistics.rows += batch.offsets.count
        statistics.payloadBytes += batch.payload.count
        statistics.rawBytes += Int(batch.rawLength)
        let featureBytes: [UInt8]
        do {
            featureBytes = try Self.decodePayload(of: batch, as: store?.dtype ?? dtype)
        } catch {
            statistics.corruptPayloads += 1
            log.event("rejected batch of shard \(batch.shardID) attempt \(batch.attempt): \(error)")
            return try collectDurable()
        }
        // Only a batch whose payload decoded may fix the store's dimension.
        if store == nil {
            store = try FeatureStore.create(at: storeURL, dtype: dtype, dimension: Int(batch.dimension), metadata: metadata)
            ledger = ShardLedger(dimension: Int(batch.dimension), dtype: dtype, committed: [])
            log.event("created store \(storeURL.path) (\(batch.dimension)-d)")
        }
        let decoded = DecodedBatch(shardID: batch.shardID, attempt: batch.attempt, shardItemCount: batch.shardItemCount,
                                   offsets: batch.offsets, indexes: batch.indexes, labels: batch.labels, keys: batch.keys,
                                   deadLetters: batch.deadLetters, dtype: store!.dtype, featureBytes: featureBytes)
        switch ledger!.receive(decoded) {
        case let .accepted(_, duplicates):
            statistics.duplicateRows += duplicates
        case .completed(let contents):
            let appended: Bool
            do {
                appended = try store!.append(contents, shardID: batch.shardID, attempt: batch.attempt)
            } catch {
                // Another attempt may still complete the shard; the store stays consistent either way.
                ledger!.commitFailed(batch.shardID)
                throw error
            }
            // Not appended: the store already holds the shard, so there is nothing to wait for.
            if appended { awaitingSync[batch.shardID] = (contents, batch.attempt) } else { ledger!.markCommitted(batch.shardID) }
        case .alreadyCommitted:
            statistics.discardedBatches += 1
        case .rejected(let reason):
            statistics.rejectedBatches += 1
            log.event("rejected batch of shard \(batch.shardID) attempt \(batch.attempt): \(reason)")
        }
        return try collectDurable()
    }

    /// The shards whose sync finished since the last call, and starts the next sync when shards wait
    /// for one. With `wait`, returns only when every appended shard is durable.
    public func collectDurable(wait: Bool = false) throws -> [(commit: Message, contents: ShardContents)] {
        guard let store else { return [] }
        var durable: [(commit: Message, contents: ShardContents)] = []
        repeat {
            if let ticket = try syncer.collect(wait: wait) {
                for shard in store.completeSync(ticket) {
                    ledger!.markCommitted(shard.shardID)
                    guard let (contents, attempt) = awaitingSync.removeValue(forKey: shard.shardID) else { continue }
                    statistics.committedShards += 1
                    statistics.deadLetters += contents.deadLetters.count
                    durable.append((.shardCommitted(shardID: shard.shardID, attempt: attempt, items: UInt32(contents.rowCount),
                                                    deadLetters: UInt32(contents.deadLetters.count)), contents))
                }
            }
            if !syncer.busy && !store.pendingShards.isEmpty { syncer.submit(store.prepareSync()) }
        } while wait && syncer.busy
        return durable
    }

    /// The payload as little-endian rows of `dtype`: decompressed straight into place when the wire
    /// already carries `dtype` (the usual f16 → f16), converted otherwise.
    static func decodePayload(of batch: FeatureBatch, as dtype: FeatureDTypeCode) throws -> [UInt8] {
        let rawLength = Int(batch.rawLength)
        if batch.dtype == dtype {
            return try batch.payload.withUnsafeBytes { payload in
                try [UInt8](unsafeUninitializedCapacity: rawLength) { buffer, initialized in
                    try FeatureCodec.decodeRaw(payload, dtype: batch.dtype, codec: batch.codec, rawLength: rawLength,
                                               into: UnsafeMutableRawBufferPointer(buffer))
                    initialized = rawLength
                }
            }
        }
        let values = try batch.payload.withUnsafeBytes {
            try FeatureCodec.decode($0, dtype: batch.dtype, codec: batch.codec, rawLength: rawLength)
        }
        switch dtype {
        case .f32:
            return values.withUnsafeBytes { Array($0) }
        case .f16:
            return [UInt8](unsafeUninitializedCapacity: values.count * 2) { buffer, initialized in
                values.withUnsafeBufferPointer { HalfConversion.toHalf($0.baseAddress!, into: buffer.baseAddress!, count: values.count) }
                initialized = values.count * 2
            }
        }
    }
}

/// The head: verifies, decompresses and deduplicates feature batches, commits shards atomically to
/// the store, grants credits, and reports commits to the coordinator. A thin shell around
/// `ShardLedger` and `FeatureStore`.
public final class HeadService {
    let options: HeadOptions
    public let log = RoleLog(role: "head")
    let epoch = newEpoch()
    private let context = ZMQContext()
    private let data: MessageSocket
    private let control: MessageSocket
    private let ingest: BatchIngest
    /// Prometheus metrics; `metrics.endpoint?.port` is where they are served.
    public let metrics: RoleMetricsRegistry
    /// Called with every newly committed shard, after the commit is durable (the online training pass).
    public var onCommit: ((ShardContents) -> Void)?
    private var throughput: [String: [Int: Int]] = [:]
    /// Credits granted and not yet used, per worker identity.
    private var outstanding: [[UInt8]: UInt32] = [:]
    private var coordinatorEpoch: UInt64 = 0
    /// Worker names by data-socket identity, from their data-plane hello.
    private var workerNames: [[UInt8]: String] = [:]
    private let started = Date()
    private var lastBeat: UInt64 = 0
    private var lastHello: UInt64 = 0

    /// Opens (or prepares to create) the store and binds the data socket.
    public init(options: HeadOptions) throws {
        self.options = options
        ingest = try BatchIngest(storeURL: URL(fileURLWithPath: options.storePath), dtype: options.dtype,
                                 metadata: options.metadata, log: log)
        let router = try ZMQSocket(context, .router, highWaterMark: 1000, security: options.dataSecurity)
        router.authenticator?.onDenied = { [log] denial in log.event("CURVE \(denial)") }
        try router.bind(options.bind)
        data = MessageSocket(router, log: log, accepting: .headData)
        let dealer = try ZMQSocket(context, .dealer, highWaterMark: 1000, security: options.controlSecurity)
        try dealer.connect(options.coordinator)
        control = MessageSocket(dealer, log: log, accepting: .headControl)
        metrics = try RoleMetricsRegistry(role: "head", port: options.metricsPort)
        data.onReject = { [metrics] in metrics.rejected($0) }
        control.onReject = { [metrics] in metrics.rejected($0) }
        if let port = metrics.endpoint?.port { log.event("metrics on port \(port)") }
        log.event("listening for features on \(options.bind); coordinator \(options.coordinator)")
    }

    private var committed: [UInt32] { ingest.committedShards }

    /// The file a head writes into its store when the coordinator declares the job complete.
    public static let completeMarker = "job-complete"

    /// Whether the store at `path` holds a finished job (so serving can be skipped).
    public static func jobComplete(storePath: String) -> Bool {
        FileManager.default.fileExists(atPath: URL(fileURLWithPath: storePath).appendingPathComponent(completeMarker).path)
    }

    /// Records the latest training loss (the online pass, or an epoch of the final fit).
    public func recordTrainingLoss(_ loss: Double, split: String) {
        metrics.gauge(MetricName.trainingLoss, [("split", split)]).set(loss)
    }

    /// Serves until the coordinator says the job is complete.
    public func run() throws -> HeadStatistics {
        while true {
            let now = nowMs()
            // While a sync runs, look back soon: its shards are acknowledged as soon as it is done.
            let ready = try waitForInput([data.socket, control.socket], timeoutMs: ingest.hasPendingSyncs ? 2 : 50)
            if ready[1] {
                while let (_, message) = control.receive() {
                    if try handleControl(message) { return finish() }
                }
            }
            if ready[0] {
                while let (identity, message) = data.receive() { try handleData(message, from: identity!) }
            }
            acknowledge(try ingest.collectDurable())
            if now - lastBeat >= options.heartbeatMs {
                lastBeat = now
                control.send(.heartbeat(epoch: epoch, sequence: now))
                for identity in outstanding.keys { data.send(.heartbeat(epoch: epoch, sequence: now), to: identity) }
            }
            // Until the coordinator has answered, keep introducing ourselves (it may not be up yet).
            if coordinatorEpoch == 0, now - lastHello >= options.heartbeatMs {
                lastHello = now
                control.send(.headHello(epoch: epoch, committed: committed))
            }
        }
    }

    /// Returns true when the job is over.
    private func handleControl(_ message: Message) throws -> Bool {
        switch message {
        case .heartbeat(let peerEpoch, _):
            if peerEpoch != coordinatorEpoch {
                // A new coordinator incarnation: tell it everything we have, in case its journal missed a commit.
                coordinatorEpoch = peerEpoch
                control.send(.headHello(epoch: epoch, committed: committed))
                log.event("coordinator epoch \(String(peerEpoch, radix: 16)); reported \(committed.count) committed shards")
            }
        case .shutdown(let reason):
            log.event("shutdown: \(reason)")
            // Recorded so that a head restarted after the job (say, killed while training) knows the store is whole.
            let marker = URL(fileURLWithPath: options.storePath).appendingPathComponent(HeadService.completeMarker)
            try? Data(reason.utf8).write(to: marker, options: .atomic)
            return true
        case .welcome:
            break
        default:
            control.counters.unexpectedMessages += 1
        }
        return false
    }

    private func handleData(_ message: Message, from identity: [UInt8]) throws {
        switch message {
        case .hello(let workerID, _, _, _):
            workerNames[identity] = workerID
            let have = outstanding[identity] ?? 0
            let grant = options.creditWindow > have ? options.creditWindow - have : 0
            outstanding[identity] = have + grant
            if have == 0 { log.event("worker \(workerID) streaming; granted \(grant) credits") }
            data.send(.credit(epoch: epoch, grant: grant), to: identity)
        case .heartbeat:
            break
        case .featureBatch(let batch):
            if let have = outstanding[identity], have > 0 { outstanding[identity] = have - 1 }
            acknowledge(try ingest.receive(batch))
            let worker = workerNames[identity] ?? "unknown"
            metrics.counter(MetricName.images, [("worker", worker)]).increment(by: Int64(batch.offsets.count))
            metrics.counter(MetricName.wireBytes, [("direction", "in")]).increment(by: Int64(batch.payload.count))
            let statistics = ingest.statistics
            if statistics.payloadBytes > 0 {
                metrics.gauge(MetricName.compressionRatio).set(Double(statistics.rows * Int(batch.dimension) * 4) / Double(statistics.payloadBytes))
            }
            let second = Int(Date().timeIntervalSince(started))
            throughput[workerNames[identity] ?? "unknown", default: [:]][second, default: 0] += batch.offsets.count
            outstanding[identity, default: 0] += 1
            data.send(.credit(epoch: epoch, grant: 1), to: identity)
            metrics.gauge(MetricName.creditsInFlight, [("worker", workerNames[identity] ?? "unknown")]).set(Double(outstanding[identity]!))
        default:
            data.counters.unexpectedMessages += 1
        }
    }

    /// Reports durable shards to the coordinator and the training pass.
    private func acknowledge(_ durable: [(commit: Message, contents: ShardContents)]) {
        for (commit, contents) in durable {
            control.send(commit)
            metrics.counter(MetricName.deadLetters).increment(by: Int64(contents.deadLetters.count))
            onCommit?(contents)
        }
    }

    private func finish() -> HeadStatistics {
        // The coordinator ends the job only after every shard was acknowledged, so this finds nothing
        // unless a late duplicate completed meanwhile; it is waited for all the same.
        if let durable = try? ingest.collectDurable(wait: true) { acknowledge(durable) }
        var statistics = ingest.statistics
        statistics.rejectedFrames = data.counters.rejectedTotal + control.counters.rejectedTotal
        statistics.wireBytes = data.counters.bytesIn
        statistics.rowsPerSecond = throughput
        if let store = ingest.store {
            let url = URL(fileURLWithPath: options.storePath).appendingPathComponent("ingest.json")
            if let json = try? JSONEncoder().encode(statistics) { try? json.write(to: url, options: .atomic) }
            log.event("store: \(store.inspect().description.replacingOccurrences(of: "\n", with: "; "))")
        }
        log.event("ingested \(statistics.batches) batches, \(statistics.rejectedFrames) rejected frames, \(statistics.corruptPayloads) corrupt payloads, \(statistics.discardedBatches) late batches discarded")
        return statistics
    }
}
