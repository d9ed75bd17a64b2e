import WireProtocol

/// The coordinator's lease bookkeeping as a pure state machine: fed worker and head events with the
/// current time, it decides which shard attempt each worker gets and which attempts to revoke.
///
/// Guarantees: attempt numbers are never reused; pending shards go out lowest id first; backups are only
/// made when nothing is pending, never to a worker already running the shard, and never beyond
/// `maxAttemptsInFlight` live attempts; each shard is reported committed exactly once; an uncommitted shard
/// is always either running or pending, so it is eventually leased again after any failure.
///
/// Poison items (PROTOCOL.md §8.3.7): a shard whose attempts were lost with their worker `lossLimit` times
/// is *isolated*: it goes out only as probes, one at a time, of half of its suspect offsets; a lost probe
/// makes its half the suspects, a probe that comes back clears it, until a single item remains. That item,
/// lost `lossLimit` times when probed alone, is poison: the shard's later assignments carry it as rejected,
/// so the job finishes with it as a named dead letter. A single suspect whose probe comes back clears the
/// shard (the losses were not an item's doing). Attempts per shard are therefore bounded by about
/// `lossLimit × (2 + log2(items))` per poison item, plus losses that have nothing to do with the shard.
/// Time only advances through the `now` arguments; expiries happen in `tick`, never in the other calls.
public struct LeaseTable: Sendable {
    private struct LiveAttempt: Sendable {
        var attempt: UInt32
        var worker: String
        var leasedAt: UInt64
        /// Lease expiry while working; commit-wait expiry once done.
        var deadline: UInt64
        var doneAt: UInt64?
        /// The offsets this attempt probes, when it is a probe (§8.3.7).
        var probe: Range<Int>?
    }

    /// What the table suspects of a shard whose attempts keep being lost with their workers.
    private struct Suspicion: Sendable {
        /// Attempts of the whole shard lost with their worker since the shard was last cleared.
        var losses = 0
        /// While isolating: the offsets among which a poison item is looked for.
        var suspects: Range<Int>?
        /// Probes of the single suspect lost so far.
        var singleLosses = 0
    }

    /// The settings the table was made with.
    public let settings: LeaseSettings
    private var plan: any ShardSource
    private var shardCount: Int
    /// Commits and poison verdicts (replayed, or reported) of shards a growing plan does not hold yet.
    private var committedAhead: Set<UInt32> = []
    private var poisonedAhead: [PoisonVerdict] = []
    private var live: [[LiveAttempt]]
    /// `.some(nil)` marks a commit replayed from a journal, whose attempt is unknown.
    private var committedAttempt: [UInt32??]
    private var committedCount = 0
    private var running: Set<UInt32> = []
    private var pendingHeap = MinHeap<UInt32>()
    private var isPending: [Bool]
    private var workerLastSeen: [String: UInt64] = [:]
    /// The process incarnation each worker last said hello with, when it declared one.
    private var workerIncarnation: [String: String] = [:]
    /// The next attempt number to hand out; strictly increasing.
    public private(set) var nextAttempt: UInt32
    private var clockStart: UInt64?
    private var lastCommitAt: UInt64?
    private var lastStallReportAt: UInt64?
    private var queuedEvents: [LeaseEvent] = []
    /// Only shards that lost attempts have an entry, so memory does not grow with the plan.
    private var suspicion: [UInt32: Suspicion] = [:]
    /// Poison items found, by shard and offset.
    private var poisoned: [UInt32: [Int: PoisonVerdict]] = [:]
    /// Poison items found so far.
    public private(set) var poisonedCount = 0

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
    /// confuses a new attempt with a stale one. `poisoned` (replayed too) are rejected in every assignment;
    /// verdicts outside the plan are ignored.
    public init(plan: any ShardSource, settings: LeaseSettings, committed: Set<UInt32> = [], firstAttempt: UInt32 = 1,
                poisoned: [PoisonVerdict] = []) {
        self.settings = settings
        self.plan = plan
        self.shardCount = 0
        self.live = []
        self.committedAttempt = []
        self.isPending = []
        self.nextAttempt = max(firstAttempt, 1)
        committedAhead = committed
        poisonedAhead = poisoned
        grow(to: plan)
    }

    /// Takes the next plan of a job whose scan is still running: the same shards (same fingerprint and shard
    /// size, at least as many shards) plus more, or the final plan. New shards go pending, except those
    /// already committed (replayed from the journal, or reported while ahead of the plan); poison verdicts
    /// for them apply. Emits `finished` when the final plan finds every shard committed.
    public mutating func extend(to plan: any ShardSource) {
        let wasComplete = isComplete
        grow(to: plan)
        if isComplete && !wasComplete { queuedEvents.append(.finished) }
    }

    private mutating func grow(to plan: any ShardSource) {
        precondition(plan.fingerprint == self.plan.fingerprint && plan.shardSize == self.plan.shardSize
            && plan.shardCount >= shardCount, "a plan may only grow")
        let old = shardCount
        self.plan = plan
        shardCount = plan.shardCount
        live += Array(repeating: [], count: shardCount - old)
        committedAttempt += Array(repeating: nil, count: shardCount - old)
        isPending += Array(repeating: false, count: shardCount - old)
        var stillAhead: [PoisonVerdict] = []
        for verdict in poisonedAhead {
            guard Int(verdict.shardID) < shardCount else { stillAhead.append(verdict); continue }
            if !committedAhead.contains(verdict.shardID) && Int(verdict.offset) < plan.itemCount(of: verdict.shardID)
                && poisoned[verdict.shardID]?[Int(verdict.offset)] == nil {
                poisoned[verdict.shardID, default: [:]][Int(verdict.offset)] = verdict
                poisonedCount += 1
            }
        }
        // A final plan holds every shard: verdicts beyond it name nothing.
        poisonedAhead = plan.isFinal ? [] : stillAhead
        for id in UInt32(old)..<UInt32(shardCount) {
            if committedAhead.remove(id) != nil {
                committedAttempt[Int(id)] = .some(nil)
                committedCount += 1
            } else {
                markPending(id)
            }
        }
        if plan.isFinal { committedAhead = [] }
    }

    // MARK: - Inputs

    /// Registers the worker as alive. A hello from a worker that still holds working leases means it no
    /// longer works on them, so they are revoked (reported by the next `tick`); attempts it already finished
    /// keep waiting for the head's commit. Whether that counts as a loss (PROTOCOL.md §8.3.7) depends on
    /// `incarnation`, the process's own id from its hello: the same one means the same process introducing
    /// itself again (an answer it waited for was lost, so it never had the lease, or its report of it was
    /// lost), which is `abandoned`; another one, or none, means a new process that lost the old one's work
    /// (`workerRestarted`, a loss). Without the distinction, lost messages alone condemned a good item as
    /// poison (simulator seed 609280).
    public mutating func hello(worker: String, incarnation: String? = nil, now: UInt64) {
        observe(now)
        if workerLastSeen[worker] != nil {
            let sameProcess = incarnation != nil && workerIncarnation[worker] == incarnation
            revokeWorking(of: worker, reason: sameProcess ? .abandoned : .workerRestarted)
        }
        workerLastSeen[worker] = now
        workerIncarnation[worker] = incarnation
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
    ///
    /// An isolated shard goes out as a probe (never backed up), or as a whole attempt to a worker that
    /// cannot probe (`canProbe` false: its protocol minor predates `probe`).
    public mutating func request(worker: String, now: UInt64, canProbe: Bool = true) -> LeaseDecision {
        touch(worker, now)
        if isComplete { return .finished }
        if let shardID = popPending() {
            if canProbe, let probe = nextProbe(shardID) {
                return lease(shardID, to: worker, now: now, probe: probe)
            }
            return lease(shardID, to: worker, now: now)
        }
        var straggler: (shardID: UInt32, since: UInt64)?
        for shardID in running {
            let attempts = live[Int(shardID)]
            guard attempts.count < settings.maxAttemptsInFlight, suspicion[shardID]?.suspects == nil,
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
    /// For a probe it means the worker survived the probed items: they are cleared of suspicion.
    public mutating func shardDone(worker: String, shardID: UInt32, attempt: UInt32, now: UInt64) {
        touch(worker, now)
        guard let index = liveIndex(shardID, attempt, worker), live[Int(shardID)][index].doneAt == nil else { return }
        if let probe = live[Int(shardID)][index].probe {
            live[Int(shardID)].remove(at: index)
            if live[Int(shardID)].isEmpty {
                running.remove(shardID)
                markPending(shardID)
            }
            probeSurvived(shardID, probe)
            return
        }
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
    /// covers it. `stalled` (its extraction made no progress, and it exits to be restarted) counts as a
    /// loss towards poison isolation. Ignored unless the attempt is live and held by that worker.
    public mutating func shardFailed(worker: String, shardID: UInt32, attempt: UInt32, stalled: Bool = false, now: UInt64) {
        touch(worker, now)
        guard let index = liveIndex(shardID, attempt, worker) else { return }
        revoke(shardID, at: index, reason: stalled ? .stalled : .failed)
    }

    /// The head durably stored the shard. Returns true when this is news: the shard is now committed, every
    /// other live attempt of it is revoked, and it is never leased again; the caller journals it before
    /// acting on it. Returns false for a shard already committed (a late or duplicate commit) or unknown.
    /// Any attempt number is accepted, even a revoked one or one from a previous coordinator, because the
    /// head's durable commit is a fact: refusing it would only lease work that is already stored.
    @discardableResult
    public mutating func committed(shardID: UInt32, attempt: UInt32, now: UInt64) -> Bool {
        observe(now)
        if Int(shardID) >= shardCount, !plan.isFinal {
            // A shard of the growing plan not offered yet (a previous incarnation leased it before a restart):
            // it is committed when the plan reaches it.
            return committedAhead.insert(shardID).inserted
        }
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
        suspicion[shardID] = nil
        poisoned[shardID] = nil
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
            workerIncarnation[worker] = nil
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

    /// True once the plan is final and every shard is committed.
    public var isComplete: Bool { plan.isFinal && committedCount == shardCount }

    /// Whether the plan holds every shard of the job (false while its scan runs).
    public var isPlanFinal: Bool { plan.isFinal }

    /// Shard counts by stage; `committed + leased + pending == total` always. `total` is the plan's shard
    /// count so far while it grows (`isPlanFinal`).
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

    private mutating func lease(_ shardID: UInt32, to worker: String, now: UInt64, probe: Range<Int>? = nil) -> LeaseDecision {
        precondition(nextAttempt < UInt32.max, "attempt numbers exhausted")
        let attempt = nextAttempt
        nextAttempt += 1
        live[Int(shardID)].append(LiveAttempt(attempt: attempt, worker: worker, leasedAt: now,
                                              deadline: saturatingSum(now, settings.leaseMs), doneAt: nil, probe: probe))
        running.insert(shardID)
        let items = itemsWithVerdicts(shardID)
        let leaseMs = UInt32(clamping: settings.leaseMs)
        guard let probe else { return .assign(shardID: shardID, attempt: attempt, items: items, leaseMs: leaseMs) }
        return .probe(shardID: shardID, attempt: attempt, items: items[probe].filter(\.isDecodable), leaseMs: leaseMs)
    }

    /// The shard's items, poison items found so far rejected with their reason.
    private func itemsWithVerdicts(_ shardID: UInt32) -> [ItemRef] {
        var items = plan.items(of: shardID)
        for (offset, verdict) in poisoned[shardID] ?? [:] { items[offset].locator = .rejected(reason: verdict.reason) }
        return items
    }

    // MARK: - Poison isolation (PROTOCOL.md §8.3.7)

    /// The offsets to probe next for an isolated shard: half of its suspects, or the single suspect. Halves
    /// with nothing to decode (rejected entries only) cannot hold the poison and are skipped. Nil when the
    /// shard is not isolated, or when no suspect is decodable (then the isolation is cleared).
    private mutating func nextProbe(_ shardID: UInt32) -> Range<Int>? {
        guard var suspects = suspicion[shardID]?.suspects else { return nil }
        let items = itemsWithVerdicts(shardID)
        func decodable(_ range: Range<Int>) -> Bool { items[range].contains(where: \.isDecodable) }
        while suspects.count > 1 {
            let half = suspects.lowerBound..<(suspects.lowerBound + suspects.count / 2)
            if decodable(half) { break }
            suspects = half.upperBound..<suspects.upperBound
        }
        guard decodable(suspects) else {
            clear(shardID)
            return nil
        }
        if suspicion[shardID]!.suspects != suspects {
            suspicion[shardID]!.suspects = suspects
            suspicion[shardID]!.singleLosses = 0
            queuedEvents.append(.suspected(shardID: shardID, offsets: suspects))
        }
        return suspects.count == 1 ? suspects : suspects.lowerBound..<(suspects.lowerBound + suspects.count / 2)
    }

    /// A whole attempt of the shard was lost with its worker.
    private mutating func noteLoss(_ shardID: UInt32) {
        var state = suspicion[shardID] ?? Suspicion()
        // A whole attempt leased before the isolation began tells nothing about the suspects.
        guard state.suspects == nil else { return }
        state.losses += 1
        if state.losses >= settings.lossLimit {
            let all = 0..<plan.itemCount(of: shardID)
            state.suspects = all
            queuedEvents.append(.suspected(shardID: shardID, offsets: all))
        }
        suspicion[shardID] = state
    }

    /// A probe was lost with its worker: the poison is among the probed offsets.
    private mutating func probeLost(_ shardID: UInt32, _ probe: Range<Int>) {
        guard var state = suspicion[shardID], let suspects = state.suspects, suspects.contains(probe.lowerBound) else { return }
        if suspects != probe {
            state.suspects = probe
            state.singleLosses = 0
            queuedEvents.append(.suspected(shardID: shardID, offsets: probe))
        }
        if probe.count == 1 { state.singleLosses += 1 }
        suspicion[shardID] = state
        guard probe.count == 1, state.singleLosses >= settings.lossLimit else { return }
        let offset = probe.lowerBound
        let verdict = PoisonVerdict(shardID: shardID, offset: UInt32(offset), losses: UInt32(state.singleLosses))
        poisoned[shardID, default: [:]][offset] = verdict
        poisonedCount += 1
        suspicion[shardID] = nil
        queuedEvents.append(.poisoned(verdict, key: plan.items(of: shardID)[offset].key))
    }

    /// A probe came back: the probed offsets are innocent.
    private mutating func probeSurvived(_ shardID: UInt32, _ probe: Range<Int>) {
        guard var state = suspicion[shardID], let suspects = state.suspects,
              probe.lowerBound == suspects.lowerBound, probe.upperBound <= suspects.upperBound else { return }
        guard probe.upperBound < suspects.upperBound else {
            clear(shardID)
            return
        }
        state.suspects = probe.upperBound..<suspects.upperBound
        state.singleLosses = 0
        suspicion[shardID] = state
        queuedEvents.append(.suspected(shardID: shardID, offsets: state.suspects!))
    }

    private mutating func clear(_ shardID: UInt32) {
        suspicion[shardID] = nil
        queuedEvents.append(.cleared(shardID: shardID))
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
        if reason.isLoss && attempt.doneAt == nil {
            if let probe = attempt.probe { probeLost(shardID, probe) } else { noteLoss(shardID) }
        }
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

extension ItemRef {
    /// False for an entry rejected already (by the scan, or as poison): a worker never reads its bytes.
    fileprivate var isDecodable: Bool {
        if case .rejected = locator { return false }
        return true
    }
}
