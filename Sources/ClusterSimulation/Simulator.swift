import ClusterSessions
import Coordination
import DatasetIndex
import FeatStreamTestSupport
import FeatureCodec
import FeatureStore
import Foundation
import WireProtocol

/// A broken promise the simulator found, with the line that reproduces it.
public struct SimulationViolation: Error, CustomStringConvertible {
    /// The seed whose schedule broke it.
    public let seed: UInt64
    /// Simulated milliseconds at which it was seen.
    public let time: UInt64
    /// What broke.
    public let invariant: String

    /// One line: what broke, when, and the command that replays exactly this schedule.
    public var description: String {
        "seed \(seed) violated '\(invariant)' at \(time) ms; reproduce: swift run -c release featstream-sim --seed \(seed) --trace"
    }
}

/// What one seed's run did, for coverage checks and the campaign summary.
public struct SimulationOutcome: Sendable {
    /// Simulated milliseconds until the job finished.
    public var finishedAt: UInt64 = 0
    /// Items in the plan, stored rows, dead letters.
    public var items = 0, rows = 0, deadLetters = 0
    /// Faults injected, by kind.
    public var faults: [String: Int] = [:]
    /// Batches the head refused for lack of credit, late batches re-acknowledged, and so on.
    public var head = HeadSessionCounters()
    /// Items that are not poison but were found so while injected faults killed the workers probing them.
    public var condemnedByFaults = 0
    /// Whether the plan grew while a simulated scan ran (JOURNAL.md version 4) rather than being fixed at start.
    public var grewPlan = false
}

/// A deterministic simulation of a whole job: one coordinator, one head and several workers, each the real
/// session state machine (`CoordinatorSession` with the real `LeaseTable` and `CoordinatorJournal`,
/// `HeadSession` with the real `ShardLedger` and `FeatureStore`, `WorkerSession`), over a simulated network
/// and clock that a seeded generator fills with faults: message loss, duplication, delay and reordering,
/// partitions between any two roles, crashes and restarts of any role (torn store tails and journal records
/// included), full disks and failing syncs, and poison items that crash or hang every worker that decodes
/// them (a supervisor restarts such workers).
///
/// The files are real (in a temporary folder, on tmpfs when there is one); everything else is simulated,
/// so a seed replays exactly. Checked throughout: no acknowledged shard is ever missing from the store after a
/// head restart; no worker sends beyond its credit limit; open attempts, worker tables and outboxes stay
/// within their bounds. Checked at the end: once faults stop, the job finishes within a bounded time, and
/// every item is stored exactly once as a row or a dead letter, poison items (and only they) as dead
/// letters that say so.
public final class ClusterSimulator {
    /// Per-seed knobs drawn from the seed.
    struct Schedule {
        var itemCount: Int
        var shardSize: Int
        var workerCount: Int
        var batchSize: Int
        var faultsUntil: UInt64
        var drop: Double
        var duplicate: Double
        var maxDelay: UInt64
        var crashRate: Double
        var partitionRate: Double
        var diskFaultRate: Double
        var slowExtraction: Bool
        /// Items that kill (true) or hang (false) every worker that decodes them, by index.
        var poison: [UInt64: Bool]
        /// When set, the plan grows while a simulated scan runs (JOURNAL.md version 4): each coordinator
        /// incarnation starts with no shard offered and offers 1–3 more every this-many ms, journaling a
        /// checkpoint before it offers shards beyond the last one, and the seal when all are offered.
        var scanStepMs: UInt64?
    }

    enum Node: Hashable, CustomStringConvertible {
        case coordinator, head, worker(Int)
        var description: String {
            switch self {
            case .coordinator: return "coordinator"
            case .head: return "head"
            case .worker(let slot): return "w\(slot)"
            }
        }
    }

    enum Event {
        /// A message arriving at `to` from `from` (whose connection identity is `identity`).
        case deliver(to: Node, from: Node, identity: [UInt8], generation: Int, message: Message)
        case tick(Node, generation: Int)
        case restart(Node)
        case syncDone(generation: Int, ticket: Int)
        case extractionStep(slot: Int, generation: Int, run: Int)
    }

    struct Scheduled: Comparable {
        var at: UInt64
        var order: UInt64
        var event: Event
        static func < (a: Scheduled, b: Scheduled) -> Bool { (a.at, a.order) < (b.at, b.order) }
        static func == (a: Scheduled, b: Scheduled) -> Bool { (a.at, a.order) == (b.at, b.order) }
    }

    struct WorkerNode {
        var session: WorkerSession
        var generation: Int
        var identity: [UInt8]
        var connectedToHead = false
        /// The running extraction: its items, the next offset, and a run number that cancels stale steps.
        var extraction: (shardID: UInt32, attempt: UInt32, items: [ItemRef], next: Int)?
        var run = 0
    }

    struct HeadNode {
        var session: HeadSession
        var store: FeatureStore?
        var generation: Int
        /// Prepared syncs in flight: ticket number → (ticket, the last segment's length it covers).
        var syncs: [Int: (ticket: SyncTicket, segment: URL?, length: Int)] = [:]
        var nextTicket = 0
        var syncInFlight = false
    }

    public let seed: UInt64
    let schedule: Schedule
    var rng: SplitMix64
    var now: UInt64 = 0
    var queue = MinHeap<Scheduled>()
    var order: UInt64 = 0
    let directory: URL
    let storeURL: URL
    let journalURL: URL
    let plan: ShardPlan
    let badItems: Set<UInt64>
    let trace: ((String) -> Void)?

    var coordinator: CoordinatorSession?
    var journal: CoordinatorJournal?
    var coordinatorGeneration = 0
    /// Shards this coordinator incarnation's scan has offered (growing plans), and when it offers more.
    var offeredShards = 0
    var nextScanStepAt: UInt64 = 0
    var head: HeadNode?
    var headGeneration = 0
    var workers: [WorkerNode?]
    var down: Set<Node> = []
    /// Pairs that cannot talk until the given time.
    var partitions: [(a: Node, b: Node, until: UInt64)] = []
    /// When each item was found poison (by index): a verdict on an item that is not poison is only
    /// possible while injected faults kill the workers that probe it.
    var condemnedAt: [UInt64: UInt64] = [:]
    /// Every shard the head ever acknowledged: none may be missing after any restart.
    var acknowledged: Set<UInt32> = []
    /// Durable length of the store's last segment, by file, as of the last completed sync.
    var durableLength: [URL: Int] = [:]
    var outcome = SimulationOutcome()
    var finished = false

    static let heartbeatMs: UInt64 = 100
    static let dimension = 4
    static let maxWorkers = 8
    static let settleLimitMs: UInt64 = 120_000
    /// How long after the last injected fault its effects may still revoke a probe: a lease (1 s) and a
    /// dead-worker interval (0.5 s) from a fault at the very end, with room to spare.
    static let faultEchoMs: UInt64 = 3_000
    /// Extra settling time per poison item: isolating one costs a few worker restarts and stall limits.
    static let settlePerPoisonMs: UInt64 = 90_000
    /// The workers' stall limit: above the slowest simulated batch (900 ms).
    static let stallLimitMs: UInt64 = 3_000

    /// Prepares the run for `seed` in a fresh temporary folder; `trace` receives one line per event.
    public init(seed: UInt64, trace: ((String) -> Void)? = nil) throws {
        self.seed = seed
        self.trace = trace
        var rng = SplitMix64(seed: seed)
        func pick<T: Comparable>(_ range: ClosedRange<T>) -> T where T: FixedWidthInteger { T.random(in: range, using: &rng) }
        func unit() -> Double { Double.random(in: 0..<1, using: &rng) }
        let calm = unit() < 0.1
        let itemCount = pick(1...90)
        // A quarter of the seeds have one or two poison items (never an item the scan rejected: no worker reads it).
        var poison: [UInt64: Bool] = [:]
        if unit() < 0.25 {
            for _ in 0..<pick(1...2) {
                let index = UInt64(pick(0...(itemCount - 1)))
                if index % 13 != 5 { poison[index] = unit() < 0.5 }
            }
        }
        var planned = Schedule(
            itemCount: itemCount, shardSize: pick(1...9), workerCount: pick(1...5), batchSize: pick(1...5),
            faultsUntil: calm ? 0 : pick(2_000...12_000),
            drop: unit() < 0.3 ? 0 : unit() * 0.15, duplicate: unit() < 0.5 ? 0 : unit() * 0.1,
            maxDelay: pick(1...60), crashRate: unit() * 0.0015, partitionRate: unit() * 0.001,
            diskFaultRate: unit() < 0.5 ? 0 : unit() * 0.05, slowExtraction: unit() < 0.2, poison: poison)
        // Drawn from a generator of its own, so every seed whose plan is fixed keeps the schedule it had before
        // growing plans were simulated (and the campaigns run on that simulator stay meaningful).
        var growth = SplitMix64(seed: seed ^ 0x6772_6f77_696e_6721)
        if Double.random(in: 0..<1, using: &growth) < 0.3 { planned.scanStepMs = UInt64.random(in: 5...400, using: &growth) }
        schedule = planned
        self.rng = rng
        // Some inputs were rejected by the coordinator's scan (their assignment entry says why), and some items
        // cannot be decoded: both must end as dead letters, exactly once.
        let items = (0..<schedule.itemCount).map { (position: Int) -> ItemRef in
            let locator: ItemLocator = position % 13 == 5 ? .rejected(reason: "index: simulated bad manifest line") : .file(path: "/sim/\(position)")
            return ItemRef(index: UInt64(position), key: "item\(position / 3)", label: Int32(position % 3), locator: locator)
        }
        plan = ShardPlan(items: items, shardSize: schedule.shardSize)
        let poisonItems = Set(poison.keys)
        badItems = Set((0..<UInt64(itemCount)).filter { (index: UInt64) -> Bool in
            (index % 11 == 7 || index % 13 == 5) && !poisonItems.contains(index)
        })
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
        directory = base.appendingPathComponent("featstream-sim-\(getpid())-\(seed)")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        storeURL = directory.appendingPathComponent("store")
        journalURL = directory.appendingPathComponent("journal")
        workers = Array(repeating: nil, count: schedule.workerCount)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// Runs the schedule to the end; throws the first violation.
    public func run() throws -> SimulationOutcome {
        outcome.items = schedule.itemCount
        outcome.grewPlan = schedule.scanStepMs != nil
        try startCoordinator()
        try startHead()
        for slot in 0..<schedule.workerCount { startWorker(slot) }
        let settle = Self.settleLimitMs + UInt64(schedule.poison.count) * Self.settlePerPoisonMs
        let deadline = schedule.faultsUntil + settle
        while !finished {
            guard !queue.isEmpty else { throw violation("the simulation ran out of events before the job finished") }
            let next = queue.pop()!
            now = next.at
            guard now <= deadline else { throw violation("the job did not finish within \(settle) ms after faults stopped") }
            try handle(next.event)
        }
        try checkFinalStore()
        outcome.finishedAt = now
        outcome.head = head?.session.counters ?? HeadSessionCounters()
        return outcome
    }

    // MARK: - Roles

    func startCoordinator() throws {
        coordinatorGeneration += 1
        var sessionPlan: any ShardSource = plan
        if schedule.scanStepMs != nil {
            // The job id is the plan's fingerprint, so the head's binding is checked as for a fixed plan.
            journal = try CoordinatorJournal.openGrowing(path: journalURL.path, shardSize: plan.shardSize, newJobID: plan.fingerprint | 1)
            // A sealed job's plan is final at once; otherwise the incarnation scans again from the start.
            offeredShards = journal!.seal != nil ? plan.shardCount : 0
            nextScanStepAt = now
            sessionPlan = ShardPlanPrefix(plan, shardCount: offeredShards, isFinal: journal!.seal != nil, fingerprint: plan.fingerprint | 1)
        } else {
            journal = try CoordinatorJournal.open(path: journalURL.path, plan: plan)
        }
        let settings = CoordinatorSessionSettings(
            lease: LeaseSettings(leaseMs: 1_000, commitWaitMs: 800, workerDeadAfterMs: 5 * Self.heartbeatMs,
                                 maxAttemptsInFlight: 2, stallAfterMs: 60_000, idleRetryMs: 50),
            heartbeatMs: Self.heartbeatMs, deadAfterBeats: 5, headAddress: "sim://head", maxWorkers: Self.maxWorkers)
        coordinator = CoordinatorSession(epoch: rng.next() | 1, plan: sessionPlan, settings: settings, journal: journal!)
        down.remove(.coordinator)
        schedule(.tick(.coordinator, generation: coordinatorGeneration), after: 1)
        log("coordinator started (generation \(coordinatorGeneration)); journal has \(journal!.committed.count) commits")
    }

    func startHead() throws {
        headGeneration += 1
        var store: FeatureStore?
        if FileManager.default.fileExists(atPath: storeURL.appendingPathComponent("store.json").path) {
            store = try FeatureStore.open(at: storeURL, forWriting: true, segmentLimit: 2_048)
            let missing = acknowledged.subtracting(store!.committedShards)
            if !missing.isEmpty { throw violation("acknowledged shards \(missing.sorted()) are missing from the reopened store") }
            if let last = try lastSegment() { durableLength[last] = fileLength(last) }
        }
        var settings = HeadSessionSettings()
        settings.heartbeatMs = Self.heartbeatMs
        settings.creditWindow = 2
        settings.maxWorkers = Self.maxWorkers
        var session = HeadSession(epoch: rng.next() | 1, dtype: .f16, dimension: store?.dimension,
                                  committed: store?.committedShards ?? [], plan: try JobPlanBinding.read(root: storeURL), settings: settings)
        let outputs = session.start(now: now)
        head = HeadNode(session: session, store: store, generation: headGeneration)
        down.remove(.head)
        try perform(outputs, at: .head)
        schedule(.tick(.head, generation: headGeneration), after: 1)
        log("head started (generation \(headGeneration)); store holds \(store?.committedShards.count ?? 0) shards")
    }

    func startWorker(_ slot: Int) {
        let generation = (workers[slot]?.generation ?? 0) + 1
        // A restarted worker is a new process: a new incarnation (the generation), the same pid (a restart that
        // reuses a pid must still count as one).
        var session = WorkerSession(workerID: "w\(slot)", host: "sim", pid: UInt32(slot), incarnation: UInt64(generation),
                                    outboxLimit: 2, stallLimitMs: Self.stallLimitMs)
        let outputs = session.start(now: now)
        workers[slot] = WorkerNode(session: session, generation: generation, identity: Array("w\(slot).\(generation)".utf8))
        down.remove(.worker(slot))
        try? perform(outputs, at: .worker(slot))
        schedule(.tick(.worker(slot), generation: generation), after: UInt64.random(in: 1...20, using: &rng))
    }

    func crash(_ node: Node, kind: String? = nil) throws {
        guard !down.contains(node), !finished else { return }
        down.insert(node)
        outcome.faults[kind ?? "crash \(nodeKind(node))", default: 0] += 1
        log("CRASH \(node)")
        switch node {
        case .coordinator:
            coordinator = nil
            journal?.close()
            journal = nil
            if chance(0.3) {
                // Torn mid-write: a partial record at the journal's end, which the next open must cut off.
                let handle = try FileHandle(forWritingTo: journalURL)
                handle.seekToEndOfFile()
                handle.write(Data([0x11, 0x00, 0x00, 0x00, 0xAB, 0xCD]))
                try handle.close()
            }
        case .head:
            head = nil
            try tearLastSegment()
        case .worker(let slot):
            workers[slot]!.run += 1
            workers[slot]!.extraction = nil
        }
        schedule(.restart(node), after: UInt64.random(in: 50...1_500, using: &rng))
    }

    // MARK: - Events

    func handle(_ event: Event) throws {
        switch event {
        case let .deliver(to, from, identity, generation, message):
            guard !down.contains(to), generationMatches(to, generation) else { return }
            try deliver(message, to: to, from: from, identity: identity)
        case let .tick(node, generation):
            guard !down.contains(node), generationMatches(node, generation) else { return }
            try tick(node)
            if !finished { schedule(.tick(node, generation: generation), after: UInt64.random(in: 10...40, using: &rng)) }
            if faulty && chance(schedule.crashRate) { try crash(node) }
            if faulty && chance(schedule.partitionRate) { partitionSomePair() }
        case .restart(let node):
            switch node {
            case .coordinator: try startCoordinator()
            case .head: try startHead()
            case .worker(let slot): startWorker(slot)
            }
        case let .syncDone(generation, ticket):
            guard !down.contains(.head), headGeneration == generation, head != nil else { return }
            try completeSync(ticket)
        case let .extractionStep(slot, generation, run):
            guard !down.contains(.worker(slot)), let worker = workers[slot], worker.generation == generation, worker.run == run else { return }
            try extractionStep(slot)
        }
    }

    func generationMatches(_ node: Node, _ generation: Int) -> Bool {
        switch node {
        case .coordinator: return generation == coordinatorGeneration
        case .head: return generation == headGeneration
        case .worker(let slot): return workers[slot]?.generation == generation
        }
    }

    func tick(_ node: Node) throws {
        switch node {
        case .coordinator:
            if let step = schedule.scanStepMs, offeredShards < plan.shardCount || !coordinator!.table.isPlanFinal, now >= nextScanStepAt {
                try scanStep(every: step)
            }
            let outputs: [CoordinatorOutput]
            do { outputs = try coordinator!.tick(now: now) } catch {
                throw violation("the coordinator's journal failed: \(error)")
            }
            try perform(outputs)
        case .head:
            let outputs = head!.session.tick(now: now)
            try perform(outputs, at: .head)
            try startSyncIfDue()
        case .worker(let slot):
            let outputs = workers[slot]!.session.tick(now: now)
            try perform(outputs, at: node)
        }
    }

    /// The simulated scan passes 1–3 more shards (a rescan passes those offered before again): the
    /// checkpoint of a prefix beyond the journal's last one is journaled before it is offered, the seal with
    /// the last shards. The checkpoint's digest stands for the prefix's content (the dataset never changes
    /// here; the real scan's check of it is `CheckpointTests`).
    func scanStep(every step: UInt64) throws {
        nextScanStepAt = now + UInt64.random(in: 1...(2 * step), using: &rng)
        offeredShards = min(plan.shardCount, offeredShards + Int.random(in: 1...3, using: &rng))
        let entries = offeredShards == plan.shardCount ? plan.itemCount : offeredShards * plan.shardSize
        let final = offeredShards == plan.shardCount
        let isNew = UInt64(entries) > (journal!.checkpoints.last?.entries ?? 0) && journal!.seal == nil
        let checkpoint = isNew ? ScanCheckpoint(items: UInt64(entries), deadLetters: 0, recordsCRC: UInt32(truncatingIfNeeded: plan.fingerprint),
                                                keysCRC: UInt32(entries), deadLettersCRC: 0) : nil
        let seal = final && journal!.seal == nil ? CoordinatorJournal.Seal(contentID: plan.fingerprint, entries: UInt64(plan.itemCount)) : nil
        do {
            try coordinator!.extendPlan(to: ShardPlanPrefix(plan, shardCount: offeredShards, isFinal: final, fingerprint: plan.fingerprint | 1),
                                        checkpoint: checkpoint, seal: seal)
        } catch {
            throw violation("the coordinator's journal failed: \(error)")
        }
        log("scan offers \(offeredShards)/\(plan.shardCount) shards\(checkpoint != nil ? " (checkpoint journaled)" : "")\(seal != nil ? " (sealed)" : "")")
    }

    func deliver(_ message: Message, to node: Node, from: Node, identity: [UInt8]) throws {
        switch node {
        case .coordinator:
            let outputs: [CoordinatorOutput]
            do { outputs = try coordinator!.receive(message, from: identity, now: now) } catch {
                throw violation("the coordinator's journal failed: \(error)")
            }
            if faulty && chance(schedule.crashRate * 20), !outputs.isEmpty {
                // Crash after acting (journal written) and before any answer left.
                try crash(.coordinator)
                return
            }
            try perform(outputs)
        case .head:
            guard var head else { return }
            var outputs: [HeadOutput]
            switch message {
            case let .hello(workerID, _, _, capabilities):
                outputs = head.session.workerHello(from: identity, name: workerID, batchesSent: DataHello.sent(capabilities),
                                                   plan: DataHello.plan(capabilities), now: now)
            case .heartbeat:
                if from == .coordinator { outputs = head.session.receiveControl(message, now: now) } else {
                    head.session.workerHeartbeat(from: identity, now: now)
                    outputs = []
                }
            case .featureBatch(let batch):
                if head.session.admitBatch(from: identity, now: now) {
                    let decoded = Result { try DecodedBatch(decoding: batch, as: .f16) }
                    outputs = head.session.receiveBatch(from: identity, batch: batch, decoded: decoded, now: now)
                } else {
                    outputs = []
                }
            default:
                outputs = head.session.receiveControl(message, now: now)
            }
            self.head = head
            try perform(outputs, at: .head)
            try startSyncIfDue()
        case .worker(let slot):
            let outputs = from == .coordinator ? workers[slot]!.session.receiveControl(message, now: now)
                : workers[slot]!.session.receiveData(message, now: now)
            try perform(outputs, at: node)
        }
    }

    // MARK: - Outputs

    func perform(_ outputs: [CoordinatorOutput]) throws {
        for output in outputs {
            switch output {
            case let .send(identity, message):
                guard let target = node(forIdentity: identity) else { continue }
                send(message, from: .coordinator, to: target, identity: [])
            case .finished:
                finished = true
            case .event(let event):
                log("coordinator: \(event)")
                if case let .poisoned(verdict, _) = event {
                    condemnedAt[plan.shards[Int(verdict.shardID)].items[Int(verdict.offset)].index] = now
                }
            case .committed, .leased, .workerJoined, .workerFinishedShard:
                break
            }
        }
        if let coordinator, coordinator.workerCount > Self.maxWorkers {
            throw violation("the coordinator tracks \(coordinator.workerCount) workers, more than \(Self.maxWorkers)")
        }
    }

    func perform(_ outputs: [HeadOutput], at _: Node) throws {
        for output in outputs {
            guard var head else { return }
            switch output {
            case .toCoordinator(let message):
                if case .shardCommitted(let shardID, _, _, _) = message {
                    guard head.store?.committedShards.contains(shardID) == true else {
                        throw violation("the head acknowledged shard \(shardID) before it was durable")
                    }
                    acknowledged.insert(shardID)
                }
                send(message, from: .head, to: .coordinator, identity: Array("head.\(headGeneration)".utf8))
            case let .toWorker(identity, message):
                guard let target = node(forIdentity: identity) else { continue }
                send(message, from: .head, to: target, identity: [])
            case .effect(let effect):
                switch effect {
                case .createStore(let dimension):
                    head.store = try FeatureStore.create(at: storeURL, dtype: .f16, dimension: dimension, segmentLimit: 2_048)
                    self.head = head
                case let .append(shardID, attempt, contents):
                    if faulty && chance(schedule.diskFaultRate) {
                        outcome.faults["disk full", default: 0] += 1
                        try perform(self.head!.session.appendFailed(shardID: shardID, now: now), at: .head)
                        continue
                    }
                    let stored = try head.store!.append(contents, shardID: shardID, attempt: attempt)
                    try perform(self.head!.session.appended(shardID: shardID, stored: stored, now: now), at: .head)
                case .committed:
                    break
                case .jobComplete:
                    break
                case .bindPlan(let plan):
                    try JobPlanBinding.write(plan, root: storeURL)
                case let .planMismatch(storePlan, coordinatorPlan):
                    throw violation("the head's store is bound to plan \(storePlan), the coordinator serves \(coordinatorPlan)")
                }
            }
        }
        if let head {
            if head.session.openAttempts > Self.maxWorkers { throw violation("the head buffers \(head.session.openAttempts) attempts") }
            if head.session.workerCount > Self.maxWorkers { throw violation("the head tracks \(head.session.workerCount) workers") }
        }
    }

    func perform(_ outputs: [WorkerOutput], at node: Node) throws {
        guard case .worker(let slot) = node else { return }
        for output in outputs {
            guard var worker = workers[slot] else { return }
            switch output {
            case .toCoordinator(let message):
                send(message, from: node, to: .coordinator, identity: worker.identity)
            case .toHead(let message):
                guard worker.connectedToHead else { continue }
                send(message, from: node, to: .head, identity: worker.identity)
            case .effect(let effect):
                switch effect {
                case .connectHead:
                    worker.connectedToHead = true
                case let .extract(shardID, attempt, items):
                    worker.run += 1
                    worker.extraction = (shardID, attempt, items, 0)
                    schedule(.extractionStep(slot: slot, generation: worker.generation, run: worker.run), after: extractionDelay())
                case .cancelExtraction:
                    worker.run += 1
                    worker.extraction = nil
                case .stop:
                    down.insert(node)
                case .abort:
                    // The process exits with its stuck extraction; the supervisor starts a fresh one.
                    down.insert(node)
                    outcome.faults["stalled worker restarted", default: 0] += 1
                    worker.run += 1
                    worker.extraction = nil
                    schedule(.restart(node), after: UInt64.random(in: 250...1_000, using: &rng))
                }
                workers[slot] = worker
            }
        }
        if let worker = workers[slot], worker.session.batchesSent > worker.session.creditLimit {
            throw violation("worker w\(slot) sent \(worker.session.batchesSent) batches on a limit of \(worker.session.creditLimit)")
        }
    }

    // MARK: - Checks and helpers

    func checkFinalStore() throws {
        head = nil
        let store = try FeatureStore.open(at: storeURL, verifyChecksums: true)
        let missing = acknowledged.subtracting(store.committedShards)
        if !missing.isEmpty { throw violation("acknowledged shards \(missing.sorted()) are missing from the final store") }
        let shards = plan.shards
        let report = store.exactlyOnceReport(expectedIndexes: 0..<UInt64(schedule.itemCount)) { shardID, entry in
            shards[Int(shardID)].items[Int(entry.offset)].index
        }
        guard report.missing.isEmpty, report.duplicated.isEmpty, report.unexpected.isEmpty, report.unresolvedDeadLetters == 0 else {
            throw violation("not exactly once: missing \(report.missing.prefix(8)), duplicated \(Array(report.duplicated.keys.sorted().prefix(8))), unexpected \(report.unexpected.prefix(8))")
        }
        let letters = try store.deadLetters()
        let deadIndexes = Set(letters.map { shards[Int($0.shardID)].items[Int($0.entry.offset)].index })
        // An item that is not poison can still be found so when injected faults kill every worker that probes
        // it alone, lossLimit times over (the cost of isolating by losses); never once the faults stop.
        let condemnedByFaults = Set(condemnedAt.filter { schedule.poison[$0.key] == nil && $0.value < schedule.faultsUntil + Self.faultEchoMs }.keys)
        let expected = badItems.union(schedule.poison.keys).union(condemnedByFaults)
        guard deadIndexes == expected else {
            throw violation("dead letters \(deadIndexes.sorted()) are not the bad, poison and fault-condemned items \(expected.sorted())")
        }
        for letter in letters {
            let index = shards[Int(letter.shardID)].items[Int(letter.entry.offset)].index
            let saysPoison = letter.entry.reason.hasPrefix("poison:")
            if saysPoison != (schedule.poison[index] != nil || condemnedByFaults.contains(index)) {
                throw violation("item \(index) was dead-lettered as '\(letter.entry.reason)' but is \(schedule.poison[index] == nil ? "not " : "")poison"
                                + (condemnedAt[index].map { " (condemned at \($0) ms, faults until \(schedule.faultsUntil) ms)" } ?? ""))
            }
        }
        outcome.condemnedByFaults = condemnedByFaults.count
        outcome.rows = report.rows
        outcome.deadLetters = report.deadLetters
    }

    func violation(_ text: String) -> SimulationViolation {
        SimulationViolation(seed: seed, time: now, invariant: text)
    }

    func chance(_ p: Double) -> Bool { p > 0 && Double.random(in: 0..<1, using: &rng) < p }

    func nodeKind(_ node: Node) -> String {
        if case .worker = node { return "worker" }
        return node.description
    }

    func schedule(_ event: Event, after delay: UInt64) {
        order += 1
        queue.push(Scheduled(at: now + delay, order: order, event: event))
    }

    func brief(_ message: Message) -> String {
        switch message {
        case .featureBatch(let b): return "batch(shard \(b.shardID) attempt \(b.attempt) offsets \(b.offsets) dead \(b.deadLetters.map(\.offset)))"
        case .assignment(let shardID, let attempt, _, let items): return "assignment(shard \(shardID) attempt \(attempt), \(items.count) items)"
        case .probe(let shardID, let attempt, _, let items): return "probe(shard \(shardID) attempt \(attempt), items \(items.map(\.index)))"
        case .headHello(_, let committed, let plan): return "headHello(\(committed.count) committed, plan \(plan))"
        case .welcome: return "welcome"
        default: return "\(message)"
        }
    }

    func log(_ text: String) {
        trace?("\(now) \(text)")
    }
}
