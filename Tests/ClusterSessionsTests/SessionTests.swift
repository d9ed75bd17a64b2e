import ClusterSessions
import FeatureCodec
import Coordination
import DatasetIndex
import FeatureStore
import WireProtocol
import XCTest

/// Each protocol rule of the sessions, driven by hand with messages and the time.
final class HeadSessionTests: XCTestCase {
    let worker: [UInt8] = Array("w0".utf8)

    /// A head whose store is bound to `plan`, welcomed by a coordinator of that plan unless `welcomed` is false.
    func session(window: UInt32 = 2, committed: Set<UInt32> = [], plan: UInt64? = 1, welcomed: Bool = true) -> HeadSession {
        var settings = HeadSessionSettings()
        settings.creditWindow = window
        settings.heartbeatMs = 100
        var head = HeadSession(epoch: 7, dtype: .f32, dimension: 2, committed: committed, plan: plan, settings: settings)
        if welcomed, let plan {
            _ = head.receiveControl(.welcome(epoch: 99, headAddress: "", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: plan), now: 0)
        }
        return head
    }

    /// Issue 13 item 10: an unbound store grants nothing until the first welcome names the plan, which it
    /// records before granting; a welcome naming another plan stops the head with both plans named.
    func testAStoreIsBoundToTheFirstPlanItIsWelcomedWithAndRefusesAnother() {
        var head = session(plan: nil)
        _ = head.start(now: 0)
        XCTAssertEqual(credits(head.workerHello(from: worker, name: "w0", batchesSent: nil, now: 1)), [0], "no credit before the plan is known")
        let welcomed = head.receiveControl(.welcome(epoch: 99, headAddress: "", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: 42), now: 2)
        XCTAssertEqual(welcomed.first, .effect(.bindPlan(42)), "the binding is recorded before anything else")
        XCTAssertEqual(credits(welcomed), [2], "workers that said hello earlier are granted their window once bound")
        XCTAssertEqual(head.plan, 42)
        // The same plan again (a restarted coordinator of the same job) changes nothing.
        XCTAssertEqual(head.receiveControl(.welcome(epoch: 100, headAddress: "", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: 42), now: 3), [])

        // A store bound earlier grants nothing either until this incarnation's coordinator names its plan:
        // a worker of another job (its coordinator on the same address) must not reach the store, where a
        // batch of an already committed shard would be re-acknowledged to that job's coordinator.
        var bound = session(plan: 42, welcomed: false)
        XCTAssertEqual(credits(bound.workerHello(from: worker, name: "w0", batchesSent: nil, now: 1)), [0])
        XCTAssertEqual(bound.receiveControl(.welcome(epoch: 99, headAddress: "", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: 43), now: 1),
                       [.effect(.planMismatch(store: 42, coordinator: 43))])
        XCTAssertEqual(bound.workerHello(from: worker, name: "w0", batchesSent: nil, now: 2), [], "a stopped head serves nothing")
        var same = session(plan: 42, welcomed: false)
        _ = same.workerHello(from: worker, name: "w0", batchesSent: nil, now: 1)
        XCTAssertEqual(credits(same.receiveControl(.welcome(epoch: 99, headAddress: "", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: 42), now: 2)), [2],
                       "its own job's welcome grants the waiting workers their window, and binds nothing again")
        // A worker that declares its job's plan (from its own welcome) is credited by a store of that plan at
        // once, and never by a store of another, welcomed or not.
        var early = session(plan: 42, welcomed: false)
        XCTAssertEqual(credits(early.workerHello(from: worker, name: "w0", batchesSent: nil, plan: 42, now: 1)), [2])
        XCTAssertEqual(credits(early.workerHello(from: Array("w9".utf8), name: "w9", batchesSent: nil, plan: 7, now: 1)), [0])
        _ = early.receiveControl(.welcome(epoch: 99, headAddress: "", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: 42), now: 2)
        XCTAssertEqual(credits(early.workerHello(from: Array("w9".utf8), name: "w9", batchesSent: nil, plan: 7, now: 3)), [0],
                       "a worker of another job gets nothing even from a welcomed head")
    }

    func batch(shard: UInt32, offsets: [UInt32], count: UInt32 = 2) -> (FeatureBatch, Result<DecodedBatch, Error>) {
        let features: [Float] = offsets.flatMap { [Float($0), 1] }
        let (payload, raw) = features.withUnsafeBufferPointer { FeatureCodec.encode($0, dtype: .f32, codec: .raw) }
        let wire = FeatureBatch(shardID: shard, attempt: 1, shardItemCount: count, offsets: offsets, indexes: offsets.map(UInt64.init),
                                labels: offsets.map { _ in 0 }, keys: offsets.map { "k\($0)" }, deadLetters: [], dtype: .f32,
                                dimension: 2, codec: .raw, rawLength: UInt32(raw), payload: payload)
        return (wire, Result { try DecodedBatch(decoding: wire, as: .f32) })
    }

    func credits(_ outputs: [HeadOutput]) -> [UInt32] {
        outputs.compactMap { if case .toWorker(_, .credit(_, let limit)) = $0 { return limit }; return nil }
    }

    func testBatchesBeyondTheCreditLimitAreDroppedAndCounted() {
        var head = session(window: 2)
        XCTAssertEqual(credits(head.workerHello(from: worker, name: "w0", batchesSent: nil, now: 0)), [2])
        for shard: UInt32 in 0..<2 {
            let (wire, decoded) = batch(shard: shard, offsets: [0])
            XCTAssertTrue(head.admitBatch(from: worker, now: 1))
            _ = head.receiveBatch(from: worker, batch: wire, decoded: decoded, now: 1)
        }
        // Each processed batch raised the limit by one, so the worker may have sent 4 in all.
        XCTAssertEqual(head.creditLimit(of: worker), 4)
        // A burst read before any of it is processed: the 5th arrival is beyond the limit.
        XCTAssertEqual((2..<5).map { _ in head.admitBatch(from: worker, now: 2) }, [true, true, false])
        XCTAssertEqual(head.counters.creditViolations, 1)
        // A stranger that never said hello has no credits at all.
        XCTAssertFalse(head.admitBatch(from: [9], now: 3))
        XCTAssertEqual(head.counters.creditViolations, 2)
    }

    func testTheCreditAndTheAckOfAShardCompletingBatchWaitForDurability() {
        var head = session(window: 2)
        _ = head.workerHello(from: worker, name: "w0", batchesSent: nil, now: 0)
        let (first, firstRows) = batch(shard: 3, offsets: [0])
        XCTAssertTrue(head.admitBatch(from: worker, now: 1))
        XCTAssertEqual(credits(head.receiveBatch(from: worker, batch: first, decoded: firstRows, now: 1)), [3])
        let (last, lastRows) = batch(shard: 3, offsets: [1])
        XCTAssertTrue(head.admitBatch(from: worker, now: 2))
        let outputs = head.receiveBatch(from: worker, batch: last, decoded: lastRows, now: 2)
        XCTAssertEqual(credits(outputs), [], "no credit before the shard is durable")
        XCTAssertFalse(outputs.contains { if case .toCoordinator(.shardCommitted) = $0 { return true }; return false })
        guard case .effect(.append(3, 1, _))? = outputs.last else { return XCTFail("the completed shard must be appended: \(outputs)") }
        XCTAssertEqual(head.appended(shardID: 3, stored: true, now: 3), [])
        let durable = head.synced([3], now: 4)
        XCTAssertTrue(durable.contains(.toCoordinator(.shardCommitted(shardID: 3, attempt: 1, items: 2, deadLetters: 0))))
        XCTAssertEqual(credits(durable), [4])
    }

    func testALateBatchOfACommittedShardIsAcknowledgedAgain() {
        var head = session(committed: [5])
        _ = head.workerHello(from: worker, name: "w0", batchesSent: nil, now: 0)
        let (wire, decoded) = batch(shard: 5, offsets: [0])
        XCTAssertTrue(head.admitBatch(from: worker, now: 1))
        let outputs = head.receiveBatch(from: worker, batch: wire, decoded: decoded, now: 1)
        XCTAssertTrue(outputs.contains(.toCoordinator(.shardCommitted(shardID: 5, attempt: 1, items: 0, deadLetters: 0))), "\(outputs)")
        XCTAssertEqual(head.counters.lateBatches, 1)
    }

    func testHelloIsRetriedUntilWelcomedAndRepeatedForANewCoordinator() {
        var head = session(committed: [1, 2], welcomed: false)
        XCTAssertEqual(head.start(now: 0), [.toCoordinator(.headHello(epoch: 7, committed: [1, 2], plan: 1))])
        XCTAssertTrue(head.tick(now: 100).contains(.toCoordinator(.headHello(epoch: 7, committed: [1, 2], plan: 1))))
        _ = head.receiveControl(.welcome(epoch: 99, headAddress: "", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: 1), now: 150)
        XCTAssertFalse(head.tick(now: 200).contains(.toCoordinator(.headHello(epoch: 7, committed: [1, 2], plan: 1))))
        XCTAssertEqual(head.receiveControl(.heartbeat(epoch: 99, sequence: 1), now: 250), [])
        // A restarted coordinator shows a new epoch: tell it everything again, until it answers.
        XCTAssertEqual(head.receiveControl(.heartbeat(epoch: 100, sequence: 1), now: 300),
                       [.toCoordinator(.headHello(epoch: 7, committed: [1, 2], plan: 1))])
        XCTAssertTrue(head.tick(now: 400).contains(.toCoordinator(.headHello(epoch: 7, committed: [1, 2], plan: 1))))
    }

    func testAHelloWithTheWorkersCountRepairsLostCredits() {
        var head = session(window: 2)
        _ = head.workerHello(from: worker, name: "w0", batchesSent: nil, now: 0)
        // The worker sent 2 batches that never arrived, and has no credit left: its hello says so.
        XCTAssertEqual(credits(head.workerHello(from: worker, name: "w0", batchesSent: 2, now: 10)), [4])
    }
}

final class WorkerSessionTests: XCTestCase {
    func welcomed() -> WorkerSession {
        var worker = WorkerSession(workerID: "w0", host: "h", pid: 1, incarnation: 7)
        _ = worker.start(now: 0)
        let outputs = worker.receiveControl(.welcome(epoch: 5, headAddress: "tcp://head", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: 1), now: 1)
        XCTAssertTrue(outputs.contains(.effect(.connectHead("tcp://head"))))
        XCTAssertTrue(outputs.contains(.toCoordinator(.shardRequest(workerID: "w0"))))
        return worker
    }

    func testHeartbeatsGoOnWhileAShardIsExtracted() {
        var worker = welcomed()
        let items = [ItemRef(index: 0, key: "a", label: 0, locator: .file(path: "/d/a"))]
        XCTAssertEqual(worker.receiveControl(.assignment(shardID: 1, attempt: 3, leaseMs: 1000, items: items), now: 2),
                       [.effect(.extract(shardID: 1, attempt: 3, items: items))])
        for now in stride(from: UInt64(100), through: 3_000, by: 100) {
            XCTAssertTrue(worker.tick(now: now).contains(.toCoordinator(.heartbeat(epoch: 5, sequence: now))), "no beat at \(now)")
        }
    }

    func testSigtermGivesTheShardBackWithoutWaitingForAnyPeer() {
        var worker = welcomed()
        _ = worker.receiveControl(.assignment(shardID: 1, attempt: 3, leaseMs: 1000, items: []), now: 2)
        XCTAssertEqual(worker.terminate(now: 3), [.effect(.cancelExtraction),
                                                  .toCoordinator(.shardFailed(shardID: 1, attempt: 3, reason: "draining: SIGTERM")),
                                                  .effect(.stop(reason: "SIGTERM"))])
        XCTAssertTrue(worker.isStopped)
    }

    func testBatchesLeaveOnlyWithinTheLimitAndDoneFollowsTheLast() {
        var worker = welcomed()
        _ = worker.receiveControl(.assignment(shardID: 1, attempt: 3, leaseMs: 1000, items: []), now: 2)
        let batch = FeatureBatch(shardID: 1, attempt: 3, shardItemCount: 2, offsets: [0], indexes: [0], labels: [0], keys: ["a"],
                                 deadLetters: [], dtype: .f32, dimension: 1, codec: .raw, rawLength: 4, payload: [0, 0, 0, 0])
        XCTAssertEqual(worker.batchReady(batch, now: 3), [], "no credit yet")
        XCTAssertEqual(worker.extractionFinished(shardID: 1, attempt: 3, now: 4), [])
        let outputs = worker.receiveData(.credit(epoch: 9, limit: 1), now: 5)
        XCTAssertEqual(outputs.first, .toHead(.featureBatch(batch)))
        XCTAssertTrue(outputs.contains(.toCoordinator(.shardDone(shardID: 1, attempt: 3, items: 1, deadLetters: 0))))
        XCTAssertEqual(worker.batchesSent, 1)
    }

    /// §8.3.7: a probe's batches go nowhere (the head must not buffer an attempt that never completes);
    /// surviving its items is reported with `shardDone`.
    func testAProbeSendsNothingToTheHeadAndReportsDoneAfterItsLastItem() {
        var worker = welcomed()
        _ = worker.receiveData(.credit(epoch: 9, limit: 8), now: 2)
        let items = [ItemRef(index: 4, key: "x", label: 0, locator: .file(path: "/d/x"))]
        XCTAssertEqual(worker.receiveControl(.probe(shardID: 1, attempt: 3, leaseMs: 1000, items: items), now: 3),
                       [.effect(.extract(shardID: 1, attempt: 3, items: items))])
        let batch = FeatureBatch(shardID: 1, attempt: 3, shardItemCount: 1, offsets: [0], indexes: [4], labels: [0], keys: ["x"],
                                 deadLetters: [], dtype: .f32, dimension: 1, codec: .raw, rawLength: 4, payload: [0, 0, 0, 0])
        XCTAssertEqual(worker.batchReady(batch, now: 4), [])
        let outputs = worker.extractionFinished(shardID: 1, attempt: 3, now: 5)
        XCTAssertEqual(outputs.first, .toCoordinator(.shardDone(shardID: 1, attempt: 3, items: 1, deadLetters: 0)))
        XCTAssertFalse(outputs.contains { if case .toHead(.featureBatch) = $0 { return true } else { return false } })
        XCTAssertEqual(worker.batchesSent, 0)
    }

    /// An extraction that hands over nothing for the stall limit while it may is given up as `stalled:` and
    /// the process aborts; one held back by the head's credits is not stalled, however long it waits.
    func testAnExtractionThatHandsOverNothingIsStalledButOneWaitingForCreditsIsNot() {
        var worker = WorkerSession(workerID: "w0", host: "h", pid: 1, incarnation: 7, outboxLimit: 1, stallLimitMs: 1_000)
        _ = worker.start(now: 0)
        _ = worker.receiveControl(.welcome(epoch: 5, headAddress: "tcp://head", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: 1), now: 1)
        _ = worker.receiveControl(.assignment(shardID: 1, attempt: 3, leaseMs: 1000, items: []), now: 2)
        let batch = FeatureBatch(shardID: 1, attempt: 3, shardItemCount: 2, offsets: [0], indexes: [0], labels: [0], keys: ["a"],
                                 deadLetters: [], dtype: .f32, dimension: 1, codec: .raw, rawLength: 4, payload: [0, 0, 0, 0])
        _ = worker.batchReady(batch, now: 10)
        XCTAssertFalse(worker.wantsMoreBatches, "no credit: the batch waits in the outbox")
        for now in stride(from: UInt64(100), through: 10_000, by: 100) {
            XCTAssertFalse(worker.tick(now: now).contains(.effect(.abort(reason: "extraction of shard 1 attempt 3 handed over no batch for 1 s"))))
        }
        // A credit lets the batch go: from now on the extraction owes the next batch within the limit.
        _ = worker.receiveData(.credit(epoch: 9, limit: 1), now: 10_050)
        XCTAssertEqual(worker.tick(now: 11_000).filter { if case .effect(.abort) = $0 { return true } else { return false } }, [])
        let stalled = worker.tick(now: 11_100)
        XCTAssertEqual(stalled, [.toCoordinator(.shardFailed(shardID: 1, attempt: 3, reason: "stalled: no batch for 1 s")),
                                 .effect(.abort(reason: "extraction of shard 1 attempt 3 handed over no batch for 1 s"))])
        XCTAssertTrue(worker.isStopped)
    }

    func testAnAssignmentNotAskedForIsGivenBack() {
        var worker = welcomed()
        _ = worker.receiveControl(.assignment(shardID: 1, attempt: 3, leaseMs: 1000, items: []), now: 2)
        XCTAssertEqual(worker.receiveControl(.assignment(shardID: 2, attempt: 4, leaseMs: 1000, items: []), now: 3),
                       [.toCoordinator(.shardFailed(shardID: 2, attempt: 4, reason: "busy: not requested"))])
    }
}

final class CoordinatorSessionTests: XCTestCase {
    final class MemoryJournal: CommitJournal {
        var committed: Set<UInt32> = []
        var attemptsReservedThrough: UInt32 = 0
        var appends: [UInt32] = []
        func append(shardID: UInt32, attempt: UInt32) throws { appends.append(shardID); committed.insert(shardID) }
        func reserveAttempts(through: UInt32) throws { attemptsReservedThrough = through }
        var poisonVerdicts: [PoisonVerdict] = []
        func append(_ verdict: PoisonVerdict) throws { poisonVerdicts.append(verdict) }
        /// Shards the job has so far (3 for `makeSession`'s plan).
        var shardBound = 3
        var checkpoints: [ScanCheckpoint] = []
        var seals: [CoordinatorJournal.Seal] = []
        func mayCommit(shardID: UInt32) -> Bool { Int(shardID) < shardBound }
        func append(_ checkpoint: ScanCheckpoint) throws { checkpoints.append(checkpoint) }
        func append(_ seal: CoordinatorJournal.Seal) throws { seals.append(seal) }
    }

    func makeSession(journal: MemoryJournal, lease: LeaseSettings = LeaseSettings()) -> CoordinatorSession {
        let shards = (0..<3).map { Shard(id: UInt32($0), items: [ItemRef(index: UInt64($0), key: "k\($0)", label: 0, locator: .file(path: "/d/k\($0)"))]) }
        let settings = CoordinatorSessionSettings(lease: lease, heartbeatMs: 100, deadAfterBeats: 5, headAddress: "tcp://head")
        return CoordinatorSession(epoch: 11, plan: ShardPlan(shards: shards), settings: settings, journal: journal)
    }

    /// A plan growing while its scan runs: the checkpoint is journaled before any new shard is leased, a
    /// commit of a shard the journal knows but the table does not offer yet is journaled and kept, one beyond
    /// the journal's shards is unexpected; the seal makes the plan final and the job ends.
    func testAGrowingPlanIsJournaledBeforeItsShardsAreLeased() throws {
        let journal = MemoryJournal()
        journal.shardBound = 0
        let whole = ShardPlan(items: (0..<4).map { ItemRef(index: UInt64($0), key: "k\($0)", label: 0, locator: .file(path: "/d/k\($0)")) }, shardSize: 1)
        let settings = CoordinatorSessionSettings(lease: LeaseSettings(), heartbeatMs: 100, deadAfterBeats: 5, headAddress: "tcp://head")
        let coordinator = CoordinatorSession(epoch: 11, plan: ShardPlanPrefix(whole, shardCount: 0), settings: settings, journal: journal)
        _ = try coordinator.receive(.hello(workerID: "w0", host: "h", pid: 1, capabilities: [:]), from: [1], now: 0)
        XCTAssertEqual(try coordinator.receive(.shardRequest(workerID: "w0"), from: [1], now: 1).last,
                       .send([1], .noWork(retryAfterMs: LeaseSettings().idleRetryMs)))
        XCTAssertEqual(try coordinator.receive(.shardCommitted(shardID: 0, attempt: 1, items: 1, deadLetters: 0), from: [7], now: 2), [])
        XCTAssertEqual(coordinator.unexpectedMessages, 1, "no shard is offered yet")
        let checkpoint = ScanCheckpoint(items: 2, deadLetters: 0, recordsCRC: 1, keysCRC: 2, deadLettersCRC: 3)
        try coordinator.extendPlan(to: ShardPlanPrefix(whole, shardCount: 2), checkpoint: checkpoint)
        XCTAssertEqual(journal.checkpoints, [checkpoint])
        journal.shardBound = 3   // as if a previous incarnation had offered three shards
        XCTAssertEqual(try coordinator.receive(.shardCommitted(shardID: 2, attempt: 1, items: 1, deadLetters: 0), from: [7], now: 3),
                       [.committed(shardID: 2, items: 1)])
        XCTAssertEqual(journal.appends, [2])
        let outputs = try coordinator.receive(.shardRequest(workerID: "w0"), from: [1], now: 4)
        XCTAssertTrue(outputs.contains(.leased(shardID: 0, attempt: 1, worker: "w0")), "\(outputs)")
        try coordinator.extendPlan(to: ShardPlanPrefix(whole, shardCount: 4, isFinal: true), seal: CoordinatorJournal.Seal(contentID: 5, entries: 4))
        XCTAssertEqual(journal.seals, [CoordinatorJournal.Seal(contentID: 5, entries: 4)])
        journal.shardBound = 4
        for shard: UInt32 in [0, 1, 3] {
            _ = try coordinator.receive(.shardCommitted(shardID: shard, attempt: 1, items: 1, deadLetters: 0), from: [7], now: 5)
        }
        XCTAssertTrue(coordinator.table.isComplete)
        XCTAssertTrue(try coordinator.tick(now: 1_000).contains(.send([1], .shutdown(reason: "job complete"))))
    }

    func testAPeerOfAnEarlierIncarnationIsShownTheNewEpoch() throws {
        let coordinator = makeSession(journal: MemoryJournal())
        XCTAssertEqual(try coordinator.receive(.heartbeat(epoch: 3, sequence: 1), from: [1], now: 5),
                       [.send([1], .heartbeat(epoch: 11, sequence: 5))])
    }

    func testHeadHelloIsJournaledThenWelcomed() throws {
        let journal = MemoryJournal()
        let coordinator = makeSession(journal: journal)
        let plan = ShardPlan(shards: (0..<3).map { Shard(id: UInt32($0), items: [ItemRef(index: UInt64($0), key: "k\($0)", label: 0, locator: .file(path: "/d/k\($0)"))]) }).fingerprint
        // A store of another job (or bound to none) names other items: its commits are not taken, only welcomed.
        for other in [plan &+ 1, 0] {
            let refused = try coordinator.receive(.headHello(epoch: 3, committed: [0, 1], plan: other), from: [7], now: 0)
            XCTAssertEqual(refused, [.send([7], .welcome(epoch: 11, headAddress: "tcp://head", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: plan))])
        }
        XCTAssertEqual(journal.appends, [])
        XCTAssertEqual(coordinator.ignoredAnnouncements, 2)
        let outputs = try coordinator.receive(.headHello(epoch: 4, committed: [0, 2], plan: plan), from: [7], now: 1)
        XCTAssertEqual(journal.appends, [0, 2])
        XCTAssertEqual(outputs.last, .send([7], .welcome(epoch: 11, headAddress: "tcp://head", heartbeatIntervalMs: 100, deadAfterBeats: 5, plan: plan)))
        XCTAssertEqual(coordinator.table.progress.committed, 2)
        // A re-acknowledgement of a journaled shard is not news and is not journaled twice.
        XCTAssertEqual(try coordinator.receive(.shardCommitted(shardID: 2, attempt: 9, items: 0, deadLetters: 0), from: [7], now: 2), [])
        XCTAssertEqual(journal.appends, [0, 2])
    }

    func testAttemptsAreReservedBeforeTheyAreHandedOut() throws {
        let journal = MemoryJournal()
        let coordinator = makeSession(journal: journal)
        _ = try coordinator.receive(.hello(workerID: "w0", host: "h", pid: 1, capabilities: [:]), from: [1], now: 0)
        let outputs = try coordinator.receive(.shardRequest(workerID: "w0"), from: [1], now: 1)
        guard case .send(_, .assignment(_, let attempt, _, _))? = outputs.last else { return XCTFail("\(outputs)") }
        XCTAssertLessThanOrEqual(attempt, journal.attemptsReservedThrough)
    }

    func testARequestReleasesTheWorkersUnfinishedLease() throws {
        let coordinator = makeSession(journal: MemoryJournal())
        _ = try coordinator.receive(.hello(workerID: "w0", host: "h", pid: 1, capabilities: [:]), from: [1], now: 0)
        _ = try coordinator.receive(.shardRequest(workerID: "w0"), from: [1], now: 1)
        // The assignment was lost; the worker asks again. Its heartbeats must not keep shard 0 leased for ever.
        _ = try coordinator.receive(.shardRequest(workerID: "w0"), from: [1], now: 2)
        let events = try coordinator.tick(now: 3)
        XCTAssertTrue(events.contains(.event(.reassigned(shardID: 0, attempt: 1, worker: "w0", reason: .abandoned))), "\(events)")
        XCTAssertEqual(coordinator.table.progress.pending, 2, "shard 0 is pending again beside shard 2")
    }

    /// §8.3.7: probes go only to workers whose hello declares FSWP 3.1; a verdict is journaled, and a
    /// restarted coordinator's assignments carry the item as rejected without finding it again.
    func testAPoisonVerdictIsJournaledAndSurvivesARestart() throws {
        let journal = MemoryJournal()
        let coordinator = makeSession(journal: journal, lease: LeaseSettings(lossLimit: 1))
        let current = [FrameCodec.versionCapability.key: FrameCodec.versionCapability.value]
        _ = try coordinator.receive(.hello(workerID: "old", host: "h", pid: 1, capabilities: [:]), from: [9], now: 0)
        _ = try coordinator.receive(.hello(workerID: "w0", host: "h", pid: 1, capabilities: current), from: [1], now: 0)
        _ = try coordinator.receive(.shardRequest(workerID: "w0"), from: [1], now: 1)
        // The worker dies on shard 0 and comes back: one loss isolates it (lossLimit 1).
        _ = try coordinator.receive(.hello(workerID: "w0", host: "h", pid: 2, capabilities: current), from: [1], now: 2)
        _ = try coordinator.tick(now: 3)
        guard case .send(_, .assignment(0, _, _, _))? = try coordinator.receive(.shardRequest(workerID: "old"), from: [9], now: 4).last
        else { return XCTFail("a 3.0 worker gets the whole shard, never a probe") }
        _ = try coordinator.receive(.shardFailed(shardID: 0, attempt: coordinator.table.nextAttempt - 1, reason: "draining: SIGTERM"), from: [9], now: 5)
        guard case .send(_, .probe(0, _, _, let probed))? = try coordinator.receive(.shardRequest(workerID: "w0"), from: [1], now: 6).last
        else { return XCTFail("the 3.1 worker gets a probe") }
        XCTAssertEqual(probed.map(\.key), ["k0"])
        _ = try coordinator.receive(.hello(workerID: "w0", host: "h", pid: 3, capabilities: current), from: [1], now: 7)
        _ = try coordinator.tick(now: 8)
        XCTAssertEqual(journal.poisonVerdicts, [PoisonVerdict(shardID: 0, offset: 0, losses: 1)])

        let restarted = makeSession(journal: journal)
        _ = try restarted.receive(.hello(workerID: "w0", host: "h", pid: 4, capabilities: current), from: [1], now: 0)
        guard case .send(_, .assignment(0, _, _, let items))? = try restarted.receive(.shardRequest(workerID: "w0"), from: [1], now: 1).last
        else { return XCTFail("shard 0 goes out whole") }
        XCTAssertEqual(items.first?.locator, .rejected(reason: "poison: worker lost 1 times while decoding"))
    }
}
