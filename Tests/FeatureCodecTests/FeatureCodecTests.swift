import FeatStreamTestSupport
@testable import FeatureCodec
@testable import WireProtocol
import XCTest

final class FeatureCodecTests: XCTestCase {
    static let dtypes: [FeatureDType] = [.f32, .f16]
    static let codecs: [CodecID] = [.raw, .lz4, .shuffleLZ4]

    /// Feature-like values: half exact zeros (post-ReLU sparsity), the rest spread over magnitudes,
    /// plus values that exercise f16 rounding, subnormals and overflow.
    func sampleValues(_ count: Int, seed: UInt64 = 42) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { i in
            switch rng.next() % 8 {
            case 0, 1, 2, 3: return 0
            case 4: return Float(rng.next() % 6000) / 1000
            case 5: return Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x7FFF_FFFF) // any positive, incl. NaN/inf
            case 6: return -Float(rng.next() % 100_000) * 1e-9 // f16 subnormal range
            default: return Float(i % 7) * 10_000 // overflows f16 above 65504
            }
        }
    }

    func encode(_ values: [Float], _ dtype: FeatureDType, _ codec: CodecID) -> (payload: [UInt8], rawLength: Int) {
        values.withUnsafeBufferPointer { FeatureCodec.encode($0, dtype: dtype, codec: codec) }
    }

    func decode(_ payload: [UInt8], _ dtype: FeatureDType, _ codec: CodecID, rawLength: Int,
                limit: Int = 64 << 20) throws -> [Float] {
        try payload.withUnsafeBytes {
            try FeatureCodec.decode($0, dtype: dtype, codec: codec, rawLength: rawLength, limit: limit)
        }
    }

    func assertSame(_ a: Float, _ b: Float, _ message: @autoclosure () -> String, line: UInt = #line) {
        if a.isNaN || b.isNaN {
            XCTAssertTrue(a.isNaN && b.isNaN, message(), line: line)
        } else {
            XCTAssertEqual(a.bitPattern, b.bitPattern, "\(a) vs \(b): " + message(), line: line)
        }
    }

    // MARK: round trips

    func testRoundTripEveryPair() throws {
        let values = sampleValues(10_007) // odd, and not a multiple of any vector width
        for dtype in Self.dtypes {
            for codec in Self.codecs {
                let (payload, rawLength) = encode(values, dtype, codec)
                XCTAssertEqual(rawLength, values.count * (dtype == .f32 ? 4 : 2))
                let decoded = try decode(payload, dtype, codec, rawLength: rawLength)
                XCTAssertEqual(decoded.count, values.count)
                for (got, original) in zip(decoded, values) {
                    let expected = dtype == .f32 ? original : Float(Float16(original))
                    assertSame(got, expected, "\(dtype)+\(codec) of \(original)")
                    if dtype == .f16, original.isFinite, abs(original) <= 65504 {
                        XCTAssertLessThanOrEqual(abs(got - original), max(abs(original) * 0x1p-11, 0x1p-25))
                    }
                }

                var raw = [UInt8](repeating: 0xAA, count: rawLength + 3)
                try payload.withUnsafeBytes { p in
                    try raw.withUnsafeMutableBytes {
                        try FeatureCodec.decodeRaw(p, dtype: dtype, codec: codec, rawLength: rawLength, into: $0)
                    }
                }
                XCTAssertEqual(Array(raw.suffix(3)), [0xAA, 0xAA, 0xAA], "decodeRaw wrote past rawLength")
                let rawPayload = encode(values, dtype, .raw).payload
                XCTAssertEqual(Array(raw.prefix(rawLength)), rawPayload, "\(dtype)+\(codec) decodeRaw")
            }
        }
    }

    func testHalfConversionMatchesFloat16() {
        // Every half decodes exactly, through both the portable loop and the dispatching one.
        let halves = (0...UInt16.max).map { $0 }
        var portable = [Float](repeating: 0, count: halves.count)
        var dispatched = [Float](repeating: 0, count: halves.count)
        var shuffled = [Float](repeating: 0, count: halves.count)
        let planes = halves.map { UInt8(truncatingIfNeeded: $0) } + halves.map { UInt8($0 >> 8) }
        halves.withUnsafeBytes { h in
            HalfConversion.portableToFloat(h.baseAddress!, into: &portable, count: halves.count)
            HalfConversion.toFloat(h.baseAddress!, into: &dispatched, count: halves.count)
        }
        planes.withUnsafeBytes { HalfConversion.shuffledToFloat($0.baseAddress!, into: &shuffled, count: halves.count) }
        var portableShuffled = [Float](repeating: 0, count: halves.count)
        planes.withUnsafeBytes {
            HalfConversion.portableShuffledToFloat($0.baseAddress!, into: &portableShuffled, count: halves.count)
        }
        for (i, h) in halves.enumerated() {
            let expected = Float(Float16(bitPattern: h))
            assertSame(portable[i], expected, "portable \(h)")
            assertSame(dispatched[i], expected, "dispatched \(h)")
            assertSame(shuffled[i], expected, "shuffled \(h)")
            assertSame(portableShuffled[i], expected, "portable shuffled \(h)")
        }

        // Float -> half rounds like Float16(_:) (nearest, ties to even) on edges and random bit patterns.
        var rng = SplitMix64(seed: 7)
        var inputs: [Float] = [0, -0, 65504, 65519.99, 65520, -65520, .infinity, -.infinity, .nan,
                               0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-26, 0x1p-14, 0x1.ffcp-15, .leastNonzeroMagnitude,
                               1 + 0x1p-11, 1 + 0x1p-11 + 0x1p-20, 1 + 3 * 0x1p-11, .greatestFiniteMagnitude]
        inputs += (0..<200_000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
        for x in inputs {
            let got = HalfConversion.halfBits(x)
            let expected = Float16(x)
            if x.isNaN {
                XCTAssertTrue(Float16(bitPattern: got).isNaN, "\(x)")
            } else {
                XCTAssertEqual(got, expected.bitPattern, "\(x) (\(x.bitPattern))")
            }
        }
    }

    func testEmptyPayloads() throws {
        for dtype in Self.dtypes {
            for codec in Self.codecs {
                let (payload, rawLength) = encode([], dtype, codec)
                XCTAssertEqual(payload, [])
                XCTAssertEqual(rawLength, 0)
                XCTAssertEqual(try decode([], dtype, codec, rawLength: 0), [])
                try [UInt8]().withUnsafeBytes { p in
                    try FeatureCodec.decodeRaw(p, dtype: dtype, codec: codec, rawLength: 0,
                                               into: UnsafeMutableRawBufferPointer(start: nil, count: 0))
                }
            }
            // A valid LZ4 block of nothing (one zero token) is also accepted for no values.
            XCTAssertEqual(try decode([0], dtype, .lz4, rawLength: 0), [])
            XCTAssertThrowsError(try decode([0xFF, 1, 2], dtype, .lz4, rawLength: 0))
            XCTAssertThrowsError(try decode([1], dtype, .raw, rawLength: 0))
        }
    }

    // MARK: hostile input

    func testCorruptLZ4IsAnErrorNotACrash() {
        let values = sampleValues(4096, seed: 3)
        var rng = SplitMix64(seed: 99)
        for dtype in Self.dtypes {
            for codec in [CodecID.lz4, .shuffleLZ4] {
                let (payload, rawLength) = encode(values, dtype, codec)

                for _ in 0..<200 { // random bytes
                    let junk = (0..<(1 + Int(rng.next() % 2000))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                    XCTAssertThrowsError(try decode(junk, dtype, codec, rawLength: rawLength))
                }
                for cut in [1, 2, payload.count / 2, payload.count - 1] { // truncated
                    XCTAssertThrowsError(try decode(Array(payload.prefix(cut)), dtype, codec, rawLength: rawLength))
                }
                for _ in 0..<500 { // bit flips: must not crash; when they still decode, the size is right
                    var flipped = payload
                    for _ in 0..<(1 + Int(rng.next() % 3)) {
                        let bit = Int(rng.next() % UInt64(flipped.count * 8))
                        flipped[bit / 8] ^= 1 << UInt8(bit % 8)
                    }
                    if let decoded = try? decode(flipped, dtype, codec, rawLength: rawLength) {
                        XCTAssertEqual(decoded.count, values.count)
                    }
                }
            }
        }
    }

    func testRawLengthLies() throws {
        let values = sampleValues(1000, seed: 5)
        for dtype in Self.dtypes {
            let width = dtype == .f32 ? 4 : 2
            for codec in Self.codecs {
                let (payload, rawLength) = encode(values, dtype, codec)
                // Too big for the caller's limit: refused before allocating.
                XCTAssertThrowsError(try decode(payload, dtype, codec, rawLength: rawLength, limit: values.count * 4 - 1)) {
                    guard case .exceedsLimit = $0 as? FeatureCodecError else { return XCTFail("\($0)") }
                }
                XCTAssertNoThrow(try decode(payload, dtype, codec, rawLength: rawLength, limit: values.count * 4))
                // Huge claims: over the limit, over LZ4's range, or over what the block could expand to.
                XCTAssertThrowsError(try decode(payload, dtype, codec, rawLength: 1 << 40))
                XCTAssertThrowsError(try decode(payload, dtype, codec, rawLength: 32 << 20, limit: 1 << 30))
                // Too small, larger by one value, not a whole number of values, negative.
                XCTAssertThrowsError(try decode(payload, dtype, codec, rawLength: rawLength - width))
                XCTAssertThrowsError(try decode(payload, dtype, codec, rawLength: rawLength + width))
                XCTAssertThrowsError(try decode(payload, dtype, codec, rawLength: rawLength - 1)) {
                    XCTAssertEqual($0 as? FeatureCodecError, .sizeMismatch(
                        "rawLength \(rawLength - 1) is not a whole number of \(width)-byte values"))
                }
                XCTAssertThrowsError(try decode(payload, dtype, codec, rawLength: -width))
                // decodeRaw into a destination shorter than rawLength.
                var small = [UInt8](repeating: 0, count: rawLength - 1)
                XCTAssertThrowsError(try payload.withUnsafeBytes { p in
                    try small.withUnsafeMutableBytes {
                        try FeatureCodec.decodeRaw(p, dtype: dtype, codec: codec, rawLength: rawLength, into: $0)
                    }
                })
            }
        }
    }

    func testPayloadSizeMismatch() {
        let values = sampleValues(1000, seed: 11)
        for dtype in Self.dtypes {
            let (raw, rawLength) = encode(values, dtype, .raw)
            XCTAssertThrowsError(try decode(raw + [0], dtype, .raw, rawLength: rawLength)) {
                guard case .sizeMismatch = $0 as? FeatureCodecError else { return XCTFail("\($0)") }
            }
            XCTAssertThrowsError(try decode(Array(raw.dropLast()), dtype, .raw, rawLength: rawLength))
            // An LZ4 block that is valid but of other values than rawLength announces.
            let (shorter, _) = encode(Array(values.prefix(999)), dtype, .lz4)
            XCTAssertThrowsError(try decode(shorter, dtype, .lz4, rawLength: rawLength)) {
                guard case .sizeMismatch = $0 as? FeatureCodecError else { return XCTFail("\($0)") }
            }
            XCTAssertThrowsError(try decode([], dtype, .lz4, rawLength: rawLength))
        }
    }

    func testMaximalExpansionIsAccepted() throws {
        // All zeros is LZ4's best case; the expansion bound used to reject lies must still admit it.
        let zeros = [Float](repeating: 0, count: 1 << 20)
        for codec in [CodecID.lz4, .shuffleLZ4] {
            let (payload, rawLength) = encode(zeros, .f32, codec)
            XCTAssertLessThan(payload.count * 200, rawLength)
            XCTAssertEqual(try decode(payload, .f32, codec, rawLength: rawLength), zeros)
        }
    }

    // MARK: shuffle

    func testShuffleIsInvertedByUnshuffle() {
        var rng = SplitMix64(seed: 1)
        for width in [1, 2, 3, 4, 8] {
            for count in [0, 1, 3, 7, 15, 17, 33, 1001] {
                let bytes = (0..<(count * width)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                var shuffled = [UInt8](repeating: 0, count: bytes.count)
                var back = [UInt8](repeating: 0, count: bytes.count)
                bytes.withUnsafeBytes { b in
                    shuffled.withUnsafeMutableBytes {
                        ByteShuffle.shuffle(b.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!,
                                            into: $0.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!,
                                            count: count, width: width)
                    }
                }
                for i in 0..<count {
                    for k in 0..<width {
                        XCTAssertEqual(shuffled[k * count + i], bytes[i * width + k])
                    }
                }
                shuffled.withUnsafeBytes { s in
                    back.withUnsafeMutableBytes {
                        ByteShuffle.unshuffle(s.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!,
                                              into: $0.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!,
                                              count: count, width: width)
                    }
                }
                XCTAssertEqual(back, bytes, "width \(width) count \(count)")
            }
        }
    }

    func testShuffledHalfEncodingIsShuffleOfHalves() {
        let values = sampleValues(1001, seed: 13)
        let plain = encode(values, .f16, .raw).payload
        var fused = [UInt8](repeating: 0, count: plain.count)
        values.withUnsafeBufferPointer { v in
            fused.withUnsafeMutableBufferPointer {
                HalfConversion.toShuffledHalf(v.baseAddress!, into: $0.baseAddress!, count: values.count)
            }
        }
        var shuffled = [UInt8](repeating: 0, count: plain.count)
        plain.withUnsafeBytes { p in
            shuffled.withUnsafeMutableBytes {
                ByteShuffle.shuffle(p.baseAddress!, into: $0.baseAddress!, count: values.count, width: 2)
            }
        }
        XCTAssertEqual(fused, shuffled)
    }
}

