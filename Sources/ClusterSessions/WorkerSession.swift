import WireProtocol

/// Something the worker's driver must do for the session.
public enum WorkerEffect: Equatable, Sendable {
    /// Connect the data socket to the head at this address (once, after the first `welcome`).
    case connectHead(String)
    /// Extract these items as shard `shardID` attempt `attempt`: hand each batch to `batchReady` (item *k*
    /// of `items` has offset *k*), then call `extractionFinished`. The driver runs it beside the session, so
    /// heartbeats go on while a long shard is extracted.
    case extract(shardID: UInt32, attempt: UInt32, items: [ItemRef])
    /// Stop the running extraction; its batches are no longer wanted.
    case cancelExtraction
    /// The worker is done (job complete, told to stop, or SIGTERM): exit.
    case stop(reason: String)
    /// The extraction is stuck (no batch for the stall limit) and a thread cannot be cancelled: exit at
    /// once with a failure status, without waiting for it, so that a supervisor starts a fresh process.
    case abort(reason: String)
}

/// What the worker sends, and what its driver must do.
public enum WorkerOutput: Equatable, Sendable {
    /// A message for the coordinator (control socket).
    case toCoordinator(Message)
    /// A message for the head (data socket).
    case toHead(Message)
    /// Work for the driver.
    case effect(WorkerEffect)
}

/// The worker's protocol rules as a pure state machine (PROTOCOL.md §8): fed coordinator and head messages,
/// finished extraction work and the time; it answers with messages and effects.
///
/// Rules it owns: `hello` until `welcome` (and again on a new coordinator epoch, or when a request goes
/// unanswered); one shard at a time, requested when idle; heartbeats to both peers every interval,
/// whatever the extraction is doing; batches leave only within the head's cumulative credit limit, and a
/// stalled worker re-sends its data-plane `hello` with its count of batches sent; `shardDone` only after
/// the attempt's last batch left; a probe's batches are dropped, not sent, and its `shardDone` follows its
/// last item; an extraction that hands over no batch for `stallLimitMs` while it may (credits allowing) gives
/// the shard up as `stalled:` and aborts the process; on SIGTERM the current shard is given up
/// (`shardFailed`) and the worker stops at once, whether or not any peer answers.
public struct WorkerSession: Sendable {
    private enum Phase: Equatable, Sendable {
        case introducing
        case idle(requestAt: UInt64)
        case requesting(sentAt: UInt64)
        /// `probing`: a probe (§8.3.7), whose batches go nowhere.
        case working(shardID: UInt32, attempt: UInt32, rows: UInt32, deadLetters: UInt32, extracted: Bool, probing: Bool)
        case stopped
    }

    /// The worker's name (unique within the job).
    public let workerID: String
    private let host: String
    private let pid: UInt32
    private let capabilities: [String: String]
    /// Batches extracted and waiting for credits; the driver keeps it short (`wantsMoreBatches`).
    private var outbox: [FeatureBatch] = []
    /// Most batches waiting for credits before the driver should pause extraction.
    public let outboxLimit: Int
    private var phase = Phase.introducing
    private var coordinatorEpoch: UInt64 = 0
    private var headAddress: String?
    private var headEpoch: UInt64 = 0
    /// Batches sent to the current head epoch, and the cumulative limit it granted.
    public private(set) var batchesSent: UInt64 = 0
    public private(set) var creditLimit: UInt64 = 0
    private var heartbeatMs: UInt64 = 500
    private var lastControlHelloAt: UInt64 = 0
    private var lastBeatAt: UInt64?
    private var stalledSince: UInt64?
    private var lastDataHelloAt: UInt64 = 0
    /// The job's shard plan, from the coordinator's `welcome`; declared to the head, which credits only
    /// workers of its store's plan.
    private var plan: UInt64?
    /// How long the extraction may go without handing over a batch (while credits let it) before the
    /// worker declares it stuck.
    public let stallLimitMs: UInt64
    private var lastProgressAt: UInt64 = 0

    /// A session for a worker; `capabilities` go in its `hello` (model, batch size) beside the protocol
    /// version (`fswp`) and `incarnation`, which must differ between processes (and between restarts) of
    /// the same worker, so the coordinator counts a restart, and only a restart, as a loss (§8.3.7).
    public init(workerID: String, host: String, pid: UInt32, incarnation: UInt64, capabilities: [String: String] = [:],
                outboxLimit: Int = 2, stallLimitMs: UInt64 = 300_000) {
        self.workerID = workerID
        self.host = host
        self.pid = pid
        self.capabilities = capabilities.merging([FrameCodec.versionCapability.key: FrameCodec.versionCapability.value,
                                                  Message.incarnationCapability: Self.incarnationText(incarnation)]) { $1 }
        self.outboxLimit = max(1, outboxLimit)
        self.stallLimitMs = stallLimitMs
    }

    /// `incarnation` as the `hello` capability carries it: 16 hex digits.
    static func incarnationText(_ incarnation: UInt64) -> String {
        let hex = String(incarnation, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// True once the session has stopped.
    public var isStopped: Bool { phase == .stopped }

    /// The shard being worked on, if any.
    public var currentShard: (shardID: UInt32, attempt: UInt32)? {
        if case let .working(shardID, attempt, _, _, _, _) = phase { return (shardID, attempt) }
        return nil
    }

    /// Whether the extraction may hand over another batch now (backpressure from the head's credits).
    public var wantsMoreBatches: Bool { outbox.count < outboxLimit }

    // MARK: - Inputs

    /// Starts the session: says hello to the coordinator.
    public mutating func start(now: UInt64) -> [WorkerOutput] {
        lastControlHelloAt = now
        return [.toCoordinator(hello)]
    }

    /// A message from the coordinator.
    public mutating func receiveControl(_ message: Message, now: UInt64) -> [WorkerOutput] {
        guard phase != .stopped else { return [] }
        var outputs: [WorkerOutput] = []
        switch message {
        case let .welcome(epoch, address, interval, _, plan):
            coordinatorEpoch = epoch
            self.plan = plan
            heartbeatMs = UInt64(max(interval, 10))
            if headAddress == nil {
                headAddress = address
                outputs.append(.effect(.connectHead(address)))
                outputs.append(dataHello(now: now))
            }
            if phase == .introducing { phase = .idle(requestAt: now) }
            if case .requesting = phase { phase = .idle(requestAt: now) }
            outputs += advance(now: now)
        case .heartbeat(let epoch, _):
            if epoch != coordinatorEpoch {
                // A coordinator we have not introduced ourselves to (it restarted): hello again, keep working.
                coordinatorEpoch = epoch
                lastControlHelloAt = now
                outputs.append(.toCoordinator(hello))
            }
        case let .assignment(shardID, attempt, _, items), let .probe(shardID, attempt, _, items):
            guard case .requesting = phase else {
                // Not asked for (a duplicate, or an answer to a request that timed out): give it back at once.
                outputs.append(.toCoordinator(.shardFailed(shardID: shardID, attempt: attempt, reason: "busy: not requested")))
                break
            }
            var probing = false
            if case .probe = message { probing = true }
            phase = .working(shardID: shardID, attempt: attempt, rows: 0, deadLetters: 0, extracted: false, probing: probing)
            lastProgressAt = now
            outputs.append(.effect(.extract(shardID: shardID, attempt: attempt, items: items)))
        case .noWork(let retry):
            if case .requesting = phase { phase = .idle(requestAt: now + UInt64(retry)) }
        case .shutdown(let reason):
            outputs += stop(reason: reason)
        default:
            break
        }
        return outputs
    }

    /// A message from the head.
    public mutating func receiveData(_ message: Message, now: UInt64) -> [WorkerOutput] {
        guard phase != .stopped else { return [] }
        switch message {
        case let .credit(epoch, limit):
            if epoch != headEpoch { startHeadSession(epoch) }
            creditLimit = max(creditLimit, UInt64(limit))
            return flush(now: now)
        case .heartbeat(let epoch, _):
            if headEpoch != 0 && epoch != headEpoch {
                // The head restarted: its credits died with it; open a new session now.
                startHeadSession(epoch)
                return [dataHello(now: now)]
            }
            return []
        default:
            return []
        }
    }

    /// The extraction produced a batch of the current attempt (ignored if that attempt is no longer current).
    public mutating func batchReady(_ batch: FeatureBatch, now: UInt64) -> [WorkerOutput] {
        guard case let .working(shardID, attempt, rows, dead, extracted, probing) = phase,
              batch.shardID == shardID, batch.attempt == attempt, !extracted else { return [] }
        phase = .working(shardID: shardID, attempt: attempt, rows: rows + UInt32(batch.offsets.count),
                         deadLetters: dead + UInt32(batch.deadLetters.count), extracted: false, probing: probing)
        lastProgressAt = now
        // A probe only has to survive its items: its rows are not wanted anywhere.
        if !probing { outbox.append(batch) }
        return flush(now: now)
    }

    /// The extraction of the current attempt handed over its last batch.
    public mutating func extractionFinished(shardID: UInt32, attempt: UInt32, now: UInt64) -> [WorkerOutput] {
        guard case let .working(current, currentAttempt, rows, dead, _, probing) = phase, current == shardID, currentAttempt == attempt
        else { return [] }
        phase = .working(shardID: shardID, attempt: attempt, rows: rows, deadLetters: dead, extracted: true, probing: probing)
        return flush(now: now)
    }

    /// The extraction could not run at all (the items are not in this worker's dataset, say).
    public mutating func extractionFailed(shardID: UInt32, attempt: UInt32, reason: String, now: UInt64) -> [WorkerOutput] {
        guard case let .working(current, currentAttempt, _, _, _, _) = phase, current == shardID, currentAttempt == attempt
        else { return [] }
        outbox = []
        phase = .idle(requestAt: now + heartbeatMs)
        return [.toCoordinator(.shardFailed(shardID: shardID, attempt: attempt, reason: reason))]
    }

    /// SIGTERM: give the current shard back and stop, without waiting for any peer.
    public mutating func terminate(now: UInt64) -> [WorkerOutput] {
        guard phase != .stopped else { return [] }
        var outputs: [WorkerOutput] = []
        if let (shardID, attempt) = currentShard {
            outputs.append(.effect(.cancelExtraction))
            outputs.append(.toCoordinator(.shardFailed(shardID: shardID, attempt: attempt, reason: "draining: SIGTERM")))
        }
        phase = .stopped
        outbox = []
        outputs.append(.effect(.stop(reason: "SIGTERM")))
        return outputs
    }

    /// Advances time: heartbeats, hello retries, credit-stall hellos, shard requests and the stall watchdog.
    public mutating func tick(now: UInt64) -> [WorkerOutput] {
        guard phase != .stopped else { return [] }
        var outputs: [WorkerOutput] = []
        if case let .working(shardID, attempt, _, _, false, _) = phase, outbox.count < outboxLimit,
           now >= lastProgressAt, now - lastProgressAt >= stallLimitMs {
            // The extraction may hand over a batch and has not for the whole limit: an input hangs it (a
            // FIFO, a dead mount, a decoder in a loop). Its thread cannot be stopped, so the process goes,
            // and the coordinator counts the attempt as lost (a poison item is isolated that way, §8.3.7).
            let reason = "\(Message.stalledReasonPrefix) no batch for \(stallLimitMs / 1000) s"
            phase = .stopped
            outbox = []
            return [.toCoordinator(.shardFailed(shardID: shardID, attempt: attempt, reason: reason)),
                    .effect(.abort(reason: "extraction of shard \(shardID) attempt \(attempt) handed over no batch for \(stallLimitMs / 1000) s"))]
        }
        if phase == .introducing, now >= lastControlHelloAt + 1000 {
            lastControlHelloAt = now
            outputs.append(.toCoordinator(hello))
        }
        if case .requesting(let sentAt) = phase, now >= sentAt + 5000 {
            // No answer: the coordinator may be restarting, or may have forgotten us. Introduce ourselves again.
            lastControlHelloAt = now
            outputs.append(.toCoordinator(hello))
            phase = .idle(requestAt: now)
        }
        if lastBeatAt.map({ now < $0 || now - $0 >= heartbeatMs }) ?? true {
            lastBeatAt = now
            if coordinatorEpoch != 0 { outputs.append(.toCoordinator(.heartbeat(epoch: coordinatorEpoch, sequence: now))) }
            if headAddress != nil { outputs.append(.toHead(.heartbeat(epoch: headEpoch, sequence: now))) }
        }
        // Out of credits for a whole interval: the head may have restarted, or a credit was lost.
        if headAddress != nil, batchesSent >= creditLimit {
            if stalledSince == nil { stalledSince = now }
            if now >= stalledSince! + heartbeatMs, now >= lastDataHelloAt + heartbeatMs { outputs.append(dataHello(now: now)) }
        } else {
            stalledSince = nil
        }
        outputs += advance(now: now)
        return outputs
    }

    // MARK: - Internals

    private var hello: Message {
        .hello(workerID: workerID, host: host, pid: pid, capabilities: capabilities)
    }

    private mutating func dataHello(now: UInt64) -> WorkerOutput {
        lastDataHelloAt = now
        return .toHead(.hello(workerID: workerID, host: host, pid: pid, capabilities: DataHello.capabilities(sent: batchesSent, plan: plan)))
    }

    private mutating func startHeadSession(_ epoch: UInt64) {
        headEpoch = epoch
        batchesSent = 0
        creditLimit = 0
    }

    /// Sends what the credits allow; once the attempt's last batch is out, reports `shardDone`.
    private mutating func flush(now: UInt64) -> [WorkerOutput] {
        var outputs: [WorkerOutput] = []
        while !outbox.isEmpty, batchesSent < creditLimit {
            outputs.append(.toHead(.featureBatch(outbox.removeFirst())))
            batchesSent += 1
            // Room in the outbox again: the extraction's next batch is due from now.
            lastProgressAt = now
        }
        if case let .working(shardID, attempt, rows, dead, true, _) = phase, outbox.isEmpty {
            outputs.append(.toCoordinator(.shardDone(shardID: shardID, attempt: attempt, items: rows, deadLetters: dead)))
            phase = .idle(requestAt: now)
            outputs += advance(now: now)
        }
        return outputs
    }

    /// Asks for a shard when idle and due.
    private mutating func advance(now: UInt64) -> [WorkerOutput] {
        guard case .idle(let requestAt) = phase, now >= requestAt, coordinatorEpoch != 0 else { return [] }
        phase = .requesting(sentAt: now)
        return [.toCoordinator(.shardRequest(workerID: workerID))]
    }

    private mutating func stop(reason: String) -> [WorkerOutput] {
        var outputs: [WorkerOutput] = []
        if let (shardID, attempt) = currentShard {
            outputs.append(.effect(.cancelExtraction))
            outputs.append(.toCoordinator(.shardFailed(shardID: shardID, attempt: attempt, reason: "stopping: \(reason)")))
        }
        phase = .stopped
        outbox = []
        outputs.append(.effect(.stop(reason: reason)))
        return outputs
    }
}
