import Coordination
import Foundation
import ImageInput
import RoleMetrics
import Transport
import WireProtocol

/// Where a job's items come from; the coordinator and every worker open the same dataset.
public struct DatasetSelection: Sendable {
    public var path: String
    public var format: DatasetFormat?
    /// Only items of this split (train/val), when set.
    public var split: String?
    /// Only the first this-many items (after the split filter), when set.
    public var limit: Int?

    public init(path: String, format: DatasetFormat? = nil, split: String? = nil, limit: Int? = nil) {
        self.path = path
        self.format = format
        self.split = split
        self.limit = limit
    }

    /// Opens the dataset and applies the split and limit, in the dataset's deterministic order.
    public func open() throws -> (DatasetIndex, [DatasetItem]) {
        let dataset = try DatasetIndex.open(path: path, format: format)
        var items = dataset.items
        if let split {
            items = items.filter { $0.split == split }
            guard !items.isEmpty else { throw DatasetError(reason: "no items in split '\(split)' of \(path)") }
        }
        if let limit { items = Array(items.prefix(limit)) }
        return (dataset, items)
    }
}

/// Settings of the coordinator role.
public struct CoordinatorOptions: Sendable {
    /// `tcp://host:port` to bind the control socket.
    public var bind: String
    /// The head's data address, as workers should connect to it.
    public var headAddress: String
    public var dataset: DatasetSelection
    public var shardSize = 64
    /// Append-only journal of committed shards; a restarted coordinator resumes from it.
    public var journalPath: String
    public var heartbeatMs: UInt64 = 500
    public var deadAfterBeats: UInt64 = 10
    public var leaseMs: UInt64 = 30_000
    public var commitWaitMs: UInt64 = 30_000
    public var stallMs: UInt64 = 60_000
    /// Serve Prometheus metrics on this port (0: any free port); `nil`: no metrics.
    public var metricsPort: Int?
    /// CurveZMQ server keys and the allow-list of client keys (workers' and the head's), or none.
    public var security: ZMQSecurity = .none

    public init(bind: String, headAddress: String, dataset: DatasetSelection, journalPath: String) {
        self.bind = bind
        self.headAddress = headAddress
        self.dataset = dataset
        self.journalPath = journalPath
    }
}

/// The coordinator: cuts the dataset into shards, leases them to workers, records the head's commits,
/// and ends the job when every shard is committed. A thin ZeroMQ shell around `LeaseTable`.
public final class CoordinatorService {
    let options: CoordinatorOptions
    let log = RoleLog(role: "coordinator")
    let epoch = newEpoch()
    private var table: LeaseTable
    private let journal: CoordinatorJournal
    private let socket: MessageSocket
    private let context = ZMQContext()
    private let shardCount: Int
    private var workers: [[UInt8]: String] = [:]
    private var head: [UInt8]?
    private var lastBeat: UInt64 = 0
    private let progress: ProgressReport
    /// Prometheus metrics; `metrics.endpoint?.port` is where they are served.
    public let metrics: RoleMetricsRegistry
    private var workerStats: [String: WorkerStats] = [:]

    private struct WorkerStats {
        var host: String
        var lastSeen: UInt64
        var firstSeen: UInt64
        var images = 0
        var shard: Int = -1
    }

    /// Builds the shard plan, replays the journal and binds the control socket.
    public init(options: CoordinatorOptions) throws {
        self.options = options
        let (_, items) = try options.dataset.open()
        let refs = items.map { ItemRef(index: UInt64($0.index), key: $0.key, label: Int32($0.label ?? -1)) }
        let shards = ShardPlan.cut(refs, shardSize: options.shardSize)
        shardCount = shards.count
        journal = try CoordinatorJournal.open(
            path: options.journalPath, fingerprint: ShardPlan.fingerprint(shards, shardSize: options.shardSize),
            shardCount: shards.count, shardSize: options.shardSize)
        let settings = LeaseSettings(
            leaseMs: options.leaseMs, commitWaitMs: options.commitWaitMs,
            workerDeadAfterMs: options.heartbeatMs * options.deadAfterBeats, maxAttemptsInFlight: 2,
            stallAfterMs: options.stallMs)
        // Attempt numbers never repeat across restarts, so a head never mixes two incarnations' attempts.
        table = LeaseTable(shards: shards, settings: settings, committed: journal.committed,
                           firstAttempt: journal.attemptsReservedThrough + 1)
        let router = try ZMQSocket(context, .router, highWaterMark: 1000, security: options.security)
        router.authenticator?.onDenied = { [log] denial in log.event("CURVE \(denial)") }
        try router.bind(options.bind)
        if options.security.isCurve { log.event("security: \(options.security)") }
        socket = MessageSocket(router, log: log, accepting: .coordinatorControl)
        progress = ProgressReport(total: items.count)
        metrics = try RoleMetricsRegistry(role: "coordinator", port: options.metricsPort)
        metrics.gauge(MetricName.shardsTotal).set(Double(shards.count))
        socket.onReject = { [metrics] in metrics.rejected($0) }
        if let port = metrics.endpoint?.port { log.event("metrics on port \(port)") }
        log.event("\(items.count) items in \(shards.count) shards of \(options.shardSize); \(journal.committed.count) already committed (journal \(options.journalPath)); listening on \(options.bind)")
    }

    /// Serves until every shard is committed, then tells every peer to shut down.
    public func run() throws -> WireCounters {
        var finishedAt: UInt64?
        while true {
            let now = nowMs()
            if try waitForInput([socket.socket], timeoutMs: 50)[0] {
                while let (identity, message) = socket.receive() { handle(message, from: identity!, now: now) }
            }
            for event in table.tick(now: now) {
                log.event("\(event)")
                if case .reassigned = event { metrics.counter(MetricName.shardsReassigned).increment() }
            }
            if now - lastBeat >= options.heartbeatMs {
                lastBeat = now
                publishWorkerMetrics(now: now)
                for identity in Array(workers.keys) + (head.map { [$0] } ?? []) {
                    socket.send(.heartbeat(epoch: epoch, sequence: now), to: identity)
                }
            }
            if table.isComplete {
                if finishedAt == nil {
                    finishedAt = now
                    log.event("all \(shardCount) shards committed; shutting the job down")
                }
                for identity in Array(workers.keys) + (head.map { [$0] } ?? []) {
                    socket.send(.shutdown(reason: "job complete"), to: identity)
                }
                // Linger briefly so every peer hears the shutdown (they also learn it on their next request).
                if now - finishedAt! > 2 * options.heartbeatMs { return socket.counters }
            }
        }
    }

    private func handle(_ message: Message, from identity: [UInt8], now: UInt64) {
        switch message {
        case let .hello(workerID, host, pid, _):
            if workers[identity] == nil { log.event("worker \(workerID) joined from \(host) (pid \(pid))") }
            workerStats[workerID, default: WorkerStats(host: host, lastSeen: now, firstSeen: now)].host = host
            workers[identity] = workerID
            table.hello(worker: workerID, now: now)
            socket.send(.welcome(epoch: epoch, headAddress: options.headAddress,
                                 heartbeatIntervalMs: UInt32(options.heartbeatMs), deadAfterBeats: UInt32(options.deadAfterBeats)),
                        to: identity)
        case .heartbeat:
            if let worker = workers[identity] {
                table.heartbeat(worker: worker, now: now)
                workerStats[worker]?.lastSeen = now
            }
        case .shardRequest(let workerID):
            workers[identity] = workerID
            if table.nextAttempt > journal.attemptsReservedThrough {
                do { try journal.reserveAttempts(through: table.nextAttempt + 1023) } catch {
                    log.event("cannot journal attempt numbers: \(error); stopping")
                    exit(1)
                }
            }
            switch table.request(worker: workerID, now: now) {
            case let .assign(shardID, attempt, items, leaseMs):
                log.event("leased shard \(shardID) attempt \(attempt) to \(workerID)")
                metrics.counter(MetricName.shardsLeased).increment()
                workerStats[workerID]?.shard = Int(shardID)
                socket.send(.assignment(shardID: shardID, attempt: attempt, leaseMs: leaseMs, items: items), to: identity)
            case .noWork(let retry):
                socket.send(.noWork(retryAfterMs: retry), to: identity)
            case .finished:
                socket.send(.shutdown(reason: "job complete"), to: identity)
            }
        case let .shardDone(shardID, attempt, items, deadLetters):
            if let worker = workers[identity] {
                table.shardDone(worker: worker, shardID: shardID, attempt: attempt, now: now)
                workerStats[worker]?.images += Int(items) + Int(deadLetters)
                workerStats[worker]?.shard = -1
            }
        case let .shardFailed(shardID, attempt, reason):
            if let worker = workers[identity] {
                log.event("worker \(worker) gave up shard \(shardID) attempt \(attempt): \(reason)")
                table.shardFailed(worker: worker, shardID: shardID, attempt: attempt, now: now)
            }
        case let .headHello(_, committed):
            head = identity
            log.event("head connected with \(committed.count) committed shards")
            for shardID in committed { record(shardID: shardID, attempt: 0, items: 0, now: now) }
        case let .shardCommitted(shardID, attempt, items, deadLetters):
            head = identity
            record(shardID: shardID, attempt: attempt, items: Int(items) + Int(deadLetters), now: now)
        default:
            socket.counters.unexpectedMessages += 1
        }
    }

    private func publishWorkerMetrics(now: UInt64) {
        let state = table.progress
        let fraction = state.total > 0 ? Double(state.committed) / Double(state.total) : 1
        metrics.gauge(MetricName.progress).set(fraction)
        metrics.gauge(MetricName.eta).set(progress.eta ?? -1)
        for (worker, stats) in workerStats {
            let labels = [("worker", worker), ("host", stats.host)]
            metrics.gauge(MetricName.heartbeatAge, labels).set(Double(now - stats.lastSeen) / 1000)
            metrics.gauge(MetricName.workerShard, labels).set(Double(stats.shard))
            let seconds = Double(now - stats.firstSeen) / 1000
            metrics.gauge(MetricName.workerImagesPerSecond, labels).set(seconds > 0 ? Double(stats.images) / seconds : 0)
        }
    }

    /// Journals a commit before anything acts on it, so a crash never forgets a committed shard.
    private func record(shardID: UInt32, attempt: UInt32, items: Int, now: UInt64) {
        guard Int(shardID) < shardCount else {
            log.event("ignored a commit for unknown shard \(shardID)")
            return
        }
        guard !journal.committed.contains(shardID) else { _ = table.committed(shardID: shardID, attempt: attempt, now: now); return }
        do {
            try journal.append(shardID: shardID, attempt: attempt)
        } catch {
            log.event("cannot journal the commit of shard \(shardID): \(error); stopping")
            exit(1)
        }
        if table.committed(shardID: shardID, attempt: attempt, now: now) {
            progress.committed(items: items, log: log, table: table.progress)
            metrics.counter(MetricName.shardsCommitted).increment()
            metrics.counter(MetricName.images).increment(by: Int64(items))
        }
    }
}

/// Items committed this run, the rate and the ETA: for the coordinator's progress lines and its metrics.
final class ProgressReport {
    let total: Int
    let start = Date()
    private(set) var items = 0
    private var lastPrint = Date.distantPast

    init(total: Int) { self.total = total }

    /// Images per second committed since this coordinator started.
    var rate: Double {
        let elapsed = Date().timeIntervalSince(start)
        return elapsed > 0 ? Double(items) / elapsed : 0
    }

    /// Seconds to go at the current rate; `nil` before anything was committed.
    var eta: Double? { rate > 0 ? Double(max(0, total - items)) / rate : nil }

    func committed(items count: Int, log: RoleLog, table: (committed: Int, leased: Int, pending: Int, total: Int)) {
        items += count
        let now = Date()
        guard now.timeIntervalSince(lastPrint) >= 1 || table.committed == table.total else { return }
        lastPrint = now
        log.event(String(format: "progress %d/%d shards, %d leased, %d pending; %.1f img/s this run, ETA %.0f s",
                         table.committed, table.total, table.leased, table.pending, rate, eta ?? 0))
    }
}
