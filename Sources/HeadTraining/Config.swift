import Foundation

/// Hyper-parameters of a head and of the optimiser that trains it.
///
/// The objective is `(1/n) Σᵢ sᵢ·CE(xᵢ, yᵢ) + (l2/2)·‖W‖²`, where `sᵢ` is the row's class
/// weight (1 without class weights), `W` are all weight matrices and biases are not penalised.
/// This is scikit-learn's `LogisticRegression` objective `½‖W‖² + C·Σᵢ sᵢ·CE` divided by `C·n`, so
/// the two have the same minimiser exactly when
///
///     C = 1 / (l2 · n)        equivalently        l2 = 1 / (C · n)
///
/// with `n` the number of training rows (e.g. `l2 = 1e-4` on 1000 rows is `C = 10`).
public struct TrainingConfig: Codable, Sendable, Equatable {
    /// Which optimiser minimises the objective.
    public enum Optimizer: String, Codable, Sendable {
        /// L-BFGS for softmax regression, Adam for an MLP.
        case automatic
        /// Full-batch L-BFGS; needs the training set in memory.
        case lbfgs
        /// Mini-batch Adam with seeded shuffling.
        case adam
    }

    /// How rows of each class are weighted in the loss.
    public enum ClassWeighting: Codable, Sendable, Equatable {
        /// Every row weighs 1.
        case uniform
        /// scikit-learn's `class_weight="balanced"`: a row of class c weighs n / (classCount · count_c).
        case balanced
        /// An explicit weight per class index.
        case custom([Float])
    }

    /// Head architecture.
    public var kind: HeadModel.Kind = .softmaxRegression
    /// L2 strength on weights (not biases); see the type's documentation for the mapping to scikit-learn's `C`.
    /// `HeadTrainer.fit` uses it as given; `HeadTrainer.fitSelectingL2` chooses its own from `l2Grid`.
    public var l2: Float = 1e-4
    /// The L2 values `fitSelectingL2` tries, in any order (it walks them strongest first).
    public var l2Grid: [Float] = TrainingConfig.defaultL2Grid
    /// `fitSelectingL2` ends its walk after this many grid values in a row did no better on validation
    /// than the best so far: past the optimum, weaker penalties only overfit more and take longer.
    public var l2PathPatience: Int = 3
    /// `fitSelectingL2` also ends its walk once validation loss has risen at this many grid values in a row
    /// (and the last was not the best): the loss turns before top-1 does, and is less noisy.
    public var l2WalkLossRises: Int = 2
    /// Gradient tolerance of each fit of the L2 walk. Looser than `gradientTolerance`: the walk only has to
    /// rank penalties on validation; the kept one is then fitted to `gradientTolerance` (by the refit, or
    /// by finishing the chosen fit when there is no refit), warm-started.
    public var l2WalkGradientTolerance: Float = 1e-3
    /// Iteration cap of each fit of the L2 walk (and never more than `maxIterations`).
    public var l2WalkMaxIterations: Int = 50
    /// After choosing L2 on validation, `fitSelectingL2` refits on training + validation rows, keeping
    /// scikit-learn's `C` (the penalty scaled by n_train / n_all), as `LogisticRegressionCV(refit=True)` does.
    /// The validation figures reported are those of the model trained on the training rows alone.
    public var refitOnTrainAndValidation: Bool = true
    /// Hidden ReLU units of an MLP.
    public var hiddenUnits: Int = 256
    /// Optimiser choice.
    public var optimizer: Optimizer = .automatic
    /// Adam passes over the training set.
    public var maxEpochs: Int = 100
    /// L-BFGS iterations (each is one or a few full-batch evaluations).
    public var maxIterations: Int = 1000
    /// Adam mini-batch rows.
    public var batchSize: Int = 256
    /// Adam step size.
    public var learningRate: Float = 1e-3
    /// Stop after this many epochs (L-BFGS: iterations) without a lower validation loss and return the best
    /// model seen; `nil` disables early stopping. Ignored without a validation set.
    public var earlyStoppingPatience: Int? = 5
    /// Row weighting by class.
    public var classWeights: ClassWeighting = .uniform
    /// Seeds MLP initialisation and Adam's shuffling; equal seeds give equal runs.
    public var seed: UInt64 = 0
    /// Number of classes; `nil` infers max label + 1 from the data. Required by `partialFit`,
    /// because later chunks may bring classes the first one lacks.
    public var classCount: Int? = nil
    /// L-BFGS stops when the largest absolute gradient entry is at most this (scikit-learn's `tol` is the same
    /// test). Tighter than its 1e-4 default, which on 1280-d features stops before predictions settle.
    public var gradientTolerance: Float = 1e-5
    /// L-BFGS stops when an iteration lowers the objective by less than this, relative to max(|f|, 1).
    public var lossTolerance: Double = 1e-9
    /// L-BFGS curvature pairs kept.
    public var lbfgsHistory: Int = 10
    /// Threads training may use. Softmax regression splits each in-memory evaluation's rows across them,
    /// each running the single-threaded fused pass on cache-sized slices (deterministic: partial gradients
    /// are summed in a fixed order); the MLP passes them to OpenBLAS. One by default, because the host
    /// is usually also decoding and extracting.
    public var blasThreads: Int = 1
    /// Write the checkpoint every this many epochs (L-BFGS: iterations); the final state is always written.
    public var checkpointInterval: Int = 1

    /// 1 down to 1e-6 in half-decade steps (scikit-learn `C` from 1/n to 10⁶/n): from a penalty that
    /// leaves standardized features barely used to one that hardly constrains them.
    public static let defaultL2Grid: [Float] = (0...12).map { Float(pow(10, -Double($0) / 2)) }

    /// The defaults: L2-regularised softmax regression trained by L-BFGS.
    public init() {}

    /// The optimiser `fit` will use.
    public var resolvedOptimizer: Optimizer {
        if optimizer != .automatic { return optimizer }
        return kind == .softmaxRegression ? .lbfgs : .adam
    }

    /// Throws `invalidConfiguration` naming the first out-of-range value.
    public func validate() throws {
        func check(_ condition: Bool, _ message: String) throws {
            if !condition { throw TrainingError.invalidConfiguration(message) }
        }
        try check(l2.isFinite && l2 >= 0, "l2 must be finite and ≥ 0, got \(l2)")
        try check(!l2Grid.isEmpty && l2Grid.allSatisfy { $0.isFinite && $0 >= 0 }, "l2Grid needs finite values ≥ 0")
        try check(l2PathPatience >= 1, "l2PathPatience must be ≥ 1")
        try check(l2WalkLossRises >= 1, "l2WalkLossRises must be ≥ 1")
        try check(l2WalkGradientTolerance.isFinite && l2WalkGradientTolerance >= 0, "l2WalkGradientTolerance must be ≥ 0")
        try check(l2WalkMaxIterations >= 1, "l2WalkMaxIterations must be ≥ 1")
        try check(kind != .mlp || hiddenUnits > 0, "hiddenUnits must be positive, got \(hiddenUnits)")
        try check(maxEpochs >= 0 && maxIterations >= 0, "maxEpochs and maxIterations must be ≥ 0")
        try check(batchSize > 0, "batchSize must be positive, got \(batchSize)")
        try check(learningRate.isFinite && learningRate > 0, "learningRate must be positive, got \(learningRate)")
        try check((earlyStoppingPatience ?? 1) >= 1, "earlyStoppingPatience must be ≥ 1 or nil")
        try check((classCount ?? 2) >= 2, "classCount must be ≥ 2")
        try check(lbfgsHistory >= 1, "lbfgsHistory must be ≥ 1")
        try check(checkpointInterval >= 1, "checkpointInterval must be ≥ 1")
        try check(blasThreads >= 1, "blasThreads must be ≥ 1, got \(blasThreads)")
        if case .custom(let weights) = classWeights {
            try check(weights.allSatisfy { $0.isFinite && $0 >= 0 }, "custom class weights must be finite and ≥ 0")
            if let classCount { try check(weights.count == classCount, "\(weights.count) class weights for \(classCount) classes") }
        }
    }
}
