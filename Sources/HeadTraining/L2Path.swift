import Foundation

/// One value of an L2 sweep and how its model did on the validation set.
public struct L2SweepResult: Codable, Sendable, Equatable {
    /// The L2 strength trained with.
    public var l2: Float
    /// The trained model on the validation set.
    public var validation: Evaluation
    /// Epochs (L-BFGS: iterations) the run took.
    public var epochs: Int
    /// Wall time of the fit.
    public var seconds: Double
    /// Mean training cross-entropy (without the penalty) at the end of the fit, when measured.
    public var trainLoss: Double? = nil
}

/// How `HeadTrainer.fitSelectingL2` chose the penalty, and the model it ended with.
public struct L2Selection: Sendable {
    /// The model to use: refitted on training + validation rows when the config asks for it,
    /// otherwise `selectedModel`.
    public var model: HeadModel
    /// The model trained on the training rows alone at the chosen L2; `validation` is its evaluation.
    public var selectedModel: HeadModel
    /// The chosen L2 (as applied to the training rows).
    public var l2: Float
    /// The L2 of the refit on training + validation rows (the same scikit-learn `C`), or `nil` without a refit.
    public var refitL2: Float?
    /// Every grid value tried, strongest first, with its validation evaluation.
    public var sweep: [L2SweepResult]
    /// `selectedModel` on the validation rows: an honest held-out estimate (the refit has seen these rows).
    /// With a refit, `selectedModel` is the walk's fit, stopped at the walk's looser tolerance.
    public var validation: Evaluation
    /// L-BFGS iterations of the whole walk plus the refit, for comparing its cost with one fit.
    public var iterations: Int
    /// Objective evaluations (passes over the training rows, counting the refit's over all rows).
    public var passes: Int = 0
    /// Whether the rows were streamed from their source on every pass instead of held in memory.
    public var streamed: Bool = false
}

extension HeadTrainer {
    /// Chooses the L2 penalty of a softmax-regression head on `validation`, scikit-learn
    /// `LogisticRegressionCV`-style but with one held-out split.
    ///
    /// Walks `config.l2Grid` from the strongest penalty to the weakest. Each fit is warm-started from
    /// the previous one's weights and L-BFGS curvature pairs (shifted to the new penalty, which makes
    /// them exact again: `CurvatureHistory`), and stops early, at `config.l2WalkGradientTolerance` or
    /// `config.l2WalkMaxIterations`: the walk only ranks penalties. Keeps the value with the best
    /// validation top-1, ties going to the lower validation loss (so, on small noisy sets, to the
    /// stronger penalty); stops once validation loss has risen `config.l2WalkLossRises` values in a row
    /// past the best, or after `config.l2PathPatience` values without a better one. Then only the
    /// kept value is fitted to `config.gradientTolerance`: with `config.refitOnTrainAndValidation`,
    /// the refit on both sets at the same `C` (l2 · n_train / n_all), warm-started from the chosen
    /// weights; without it, the chosen fit continued on the training rows. So the whole costs about
    /// one full fit plus a few short ones. `onStep` sees each grid value as it finishes.
    ///
    /// Sources are read into memory when training + validation rows fit `memoryBudget` bytes (as f32,
    /// twice: raw and standardized), which is the fastest; otherwise every L-BFGS evaluation streams
    /// over the source block by block and only labels, weights and one block are held.
    public func fitSelectingL2(train: any TrainingRowSource, validation: any TrainingRowSource, memoryBudget: Int? = nil,
                               onStep: (L2SweepResult) throws -> Void = { _ in }) throws -> L2Selection {
        try config.validate()
        guard config.kind == .softmaxRegression else {
            throw TrainingError.invalidConfiguration("the L2 walk is for softmax regression; an MLP stops early on validation instead")
        }
        guard validation.rowCount > 0 else { throw TrainingError.invalidConfiguration("choosing L2 needs validation rows") }
        guard validation.dimension == train.dimension else {
            throw TrainingError.dimensionMismatch(expected: train.dimension, actual: validation.dimension)
        }
        let bytes = 8 * (train.rowCount + validation.rowCount) * train.dimension
        let streamed = memoryBudget.map { bytes > $0 } ?? false
        guard let largest = train.labels.max(), largest >= 0 else { throw TrainingError.emptyTrainingSet }
        let classCount = config.classCount ?? Int(largest) + 1
        let blockRows = memoryBudget.map { max(32, min(4096, $0 / (16 * train.dimension))) } ?? 4096
        setBLASThreads(1)
        let layout = ParameterLayout(kind: .softmaxRegression, dimension: train.dimension, hiddenUnits: 0, classCount: classCount)

        // The problem on a set of rows: its standardizer and the objective at a given penalty.
        typealias Problem = (standardizer: Standardizer, evaluator: (Float) -> LBFGS.Evaluate)
        var config = self.config
        config.classCount = classCount
        let problemConfig = config
        func problem(_ rows: any TrainingRowSource, validation: LabeledFeatures?) throws -> Problem {
            if streamed {
                let data = try StreamedData(config: problemConfig, source: rows, classCount: classCount, blockRows: blockRows)
                return (data.standardizer, { data.evaluator(layout: layout, l2: $0) })
            }
            let data = try PreparedData(config: problemConfig, train: try rows.materialized(), validation: validation)
            return (data.standardizer, { data.evaluator(layout: layout, l2: $0, threads: problemConfig.blasThreads) })
        }
        let validationRows: any TrainingRowSource = streamed ? validation : try validation.materialized()
        let trainProblem = try problem(train, validation: streamed ? nil : (validationRows as! LabeledFeatures))

        var parameters = [Float](repeating: 0, count: layout.parameterCount)
        var history = CurvatureHistory()
        var sweep: [L2SweepResult] = []
        var best: (l2: Float, model: HeadModel, evaluation: Evaluation, history: CurvatureHistory)?
        var sinceBest = 0
        var lossRises = 0
        var previous: (l2: Float, loss: Double)?
        var iterations = 0
        var passes = 0
        let grid = Array(Set(config.l2Grid)).sorted(by: >)
        // A grid of one value is a fixed penalty: no walk, only the final fit below.
        let walking = grid.count > 1
        for l2 in grid {
            let started = Date()
            if let previous { history.shiftPenalty(by: l2 - previous.l2, layout: layout) }
            let fit = minimize(trainProblem.evaluator(l2), from: parameters, history: history,
                               gradientTolerance: walking ? config.l2WalkGradientTolerance : config.gradientTolerance,
                               maxIterations: walking ? min(config.maxIterations, config.l2WalkMaxIterations) : config.maxIterations)
            parameters = fit.parameters
            history = fit.history
            iterations += fit.iterations
            passes += fit.passes
            let model = HeadModel(layout: layout, parameters: parameters, standardizer: trainProblem.standardizer)
            let evaluation = try model.evaluate(source: validationRows)
            let result = L2SweepResult(l2: l2, validation: evaluation, epochs: fit.iterations,
                                       seconds: Date().timeIntervalSince(started), trainLoss: fit.dataLoss)
            sweep.append(result)
            try onStep(result)
            lossRises = previous.map { evaluation.loss > $0.loss } == true ? lossRises + 1 : 0
            previous = (l2, evaluation.loss)
            if let current = best?.evaluation,
               evaluation.top1 < current.top1 || (evaluation.top1 == current.top1 && evaluation.loss >= current.loss) {
                sinceBest += 1
            } else {
                best = (l2, model, evaluation, history)
                sinceBest = 0
            }
            // Past the optimum weaker penalties only overfit more, and each takes longer to fit.
            if sinceBest >= config.l2PathPatience || (sinceBest > 0 && lossRises >= config.l2WalkLossRises) { break }
        }
        var chosen = best!
        guard config.refitOnTrainAndValidation else {
            // The walk's fits stop early; the kept one is finished at the full tolerance.
            if walking {
                let polish = minimize(trainProblem.evaluator(chosen.l2), from: chosen.model.parameters, history: chosen.history,
                                      gradientTolerance: config.gradientTolerance, maxIterations: config.maxIterations)
                iterations += polish.iterations
                passes += polish.passes
                chosen.model = HeadModel(layout: layout, parameters: polish.parameters, standardizer: trainProblem.standardizer)
                chosen.evaluation = try chosen.model.evaluate(source: validationRows)
            }
            return L2Selection(model: chosen.model, selectedModel: chosen.model, l2: chosen.l2, refitL2: nil,
                               sweep: sweep, validation: chosen.evaluation, iterations: iterations, passes: passes, streamed: streamed)
        }
        let all = ConcatenatedRows([train, validationRows])
        let refitL2 = chosen.l2 * Float(train.rowCount) / Float(all.rowCount)
        let allProblem = try problem(all, validation: nil)
        let start = restandardized(chosen.model.parameters, layout: layout, from: chosen.model.standardizer, to: allProblem.standardizer)
        // The chosen fit's curvature pairs start the refit too: the objective on all rows at the same C is
        // nearly the one they were measured on (same rows but a tenth, standardizer nearly the same).
        var refitHistory = chosen.history
        refitHistory.shiftPenalty(by: refitL2 - chosen.l2, layout: layout)
        let refit = minimize(allProblem.evaluator(refitL2), from: start, history: refitHistory,
                             gradientTolerance: config.gradientTolerance, maxIterations: config.maxIterations)
        iterations += refit.iterations
        passes += refit.passes
        let model = HeadModel(layout: layout, parameters: refit.parameters, standardizer: allProblem.standardizer)
        return L2Selection(model: model, selectedModel: chosen.model, l2: chosen.l2, refitL2: refitL2,
                           sweep: sweep, validation: chosen.evaluation, iterations: iterations, passes: passes, streamed: streamed)
    }

    /// L-BFGS from `start` (with curvature pairs `history`) to `gradientTolerance` or `maxIterations`.
    private func minimize(_ evaluate: @escaping LBFGS.Evaluate, from start: [Float], history: CurvatureHistory,
                          gradientTolerance: Float, maxIterations: Int)
        -> (parameters: [Float], iterations: Int, dataLoss: Double, passes: Int, history: CurvatureHistory) {
        final class Counter { var passes = 0 }
        let counter = Counter()
        var optimizer = LBFGS(parameters: start, s: history.s, y: history.y, memory: config.lbfgsHistory,
                              gradientTolerance: gradientTolerance, lossTolerance: config.lossTolerance) { parameters, gradient in
            counter.passes += 1
            return evaluate(parameters, &gradient)
        }
        var iterations = 0
        while iterations < maxIterations {
            iterations += 1
            if optimizer.step() != .progressed { break }
        }
        return (optimizer.parameters, iterations, optimizer.value.dataLoss, counter.passes,
                CurvatureHistory(s: optimizer.s, y: optimizer.y))
    }

    /// Fits one model per L2 value (with `config` otherwise, validation used for early stopping as
    /// configured) and returns the one with the best validation top-1 accuracy, ties going to the
    /// lower validation loss, plus every value's validation evaluation in the order given.
    /// Each fit starts from scratch; `fitSelectingL2` is the cheaper, warm-started walk for softmax regression.
    public static func sweepL2(_ values: [Float], config: TrainingConfig = TrainingConfig(),
                               train: LabeledFeatures, validation: LabeledFeatures) throws -> (best: HeadModel, results: [L2SweepResult]) {
        guard !values.isEmpty else { throw TrainingError.invalidConfiguration("sweepL2 needs at least one L2 value") }
        var best: (model: HeadModel, evaluation: Evaluation)?
        var results: [L2SweepResult] = []
        for l2 in values {
            var trialConfig = config
            trialConfig.l2 = l2
            let start = Date()
            var epochs = 0
            var trainLoss: Double?
            let model = try HeadTrainer(config: trialConfig).fit(train: train, validation: validation) {
                epochs = $0.epoch
                trainLoss = $0.trainLoss
            }
            let seconds = Date().timeIntervalSince(start)
            let evaluation = try model.evaluate(on: validation)
            results.append(L2SweepResult(l2: l2, validation: evaluation, epochs: epochs, seconds: seconds, trainLoss: trainLoss))
            if let current = best?.evaluation,
               evaluation.top1 < current.top1 || (evaluation.top1 == current.top1 && evaluation.loss >= current.loss) {
                continue
            }
            best = (model, evaluation)
        }
        return (best!.model, results)
    }
}

/// L-BFGS curvature pairs carried from one grid value of the L2 walk to the next.
///
/// The objective's Hessian changes with the penalty only by Δl2 on the weight entries (biases are not
/// penalised), so a pair (s, y) measured at one penalty becomes exact for another by
/// y += Δl2 · s on the weights: the next fit starts with a good inverse-Hessian estimate as well as
/// good weights.
struct CurvatureHistory {
    var s: [[Float]] = []
    var y: [[Float]] = []

    mutating func shiftPenalty(by delta: Float, layout: ParameterLayout) {
        for index in y.indices {
            for range in [layout.layer1Weights, layout.layer2Weights] where !range.isEmpty {
                for entry in range { y[index][entry] += delta * s[index][entry] }
            }
        }
        // A pair whose curvature the shift made non-positive would make the estimate indefinite.
        let keep = y.indices.filter { s[$0].dot(y[$0]) > 1e-10 * y[$0].dot(y[$0]) }
        s = keep.map { s[$0] }
        y = keep.map { y[$0] }
    }
}

/// The same function under another standardizer: the first layer is rewritten
/// (W'ᵢⱼ = Wᵢⱼ·σ'ⱼ/σⱼ, b'ᵢ = bᵢ + Σⱼ Wᵢⱼ(μ'ⱼ − μⱼ)/σⱼ) so that logits do not change.
func restandardized(_ parameters: [Float], layout: ParameterLayout, from old: Standardizer, to new: Standardizer) -> [Float] {
    var parameters = parameters
    let d = layout.dimension
    for i in 0..<layout.layer1Outputs {
        var shift = 0.0
        for j in 0..<d {
            let index = i * d + j
            let w = parameters[index]
            shift += Double(w) * Double(new.mean[j] - old.mean[j]) / Double(old.std[j])
            parameters[index] = w * new.std[j] / old.std[j]
        }
        parameters[layout.layer1Bias.lowerBound + i] += Float(shift)
    }
    return parameters
}
