import XCTest
import WireProtocol
@testable import Coordination

/// Poison items (PROTOCOL.md §8.3.7): a shard whose attempts keep dying with their workers is bisected by
/// probes until the item that kills them is found, and the job finishes with it as a dead letter.
final class PoisonIsolationTests: XCTestCase {
    let settings = LeaseSettings(leaseMs: 1_000, commitWaitMs: 500, workerDeadAfterMs: 60_000,
                                 maxAttemptsInFlight: 2, stallAfterMs: 600_000, idleRetryMs: 250)

    /// How a worker is lost when it meets a poison item; the test cycles through all three.
    enum Loss: CaseIterable { case restarted, leaseExpired, stalled }

    /// What a driver of one worker saw until the shard committed.
    struct Run {
        var wholeAttempts = 0
        var probes: [[UInt64]] = []
        var losses = 0
        var events: [LeaseEvent] = []
        var committedItems: [ItemRef] = []
    }

    /// Drives one worker against `table` until shard 0 commits: an attempt or probe whose decodable items
    /// include a poison index is lost (the worker restarts, lets its lease expire, or reports a stall);
    /// otherwise a probe reports done, and a whole attempt reports done and is committed.
    func drive(_ table: inout LeaseTable, poison: Set<UInt64>, limit: Int = 200) -> Run {
        var run = Run()
        var now: UInt64 = 0
        var lossKind = 0
        table.hello(worker: "w", now: now)
        for _ in 0..<limit {
            now += 10
            let decision = table.request(worker: "w", now: now)
            let items: [ItemRef], shardID: UInt32, attempt: UInt32, isProbe: Bool
            switch decision {
            case let .assign(s, a, i, _): (shardID, attempt, items, isProbe) = (s, a, i, false)
            case let .probe(s, a, i, _): (shardID, attempt, items, isProbe) = (s, a, i, true)
            case .finished: return run
            case .noWork: XCTFail("no work while the shard is pending"); return run
            }
            if isProbe { run.probes.append(items.map(\.index)) } else { run.wholeAttempts += 1 }
            let meetsPoison = items.contains { item in
                if case .rejected = item.locator { return false }
                return poison.contains(item.index)
            }
            if meetsPoison {
                run.losses += 1
                switch Loss.allCases[lossKind % Loss.allCases.count] {
                case .restarted: table.hello(worker: "w", now: now)
                case .leaseExpired: now += settings.leaseMs
                case .stalled: table.shardFailed(worker: "w", shardID: shardID, attempt: attempt, stalled: true, now: now)
                }
                lossKind += 1
            } else {
                table.shardDone(worker: "w", shardID: shardID, attempt: attempt, now: now)
                if !isProbe {
                    run.committedItems = items
                    table.committed(shardID: shardID, attempt: attempt, now: now)
                }
            }
            run.events += table.tick(now: now)
        }
        XCTFail("the shard did not commit within \(limit) leases")
        return run
    }

    func reasons(_ items: [ItemRef]) -> [UInt64: String] {
        var result: [UInt64: String] = [:]
        for item in items { if case .rejected(let reason) = item.locator { result[item.index] = reason } }
        return result
    }

    func testAShardLostThreeTimesIsBisectedUntilItsPoisonItemIsADeadLetter() {
        for poisonIndex in UInt64(0)..<8 {
            var table = LeaseTable(shards: makeShards(1, size: 8), settings: settings)
            let run = drive(&table, poison: [poisonIndex])
            XCTAssertTrue(table.isComplete)
            XCTAssertEqual(reasons(run.committedItems), [poisonIndex: "poison: worker lost 3 times while decoding"],
                           "poison at \(poisonIndex): only it is rejected in the committed attempt")
            XCTAssertEqual(run.wholeAttempts, 4, "three lost whole attempts, then the one that commits")
            // Bisection: 3 probes narrow 8 suspects to 1 (the third is that item itself when it is the lower
            // of its pair, and its loss is its first), then the single suspect is lost until 3 times.
            XCTAssertEqual(run.probes.count, poisonIndex % 2 == 0 ? 5 : 6, "poison at \(poisonIndex): probes \(run.probes)")
            XCTAssertEqual(run.probes.suffix(3), [[poisonIndex], [poisonIndex], [poisonIndex]])
            XCTAssertEqual(run.losses, 3 + run.probes.filter { $0.contains(poisonIndex) }.count)
            XCTAssertTrue(run.events.contains(.poisoned(PoisonVerdict(shardID: 0, offset: UInt32(poisonIndex), losses: 3),
                                                        key: "img\(poisonIndex).jpg")))
            XCTAssertEqual(table.poisonedCount, 1)
        }
    }

    func testAShardWithTwoPoisonItemsIsIsolatedTwiceAndFinishesWithBoth() {
        var table = LeaseTable(shards: makeShards(1, size: 16), settings: settings)
        let run = drive(&table, poison: [3, 12])
        XCTAssertTrue(table.isComplete)
        XCTAssertEqual(Set(reasons(run.committedItems).keys), [3, 12])
        XCTAssertEqual(run.wholeAttempts, 7, "three losses per isolation, twice, then the commit")
        XCTAssertEqual(table.poisonedCount, 2)
    }

    func testLossesThatAreNotAnItemsDoingAreClearedAndTheShardGoesOutWholeAgain() {
        var table = LeaseTable(shards: makeShards(1, size: 4), settings: settings)
        table.hello(worker: "w", now: 0)
        // Three unrelated deaths (the host rebooted, say) while running the shard.
        for step in UInt64(1)...3 {
            _ = assigned(table.request(worker: "w", now: step * 10))
            table.hello(worker: "w", now: step * 10 + 1)
        }
        XCTAssertTrue(table.tick(now: 40).contains(.suspected(shardID: 0, offsets: 0..<4)))
        // Every probe comes back: offsets 0..<2, then 2..<3, then the single suspect 3.
        var probed: [[UInt64]] = []
        var now: UInt64 = 50
        var decision = table.request(worker: "w", now: now)
        while case let .probe(shardID, attempt, items, _) = decision {
            probed.append(items.map(\.index))
            table.shardDone(worker: "w", shardID: shardID, attempt: attempt, now: now)
            now += 10
            decision = table.request(worker: "w", now: now)
        }
        XCTAssertEqual(probed, [[0, 1], [2], [3]])
        XCTAssertTrue(table.tick(now: now).contains(.cleared(shardID: 0)))
        guard case let .assign(_, _, items, _) = decision else { return XCTFail("whole attempt expected, got \(decision)") }
        XCTAssertTrue(reasons(items).isEmpty, "nothing was found guilty")
        XCTAssertEqual(table.poisonedCount, 0)
    }

    func testRevocationsThatAreNotLossesNeverIsolate() {
        var table = LeaseTable(shards: makeShards(1, size: 4), settings: settings)
        var now: UInt64 = 0
        for round in 0..<12 {
            now += 10
            let lease = assigned(table.request(worker: "w", now: now))
            switch round % 3 {
            case 0: table.shardFailed(worker: "w", shardID: lease.shard, attempt: lease.attempt, now: now) // not a stall
            case 1: table.abandonWork(of: "w", now: now)                                                   // asked for other work
            default:                                                                                        // commit never came
                table.shardDone(worker: "w", shardID: lease.shard, attempt: lease.attempt, now: now)
                now += settings.commitWaitMs
            }
            XCTAssertFalse(table.tick(now: now).contains { if case .suspected = $0 { return true } else { return false } })
        }
    }

    /// A `hello` from the process that held the lease (same incarnation: its answer or its report was lost)
    /// revokes it without a loss; one from a new process (another incarnation, or none declared) is a loss.
    /// Before, three lost messages and re-hellos condemned a good item (simulator seed 609280).
    func testAHelloFromTheSameProcessIsNotALossAndOneFromANewProcessIs() {
        func suspected(_ events: [LeaseEvent]) -> Bool { events.contains { if case .suspected = $0 { return true } else { return false } } }
        func reasons(_ events: [LeaseEvent]) -> [RevocationReason] {
            events.compactMap { if case let .reassigned(_, _, _, reason) = $0 { return reason } else { return nil } }
        }
        var table = LeaseTable(shards: makeShards(1, size: 4), settings: settings)
        var now: UInt64 = 0
        table.hello(worker: "w", incarnation: "a", now: now)
        for _ in 0..<6 {
            now += 10
            _ = assigned(table.request(worker: "w", now: now))
            table.hello(worker: "w", incarnation: "a", now: now)
            let events = table.tick(now: now)
            XCTAssertEqual(reasons(events), [.abandoned])
            XCTAssertFalse(suspected(events), "a re-hello of the same process counted as a loss")
        }
        var lost = 0
        for incarnation in ["b", nil, "c"] as [String?] {
            now += 10
            _ = assigned(table.request(worker: "w", now: now))
            table.hello(worker: "w", incarnation: incarnation, now: now)
            let events = table.tick(now: now)
            XCTAssertEqual(reasons(events), [.workerRestarted])
            lost += 1
            XCTAssertEqual(suspected(events), lost == settings.lossLimit, "loss \(lost) of \(settings.lossLimit)")
        }
    }

    func testAWorkerThatCannotProbeGetsWholeAttemptsAndAnIsolatedShardIsNeverBackedUp() {
        var table = LeaseTable(shards: makeShards(2, size: 4), settings: settings)
        var now: UInt64 = 0
        for _ in 0..<3 {
            now += 10
            let lease = assigned(table.request(worker: "w1", now: now))
            XCTAssertEqual(lease.shard, 0)
            table.shardFailed(worker: "w1", shardID: lease.shard, attempt: lease.attempt, stalled: true, now: now)
        }
        // A 3.0 worker cannot be sent a probe: it gets the whole shard, as before 3.1.
        _ = assigned(table.request(worker: "old", now: now + 1, canProbe: false))
        table.shardFailed(worker: "old", shardID: 0, attempt: table.nextAttempt - 1, now: now + 2)
        guard case .probe(0, _, let items, _) = table.request(worker: "w1", now: now + 3) else { return XCTFail("probe expected") }
        XCTAssertEqual(items.map(\.index), [0, 1])
        XCTAssertEqual(assigned(table.request(worker: "w2", now: now + 4)).shard, 1)
        XCTAssertEqual(assigned(table.request(worker: "w3", now: now + 5)).shard, 1, "a backup of shard 1, never of the probe")
        guard case .noWork = table.request(worker: "w4", now: now + 6) else { return XCTFail("a probe is never backed up") }
    }

    func testProbesSkipEntriesTheScanRejected() {
        var items = makeItems(8)
        for offset in [0, 1, 2] { items[offset].locator = .rejected(reason: "index: bad line") }
        var table = LeaseTable(shards: ShardPlan.cut(items, shardSize: 8), settings: settings)
        let run = drive(&table, poison: [6])
        // The lower half 0..<4 holds one decodable item (3); nothing is probed that no worker would read.
        XCTAssertFalse(run.probes.joined().contains { $0 < 3 })
        XCTAssertEqual(reasons(run.committedItems)[6], "poison: worker lost 3 times while decoding")
        XCTAssertEqual(reasons(run.committedItems)[0], "index: bad line")
    }
}
