import Backbone
import ClusterSessions
import DatasetIndex
import Dispatch
import Extraction
import FeatureCodec
import Foundation
import RoleMetrics
import Transport
import WireProtocol

/// Settings of the worker role.
public struct WorkerOptions: Sendable {
    /// The coordinator's control address.
    public var coordinator: String
    /// Model folder, config or .onnx.
    public var model: String
    public var batch = 16
    public var threads: Int?
    public var decodeThreads = 1
    public var dtype: FeatureDType = .f16
    /// Overrides the model config's precision (int8 reads its calibration); `nil` keeps the config's.
    public var precision: Precision?
    public var codec: CodecID = .shuffleLZ4
    public var workerID: String
    /// Serve Prometheus metrics on this port (0: any free port); `nil`: no metrics.
    public var metricsPort: Int?
    /// Where this host sees the dataset, when not at the coordinator's path: locator paths under `from`
    /// are read under `to` instead (`--path-map FROM=TO`).
    public var pathMap: PathMap?
    /// Seconds the extraction may hand over no batch (while the head's credits let it) before the worker
    /// gives the shard up as stalled and exits to be restarted (PROTOCOL.md §8.3.7).
    public var stallAfterSeconds = WorkerOptions.defaultStallAfterSeconds
    /// CurveZMQ client settings for the coordinator and for the head.
    public var controlSecurity: ZMQSecurity = .none
    public var dataSecurity: ZMQSecurity = .none

    /// Long enough for a batch of very large images on a slow host; a hung input costs this much per loss.
    public static let defaultStallAfterSeconds = 300

    public init(coordinator: String, model: String, workerID: String) {
        self.coordinator = coordinator
        self.model = model
        self.workerID = workerID
    }
}

/// A dataset mounted at another path on this host than on the coordinator's.
public struct PathMap: Equatable, Sendable {
    /// The coordinator's folder (no trailing slash).
    public var from: String
    /// The same folder on this host.
    public var to: String

    /// Parses `FROM=TO` (both absolute).
    public init?(_ text: String) {
        let parts = text.split(separator: "=", maxSplits: 1).map { String($0) }
        guard parts.count == 2, parts[0].hasPrefix("/"), parts[1].hasPrefix("/") else { return nil }
        from = parts[0].count > 1 && parts[0].hasSuffix("/") ? String(parts[0].dropLast()) : parts[0]
        to = parts[1].count > 1 && parts[1].hasSuffix("/") ? String(parts[1].dropLast()) : parts[1]
    }

    /// `path` with its leading `from` folder replaced by `to`; other paths unchanged.
    public func apply(_ path: String) -> String {
        if path == from { return to }
        guard path.hasPrefix(from + "/") else { return path }
        return to + path.dropFirst(from.count)
    }
}

/// The worker: pulls shard leases, extracts features (decode beside or between backbone runs) on a thread of its
/// own, and streams compressed batches to the head within its credits. A thin ZeroMQ driver around
/// `WorkerSession`, which keeps heartbeating both peers however long a shard takes.
///
/// A worker never opens or indexes the dataset: each assignment carries its items' locators (a file, or a
/// member of a tar), so its memory does not depend on the corpus size.
///
/// When an input hangs the extraction (the session's stall watchdog), `run` throws `WorkerStalled` without
/// waiting for the stuck thread: the process must exit and be restarted (`featstream run` restarts it).
///
/// Unchecked `Sendable`: the extraction thread touches only the extractor, the (thread-safe)
/// metrics and `imagesDone`, which the socket loop reads only after that thread has ended.
public final class WorkerService: @unchecked Sendable {
    let options: WorkerOptions
    let log: RoleLog
    private let context = ZMQContext()
    private let control: MessageSocket
    private var data: MessageSocket?
    private let extractor: FeatureExtractor
    private var session: WorkerSession
    private var job: ExtractionJob?
    private let extractionThread = ExtractionThread()
    /// Signalled by the extraction when it hands over a batch or ends, so the loop sends it at once.
    private let extractionWakeup: Wakeup
    private let draining = DrainFlag()
    private var stalled: String?
    /// Prometheus metrics; `metrics.endpoint?.port` is where they are served.
    public let metrics: RoleMetricsRegistry
    /// Bytes of feature payload sent, and the raw bytes they stand for.
    public private(set) var sentPayload = 0
    public private(set) var sentRaw = 0
    /// Images (features and dead letters) extracted, and the wall time spent on shards.
    public private(set) var imagesDone = 0
    public private(set) var shardSeconds = 0.0

    /// Loads the model and connects to the coordinator.
    public init(options: WorkerOptions) throws {
        self.options = options
        log = RoleLog(role: "worker \(options.workerID)")
        let config = try ModelConfig.load(options.model)
        // The engine is built and warmed up on the thread that will run it (see `ExtractionThread`).
        extractor = try extractionThread.run {
            let extractor = try FeatureExtractor(config: config, batchSize: options.batch, threads: options.threads,
                                                 precision: options.precision)
            try extractor.engine.warmUp()
            return extractor
        }
        extractionWakeup = try Wakeup()
        let dealer = try ZMQSocket(context, .dealer, highWaterMark: 16, security: options.controlSecurity)
        try dealer.connect(options.coordinator)
        control = MessageSocket(dealer, log: log, accepting: .workerControl)
        metrics = try RoleMetricsRegistry(role: "worker", port: options.metricsPort)
        control.onReject = { [metrics] in metrics.rejected($0) }
        if let port = metrics.endpoint?.port { log.event("metrics on port \(port)") }
        session = WorkerSession(workerID: options.workerID, host: ProcessInfo.processInfo.hostName, pid: UInt32(getpid()),
                                incarnation: UInt64.random(in: 0...UInt64.max),
                                capabilities: ["model": config.name, "batch": String(options.batch)],
                                stallLimitMs: UInt64(max(options.stallAfterSeconds, 1)) * 1000)
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
            let ready = try waitForInput(sockets, wakeup: extractionWakeup, timeoutMs: job?.hasOutput == true ? 0 : 10)
            if ready[0] { while !session.isStopped, let (_, message) = control.receive() { try dispatch(session.receiveControl(message, now: nowMs())) } }
            if ready.count > 1, ready[1], let data {
                while !session.isStopped, let (_, message) = data.receive() { try dispatch(session.receiveData(message, now: nowMs())) }
            }
            try collectExtraction()
            try dispatch(session.tick(now: nowMs()))
        }
        // A stuck extraction thread cannot be joined: leave it to the process's exit.
        if let stalled { throw WorkerStalled(reason: stalled) }
        if job?.cancelAndWait(deadline: Date().addingTimeInterval(5)) == false {
            log.event("the extraction thread did not stop within 5 s (stuck in an input?); exiting without it")
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
                job = ExtractionJob(shardID: shardID, attempt: attempt, refs: items, worker: self, on: extractionThread,
                                    wakeup: extractionWakeup)
            case .effect(.cancelExtraction):
                // Only a stopping worker cancels; it must stop even if the thread is stuck in an input.
                job?.cancelAndWait(deadline: Date().addingTimeInterval(5))
                job = nil
            case .effect(.stop(let reason)):
                log.event(reason == "SIGTERM" ? "drained after SIGTERM: the current shard, if any, was given back" : "stopping: \(reason)")
            case .effect(.abort(let reason)):
                stalled = reason
            }
        }
    }

    /// Extracts one shard attempt and encodes its batches (runs on the extraction thread). Inputs the
    /// coordinator's scan rejected go first, as one batch of dead letters; the rest are decoded from their
    /// locators in order. Offsets are positions in the assignment, so every entry is answered once.
    fileprivate func extract(_ refs: [ItemRef], shardID: UInt32, attempt: UInt32, emit: (FeatureBatch) throws -> Void) throws {
        func batch(offsets: [UInt32], rows: [Int], deadLetters: [DeadLetterEntry], features: [Float]) -> FeatureBatch {
            let (payload, rawLength) = features.withUnsafeBufferPointer {
                FeatureCodec.encode($0, dtype: options.dtype, codec: options.codec)
            }
            return FeatureBatch(
                shardID: shardID, attempt: attempt, shardItemCount: UInt32(refs.count), offsets: offsets,
                indexes: rows.map { refs[$0].index }, labels: rows.map { refs[$0].label }, keys: rows.map { refs[$0].key },
                deadLetters: deadLetters, dtype: options.dtype, dimension: UInt32(extractor.featureWidth),
                codec: options.codec, rawLength: UInt32(rawLength), payload: payload)
        }
        var rejected: [DeadLetterEntry] = []
        var decodable: [IndexedItem] = []
        for (offset, ref) in refs.enumerated() {
            let locator: ItemLocator
            switch ref.locator {
            case .rejected(let reason):
                rejected.append(DeadLetterEntry(offset: UInt32(offset), key: ref.key, reason: reason))
                continue
            case .file(let path):
                locator = .file(path: options.pathMap?.apply(path) ?? path)
            case let .tarMember(path, offset, size):
                locator = .tarMember(path: options.pathMap?.apply(path) ?? path, offset: offset, size: size)
            }
            // The item's position is its offset in the assignment: unique even when a key repeats.
            decodable.append(IndexedItem(position: UInt64(offset), key: ref.key, label: ref.label, locator: locator))
        }
        try checkDatasetVisible(decodable.first)
        if !rejected.isEmpty {
            try emit(batch(offsets: [], rows: [], deadLetters: rejected, features: []))
            count(images: rejected.count, deadLetters: rejected.count)
        }
        var next = 0
        try extractor.extract(decodable, decodeThreads: options.decodeThreads) { extracted in
            // Each extracted batch covers the next decodable items in order: rows for those that decoded,
            // dead letters (in order) for the rest.
            let covered = decodable[next..<(next + extracted.items.count + extracted.deadLetters.count)]
            next = covered.endIndex
            var rows = extracted.items.makeIterator(), row = rows.next()
            var letters = extracted.deadLetters.makeIterator()
            var offsets: [UInt32] = [], dead: [DeadLetterEntry] = []
            for item in covered {
                if let current = row, current.position == item.position {
                    offsets.append(UInt32(item.position))
                    row = rows.next()
                } else if let letter = letters.next() {
                    dead.append(DeadLetterEntry(offset: UInt32(item.position), key: item.key, reason: letter.reason))
                }
            }
            try emit(batch(offsets: offsets, rows: offsets.map(Int.init), deadLetters: dead, features: extracted.features))
            count(images: covered.count, deadLetters: dead.count)
        }
    }

    /// Fails the shard (it goes back to the queue) when this host cannot see the folder of the shard's
    /// first file or tar at all: the dataset is not mounted at the path the coordinator indexed, and
    /// dead-lettering every item would lose them. A file missing from a folder that is there is a dead
    /// letter like any unreadable input.
    private func checkDatasetVisible(_ item: IndexedItem?) throws {
        let path: String
        switch item?.locator {
        case .file(let file)?: path = file
        case .tarMember(let shard, _, _)?: path = shard
        case .rejected?, nil: return
        }
        let folder = (path as NSString).deletingLastPathComponent
        var info = stat()
        guard stat(folder, &info) == 0 else {
            throw ExtractionJob.Failure(reason: "this host cannot see \(folder) (\(String(cString: strerror(errno)))): is the dataset "
                + "mounted at the path the coordinator indexed?")
        }
    }

    private func count(images: Int, deadLetters: Int) {
        metrics.counter(MetricName.images, [("worker", options.workerID)]).increment(by: Int64(images))
        metrics.counter(MetricName.deadLetters, [("worker", options.workerID)]).increment(by: Int64(deadLetters))
        imagesDone += images
    }
}

/// The extraction hung on an input; the worker process must exit (and be restarted) to get rid of the thread.
public struct WorkerStalled: Error, CustomStringConvertible {
    /// What stalled, for the operator.
    public var reason: String
    public var description: String { "\(reason); exiting so that a fresh process takes over (the shard was given back)" }
}

/// The one thread that runs the worker's extractions, for the life of the process. The backbone's OpenMP
/// team belongs to the thread that calls into it: a new calling thread per shard built a new team (and
/// oneDNN's per-thread scratch space) every shard: 128-item chunks on a new thread each ran about 10% slower.
///
/// Every oneDNN call of the worker, the engine's construction and warm-up included, runs on this one
/// thread: a second calling thread gives libgomp a second thread pool, more threads than cores, and its
/// throttled spin (see `OpenMPWaiting`).
final class ExtractionThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var pending: [() -> Void] = []

    init() {
        let thread = Thread { [condition] in
            while true {
                condition.lock()
                while self.pending.isEmpty { condition.wait() }
                let work = self.pending.removeFirst()
                condition.unlock()
                work()
            }
        }
        thread.name = "extract"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Runs `work` after whatever was submitted before it.
    func submit(_ work: @escaping () -> Void) {
        condition.lock()
        pending.append(work)
        condition.signal()
        condition.unlock()
    }

    /// Runs `work` on the thread after whatever was submitted before it, and returns its result (or
    /// rethrows its error) once it has run.
    func run<Result>(_ work: @escaping () throws -> Result) throws -> Result {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var outcome: Swift.Result<Result, Error>?
        submit {
            outcome = Swift.Result { try work() }
            done.signal()
        }
        done.wait()
        return try outcome!.get()
    }
}

/// One shard attempt extracted on the worker's extraction thread beside its socket loop, handing encoded
/// batches over through a queue of two (so extraction never runs far ahead of the head's credits).
final class ExtractionJob: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible { var reason: String; var description: String { reason } }
    enum End { case finished, failed(String), cancelled }
    struct Cancelled: Error {}

    let shardID: UInt32
    let attempt: UInt32
    let started = Date()
    private let wakeup: Wakeup
    private let condition = NSCondition()
    private var queue: [FeatureBatch] = []
    private var ended: End?
    private var cancelled = false
    init(shardID: UInt32, attempt: UInt32, refs: [ItemRef], worker: WorkerService, on thread: ExtractionThread, wakeup: Wakeup) {
        self.shardID = shardID
        self.attempt = attempt
        self.wakeup = wakeup
        thread.submit { [self] in
            let end: End
            do {
                try worker.extract(refs, shardID: shardID, attempt: attempt) { try self.put($0) }
                end = .finished
            } catch is Cancelled {
                end = .cancelled
            } catch let failure as Failure {
                end = .failed(failure.reason)
            } catch {
                end = .failed("extraction failed: \(error)")
            }
            condition.lock()
            ended = end
            condition.broadcast()
            condition.unlock()
            wakeup.signal()
        }
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
    /// are shared between jobs), or until `deadline`: a thread stuck in an input never ends, and a worker
    /// that is stopping must not wait for it. Returns whether the thread ended.
    @discardableResult
    func cancelAndWait(deadline: Date = .distantFuture) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        cancelled = true
        queue = []
        condition.broadcast()
        while ended == nil { if !condition.wait(until: deadline) { break } }
        return ended != nil
    }

    private func put(_ batch: FeatureBatch) throws {
        condition.lock()
        defer { condition.unlock() }
        while queue.count >= 2 && !cancelled { condition.wait() }
        if cancelled { throw Cancelled() }
        queue.append(batch)
        wakeup.signal()
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
