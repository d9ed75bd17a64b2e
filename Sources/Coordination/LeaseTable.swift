import WireProtocol

/// Timing and redundancy knobs of a `LeaseTable`; every duration is in milliseconds of the caller's
/// monotonic clock.
public struct LeaseSettings: Equatable, Sendable {
    /// How long a leased attempt stays valid without news from its worker; every heartbeat of the worker
    /// renews it to this long from the heartbeat.
    public var leaseMs: UInt64
    /// After a worker reports `shardDone`, how long to wait for the head's commit before leasing the shard
    /// again (the batches may have been lost on the way to the head).
    public var commitWaitMs: UInt64
    /// A worker silent (no hello, heartbeat, request, done or failed) for this long is declared dead.
    public var workerDeadAfterMs: UInt64
    /// Live attempts allowed per shard: 1 original plus backups handed to idle workers at the tail.
    public var maxAttemptsInFlight: Int
    /// With work remaining and no commit for this long, `tick` reports a stall (at most once per period).
    public var stallAfterMs: UInt64
    /// What `.noWork` tells an idle worker to wait before asking again.
    public var idleRetryMs: UInt32

    /// Settings with the given durations; `maxAttemptsInFlight` must be at least 1.
    public init(leaseMs: UInt64 = 60_000, commitWaitMs: UInt64 = 30_000, workerDeadAfterMs: UInt64 = 15_000,
                maxAttemptsInFlight: Int = 2, stallAfterMs: UInt64 = 300_000, idleRetryMs: UInt32 = 1_000) {
        precondition(maxAttemptsInFlight >= 1, "maxAttemptsInFlight must be at least 1")
        self.leaseMs = leaseMs
        self.commitWaitMs = commitWaitMs
        self.workerDeadAfterMs = workerDeadAfterMs
        self.maxAttemptsInFlight = maxAttemptsInFlight
        self.stallAfterMs = stallAfterMs
        self.idleRetryMs = idleRetryMs
    }
}

/// The answer to a worker's shard request.
public enum LeaseDecision: Equatable, Sendable {
    /// The worker now owns this attempt of the shard until the lease lapses (heartbeats renew it).
    /// `attempt` has never been handed out before by this table.
    case assign(shardID: UInt32, attempt: UInt32, items: [ItemRef], leaseMs: UInt32)
    /// Nothing the worker may take right now (everything left is running at full redundancy); ask again later.
    case noWork(retryAfterMs: UInt32)
    /// Every shard is committed: the worker can exit.
    case finished
}

/// Why a live attempt was taken away from its worker.
public enum RevocationReason: String, Equatable, Sendable {
    /// No heartbeat renewed the lease in time.
    case leaseExpired = "lease expired"
    /// The worker stopped talking altogether.
    case workerDead = "worker dead"
    /// The worker said hello again while holding leases: a new process lost the old one's work.
    case workerRestarted = "worker restarted"
    /// The worker gave the shard up (`shardFailed`).
    case failed = "worker gave up"
    /// The worker asked for new work while holding the lease: a worker works one shard at a time, so it
    /// no longer works on this one (its assignment was lost, say).
    case abandoned = "worker asked for other work"
    /// The worker finished but the head's commit did not arrive within `commitWaitMs`.
    case commitWaitExpired = "commit wait expired"
}

/// Something the caller should log (or act on) that happened inside the table.
public enum LeaseEvent: Equatable, Sendable {
    /// The attempt is void; its shard goes back to pending unless another live attempt still covers it.
    case reassigned(shardID: UInt32, attempt: UInt32, worker: String, reason: RevocationReason)
    /// Another attempt of the shard was committed first; this one's work is redundant.
    case superseded(shardID: UInt32, attempt: UInt32, worker: String)
    /// The worker was silent for `workerDeadAfterMs`; its leases were revoked.
    case workerDead(String)
    /// The head's commit of the shard was accepted (the first one for that shard).
    case committed(shardID: UInt32, attempt: UInt32)
    /// Nothing was committed for `stallAfterMs` while work remains.
    case stall(StallReport)
    /// The last shard was committed.
    case finished
}

/// One live attempt as seen at some instant, for logs, stall reports and `featstream status`.
public struct AttemptStatus: Equatable, Sendable {
    /// The shard the attempt covers.
    public var shardID: UInt32
    /// The attempt number (unique within the table).
    public var attempt: UInt32
    /// The worker holding the attempt.
    public var worker: String
    /// Time since the attempt was leased.
    public var runningForMs: UInt64
    /// True once the worker reported `shardDone` and the head's commit is awaited.
    public var awaitingCommit: Bool
    /// Time left before the attempt is revoked (0 when overdue and the next `tick` will revoke it).
    public var expiresInMs: UInt64
}

/// Where a shard stands.
public struct ShardStatus: Equatable, Sendable {
    /// The shard's life-cycle stage.
    public enum State: Equatable, Sendable {
        /// Waiting to be leased.
        case pending
        /// At least one live attempt covers it.
        case running
        /// Durably stored by the head; `attempt` is nil when the commit came from the journal of a
        /// previous coordinator.
        case committed(attempt: UInt32?)
    }

    /// The shard's id.
    public var shardID: UInt32
    /// Items in the shard.
    public var itemCount: Int
    /// Its stage.
    public var state: State
    /// Its live attempts (empty unless running).
    public var attempts: [AttemptStatus]
}

/// What a stall looks like: who holds what, and for how long nothing was committed.
public struct StallReport: Equatable, Sendable, CustomStringConvertible {
    /// Time since the last commit (or since the table first saw the clock, if nothing was committed yet).
    public var sinceLastCommitMs: UInt64
    /// Committed shards.
    public var committed: Int
    /// Shards in the plan.
    public var total: Int
    /// Shards waiting for a worker, lowest id first.
    public var pendingShards: [UInt32]
    /// Live attempts, longest-running first.
    public var running: [AttemptStatus]

    /// One line per stalled attempt under a summary line, for logs.
    public var description: String {
        var lines = ["no commit for \(sinceLastCommitMs) ms; \(committed)/\(total) committed, "
            + "\(pendingShards.count) pending, \(running.count) attempts live"]
        if !pendingShards.isEmpty {
            let shown = pendingShards.prefix(16).map(String.init).joined(separator: ",")
            lines.append("  pending: \(shown)\(pendingShards.count > 16 ? ",…" : "")")
        }
        for attempt in running {
            lines.append("  shard \(attempt.shardID) attempt \(attempt.attempt) on \(attempt.worker): "
                + "running \(attempt.runningForMs) ms"
                + (attempt.awaitingCommit ? ", done, awaiting head commit" : ""))
        }
        return lines.joined(separator: "\n")
    }
}

/// The coordinator's lease bookkeeping as a pure state machine: fed worker and head events with the
/// current time, it decides which shard attempt each worker gets and which attempts to revoke.
///
/// Guarantees: attempt numbers are never reused; pending shards go out lowest id first; backups are only
/// made when nothing is pending, never to a worker already running the shard, and never beyond
/// `maxAttemptsInFlight` live attempts; each shard is reported committed exactly once; an uncommitted shard
/// is always either running or pending, so it is eventually leased again after any failure.
/// Time only advances through the `now` arguments; expiries happen in `tick`, never in the other calls.
public struct LeaseTable: Sendable {
    private struct LiveAttempt: Sendable {
        var attempt: UInt32
        var worker: String
        var leasedAt: UInt64
        /// Lease expiry while working; commit-wait expiry once done.
        var deadline: UInt64
        var doneAt: UInt64?
    }

    /// The settings the table was made with.
    public let settings: LeaseSettings
    private let plan: any ShardSource
    private let shardCount: Int
    private var live: [[LiveAttempt]]
    /// `.some(nil)` marks a commit replayed from a journal, whose attempt is unknown.
    private var committedAttempt: [UInt32??]
    private var committedCount = 0
    private var running: Set<UInt32> = []
    private var pendingHeap = MinHeap<UInt32>()
    private var isPending: [Bool]
    private var workerLastSeen: [String: UInt64] = [:]
    /// The next attempt number to hand out; strictly increasing.
    public private(set) var nextAttempt: UInt32
    private var clockStart: UInt64?
    private var lastCommitAt: UInt64?
    private var lastStallReportAt: UInt64?
    private var queuedEvents: [LeaseEvent] = []

    /// A table over `shards` (ids must be `0..<shards.count` in order, as `ShardPlan.cut` makes them).
    public init(shards: [Shard], settings: LeaseSettings, committed: Set<UInt32> = [], firstAttempt: UInt32 = 1) {
        for (position, shard) in shards.enumerated() {
            precondition(shard.id == UInt32(position), "shard ids must be dense and ordered: position \(position) has id \(shard.id)")
        }
        self.init(plan: ShardPlan(shards: shards), settings: settings, committed: committed, firstAttempt: firstAttempt)
    }

    /// A table over the shards of `plan`. Shards in `committed` (replayed from the journal) are never
    /// leased. `firstAttempt` is the first attempt number handed out; a restarted coordinator passes one
    /// above every attempt its previous incarnation may have issued (see `CoordinatorJournal.attemptsReservedThrough`), so a head never
    /// confuses a new attempt with a stale one.
    public init(plan: any ShardSource, settings: LeaseSettings, committed: Set<UInt32> = [], firstAttempt: UInt32 = 1) {
        self.settings = settings
        self.plan = plan
        self.shardCount = plan.shardCount
        self.live = Array(repeating: [], count: shardCount)
        self.committedAttempt = Array(repeating: nil, count: shardCount)
        self.isPending = Array(repeating: false, count: shardCount)
        self.nextAttempt = max(firstAttempt, 1)
        for id in 0..<UInt32(shardCount) {
            if committed.contains(id) {
                committedAttempt[Int(id)] = .some(nil)
                committedCount += 1
            } else {
                markPending(id)
            }
        }
    }

    // MARK: - Inputs

    /// Registers the worker as alive. A hello from a worker that still holds working leases means its
    /// process restarted and lost that work, so those leases are revoked (reported by the next `tick`);
    /// attempts it already finished keep waiting for the head's commit.
    public mutating func hello(worker: String, now: UInt64) {
        observe(now)
        if workerLastSeen[worker] != nil {
            revokeWorking(of: worker, reason: .workerRestarted)
        }
        workerLastSeen[worker] = now
    }

    /// Records that the worker is alive and renews every lease it is working on to `now + leaseMs`.
    public mutating func heartbeat(worker: String, now: UInt64) {
        touch(worker, now)
        for shardID in running {
            for index in live[Int(shardID)].indices
            where live[Int(shardID)][index].worker == worker && live[Int(shardID)][index].doneAt == nil {
                live[Int(shardID)][index].deadline = saturatingSum(now, settings.leaseMs)
            }
        }
    }

    /// Leases work to an idle worker: the lowest pending shard; else a backup attempt of the straggler that
    /// has run longest among those the worker is not already running and that have room for another
    /// attempt and no finished attempt awaiting commit; else `.noWork`; `.finished` once all is committed.
    public mutating func request(worker: String, now: UInt64) -> LeaseDecision {
        touch(worker, now)
        if isComplete { return .finished }
        if let shardID = popPending() {
            return lease(shardID, to: worker, now: now)
        }
        var straggler: (shardID: UInt32, since: UInt64)?
        for shardID in running {
            let attempts = live[Int(shardID)]
            guard attempts.count < settings.maxAttemptsInFlight,
                  !attempts.contains(where: { $0.worker == worker || $0.doneAt != nil }),
                  let since = attempts.map(\.leasedAt).min() else { continue }
            if let best = straggler, (best.since, best.shardID) < (since, shardID) { continue }
            straggler = (shardID, since)
        }
        if let straggler {
            return lease(straggler.shardID, to: worker, now: now)
        }
        return .noWork(retryAfterMs: settings.idleRetryMs)
    }

    /// The worker sent every batch of the attempt to the head: stop expecting heartbeats for it and wait up
    /// to `commitWaitMs` for the head's commit. Ignored unless the attempt is live and held by that worker.
    public mutating func shardDone(worker: String, shardID: UInt32, attempt: UInt32, now: UInt64) {
        touch(worker, now)
        guard let index = liveIndex(shardID, attempt, worker), live[Int(shardID)][index].doneAt == nil else { return }
        live[Int(shardID)][index].doneAt = now
        live[Int(shardID)][index].deadline = saturatingSum(now, settings.commitWaitMs)
    }

    /// The worker no longer works on any lease it has not finished (it asks for new work, and works one shard
    /// at a time): revoke them (reported by the next `tick`). Finished attempts keep waiting for the commit.
    public mutating func abandonWork(of worker: String, now: UInt64) {
        touch(worker, now)
        revokeWorking(of: worker, reason: .abandoned)
    }

    /// The worker gave the attempt up: revoke it, and make the shard pending unless another attempt still
    /// covers it. Ignored unless the attempt is live and held by that worker.
    public mutating func shardFailed(worker: String, shardID: UInt32, attempt: UInt32, now: UInt64) {
        touch(worker, now)
        guard let index = liveIndex(shardID, attempt, worker) else { return }
        revoke(shardID, at: index, reason: .failed)
    }

    /// The head durably stored the shard. Returns true when this is news: the shard is now committed, every
    /// other live attempt of it is revoked, and it is never leased again; the caller journals it before
    /// acting on it. Returns false for a shard already committed (a late or duplicate commit) or unknown.
    /// Any attempt number is accepted, even a revoked one or one from a previous coordinator, because the
    /// head's durable commit is a fact: refusing it would only lease work that is already stored.
    @discardableResult
    public mutating func committed(shardID: UInt32, attempt: UInt32, now: UInt64) -> Bool {
        observe(now)
        guard Int(shardID) < shardCount, committedAttempt[Int(shardID)] == nil else { return false }
        committedAttempt[Int(shardID)] = .some(attempt)
        committedCount += 1
        lastCommitAt = now
        for other in live[Int(shardID)] where other.attempt != attempt {
            queuedEvents.append(.superseded(shardID: shardID, attempt: other.attempt, worker: other.worker))
        }
        live[Int(shardID)] = []
        running.remove(shardID)
        isPending[Int(shardID)] = false
        queuedEvents.append(.committed(shardID: shardID, attempt: attempt))
        if isComplete { queuedEvents.append(.finished) }
        return true
    }

    /// Advances time: declares silent workers dead and revokes their working leases, revokes expired
    /// leases and expired commit waits (their shards go back to pending), and emits a stall report when due.
    /// Also returns, first, the events the other calls produced since the last tick.
    public mutating func tick(now: UInt64) -> [LeaseEvent] {
        observe(now)
        for (worker, lastSeen) in workerLastSeen.sorted(by: { $0.key < $1.key })
        where now >= lastSeen && now - lastSeen >= settings.workerDeadAfterMs {
            workerLastSeen[worker] = nil
            queuedEvents.append(.workerDead(worker))
            revokeWorking(of: worker, reason: .workerDead)
        }
        for shardID in running.sorted() {
            var index = 0
            while index < live[Int(shardID)].count {
                let attempt = live[Int(shardID)][index]
                if attempt.deadline <= now {
                    revoke(shardID, at: index, reason: attempt.doneAt == nil ? .leaseExpired : .commitWaitExpired)
                } else {
                    index += 1
                }
            }
        }
        if !isComplete, let quietSince = lastCommitAt ?? clockStart, now >= quietSince,
           now - quietSince >= settings.stallAfterMs,
           lastStallReportAt.map({ now >= $0 && now - $0 >= settings.stallAfterMs }) ?? true {
            lastStallReportAt = now
            queuedEvents.append(.stall(StallReport(
                sinceLastCommitMs: now - quietSince, committed: committedCount, total: shardCount,
                pendingShards: (0..<UInt32(shardCount)).filter { isPending[Int($0)] },
                running: runningAttempts(now: now))))
        }
        defer { queuedEvents = [] }
        return queuedEvents
    }

    // MARK: - Views

    /// True once every shard is committed.
    public var isComplete: Bool { committedCount == shardCount }

    /// Shard counts by stage; `committed + leased + pending == total` always.
    public var progress: (committed: Int, leased: Int, pending: Int, total: Int) {
        (committedCount, running.count, shardCount - committedCount - running.count, shardCount)
    }

    /// Every shard's stage and live attempts as of `now`, in shard id order.
    public func status(now: UInt64) -> [ShardStatus] {
        (0..<UInt32(shardCount)).map { shardID in
            let id = Int(shardID)
            let state: ShardStatus.State
            if let attempt = committedAttempt[id] {
                state = .committed(attempt: attempt)
            } else {
                state = live[id].isEmpty ? .pending : .running
            }
            return ShardStatus(shardID: shardID, itemCount: plan.itemCount(of: shardID), state: state,
                               attempts: live[id].map { attemptStatus(shardID, $0, now: now) })
        }
    }

    /// The live attempts, longest-running first (ties by shard id, then attempt).
    public func runningAttempts(now: UInt64) -> [AttemptStatus] {
        running.flatMap { shardID in live[Int(shardID)].map { attemptStatus(shardID, $0, now: now) } }
            .sorted { ($1.runningForMs, $0.shardID, $0.attempt) < ($0.runningForMs, $1.shardID, $1.attempt) }
    }

    // MARK: - Internals

    private func attemptStatus(_ shardID: UInt32, _ attempt: LiveAttempt, now: UInt64) -> AttemptStatus {
        AttemptStatus(shardID: shardID, attempt: attempt.attempt, worker: attempt.worker,
                      runningForMs: now > attempt.leasedAt ? now - attempt.leasedAt : 0,
                      awaitingCommit: attempt.doneAt != nil,
                      expiresInMs: attempt.deadline > now ? attempt.deadline - now : 0)
    }

    private mutating func observe(_ now: UInt64) {
        if clockStart == nil { clockStart = now }
    }

    private mutating func touch(_ worker: String, _ now: UInt64) {
        observe(now)
        workerLastSeen[worker] = max(workerLastSeen[worker] ?? now, now)
    }

    private mutating func lease(_ shardID: UInt32, to worker: String, now: UInt64) -> LeaseDecision {
        precondition(nextAttempt < UInt32.max, "attempt numbers exhausted")
        let attempt = nextAttempt
        nextAttempt += 1
        live[Int(shardID)].append(LiveAttempt(attempt: attempt, worker: worker, leasedAt: now,
                                              deadline: saturatingSum(now, settings.leaseMs), doneAt: nil))
        running.insert(shardID)
        return .assign(shardID: shardID, attempt: attempt, items: plan.items(of: shardID),
                       leaseMs: UInt32(clamping: settings.leaseMs))
    }

    private func liveIndex(_ shardID: UInt32, _ attempt: UInt32, _ worker: String) -> Int? {
        guard Int(shardID) < shardCount else { return nil }
        return live[Int(shardID)].firstIndex { $0.attempt == attempt && $0.worker == worker }
    }

    /// Finished attempts are spared: their batches already reached the head, which may still commit them.
    private mutating func revokeWorking(of worker: String, reason: RevocationReason) {
        for shardID in running.sorted() {
            while let index = live[Int(shardID)].firstIndex(where: { $0.worker == worker && $0.doneAt == nil }) {
                revoke(shardID, at: index, reason: reason)
            }
        }
    }

    private mutating func revoke(_ shardID: UInt32, at index: Int, reason: RevocationReason) {
        let attempt = live[Int(shardID)].remove(at: index)
        queuedEvents.append(.reassigned(shardID: shardID, attempt: attempt.attempt, worker: attempt.worker, reason: reason))
        if live[Int(shardID)].isEmpty {
            running.remove(shardID)
            markPending(shardID)
        }
    }

    private mutating func markPending(_ shardID: UInt32) {
        guard !isPending[Int(shardID)] else { return }
        isPending[Int(shardID)] = true
        pendingHeap.push(shardID)
    }

    /// Stale heap entries (shards committed while pending) are skipped rather than searched for and removed.
    private mutating func popPending() -> UInt32? {
        while let shardID = pendingHeap.pop() {
            if isPending[Int(shardID)] {
                isPending[Int(shardID)] = false
                return shardID
            }
        }
        return nil
    }
}

/// Durations may be configured as "forever" (UInt64.max) without trapping.
private func saturatingSum(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}
