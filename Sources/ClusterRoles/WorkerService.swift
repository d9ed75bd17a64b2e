import Backbone
import ClusterSessions
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
    /// Overrides the model config's precision (int8 reads its calibration); `nil` keeps the config's.
    public var precision: Precision?
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

/// The worker: pulls shard leases, extracts features (decode overlapping the backbone) on a thread of its
/// own, and streams compressed batches to the head within its credits. A thin ZeroMQ driver around
/// `WorkerSession`, which keeps heartbeating both peers however long a shard takes.
///
/// Unchecked `Sendable`: the extraction thread touches only the extractor, the dataset, the (thread-safe)
/// metrics and `imagesDone`, which the socket loop reads only after that thread has ended.
public final class WorkerService: @unchecked Sendable {
    let options: WorkerOptions
    let log: RoleLog
    private let context = ZMQContext()
    private let control: MessageSocket
    private var data: MessageSocket?
    private let extractor: FeatureExtractor
    private let dataset: DatasetIndex
    private var session: WorkerSession
    private var job: ExtractionJob?
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
        extractor = try FeatureExtractor(config: config, batchSize: options.batch, threads: options.threads, precision: options.precision)
        (dataset, _) = try options.dataset.open()
        let dealer = try ZMQSocket(context, .dealer, highWaterMark: 16, security: options.controlSecurity)
        try dealer.connect(options.coordinator)
        control = MessageSocket(dealer, log: log, accepting: .workerControl)
        try extractor.engine.warmUp()
        metrics = try RoleMetricsRegistry(role: "worker", port: options.metricsPort)
        control.onReject = { [metrics] in metrics.rejected($0) }
        if let port = metrics.endpoint?.port { log.event("metrics on port \(port)") }
        session = WorkerSession(workerID: options.workerID, host: ProcessInfo.processInfo.hostName, pid: UInt32(getpid()),
                                capabilities: ["model": config.name, "batch": String(options.batch)])
        draining.install()
    }

    /// Works until the coordinator says the job is complete, or until SIGTERM (which gives the current shard
    /// back at once, whether or not the coordinator is there to hear it).
    public func run() throws -> WireCounters {
        try dispatch(session.start(now: nowMs()))
        while !session.isStopped {
            if draining.isSet { try dispatch(session.terminate(now: nowMs())); break }
            var sockets = [control.socket]
            if let data { sockets.append(data.socket) }
            let ready = try waitForInput(sockets, timeoutMs: job?.hasOutput == true ? 0 : 10)
            if ready[0] { while !session.isStopped, let (_, message) = control.receive() { try dispatch(session.receiveControl(message, now: nowMs())) } }
            if ready.count > 1, ready[1], let data {
                while !session.isStopped, let (_, message) = data.receive() { try dispatch(session.receiveData(message, now: nowMs())) }
            }
            try collectExtraction()
            try dispatch(session.tick(now: nowMs()))
        }
        job?.cancelAndWait()
        if imagesDone > 0 {
            log.event(String(format: "extracted %d images in %.2f s on shards: %.1f img/s; %.2f MB of features sent (%.2fx smaller than f32)",
                             imagesDone, shardSeconds, Double(imagesDone) / shardSeconds, Double(sentPayload) / 1e6,
                             Double(sentRaw) / Double(max(sentPayload, 1))))
        }
        var counters = control.counters
        if let data { counters.rejectedFrames.merge(data.counters.rejectedFrames, uniquingKeysWith: +) }
        return counters
    }

    /// Moves what the extraction thread produced into the session, as far as the credits allow.
    private func collectExtraction() throws {
        guard let job else { return }
        while session.wantsMoreBatches, let batch = job.take() {
            try dispatch(session.batchReady(batch, now: nowMs()))
        }
        guard let end = job.end, !job.hasOutput else { return }
        self.job = nil
        shardSeconds += Date().timeIntervalSince(job.started)
        switch end {
        case .finished:
            try dispatch(session.extractionFinished(shardID: job.shardID, attempt: job.attempt, now: nowMs()))
        case .failed(let reason):
            log.event("gave up shard \(job.shardID) attempt \(job.attempt): \(reason)")
            try dispatch(session.extractionFailed(shardID: job.shardID, attempt: job.attempt, reason: reason, now: nowMs()))
        case .cancelled:
            break
        }
    }

    private func dispatch(_ outputs: [WorkerOutput]) throws {
        for output in outputs {
            switch output {
            case .toCoordinator(let message):
                control.send(message)
            case .toHead(let message):
                guard let data else { continue }
                data.send(message)
                if case .featureBatch(let batch) = message {
                    sentPayload += batch.payload.count
                    sentRaw += Int(batch.rawLength) * (batch.dtype == .f16 ? 2 : 1)
                    metrics.counter(MetricName.wireBytes, [("direction", "out")]).increment(by: Int64(batch.payload.count))
                    metrics.gauge(MetricName.creditsAvailable, [("worker", options.workerID)])
                        .set(Double(session.creditLimit) - Double(session.batchesSent))
                }
            case .effect(.connectHead(let address)):
                let dealer = try ZMQSocket(context, .dealer, highWaterMark: 8, security: options.dataSecurity)
                try dealer.connect(address)
                data = MessageSocket(dealer, log: log, accepting: .workerData)
                data?.onReject = { [metrics] in metrics.rejected($0) }
                log.event("welcomed; streaming to \(address)")
            case let .effect(.extract(shardID, attempt, items)):
                job?.cancelAndWait()
                job = ExtractionJob(shardID: shardID, attempt: attempt, refs: items, worker: self)
            case .effect(.cancelExtraction):
                job?.cancelAndWait()
                job = nil
            case .effect(.stop(let reason)):
                log.event(reason == "SIGTERM" ? "drained after SIGTERM: the current shard, if any, was given back" : "stopping: \(reason)")
            }
        }
    }

    /// The items of an assignment in this worker's dataset, or why they are not there.
    fileprivate func resolve(_ refs: [ItemRef]) -> Result<[DatasetItem], ExtractionJob.Failure> {
        var items: [DatasetItem] = []
        items.reserveCapacity(refs.count)
        for ref in refs {
            guard ref.index < UInt64(dataset.items.count), dataset.items[Int(ref.index)].key == ref.key else {
                return .failure(.init(reason: "item \(ref.index) '\(ref.key)' is not in this worker's dataset \(options.dataset.path)"))
            }
            items.append(dataset.items[Int(ref.index)])
        }
        return .success(items)
    }

    /// Extracts one shard attempt and encodes its batches (runs on the extraction thread).
    fileprivate func extract(_ items: [DatasetItem], shardID: UInt32, attempt: UInt32, emit: (FeatureBatch) throws -> Void) throws {
        var next = 0
        try extractor.extract(items, from: dataset, decodeThreads: options.decodeThreads) { batch in
            // Each extracted batch covers the next items in order: rows for those that decoded, dead letters
            // for the rest. Offsets come from positions, so an item listed twice is two items.
            let count = batch.items.count + batch.deadLetters.count
            let range = next..<(next + count)
            next += count
            var offsets: [UInt32] = [], dead: [DeadLetterEntry] = []
            var rows = batch.items.makeIterator(), row = rows.next()
            var letters = batch.deadLetters.makeIterator()
            for offset in range {
                if let current = row, current.index == items[offset].index {
                    offsets.append(UInt32(offset))
                    row = rows.next()
                } else if let letter = letters.next() {
                    dead.append(DeadLetterEntry(offset: UInt32(offset), key: items[offset].key, reason: letter.reason))
                }
            }
            let (payload, rawLength) = batch.features.withUnsafeBufferPointer {
                FeatureCodec.encode($0, dtype: options.dtype, codec: options.codec)
            }
            try emit(FeatureBatch(
                shardID: shardID, attempt: attempt, shardItemCount: UInt32(items.count), offsets: offsets,
                indexes: batch.items.map { UInt64($0.index) }, labels: batch.items.map { Int32($0.label ?? -1) },
                keys: batch.items.map(\.key), deadLetters: dead, dtype: options.dtype, dimension: UInt32(extractor.featureWidth),
                codec: options.codec, rawLength: UInt32(rawLength), payload: payload))
            metrics.counter(MetricName.images, [("worker", options.workerID)]).increment(by: Int64(count))
            metrics.counter(MetricName.deadLetters, [("worker", options.workerID)]).increment(by: Int64(dead.count))
            imagesDone += count
        }
    }
}

/// One shard attempt extracted on a thread beside the worker's socket loop, handing encoded batches over
/// through a queue of two (so extraction never runs far ahead of the head's credits).
final class ExtractionJob: @unchecked Sendable {
    struct Failure: Error { var reason: String }
    enum End { case finished, failed(String), cancelled }
    struct Cancelled: Error {}

    let shardID: UInt32
    let attempt: UInt32
    let started = Date()
    private let condition = NSCondition()
    private var queue: [FeatureBatch] = []
    private var ended: End?
    private var cancelled = false
    private var thread: Thread?

    init(shardID: UInt32, attempt: UInt32, refs: [ItemRef], worker: WorkerService) {
        self.shardID = shardID
        self.attempt = attempt
        let thread = Thread { [self] in
            let end: End
            switch worker.resolve(refs) {
            case .failure(let failure):
                end = .failed(failure.reason)
            case .success(let items):
                do {
                    try worker.extract(items, shardID: shardID, attempt: attempt) { try self.put($0) }
                    end = .finished
                } catch is Cancelled {
                    end = .cancelled
                } catch {
                    end = .failed("extraction failed: \(error)")
                }
            }
            condition.lock()
            ended = end
            condition.broadcast()
            condition.unlock()
        }
        thread.name = "extract"
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    /// Whether batches wait to be taken.
    var hasOutput: Bool {
        condition.lock()
        defer { condition.unlock() }
        return !queue.isEmpty
    }

    /// How the extraction ended, once it has.
    var end: End? {
        condition.lock()
        defer { condition.unlock() }
        return ended
    }

    /// The oldest waiting batch.
    func take() -> FeatureBatch? {
        condition.lock()
        defer { condition.unlock() }
        guard !queue.isEmpty else { return nil }
        condition.broadcast()
        return queue.removeFirst()
    }

    /// Stops the extraction at its next batch and waits for the thread to end (the extractor's buffers
    /// are shared between jobs).
    func cancelAndWait() {
        condition.lock()
        cancelled = true
        queue = []
        condition.broadcast()
        while ended == nil { condition.wait() }
        condition.unlock()
    }

    private func put(_ batch: FeatureBatch) throws {
        condition.lock()
        defer { condition.unlock() }
        while queue.count >= 2 && !cancelled { condition.wait() }
        if cancelled { throw Cancelled() }
        queue.append(batch)
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
