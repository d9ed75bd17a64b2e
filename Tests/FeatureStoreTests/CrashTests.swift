import XCTest
import WireProtocol
@testable import FeatureStore
#if canImport(Glibc)
import Glibc
#endif

/// Kills a real child process with SIGKILL at each commit stage and checks what a reopened store shows.
///
/// The child is this test binary re-run on `testChildCommitsAndKillsItself`, which only acts when the
/// parent passes it a store path through the environment.
final class CrashTests: XCTestCase {
    private static let rootVariable = "FEATURESTORE_CRASH_ROOT"
    private static let stageVariable = "FEATURESTORE_CRASH_STAGE"

    func testChildCommitsAndKillsItself() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let root = environment[Self.rootVariable], let stageName = environment[Self.stageVariable],
              let stage = FeatureStore.CommitStage(rawValue: stageName) else {
            throw XCTSkip("only runs as the child of testKillDuringCommitLeavesShardAllOrNothing")
        }
        let store = try FeatureStore.open(at: URL(fileURLWithPath: root), forWriting: true)
        store.commitStageObserver = { reached in
            if reached == stage { kill(getpid(), SIGKILL) }
        }
        try store.commit(makeContents(base: 100, count: 50, dead: [7, 8]), shardID: 2, attempt: 4)
    }

    func testKillDuringCommitLeavesShardAllOrNothing() throws {
        #if !os(Linux)
        throw XCTSkip("re-running the test binary relies on /proc/self/exe")
        #else
        let testBinary = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        let stages: [FeatureStore.CommitStage] = [.recordStarted, .appended, .durable]
        for stage in stages {
            let root = try makeTemporaryDirectory(self)
            do {
                let store = try FeatureStore.create(at: root, dtype: .f16, dimension: 3)
                try store.commit(makeContents(base: 0, count: 10, dead: [3]), shardID: 1, attempt: 1)
            }

            let child = Process()
            child.executableURL = testBinary
            child.arguments = ["FeatureStoreTests.CrashTests/testChildCommitsAndKillsItself"]
            child.environment = ProcessInfo.processInfo.environment.merging(
                [Self.rootVariable: root.path, Self.stageVariable: stage.rawValue]) { $1 }
            let output = Pipe()
            child.standardOutput = output
            child.standardError = output
            try child.run()
            let log = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            child.waitUntilExit()
            XCTAssertEqual(child.terminationReason, .uncaughtSignal, "\(stage): child was not killed\n\(log)")
            XCTAssertEqual(child.terminationStatus, SIGKILL, "\(stage)\n\(log)")

            // A killed process loses nothing from the page cache: a whole record is there even unsynced.
            let store = try FeatureStore.open(at: root, verifyChecksums: true, forWriting: true)
            let shardVisible = stage != .recordStarted
            XCTAssertEqual(store.committedShards, shardVisible ? [1, 2] : [1], "\(stage)")
            let segment = root.appendingPathComponent("segments/000001.seg")
            XCTAssertEqual((try FileManager.default.attributesOfItem(atPath: segment.path)[.size] as! Int) % CommitRecord.alignment, 0,
                           "\(stage): a torn record was cut away on open")
            let expected = Set(0..<UInt64(10)).union(shardVisible ? Set(100..<UInt64(150)) : [])
            let report = store.exactlyOnceReport(expectedIndexes: expected) { shard, letter in
                (shard == 1 ? 0 : 100) + UInt64(letter.offset)
            }
            XCTAssertTrue(report.isExactlyOnce, "\(stage): \(report)")
            XCTAssertEqual(try store.rows().count, shardVisible ? 57 : 9)

            // The head re-receives the shard after restarting; committing it must work or be a no-op.
            XCTAssertEqual(try store.commit(makeContents(base: 100, count: 50, dead: [7, 8]), shardID: 2, attempt: 5), !shardVisible)
            XCTAssertEqual(store.shards.last?.attempt, shardVisible ? 4 : 5)
        }
        #endif
    }
}
