import Foundation

/// Why training or inference refused its input; every case names what to fix.
public enum TrainingError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The training set has no rows.
    case emptyTrainingSet
    /// Every training label is the same class, so there is no decision to learn.
    case singleClass(label: Int32)
    /// A feature in this row is NaN or infinite.
    case nonFiniteFeature(row: Int)
    /// Features have a different width than the model or standardizer expects.
    case dimensionMismatch(expected: Int, actual: Int)
    /// `features.count` is not `count × dimension`, or `labels.count` is not `count`.
    case malformedFeatures(String)
    /// A label is negative or not below the class count.
    case invalidLabel(row: Int, label: Int32, classCount: Int)
    /// A configuration value is out of range.
    case invalidConfiguration(String)
    /// An existing checkpoint belongs to a different run (data shape or hyper-parameters differ).
    case checkpointMismatch(String)
    /// A checkpoint could not be read or written.
    case checkpointUnreadable(path: String, reason: String)

    /// A one-line explanation naming the offending value.
    public var description: String {
        switch self {
        case .emptyTrainingSet:
            return "the training set is empty: at least one row per class is needed"
        case .singleClass(let label):
            return "every training label is \(label): a classifier needs at least two classes"
        case .nonFiniteFeature(let row):
            return "row \(row) has a NaN or infinite feature; drop or repair it before training"
        case .dimensionMismatch(let expected, let actual):
            return "feature dimension mismatch: expected \(expected), got \(actual)"
        case .malformedFeatures(let reason):
            return "malformed features: \(reason)"
        case .invalidLabel(let row, let label, let classCount):
            return "row \(row) has label \(label), outside 0..<\(classCount)"
        case .invalidConfiguration(let reason):
            return "invalid training configuration: \(reason)"
        case .checkpointMismatch(let reason):
            return "the checkpoint belongs to a different run (\(reason)); delete it or choose another path"
        case .checkpointUnreadable(let path, let reason):
            return "checkpoint \(path): \(reason)"
        }
    }

    /// Same text as `description`, so `localizedDescription` is useful too.
    public var errorDescription: String? { description }
}

/// Feature rows with one integer class label each, as a training or evaluation set.
public struct LabeledFeatures: Sendable, Equatable {
    /// `count × dimension` values, row-major.
    public var features: [Float]
    /// One class index per row, in `0..<classCount`.
    public var labels: [Int32]
    /// Values per row.
    public var dimension: Int
    /// Rows.
    public var count: Int

    /// Wraps row-major features and labels; the row count is taken from `labels`.
    /// Shapes are checked by `validate()`, which every training entry point calls.
    public init(features: [Float], labels: [Int32], dimension: Int) {
        self.features = features
        self.labels = labels
        self.dimension = dimension
        self.count = labels.count
    }

    /// Throws `malformedFeatures` unless `features`, `labels`, `count` and `dimension` agree,
    /// and `nonFiniteFeature` for the first row holding a NaN or infinity.
    public func validate() throws {
        guard dimension > 0 else { throw TrainingError.malformedFeatures("dimension is \(dimension)") }
        guard labels.count == count else {
            throw TrainingError.malformedFeatures("\(labels.count) labels for \(count) rows")
        }
        guard features.count == count * dimension else {
            throw TrainingError.malformedFeatures("\(features.count) values is not \(count) rows × \(dimension)")
        }
        if let row = firstNonFiniteRow(features, dimension: dimension) { throw TrainingError.nonFiniteFeature(row: row) }
    }

    /// The rows at `indices`, in that order.
    public func rows(_ indices: [Int]) -> LabeledFeatures {
        var subset = [Float]()
        subset.reserveCapacity(indices.count * dimension)
        for row in indices { subset.append(contentsOf: features[(row * dimension)..<((row + 1) * dimension)]) }
        return LabeledFeatures(features: subset, labels: indices.map { labels[$0] }, dimension: dimension)
    }

    /// Rows per class label, for labels in `0..<classCount`.
    public func classCounts(classCount: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: classCount)
        for label in labels where label >= 0 && Int(label) < classCount { counts[Int(label)] += 1 }
        return counts
    }
}

/// Scans for NaN and infinities; the index of the first offending row, if any.
func firstNonFiniteRow(_ values: [Float], dimension: Int) -> Int? {
    values.withUnsafeBufferPointer { buffer -> Int? in
        // A branch-free maximum of the exponent bits per chunk vectorises; only a chunk that holds an
        // all-ones exponent (NaN or ±Inf) is searched element by element.
        let exponent: UInt32 = 0x7F80_0000
        let chunk = 4096
        var start = 0
        while start < buffer.count {
            let end = min(start + chunk, buffer.count)
            var largest: UInt32 = 0
            for index in start..<end { largest = max(largest, buffer[index].bitPattern & exponent) }
            if largest == exponent {
                for index in start..<end where buffer[index].bitPattern & exponent == exponent { return index / dimension }
            }
            start = end
        }
        return nil
    }
}

/// Per-feature affine scaling to zero mean and unit variance, fitted on training data.
///
/// Matches scikit-learn's `StandardScaler` (population variance, ddof = 0) except for
/// constant features: their spread is floored at 1e-6 instead of being replaced by 1.
public struct Standardizer: Codable, Sendable, Equatable {
    /// Spread below this is treated as this, so constant features do not divide by zero.
    public static let minimumStandardDeviation: Float = 1e-6

    /// Per-feature mean of the fitted data.
    public var mean: [Float]
    /// Per-feature population standard deviation of the fitted data, at least `minimumStandardDeviation`.
    public var std: [Float]

    /// Values per row this standardizer accepts.
    public var dimension: Int { mean.count }

    /// A standardizer from explicit statistics; `std` entries are floored at `minimumStandardDeviation`.
    public init(mean: [Float], std: [Float]) {
        precondition(mean.count == std.count, "mean and std differ in length")
        self.mean = mean
        self.std = std.map { max($0, Self.minimumStandardDeviation) }
    }

    /// Mean and standard deviation of every column of `data`.
    /// Throws for empty or malformed data and `nonFiniteFeature` for NaN/Inf.
    public static func fit(_ data: LabeledFeatures) throws -> Standardizer {
        try data.validate()
        guard data.count > 0 else { throw TrainingError.emptyTrainingSet }
        return fit(rows: data.features, count: data.count, dimension: data.dimension)
    }

    /// Column statistics of already-validated values.
    static func fit(rows: [Float], count: Int, dimension: Int) -> Standardizer {
        var accumulator = StandardizerAccumulator(dimension: dimension)
        rows.withUnsafeBufferPointer { accumulator.add($0.baseAddress!, rows: count) }
        return accumulator.standardizer
    }

    /// Standardized copy of already-validated rows, written in one pass (no copy-then-modify).
    func standardized(_ features: [Float], dimension: Int) -> [Float] {
        let scale = std.map { 1 / $0 }
        return [Float](unsafeUninitializedCapacity: features.count) { destination, initialized in
            features.withUnsafeBufferPointer { x in
                mean.withUnsafeBufferPointer { mean in
                    scale.withUnsafeBufferPointer { scale in
                        var base = 0
                        while base < x.count {
                            for column in 0..<dimension {
                                destination[base + column] = (x[base + column] - mean[column]) * scale[column]
                            }
                            base += dimension
                        }
                    }
                }
            }
            initialized = features.count
        }
    }

    /// Standardizes `features` (rows of `dimension` values) in place.
    /// Throws `dimensionMismatch` or `malformedFeatures` for the wrong width and `nonFiniteFeature` for NaN/Inf.
    public func apply(_ features: inout [Float], dimension: Int) throws {
        guard dimension == self.dimension else { throw TrainingError.dimensionMismatch(expected: self.dimension, actual: dimension) }
        guard features.count % dimension == 0 else {
            throw TrainingError.malformedFeatures("\(features.count) values is not a whole number of \(dimension)-wide rows")
        }
        if let row = firstNonFiniteRow(features, dimension: dimension) { throw TrainingError.nonFiniteFeature(row: row) }
        features = standardized(features, dimension: dimension)
    }

    /// Standardizes the features of `data` in place; see `apply(_:dimension:)`.
    public func apply(_ data: inout LabeledFeatures) throws {
        try apply(&data.features, dimension: data.dimension)
    }
}
