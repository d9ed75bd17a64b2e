import FeatureStore
import Foundation
import WireProtocol
import XCTest

/// Writes the synthetic store `Benchmarks/train_out_of_core.sh` trains on; skipped unless
/// `FEATSTREAM_SYNTHETIC_STORE` names a folder to create (`FEATSTREAM_SYNTHETIC_ROWS` rows, default
/// 150,000, of 1280-d f16: 10 Gaussian classes whose means differ in 32 dimensions, so a linear
/// head reaches about 90% and regularisation matters). A benchmark's generator, not a check.
final class SyntheticStoreGenerator: XCTestCase {
    func testWriteSyntheticStoreForTheOutOfCoreBenchmark() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let path = environment["FEATSTREAM_SYNTHETIC_STORE"] else {
            throw XCTSkip("set FEATSTREAM_SYNTHETIC_STORE to write the benchmark's store")
        }
        let rows = Int(environment["FEATSTREAM_SYNTHETIC_ROWS"] ?? "") ?? 150_000
        let dimension = 1280, classes = 10, informative = 32, shardRows = 4096
        let store = try FeatureStore.create(at: URL(fileURLWithPath: path), dtype: .f16, dimension: dimension,
                                            metadata: StoreMetadata(model: "synthetic", classNames: (0..<classes).map { "class \($0)" }))
        var state: UInt64 = 0x5EED
        func uniform() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24)
        }
        func gaussian() -> Float { (-2 * log(max(uniform(), 1e-7))).squareRoot() * cos(2 * .pi * uniform()) }
        let means = (0..<classes).map { _ in (0..<informative).map { _ in 0.35 * gaussian() } }
        // Noise from a table of normal draws picked by the generator: a debug build writes 10⁸ values in seconds.
        let table = (0..<65_536).map { _ in gaussian() }
        var written = 0, shard: UInt32 = 0
        while written < rows {
            let count = min(shardRows, rows - written)
            var features = [Float](repeating: 0, count: count * dimension)
            var labels: [Int32] = []
            for row in 0..<count {
                let label = Int((written + row) % classes)
                labels.append(Int32(label))
                for column in 0..<dimension {
                    // Backbone-like: non-negative and sparse-ish, informative columns shifted by the class mean.
                    let shift = column < informative ? means[label][column] : 0
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    features[row * dimension + column] = max(0, table[Int(state >> 48)] + shift + 0.3)
                }
            }
            let indexes = (0..<count).map { UInt64(written + $0) }
            try store.commit(ShardContents(shardItemCount: UInt32(count), dimension: dimension, offsets: (0..<count).map(UInt32.init),
                                           indexes: indexes, labels: labels, keys: indexes.map { "synthetic/\($0)" },
                                           features: features, deadLetters: []),
                             shardID: shard, attempt: 1)
            written += count
            shard += 1
        }
        XCTAssertEqual(store.rowCount, rows)
    }
}
