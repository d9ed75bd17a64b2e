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
        let metadata = StoreMetadata(model: "resnet50", classNames: ["cat", "dog"], precision: "int8")
        do {
            let store = try FeatureStore.create(at: root, dtype: .f32, dimension: 3, metadata: metadata)
            XCTAssertTrue(try store.commit(makeContents(base: 100, count: 4, dead: [2]), shardID: 1, attempt: 3))
            XCTAssertTrue(try store.commit(makeContents(base: 0, count: 3), shardID: 0, attempt: 1))
            XCTAssertFalse(try store.commit(makeContents(base: 0, count: 3), shardID: 0, attempt: 2), "idempotent")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("segments").path), ["000001.seg"])

        let store = try FeatureStore.open(at: root, verifyChecksums: true)
        XCTAssertEqual(store.committedShards, [0, 1])
        XCTAssertEqual(store.metadata, metadata)
        XCTAssertNil(store.metadata.precisionMismatch(wanted: "int8", store: root.path))
        XCTAssertNotNil(store.metadata.precisionMismatch(wanted: "fp32", store: root.path))
        XCTAssertNil(StoreMetadata().precisionMismatch(wanted: "fp32", store: root.path), "a store from before the record")
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
        let store = try FeatureStore.open(at: root, verifyChecksums: true)
        XCTAssertEqual(store.dtype, .f16)
        let rows = try store.rows()
        XCTAssertEqual(rows[1].features, [1, 1.25, 1.5], "values exactly representable in f16 round-trip")
        XCTAssertEqual(rows.segments.first?.featureBytes.count, 12)
    }

    /// Bytes the file system has allocated to the file at `url` (reserved blocks included).
    private func allocatedBytes(_ url: URL) throws -> Int {
        var status = stat()
        XCTAssertEqual(stat(url.path, &status), 0, "stat \(url.path)")
        return Int(status.st_blocks) * 512
    }

    func testAppendsReserveBlocksAheadAndTheStoreGivesBackTheRestWhenClosed() throws {
        let root = try makeTemporaryDirectory(self)
        let segment = root.appendingPathComponent("segments/000001.seg")
        var recordBytes = 0
        do {
            let store = try FeatureStore.create(at: root, dtype: .f16, dimension: 3)
            try store.commit(makeContents(base: 0, count: 2), shardID: 0, attempt: 1)
            recordBytes = store.shards[0].bytes
            XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: segment.path)[.size] as? Int, recordBytes,
                           "the reservation must not change the file's size: readers walk records up to it")
            XCTAssertGreaterThanOrEqual(try allocatedBytes(segment), SegmentWriter.reservationStep,
                                        "blocks reserved ahead of the next appends")
        }
        XCTAssertLessThan(try allocatedBytes(segment), 1 << 20, "closing the store hands the unused reservation back")

        do {
            let store = try FeatureStore.open(at: root, forWriting: true)
            try store.commit(makeContents(base: 10, count: 3), shardID: 1, attempt: 1)
            XCTAssertGreaterThanOrEqual(try allocatedBytes(segment), SegmentWriter.reservationStep, "a reopened store reserves again")
        }
        XCTAssertLessThan(try allocatedBytes(segment), 1 << 20)
        let reopened = try FeatureStore.open(at: root, verifyChecksums: true)
        XCTAssertEqual(reopened.committedShards, [0, 1])
        XCTAssertEqual(try reopened.rows().indexes, [0, 1, 10, 11, 12])
    }

    func testDurableRecordsLeaveThePageCache() throws {
        let root = try makeTemporaryDirectory(self)
        let store = try FeatureStore.create(at: root, dtype: .f16, dimension: 1280)
        try store.commit(makeContents(base: 0, count: 64, dimension: 1280), shardID: 0, attempt: 1)
        let path = root.appendingPathComponent("segments/000001.seg").path
        let descriptor = open(path, O_RDONLY)
        XCTAssertGreaterThanOrEqual(descriptor, 0)
        defer { close(descriptor) }
        let length = store.shards[0].bytes
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let mapping = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, 0), mapping != MAP_FAILED else {
            return XCTFail("mmap \(path): errno \(errno)")
        }
        defer { munmap(mapping, length) }
        var resident = [UInt8](repeating: 0, count: (length + page - 1) / page)
        XCTAssertEqual(mincore(mapping, length, &resident), 0)
        let cached = resident.filter { $0 & 1 != 0 }.count
        // The record's 160 KB (40 pages) were written through the page cache; once synced they are dropped.
        XCTAssertLessThanOrEqual(cached, 1, "\(cached) of \(resident.count) pages of a synced record still cached")
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
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: store.root.appendingPathComponent("segments").path), [],
                       "a refused commit writes nothing")
    }

    func testCreateRefusesAnExistingStoreAndOpenRefusesANonStore() throws {
        let root = try makeTemporaryDirectory(self)
        XCTAssertThrowsError(try FeatureStore.open(at: root)) { XCTAssertEqual($0 as? FeatureStoreError, .notAStore(path: root.path)) }
        _ = try FeatureStore.create(at: root, dtype: .f32, dimension: 3)
        XCTAssertThrowsError(try FeatureStore.create(at: root, dtype: .f32, dimension: 3)) {
            XCTAssertEqual($0 as? FeatureStoreError, .alreadyExists(path: root.path))
        }
    }

    /// A store with shards 0, 1 and 2 in one segment; returns its root and the segment file.
    private func threeShardStore(segmentLimit: Int = FeatureStore.defaultSegmentLimit) throws -> (URL, URL) {
        let root = try makeTemporaryDirectory(self)
        let store = try FeatureStore.create(at: root, dtype: .f32, dimension: 3, segmentLimit: segmentLimit)
        for shard in 0..<3 { try store.commit(makeContents(base: UInt64(shard) * 10, count: 4), shardID: UInt32(shard), attempt: 1) }
        return (root, root.appendingPathComponent("segments/000001.seg"))
    }

    private func fileSize(_ url: URL) throws -> Int {
        try FileManager.default.attributesOfItem(atPath: url.path)[.size] as! Int
    }

    func testInterruptedAppendIsIgnoredReadOnlyAndCutForWriting() throws {
        let (root, segment) = try threeShardStore()
        let whole = try fileSize(segment)
        // What a kill -9 during an append leaves: the start of a record that never finished.
        let next = try Data(contentsOf: segment).prefix(70)
        let handle = try FileHandle(forWritingTo: segment)
        try handle.seekToEnd()
        try handle.write(contentsOf: next)
        try handle.close()

        let reader = try FeatureStore.open(at: root)
        XCTAssertEqual(reader.committedShards, [0, 1, 2])
        XCTAssertEqual(try fileSize(segment), whole + 70, "a reader never cuts: the tail may be a live append")
        XCTAssertThrowsError(try reader.commit(makeContents(base: 30, count: 1), shardID: 3, attempt: 1)) {
            XCTAssertEqual($0 as? FeatureStoreError, .readOnly(path: root.path))
        }

        let writer = try FeatureStore.open(at: root, forWriting: true)
        XCTAssertEqual(try fileSize(segment), whole)
        XCTAssertTrue(try writer.commit(makeContents(base: 30, count: 2), shardID: 3, attempt: 1))
        let reopened = try FeatureStore.open(at: root, verifyChecksums: true)
        XCTAssertEqual(reopened.committedShards, [0, 1, 2, 3])
        XCTAssertTrue(reopened.exactlyOnceReport(expectedIndexes: Set((0..<3).flatMap { s in (0..<4).map { UInt64(s * 10 + $0) } } + [30, 31])).isExactlyOnce)
    }

    func testTornRecordInTheLastSegmentEndsTheStoreThere() throws {
        // Unsynced appends may reach the disk in any order: shard 1's record torn, shard 2's whole.
        let (root, segment) = try threeShardStore()
        let recordLength = try FeatureStore.open(at: root).shards[0].bytes
        var bytes = try Data(contentsOf: segment)
        bytes[recordLength + CommitRecord.headerSize + 5] ^= 0x40
        try bytes.write(to: segment)

        XCTAssertEqual(try FeatureStore.open(at: root).committedShards, [0])
        _ = try FeatureStore.open(at: root, forWriting: true)
        XCTAssertEqual(try fileSize(segment), recordLength, "shard 2 was never acknowledged: its sync would have covered shard 1")
    }

    func testDamageBeforeTheLastSegmentIsNamedOnOpen() throws {
        // A one-byte limit puts every shard in a segment of its own.
        let (root, _) = try threeShardStore(segmentLimit: 1)
        let segments = root.appendingPathComponent("segments")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: segments.path).sorted(),
                       ["000001.seg", "000002.seg", "000003.seg"])
        let first = segments.appendingPathComponent("000001.seg")
        let handle = try FileHandle(forWritingTo: first)
        try handle.truncate(atOffset: 100)
        try handle.close()
        XCTAssertThrowsError(try FeatureStore.open(at: root, forWriting: true)) { error in
            guard case .corruptShard(let path, let reason) = error as? FeatureStoreError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("segments/000001.seg"), path)
            XCTAssertTrue(reason.contains("record at byte 0"), reason)
        }
    }

    func testChecksumVerificationCatchesFlippedBytes() throws {
        let (root, _) = try threeShardStore(segmentLimit: 1)
        let first = root.appendingPathComponent("segments/000001.seg")
        var bytes = try Data(contentsOf: first)
        bytes[CommitRecord.headerSize + 2] ^= 0xFF
        try bytes.write(to: first)
        XCTAssertEqual(try FeatureStore.open(at: root).committedShards, [0, 1, 2],
                       "headers alone still match; only the last segment's records are checksummed on every open")
        XCTAssertThrowsError(try FeatureStore.open(at: root, verifyChecksums: true)) { error in
            XCTAssertTrue("\(error)".contains("000001.seg: corrupt shard: record at byte 0: record CRC-32C mismatch"), "\(error)")
        }
    }

    func testStrayEntriesAndShardsStoredTwiceAreErrors() throws {
        let (root, _) = try threeShardStore(segmentLimit: 1)
        let segments = root.appendingPathComponent("segments")
        let stray = segments.appendingPathComponent("notes.txt")
        try Data("hi".utf8).write(to: stray)
        XCTAssertThrowsError(try FeatureStore.open(at: root)) { XCTAssertEqual($0 as? FeatureStoreError, .unexpectedEntry(path: stray.path)) }
        try FileManager.default.removeItem(at: stray)
        try FileManager.default.copyItem(at: segments.appendingPathComponent("000002.seg"), to: segments.appendingPathComponent("000004.seg"))
        XCTAssertThrowsError(try FeatureStore.open(at: root)) { XCTAssertTrue("\($0)".contains("shard 1 is stored twice"), "\($0)") }
    }

    func testRecordsOfMixedDTypeContentsAreStoredInTheStoreDType() throws {
        let root = try makeTemporaryDirectory(self)
        let store = try FeatureStore.create(at: root, dtype: .f16, dimension: 3)
        try store.append(makeContents(base: 0, count: 2), shardID: 0, attempt: 1)   // f32 contents, narrowed
        XCTAssertEqual(store.pendingShards, [0])
        XCTAssertEqual(store.committedShards, [], "appended is not durable until a sync completes")
        let ticket = store.prepareSync()
        try ticket.perform()
        XCTAssertEqual(store.completeSync(ticket).map(\.shardID), [0])
        XCTAssertEqual(store.committedShards, [0])
        XCTAssertEqual(try FeatureStore.open(at: root).rows()[1].features, [1, 1.25, 1.5])
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
