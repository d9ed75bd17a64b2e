import Foundation

/// Trains classification heads on in-memory features: full fits with early stopping and
/// resumable checkpoints, online passes over chunks as they arrive, and L2 sweeps.
///
/// Not thread-safe: one trainer per thread. All matrix products go through OpenBLAS, whose
/// process-wide thread count each call sets from `config.blasThreads` (see there).
public final class HeadTrainer {
    /// The hyper-parameters every call uses.
    public let config: TrainingConfig
    private var online: OnlineState?
    /// The epoch (L-BFGS: iteration) whose weights the last `fit` returned: the lowest validation loss
    /// when it stopped early on validation, else the last one. `nil` before any `fit`.
    public internal(set) var keptEpoch: Int?

    /// A trainer for `config`; the configuration is checked when training starts.
    public init(config: TrainingConfig = TrainingConfig()) {
        self.config = config
    }

    // MARK: Full fit

    /// Trains a head on `train` from scratch, or continues the run recorded in `checkpoint`.
    ///
    /// The standardizer is fitted on `train`. Each epoch (Adam) or iteration (L-BFGS) is reported to
    /// `onEpoch` after the checkpoint for it was written atomically, so a process killed at any point
    /// resumes from the last completed epoch and — with the same data, config and thread count —
    /// finishes with the same weights as an uninterrupted run. A checkpoint of a finished run makes
    /// `fit` return its model without training. A checkpoint from a different run throws
    /// `checkpointMismatch` rather than being overwritten. An error thrown by `onEpoch` stops training
    /// (the checkpoint for that epoch is already on disk) and is rethrown.
    ///
    /// With a validation set and `earlyStoppingPatience` set, training stops after that many epochs
    /// without a lower validation loss and the lowest-validation-loss weights are returned;
    /// otherwise the final weights are. Throws `TrainingError` for empty, single-class, non-finite
    /// or mis-shaped data.
    public func fit(train: LabeledFeatures, validation: LabeledFeatures? = nil, checkpoint: URL? = nil,
                    onEpoch: (EpochMetrics) throws -> Void = { _ in }) throws -> HeadModel {
        try config.validate()
        let data = try PreparedData(config: config, train: train, validation: validation)
        setBLASThreads(config.kind == .softmaxRegression ? 1 : config.blasThreads)
        let layout = ParameterLayout(kind: config.kind, dimension: train.dimension,
                                     hiddenUnits: config.kind == .mlp ? config.hiddenUnits : 0, classCount: data.classCount)
        let fingerprint = RunFingerprint(
            rows: train.count, dimension: train.dimension, classCount: data.classCount, kind: config.kind,
            hiddenUnits: layout.hiddenUnits, l2: config.l2, optimizer: config.resolvedOptimizer,
            batchSize: config.batchSize, learningRate: config.learningRate, classWeights: config.classWeights,
            seed: config.seed, lbfgsHistory: config.lbfgsHistory,
            labelChecksum: train.labels.enumerated().reduce(0) { $0 &+ ($1.offset + 1) &* Int($1.element) })

        var state: TrainingCheckpoint
        if let checkpoint, let saved = try TrainingCheckpoint.read(from: checkpoint) {
            if let difference = fingerprint.difference(from: saved.fingerprint) { throw TrainingError.checkpointMismatch(difference) }
            state = saved
        } else {
            var rng = SplitMix64(seed: config.seed)
            let initial = layout.initialParameters(rng: &rng)
            state = TrainingCheckpoint(
                fingerprint: fingerprint, completedEpochs: 0, finished: false, parameters: PackedFloats(initial),
                standardizerMean: PackedFloats(data.standardizer.mean), standardizerStd: PackedFloats(data.standardizer.std),
                bestParameters: nil, bestValidationLoss: nil, bestEpoch: nil, epochsSinceImprovement: 0,
                adamFirstMoment: nil, adamSecondMoment: nil, adamStep: 0, rng: rng, lbfgsS: [], lbfgsY: [], history: [])
        }
        let standardizer = Standardizer(mean: state.standardizerMean.values, std: state.standardizerStd.values)
        if !state.finished {
            try withoutActuallyEscaping(onEpoch) { onEpoch in
                var run = Run(config: config, data: data, layout: layout, checkpoint: checkpoint, onEpoch: onEpoch)
                switch config.resolvedOptimizer {
                case .adam: try run.adam(&state)
                default: try run.lbfgs(&state)
                }
            }
        }
        let useBest = data.validation != nil && config.earlyStoppingPatience != nil && state.bestParameters != nil
        let parameters = (useBest ? state.bestParameters : nil) ?? state.parameters
        keptEpoch = useBest ? state.bestEpoch : state.completedEpochs
        return HeadModel(layout: layout, parameters: parameters.values, standardizer: standardizer)
    }

    // MARK: Online passes

    /// One Adam pass (shuffled mini-batches of `config.batchSize`) over a newly committed chunk,
    /// continuing from the previous chunks; returns the chunk's loss and accuracy measured during the pass.
    ///
    /// Standardization uses running per-feature mean and variance over every chunk seen, not the
    /// first chunk frozen: shards arrive in dataset order, which is often grouped by class, so the
    /// first chunk is rarely representative. When the statistics move, the first layer is rewritten
    /// (W'ᵢⱼ = Wᵢⱼ·σ'ⱼ/σⱼ, b'ᵢ = bᵢ + Σⱼ Wᵢⱼ(μ'ⱼ − μⱼ)/σⱼ) so the function learned so far is unchanged
    /// and only the new gradient steps see the new scaling. Requires `config.classCount`. Balanced
    /// class weights use the class counts of all chunks so far. Independent of `fit`.
    ///
    /// `replay` rows (earlier rows replayed, e.g. from a `ReplayReservoir`) are trained on together with
    /// `batch`, shuffled in with it, but do not count again in the statistics and class counts.
    /// The returned loss and accuracy are over every row trained on.
    @discardableResult
    public func partialFit(_ batch: LabeledFeatures, replay: LabeledFeatures? = nil) throws -> EpochMetrics {
        try config.validate()
        guard let classCount = config.classCount else {
            throw TrainingError.invalidConfiguration("partialFit needs classCount, since a chunk may lack some classes")
        }
        guard batch.count > 0 else { throw TrainingError.emptyTrainingSet }
        try batch.validate()
        if let online, online.layout.dimension != batch.dimension {
            throw TrainingError.dimensionMismatch(expected: online.layout.dimension, actual: batch.dimension)
        }
        try checkLabels(batch.labels, classCount: classCount)
        setBLASThreads(config.kind == .softmaxRegression ? 1 : config.blasThreads)
        let start = Date()

        var state = online ?? OnlineState(config: config, dimension: batch.dimension, classCount: classCount)
        state.absorb(batch)
        var batch = batch
        if let replay, replay.count > 0 {
            guard replay.dimension == batch.dimension else {
                throw TrainingError.dimensionMismatch(expected: batch.dimension, actual: replay.dimension)
            }
            try checkLabels(replay.labels, classCount: classCount)
            batch.features += replay.features
            batch.labels += replay.labels
            batch.count += replay.count
        }
        var x = batch.features
        try state.standardizer.apply(&x, dimension: batch.dimension)
        let weights = sampleWeights(labels: batch.labels, weighting: config.classWeights, classCounts: state.classCounts)

        let objective = Objective(layout: state.layout, l2: config.l2)
        var order = Array(0..<batch.count)
        state.rng.shuffle(&order)
        var minibatch = Minibatch(layout: state.layout, capacity: min(config.batchSize, batch.count))
        var lossSum = 0.0, correct = 0
        for first in stride(from: 0, to: batch.count, by: config.batchSize) {
            let rows = Array(order[first..<min(first + config.batchSize, batch.count)])
            let value = minibatch.step(rows: rows, x: x, labels: batch.labels, weights: weights, objective: objective,
                                       parameters: &state.parameters, adam: &state.adam, learningRate: config.learningRate)
            lossSum += value.dataLoss * Double(rows.count)
            correct += value.correct
        }
        state.passes += 1
        online = state
        return EpochMetrics(epoch: state.passes, trainLoss: lossSum / Double(batch.count),
                            trainAccuracy: Double(correct) / Double(batch.count), validationLoss: nil,
                            validationAccuracy: nil, seconds: Date().timeIntervalSince(start))
    }

    /// The model the `partialFit` calls so far have trained, or `nil` before the first call.
    public var onlineModel: HeadModel? {
        online.map { HeadModel(layout: $0.layout, parameters: $0.parameters, standardizer: $0.standardizer) }
    }
}

// MARK: - Internals

/// Throws `invalidLabel` for the first label outside `0..<classCount`.
func checkLabels(_ labels: [Int32], classCount: Int) throws {
    for (row, label) in labels.enumerated() where label < 0 || Int(label) >= classCount {
        throw TrainingError.invalidLabel(row: row, label: label, classCount: classCount)
    }
}

/// Per-row loss weights, or `nil` when every row weighs 1.
/// Balanced weights follow scikit-learn: n / (classes present · count of the row's class).
func sampleWeights(labels: [Int32], weighting: TrainingConfig.ClassWeighting, classCounts: [Int]) -> [Float]? {
    switch weighting {
    case .uniform:
        return nil
    case .custom(let perClass):
        return labels.map { Int($0) < perClass.count ? perClass[Int($0)] : 1 }
    case .balanced:
        let total = Double(classCounts.reduce(0, +))
        let present = Double(classCounts.filter { $0 > 0 }.count)
        let perClass = classCounts.map { $0 == 0 ? 0 : Float(total / (present * Double($0))) }
        return labels.map { perClass[Int($0)] }
    }
}

/// Training and validation data checked, standardized and weighted once per fit.
struct PreparedData {
    let classCount: Int
    let standardizer: Standardizer
    let rows: Int
    let x: [Float]
    let labels: [Int32]
    let weights: [Float]?
    let validation: (x: [Float], labels: [Int32], rows: Int)?

    init(config: TrainingConfig, train: LabeledFeatures, validation: LabeledFeatures?) throws {
        guard train.count > 0, !train.labels.isEmpty else { throw TrainingError.emptyTrainingSet }
        try train.validate()
        if let negative = train.labels.firstIndex(where: { $0 < 0 }) {
            throw TrainingError.invalidLabel(row: negative, label: train.labels[negative], classCount: config.classCount ?? 0)
        }
        let classCount = config.classCount ?? Int(train.labels.max()!) + 1
        try checkLabels(train.labels, classCount: classCount)
        if train.labels.allSatisfy({ $0 == train.labels[0] }) { throw TrainingError.singleClass(label: train.labels[0]) }
        if case .custom(let weights) = config.classWeights, weights.count != classCount {
            throw TrainingError.invalidConfiguration("\(weights.count) class weights for \(classCount) classes")
        }
        self.classCount = classCount
        standardizer = Standardizer.fit(rows: train.features, count: train.count, dimension: train.dimension)
        rows = train.count
        x = standardizer.standardized(train.features, dimension: train.dimension)
        labels = train.labels
        weights = sampleWeights(labels: train.labels, weighting: config.classWeights,
                                classCounts: train.classCounts(classCount: classCount))
        if let validation, validation.count > 0 {
            try validation.validate()
            guard validation.dimension == train.dimension else {
                throw TrainingError.dimensionMismatch(expected: train.dimension, actual: validation.dimension)
            }
            try checkLabels(validation.labels, classCount: classCount)
            var vx = validation.features
            try standardizer.apply(&vx, dimension: validation.dimension)
            self.validation = (vx, validation.labels, validation.count)
        } else {
            self.validation = nil
        }
    }
}

extension PreparedData {
    /// The training objective at penalty `l2` over every training row, as L-BFGS evaluates it.
    func evaluator(layout: ParameterLayout, l2: Float, threads: Int) -> LBFGS.Evaluate {
        let objective = Objective(layout: layout, l2: l2, threads: threads)
        let workspace = Workspace()
        let data = self
        return { parameters, gradient in
            parameters.withUnsafeBufferPointer { p in
                data.x.withUnsafeBufferPointer { x in
                    data.labels.withUnsafeBufferPointer { l in
                        gradient.withUnsafeMutableBufferPointer { g in
                            data.weights.withUnsafeBufferPointerOrNil { w in
                                objective.evaluate(parameters: p.baseAddress!, x: x.baseAddress!, labels: l.baseAddress!,
                                                   sampleWeights: w, rows: data.rows, gradient: g.baseAddress!, workspace: workspace)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Gathers shuffled rows into contiguous buffers and takes one Adam step on them.
struct Minibatch {
    var x: [Float]
    var labels: [Int32]
    var weights: [Float]
    var gradient: [Float]
    let workspace = Workspace()
    let dimension: Int

    init(layout: ParameterLayout, capacity: Int) {
        dimension = layout.dimension
        x = [Float](repeating: 0, count: capacity * layout.dimension)
        labels = [Int32](repeating: 0, count: capacity)
        weights = [Float](repeating: 1, count: capacity)
        gradient = [Float](repeating: 0, count: layout.parameterCount)
    }

    mutating func step(rows: [Int], x source: [Float], labels sourceLabels: [Int32], weights sourceWeights: [Float]?,
                       objective: Objective, parameters: inout [Float], adam: inout Adam, learningRate: Float) -> ObjectiveValue {
        let d = dimension
        x.withUnsafeMutableBufferPointer { destination in
            source.withUnsafeBufferPointer { source in
                for (slot, row) in rows.enumerated() {
                    (destination.baseAddress! + slot * d).update(from: source.baseAddress! + row * d, count: d)
                }
            }
        }
        for (slot, row) in rows.enumerated() {
            labels[slot] = sourceLabels[row]
            weights[slot] = sourceWeights?[row] ?? 1
        }
        let value = parameters.withUnsafeBufferPointer { p in
            x.withUnsafeBufferPointer { x in
                labels.withUnsafeBufferPointer { l in
                    weights.withUnsafeBufferPointer { w in
                        gradient.withUnsafeMutableBufferPointer { g in
                            objective.evaluate(parameters: p.baseAddress!, x: x.baseAddress!, labels: l.baseAddress!,
                                               sampleWeights: sourceWeights == nil ? nil : w.baseAddress!, rows: rows.count,
                                               gradient: g.baseAddress!, workspace: workspace)
                        }
                    }
                }
            }
        }
        adam.update(&parameters, gradient: gradient, learningRate: learningRate)
        return value
    }
}

/// State of the online (`partialFit`) model between chunks.
struct OnlineState {
    let layout: ParameterLayout
    var parameters: [Float]
    var adam: Adam
    var rng: SplitMix64
    var passes = 0
    var classCounts: [Int]
    var seenRows = 0.0
    var runningMean: [Double]
    var runningSquares: [Double]
    var standardizer: Standardizer

    init(config: TrainingConfig, dimension: Int, classCount: Int) {
        layout = ParameterLayout(kind: config.kind, dimension: dimension,
                                 hiddenUnits: config.kind == .mlp ? config.hiddenUnits : 0, classCount: classCount)
        rng = SplitMix64(seed: config.seed)
        parameters = layout.initialParameters(rng: &rng)
        adam = Adam(parameterCount: layout.parameterCount)
        classCounts = [Int](repeating: 0, count: classCount)
        runningMean = [Double](repeating: 0, count: dimension)
        runningSquares = [Double](repeating: 0, count: dimension)
        standardizer = Standardizer(mean: [Float](repeating: 0, count: dimension), std: [Float](repeating: 1, count: dimension))
    }

    /// Merges the chunk into the running statistics (Chan et al.'s pairwise update) and rewrites
    /// the first layer so the model's function is the same under the new standardizer.
    mutating func absorb(_ batch: LabeledFeatures) {
        let d = layout.dimension
        for label in batch.labels { classCounts[Int(label)] += 1 }
        let chunk = Standardizer.fit(rows: batch.features, count: batch.count, dimension: d)
        let n1 = seenRows, n2 = Double(batch.count), total = n1 + n2
        for j in 0..<d {
            let mean2 = Double(chunk.mean[j])
            let squares2 = Double(chunk.std[j]) * Double(chunk.std[j]) * n2
            let delta = mean2 - runningMean[j]
            runningSquares[j] += squares2 + delta * delta * n1 * n2 / total
            runningMean[j] += delta * n2 / total
        }
        seenRows = total
        let updated = Standardizer(mean: runningMean.map { Float($0) },
                                   std: runningSquares.map { Float(($0 / total).squareRoot()) })
        if passes > 0 { parameters = restandardized(parameters, layout: layout, from: standardizer, to: updated) }
        standardizer = updated
    }
}

/// One fit's optimisation loop, shared bookkeeping (validation, early stopping, checkpoints) included.
private struct Run {
    let config: TrainingConfig
    let data: PreparedData
    let layout: ParameterLayout
    let checkpoint: URL?
    let onEpoch: (EpochMetrics) throws -> Void
    let validationWorkspace = Workspace()

    init(config: TrainingConfig, data: PreparedData, layout: ParameterLayout, checkpoint: URL?,
         onEpoch: @escaping (EpochMetrics) throws -> Void) {
        self.config = config
        self.data = data
        self.layout = layout
        self.checkpoint = checkpoint
        self.onEpoch = onEpoch
    }

    func validate(_ parameters: [Float]) -> (loss: Double, accuracy: Double)? {
        guard let validation = data.validation else { return nil }
        let objective = Objective(layout: layout, l2: 0)
        let value = parameters.withUnsafeBufferPointer { p in
            validation.x.withUnsafeBufferPointer { x in
                validation.labels.withUnsafeBufferPointer { l in
                    objective.evaluate(parameters: p.baseAddress!, x: x.baseAddress!, labels: l.baseAddress!, sampleWeights: nil,
                                       rows: validation.rows, gradient: nil, workspace: validationWorkspace)
                }
            }
        }
        return (value.dataLoss, Double(value.correct) / Double(validation.rows))
    }

    /// Records an epoch: early-stopping bookkeeping, checkpoint, callback. Returns whether training is over.
    func endEpoch(_ state: inout TrainingCheckpoint, parameters: [Float], trainLoss: Double, trainAccuracy: Double,
                  started: Date, limit: Int, converged: Bool) throws -> Bool {
        let validation = validate(parameters)
        state.completedEpochs += 1
        state.parameters = PackedFloats(parameters)
        var stop = converged || state.completedEpochs >= limit
        if let validation {
            if validation.loss < (state.bestValidationLoss ?? .infinity) {
                state.bestValidationLoss = validation.loss
                state.bestParameters = PackedFloats(parameters)
                state.bestEpoch = state.completedEpochs
                state.epochsSinceImprovement = 0
            } else {
                state.epochsSinceImprovement += 1
                if let patience = config.earlyStoppingPatience, state.epochsSinceImprovement >= patience { stop = true }
            }
        }
        let metrics = EpochMetrics(epoch: state.completedEpochs, trainLoss: trainLoss, trainAccuracy: trainAccuracy,
                                   validationLoss: validation?.loss, validationAccuracy: validation?.accuracy,
                                   seconds: Date().timeIntervalSince(started))
        state.history.append(metrics)
        state.finished = stop
        if let checkpoint, stop || state.completedEpochs % config.checkpointInterval == 0 {
            try state.write(to: checkpoint)
        }
        try onEpoch(metrics)
        return stop
    }

    /// Marks a run that had no epochs left as finished, so a later `fit` on the checkpoint returns at once.
    func finishWithoutEpochs(_ state: inout TrainingCheckpoint) throws {
        state.finished = true
        if let checkpoint { try state.write(to: checkpoint) }
    }

    mutating func lbfgs(_ state: inout TrainingCheckpoint) throws {
        guard state.completedEpochs < config.maxIterations else { return try finishWithoutEpochs(&state) }
        let data = self.data
        var optimizer = LBFGS(
            parameters: state.parameters.values, s: state.lbfgsS.map(\.values), y: state.lbfgsY.map(\.values),
            memory: config.lbfgsHistory, gradientTolerance: config.gradientTolerance, lossTolerance: config.lossTolerance,
            evaluate: data.evaluator(layout: layout, l2: config.l2, threads: config.blasThreads))
        while true {
            let started = Date()
            let outcome = optimizer.step()
            state.lbfgsS = optimizer.s.map(PackedFloats.init)
            state.lbfgsY = optimizer.y.map(PackedFloats.init)
            let done = try endEpoch(&state, parameters: optimizer.parameters, trainLoss: optimizer.value.dataLoss,
                                    trainAccuracy: Double(optimizer.value.correct) / Double(data.rows),
                                    started: started, limit: config.maxIterations, converged: outcome != .progressed)
            if done { return }
        }
    }

    mutating func adam(_ state: inout TrainingCheckpoint) throws {
        guard state.completedEpochs < config.maxEpochs else { return try finishWithoutEpochs(&state) }
        let objective = Objective(layout: layout, l2: config.l2)
        var parameters = state.parameters.values
        var adam = Adam(parameterCount: layout.parameterCount)
        if let m = state.adamFirstMoment, let v = state.adamSecondMoment {
            adam = Adam(firstMoment: m.values, secondMoment: v.values, step: state.adamStep)
        }
        var rng = state.rng
        let n = data.rows
        var minibatch = Minibatch(layout: layout, capacity: min(config.batchSize, n))
        while true {
            let started = Date()
            // A fresh permutation of 0..<n each epoch, so resuming needs only the generator state.
            var order = Array(0..<n)
            rng.shuffle(&order)
            var lossSum = 0.0, correct = 0
            for first in stride(from: 0, to: n, by: config.batchSize) {
                let rows = Array(order[first..<min(first + config.batchSize, n)])
                let value = minibatch.step(rows: rows, x: data.x, labels: data.labels, weights: data.weights,
                                           objective: objective, parameters: &parameters, adam: &adam,
                                           learningRate: config.learningRate)
                lossSum += value.dataLoss * Double(rows.count)
                correct += value.correct
            }
            state.rng = rng
            state.adamFirstMoment = PackedFloats(adam.firstMoment)
            state.adamSecondMoment = PackedFloats(adam.secondMoment)
            state.adamStep = adam.step
            let done = try endEpoch(&state, parameters: parameters, trainLoss: lossSum / Double(n),
                                    trainAccuracy: Double(correct) / Double(n), started: started,
                                    limit: config.maxEpochs, converged: false)
            if done { return }
        }
    }
}

extension Optional where Wrapped == [Float] {
    /// Calls `body` with the array's base address, or `nil` when there is no array.
    func withUnsafeBufferPointerOrNil<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        switch self {
        case .some(let array): return array.withUnsafeBufferPointer { body($0.baseAddress) }
        case .none: return body(nil)
        }
    }
}
