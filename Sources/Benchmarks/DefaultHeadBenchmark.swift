import HeadJob
import Foundation
import HeadTraining

/// The default head as `featstream train` builds it, timed: `validationFraction` of `train` held out
/// by the job's own rule (a hash of the row number standing in for the dataset index), L2 chosen
/// on it by the warm-started walk, refit on all of `train`; then top-1 on `test`.
///
/// `seconds` spans the split, standardization, the walk and the refit — what
/// `Benchmarks/head_vs_sklearn.py --cv` times around `StandardScaler` + `LogisticRegressionCV.fit`.
/// `maxIterations` caps each L-BFGS run, 100 like `featstream train`'s default `--max-epochs`.
public func benchmarkDefaultHead(train: LabeledFeatures, test: LabeledFeatures, validationFraction: Double = 0.1,
                                 maxIterations: Int = 100, threads: Int = 1)
    throws -> (accuracy: Double, seconds: Double, l2: Float, iterations: Int, validationTop1: Double) {
    let start = DispatchTime.now().uptimeNanoseconds
    let split = ValidationSplit.fraction(validationFraction)
    let heldOut = (0..<train.count).filter { split.holdsOut(UInt64($0)) }
    let kept = (0..<train.count).filter { !split.holdsOut(UInt64($0)) }
    var config = TrainingConfig()
    config.maxIterations = maxIterations
    config.blasThreads = threads
    config.earlyStoppingPatience = nil
    let selection = try HeadTrainer(config: config).fitSelectingL2(train: train.rows(kept), validation: train.rows(heldOut))
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return (try selection.model.evaluate(on: test).top1, seconds, selection.l2, selection.iterations, selection.validation.top1)
}

/// The job's online pass over `train` delivered in consecutive shards of `shardRows` rows, in the
/// order given (a class-sorted folder gives one class after another), without and with the replay
/// reservoir; reports the online model's top-1 on `test` after the last shard, for each.
public func benchmarkOnlinePass(train: LabeledFeatures, test: LabeledFeatures, shardRows: Int, classCount: Int,
                                replayCapacity: Int? = nil) throws -> OnlinePassBenchmarkReport {
    func pass(_ capacity: Int?) throws -> Double {
        var config = TrainingConfig()
        config.classCount = classCount
        let online = OnlineTraining(config: config, classCount: classCount, split: .fraction(0), replayCapacity: capacity, log: { _ in })
        for first in stride(from: 0, to: train.count, by: shardRows) {
            online.absorb(train.rows(Array(first..<min(first + shardRows, train.count))))
        }
        guard let model = online.model else { throw TrainingError.emptyTrainingSet }
        return try model.evaluate(on: test).top1
    }
    return OnlinePassBenchmarkReport(shardRows: shardRows, accuracyWithoutReplay: try pass(0), accuracyWithReplay: try pass(replayCapacity),
                                     trainRows: train.count, testRows: test.count)
}
