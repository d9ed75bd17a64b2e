import FeatStreamTestSupport
import Foundation
import XCTest
@testable import WireProtocol

/// Properties that must hold for every frame, not only the committed vectors.
final class PropertyTests: XCTestCase {
    // MARK: random messages

    static let alphabet: [Unicode.Scalar] = Array("abcXYZ019 /:._-".unicodeScalars) + ["é", "ß", "к", "ч", "中", "😀", "\u{0}"]

    static func randomString(_ rng: inout SplitMix64, maxLength: Int = 24) -> String {
        var s = String.UnicodeScalarView()
        for _ in 0..<Int.random(in: 0...maxLength, using: &rng) { s.append(alphabet.randomElement(using: &rng)!) }
        return String(s)
    }

    static func randomBatch(_ rng: inout SplitMix64) -> FeatureBatch {
        let rows = Int.random(in: 0...8, using: &rng)
        let dead = Int.random(in: 0...3, using: &rng)
        let itemCount = UInt32(rows + dead + Int.random(in: 0...100, using: &rng))
        let dtype: FeatureDType = Bool.random(using: &rng) ? .f16 : .f32
        let codec = [CodecID.raw, .lz4, .shuffleLZ4].randomElement(using: &rng)!
        let dimension = UInt32.random(in: 1...64, using: &rng)
        let rawLength = rows * Int(dimension) * dtype.width
        let payloadLength: Int
        switch codec {
        case .raw: payloadLength = rawLength
        case .lz4, .shuffleLZ4: payloadLength = rawLength == 0 ? 0 : Int.random(in: 1...(rawLength + rawLength / 255 + 16), using: &rng)
        }
        return FeatureBatch(
            shardID: .random(in: 0...UInt32.max, using: &rng), attempt: .random(in: 0...9, using: &rng),
            shardItemCount: itemCount,
            offsets: (0..<rows).map { _ in .random(in: 0..<itemCount, using: &rng) },
            indexes: (0..<rows).map { _ in .random(in: 0...UInt64.max, using: &rng) },
            labels: (0..<rows).map { _ in .random(in: -1...999, using: &rng) },
            keys: (0..<rows).map { _ in randomString(&rng) },
            deadLetters: (0..<dead).map { _ in
                DeadLetterEntry(offset: .random(in: 0..<itemCount, using: &rng), key: randomString(&rng), reason: randomString(&rng, maxLength: 60))
            },
            dtype: dtype, dimension: dimension, codec: codec, rawLength: UInt32(rawLength),
            payload: (0..<payloadLength).map { _ in .random(in: 0...255, using: &rng) })
    }

    static func randomMessage(_ rng: inout SplitMix64) -> Message {
        let u32 = { (rng: inout SplitMix64) in UInt32.random(in: 0...UInt32.max, using: &rng) }
        let u64 = { (rng: inout SplitMix64) in UInt64.random(in: 0...UInt64.max, using: &rng) }
        switch MessageType.allCases.randomElement(using: &rng)! {
        case .hello:
            var caps: [String: String] = [:]
            for _ in 0..<Int.random(in: 0...6, using: &rng) { caps[randomString(&rng, maxLength: 8)] = randomString(&rng) }
            return .hello(workerID: randomString(&rng), host: randomString(&rng), pid: u32(&rng), capabilities: caps)
        case .shardRequest: return .shardRequest(workerID: randomString(&rng))
        case .shardDone: return .shardDone(shardID: u32(&rng), attempt: u32(&rng), items: u32(&rng), deadLetters: u32(&rng))
        case .shardFailed: return .shardFailed(shardID: u32(&rng), attempt: u32(&rng), reason: randomString(&rng, maxLength: 200))
        case .welcome: return .welcome(epoch: u64(&rng), headAddress: randomString(&rng), heartbeatIntervalMs: u32(&rng), deadAfterBeats: u32(&rng), plan: u64(&rng))
        case .assignment, .probe:
            let isProbe = Int.random(in: 0...1, using: &rng) == 1
            let items = (0..<Int.random(in: 0...20, using: &rng)).map { _ in
                let locator: ItemLocator
                switch Int.random(in: 0...2, using: &rng) {
                case 0: locator = .file(path: randomString(&rng))
                case 1: locator = .tarMember(path: randomString(&rng), offset: u64(&rng), size: u32(&rng))
                default: locator = .rejected(reason: randomString(&rng))
                }
                return ItemRef(index: u64(&rng), key: randomString(&rng), label: .random(in: Int32.min...Int32.max, using: &rng),
                               locator: locator)
            }
            return isProbe ? .probe(shardID: u32(&rng), attempt: u32(&rng), leaseMs: u32(&rng), items: items)
                : .assignment(shardID: u32(&rng), attempt: u32(&rng), leaseMs: u32(&rng), items: items)
        case .noWork: return .noWork(retryAfterMs: u32(&rng))
        case .shutdown: return .shutdown(reason: randomString(&rng))
        case .heartbeat: return .heartbeat(epoch: u64(&rng), sequence: u64(&rng))
        case .headHello: return .headHello(epoch: u64(&rng), committed: (0..<Int.random(in: 0...50, using: &rng)).map { _ in u32(&rng) }, plan: u64(&rng))
        case .shardCommitted: return .shardCommitted(shardID: u32(&rng), attempt: u32(&rng), items: u32(&rng), deadLetters: u32(&rng))
        case .featureBatch: return .featureBatch(randomBatch(&rng))
        case .credit: return .credit(epoch: u64(&rng), limit: u32(&rng))
        }
    }

    func testRandomMessagesRoundTrip() throws {
        var rng = SplitMix64(seed: 0xF5_2024)
        for i in 0..<3000 {
            let m = Self.randomMessage(&rng)
            let bytes = FrameCodec.encode(m)
            let back: Message
            do { back = try FrameCodec.decode(bytes) } catch { XCTFail("#\(i) \(m): \(error)"); continue }
            XCTAssertEqual(back, m, "#\(i)")
            XCTAssertEqual(FrameCodec.encode(back), bytes, "#\(i): encoding is not canonical")
            XCTAssertNoThrow(try FrameCodec.validate(m))
        }
    }

    func testEncodingIsDeterministicForMaps() {
        // Dictionary iteration order varies between instances; the frame must not.
        var caps: [String: String] = [:]
        for i in 0..<50 { caps["k\(i)"] = "v\(i)" }
        let a = FrameCodec.encode(.hello(workerID: "w", host: "h", pid: 1, capabilities: caps))
        var copy: [String: String] = [:]
        for (k, v) in caps.reversed() { copy[k] = v }
        XCTAssertEqual(a, FrameCodec.encode(.hello(workerID: "w", host: "h", pid: 1, capabilities: copy)))
    }

    // MARK: damage

    func validFrames() throws -> [(String, [UInt8])] {
        var frames = try VectorTests.valid.keys.sorted().map { ($0, try loadVector($0)) }
        var rng = SplitMix64(seed: 7)
        for i in 0..<40 { frames.append(("random#\(i)", FrameCodec.encode(Self.randomMessage(&rng)))) }
        return frames
    }

    func testEveryTruncationFails() throws {
        for (name, frame) in try validFrames() {
            for cut in 0..<frame.count {
                XCTAssertThrowsError(try FrameCodec.decode(Array(frame[0..<cut])), "\(name) cut at \(cut)")
            }
        }
    }

    /// A shorter body with a fixed-up length and CRC gets past the framing checks, so this
    /// exercises every field reader's bounds check rather than only the length check.
    func testEveryBodyTruncationWithValidFramingFails() throws {
        for (name, frame) in try validFrames() {
            let bodyLength = frame.count - FrameCodec.overhead
            for cut in 0..<bodyLength {
                var f = Array(frame[0..<(FrameCodec.headerSize + cut)])
                f.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(cut).littleEndian, toByteOffset: 6, as: UInt32.self) }
                withUnsafeBytes(of: CRC32C.checksum(f).littleEndian) { f.append(contentsOf: $0) }
                XCTAssertThrowsError(try FrameCodec.decode(f), "\(name) body cut at \(cut)") { error in
                    guard let e = error as? FrameError else { return XCTFail("\(error)") }
                    XCTAssertTrue(e.counterName == "malformed" || e.counterName == "exceeds_limit", "\(name) cut \(cut): \(e)")
                }
            }
        }
    }

    func testEverySingleBitFlipIsCaught() throws {
        for (name, frame) in try validFrames() {
            for bit in 0..<(frame.count * 8) {
                var f = frame
                f[bit / 8] ^= 1 << UInt8(bit % 8)
                XCTAssertThrowsError(try FrameCodec.decode(f), "\(name) bit \(bit)") { error in
                    // Flips in magic, major or length fail their own checks first; all others hit the CRC.
                    let byte = bit / 8
                    let framing = byte < 3 || (6..<10).contains(byte)
                    if !framing { XCTAssertEqual(error as? FrameError, .checksumMismatch, "\(name) bit \(bit)") }
                }
            }
        }
    }

    // MARK: limits

    func testLimitsAreEnforced() throws {
        let hello = try loadVector("hello")  // 88 bytes, strings ≤ 11 bytes, 3 capabilities
        var l = FrameLimits.default
        l.maxFrameBytes = 87
        XCTAssertThrowsError(try FrameCodec.decode(hello, limits: l)) { XCTAssertEqual(($0 as? FrameError)?.counterName, "exceeds_limit") }
        l = .default; l.maxString = 10
        XCTAssertThrowsError(try FrameCodec.decode(hello, limits: l)) { XCTAssertEqual(($0 as? FrameError)?.counterName, "exceeds_limit") }
        l = .default; l.maxMapEntries = 2
        XCTAssertThrowsError(try FrameCodec.decode(hello, limits: l)) { XCTAssertEqual(($0 as? FrameError)?.counterName, "exceeds_limit") }

        let batch = try loadVector("feature_batch_lz4")  // 3 rows × 16, 16 items
        l = .default; l.maxRows = 2
        XCTAssertThrowsError(try FrameCodec.decode(batch, limits: l)) { XCTAssertEqual(($0 as? FrameError)?.counterName, "exceeds_limit") }
        l = .default; l.maxDimension = 15
        XCTAssertThrowsError(try FrameCodec.decode(batch, limits: l)) { XCTAssertEqual(($0 as? FrameError)?.counterName, "exceeds_limit") }
        l = .default; l.maxItemsPerShard = 15
        XCTAssertThrowsError(try FrameCodec.decode(batch, limits: l)) { XCTAssertEqual(($0 as? FrameError)?.counterName, "exceeds_limit") }
        l = .default; l.maxRows = 3; l.maxDimension = 16; l.maxItemsPerShard = 16
        XCTAssertNoThrow(try FrameCodec.decode(batch, limits: l))
    }

    func testValidateCatchesWhatTheReceiverWouldReject() {
        let long = String(repeating: "x", count: 5000)
        XCTAssertThrowsError(try FrameCodec.validate(.shutdown(reason: long)))
        // Beyond the u16 prefix the encoder cuts at a scalar boundary instead of corrupting the frame.
        let huge = String(repeating: "ч", count: 40_000)  // 80 000 UTF-8 bytes
        var l = FrameLimits.default; l.maxString = 65_535
        guard case .shutdown(let cut) = try? FrameCodec.decode(FrameCodec.encode(.shutdown(reason: huge)), limits: l) else {
            return XCTFail("truncated string frame must decode")
        }
        XCTAssertEqual(cut.utf8.count, 65_534)
        XCTAssertThrowsError(try FrameCodec.validate(.shutdown(reason: huge), limits: l))
        var bad = VectorTests.valid["feature_batch_raw_f32"]!
        if case .featureBatch(var b) = bad { b.labels.removeLast(); bad = .featureBatch(b) }
        XCTAssertThrowsError(try FrameCodec.validate(bad))
    }

    // MARK: CRC

    func testCRC32CKnownAnswers() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), CRC32C.checkValue)
        XCTAssertEqual(CRC32C.checksum([]), 0)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)  // RFC 3720 B.4
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8($0) }), 0x46DD_794E)
    }

    func testCRC32CSlicingMatchesBitwiseAtEveryAlignment() {
        func bitwise(_ bytes: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for b in bytes { c ^= UInt32(b); for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 } }
            return ~c
        }
        var rng = SplitMix64(seed: 3)
        let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for start in 0..<9 {
            for end in stride(from: start, through: data.count, by: 7) {
                let slice = data[start..<end]
                let fast = slice.withUnsafeBytes { CRC32C.checksum($0) }
                XCTAssertEqual(fast, bitwise(slice), "\(start)..<\(end)")
                let mid = (start + end) / 2
                let chained = CRC32C.checksum(Array(data[mid..<end]), seed: CRC32C.checksum(Array(data[start..<mid])))
                XCTAssertEqual(chained, fast)
            }
        }
    }

    /// The SSE4.2 kernel merges three interleaved streams only from 12 KiB on; every length around
    /// those boundaries, at odd alignments and with seeds, must agree with the table loop.
    func testCRC32CHardwareMatchesPortableOnLongInputs() {
        var rng = SplitMix64(seed: 5)
        let data = (0..<(3 * 4096 * 3 + 100)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let lengths = [0, 1, 7, 8, 4095, 12_287, 12_288, 12_289, 24_575, 24_576, 24_577, 3 * 4096 * 3 + 90]
        for start in [0, 1, 5] {
            for length in lengths where start + length <= data.count {
                data[start..<(start + length)].withUnsafeBytes { slice in
                    XCTAssertEqual(CRC32C.checksum(slice), CRC32C.portableChecksum(slice), "\(start)+\(length)")
                    XCTAssertEqual(CRC32C.checksum(slice, seed: 0xDEAD_BEEF), CRC32C.portableChecksum(slice, seed: 0xDEAD_BEEF))
                }
            }
        }
        #if arch(x86_64)
        XCTAssertTrue(CRC32C.hasSSE42, "every x86-64 CPU since 2008 has SSE4.2; without it this test compared the table loop with itself")
        #endif
    }

    // MARK: throughput

    /// A 16 × 1280 f16 batch, the head's hot path. Prints MB/s; asserts only a floor so slow CI passes.
    func testDecodeThroughputOfA16x1280F16Batch() throws {
        var rng = SplitMix64(seed: 11)
        let rows = 16, dim = 1280
        let batch = FeatureBatch(
            shardID: 1, attempt: 1, shardItemCount: 1024, offsets: (0..<UInt32(rows)).map { $0 },
            indexes: (0..<UInt64(rows)).map { 5000 + $0 }, labels: (0..<Int32(rows)).map { $0 % 10 },
            keys: (0..<rows).map { "train/n01440764/n01440764_\(10000 + $0).JPEG" }, deadLetters: [],
            dtype: .f16, dimension: UInt32(dim), codec: .raw, rawLength: UInt32(rows * dim * 2),
            payload: (0..<(rows * dim * 2)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        let frame = FrameCodec.encode(.featureBatch(batch))
        var iterations = 0
        let start = Date()
        var elapsed = 0.0
        repeat {
            for _ in 0..<100 {
                guard case .featureBatch(let b) = try FrameCodec.decode(frame) else { return XCTFail() }
                iterations += b.offsets.count > 0 ? 1 : 0
            }
            elapsed = Date().timeIntervalSince(start)
        } while elapsed < 0.5
        let mbps = Double(frame.count * iterations) / elapsed / 1e6
        let vectors = Double(rows * iterations) / elapsed

        var encodeIterations = 0
        let encodeStart = Date()
        var encodeElapsed = 0.0
        repeat {
            for _ in 0..<100 { encodeIterations += FrameCodec.encode(.featureBatch(batch)).count == frame.count ? 1 : 0 }
            encodeElapsed = Date().timeIntervalSince(encodeStart)
        } while encodeElapsed < 0.25
        let encodeMBps = Double(frame.count * encodeIterations) / encodeElapsed / 1e6

        let big = [UInt8](repeating: 0xA5, count: 8 << 20)
        let crcStart = Date()
        var crc: UInt32 = 0
        for _ in 0..<4 { crc = CRC32C.checksum(big, seed: crc) }
        let crcMBps = Double(4 * big.count) / Date().timeIntervalSince(crcStart) / 1e6

        print(String(format: "decode 16x1280 f16 frame (%d bytes): %.0f MB/s, %.0f frames/s, %.0f vectors/s; encode %.0f MB/s; CRC-32C %.0f MB/s",
                     frame.count, mbps, Double(iterations) / elapsed, vectors, encodeMBps, crcMBps))
        XCTAssertGreaterThan(mbps, 20)
    }
}
