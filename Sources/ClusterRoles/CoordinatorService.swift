import ClusterSessions
import Coordination
import DatasetIndex
import FeatureStore
import Foundation
import RoleMetrics
import Transport
import WireProtocol

/// Where a job's items come from: the dataset the coordinator indexes (workers never open it; their
/// assignments carry each item's locator).
public struct DatasetSelection: Sendable {
    /// Image folder, manifest file, tar shard or folder of tar shards.
    public var path: String
    /// The layout; detected from `path` when nil (`DatasetKind.detect`).
    public var format: DatasetKind?
    /// Only items of this split (train/val), when set.
    public var split: String?
    /// Only the first this-many items (after the split filter), when set.
    public var limit: Int?

    /// A selection with the given fields.
    public init(path: String, format: DatasetKind? = nil, split: String? = nil, limit: Int? = nil) {
        self.path = path
        self.format = format
        self.split = split
        self.limit = limit
    }

    /// Why a job with a journal cannot go on over this dataset: it changed since the job indexed it.
    func changedError(_ changes: [String]) -> IndexError {
        IndexError("the dataset \(path) changed since this job indexed it (\(changes.count) change(s): \(changes.prefix(10).joined(separator: "; "))"
            + "\(changes.count > 10 ? "; …" : "")); the job already has a journal, whose shards may name other files now. "
            + "Start a new job (another --out/--journal), or remove the job folder to start over")
    }

    /// The selection as the dataset index names it (INDEX.md §2).
    public var indexSelection: IndexSelection { IndexSelection(path: path, kind: format, split: split, limit: limit) }

    /// The index of this selection at `indexPath`: reused when it was built for this selection and the
    /// dataset has not changed since (INDEX.md §5), else scanned anew, streaming, into `indexPath`.
    /// `hasProgress` says whether the job already has a journal (it may have committed shards of the index
    /// there): a changed dataset is then an error listing the changes (its positions may now name other
    /// files), never silently mixed.
    public func openIndex(at indexPath: String, hasProgress: Bool, log: (String) -> Void) throws -> IndexedDataset {
        switch IndexReuse.check(indexPath: indexPath, selection: indexSelection) {
        case .reusable(let index):
            log("reusing the dataset index \(indexPath) (\(index.count) items, \(index.deadLetterCount) rejected; dataset unchanged)")
            return index
        case let .datasetChanged(_, changes):
            let listed = changes.prefix(10).map(\.description).joined(separator: "; ")
            guard !hasProgress else { throw changedError(changes.map(\.description)) }
            log("the dataset changed since \(indexPath) was built (\(listed)); nothing was committed yet, so it is scanned again")
        case .absent(let reason):
            log("scanning the dataset into \(indexPath) (\(reason))")
        }
        let started = Date()
        let index = try IndexScan.run(indexSelection, indexPath: indexPath)
        log(String(format: "indexed %d items (%d rejected, %d outside the selection) in %.1f s", index.count, index.deadLetterCount,
                   index.skippedCount, Date().timeIntervalSince(started)))
        return index
    }
}

/// Settings of the coordinator role.
public struct CoordinatorOptions: Sendable {
    /// `tcp://host:port` to bind the control socket.
    public var bind: String
    /// The head's data address, as workers should connect to it.
    public var headAddress: String
    public var dataset: DatasetSelection
    public var shardSize = CoordinatorOptions.defaultShardSize
    /// Items per shard unless told otherwise: small enough that a lost attempt costs little, large enough
    /// that per-shard overhead (a lease, a commit record, an fsync group) stays negligible.
    public static let defaultShardSize = 64
    /// Append-only journal of committed shards; a restarted coordinator resumes from it.
    public var journalPath: String
    /// The dataset index (INDEX.md): `dataset.index` in the journal's folder, the job folder.
    public var indexPath: String { URL(fileURLWithPath: journalPath).deletingLastPathComponent().appendingPathComponent("dataset.index").path }
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
    private let plan: JobPlan
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

    /// Replays the journal, opens the dataset index or starts scanning it (leases begin with the scan's first
    /// published shards, `JobPlan`), and binds the control socket.
    public init(options: CoordinatorOptions) throws {
        self.options = options
        plan = try JobPlan(options: options, log: log.event)
        journal = plan.journal
        let initial = plan.initialPlan
        let settings = CoordinatorSessionSettings(
            lease: LeaseSettings(leaseMs: options.leaseMs, commitWaitMs: options.commitWaitMs,
                                 workerDeadAfterMs: options.heartbeatMs * options.deadAfterBeats, maxAttemptsInFlight: 2,
                                 stallAfterMs: options.stallMs),
            heartbeatMs: options.heartbeatMs, deadAfterBeats: options.deadAfterBeats, headAddress: options.headAddress)
        session = CoordinatorSession(epoch: newEpoch(), plan: initial, settings: settings, journal: journal)
        let router = try ZMQSocket(context, .router, highWaterMark: 1000, security: options.security)
        try router.bind(options.bind)
        if options.security.isCurve { log.event("security: \(options.security)") }
        socket = MessageSocket(router, log: log, accepting: .coordinatorControl)
        progress = ProgressReport()
        metrics = try RoleMetricsRegistry(role: "coordinator", port: options.metricsPort)
        metrics.gauge(MetricName.shardsTotal).set(Double(initial.shardCount))
        metrics.gauge(MetricName.scanning).set(Double(initial.isFinal ? 0 : 1))
        socket.onReject = { [metrics] in metrics.rejected($0) }
        if let port = metrics.endpoint?.port { log.event("metrics on port \(port)") }
        log.event((initial.isFinal ? "\(initial.shardCount) shards of \(options.shardSize)" : "shards of \(options.shardSize) as the scan passes them")
            + "; \(journal.committed.count) already committed (journal \(options.journalPath)); inputs rejected by the scan travel "
            + "with their shards; job \(JobPlanBinding.hex(journal.fingerprint)); listening on \(options.bind)")
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
            if plan.isGrowing {
                do {
                    if let news = try plan.grow(session) { log.event(news) }
                } catch {
                    log.event("\(error); stopping")
                    throw error
                }
                metrics.gauge(MetricName.shardsTotal).set(Double(session.table.progress.total))
            }
            let now = nowMs()
            let ticked: [CoordinatorOutput]
            do { ticked = try session.tick(now: now) } catch {
                log.event("cannot write the journal: \(error); stopping")
                throw error
            }
            if perform(ticked) { return socket.counters }
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
                progress.committed(items: items, log: log, table: session.table.progress, planIsFinal: session.table.isPlanFinal)
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
            log.event("all \(session.table.progress.total) shards committed; telling every peer to shut down")
        case let .suspected(shardID, offsets):
            log.event("shard \(shardID): attempts keep dying with their workers; probing offsets \(offsets.lowerBound)..<\(offsets.upperBound) for a poison item")
        case let .poisoned(verdict, key):
            log.event("shard \(verdict.shardID): item \(verdict.offset) (\(key)) is poison (\(verdict.reason)); it is stored as a dead letter")
            metrics.counter(MetricName.poisonItems).increment()
        case .cleared(let shardID):
            log.event("shard \(shardID): its single suspect came through a probe; the losses were not an item's doing")
        }
    }

    private func publishWorkerMetrics(now: UInt64) {
        let state = session.table.progress
        // While the scan runs, progress is over the shards offered so far (`scanning` says so).
        let fraction = state.total > 0 ? Double(state.committed) / Double(state.total) : (session.table.isPlanFinal ? 1 : 0)
        metrics.gauge(MetricName.progress).set(fraction)
        metrics.gauge(MetricName.eta).set(session.table.isPlanFinal ? progress.eta(shardsLeft: state.total - state.committed) ?? -1 : -1)
        metrics.gauge(MetricName.scanning).set(Double(session.table.isPlanFinal ? 0 : 1))
        let lastSeen = Dictionary(session.workerLastSeen.map { ($0.name, $0.lastSeen) }, uniquingKeysWith: max)
        // Names the session no longer tracks go too, so a flood of hellos cannot grow this table, and their
        // series leave the scrape (`featstream status` would list them with their last values).
        for worker in workerStats.keys where lastSeen[worker] == nil { metrics.limit.remove(where: ("worker", worker)) }
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
    let start = Date()
    private(set) var items = 0
    private var shardsThisRun = 0
    private var lastPrint = Date.distantPast

    /// Images per second committed since this coordinator started.
    var rate: Double {
        let elapsed = Date().timeIntervalSince(start)
        return elapsed > 0 ? Double(items) / elapsed : 0
    }

    /// Seconds to go at this run's shard rate, when `shardsLeft` shards remain; nil before anything was
    /// committed. Only meaningful once the plan is final (the total is known).
    func eta(shardsLeft: Int) -> Double? {
        let elapsed = Date().timeIntervalSince(start)
        guard shardsThisRun > 0, elapsed > 0 else { return nil }
        return Double(shardsLeft) / (Double(shardsThisRun) / elapsed)
    }

    func committed(items count: Int, log: RoleLog, table: (committed: Int, leased: Int, pending: Int, total: Int), planIsFinal: Bool) {
        items += count
        shardsThisRun += 1
        let now = Date()
        guard now.timeIntervalSince(lastPrint) >= 1 || (planIsFinal && table.committed == table.total) else { return }
        lastPrint = now
        let eta = planIsFinal ? eta(shardsLeft: table.total - table.committed).map { String(format: "ETA %.0f s", $0) } ?? "ETA unknown"
            : "ETA unknown: the scan is still running"
        log.event(String(format: "progress %d/%d%@ shards, %d leased, %d pending; %.1f img/s this run, %@",
                         table.committed, table.total, planIsFinal ? "" : "+", table.leased, table.pending, rate, eta))
    }
}
