import Coordination
import DatasetIndex
import WireProtocol

/// The coordinator's durable memory as the session needs it: `CoordinatorJournal` on disk, or the
/// simulator's journal that can crash mid-write.
public protocol CommitJournal: AnyObject {
    /// Shards whose commit is durably recorded.
    var committed: Set<UInt32> { get }
    /// Attempt numbers up to this one may have been handed out by an earlier incarnation.
    var attemptsReservedThrough: UInt32 { get }
    /// Durably records a commit; returns only once it is on disk.
    func append(shardID: UInt32, attempt: UInt32) throws
    /// Durably reserves attempt numbers up to `through`.
    func reserveAttempts(through: UInt32) throws
    /// Poison items found by earlier incarnations.
    var poisonVerdicts: [PoisonVerdict] { get }
    /// Records a poison verdict (durably where the journal's format allows it).
    func append(_ verdict: PoisonVerdict) throws
    /// Whether `shardID` is a shard of the job so far (a growing plan's journal knows more shards than a
    /// restarted coordinator's table offers at first).
    func mayCommit(shardID: UInt32) -> Bool
    /// Durably records the scan prefix a growing plan's next shards are cut from.
    func append(_ checkpoint: ScanCheckpoint) throws
    /// Durably records the finished index a growing plan became final on.
    func append(_ seal: CoordinatorJournal.Seal) throws
}

extension CoordinatorJournal: CommitJournal {}

/// Settings of a `CoordinatorSession`.
public struct CoordinatorSessionSettings: Sendable {
    /// Lease timing and redundancy.
    public var lease: LeaseSettings
    /// How often the coordinator beats to its peers (told to workers in `welcome`).
    public var heartbeatMs: UInt64
    /// Beats without news after which a peer is dead (told to workers in `welcome`).
    public var deadAfterBeats: UInt64
    /// The head's data address, as workers should connect to it.
    public var headAddress: String
    /// Most worker identities tracked at once; a new one beyond it displaces the one idle longest.
    public var maxWorkers: Int
    /// Attempt numbers are reserved in the journal this many at a time, so fsyncs stay rare.
    public var attemptReservationBlock: UInt32 = 1024

    /// Settings with the given values.
    public init(lease: LeaseSettings, heartbeatMs: UInt64, deadAfterBeats: UInt64, headAddress: String, maxWorkers: Int = 4096) {
        self.lease = lease
        self.heartbeatMs = heartbeatMs
        self.deadAfterBeats = deadAfterBeats
        self.headAddress = headAddress
        self.maxWorkers = maxWorkers
    }
}

/// What the coordinator sends, and what its driver should report.
public enum CoordinatorOutput: Equatable, Sendable {
    /// A message for the peer with this routing identity.
    case send([UInt8], Message)
    /// A worker introduced itself (first time for this identity).
    case workerJoined(name: String, host: String, pid: UInt32)
    /// A shard was leased.
    case leased(shardID: UInt32, attempt: UInt32, worker: String)
    /// A worker reports it sent every item of a shard attempt (`items` rows and dead letters).
    case workerFinishedShard(worker: String, items: Int)
    /// Something happened inside the lease table (revocations, stalls, commits).
    case event(LeaseEvent)
    /// A commit was news and is journaled: `items` rows and dead letters (0 when the head did not say).
    case committed(shardID: UInt32, items: Int)
    /// Every shard is committed and the peers have been told for long enough: the driver may exit.
    case finished
}

/// The coordinator's protocol rules as a pure state machine around `LeaseTable` (PROTOCOL.md §8).
///
/// Rules it owns: every `hello` is answered with `welcome`; a heartbeat from an identity it does not know
/// (a peer of its predecessor) is answered with a heartbeat, so the peer sees the new epoch and introduces
/// itself again; `headHello` is answered with `welcome` (the head retries until then) and its committed list
/// is recorded; a commit is journaled before anything acts on it; attempt numbers are reserved in the
/// journal before they are handed out; once every shard is committed, every peer is told to shut down on
/// each beat for two beats.
public final class CoordinatorSession {
    /// This incarnation's epoch.
    public let epoch: UInt64
    /// The settings the session was made with.
    public let settings: CoordinatorSessionSettings
    /// The lease table (read it for progress and status).
    public private(set) var table: LeaseTable
    private let journal: CommitJournal
    /// The plan's fingerprint, told to every peer in `welcome` (a head binds its store to it).
    public let planFingerprint: UInt64
    /// `minor`: the protocol minor the worker's hello declared (a `probe` goes only to minor 1 or later).
    private var workers: [[UInt8]: (name: String, lastSeen: UInt64, minor: UInt8)] = [:]
    private var head: [UInt8]?
    private var lastBeatAt: UInt64?
    private var completeAt: UInt64?
    /// Messages that arrived from identities that may not send them (counted; see `PROTOCOL.md` §9).
    public private(set) var unexpectedMessages = 0
    /// Worker identities displaced to stay within `maxWorkers`.
    public private(set) var displacedWorkers = 0
    /// `headHello`s whose committed shards were not taken, because the store is bound to another plan.
    public private(set) var ignoredAnnouncements = 0

    /// A session over the shards of `plan`, resuming from what `journal` recorded.
    public init(epoch: UInt64, plan: any ShardSource, settings: CoordinatorSessionSettings, journal: CommitJournal) {
        precondition(epoch != 0, "epoch 0 means 'unknown' on the wire")
        self.epoch = epoch
        self.settings = settings
        self.journal = journal
        self.planFingerprint = plan.fingerprint
        // Attempt numbers never repeat across restarts, so a head never mixes two incarnations' attempts.
        table = LeaseTable(plan: plan, settings: settings.lease, committed: journal.committed,
                           firstAttempt: journal.attemptsReservedThrough + 1, poisoned: journal.poisonVerdicts)
    }

    /// Worker identities tracked (never more than `maxWorkers`).
    public var workerCount: Int { workers.count }

    /// The names of the workers tracked, with the time each was last heard from.
    public var workerLastSeen: [(name: String, lastSeen: UInt64)] { workers.values.map { ($0.name, $0.lastSeen) } }

    /// Handles one message from the peer with routing identity `identity`. Throws when the journal fails:
    /// what is on disk is then unknown, and the process must stop and replay it.
    public func receive(_ message: Message, from identity: [UInt8], now: UInt64) throws -> [CoordinatorOutput] {
        var outputs: [CoordinatorOutput] = []
        switch message {
        case let .hello(workerID, host, pid, capabilities):
            if workers[identity]?.name != workerID {
                if workers[identity] == nil { makeRoomForAWorker() }
                outputs.append(.workerJoined(name: workerID, host: host, pid: pid))
            }
            workers[identity] = (workerID, now, FrameCodec.peerMinor(capabilities))
            table.hello(worker: workerID, incarnation: capabilities[Message.incarnationCapability], now: now)
            outputs.append(.send(identity, welcome))
        case .heartbeat:
            if let worker = workers[identity] {
                workers[identity]!.lastSeen = now
                table.heartbeat(worker: worker.name, now: now)
            } else if identity != head {
                // A peer of an earlier incarnation: our heartbeat shows it the new epoch, and it says hello again.
                outputs.append(.send(identity, .heartbeat(epoch: epoch, sequence: now)))
            }
        case .shardRequest(let workerID):
            guard let worker = workers[identity], worker.name == workerID else {
                // Not introduced (or under another name): it must say hello first, and our epoch tells it so.
                unexpectedMessages += 1
                outputs.append(.send(identity, .heartbeat(epoch: epoch, sequence: now)))
                break
            }
            workers[identity]!.lastSeen = now
            if table.nextAttempt > journal.attemptsReservedThrough {
                try journal.reserveAttempts(through: table.nextAttempt + settings.attemptReservationBlock - 1)
            }
            // A worker works one shard at a time: asking for one means any unfinished lease it holds is lost
            // (its assignment never arrived, say), and must not be renewed by its heartbeats for ever.
            table.abandonWork(of: workerID, now: now)
            switch table.request(worker: workerID, now: now, canProbe: worker.minor >= 1) {
            case let .assign(shardID, attempt, items, leaseMs):
                outputs.append(.leased(shardID: shardID, attempt: attempt, worker: workerID))
                outputs.append(.send(identity, .assignment(shardID: shardID, attempt: attempt, leaseMs: leaseMs, items: items)))
            case let .probe(shardID, attempt, items, leaseMs):
                outputs.append(.leased(shardID: shardID, attempt: attempt, worker: workerID))
                outputs.append(.send(identity, .probe(shardID: shardID, attempt: attempt, leaseMs: leaseMs, items: items)))
            case .noWork(let retry):
                outputs.append(.send(identity, .noWork(retryAfterMs: retry)))
            case .finished:
                outputs.append(.send(identity, .shutdown(reason: "job complete")))
            }
        case let .shardDone(shardID, attempt, items, deadLetters):
            if let worker = workers[identity] {
                workers[identity]!.lastSeen = now
                table.shardDone(worker: worker.name, shardID: shardID, attempt: attempt, now: now)
                outputs.append(.workerFinishedShard(worker: worker.name, items: Int(items) + Int(deadLetters)))
            } else {
                unexpectedMessages += 1
            }
        case let .shardFailed(shardID, attempt, reason):
            if let worker = workers[identity] {
                workers[identity]!.lastSeen = now
                table.shardFailed(worker: worker.name, shardID: shardID, attempt: attempt,
                                  stalled: reason.hasPrefix(Message.stalledReasonPrefix), now: now)
            } else {
                unexpectedMessages += 1
            }
        case let .headHello(_, committed, plan):
            head = identity
            if plan == planFingerprint {
                for shardID in committed { outputs += try record(shardID: shardID, attempt: 0, items: 0, now: now) }
            } else if !committed.isEmpty {
                // Another job's store (or one bound to none): its shard ids name other items. The welcome
                // tells the head our plan, and it stops or binds; its commits here would lose our shards.
                ignoredAnnouncements += 1
            }
            outputs.append(.send(identity, welcome))
        case let .shardCommitted(shardID, attempt, items, deadLetters):
            head = identity
            outputs += try record(shardID: shardID, attempt: attempt, items: Int(items) + Int(deadLetters), now: now)
        default:
            unexpectedMessages += 1
        }
        return outputs
    }

    /// The plan grows (its scan published more entries) or becomes final: `checkpoint`, the scan prefix the
    /// new shards are cut from, and `seal`, the finished index of a final plan, are journaled before the
    /// table offers any new shard, so a restarted coordinator can check its rescan against them. Throws when
    /// the journal fails (the process must stop and replay).
    public func extendPlan(to plan: any ShardSource, checkpoint: ScanCheckpoint? = nil, seal: CoordinatorJournal.Seal? = nil) throws {
        if let checkpoint { try journal.append(checkpoint) }
        if let seal { try journal.append(seal) }
        table.extend(to: plan)
    }

    /// Advances time: lease expiries and dead workers, heartbeats, and the shutdown once the job is complete.
    /// Poison verdicts are journaled here; throws when the journal fails (the process must stop and replay).
    public func tick(now: UInt64) throws -> [CoordinatorOutput] {
        let events = table.tick(now: now)
        for case let .poisoned(verdict, _) in events { try journal.append(verdict) }
        var outputs = events.map(CoordinatorOutput.event)
        // Long dead: forget the identity too, so identities cannot pile up.
        workers = workers.filter { now < $0.value.lastSeen || now - $0.value.lastSeen < 4 * settings.lease.workerDeadAfterMs }
        guard lastBeatAt.map({ now < $0 || now - $0 >= settings.heartbeatMs }) ?? true else { return outputs }
        lastBeatAt = now
        let peers = workers.keys.sorted { $0.lexicographicallyPrecedes($1) } + (head.map { [$0] } ?? [])
        if table.isComplete {
            if completeAt == nil { completeAt = now }
            for identity in peers { outputs.append(.send(identity, .shutdown(reason: "job complete"))) }
            // Linger so every peer hears it (they also learn it from their next request).
            if now - completeAt! >= 2 * settings.heartbeatMs { outputs.append(.finished) }
        } else {
            for identity in peers { outputs.append(.send(identity, .heartbeat(epoch: epoch, sequence: now))) }
        }
        return outputs
    }

    private var welcome: Message {
        .welcome(epoch: epoch, headAddress: settings.headAddress, heartbeatIntervalMs: UInt32(clamping: settings.heartbeatMs),
                 deadAfterBeats: UInt32(clamping: settings.deadAfterBeats), plan: planFingerprint)
    }

    private func makeRoomForAWorker() {
        guard workers.count >= settings.maxWorkers,
              let idlest = workers.min(by: { a, b in
                  a.value.lastSeen != b.value.lastSeen ? a.value.lastSeen < b.value.lastSeen : a.key.lexicographicallyPrecedes(b.key)
              })?.key else { return }
        workers.removeValue(forKey: idlest)
        displacedWorkers += 1
    }

    /// Journals a commit before anything acts on it, so a crash never forgets an acknowledged shard.
    private func record(shardID: UInt32, attempt: UInt32, items: Int, now: UInt64) throws -> [CoordinatorOutput] {
        guard journal.mayCommit(shardID: shardID) else {
            unexpectedMessages += 1
            return []
        }
        if !journal.committed.contains(shardID) { try journal.append(shardID: shardID, attempt: attempt) }
        guard table.committed(shardID: shardID, attempt: attempt, now: now) else { return [] }
        return [.committed(shardID: shardID, items: items)]
    }
}
