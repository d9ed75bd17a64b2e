import FeatureStore
import Foundation
import HeadTraining

/// The head's online pass while a job runs: each committed shard's training rows (labelled, not held
/// out by the validation split) go through one `HeadTrainer.partialFit`, so a model is learning
/// before extraction ends. The full fit at the end of the job does not depend on it.
public final class OnlineTraining {
    private let trainer: HeadTrainer
    private let split: ValidationSplit
    private let log: (String) -> Void
    private let onLoss: (Double) -> Void
    /// Training rows absorbed so far.
    public private(set) var rows = 0

    /// An online trainer for `classCount` classes; `log` receives one sentence per pass, `onLoss` each pass's loss.
    public init(config: TrainingConfig, classCount: Int, split: ValidationSplit,
                log: @escaping (String) -> Void, onLoss: @escaping (Double) -> Void = { _ in }) {
        var config = config
        config.classCount = classCount
        trainer = HeadTrainer(config: config)
        self.split = split
        self.log = log
        self.onLoss = onLoss
    }

    /// The rows of `contents` that train: labelled and not held out for validation.
    public func trainingRows(of contents: ShardContents) -> LabeledFeatures? {
        let all = contents.features
        let d = contents.dimension
        var features: [Float] = []
        var labels: [Int32] = []
        for (row, index) in contents.indexes.enumerated() where contents.labels[row] >= 0 && !split.holdsOut(index) {
            features += all[(row * d)..<((row + 1) * d)]
            labels.append(contents.labels[row])
        }
        return labels.isEmpty ? nil : LabeledFeatures(features: features, labels: labels, dimension: d)
    }

    /// One pass over a committed shard's training rows. A shard the head cannot learn from (for
    /// example a label beyond the class list) is logged and skipped: the online model is a
    /// preview, and the job's final fit reports such rows as errors.
    public func absorb(_ contents: ShardContents) {
        guard let batch = trainingRows(of: contents) else { return }
        do {
            let metrics = try trainer.partialFit(batch)
            rows += batch.count
            onLoss(metrics.trainLoss)
            log(String(format: "online pass %d over %d rows (%d so far): loss %.4f, accuracy %.4f",
                       metrics.epoch, batch.count, rows, metrics.trainLoss, metrics.trainAccuracy))
        } catch {
            log("online pass skipped: \(error)")
        }
    }

    /// The model the passes so far have trained, or `nil` before the first.
    public var model: HeadModel? { trainer.onlineModel }
}
