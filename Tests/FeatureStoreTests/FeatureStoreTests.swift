import XCTest
import WireProtocol
@testable import FeatureStore

/// A fresh directory under the system temp dir, removed when the test ends.
func makeTemporaryDirectory(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("featurestore-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// Contents of a complete shard whose dataset indexes are `base + offset`; `dead` offsets are dead letters.
func makeContents(base: UInt64, count: UInt32, dead: Set<UInt32> = [], dimension: Int = 3) -> ShardContents {
    let offsets = (0..<count).filter { !dead.contains($0) }
    return ShardContents(
        shardItemCount: count, dimension: dimension, offsets: offsets,
        indexes: offsets.map { base + UInt64($0) },
        labels: offsets.map { Int32($0) - 1 },
        keys: offsets.map { "dir/img \(base + UInt64($0)).jpg" },
        features: offsets.flatMap { offset in (0..<dimension).map { Float(base) + Float(offset) + Float($0) * 0.25 } },
        deadLetters: dead.sorted().map { DeadLetterEntry(offset: $0, key: "dir/img \(base + UInt64($0)).jpg", reason: "truncated") })
}

final class FeatureStoreTests: XCTestCase {
    func testCommitAndReopenRoundTripsF32() throws {
        let root = try makeTemporaryDirectory(self).appendingPathComponent("store")
        let metadata = StoreMetadata(model: "resnet50", classNames: ["cat", "dog"])
        do {
            let store = try FeatureStore.create(at: root, dtype: .f32, dimension: 3, metadata: metadata)
            XCTAssertTrue(try store.commit(makeContents(base: 100, count: 4, dead: [2]), shardID: 1, attempt: 3))
            XCTAssertTrue(try store.commit(makeContents(base: 0, count: 3), shardID: 0, attempt: 1))
            XCTAssertFalse(try store.commit(makeContents(base: 0, count: 3), shardID: 0, attempt: 2), "idempotent")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent("shards/000001/features.bin").path))

        let store = try FeatureStore.open(at: root, verifyChecksums: true)
        XCTAssertEqual(store.committedShards, [0, 1])
        XCTAssertEqual(store.metadata, metadata)
        XCTAssertEqual(store.dtype, .f32)
        XCTAssertEqual(store.rowCount, 6)
        XCTAssertEqual(store.deadLetterCount, 1)
        XCTAssertEqual(store.shardCount, 2)
        XCTAssertEqual(store.shards.map(\.attempt), [1, 3])

        let rows = try store.rows()
        XCTAssertEqual(rows.count, 6)
        XCTAssertEqual(rows.indexes, [0, 1, 2, 100, 101, 103])
        XCTAssertEqual(rows.map(\.shardID), [0, 0, 0, 1, 1, 1])
        XCTAssertEqual(rows[4], StoreRow(shardID: 1, index: 101, label: 0, key: "dir/img 101.jpg", features: [101, 101.25, 101.5]))
        XCTAssertEqual(rows.features(ofRow: 5), [103, 103.25, 103.5])

        let letters = try store.deadLetters()
        XCTAssertEqual(letters.count, 1)
        XCTAssertEqual(letters[0].shardID, 1)
        XCTAssertEqual(letters[0].entry, DeadLetterEntry(offset: 2, key: "dir/img 102.jpg", reason: "truncated"))

        let summary = store.inspect().description
        for fragment in ["dtype: f32", "dimension: 3", "shards: 2", "rows: 6", "dead letters: 1", "model: resnet50", "truncated"] {
            XCTAssertTrue(summary.contains(fragment), "\(fragment) missing from\n\(summary)")
        }
    }

    func testF16StoreHalvesTheFeatureBytes() throws {
        let root = try makeTemporaryDirectory(self)
        do {
            let store = try FeatureStore.create(at: root, dtype: .f16, dimension: 3)
            try store.commit(makeContents(base: 0, count: 2), shardID: 5, attempt: 1)
        }
        let size = try FileManager.default.attributesOfItem(atPath: root.appendingPathComponent("shards/000005/features.bin").path)[.size] as? Int
        XCTAssertEqual(size, 2 * 3 * 2)
        let store = try FeatureStore.open(at: root, verifyChecksums: true)
        XCTAssertEqual(store.dtype, .f16)
        let rows = try store.rows()
        XCTAssertEqual(rows[1].features, [1, 1.25, 1.5], "values exactly representable in f16 round-trip")
        XCTAssertEqual(rows.segments.first?.featureBytes.count, 12)
    }

    func testKeysWithNewlinesAndBackslashesRoundTrip() throws {
        let root = try makeTemporaryDirectory(self)
        let store = try FeatureStore.create(at: root, dtype: .f32, dimension: 1)
        let keys = ["a\nb", "c\\nd", "", "e\\", "f\r\n"]
        try store.commit(ShardContents(shardItemCount: 5, dimension: 1, offsets: [0, 1, 2, 3, 4], indexes: [0, 1, 2, 3, 4],
                                       labels: [0, 0, 0, 0, 0], keys: keys, features: [0, 1, 2, 3, 4], deadLetters: []),
                         shardID: 0, attempt: 1)
        XCTAssertEqual(try FeatureStore.open(at: root).rows().keys, keys)
    }

    func testCommitRejectsContentsThatDoNotFit() throws {
        let store = try FeatureStore.create(at: try makeTemporaryDirectory(self), dtype: .f32, dimension: 3)
        XCTAssertThrowsError(try store.commit(makeContents(base: 0, count: 2, dimension: 4), shardID: 0, attempt: 1))
        var miscounted = makeContents(base: 0, count: 2)
        miscounted.shardItemCount = 3
        XCTAssertThrowsError(try store.commit(miscounted, shardID: 0, attempt: 1))
        XCTAssertEqual(store.committedShards, [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: store.root.appendingPathComponent("shards").path), [],
                       "a refused commit leaves no temporary directory")
    }

    func testCreateRefusesAnExistingStoreAndOpenRefusesANonStore() throws {
        let root = try makeTemporaryDirectory(self)
        XCTAssertThrowsError(try FeatureStore.open(at: root)) { XCTAssertEqual($0 as? FeatureStoreError, .notAStore(path: root.path)) }
        _ = try FeatureStore.create(at: root, dtype: .f32, dimension: 3)
        XCTAssertThrowsError(try FeatureStore.create(at: root, dtype: .f32, dimension: 3)) {
            XCTAssertEqual($0 as? FeatureStoreError, .alreadyExists(path: root.path))
        }
    }

    func testTemporaryDirectoryLeftByACrashIsRemovedAndInvisible() throws {
        let root = try makeTemporaryDirectory(self)
        do {
            let store = try FeatureStore.create(at: root, dtype: .f32, dimension: 3)
            try store.commit(makeContents(base: 0, count: 2), shardID: 0, attempt: 1)
        }
        // What a kill -9 between writing and renaming leaves: a complete-looking shard under a temporary name.
        let shards = root.appendingPathComponent("shards")
        try FileManager.default.copyItem(at: shards.appendingPathComponent("000000"),
                                         to: shards.appendingPathComponent(".tmp-000001-4B1D"))
        try FileManager.default.createDirectory(at: shards.appendingPathComponent(".tmp-000002-EMPTY"), withIntermediateDirectories: false)

        let store = try FeatureStore.open(at: root)
        XCTAssertEqual(store.committedShards, [0])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: shards.path), ["000000"])
        XCTAssertTrue(store.exactlyOnceReport(expectedIndexes: 0..<2).isExactlyOnce)
    }

    func testDamagedShardsAreNamedOnOpen() throws {
        let root = try makeTemporaryDirectory(self)
        do {
            let store = try FeatureStore.create(at: root, dtype: .f32, dimension: 3)
            try store.commit(makeContents(base: 0, count: 4), shardID: 12, attempt: 1)
        }
        let features = root.appendingPathComponent("shards/000012/features.bin")
        let handle = try FileHandle(forWritingTo: features)
        try handle.truncate(atOffset: 40)
        try handle.close()
        XCTAssertThrowsError(try FeatureStore.open(at: root)) { error in
            guard case .corruptShard(let path, let reason) = error as? FeatureStoreError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("shards/000012"), path)
            XCTAssertTrue(reason.contains("features.bin"), reason)
        }
    }

    func testChecksumVerificationCatchesFlippedBytes() throws {
        let root = try makeTemporaryDirectory(self)
        do {
            let store = try FeatureStore.create(at: root, dtype: .f32, dimension: 3)
            try store.commit(makeContents(base: 0, count: 4), shardID: 3, attempt: 1)
        }
        let indexes = root.appendingPathComponent("shards/000003/indexes.bin")
        var bytes = try Data(contentsOf: indexes)
        bytes[0] ^= 0xFF
        try bytes.write(to: indexes)
        XCTAssertNoThrow(try FeatureStore.open(at: root), "sizes alone still match")
        XCTAssertThrowsError(try FeatureStore.open(at: root, verifyChecksums: true)) { error in
            XCTAssertTrue("\(error)".contains("indexes.bin CRC-32C"), "\(error)")
        }
    }

    func testStrayEntriesAndMissingMetaAreErrors() throws {
        let root = try makeTemporaryDirectory(self)
        _ = try FeatureStore.create(at: root, dtype: .f32, dimension: 3)
        let stray = root.appendingPathComponent("shards/123")
        try FileManager.default.createDirectory(at: stray, withIntermediateDirectories: false)
        XCTAssertThrowsError(try FeatureStore.open(at: root)) { XCTAssertEqual($0 as? FeatureStoreError, .unexpectedEntry(path: stray.path)) }
        try FileManager.default.moveItem(at: stray, to: root.appendingPathComponent("shards/000123"))
        XCTAssertThrowsError(try FeatureStore.open(at: root)) { XCTAssertTrue("\($0)".contains("000123: corrupt shard: meta.json"), "\($0)") }
    }

    func testExactlyOnceReportFindsMissingDuplicatedAndUnexpectedIndexes() throws {
        let store = try FeatureStore.create(at: try makeTemporaryDirectory(self), dtype: .f32, dimension: 3)
        try store.commit(makeContents(base: 0, count: 4, dead: [1]), shardID: 0, attempt: 1)   // 0, (1), 2, 3
        try store.commit(makeContents(base: 3, count: 3), shardID: 1, attempt: 1)              // 3 again, 4, 5
        try store.commit(makeContents(base: 20, count: 1), shardID: 2, attempt: 1)             // 20: not expected
        let keyToIndex = { (_: UInt32, letter: DeadLetterEntry) -> UInt64? in
            UInt64(letter.key.dropFirst("dir/img ".count).dropLast(".jpg".count))
        }

        let unresolved = store.exactlyOnceReport(expectedIndexes: 0..<8)
        XCTAssertEqual(unresolved.missing, [1, 6, 7])
        XCTAssertEqual(unresolved.unresolvedDeadLetters, 1)
        let rowsOnly = store.exactlyOnceReport(expectedIndexes: Set([0, 2, 3, 4, 5]))
        XCTAssertEqual(rowsOnly.duplicated, [3: 2])
        XCTAssertEqual(rowsOnly.unexpected, [20])
        XCTAssertEqual(rowsOnly.missing, [])

        for report in [store.exactlyOnceReport(expectedIndexes: 0..<8, deadLetterIndex: keyToIndex),
                       store.exactlyOnceReport(expectedIndexes: Set(0..<8), deadLetterIndex: keyToIndex)] {
            XCTAssertFalse(report.isExactlyOnce)
            XCTAssertEqual(report.expectedCount, 8)
            XCTAssertEqual(report.rows, 7)
            XCTAssertEqual(report.deadLetters, 1)
            XCTAssertEqual(report.missing, [6, 7])
            XCTAssertEqual(report.duplicated, [3: 2])
            XCTAssertEqual(report.unexpected, [20])
            XCTAssertEqual(report.unresolvedDeadLetters, 0)
            XCTAssertTrue(report.description.contains("VIOLATED"), report.description)
        }
        let clean = store.exactlyOnceReport(expectedIndexes: Set([0, 1, 2, 4, 5, 20, 3]), deadLetterIndex: keyToIndex)
        XCTAssertEqual(clean.duplicated, [3: 2])

        let fine = try FeatureStore.create(at: try makeTemporaryDirectory(self), dtype: .f32, dimension: 3)
        try fine.commit(makeContents(base: 0, count: 4, dead: [1]), shardID: 0, attempt: 1)
        XCTAssertTrue(fine.exactlyOnceReport(expectedIndexes: [0, 2, 3]).isExactlyOnce,
                      "an unresolvable dead letter is reported, not a violation")
        XCTAssertTrue(fine.exactlyOnceReport(expectedIndexes: 0..<4, deadLetterIndex: keyToIndex).isExactlyOnce)
    }

    func testLedgerAndStoreTogetherStoreEveryItemOnce() throws {
        let root = try makeTemporaryDirectory(self)
        var store = try FeatureStore.create(at: root, dtype: .f16, dimension: 2)
        var ledger = ShardLedger(dimension: 2, committed: store.committedShards)
        func deliver(_ batch: DecodedBatch) throws {
            if case .completed(let contents) = ledger.receive(batch) {
                try store.commit(contents, shardID: batch.shardID, attempt: batch.attempt)
                ledger.markCommitted(batch.shardID)
            }
        }
        try deliver(makeBatch(shard: 1, attempt: 1, count: 4, offsets: [0, 1]))
        try deliver(makeBatch(shard: 1, attempt: 2, count: 4, offsets: [3, 2, 1, 0]))
        try deliver(makeBatch(shard: 1, attempt: 1, count: 4, offsets: [2, 3]))
        try deliver(makeBatch(shard: 2, attempt: 1, count: 3, offsets: [2], dead: [0, 1]))

        // A restarted head learns what is committed from the store.
        store = try FeatureStore.open(at: root)
        ledger = ShardLedger(dimension: 2, committed: store.committedShards)
        XCTAssertEqual(ledger.receive(makeBatch(shard: 1, attempt: 3, count: 4, offsets: [0])), .alreadyCommitted)
        let expected = Set((0..<4).map { 1000 + UInt64($0) } + (0..<3).map { 2000 + UInt64($0) })
        let report = store.exactlyOnceReport(expectedIndexes: expected) { shard, letter in UInt64(shard) * 1000 + UInt64(letter.offset) }
        XCTAssertTrue(report.isExactlyOnce, report.description)
        XCTAssertEqual(store.shards.map(\.attempt), [2, 1])
    }
}

final class FeatureStoreCommitValidationTests: XCTestCase {
    func testCommitRefusesOffsetsThatDoNotCoverTheShardExactlyOnce() throws {
        let store = try FeatureStore.create(at: try makeTemporaryDirectory(self), dtype: .f32, dimension: 3)
        var unsorted = makeContents(base: 0, count: 3)
        unsorted.offsets = [0, 2, 1]
        var overlapping = makeContents(base: 0, count: 3, dead: [2])
        overlapping.deadLetters[0].offset = 1
        var beyond = makeContents(base: 0, count: 3, dead: [2])
        beyond.deadLetters[0].offset = 3
        for (contents, fragment) in [(unsorted, "not increasing"), (overlapping, "both a row and a dead letter"), (beyond, "beyond")] {
            XCTAssertThrowsError(try store.commit(contents, shardID: 0, attempt: 1)) { XCTAssertTrue("\($0)".contains(fragment), "\($0)") }
        }
        XCTAssertTrue(try store.commit(makeContents(base: 0, count: 3, dead: [0, 2]), shardID: 0, attempt: 1))
    }
}
