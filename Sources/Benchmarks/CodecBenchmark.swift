import FeatureCodec
import WireProtocol

/// How one (dtype, codec) pair did on a feature matrix: size, accuracy and single-thread speed.
public struct CodecReport: Sendable, CustomStringConvertible {
    /// Value type on the wire.
    public var dtype: FeatureDType
    /// Compression applied to the values.
    public var codec: CodecID
    /// Sum of the payload sizes over all batches.
    public var compressedBytes: Int
    /// Bytes of the values as Float32, the reference that `ratio` divides.
    public var rawF32Bytes: Int
    /// Bytes of the values in `dtype` before compression (the batches' summed `rawLength`).
    public var rawBytes: Int
    /// `rawF32Bytes / compressedBytes`: how many times smaller than shipping raw Float32.
    public var ratio: Double
    /// Largest |decoded - original| over all values (0 for f32, rounding error for f16).
    public var maxAbsError: Float
    /// `rawBytes` encoded per second (10^9 bytes), Float32 input to payload, fastest pass.
    public var encodeGBps: Double
    /// `rawBytes` decoded per second (10^9 bytes), payload to Float32 output, fastest pass.
    public var decodeGBps: Double

    /// One table row, aligned with `CodecReport.tableHeader`.
    public var description: String {
        func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
        // Foundation-free fixed-point formatting, for non-negative values.
        func fixed(_ x: Double, _ digits: Int) -> String {
            var scale = 1
            for _ in 0..<digits { scale *= 10 }
            let n = Int((x * Double(scale)).rounded())
            let fraction = String(n % scale)
            return "\(n / scale)." + String(repeating: "0", count: digits - fraction.count) + fraction
        }
        let name = "\(dtype)+\(codec)"
        return name + String(repeating: " ", count: max(0, 16 - name.count))
            + pad("\(compressedBytes)", 12) + pad("\(rawBytes)", 12) + pad(fixed(ratio, 3), 8)
            + pad(fixed(encodeGBps, 2), 10) + pad(fixed(decodeGBps, 2), 10)
            + pad("\(maxAbsError)", 14)
    }

    /// Column titles matching `description`.
    public static let tableHeader = "dtype+codec     " + "  compressed" + "    rawBytes" + "   ratio"
        + "  enc GB/s" + "  dec GB/s" + "   max |error|"

    /// A header line followed by one row per report.
    public static func table(_ reports: [CodecReport]) -> String {
        ([tableHeader] + reports.map(\.description)).joined(separator: "\n")
    }
}

/// Measures every (dtype, codec) pair on real features, cut into batches of `batchRows` rows as
/// workers send them (LZ4 ratio depends on block size).
///
/// Each pair gets about `seconds / 6`, split between encode and decode; speeds are the fastest of
/// repeated full passes over all batches (single thread), which suppresses noise from other load on
/// a shared machine. Every pair's decode is checked against the input (exact for f32, the nearest
/// half for f16); a mismatch traps, since a benchmark of a wrong codec is meaningless.
public func benchmarkCodecs(features: [Float], dimension: Int, seconds: Double,
                            batchRows: Int = 256) -> [CodecReport] {
    precondition(dimension > 0 && features.count % dimension == 0, "features must be whole rows of \(dimension)")
    precondition(batchRows > 0)
    let rows = features.count / dimension
    let batches: [Range<Int>] = stride(from: 0, to: rows, by: batchRows).map {
        ($0 * dimension)..<(min($0 + batchRows, rows) * dimension)
    }
    let pairs: [(FeatureDType, CodecID)] = [(.f32, .raw), (.f32, .lz4), (.f32, .shuffleLZ4),
                                                 (.f16, .raw), (.f16, .lz4), (.f16, .shuffleLZ4)]
    let budget = Duration.seconds(seconds / Double(pairs.count * 2))
    let clock = ContinuousClock()

    /// Repeats `pass` until the budget is spent (at least twice, so the first, cold one can lose)
    /// and returns the fastest in seconds.
    func fastest(_ pass: () -> Void) -> Double {
        var best = Duration.seconds(1e9)
        let start = clock.now
        var passes = 0
        while passes < 2 || clock.now - start < budget {
            let elapsed = clock.measure(pass)
            if elapsed < best { best = elapsed }
            passes += 1
        }
        let c = best.components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }

    return features.withUnsafeBufferPointer { all in
        pairs.map { dtype, codec in
            let encoded = batches.map { FeatureCodec.encode(UnsafeBufferPointer(rebasing: all[$0]), dtype: dtype, codec: codec) }
            let compressed = encoded.reduce(0) { $0 + $1.payload.count }
            let rawBytes = encoded.reduce(0) { $0 + $1.rawLength }

            var maxError: Float = 0
            for (range, batch) in zip(batches, encoded) {
                let decoded = batch.payload.withUnsafeBytes {
                    try! FeatureCodec.decode($0, dtype: dtype, codec: codec, rawLength: batch.rawLength)
                }
                for (value, original) in zip(decoded, all[range]) {
                    let expected = dtype == .f16
                        ? HalfConversion.float(fromHalfBits: HalfConversion.halfBits(original)) : original
                    precondition(value.bitPattern == expected.bitPattern,
                                 "\(dtype)+\(codec) decoded \(value), expected \(expected)")
                    maxError = max(maxError, abs(value - original))
                }
            }

            var sink = 0
            let encodeSeconds = fastest {
                for range in batches {
                    sink &+= FeatureCodec.encode(UnsafeBufferPointer(rebasing: all[range]), dtype: dtype, codec: codec)
                        .payload.count
                }
            }
            let decodeSeconds = fastest {
                for batch in encoded {
                    sink &+= batch.payload.withUnsafeBytes {
                        try! FeatureCodec.decode($0, dtype: dtype, codec: codec, rawLength: batch.rawLength)
                    }.count
                }
            }
            precondition(sink != 0)  // keeps the timed work observable so it is not optimized away

            return CodecReport(dtype: dtype, codec: codec, compressedBytes: compressed,
                               rawF32Bytes: features.count * 4, rawBytes: rawBytes,
                               ratio: Double(features.count * 4) / Double(max(compressed, 1)),
                               maxAbsError: maxError,
                               encodeGBps: Double(rawBytes) / encodeSeconds / 1e9,
                               decodeGBps: Double(rawBytes) / decodeSeconds / 1e9)
        }
    }
}
