import XCTest
import WireProtocol
@testable import FeatureStore

/// A batch of `offsets` for shard `shard`, whose features encode the offset so ordering is checkable.
func makeBatch(shard: UInt32 = 7, attempt: UInt32 = 1, count: UInt32 = 6, offsets: [UInt32],
               dead: [UInt32] = [], dimension: Int = 2) -> DecodedBatch {
    DecodedBatch(
        shardID: shard, attempt: attempt, shardItemCount: count, offsets: offsets,
        indexes: offsets.map { UInt64(shard) * 1000 + UInt64($0) },
        labels: offsets.map { Int32($0 % 3) },
        keys: offsets.map { "s\(shard)/item\($0)" },
        deadLetters: dead.map { DeadLetterEntry(offset: $0, key: "s\(shard)/item\($0)", reason: "corrupt jpeg") },
        features: offsets.flatMap { offset in (0..<dimension).map { Float(offset) + Float($0) / 10 } })
}

final class ShardLedgerTests: XCTestCase {
    func testOutOfOrderBatchesCompleteWithRowsSortedByOffset() throws {
        var ledger = ShardLedger(dimension: 2, committed: [])
        XCTAssertEqual(ledger.receive(makeBatch(offsets: [4, 2])), .accepted(newRows: 2, duplicates: 0))
        XCTAssertEqual(ledger.receive(makeBatch(offsets: [5], dead: [0])), .accepted(newRows: 1, duplicates: 0))
        XCTAssertEqual(ledger.bufferedRows, 3)
        guard case .completed(let contents) = ledger.receive(makeBatch(offsets: [3, 1])) else {
            return XCTFail("shard should complete")
        }
        XCTAssertEqual(contents.offsets, [1, 2, 3, 4, 5])
        XCTAssertEqual(contents.indexes, [7001, 7002, 7003, 7004, 7005])
        XCTAssertEqual(contents.keys, ["s7/item1", "s7/item2", "s7/item3", "s7/item4", "s7/item5"])
        XCTAssertEqual(contents.labels, [1, 2, 0, 1, 2])
        XCTAssertEqual(contents.features, [1, 1.1, 2, 2.1, 3, 3.1, 4, 4.1, 5, 5.1])
        XCTAssertEqual(contents.deadLetters.map(\.offset), [0])
        XCTAssertEqual(contents.shardItemCount, 6)
        XCTAssertEqual(ledger.openAttempts, 0, "a completed shard releases its memory")
        XCTAssertEqual(ledger.bufferedRows, 0)
    }

    func testDuplicatesWithinAnAttemptAreDroppedByOffset() {
        var ledger = ShardLedger(dimension: 2, committed: [])
        XCTAssertEqual(ledger.receive(makeBatch(offsets: [0, 1])), .accepted(newRows: 2, duplicates: 0))
        XCTAssertEqual(ledger.receive(makeBatch(offsets: [1, 2], dead: [0])), .accepted(newRows: 1, duplicates: 2))
        XCTAssertEqual(ledger.receive(makeBatch(offsets: [3, 3])), .accepted(newRows: 1, duplicates: 1))
        XCTAssertEqual(ledger.bufferedRows, 4)
        guard case .completed(let contents) = ledger.receive(makeBatch(offsets: [4, 5, 0])) else {
            return XCTFail("shard should complete")
        }
        XCTAssertEqual(contents.offsets, [0, 1, 2, 3, 4, 5])
        XCTAssertTrue(contents.deadLetters.isEmpty, "offset 0 arrived as a row first")
    }

    func testFirstAttemptToCompleteWinsAndSupersededAttemptIsDropped() {
        var ledger = ShardLedger(dimension: 2, committed: [])
        XCTAssertEqual(ledger.receive(makeBatch(attempt: 1, count: 3, offsets: [0, 1])), .accepted(newRows: 2, duplicates: 0))
        XCTAssertEqual(ledger.receive(makeBatch(attempt: 2, count: 3, offsets: [2])), .accepted(newRows: 1, duplicates: 0))
        XCTAssertEqual(ledger.receive(makeBatch(shard: 8, attempt: 1, count: 3, offsets: [0])), .accepted(newRows: 1, duplicates: 0))
        XCTAssertEqual(ledger.openAttempts, 3)
        guard case .completed(let contents) = ledger.receive(makeBatch(attempt: 2, count: 3, offsets: [0, 1])) else {
            return XCTFail("attempt 2 should complete")
        }
        XCTAssertEqual(contents.offsets, [0, 1, 2])
        XCTAssertEqual(ledger.openAttempts, 1, "attempt 1 of shard 7 is dropped; shard 8 stays")
        XCTAssertEqual(ledger.bufferedRows, 1)

        // Before the commit is confirmed, stragglers are dropped as duplicates of the winning contents.
        XCTAssertEqual(ledger.receive(makeBatch(attempt: 1, count: 3, offsets: [2])), .accepted(newRows: 0, duplicates: 1))
        ledger.markCommitted(7)
        XCTAssertEqual(ledger.receive(makeBatch(attempt: 1, count: 3, offsets: [2])), .alreadyCommitted)
        XCTAssertEqual(ledger.receive(makeBatch(attempt: 3, count: 3, offsets: [0, 1, 2])), .alreadyCommitted)
        XCTAssertEqual(ledger.openAttempts, 1)
        XCTAssertEqual(ledger.discardedBatches, 3)
    }

    func testFailedCommitLetsAnotherAttemptCompleteTheShard() {
        var ledger = ShardLedger(dimension: 2, committed: [])
        guard case .completed = ledger.receive(makeBatch(count: 1, offsets: [0])) else { return XCTFail("should complete") }
        ledger.commitFailed(7)
        guard case .completed = ledger.receive(makeBatch(attempt: 2, count: 1, offsets: [0])) else {
            return XCTFail("a re-leased attempt should complete again")
        }
    }

    func testCommittedShardsFromTheStoreAreAnsweredAlreadyCommitted() {
        var ledger = ShardLedger(dimension: 2, committed: [7])
        XCTAssertEqual(ledger.receive(makeBatch(offsets: [0])), .alreadyCommitted)
        XCTAssertEqual(ledger.openAttempts, 0)
    }

    func testEmptyShardCompletesOnItsFirstBatch() {
        var ledger = ShardLedger(dimension: 2, committed: [])
        XCTAssertEqual(ledger.receive(makeBatch(count: 0, offsets: [])),
                       .completed(ShardContents(shardItemCount: 0, dimension: 2, offsets: [], indexes: [], labels: [], keys: [],
                                                features: [], deadLetters: [])))
    }

    func testInconsistentBatchesAreRejectedAndLeaveNoTrace() {
        var ledger = ShardLedger(dimension: 2, committed: [])
        XCTAssertEqual(ledger.receive(makeBatch(count: 6, offsets: [0])), .accepted(newRows: 1, duplicates: 0))

        func assertRejected(_ batch: DecodedBatch, _ fragment: String, line: UInt = #line) {
            guard case .rejected(let reason) = ledger.receive(batch) else { return XCTFail("not rejected", line: line) }
            XCTAssertTrue(reason.contains(fragment), reason, line: line)
        }
        assertRejected(makeBatch(count: 7, offsets: [1]), "shardItemCount changed")
        assertRejected(makeBatch(count: 6, offsets: [6]), "offset 6")
        assertRejected(makeBatch(count: 6, offsets: [1], dead: [9]), "offset 9")
        assertRejected(makeBatch(count: 6, offsets: [1], dimension: 3), "dimension 2")
        var short = makeBatch(offsets: [1, 2])
        short.keys.removeLast()
        assertRejected(short, "1 keys")
        var shortIndexes = makeBatch(offsets: [1, 2])
        shortIndexes.indexes.removeLast()
        assertRejected(shortIndexes, "1 indexes")

        XCTAssertEqual(ledger.rejectedBatches, 6)
        XCTAssertEqual(ledger.bufferedRows, 1)
        XCTAssertEqual(ledger.openAttempts, 1)
    }

    func testASendersNewAttemptAbandonsItsUnfinishedOneAndTheBoundRefusesInsteadOfEvicting() {
        var ledger = ShardLedger(dimension: 2, committed: [], maxOpenAttempts: 2)
        let (a, b, c): ([UInt8], [UInt8], [UInt8]) = ([1], [2], [3])
        _ = ledger.receive(makeBatch(shard: 1, count: 2, offsets: [0]), from: a)
        _ = ledger.receive(makeBatch(shard: 2, count: 2, offsets: [0]), from: b)
        XCTAssertEqual(ledger.openAttempts, 2)
        // A third sender's attempt would exceed the bound: refused, and nobody's progress is lost.
        guard case .rejected(let reason) = ledger.receive(makeBatch(shard: 3, count: 2, offsets: [0]), from: c) else {
            return XCTFail("a batch beyond the bound must be refused")
        }
        XCTAssertTrue(reason.contains("2 attempts are already open"), reason)
        XCTAssertEqual(ledger.openAttempts, 2)
        guard case .completed = ledger.receive(makeBatch(shard: 1, count: 2, offsets: [1]), from: a) else {
            return XCTFail("shard 1 kept its first row")
        }
        // Sender b moves on to shard 4: its unfinished shard 2 is abandoned, so a later row of it alone does not complete it.
        XCTAssertEqual(ledger.receive(makeBatch(shard: 4, count: 2, offsets: [0]), from: b), .accepted(newRows: 1, duplicates: 0))
        XCTAssertEqual(ledger.abandonedAttempts, 1)
        XCTAssertEqual(ledger.receive(makeBatch(shard: 2, count: 2, offsets: [1]), from: c), .accepted(newRows: 1, duplicates: 0))
        XCTAssertEqual(ledger.receive(makeBatch(shard: 2, attempt: 2, count: 2, offsets: [0, 1]), from: c),
                       .completed(ShardContents(shardItemCount: 2, dimension: 2, offsets: [0, 1], indexes: [2000, 2001],
                                                labels: [0, 1], keys: ["s2/item0", "s2/item1"], features: [0, 0.1, 1, 1.1],
                                                deadLetters: [])))
        XCTAssertEqual(ledger.abandonedAttempts, 2, "sender c's own shard 2 attempt 1 was abandoned by its attempt 2")
    }

    func testDecodedBatchReadsRawF16AndF32Payloads() throws {
        let values: [Float] = [1.5, -2, 0.25, 65504]
        let f32 = values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        let f16 = values.flatMap { withUnsafeBytes(of: Float16($0).bitPattern.littleEndian, Array.init) }
        func batch(_ dtype: FeatureDType, _ payload: [UInt8]) -> FeatureBatch {
            FeatureBatch(shardID: 1, attempt: 2, shardItemCount: 2, offsets: [0, 1], indexes: [10, 11], labels: [0, 1],
                         keys: ["a", "b"], deadLetters: [], dtype: dtype, dimension: 2, codec: .raw,
                         rawLength: UInt32(payload.count), payload: payload)
        }
        XCTAssertEqual(DecodedBatch(batch(.f32, f32), decodedPayload: f32).features, values)
        XCTAssertEqual(DecodedBatch(batch(.f16, f16), decodedPayload: f16).features, values)
        XCTAssertNil(DecodedBatch(batch(.f16, f16), decodedPayload: Array(f16.dropLast())).features)

        // An f16 ledger keeps the received halves as they are, and refuses rows of another dtype.
        var ledger = ShardLedger(dimension: 2, dtype: .f16, committed: [])
        guard case .rejected(let reason) = ledger.receive(DecodedBatch(batch(.f32, f32), decodedPayload: f32)) else {
            return XCTFail("an f32 batch in an f16 ledger")
        }
        XCTAssertTrue(reason.contains("f32 rows, the ledger holds f16"), reason)
        guard case .completed(let contents) = ledger.receive(DecodedBatch(batch(.f16, f16), decodedPayload: f16)) else {
            return XCTFail("the f16 batch completes its shard")
        }
        XCTAssertEqual(contents.dtype, .f16)
        XCTAssertEqual(contents.featureBytes, f16)
    }
}
