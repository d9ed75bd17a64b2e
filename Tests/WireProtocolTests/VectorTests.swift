import XCTest
@testable import WireProtocol

/// The committed vectors are the contract other implementations code against: these tests hold
/// the Swift codec to them byte for byte.
final class VectorTests: XCTestCase {
    static let batchKeys = ["a/0.jpg", "a/1.jpg", "a/3.jpg"]
    static let truncatedJPEG = DeadLetterEntry(offset: 2, key: "a/2.jpg", reason: "decode: truncated JPEG")

    /// Expected values of the valid vectors. FeatureBatch payloads are checked separately (they are
    /// compressor output), so those entries carry an empty payload filled in after that check.
    static let valid: [String: Message] = [
        "hello": .hello(workerID: "worker-a1", host: "gpu-node-03", pid: 4242,
                        capabilities: ["backbone": "resnet50", "dtype": "f16", "threads": "8"]),
        "hello_no_capabilities": .hello(workerID: "w", host: "", pid: 0, capabilities: [:]),
        "shard_request": .shardRequest(workerID: "worker-a1"),
        "shard_done": .shardDone(shardID: 7, attempt: 2, items: 1000, deadLetters: 3),
        "shard_failed": .shardFailed(shardID: 7, attempt: 2, reason: "draining: SIGTERM"),
        "welcome": .welcome(epoch: 0xFEDC_BA98_7654_3210, headAddress: "tcp://head:5556",
                            heartbeatIntervalMs: 1000, deadAfterBeats: 5, plan: 0x0011_2233_4455_6677),
        "assignment": .assignment(shardID: 7, attempt: 2, leaseMs: 30_000, items: [
            ItemRef(index: 0, key: "train/cat/0001.jpg", label: 3, locator: .file(path: "/data/train/cat/0001.jpg")),
            ItemRef(index: 1, key: "train/dog/0002.jpg", label: 5, locator: .file(path: "/data/train/dog/0002.jpg")),
            ItemRef(index: 1_000_000_007, key: "shard-0007.tar:ü-ключ", label: -1,
                    locator: .tarMember(path: "/data/shard-0007.tar", offset: 1536, size: 70_000)),
            ItemRef(index: ItemRef.rejectedIndexBase + 2, key: "labels.csv:17", label: -1,
                    locator: .rejected(reason: "manifest line 17: no path")),
        ]),
        "assignment_empty": .assignment(shardID: 0, attempt: 0, leaseMs: 0, items: []),
        "probe": .probe(shardID: 7, attempt: 9, leaseMs: 30_000, items: [
            ItemRef(index: 1, key: "train/dog/0002.jpg", label: 5, locator: .file(path: "/data/train/dog/0002.jpg")),
        ]),
        "no_work": .noWork(retryAfterMs: 500),
        "shutdown": .shutdown(reason: "job complete"),
        "heartbeat": .heartbeat(epoch: 0x0123_4567_89AB_CDEF, sequence: 42),
        "head_hello": .headHello(epoch: 99, committed: [0, 1, 2, 5, 0xFFFF_FFFF], plan: 0x0011_2233_4455_6677),
        "head_hello_empty": .headHello(epoch: 1, committed: [], plan: 0),
        "shard_committed": .shardCommitted(shardID: 7, attempt: 2, items: 997, deadLetters: 3),
        "credit": .credit(epoch: 0xFEDC_BA98_7654_3210, limit: 8),
        "feature_batch_raw_f32": .featureBatch(FeatureBatch(
            shardID: 7, attempt: 2, shardItemCount: 4, offsets: [0, 1], indexes: [100, 101], labels: [3, -1],
            keys: ["a/0.jpg", "a/1.jpg"], deadLetters: [], dtype: .f32, dimension: 4, codec: .raw, rawLength: 32,
            payload: [])),
        "feature_batch_lz4": .featureBatch(FeatureBatch(
            shardID: 7, attempt: 2, shardItemCount: 16, offsets: [0, 1, 3], indexes: [100, 101, 103], labels: [3, 5, 0],
            keys: batchKeys, deadLetters: [truncatedJPEG], dtype: .f16, dimension: 16, codec: .lz4, rawLength: 96,
            payload: [])),
        "feature_batch_shuffle_lz4": .featureBatch(FeatureBatch(
            shardID: 7, attempt: 2, shardItemCount: 16, offsets: [0, 1, 3], indexes: [100, 101, 103], labels: [3, 5, 0],
            keys: batchKeys, deadLetters: [truncatedJPEG], dtype: .f16, dimension: 16, codec: .shuffleLZ4,
            rawLength: 96, payload: [])),
        "feature_batch_dead_letters_only": .featureBatch(FeatureBatch(
            shardID: 9, attempt: 1, shardItemCount: 2, offsets: [], indexes: [], labels: [], keys: [],
            deadLetters: [DeadLetterEntry(offset: 0, key: "x.png", reason: "unsupported: CMYK"),
                          DeadLetterEntry(offset: 1, key: "y.png", reason: "io: ENOENT")],
            dtype: .f16, dimension: 1280, codec: .shuffleLZ4, rawLength: 0, payload: [])),
    ]

    /// Frames from newer minors: (expected value, canonical vector it must re-encode to).
    static let compat: [String: (Message, String)] = [
        "compat_minor_newer": (.heartbeat(epoch: 0x0123_4567_89AB_CDEF, sequence: 42), "heartbeat"),
        "compat_minor_older_head_hello": (.headHello(epoch: 1, committed: [], plan: 0), "head_hello_empty"),
    ]

    /// Expected errors of the invalid vectors. For `exceedsLimit`/`malformed` only the case is
    /// part of the contract, not the text, so those compare by `counterName`.
    static let invalid: [String: FrameError] = [
        "invalid_empty": .tooShort(0),
        "invalid_short": .tooShort(5),
        "invalid_bad_magic": .badMagic,
        "invalid_bad_version": .unsupportedVersion(major: 2, minor: 0),
        "invalid_locator_kind": .malformed(""),
        "invalid_unknown_type": .unknownType(0x7F),
        "invalid_bad_checksum": .checksumMismatch,
        "invalid_oversized_length": .exceedsLimit(""),
        "invalid_length_mismatch": .lengthMismatch(declared: 30, actual: 32),
        "invalid_count_mismatch": .malformed(""),
        "invalid_raw_length": .malformed(""),
        "invalid_unknown_codec": .malformed(""),
        "invalid_offset_out_of_range": .malformed(""),
        "invalid_rows_exceed_limit": .exceedsLimit(""),
        "invalid_raw_payload_size": .malformed(""),
        "invalid_lz4_payload_bound": .malformed(""),
        "invalid_truncated_string": .malformed(""),
        "invalid_bad_utf8": .malformed(""),
        "invalid_string_too_long": .exceedsLimit(""),
        "invalid_trailing_bytes": .malformed(""),
        "invalid_reserved_flags": .malformed(""),
        "invalid_unsorted_capabilities": .malformed(""),
        "invalid_items_count_huge": .exceedsLimit(""),
        "invalid_committed_count_huge": .malformed(""),
        "invalid_dimension_zero": .malformed(""),
    ]

    func testEveryVectorFileIsCovered() throws {
        let names = try allVectorNames()
        XCTAssertGreaterThan(names.count, 30)
        for name in names {
            XCTAssertTrue(Self.valid[name] != nil || Self.compat[name] != nil || Self.invalid[name] != nil,
                          "\(name).hex has no expectation in VectorTests")
        }
        let expected = Set(Self.valid.keys).union(Self.compat.keys).union(Self.invalid.keys)
        XCTAssertEqual(expected.subtracting(names), [], "expectations without a vector file")
    }

    func testEveryMessageCaseHasAVector() {
        let covered = Set(Self.valid.values.map(\.type))
        XCTAssertEqual(covered, Set(MessageType.allCases))
    }

    func testValidVectorsDecodeAndReencodeExactly() throws {
        for (name, expected) in Self.valid.sorted(by: { $0.key < $1.key }) {
            let bytes = try loadVector(name)
            let decoded: Message
            do { decoded = try FrameCodec.decode(bytes) } catch {
                XCTFail("\(name): \(error)"); continue
            }
            var want = expected
            if case .featureBatch(var w) = expected, case .featureBatch(let got) = decoded {
                try checkPayload(name, got)
                w.payload = got.payload
                want = .featureBatch(w)
            }
            XCTAssertEqual(decoded, want, name)
            XCTAssertEqual(FrameCodec.encode(decoded), bytes, "\(name): re-encoding differs")
            XCTAssertEqual(FrameCodec.encode(want), bytes, "\(name): encoding the expected value differs")
        }
    }

    /// The payload must be what its codec says: raw values, LZ4 of them, or LZ4 of their shuffle.
    private func checkPayload(_ name: String, _ b: FeatureBatch) throws {
        let raw = expectedFeatureBytes(rows: b.offsets.count, dimension: Int(b.dimension), dtype: b.dtype)
        XCTAssertEqual(raw.count, Int(b.rawLength), name)
        if raw.isEmpty { XCTAssertEqual(b.payload, [], name); return }
        switch b.codec {
        case .raw: XCTAssertEqual(b.payload, raw, name)
        case .lz4: XCTAssertEqual(try lz4Decompress(b.payload, rawLength: raw.count), raw, name)
        case .shuffleLZ4:
            let shuffled = try lz4Decompress(b.payload, rawLength: raw.count)
            XCTAssertEqual(unshuffle(shuffled, width: b.dtype.width), raw, name)
        }
    }

    func testCompatVectorsDecodeAndReencodeCanonically() throws {
        for (name, (expected, canonical)) in Self.compat {
            let decoded = try FrameCodec.decode(try loadVector(name))
            XCTAssertEqual(decoded, expected, name)
            XCTAssertEqual(FrameCodec.encode(decoded), try loadVector(canonical), name)
        }
    }

    func testInvalidVectorsFailWithTheirError() throws {
        for (name, expected) in Self.invalid.sorted(by: { $0.key < $1.key }) {
            let bytes = try loadVector(name)
            do {
                let m = try FrameCodec.decode(bytes)
                XCTFail("\(name): decoded to \(m)")
            } catch {
                switch expected {
                case .malformed, .exceedsLimit:
                    XCTAssertEqual(error.counterName, expected.counterName, "\(name): \(error)")
                default:
                    XCTAssertEqual(error, expected, name)
                }
            }
        }
    }

    static func caseName(_ e: FrameError) -> String {
        switch e {
        case .tooShort: return "tooShort"
        case .badMagic: return "badMagic"
        case .unsupportedVersion: return "unsupportedVersion"
        case .unknownType: return "unknownType"
        case .lengthMismatch: return "lengthMismatch"
        case .checksumMismatch: return "checksumMismatch"
        case .exceedsLimit: return "exceedsLimit"
        case .malformed: return "malformed"
        }
    }

    /// The hex comment `# expect:` in each invalid vector must agree with this file's table.
    func testInvalidVectorCommentsAgree() throws {
        for (name, expected) in Self.invalid {
            let text = try String(contentsOf: vectorsDirectory.appendingPathComponent(name + ".hex"), encoding: .utf8)
            let line = text.split(separator: "\n").first { $0.hasPrefix("# expect: ") }
            XCTAssertNotNil(line, name)
            let stated = line.map { String($0.dropFirst("# expect: ".count)) } ?? ""
            let caseName = Self.caseName(expected)
            XCTAssertTrue(stated.hasPrefix(caseName), "\(name): comment says \(stated), table says \(expected)")
        }
    }
}
