import CLZ4
import WireProtocol

#if _endian(big)
#error("FeatureCodec writes the wire's little-endian values by reinterpreting host memory")
#endif

/// Why a feature payload could not be decoded; the associated text is a human-readable detail.
public enum FeatureCodecError: Error, Equatable, CustomStringConvertible {
    /// The payload, `rawLength` or destination buffer disagree about how many bytes there are.
    case sizeMismatch(String)
    /// The payload is not a valid encoding (malformed LZ4 block, impossible expansion).
    case corrupt(String)
    /// Decoding would need more memory than the caller allowed or than LZ4 can address.
    case exceedsLimit(String)

    /// The error kind followed by its detail.
    public var description: String {
        switch self {
        case .sizeMismatch(let detail): return "feature payload size mismatch: \(detail)"
        case .corrupt(let detail): return "corrupt feature payload: \(detail)"
        case .exceedsLimit(let detail): return "feature payload exceeds limit: \(detail)"
        }
    }
}

/// Encodes and decodes the feature values of a `FeatureBatch` payload.
///
/// A payload is the values in `dtype` (little-endian), optionally byte-shuffled (`shuffleLZ4`), as
/// one LZ4 block (`lz4`, `shuffleLZ4`) or as-is (`raw`). `rawLength` is the byte count before
/// compression, `values * width(dtype)`. Decoders treat every input as hostile: they check sizes
/// before allocating, bound LZ4 by `rawLength`, and report failures as `FeatureCodecError`.
public enum FeatureCodec {
    /// Most raw bytes one payload may carry: LZ4's block limit (also below `UInt32.max`, the wire field).
    public static let maxRawLength = Int(LZ4_MAX_INPUT_SIZE)

    /// LZ4 cannot expand a block by more than about 255x (a 255-valued length byte per 255 output
    /// bytes); a `rawLength` beyond this is a lie we reject before allocating for it.
    static func maxExpansion(ofCompressed count: Int) -> Int { count &* 255 &+ 64 }

    /// Encodes `values` as `dtype` (f16 rounds to nearest, ties to even; out-of-range values become
    /// ±infinity) with `codec`.
    ///
    /// Returns the payload and `rawLength`, the byte count of the values in `dtype` before compression.
    /// No values give an empty payload and `rawLength` 0 for every codec. Traps if the values
    /// in `dtype` exceed `maxRawLength` bytes.
    public static func encode(_ values: UnsafeBufferPointer<Float>, dtype: FeatureDType,
                              codec: CodecID) -> (payload: [UInt8], rawLength: Int) {
        let count = values.count
        guard count > 0, let source = values.baseAddress else { return ([], 0) }
        let width = dtype.width
        let rawLength = count * width
        precondition(rawLength <= maxRawLength, "feature payload of \(rawLength) bytes exceeds \(maxRawLength)")

        switch (dtype, codec) {
        case (.f32, .raw):
            return (Array(UnsafeRawBufferPointer(values)), rawLength)
        case (.f16, .raw):
            let payload = [UInt8](unsafeUninitializedCapacity: rawLength) { buffer, initialized in
                HalfConversion.toHalf(source, into: UnsafeMutableRawPointer(buffer.baseAddress!), count: count)
                initialized = rawLength
            }
            return (payload, rawLength)
        case (.f32, .lz4):
            return (compress(UnsafeRawPointer(source), rawLength), rawLength)
        case (.f16, .lz4):
            return withScratch(rawLength) { staged in
                HalfConversion.toHalf(source, into: staged, count: count)
                return (compress(staged, rawLength), rawLength)
            }
        case (.f32, .shuffleLZ4):
            return withScratch(rawLength) { staged in
                ByteShuffle.shuffle(source, into: staged, count: count, width: 4)
                return (compress(staged, rawLength), rawLength)
            }
        case (.f16, .shuffleLZ4):
            return withScratch(rawLength) { staged in
                HalfConversion.toShuffledHalf(source, into: staged.assumingMemoryBound(to: UInt8.self), count: count)
                return (compress(staged, rawLength), rawLength)
            }
        }
    }

    /// Decodes a payload to Float32 values (`rawLength / width(dtype)` of them).
    ///
    /// Never allocates or writes more than `rawLength` raw bytes, nor more than `limit` bytes of
    /// Float32 output. Throws `exceedsLimit` when the output would pass `limit`, `sizeMismatch` when
    /// `rawLength` is not a whole number of values or the payload decodes to a different size, and
    /// `corrupt` for an invalid LZ4 block; it does not crash on any input.
    public static func decode(_ payload: UnsafeRawBufferPointer, dtype: FeatureDType, codec: CodecID,
                              rawLength: Int, limit: Int = 64 << 20) throws -> [Float] {
        let width = dtype.width
        try validate(payload, codec: codec, rawLength: rawLength, width: width)
        let count = rawLength / width
        guard count <= limit / 4 else {
            throw FeatureCodecError.exceedsLimit("\(count) values need \(count * 4) bytes, limit is \(limit)")
        }
        if count == 0 { return [] }

        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            let out = buffer.baseAddress!
            switch (dtype, codec) {
            case (.f32, .raw):
                UnsafeMutableRawPointer(out).copyMemory(from: payload.baseAddress!, byteCount: rawLength)
            case (.f16, .raw):
                HalfConversion.toFloat(payload.baseAddress!, into: out, count: count)
            case (.f32, .lz4):
                try decompress(payload, into: UnsafeMutableRawPointer(out), rawLength: rawLength)
            case (.f16, .lz4):
                try withScratch(rawLength) { staged in
                    try decompress(payload, into: staged, rawLength: rawLength)
                    HalfConversion.toFloat(staged, into: out, count: count)
                }
            case (.f32, .shuffleLZ4):
                try withScratch(rawLength) { staged in
                    try decompress(payload, into: staged, rawLength: rawLength)
                    ByteShuffle.unshuffle(staged, into: out, count: count, width: 4)
                }
            case (.f16, .shuffleLZ4):
                try withScratch(rawLength) { staged in
                    try decompress(payload, into: staged, rawLength: rawLength)
                    HalfConversion.shuffledToFloat(staged, into: out, count: count)
                }
            }
            initialized = count
        }
    }

    /// Decodes a payload into `into` as raw little-endian `dtype` values, for stores that keep f16 as f16.
    ///
    /// Writes exactly the first `rawLength` bytes of `into` (which must hold at least that many) and
    /// nothing else. `dtype` is needed only to undo `shuffleLZ4`, whose planes depend on the value width.
    /// Throws like `decode`; `into` may be partly overwritten when it throws.
    public static func decodeRaw(_ payload: UnsafeRawBufferPointer, dtype: FeatureDType, codec: CodecID,
                                 rawLength: Int, into destination: UnsafeMutableRawBufferPointer) throws {
        let width = dtype.width
        try validate(payload, codec: codec, rawLength: rawLength, width: width)
        guard destination.count >= rawLength else {
            throw FeatureCodecError.sizeMismatch("destination holds \(destination.count) bytes, rawLength is \(rawLength)")
        }
        if rawLength == 0 { return }
        let out = destination.baseAddress!
        switch codec {
        case .raw:
            out.copyMemory(from: payload.baseAddress!, byteCount: rawLength)
        case .lz4:
            try decompress(payload, into: out, rawLength: rawLength)
        case .shuffleLZ4:
            try withScratch(rawLength) { staged in
                try decompress(payload, into: staged, rawLength: rawLength)
                ByteShuffle.unshuffle(staged, into: out, count: rawLength / width, width: width)
            }
        }
    }

    // MARK: - Internals

    /// Checks everything that can be checked before touching the payload's contents, so that a
    /// lying header costs no allocation.
    private static func validate(_ payload: UnsafeRawBufferPointer, codec: CodecID, rawLength: Int,
                                 width: Int) throws {
        guard rawLength >= 0, rawLength % width == 0 else {
            throw FeatureCodecError.sizeMismatch("rawLength \(rawLength) is not a whole number of \(width)-byte values")
        }
        guard rawLength <= maxRawLength else {
            throw FeatureCodecError.exceedsLimit("rawLength \(rawLength) exceeds \(maxRawLength)")
        }
        switch codec {
        case .raw:
            guard payload.count == rawLength else {
                throw FeatureCodecError.sizeMismatch("raw payload has \(payload.count) bytes, rawLength is \(rawLength)")
            }
        case .lz4, .shuffleLZ4:
            guard payload.count <= Int(Int32.max) else {
                throw FeatureCodecError.exceedsLimit("LZ4 payload of \(payload.count) bytes exceeds Int32.max")
            }
            if rawLength == 0 {
                // encode() sends nothing for no values; a non-empty block must then decode to nothing.
                if payload.count > 0 {
                    var sink: UInt8 = 0
                    try withUnsafeMutableBytes(of: &sink) {
                        try decompress(payload, into: $0.baseAddress!, rawLength: 0)
                    }
                }
                return
            }
            guard payload.count > 0 else {
                throw FeatureCodecError.corrupt("empty LZ4 block for rawLength \(rawLength)")
            }
            guard rawLength <= maxExpansion(ofCompressed: payload.count) else {
                throw FeatureCodecError.corrupt(
                    "\(payload.count)-byte LZ4 block cannot expand to rawLength \(rawLength)")
            }
        }
    }

    /// LZ4-decodes `payload` into exactly `rawLength` bytes at `destination`.
    private static func decompress(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableRawPointer,
                                   rawLength: Int) throws {
        guard let source = payload.baseAddress, payload.count > 0 else {
            throw FeatureCodecError.corrupt("empty LZ4 block")
        }
        let produced = LZ4_decompress_safe(source.assumingMemoryBound(to: CChar.self),
                                           destination.assumingMemoryBound(to: CChar.self),
                                           Int32(payload.count), Int32(rawLength))
        guard produced >= 0 else {
            throw FeatureCodecError.corrupt(
                "LZ4 block of \(payload.count) bytes is malformed or decodes past rawLength \(rawLength)")
        }
        guard Int(produced) == rawLength else {
            throw FeatureCodecError.sizeMismatch("LZ4 block decodes to \(produced) bytes, rawLength is \(rawLength)")
        }
    }

    /// Effort of the LZ4 high-compression search that encodes every block.
    ///
    /// HC writes the same block format as LZ4's fast mode, but finds fewer, longer matches. On real
    /// Lite0 features (f16, shuffled, 16-row batches) level 6 against fast mode: 2.65x smaller than
    /// raw f32 instead of 2.40x, and blocks decode 23% faster (2.27 against 1.84 GB/s on one core).
    /// The head decodes every worker's batches on one core while a worker spends ~80 µs of its
    /// ~10 ms per image on the search, so the trade goes to the head. Levels above 6 cost the
    /// worker twice as much for 1-5% more.
    public static let compressionLevel: Int32 = 6

    /// One LZ4 block of `count` bytes, copied out of a worst-case-sized buffer so the payload does
    /// not pin `compressBound` bytes of capacity while it waits for credit.
    private static func compress(_ source: UnsafeRawPointer, _ count: Int) -> [UInt8] {
        let bound = Int(LZ4_compressBound(Int32(count)))
        return withScratch(Int(LZ4_sizeofStateHC())) { state in
            withScratch(bound) { compressed in
                let written = LZ4_compress_HC_extStateHC(state, source.assumingMemoryBound(to: CChar.self),
                                                         compressed.assumingMemoryBound(to: CChar.self),
                                                         Int32(count), Int32(bound), compressionLevel)
                // Cannot fail: the destination has compressBound bytes and count is within LZ4's limit.
                precondition(written > 0, "LZ4_compress_HC failed for \(count) bytes")
                return Array(UnsafeRawBufferPointer(start: compressed, count: Int(written)))
            }
        }
    }

    private static func withScratch<R>(_ byteCount: Int, _ body: (UnsafeMutableRawPointer) throws -> R) rethrows -> R {
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        defer { scratch.deallocate() }
        return try body(scratch)
    }
}
