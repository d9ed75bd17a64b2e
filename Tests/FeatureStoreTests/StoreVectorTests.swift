import FeatStreamTestSupport
import Foundation
import WireProtocol
import XCTest
@testable import FeatureStore

/// The byte-exact record of Protocols/vectors/store, written by an encoder independent of this one.
final class StoreVectorTests: XCTestCase {
    private let vector = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Protocols/vectors/store/record_f16_two_rows_one_dead_letter.hex")

    private let contents = ShardContents(
        shardItemCount: 3, dimension: 3, offsets: [0, 2], indexes: [700, 702], labels: [1, -1],
        keys: ["train/cat/0001.png", "ключ/ü.jpg"], features: [0.5, -1, 2, 0, 65504, -0.25],
        deadLetters: [DeadLetterEntry(offset: 1, key: "train/dog/0002.png", reason: "decode: truncated PNG")])

    func testVectorDecodes() throws {
        let bytes = try parseHex(String(contentsOf: vector, encoding: .utf8))
        try bytes.withUnsafeBytes { raw in
            let header = try CommitRecord.decodeHeader(raw)
            XCTAssertEqual(header, CommitRecord.Header(dtype: .f16, shardID: 7, attempt: 2, shardItemCount: 3, rows: 2,
                                                       deadLetters: 1, dimension: 3, columnsLength: 116))
            XCTAssertEqual(header.recordLength, bytes.count)
            try CommitRecord.verify(raw, header: header)
            let featureEnd = CommitRecord.headerSize + header.featuresLength
            let columns = try CommitRecord.decodeColumns(UnsafeRawBufferPointer(rebasing: raw[featureEnd..<(featureEnd + header.columnsLength)]),
                                                         header: header)
            XCTAssertEqual(columns, CommitRecord.Columns(indexes: contents.indexes, labels: contents.labels, keys: contents.keys,
                                                         deadLetters: contents.deadLetters))
            XCTAssertEqual(FeatureDType.f16.floats(fromLittleEndian: raw[CommitRecord.headerSize..<featureEnd]),
                           contents.features)
        }
        var flipped = bytes
        flipped[60] ^= 1
        XCTAssertThrowsError(try flipped.withUnsafeBytes { try CommitRecord.verify($0, header: CommitRecord.decodeHeader($0)) }) {
            XCTAssertEqual($0 as? CommitRecord.DecodeError, .recordChecksum)
        }
        flipped = bytes
        flipped[9] ^= 1
        XCTAssertThrowsError(try flipped.withUnsafeBytes { try CommitRecord.decodeHeader($0) }) {
            XCTAssertEqual($0 as? CommitRecord.DecodeError, .headerChecksum)
        }
    }

    func testStoreWritesTheVectorByteForByte() throws {
        let root = try makeTemporaryDirectory(self)
        let store = try FeatureStore.create(at: root, dtype: .f16, dimension: 3)
        XCTAssertTrue(try store.commit(contents, shardID: 7, attempt: 2))
        XCTAssertEqual(try [UInt8](Data(contentsOf: root.appendingPathComponent("segments/000001.seg"))),
                       try parseHex(String(contentsOf: vector, encoding: .utf8)))
    }
}
