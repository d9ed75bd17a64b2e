import WireProtocol

// The values a `LeaseTable` takes and gives: its settings, decisions, events, verdicts and status views.

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
    /// Poison isolation (PROTOCOL.md §8.3.7): a shard whose attempts were lost with their worker this many
    /// times is isolated, and an item whose own probe was lost this many times is a poison item.
    public var lossLimit: Int

    /// Settings with the given durations; `maxAttemptsInFlight` and `lossLimit` must be at least 1.
    public init(leaseMs: UInt64 = 60_000, commitWaitMs: UInt64 = 30_000, workerDeadAfterMs: UInt64 = 15_000,
                maxAttemptsInFlight: Int = 2, stallAfterMs: UInt64 = 300_000, idleRetryMs: UInt32 = 1_000, lossLimit: Int = 3) {
        precondition(maxAttemptsInFlight >= 1, "maxAttemptsInFlight must be at least 1")
        precondition(lossLimit >= 1, "lossLimit must be at least 1")
        self.lossLimit = lossLimit
        self.leaseMs = leaseMs
        self.commitWaitMs = commitWaitMs
        self.workerDeadAfterMs = workerDeadAfterMs
        self.maxAttemptsInFlight = maxAttemptsInFlight
        self.stallAfterMs = stallAfterMs
        self.idleRetryMs = idleRetryMs
    }
}

/// An item found to kill or hang every worker that decodes it (PROTOCOL.md §8.3.7): its shard's later
/// assignments carry it as rejected with `reason`. The coordinator journals verdicts, so a restarted one
/// does not find them again.
public struct PoisonVerdict: Equatable, Hashable, Sendable {
    /// The shard holding the item.
    public var shardID: UInt32
    /// The item's offset in the shard.
    public var offset: UInt32
    /// Probes of the item alone that were lost with their worker.
    public var losses: UInt32

    /// A verdict with the given fields, stored as given.
    public init(shardID: UInt32, offset: UInt32, losses: UInt32) {
        self.shardID = shardID
        self.offset = offset
        self.losses = losses
    }

    /// The dead letter's reason, e.g. `poison: worker lost 3 times while decoding`.
    public var reason: String { "poison: worker lost \(losses) times while decoding" }
}

/// The answer to a worker's shard request.
public enum LeaseDecision: Equatable, Sendable {
    /// The worker now owns this attempt of the shard until the lease lapses (heartbeats renew it).
    /// `attempt` has never been handed out before by this table.
    case assign(shardID: UInt32, attempt: UInt32, items: [ItemRef], leaseMs: UInt32)
    /// The worker now owns this attempt as a *probe* of `items`, some of a suspected shard's items
    /// (PROTOCOL.md §8.3.7): it extracts them, sends nothing to the head and reports `shardDone` if it
    /// survives them.
    case probe(shardID: UInt32, attempt: UInt32, items: [ItemRef], leaseMs: UInt32)
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
    /// The worker's extraction made no progress for its stall limit; the worker exits to be restarted
    /// (`shardFailed` with a `stalled:` reason).
    case stalled = "worker stalled"

    /// True when the attempt was lost *with its worker* (dead, restarted, silent or stuck): what a poison
    /// item does to the worker that decodes it. Such losses count towards isolating the shard.
    public var isLoss: Bool {
        switch self {
        case .leaseExpired, .workerDead, .workerRestarted, .stalled: return true
        case .failed, .abandoned, .commitWaitExpired: return false
        }
    }
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
    /// The shard's attempts were lost `lossLimit` times, or a probe narrowed the search: a poison item is
    /// suspected among these offsets, and the shard is leased only as probes until it is found.
    case suspected(shardID: UInt32, offsets: Range<Int>)
    /// The item at `verdict.offset` (key `key`) was lost with its worker `lossLimit` times when probed
    /// alone: from now on the shard's assignments carry it as rejected with `verdict.reason`, so it is
    /// stored as a dead letter. The coordinator journals the verdict.
    case poisoned(PoisonVerdict, key: String)
    /// A probe of a single suspect came back: the losses were not an item's doing; the shard is leased
    /// whole again.
    case cleared(shardID: UInt32)
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
