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
    /// Walks `config.l2Grid` from the strongest penalty to the weakest, each fit warm-started from
    /// the previous one's weights (a strong penalty converges in a few iterations, and each next
    /// solution is close), so the walk costs a small multiple of one fit. Keeps the value with the
    /// best validation top-1, ties going to the lower validation loss (so, on small noisy sets,
    /// to the stronger penalty); stops after `config.l2PathPatience` values in a row without a
    /// better one. With `config.refitOnTrainAndValidation`, refits on both sets at the same `C`
    /// (l2 · n_train / n_all), warm-started from the chosen weights. `onStep` sees each grid value as it finishes.
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
        var sweep: [L2SweepResult] = []
        var best: (l2: Float, model: HeadModel, evaluation: Evaluation)?
        var sinceBest = 0
        var iterations = 0
        var passes = 0
        for l2 in Array(Set(config.l2Grid)).sorted(by: >) {
            let started = Date()
            let fit = minimize(trainProblem.evaluator(l2), from: parameters)
            parameters = fit.parameters
            iterations += fit.iterations
            passes += fit.passes
            let model = HeadModel(layout: layout, parameters: parameters, standardizer: trainProblem.standardizer)
            let evaluation = try model.evaluate(source: validationRows)
            let result = L2SweepResult(l2: l2, validation: evaluation, epochs: fit.iterations,
                                       seconds: Date().timeIntervalSince(started), trainLoss: fit.dataLoss)
            sweep.append(result)
            try onStep(result)
            if let current = best?.evaluation,
               evaluation.top1 < current.top1 || (evaluation.top1 == current.top1 && evaluation.loss >= current.loss) {
                sinceBest += 1
                if sinceBest >= config.l2PathPatience { break }
                continue
            }
            best = (l2, model, evaluation)
            sinceBest = 0
        }
        let chosen = best!
        guard config.refitOnTrainAndValidation else {
            return L2Selection(model: chosen.model, selectedModel: chosen.model, l2: chosen.l2, refitL2: nil,
                               sweep: sweep, validation: chosen.evaluation, iterations: iterations, passes: passes, streamed: streamed)
        }
        let all = ConcatenatedRows([train, validationRows])
        let refitL2 = chosen.l2 * Float(train.rowCount) / Float(all.rowCount)
        let allProblem = try problem(all, validation: nil)
        let start = restandardized(chosen.model.parameters, layout: layout, from: chosen.model.standardizer, to: allProblem.standardizer)
        let refit = minimize(allProblem.evaluator(refitL2), from: start)
        iterations += refit.iterations
        passes += refit.passes
        let model = HeadModel(layout: layout, parameters: refit.parameters, standardizer: allProblem.standardizer)
        return L2Selection(model: model, selectedModel: chosen.model, l2: chosen.l2, refitL2: refitL2,
                           sweep: sweep, validation: chosen.evaluation, iterations: iterations, passes: passes, streamed: streamed)
    }

    /// L-BFGS from `start` to convergence (or `config.maxIterations`).
    private func minimize(_ evaluate: @escaping LBFGS.Evaluate, from start: [Float])
        -> (parameters: [Float], iterations: Int, dataLoss: Double, passes: Int) {
        final class Counter { var passes = 0 }
        let counter = Counter()
        var optimizer = LBFGS(parameters: start, memory: config.lbfgsHistory, gradientTolerance: config.gradientTolerance,
                              lossTolerance: config.lossTolerance) { parameters, gradient in
            counter.passes += 1
            return evaluate(parameters, &gradient)
        }
        var iterations = 0
        while iterations < config.maxIterations {
            iterations += 1
            if optimizer.step() != .progressed { break }
        }
        return (optimizer.parameters, iterations, optimizer.value.dataLoss, counter.passes)
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
