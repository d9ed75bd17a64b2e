import ClusterSimulation
import Foundation
import XCTest

/// The simulator over many seeds: every run must store every item exactly once, never lose an acknowledged
/// shard, keep every bound, and finish once faults stop. A failing seed prints the line that replays it.
final class ClusterSimulationTests: XCTestCase {
    func testSeedsKeepEveryInvariant() throws {
        let count = UInt64(ProcessInfo.processInfo.environment["FEATSTREAM_SIM_TEST_SEEDS"] ?? "") ?? 200
        var faults: [String: Int] = [:]
        var failures: [String] = []
        for seed in 1...count {
            do {
                faults.merge(try ClusterSimulator(seed: seed).run().faults, uniquingKeysWith: +)
            } catch {
                failures.append("\(error)")
                if failures.count >= 5 { break }
            }
        }
        XCTAssertEqual(failures, [], failures.joined(separator: "\n"))
        // The seeds must actually have exercised every kind of fault.
        for kind in ["crash coordinator", "crash head", "crash worker", "dropped message", "duplicated message", "partition",
                     "disk full", "fsync failure", "torn store tail", "poison crash", "poison hang", "stalled worker restarted"] {
            XCTAssertGreaterThan(faults[kind, default: 0], 0, "no seed injected '\(kind)'")
        }
    }
}
