import FeatureStore
import Foundation
import HeadTraining

/// The head's online pass while a job runs: each committed shard's training rows (labelled, not held
/// out by the validation split) go through one `HeadTrainer.partialFit`, so a model is learning
/// before extraction ends. The full fit at the end of the job does not depend on it.
///
/// Shards may arrive in any order — a class-sorted ImageFolder delivers one class at a time — so each
/// pass also replays as many rows drawn from a bounded reservoir of the training rows seen so far
/// (`ReplayReservoir`), and the model keeps the classes it saw earlier.
public final class OnlineTraining {
    /// Reservoir rows by default: 16 MB of f32 features, at least 256 rows.
    public static func defaultReplayCapacity(dimension: Int) -> Int { max(256, 16_000_000 / (4 * max(1, dimension))) }

    private let trainer: HeadTrainer
    private let split: ValidationSplit
    private let log: (String) -> Void
    private let onLoss: (Double) -> Void
    private let replayCapacity: Int?
    private let seed: UInt64
    /// Earlier training rows replayed with each new shard; created with the first shard (it needs the dimension).
    public private(set) var reservoir: ReplayReservoir?
    /// Training rows absorbed so far.
    public private(set) var rows = 0

    /// An online trainer for `classCount` classes; `log` receives one sentence per pass, `onLoss` each pass's loss.
    /// `replayCapacity` bounds the replay reservoir in rows (`nil`: `defaultReplayCapacity`; 0: no replay).
    public init(config: TrainingConfig, classCount: Int, split: ValidationSplit, replayCapacity: Int? = nil,
                log: @escaping (String) -> Void, onLoss: @escaping (Double) -> Void = { _ in }) {
        self.replayCapacity = replayCapacity
        seed = config.seed
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

    /// One pass over a committed shard's training rows plus as many replayed from the reservoir, then
    /// the shard's rows are offered to the reservoir. A shard the head cannot learn from (for
    /// example a label beyond the class list) is logged and skipped: the online model is a
    /// preview, and the job's final fit reports such rows as errors.
    public func absorb(_ contents: ShardContents) {
        guard let batch = trainingRows(of: contents) else { return }
        absorb(batch)
    }

    /// One pass over `batch` (training rows already selected) with replay; see `absorb(_: ShardContents)`.
    public func absorb(_ batch: LabeledFeatures) {
        if reservoir == nil {
            reservoir = ReplayReservoir(capacity: replayCapacity ?? Self.defaultReplayCapacity(dimension: batch.dimension),
                                        dimension: batch.dimension, seed: seed)
        }
        do {
            let replay = reservoir!.sample(batch.count)
            let metrics = try trainer.partialFit(batch, replay: replay)
            reservoir!.offer(batch)
            rows += batch.count
            onLoss(metrics.trainLoss)
            log(String(format: "online pass %d over %d new rows and %d replayed (%d new so far): loss %.4f, accuracy %.4f",
                       metrics.epoch, batch.count, replay.count, rows, metrics.trainLoss, metrics.trainAccuracy))
        } catch {
            log("online pass skipped: \(error)")
        }
    }

    /// The model the passes so far have trained, or `nil` before the first.
    public var model: HeadModel? { trainer.onlineModel }
}
