import DatasetIndex
import Extraction
import NumpyFormat
import Foundation
import XCTest

/// `FeatureExtractor` decodes beside the backbone when cores are spare and between engine runs when the
/// engine takes every core. Both must give the same rows, in order, with bad inputs anywhere in a batch.
final class DecodePathTests: XCTestCase {
    static let home = featureStreamHome(anchor: #filePath)

    func testBothDecodePathsGiveTheSameRowsAndDeadLettersWithHolesMidBatch() throws {
        guard ProcessInfo.processInfo.activeProcessorCount >= 2 else { throw XCTSkip("needs 2 cores for the overlapping path") }
        let folder = Self.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder/val/1-trouser")
        let good = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted().prefix(9).map { folder.appendingPathComponent($0).path }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        try Data().write(to: scratch.appendingPathComponent("empty.png"))
        try Data("not an image".utf8).write(to: scratch.appendingPathComponent("text.png"))
        // Holes first, mid-batch and last in a batch of 4, and a batch with nothing but a hole.
        let bad = { (name: String) in scratch.appendingPathComponent(name).path }
        let paths = [bad("empty.png"), good[0], good[1], good[2],
                     good[3], bad("text.png"), good[4], good[5],
                     bad("missing.png"),
                     good[6], good[7], good[8], bad("text.png")]
        let items = paths.enumerated().map {
            IndexedItem(position: UInt64($0), key: "\($0):\(($1 as NSString).lastPathComponent)", label: -1, locator: .file(path: $1))
        }
        let config = try ModelConfig.load(Self.home.appendingPathComponent("models/efficientnet-lite0").path)
        func run(engineThreads: Int) throws -> (rows: [String: [Float]], order: [String], dead: [String]) {
            let extractor = try FeatureExtractor(config: config, batchSize: 4, threads: engineThreads)
            var rows: [String: [Float]] = [:], order: [String] = [], dead: [String] = []
            try extractor.extract(items, decodeThreads: 1) { batch in
                XCTAssertEqual(batch.features.count, batch.items.count * extractor.featureWidth)
                for (row, item) in batch.items.enumerated() {
                    rows[item.key] = Array(batch.features[(row * extractor.featureWidth)..<((row + 1) * extractor.featureWidth)])
                    order.append(item.key)
                }
                dead += batch.deadLetters.map(\.key)
            }
            return (rows, order, dead)
        }
        // One engine thread and one decoder fit two cores: decoding overlaps. An engine on every core leaves
        // none: each batch is decoded between runs, by one thread a core, into slots closed up around the holes.
        let overlapping = try run(engineThreads: 1)
        let betweenRuns = try run(engineThreads: ProcessInfo.processInfo.activeProcessorCount)
        let expectedOrder = [1, 2, 3, 4, 6, 7, 9, 10, 11].map { items[$0].key }
        XCTAssertEqual(overlapping.order, expectedOrder)
        XCTAssertEqual(overlapping.dead, ["0:empty.png", "5:text.png", "8:missing.png", "12:text.png"])
        XCTAssertEqual(betweenRuns.order, expectedOrder)
        XCTAssertEqual(betweenRuns.dead, overlapping.dead)
        // Different engine thread counts may sum in another order: equal to float tolerance, and each row
        // must be its own image's (a row moved to the wrong slot would be far off).
        for key in expectedOrder {
            let a = overlapping.rows[key]!, b = betweenRuns.rows[key]!
            let scale = a.map(abs).max()!
            XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-4 * scale, key)
        }
        XCTAssertNotEqual(overlapping.rows[expectedOrder[0]], overlapping.rows[expectedOrder[8]])
    }
}
