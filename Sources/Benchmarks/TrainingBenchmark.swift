import Foundation
import HeadTraining

/// Trains the default head (standardization + softmax regression by L-BFGS, no early stopping) on
/// `train` with L2 strength `l2` and measures top-1 accuracy on `test`.
///
/// `seconds` is wall time of standardizer fitting plus optimisation only — the same span
/// `Benchmarks/head_vs_sklearn.py` times around `StandardScaler().fit` + `LogisticRegression.fit`,
/// which it runs with `C = 1 / (l2 · train.count)`. `gradientTolerance` is the L-BFGS stopping
/// test, the same quantity as scikit-learn's `tol`. `predictions` holds the class predicted for each
/// `test` row, in order (for paired comparisons of two heads on the same rows).
public func benchmarkTraining(train: LabeledFeatures, test: LabeledFeatures, l2: Float,
                              threads: Int = 1, gradientTolerance: Float = 1e-5) throws
    -> (accuracy: Double, seconds: Double, predictions: [Int32]) {
    var config = TrainingConfig()
    config.l2 = l2
    config.earlyStoppingPatience = nil
    config.blasThreads = threads
    config.gradientTolerance = gradientTolerance
    let trainer = HeadTrainer(config: config)
    let start = DispatchTime.now().uptimeNanoseconds
    let model = try trainer.fit(train: train)
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return (try model.evaluate(on: test).top1, seconds, try model.predict(test.features, count: test.count))
}
