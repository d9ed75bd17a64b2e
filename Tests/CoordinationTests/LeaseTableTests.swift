import XCTest
import WireProtocol
@testable import Coordination

func makeItems(_ count: Int, keyPrefix: String = "img") -> [ItemRef] {
    (0..<count).map { ItemRef(index: UInt64($0), key: "\(keyPrefix)\($0).jpg", label: Int32($0 % 10), locator: .file(path: "/data/\(keyPrefix)\($0).jpg")) }
}

func makeShards(_ count: Int, size: Int = 4) -> [Shard] {
    ShardPlan.cut(makeItems(count * size), shardSize: size)
}

/// The (shard, attempt) of an assignment, failing the test otherwise.
func assigned(_ decision: LeaseDecision, file: StaticString = #filePath, line: UInt = #line) -> (shard: UInt32, attempt: UInt32) {
    guard case let .assign(shardID, attempt, _, _) = decision else {
        XCTFail("expected an assignment, got \(decision)", file: file, line: line)
        return (.max, .max)
    }
    return (shardID, attempt)
}

final class ShardPlanTests: XCTestCase {
    func testCutIsContiguousAndLastShardShort() {
        let shards = ShardPlan.cut(makeItems(10), shardSize: 4)
        XCTAssertEqual(shards.map(\.id), [0, 1, 2])
        XCTAssertEqual(shards.map(\.items.count), [4, 4, 2])
        XCTAssertEqual(shards.flatMap(\.items), makeItems(10))
        XCTAssertEqual(ShardPlan.cut([], shardSize: 4), [])
    }

    func testFingerprintIsStableAndSensitive() {
        let base = ShardPlan(items: makeItems(10), shardSize: 4)
        XCTAssertEqual(base.fingerprint, ShardPlan(items: makeItems(10), shardSize: 4).fingerprint)
        XCTAssertEqual(base.fingerprint, ShardPlan.fingerprint(ShardPlan.cut(makeItems(10), shardSize: 4), shardSize: 4))
        XCTAssertNotEqual(base.fingerprint, ShardPlan(items: makeItems(10), shardSize: 5).fingerprint)
        XCTAssertNotEqual(base.fingerprint, ShardPlan(items: makeItems(11), shardSize: 4).fingerprint)
        XCTAssertNotEqual(base.fingerprint, ShardPlan(items: makeItems(10, keyPrefix: "pic"), shardSize: 4).fingerprint)
        var relabeled = makeItems(10)
        relabeled[3].label = 7
        XCTAssertNotEqual(base.fingerprint, ShardPlan(items: relabeled, shardSize: 4).fingerprint)
    }
}

final class LeaseTableTests: XCTestCase {
    let settings = LeaseSettings(leaseMs: 1_000, commitWaitMs: 500, workerDeadAfterMs: 3_000,
                                 maxAttemptsInFlight: 2, stallAfterMs: 10_000, idleRetryMs: 250)

    func testPendingShardsGoOutLowestFirstWithFreshAttempts() {
        var table = LeaseTable(shards: makeShards(3), settings: settings)
        let first = table.request(worker: "w1", now: 0)
        guard case let .assign(shardID, attempt, items, leaseMs) = first else { return XCTFail("\(first)") }
        XCTAssertEqual(shardID, 0)
        XCTAssertEqual(attempt, 1)
        XCTAssertEqual(items, makeShards(3)[0].items)
        XCTAssertEqual(leaseMs, 1_000)
        XCTAssertEqual(assigned(table.request(worker: "w2", now: 0)).shard, 1)
        XCTAssertEqual(assigned(table.request(worker: "w1", now: 0)).shard, 2)
        XCTAssertEqual(table.progress.leased, 3)
        XCTAssertEqual(table.progress.pending, 0)
    }

    func testLeaseExpiryReassignsAndHeartbeatsRenew() {
        var table = LeaseTable(shards: makeShards(2), settings: settings)
        let lease = assigned(table.request(worker: "w1", now: 0))
        table.heartbeat(worker: "w1", now: 900)
        XCTAssertEqual(table.tick(now: 1_500), [], "the heartbeat renewed the lease to 1900")
        XCTAssertEqual(table.tick(now: 1_900),
                       [.reassigned(shardID: lease.shard, attempt: lease.attempt, worker: "w1", reason: .leaseExpired)])
        XCTAssertEqual(table.progress.pending, 2)
        let again = assigned(table.request(worker: "w2", now: 2_000))
        XCTAssertEqual(again.shard, lease.shard, "the revoked shard is the lowest pending one again")
        XCTAssertGreaterThan(again.attempt, lease.attempt)
        // The old attempt is void: its done report is ignored and does not protect the new lease.
        table.shardDone(worker: "w1", shardID: lease.shard, attempt: lease.attempt, now: 2_100)
        XCTAssertEqual(table.status(now: 2_100)[0].attempts.map(\.attempt), [again.attempt])
    }

    func testDeadWorkersLeasesReturnToPending() {
        var table = LeaseTable(shards: makeShards(3), settings: LeaseSettings(leaseMs: 60_000, workerDeadAfterMs: 3_000))
        let a = assigned(table.request(worker: "w1", now: 0))
        let b = assigned(table.request(worker: "w2", now: 0))
        table.heartbeat(worker: "w2", now: 2_500)
        let events = table.tick(now: 3_000)
        XCTAssertEqual(events, [.workerDead("w1"),
                                .reassigned(shardID: a.shard, attempt: a.attempt, worker: "w1", reason: .workerDead)])
        XCTAssertEqual(table.progress.leased, 1)
        XCTAssertEqual(assigned(table.request(worker: "w2", now: 3_001)).shard, a.shard)
        XCTAssertEqual(table.status(now: 3_001)[Int(b.shard)].state, .running)
    }

    func testHelloFromWorkerHoldingLeasesRevokesThem() {
        var table = LeaseTable(shards: makeShards(2), settings: settings)
        table.hello(worker: "w1", now: 0)
        let lease = assigned(table.request(worker: "w1", now: 0))
        table.hello(worker: "w1", now: 10)
        XCTAssertEqual(table.tick(now: 10),
                       [.reassigned(shardID: lease.shard, attempt: lease.attempt, worker: "w1", reason: .workerRestarted)])
        XCTAssertEqual(assigned(table.request(worker: "w1", now: 20)).shard, lease.shard)
    }

    func testDoneWaitsForCommitThenReassignsAndLateCommitStillCounts() {
        var table = LeaseTable(shards: makeShards(1), settings: settings)
        let first = assigned(table.request(worker: "w1", now: 0))
        table.shardDone(worker: "w1", shardID: first.shard, attempt: first.attempt, now: 800)
        table.heartbeat(worker: "w1", now: 1_200)
        XCTAssertEqual(table.tick(now: 1_250), [], "a finished attempt does not need lease renewal")
        XCTAssertEqual(table.status(now: 1_250)[0].attempts.first?.awaitingCommit, true)
        XCTAssertEqual(table.tick(now: 1_300),
                       [.reassigned(shardID: 0, attempt: first.attempt, worker: "w1", reason: .commitWaitExpired)])
        let second = assigned(table.request(worker: "w2", now: 1_400))
        // The head's commit of the first attempt arrives late: still the first commit of the shard.
        XCTAssertTrue(table.committed(shardID: 0, attempt: first.attempt, now: 1_500))
        XCTAssertEqual(table.tick(now: 1_500), [.superseded(shardID: 0, attempt: second.attempt, worker: "w2"),
                                                .committed(shardID: 0, attempt: first.attempt), .finished])
        XCTAssertFalse(table.committed(shardID: 0, attempt: second.attempt, now: 1_600))
    }

    func testDeadWorkerSparesFinishedAttemptAwaitingCommit() {
        var table = LeaseTable(shards: makeShards(1), settings: LeaseSettings(leaseMs: 1_000, commitWaitMs: 10_000,
                                                                              workerDeadAfterMs: 3_000))
        let lease = assigned(table.request(worker: "w1", now: 0))
        table.shardDone(worker: "w1", shardID: lease.shard, attempt: lease.attempt, now: 100)
        XCTAssertEqual(table.tick(now: 5_000), [.workerDead("w1")])
        XCTAssertEqual(table.progress.leased, 1)
        XCTAssertTrue(table.committed(shardID: 0, attempt: lease.attempt, now: 6_000))
    }

    func testBackupsOnlyAtTheTailForLongestRunningAndFirstCommitWins() {
        var table = LeaseTable(shards: makeShards(3), settings: settings)
        let s0 = assigned(table.request(worker: "w1", now: 0))
        let s1 = assigned(table.request(worker: "w2", now: 10))
        // Something is still pending: an idle worker gets it, not a backup.
        let s2 = assigned(table.request(worker: "w1", now: 20))
        XCTAssertEqual([s0.shard, s1.shard, s2.shard], [0, 1, 2])
        // Tail: w3 gets a backup of the longest-running shard.
        let backup0 = assigned(table.request(worker: "w3", now: 30))
        XCTAssertEqual(backup0.shard, 0)
        // w1 already runs 0 and 2; shard 0 is full; so w1's backup is shard 1.
        XCTAssertEqual(assigned(table.request(worker: "w1", now: 40)).shard, 1)
        // w2 runs 1, shard 0 and 1 are full: shard 2.
        XCTAssertEqual(assigned(table.request(worker: "w2", now: 50)).shard, 2)
        XCTAssertEqual(table.request(worker: "w4", now: 60), .noWork(retryAfterMs: 250), "every shard at 2 attempts")
        XCTAssertTrue(table.status(now: 60).allSatisfy { $0.attempts.count == 2 })

        XCTAssertTrue(table.committed(shardID: 0, attempt: backup0.attempt, now: 70))
        XCTAssertEqual(table.tick(now: 70), [.superseded(shardID: 0, attempt: s0.attempt, worker: "w1"),
                                             .committed(shardID: 0, attempt: backup0.attempt)])
        XCTAssertFalse(table.committed(shardID: 0, attempt: s0.attempt, now: 80), "the original lost the race")
        XCTAssertEqual(table.status(now: 80)[0].state, .committed(attempt: backup0.attempt))
    }

    func testBackupNeverGoesToTheWorkerRunningTheShardNorToAShardAwaitingCommit() {
        var table = LeaseTable(shards: makeShards(1), settings: settings)
        let lease = assigned(table.request(worker: "w1", now: 0))
        XCTAssertEqual(table.request(worker: "w1", now: 10), .noWork(retryAfterMs: 250))
        table.shardDone(worker: "w1", shardID: lease.shard, attempt: lease.attempt, now: 20)
        XCTAssertEqual(table.request(worker: "w2", now: 30), .noWork(retryAfterMs: 250))
    }

    func testSingleAttemptSettingMakesNoBackups() {
        var table = LeaseTable(shards: makeShards(1), settings: LeaseSettings(maxAttemptsInFlight: 1, idleRetryMs: 5))
        _ = assigned(table.request(worker: "w1", now: 0))
        XCTAssertEqual(table.request(worker: "w2", now: 10), .noWork(retryAfterMs: 5))
    }

    func testDuplicateLateAndUnknownCommitsAreNotNews() {
        var table = LeaseTable(shards: makeShards(2), settings: settings)
        let lease = assigned(table.request(worker: "w1", now: 0))
        XCTAssertTrue(table.committed(shardID: lease.shard, attempt: lease.attempt, now: 10))
        XCTAssertFalse(table.committed(shardID: lease.shard, attempt: lease.attempt, now: 20))
        XCTAssertFalse(table.committed(shardID: 99, attempt: 1, now: 20))
        // A commit of an attempt this table never issued (a previous coordinator's) is still the truth.
        XCTAssertTrue(table.committed(shardID: 1, attempt: 12_345, now: 30))
        XCTAssertTrue(table.isComplete)
        XCTAssertEqual(table.progress.committed, 2)
    }

    func testShardFailedReturnsShardToPending() {
        var table = LeaseTable(shards: makeShards(2), settings: settings)
        let lease = assigned(table.request(worker: "w1", now: 0))
        table.shardFailed(worker: "w2", shardID: lease.shard, attempt: lease.attempt, now: 5)
        XCTAssertEqual(table.progress.leased, 1, "only the holder can give a lease up")
        table.shardFailed(worker: "w1", shardID: lease.shard, attempt: lease.attempt, now: 10)
        XCTAssertEqual(table.tick(now: 10),
                       [.reassigned(shardID: lease.shard, attempt: lease.attempt, worker: "w1", reason: .failed)])
        let again = assigned(table.request(worker: "w2", now: 20))
        XCTAssertEqual(again.shard, lease.shard)
        XCTAssertNotEqual(again.attempt, lease.attempt)
    }

    func testFinishedOnceEverythingIsCommitted() {
        var table = LeaseTable(shards: makeShards(2), settings: settings)
        let a = assigned(table.request(worker: "w1", now: 0))
        let b = assigned(table.request(worker: "w2", now: 0))
        XCTAssertTrue(table.committed(shardID: a.shard, attempt: a.attempt, now: 10))
        XCTAssertFalse(table.isComplete)
        XCTAssertTrue(table.committed(shardID: b.shard, attempt: b.attempt, now: 20))
        XCTAssertTrue(table.isComplete)
        XCTAssertEqual(table.tick(now: 30).filter { $0 == .finished }.count, 1)
        XCTAssertEqual(table.request(worker: "w1", now: 40), .finished)
        XCTAssertEqual(table.request(worker: "w3", now: 50), .finished)
        XCTAssertEqual(table.tick(now: 100_000).filter { if case .stall = $0 { true } else { false } }, [],
                       "no stall reports once complete")
    }

    func testRestartNeverLeasesJournaledShardsAndStartsAboveReservedAttempts() {
        var table = LeaseTable(shards: makeShards(4), settings: settings, committed: [0, 2], firstAttempt: 101)
        XCTAssertEqual(table.progress.committed, 2)
        let first = assigned(table.request(worker: "w1", now: 0))
        let second = assigned(table.request(worker: "w2", now: 0))
        XCTAssertEqual([first.shard, second.shard], [1, 3])
        XCTAssertEqual([first.attempt, second.attempt], [101, 102])
        XCTAssertEqual(table.nextAttempt, 103)
        XCTAssertFalse(table.committed(shardID: 0, attempt: 7, now: 5))
        XCTAssertEqual(table.status(now: 5)[2].state, .committed(attempt: nil))
    }

    func testStallReportedAtMostOncePerPeriod() {
        var table = LeaseTable(shards: makeShards(3), settings: settings)
        let lease = assigned(table.request(worker: "w1", now: 0))
        for now in stride(from: UInt64(0), to: 10_000, by: 500) { table.heartbeat(worker: "w1", now: now) }
        XCTAssertEqual(table.tick(now: 9_999), [])
        guard case let .stall(report)? = table.tick(now: 10_000).first else { return XCTFail("expected a stall") }
        XCTAssertEqual(report.sinceLastCommitMs, 10_000)
        XCTAssertEqual(report.pendingShards, [1, 2])
        XCTAssertEqual(report.running.map(\.worker), ["w1"])
        XCTAssertEqual(report.running.first?.runningForMs, 10_000)
        XCTAssertTrue(report.description.contains("shard 0 attempt \(lease.attempt) on w1"), report.description)

        table.heartbeat(worker: "w1", now: 15_000)
        XCTAssertEqual(table.tick(now: 15_000), [], "reported less than a period ago")
        XCTAssertTrue(table.committed(shardID: lease.shard, attempt: lease.attempt, now: 16_000))
        _ = table.tick(now: 16_000)
        XCTAssertEqual(table.tick(now: 25_000).filter { if case .stall = $0 { true } else { false } }, [],
                       "a commit 9 s ago is progress")
        XCTAssertEqual(table.tick(now: 26_000).filter { if case .stall = $0 { true } else { false } }.count, 1)
    }

    func testAttemptNumbersAreNeverReused() {
        var table = LeaseTable(shards: makeShards(5), settings: settings)
        var seen: [UInt32] = []
        var now: UInt64 = 0
        for round in 0..<200 {
            now += 100
            let worker = "w\(round % 4)"
            switch table.request(worker: worker, now: now) {
            // Expired leases are losses, so shards get isolated and probed: probes are attempts too.
            case let .assign(shardID, attempt, _, _), let .probe(shardID, attempt, _, _):
                XCTAssertFalse(seen.contains(attempt))
                XCTAssertGreaterThan(attempt, seen.last ?? 0)
                seen.append(attempt)
                if round % 3 == 0 { table.shardFailed(worker: worker, shardID: shardID, attempt: attempt, now: now) }
            case .noWork, .finished:
                break
            }
            _ = table.tick(now: now)
        }
        XCTAssertGreaterThan(seen.count, 20)
    }

    /// A plan that grows while its scan runs: only offered shards are leased, in order; a commit ahead of the
    /// plan (a previous incarnation's lease) holds when the plan reaches its shard, and a verdict too; the job
    /// is never complete before the plan is final, and `finished` comes once, when it is.
    func testAGrowingPlanLeasesWhatItOffersAndFinishesOnlyWhenFinal() {
        let whole = ShardPlan(items: makeItems(10), shardSize: 2)
        var table = LeaseTable(plan: ShardPlanPrefix(whole, shardCount: 0), settings: settings, committed: [3],
                               poisoned: [PoisonVerdict(shardID: 2, offset: 1, losses: 3)])
        XCTAssertEqual(table.request(worker: "w0", now: 0), .noWork(retryAfterMs: settings.idleRetryMs))
        XCTAssertFalse(table.isComplete)
        table.extend(to: ShardPlanPrefix(whole, shardCount: 2))
        var leased: [UInt32] = []
        for worker in ["w0", "w1", "w2"] {
            if case let .assign(shardID, attempt, _, _) = table.request(worker: worker, now: 1) {
                leased.append(shardID)
                XCTAssertTrue(table.committed(shardID: shardID, attempt: attempt, now: 2))
            }
        }
        XCTAssertEqual(leased, [0, 1], "nothing beyond the offered shards")
        XCTAssertTrue(table.committed(shardID: 4, attempt: 9, now: 3), "a commit ahead of the plan is news, kept for later")
        XCTAssertFalse(table.committed(shardID: 4, attempt: 9, now: 3))
        XCTAssertFalse(table.isComplete)
        XCTAssertFalse(table.tick(now: 4).contains(.finished))
        table.extend(to: ShardPlanPrefix(whole, shardCount: 5))
        XCTAssertEqual(table.progress.committed, 4, "shards 3 and 4 arrive committed")
        guard case let .assign(two, attempt, items, _) = table.request(worker: "w0", now: 5) else { return XCTFail() }
        XCTAssertEqual(two, 2)
        XCTAssertEqual(items[1].locator, .rejected(reason: PoisonVerdict(shardID: 2, offset: 1, losses: 3).reason))
        XCTAssertTrue(table.committed(shardID: two, attempt: attempt, now: 6))
        XCTAssertFalse(table.isComplete, "every offered shard is committed, but more may come")
        XCTAssertFalse(table.tick(now: 7).contains(.finished))
        table.extend(to: ShardPlanPrefix(whole, shardCount: 5, isFinal: true))
        XCTAssertTrue(table.isComplete)
        XCTAssertEqual(table.tick(now: 8).filter { $0 == .finished }.count, 1)
        XCTAssertEqual(table.request(worker: "w0", now: 9), .finished)
        XCTAssertFalse(table.committed(shardID: 5, attempt: 1, now: 10), "beyond a final plan is no shard")
    }
}
