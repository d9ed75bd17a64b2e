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
