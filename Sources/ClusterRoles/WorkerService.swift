import Dispatch
import Extraction
import FeatureCodec
import Foundation
import ImageInput
import RoleMetrics
import Transport
import WireProtocol

/// Settings of the worker role.
public struct WorkerOptions: Sendable {
    /// The coordinator's control address.
    public var coordinator: String
    /// Model folder, config or .onnx.
    public var model: String
    /// The dataset, opened locally; it must be the coordinator's (keys are checked per shard).
    public var dataset: DatasetSelection
    public var batch = 16
    public var threads: Int?
    public var decodeThreads = 1
    public var dtype: FeatureDTypeCode = .f16
    public var codec: CodecID = .shuffleLZ4
    public var workerID: String
    /// Serve Prometheus metrics on this port (0: any free port); `nil`: no metrics.
    public var metricsPort: Int?
    /// CurveZMQ client settings for the coordinator and for the head.
    public var controlSecurity: ZMQSecurity = .none
    public var dataSecurity: ZMQSecurity = .none

    public init(coordinator: String, model: String, dataset: DatasetSelection, workerID: String) {
        self.coordinator = coordinator
        self.model = model
        self.dataset = dataset
        self.workerID = workerID
    }
}

/// Why a worker stopped in the middle of its loop.
enum WorkerStop: Error {
    case shutdown(String)
}

/// The worker: pulls shard leases, extracts features (decode overlapping the backbone), and streams
/// compressed batches to the head within its credits, while heartbeating to both peers.
public final class WorkerService {
    let options: WorkerOptions
    let log: RoleLog
    private let context = ZMQContext()
    private let control: MessageSocket
    private var data: MessageSocket?
    private let extractor: FeatureExtractor
    private let dataset: DatasetIndex
    private var coordinatorEpoch: UInt64 = 0
    private var headEpoch: UInt64 = 0
    private var credits: UInt32 = 0
    private var heartbeatMs: UInt64 = 500
    private var lastBeat: UInt64 = 0
    private var lastHeadHello: UInt64 = 0
    private var welcomed = false
    private var pendingReply: Message?
    private let draining = DrainFlag()
    /// Prometheus metrics; `metrics.endpoint?.port` is where they are served.
    public let metrics: RoleMetricsRegistry
    /// Bytes of feature payload sent, and the raw bytes they stand for.
    public private(set) var sentPayload = 0
    public private(set) var sentRaw = 0
    /// Images (features and dead letters) extracted, and the wall time spent on shards.
    public private(set) var imagesDone = 0
    public private(set) var shardSeconds = 0.0

    /// Loads the model and dataset and connects to the coordinator.
    public init(options: WorkerOptions) throws {
        self.options = options
        log = RoleLog(role: "worker \(options.workerID)")
        let config = try ModelConfig.load(options.model)
        extractor = try FeatureExtractor(config: config, batchSize: options.batch, threads: options.threads)
        (dataset, _) = try options.dataset.open()
        let dealer = try ZMQSocket(context, .dealer, highWaterMark: 16, security: options.controlSecurity)
        try dealer.connect(options.coordinator)
        control = MessageSocket(dealer, log: log, accepting: .workerControl)
        try extractor.engine.warmUp()
        metrics = try RoleMetricsRegistry(role: "worker", port: options.metricsPort)
        control.onReject = { [metrics] in metrics.rejected($0) }
        if let port = metrics.endpoint?.port { log.event("metrics on port \(port)") }
        draining.install()
    }

    /// Works until the coordinator says the job is complete, or until SIGTERM (after finishing the current shard).
    public func run() throws -> WireCounters {
        do {
            try introduce()
            while !draining.isSet {
                control.send(.shardRequest(workerID: options.workerID))
                switch try awaitReply(timeoutMs: 5000) {
                case let .assignment(shardID, attempt, _, items)?:
                    try work(shardID: shardID, attempt: attempt, items: items)
                case .noWork(let retry)?:
                    try pump(forMs: UInt64(retry))
                case .shutdown(let reason)?:
                    throw WorkerStop.shutdown(reason)
                default:
                    // No answer: the coordinator may be restarting. Introduce ourselves again.
                    welcomed = false
                    try introduce()
                }
            }
            log.event("drained after SIGTERM")
        } catch WorkerStop.shutdown(let reason) {
            log.event("shutdown: \(reason)")
        }
        if imagesDone > 0 {
            log.event(String(format: "extracted %d images in %.2f s on shards: %.1f img/s; %.2f MB of features sent (%.2fx smaller than f32)",
                             imagesDone, shardSeconds, Double(imagesDone) / shardSeconds, Double(sentPayload) / 1e6,
                             Double(sentRaw) / Double(max(sentPayload, 1))))
        }
        var counters = control.counters
        if let data { counters.rejectedFrames.merge(data.counters.rejectedFrames, uniquingKeysWith: +) }
        return counters
    }

    private func introduce() throws {
        while !welcomed {
            // SIGTERM while no coordinator answers: there is no shard to finish, so leave now.
            if draining.isSet { throw WorkerStop.shutdown("SIGTERM before the coordinator answered") }
            control.send(.hello(workerID: options.workerID, host: ProcessInfo.processInfo.hostName,
                                pid: UInt32(getpid()), capabilities: ["model": extractor.config.name, "batch": String(options.batch)]))
            try pump(forMs: 1000, until: { self.welcomed })
        }
    }

    private func work(shardID: UInt32, attempt: UInt32, items refs: [ItemRef]) throws {
        var items: [DatasetItem] = []
        for ref in refs {
            guard ref.index < UInt64(dataset.items.count), dataset.items[Int(ref.index)].key == ref.key else {
                let reason = "item \(ref.index) '\(ref.key)' is not in this worker's dataset \(options.dataset.path)"
                control.send(.shardFailed(shardID: shardID, attempt: attempt, reason: reason))
                log.event(reason)
                return
            }
            items.append(dataset.items[Int(ref.index)])
        }
        var offsets: [String: UInt32] = [:]
        for (offset, item) in items.enumerated() { offsets[item.key] = UInt32(offset) }
        var rows = 0, dead = 0
        let started = Date()
        defer {
            shardSeconds += Date().timeIntervalSince(started)
            imagesDone += rows + dead
        }
        try extractor.extract(items, from: dataset, decodeThreads: options.decodeThreads) { batch in
            let (payload, rawLength) = batch.features.withUnsafeBufferPointer {
                FeatureCodec.encode($0, dtype: options.dtype, codec: options.codec)
            }
            let message = FeatureBatch(
                shardID: shardID, attempt: attempt, shardItemCount: UInt32(items.count),
                offsets: batch.items.map { offsets[$0.key]! }, indexes: batch.items.map { UInt64($0.index) },
                labels: batch.items.map { Int32($0.label ?? -1) }, keys: batch.items.map(\.key),
                deadLetters: batch.deadLetters.map { DeadLetterEntry(offset: offsets[$0.key]!, key: $0.key, reason: $0.reason) },
                dtype: options.dtype, dimension: UInt32(extractor.featureWidth), codec: options.codec,
                rawLength: UInt32(rawLength), payload: payload)
            try sendWithinCredits(.featureBatch(message))
            metrics.counter(MetricName.images, [("worker", options.workerID)]).increment(by: Int64(batch.items.count + batch.deadLetters.count))
            metrics.counter(MetricName.deadLetters, [("worker", options.workerID)]).increment(by: Int64(batch.deadLetters.count))
            metrics.counter(MetricName.wireBytes, [("direction", "out")]).increment(by: Int64(payload.count))
            metrics.gauge(MetricName.creditsAvailable, [("worker", options.workerID)]).set(Double(credits))
            sentPayload += payload.count
            sentRaw += batch.features.count * 4
            rows += batch.items.count
            dead += batch.deadLetters.count
        }
        control.send(.shardDone(shardID: shardID, attempt: attempt, items: UInt32(rows), deadLetters: UInt32(dead)))
    }

    /// Sends only with a credit in hand; while waiting, keeps heartbeating and listening.
    private func sendWithinCredits(_ message: Message) throws {
        while true {
            if credits > 0, let data, data.send(message) {
                credits -= 1
                return
            }
            // Return as soon as a credit arrives: the head grants one per batch it finishes.
            try pump(forMs: 50, until: { self.credits > 0 })
        }
    }

    /// Waits for the coordinator's answer to a request, serving everything else meanwhile.
    private func awaitReply(timeoutMs: UInt64) throws -> Message? {
        pendingReply = nil
        try pump(forMs: timeoutMs, until: { self.pendingReply != nil })
        return pendingReply
    }

    /// Serves both sockets for up to `forMs`, returning early once `until` holds.
    private func pump(forMs duration: UInt64, until done: () -> Bool = { false }) throws {
        let deadline = nowMs() + duration
        repeat {
            var sockets = [control.socket]
            if let data { sockets.append(data.socket) }
            let ready = try waitForInput(sockets, timeoutMs: 20)
            if ready[0] { while let (_, message) = control.receive() { try handleControl(message) } }
            if ready.count > 1, ready[1], let data { while let (_, message) = data.receive() { handleData(message) } }
            beat()
            if done() { return }
        } while nowMs() < deadline
    }

    private func handleControl(_ message: Message) throws {
        switch message {
        case let .welcome(epoch, headAddress, interval, _):
            coordinatorEpoch = epoch
            heartbeatMs = UInt64(max(interval, 50))
            welcomed = true
            if data == nil {
                let dealer = try ZMQSocket(context, .dealer, highWaterMark: 8, security: options.dataSecurity)
                try dealer.connect(headAddress)
                data = MessageSocket(dealer, log: log, accepting: .workerData)
                data?.onReject = { [metrics] in metrics.rejected($0) }
                log.event("welcomed; streaming to \(headAddress)")
            }
        case .heartbeat(let epoch, _):
            if coordinatorEpoch != 0 && epoch != coordinatorEpoch {
                log.event("coordinator restarted; introducing myself again")
                coordinatorEpoch = epoch
                control.send(.hello(workerID: options.workerID, host: ProcessInfo.processInfo.hostName,
                                    pid: UInt32(getpid()), capabilities: [:]))
            }
        case .assignment, .noWork:
            pendingReply = message
        case .shutdown(let reason):
            throw WorkerStop.shutdown(reason)
        default:
            control.counters.unexpectedMessages += 1
        }
    }

    private func handleData(_ message: Message) {
        switch message {
        case let .credit(epoch, grant):
            if epoch != headEpoch {
                // Credits of a previous head incarnation died with it.
                headEpoch = epoch
                credits = 0
            }
            credits += grant
        case .heartbeat(let epoch, _):
            if headEpoch != 0 && epoch != headEpoch {
                log.event("head restarted; asking for credits again")
                headEpoch = epoch
                credits = 0
                lastHeadHello = 0
            }
        default:
            data?.counters.unexpectedMessages += 1
        }
    }

    private func beat() {
        let now = nowMs()
        if now - lastBeat >= heartbeatMs {
            lastBeat = now
            control.send(.heartbeat(epoch: coordinatorEpoch, sequence: now))
        }
        // Without credits, keep asking: the head may have restarted or not be up yet.
        if let data, credits == 0, now - lastHeadHello >= heartbeatMs {
            lastHeadHello = now
            data.send(.hello(workerID: options.workerID, host: ProcessInfo.processInfo.hostName, pid: UInt32(getpid()), capabilities: [:]))
        }
    }
}

/// Set by SIGTERM: the worker finishes its shard and exits instead of asking for another.
final class DrainFlag: @unchecked Sendable {
    private var source: DispatchSourceSignal?
    private let lock = NSLock()
    private var set = false

    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return set
    }

    func install() {
        signal(SIGTERM, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        source.setEventHandler { [weak self] in
            guard let self else { return }
            self.lock.lock()
            self.set = true
            self.lock.unlock()
        }
        source.resume()
        self.source = source
    }
}
