import ClusterSessions
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
/// and ends the job when every shard is committed. A thin ZeroMQ driver around `CoordinatorSession`.
public final class CoordinatorService {
    let options: CoordinatorOptions
    let log = RoleLog(role: "coordinator")
    private let session: CoordinatorSession
    private let journal: CoordinatorJournal
    private let socket: MessageSocket
    private let context = ZMQContext()
    private let shardCount: Int
    private let progress: ProgressReport
    /// Prometheus metrics; `metrics.endpoint?.port` is where they are served.
    public let metrics: RoleMetricsRegistry
    private var workerStats: [String: WorkerStats] = [:]
    private var lastMetricsAt: UInt64 = 0

    private struct WorkerStats {
        var host: String
        var firstSeen: UInt64
        var images = 0
        var shard: Int = -1
    }

    /// Builds the shard plan, replays the journal and binds the control socket.
    public init(options: CoordinatorOptions) throws {
        self.options = options
        let (_, items) = try options.dataset.open()
        let refs = items.map { ItemRef(index: UInt64($0.index), key: $0.key, label: Int32($0.label ?? -1)) }
        let plan = ShardPlan(items: refs, shardSize: options.shardSize)
        shardCount = plan.shards.count
        journal = try CoordinatorJournal.open(path: options.journalPath, plan: plan)
        let settings = CoordinatorSessionSettings(
            lease: LeaseSettings(leaseMs: options.leaseMs, commitWaitMs: options.commitWaitMs,
                                 workerDeadAfterMs: options.heartbeatMs * options.deadAfterBeats, maxAttemptsInFlight: 2,
                                 stallAfterMs: options.stallMs),
            heartbeatMs: options.heartbeatMs, deadAfterBeats: options.deadAfterBeats, headAddress: options.headAddress)
        session = CoordinatorSession(epoch: newEpoch(), shards: plan.shards, settings: settings, journal: journal)
        let router = try ZMQSocket(context, .router, highWaterMark: 1000, security: options.security)
        try router.bind(options.bind)
        if options.security.isCurve { log.event("security: \(options.security)") }
        socket = MessageSocket(router, log: log, accepting: .coordinatorControl)
        progress = ProgressReport(total: items.count)
        metrics = try RoleMetricsRegistry(role: "coordinator", port: options.metricsPort)
        metrics.gauge(MetricName.shardsTotal).set(Double(plan.shards.count))
        socket.onReject = { [metrics] in metrics.rejected($0) }
        if let port = metrics.endpoint?.port { log.event("metrics on port \(port)") }
        log.event("\(items.count) items in \(plan.shards.count) shards of \(options.shardSize); \(journal.committed.count) already "
            + "committed (journal \(options.journalPath)); listening on \(options.bind)")
    }

    /// Serves until every shard is committed and the peers were told, then returns.
    public func run() throws -> WireCounters {
        while true {
            if try waitForInput([socket.socket], timeoutMs: 50)[0] {
                while let (identity, message) = socket.receive() {
                    let outputs: [CoordinatorOutput]
                    do { outputs = try session.receive(message, from: identity!, now: nowMs()) } catch {
                        // What the journal holds is unknown now; a restarted coordinator replays it.
                        log.event("cannot write the journal: \(error); stopping")
                        throw error
                    }
                    if perform(outputs) { return socket.counters }
                }
            }
            let now = nowMs()
            if perform(session.tick(now: now)) { return socket.counters }
            if now - lastMetricsAt >= options.heartbeatMs {
                lastMetricsAt = now
                publishWorkerMetrics(now: now)
            }
        }
    }

    /// Sends the session's messages and reports its events; true once the job is over.
    private func perform(_ outputs: [CoordinatorOutput]) -> Bool {
        var over = false
        for output in outputs {
            switch output {
            case let .send(identity, message):
                socket.send(message, to: identity)
            case let .workerJoined(name, host, pid):
                log.event("worker \(name) joined from \(host) (pid \(pid))")
                workerStats[name, default: WorkerStats(host: host, firstSeen: nowMs())].host = host
            case let .leased(shardID, attempt, worker):
                log.event("leased shard \(shardID) attempt \(attempt) to \(worker)")
                metrics.counter(MetricName.shardsLeased).increment()
                workerStats[worker]?.shard = Int(shardID)
            case let .workerFinishedShard(worker, items):
                workerStats[worker]?.images += items
                workerStats[worker]?.shard = -1
            case let .committed(_, items):
                progress.committed(items: items, log: log, table: session.table.progress)
                metrics.counter(MetricName.shardsCommitted).increment()
                metrics.counter(MetricName.images).increment(by: Int64(items))
            case .event(let event):
                report(event)
            case .finished:
                over = true
            }
        }
        return over
    }

    private func report(_ event: LeaseEvent) {
        switch event {
        case let .reassigned(shardID, attempt, worker, reason):
            log.event("shard \(shardID) goes back to the queue: attempt \(attempt) on \(worker) was revoked (\(reason.rawValue))")
            metrics.counter(MetricName.shardsReassigned).increment()
            workerStats[worker]?.shard = -1
        case let .superseded(shardID, attempt, worker):
            log.event("shard \(shardID) was committed by another attempt; attempt \(attempt) on \(worker) is redundant")
        case .workerDead(let worker):
            log.event("worker \(worker) has been silent too long and is considered dead; its leases are revoked")
        case .committed(let shardID, _):
            for (name, stats) in workerStats where stats.shard == Int(shardID) { workerStats[name]?.shard = -1 }
        case .stall(let report):
            log.event("stalled: \(report.description)")
        case .finished:
            log.event("all \(shardCount) shards committed; telling every peer to shut down")
        }
    }

    private func publishWorkerMetrics(now: UInt64) {
        let state = session.table.progress
        let fraction = state.total > 0 ? Double(state.committed) / Double(state.total) : 1
        metrics.gauge(MetricName.progress).set(fraction)
        metrics.gauge(MetricName.eta).set(progress.eta ?? -1)
        let lastSeen = Dictionary(session.workerLastSeen.map { ($0.name, $0.lastSeen) }, uniquingKeysWith: max)
        // Names the session no longer tracks go too, so a flood of hellos cannot grow this table.
        workerStats = workerStats.filter { lastSeen[$0.key] != nil }
        for (worker, stats) in workerStats {
            let labels = [("worker", worker), ("host", stats.host)]
            if let seen = lastSeen[worker] { metrics.gauge(MetricName.heartbeatAge, labels).set(Double(now - min(seen, now)) / 1000) }
            metrics.gauge(MetricName.workerShard, labels).set(Double(stats.shard))
            let seconds = Double(now - stats.firstSeen) / 1000
            metrics.gauge(MetricName.workerImagesPerSecond, labels).set(seconds > 0 ? Double(stats.images) / seconds : 0)
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
