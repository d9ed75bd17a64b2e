import FeatureStore
import Foundation
import HeadTraining

/// How rows of a store are split into training and validation.
public enum ValidationSplit: Sendable {
    /// Use the dataset's own split of each item (an ImageFolder's `train/` and `val/`): `splitOf[index]`.
    case dataset(splitOf: [UInt64: String], validation: String)
    /// Hold out this fraction of rows, chosen by a hash of the item's dataset index (stable across runs).
    case fraction(Double)
}

extension ValidationSplit {
    /// Whether the item with this dataset index is held out for validation.
    public func holdsOut(_ index: UInt64) -> Bool {
        switch self {
        case let .dataset(splitOf, name): return splitOf[index] == name
        case .fraction(let fraction): return Double(stableHash(index) % 10_000) / 10_000 < fraction
        }
    }
}

/// The store's rows as training and validation sets.
public struct TrainingData {
    public var train: LabeledFeatures
    public var validation: LabeledFeatures?
    public var classNames: [String]

    /// Reads every row of `store`; labels must be `0..<classNames.count` (class names come from the
    /// store's metadata, or are the label numbers).
    public static func load(_ store: FeatureStore, split: ValidationSplit, classNames: [String]? = nil) throws -> TrainingData {
        let rows = try store.rows()
        guard rows.count > 0 else { throw TrainingError.emptyTrainingSet }
        let names = classNames ?? store.metadata.classNames
            ?? (0...Int(rows.labels.max() ?? 0)).map(String.init)
        var train = (features: [Float](), labels: [Int32]())
        var validation = (features: [Float](), labels: [Int32]())
        train.features.reserveCapacity(rows.count * store.dimension)
        for position in 0..<rows.count {
            let label = rows.labels[position]
            guard label >= 0 else { continue }
            if split.holdsOut(rows.indexes[position]) {
                validation.features += rows.features(ofRow: position)
                validation.labels.append(label)
            } else {
                train.features += rows.features(ofRow: position)
                train.labels.append(label)
            }
        }
        let trainSet = LabeledFeatures(features: train.features, labels: train.labels, dimension: store.dimension)
        let validationSet = validation.labels.isEmpty ? nil
            : LabeledFeatures(features: validation.features, labels: validation.labels, dimension: store.dimension)
        return TrainingData(train: trainSet, validation: validationSet, classNames: names)
    }
}

/// A 64-bit mix of an index (SplitMix64's finaliser), so held-out rows are spread over the dataset.
func stableHash(_ value: UInt64) -> UInt64 {
    var z = value &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
