import FeatStreamTestSupport
import XCTest
import Foundation
import WireProtocol
@testable import Coordination


/// Drives a LeaseTable and its journal the way the coordinator process would, against simulated workers
/// that die, hang and restart, a head that commits late or loses commits, and coordinator crashes.
final class SimulationTests: XCTestCase {
    enum WorkerState {
        case idle(nextRequestAt: UInt64)
        case working(shardID: UInt32, attempt: UInt32, finishAt: UInt64)
        case dead(restartAt: UInt64)
        case exited
    }

    struct SimWorker {
        var slot: Int
        var generation = 0
        var id: String { "w\(slot).g\(generation)" }
        var state: WorkerState = .idle(nextRequestAt: 0)
        var hungUntil: UInt64 = 0
    }

    /// What happened across runs, to check the simulation exercised every failure path.
    struct Coverage {
        var revocations: [RevocationReason: Int] = [:]
        var superseded = 0
        var lateCommits = 0
        var stalls = 0
    }

    func testRandomizedFailuresStoreEveryShardExactlyOnceAndFinish() throws {
        var coverage = Coverage()
        for seed: UInt64 in [1, 2, 3, 42, 2024] {
            try runSimulation(seed: seed, coverage: &coverage)
        }
        for reason in [RevocationReason.leaseExpired, .workerDead, .workerRestarted, .failed, .commitWaitExpired] {
            XCTAssertGreaterThan(coverage.revocations[reason, default: 0], 0, "never exercised: \(reason)")
        }
        XCTAssertGreaterThan(coverage.superseded, 0)
        XCTAssertGreaterThan(coverage.lateCommits, 0)
    }

    private func runSimulation(seed: UInt64, coverage: inout Coverage) throws {
        var rng = SplitMix64(seed: seed)
        func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
        func between(_ range: ClosedRange<UInt64>) -> UInt64 { UInt64.random(in: range, using: &rng) }

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("coordination-sim-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let journalPath = directory.appendingPathComponent("journal").path

        let plan = ShardPlan(items: makeItems(397), shardSize: 4)
        // Leases shorter than the death timeout exercise expiry; longer ones exercise death and restarts.
        let settings = LeaseSettings(leaseMs: seed.isMultiple(of: 2) ? 600 : 300, commitWaitMs: 250, workerDeadAfterMs: 400,
                                     maxAttemptsInFlight: 2, stallAfterMs: 2_000, idleRetryMs: 40)
        let step: UInt64 = 10
        let coordinatorCrashes: Set<UInt64> = [between(40...120) * step, between(150...300) * step]

        var journal: CoordinatorJournal? = try CoordinatorJournal.open(path: journalPath, plan: plan)
        var table: LeaseTable? = LeaseTable(shards: plan.shards, settings: settings)
        var coordinatorDownUntil: UInt64 = 0
        var workers = (0..<7).map { SimWorker(slot: $0) }
        var headStore: Set<UInt32> = []
        var commitsInFlight: [(deliverAt: UInt64, shardID: UInt32, attempt: UInt32)] = []
        var issuedAttempts: Set<UInt32> = []
        var newsPerShard: [UInt32: Int] = [:]

        /// The coordinator's handling of a head commit: journal news before acting on it.
        func deliverCommit(_ shardID: UInt32, _ attempt: UInt32, now: UInt64) throws {
            if table!.committed(shardID: shardID, attempt: attempt, now: now) {
                try journal!.append(shardID: shardID, attempt: attempt)
                newsPerShard[shardID, default: 0] += 1
            } else {
                coverage.lateCommits += 1
            }
        }

        var now: UInt64 = 0
        while !workers.allSatisfy({ if case .exited = $0.state { true } else { false } }) {
            now += step
            XCTAssertLessThan(now, 600_000, "seed \(seed): the job never finished")
            if now >= 600_000 { return }
            let up = table != nil

            if coordinatorCrashes.contains(now) {
                journal = nil   // crash: the lock and file are released, nothing else is flushed or said
                table = nil
                coordinatorDownUntil = now + 200
                continue
            }
            if !up && now >= coordinatorDownUntil {
                journal = try CoordinatorJournal.open(path: journalPath, plan: plan)
                table = LeaseTable(shards: plan.shards, settings: settings, committed: journal!.committed,
                                   firstAttempt: journal!.attemptsReservedThrough + 1)
                // The head's hello lists what its store holds; commits sent during the outage were lost.
                for shardID in headStore.sorted() { try deliverCommit(shardID, 0, now: now) }
                for worker in workers where worker.hungUntil <= now {
                    if case .dead = worker.state { continue }
                    if case .exited = worker.state { continue }
                    table!.hello(worker: worker.id, now: now)
                }
            }
            let coordinatorUp = table != nil

            // Head → coordinator commits.
            let due = commitsInFlight.filter { $0.deliverAt <= now }
            commitsInFlight.removeAll { $0.deliverAt <= now }
            if coordinatorUp {
                for commit in due { try deliverCommit(commit.shardID, commit.attempt, now: now) }
            }

            for index in workers.indices {
                var worker = workers[index]
                defer { workers[index] = worker }
                if case let .dead(restartAt) = worker.state {
                    guard now >= restartAt else { continue }
                    // Half the restarts reuse the worker id, so hello must void the old process's leases.
                    if chance(0.5) { worker.generation += 1 }
                    worker.state = .idle(nextRequestAt: now)
                    if coordinatorUp { table!.hello(worker: worker.id, now: now) }
                }
                if case .exited = worker.state { continue }
                if worker.hungUntil > now { continue }
                    if chance(0.002) {
                    worker.state = .dead(restartAt: now + between(100...1_500))
                    continue
                }
                if chance(0.002) {
                    worker.hungUntil = now + between(200...900)
                    continue
                }
                if coordinatorUp && now % 50 == 0 { table!.heartbeat(worker: worker.id, now: now) }

                if case let .working(shardID, attempt, finishAt) = worker.state, now >= finishAt {
                    // Every batch reached the head: it stores the shard unless it already has it, and
                    // acknowledges either way, sometimes late, sometimes never.
                    headStore.insert(shardID)
                    if !chance(0.1) {
                        commitsInFlight.append((now + between(0...400), shardID, attempt))
                    }
                    if coordinatorUp { table!.shardDone(worker: worker.id, shardID: shardID, attempt: attempt, now: now) }
                    worker.state = .idle(nextRequestAt: now)
                }
                if case let .working(shardID, attempt, _) = worker.state, chance(0.001) {
                    if coordinatorUp { table!.shardFailed(worker: worker.id, shardID: shardID, attempt: attempt, now: now) }
                    worker.state = .idle(nextRequestAt: now + 20)
                }
                if case let .idle(nextRequestAt) = worker.state, now >= nextRequestAt {
                    guard coordinatorUp else {
                        worker.state = .idle(nextRequestAt: now + 100)
                        continue
                    }
                    // Reserve attempt numbers in blocks so a restarted coordinator starts above them.
                    if table!.nextAttempt > journal!.attemptsReservedThrough {
                        try journal!.reserveAttempts(through: table!.nextAttempt + 15)
                    }
                    // Whole attempts only: probes of poison suspects are the cluster simulator's (ClusterSimulation).
                    switch table!.request(worker: worker.id, now: now, canProbe: false) {
                    case let .assign(shardID, attempt, items, leaseMs):
                        XCTAssertTrue(issuedAttempts.insert(attempt).inserted, "seed \(seed): attempt \(attempt) reused")
                        XCTAssertLessThanOrEqual(attempt, journal!.attemptsReservedThrough)
                        XCTAssertNil(journal!.committedAttempts[shardID], "seed \(seed): leased a journaled shard \(shardID)")
                        XCTAssertEqual(items, plan.shards[Int(shardID)].items)
                        XCTAssertEqual(UInt64(leaseMs), settings.leaseMs)
                        worker.state = .working(shardID: shardID, attempt: attempt, finishAt: now + between(50...500))
                    case let .noWork(retryAfterMs):
                        worker.state = .idle(nextRequestAt: now + UInt64(retryAfterMs))
                    case .finished:
                        worker.state = .exited
                    case .probe:
                        XCTFail("seed \(seed): a probe for a worker that cannot take one")
                    }
                }
            }

            guard coordinatorUp else { continue }
            for event in table!.tick(now: now) {
                switch event {
                case let .reassigned(_, _, _, reason): coverage.revocations[reason, default: 0] += 1
                case .superseded: coverage.superseded += 1
                case .stall: coverage.stalls += 1
                default: break
                }
            }
            let progress = table!.progress
            XCTAssertEqual(progress.committed + progress.leased + progress.pending, progress.total)
            for shard in table!.status(now: now) {
                XCTAssertLessThanOrEqual(shard.attempts.count, settings.maxAttemptsInFlight)
                XCTAssertEqual(Set(shard.attempts.map(\.worker)).count, shard.attempts.count,
                               "seed \(seed): two attempts of shard \(shard.shardID) on one worker")
            }
        }

        XCTAssertTrue(table?.isComplete ?? false, "seed \(seed)")
        let allShards = Set(plan.shards.map(\.id))
        XCTAssertEqual(headStore, allShards, "seed \(seed)")
        XCTAssertEqual(Set(newsPerShard.keys), allShards, "seed \(seed)")
        XCTAssertTrue(newsPerShard.values.allSatisfy { $0 == 1 }, "seed \(seed): a shard was committed twice")
        journal = nil
        let replayed = try CoordinatorJournal.open(path: journalPath, plan: plan)
        XCTAssertEqual(replayed.committed, allShards, "seed \(seed)")
        XCTAssertGreaterThan(issuedAttempts.count, plan.shards.count, "seed \(seed): failures should cause re-leases")
    }
}
