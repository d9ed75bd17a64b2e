import DatasetIndex
import Foundation
import ImageInput

/// Throughput of the single-threaded decode → resize → crop → normalise path.
public struct DecodeBenchmark: Codable, Sendable {
    /// Images successfully processed per wall-clock second.
    public let imagesPerSecond: Double
    /// Images processed in the timed loop.
    public let images: Int
    /// Images that failed to decode (excluded from the rate's numerator).
    public let failures: Int
    /// Length of the timed loop.
    public let seconds: Double
}

/// Times decode + preprocess on one thread over `files`, read into memory first so disk speed does not count.
///
/// Intended for `featstream bench-decode`; `Benchmarks/decode_vs_pillow.py` times Pillow on the same files.
/// One untimed warm-up pass fills the filter-table cache, as a long extraction run would.
public func benchmarkDecode(files: [String], preprocessing: Preprocessing, iterations: Int,
                            layout: TensorLayout = .nchw) throws -> DecodeBenchmark {
    let preprocessor = try ImagePreprocessor(preprocessing)
    let decoder = ImageDecoder()
    let blobs = try files.map { try ItemLocator.file(path: $0).bytes() }
    let batch = UnsafeMutablePointer<Float>.allocate(capacity: preprocessing.valuesPerImage)
    defer { batch.deallocate() }

    func pass() -> (ok: Int, failed: Int) {
        var ok = 0, failed = 0
        for (index, blob) in blobs.enumerated() {
            do {
                try blob.withUnsafeBytes {
                    try preprocessor.decode($0, name: files[index], with: decoder, into: batch, slot: 0, layout: layout)
                }
                ok += 1
            } catch {
                failed += 1
            }
        }
        return (ok, failed)
    }

    _ = pass()
    let clock = ContinuousClock()
    var ok = 0, failed = 0
    let elapsed = clock.measure {
        for _ in 0..<max(iterations, 1) {
            let result = pass()
            ok += result.ok
            failed += result.failed
        }
    }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    return DecodeBenchmark(imagesPerSecond: seconds > 0 ? Double(ok) / seconds : 0,
                           images: ok + failed, failures: failed, seconds: seconds)
}
