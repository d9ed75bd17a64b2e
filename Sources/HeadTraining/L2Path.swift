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
    public func fitSelectingL2(train: LabeledFeatures, validation: LabeledFeatures,
                               onStep: (L2SweepResult) throws -> Void = { _ in }) throws -> L2Selection {
        try config.validate()
        guard config.kind == .softmaxRegression else {
            throw TrainingError.invalidConfiguration("the L2 walk is for softmax regression; an MLP stops early on validation instead")
        }
        guard validation.count > 0 else { throw TrainingError.invalidConfiguration("choosing L2 needs validation rows") }
        let data = try PreparedData(config: config, train: train, validation: validation)
        setBLASThreads(1)
        let layout = ParameterLayout(kind: .softmaxRegression, dimension: train.dimension, hiddenUnits: 0, classCount: data.classCount)
        var parameters = [Float](repeating: 0, count: layout.parameterCount)
        var sweep: [L2SweepResult] = []
        var best: (l2: Float, model: HeadModel, evaluation: Evaluation)?
        var sinceBest = 0
        var iterations = 0
        for l2 in Array(Set(config.l2Grid)).sorted(by: >) {
            let started = Date()
            let fit = minimize(data: data, layout: layout, l2: l2, from: parameters)
            parameters = fit.parameters
            iterations += fit.iterations
            let model = HeadModel(layout: layout, parameters: parameters, standardizer: data.standardizer)
            let evaluation = try model.evaluate(on: validation)
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
                               sweep: sweep, validation: chosen.evaluation, iterations: iterations)
        }
        var all = train
        all.features += validation.features
        all.labels += validation.labels
        all.count += validation.count
        let refitL2 = chosen.l2 * Float(train.count) / Float(all.count)
        let allData = try PreparedData(config: config, train: all, validation: nil)
        let start = restandardized(chosen.model.parameters, layout: layout, from: chosen.model.standardizer, to: allData.standardizer)
        let refit = minimize(data: allData, layout: layout, l2: refitL2, from: start)
        iterations += refit.iterations
        let model = HeadModel(layout: layout, parameters: refit.parameters, standardizer: allData.standardizer)
        return L2Selection(model: model, selectedModel: chosen.model, l2: chosen.l2, refitL2: refitL2,
                           sweep: sweep, validation: chosen.evaluation, iterations: iterations)
    }

    /// L-BFGS from `start` to convergence (or `config.maxIterations`) on `data` at penalty `l2`.
    private func minimize(data: PreparedData, layout: ParameterLayout, l2: Float,
                          from start: [Float]) -> (parameters: [Float], iterations: Int, dataLoss: Double) {
        var optimizer = LBFGS(parameters: start, memory: config.lbfgsHistory, gradientTolerance: config.gradientTolerance,
                              lossTolerance: config.lossTolerance,
                              evaluate: data.evaluator(layout: layout, l2: l2, threads: config.blasThreads))
        var iterations = 0
        while iterations < config.maxIterations {
            iterations += 1
            if optimizer.step() != .progressed { break }
        }
        return (optimizer.parameters, iterations, optimizer.value.dataLoss)
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
