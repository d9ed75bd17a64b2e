import Foundation

/// A bounded, seeded uniform sample of every row offered so far (reservoir sampling, Vitter's
/// Algorithm R), for online training on streams that are not shuffled.
///
/// Shards of a class-sorted dataset arrive one class at a time; a model trained only on the newest
/// chunk forgets the earlier classes. Replaying a sample of the rows seen so far alongside each new
/// chunk keeps every class in the gradient. The reservoir holds at most `capacity` rows
/// (`capacity × dimension` floats), whatever the stream's length; after `n` offers each of the `n`
/// rows is held with probability `min(1, capacity / n)`. Equal seeds and offers give equal samples.
public struct ReplayReservoir: Sendable {
    /// Rows held at most.
    public let capacity: Int
    /// Values per row.
    public let dimension: Int
    /// The rows held, row-major.
    public private(set) var features: [Float] = []
    /// Their labels.
    public private(set) var labels: [Int32] = []
    /// Rows offered so far.
    public private(set) var offered = 0
    private var rng: SplitMix64

    /// An empty reservoir of `capacity` rows of `dimension` values.
    public init(capacity: Int, dimension: Int, seed: UInt64 = 0) {
        precondition(capacity >= 0 && dimension > 0)
        self.capacity = capacity
        self.dimension = dimension
        rng = SplitMix64(seed: seed ^ 0x5EED_5A3F_1E00_0001)
    }

    /// Rows held.
    public var count: Int { labels.count }

    /// Offers every row of `batch`: while not full each is kept; then the n-th row offered replaces a
    /// uniformly chosen held row with probability capacity / n.
    public mutating func offer(_ batch: LabeledFeatures) {
        precondition(batch.dimension == dimension)
        for row in 0..<batch.count {
            offered += 1
            let values = batch.features[(row * dimension)..<((row + 1) * dimension)]
            if labels.count < capacity {
                features += values
                labels.append(batch.labels[row])
                continue
            }
            let slot = Int(rng.next() % UInt64(offered))
            guard slot < capacity else { continue }
            features.replaceSubrange((slot * dimension)..<((slot + 1) * dimension), with: values)
            labels[slot] = batch.labels[row]
        }
    }

    /// `rows` rows drawn uniformly with replacement from those held (fewer only when empty: none).
    public mutating func sample(_ rows: Int) -> LabeledFeatures {
        guard count > 0, rows > 0 else { return LabeledFeatures(features: [], labels: [], dimension: dimension) }
        var out = LabeledFeatures(features: [], labels: [], dimension: dimension)
        out.features.reserveCapacity(rows * dimension)
        for _ in 0..<rows {
            let slot = Int(rng.next() % UInt64(count))
            out.features += features[(slot * dimension)..<((slot + 1) * dimension)]
            out.labels.append(labels[slot])
        }
        out.count = rows
        return out
    }
}
