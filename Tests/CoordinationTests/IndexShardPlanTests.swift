import Coordination
import DatasetIndex
import Foundation
import WireProtocol
import XCTest

/// Shards as ranges of the on-disk index: items and the scan's rejects, cut into one stream of entries
/// (issue 13 item 8, issue 15 §1–2).
final class IndexShardPlanTests: XCTestCase {
    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("indexplan-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for name in ["a", "b", "c", "d", "e"] { FileManager.default.createFile(atPath: folder.appendingPathComponent("\(name).jpg").path, contents: Data([1])) }
    }

    override func tearDown() { try? FileManager.default.removeItem(at: folder) }

    func index(_ lines: [String]) throws -> IndexedDataset {
        let manifest = folder.appendingPathComponent("list.csv")
        try (["path,label"] + lines).joined(separator: "\n").write(to: manifest, atomically: true, encoding: .utf8)
        return try IndexScan.run(IndexSelection(path: manifest.path), indexPath: folder.appendingPathComponent("dataset.index").path)
    }

    /// Rejected inputs sit where the scan met them, travel as `.rejected` entries of their shard, and never
    /// make a shard longer than the shard size, however many come in a row.
    func testRejectedInputsAreEntriesOfTheShardCoveringThem() throws {
        let index = try index(["a.jpg,cat", ",dog", "b.jpg,dog", "missing.jpg,cat", "c.jpg,cat", "d.jpg,dog", ",x", ",y", ",z", "e.jpg,cat"])
        XCTAssertEqual(index.count, 5)
        XCTAssertEqual(index.deadLetterCount, 5)
        let plan = IndexShardPlan(index: index, shardSize: 3)
        XCTAssertEqual(plan.entryCount, 10)
        XCTAssertEqual(plan.shardCount, 4)
        XCTAssertEqual((0..<4).map { plan.itemCount(of: UInt32($0)) }, [3, 3, 3, 1])
        let shards = (0..<4).map { plan.items(of: UInt32($0)) }
        XCTAssertEqual(shards.map(\.count), [3, 3, 3, 1])
        let entries = shards.flatMap { $0 }
        XCTAssertEqual(entries.map(\.key), ["a.jpg", "list.csv:3", "b.jpg", "list.csv:5", "c.jpg", "d.jpg", "list.csv:8", "list.csv:9",
                                            "list.csv:10", "e.jpg"])
        let rejected = entries.filter { if case .rejected = $0.locator { return true } else { return false } }
        XCTAssertEqual(rejected.map(\.index), (0..<5).map { ItemRef.rejectedIndexBase + UInt64($0) })
        for entry in rejected {
            guard case .rejected(let reason) = entry.locator else { continue }
            XCTAssertTrue(reason.hasPrefix("index: "), reason)
        }
        let items = entries.filter { if case .file = $0.locator { return true } else { return false } }
        XCTAssertEqual(items.map(\.index), [0, 1, 2, 3, 4])
        XCTAssertEqual(items.map(\.locator), ["a", "b", "c", "d", "e"].map { .file(path: folder.appendingPathComponent("\($0).jpg").path) })
        XCTAssertEqual(items.map(\.label), [0, 1, 0, 1, 0], "names in order of first appearance (INDEX.md §4.4)")
    }

    /// The fingerprint ties a journal (and a store) to the index's content and the shard size.
    func testFingerprintFollowsContentAndShardSize() throws {
        let first = try index(["a.jpg,cat", "b.jpg,dog"])
        let byThree = IndexShardPlan(index: first, shardSize: 3).fingerprint
        XCTAssertEqual(IndexShardPlan(index: first, shardSize: 3).fingerprint, byThree)
        XCTAssertNotEqual(IndexShardPlan(index: first, shardSize: 2).fingerprint, byThree)
        let second = try index(["a.jpg,cat", "c.jpg,dog"])
        XCTAssertNotEqual(IndexShardPlan(index: second, shardSize: 3).fingerprint, byThree)
    }

    /// Without rejects, shard `s` is simply items `[s·size, (s+1)·size)`.
    func testWithoutRejectsShardsAreRangesOfPositions() throws {
        let index = try index(["a.jpg,1", "b.jpg,2", "c.jpg,1", "d.jpg,0", "e.jpg,2"])
        let plan = IndexShardPlan(index: index, shardSize: 2)
        XCTAssertEqual((0..<plan.shardCount).map { plan.items(of: UInt32($0)).map(\.index) }, [[0, 1], [2, 3], [4]])
        XCTAssertEqual(plan.items(of: 1).map(\.label), [1, 0])
    }
}
