import Foundation

extension HeadTrainer {
    /// Rows of the shuffle buffer `fitStreamed` keeps for a memory budget: what is left of `memoryBudget`
    /// after one block of reading, at 4 bytes a value plus label and weight, never fewer than a mini-batch.
    public static func shuffleBufferRows(memoryBudget: Int, dimension: Int, batchSize: Int, blockRows: Int) -> Int {
        let rowBytes = 4 * dimension + 8
        return max(batchSize, (memoryBudget - 8 * blockRows * dimension) / rowBytes)
    }

    /// Adam epochs (MLP or softmax regression) over rows that stay in their source: each epoch
    /// streams the source block by block through a seeded shuffle buffer of `memoryBudget` bytes, so
    /// memory holds the buffer, one block, labels and weights, never the whole set.
    ///
    /// The buffer fills with the first rows; then each mini-batch is `config.batchSize` rows drawn
    /// uniformly from it, whose slots the next incoming rows take; at the end of the stream the rest
    /// is shuffled and drained. Every row is used exactly once an epoch. With a buffer as large as the
    /// source this is a full shuffle; smaller, rows mix only within about a buffer's span of the
    /// source order, so a class-sorted source should be given a buffer of several classes' rows.
    ///
    /// Standardization, class weights, early stopping on `validation` loss (keeping the best epoch,
    /// `keptEpoch`) and `onEpoch` behave as in `fit`; validation is evaluated streaming too. There is
    /// no checkpoint: a streamed fit that is interrupted starts over. Equal seeds give equal runs.
    public func fitStreamed(train: any TrainingRowSource, validation: (any TrainingRowSource)?, memoryBudget: Int,
                            onEpoch: (EpochMetrics) throws -> Void = { _ in }) throws -> HeadModel {
        try config.validate()
        guard let largest = train.labels.max(), largest >= 0 else { throw TrainingError.emptyTrainingSet }
        if let negative = train.labels.firstIndex(where: { $0 < 0 }) {
            throw TrainingError.invalidLabel(row: negative, label: train.labels[negative], classCount: config.classCount ?? 0)
        }
        if let validation, validation.dimension != train.dimension {
            throw TrainingError.dimensionMismatch(expected: train.dimension, actual: validation.dimension)
        }
        let classCount = config.classCount ?? Int(largest) + 1
        let d = train.dimension
        let blockRows = max(32, min(4096, memoryBudget / (16 * d)))
        let data = try StreamedData(config: config, source: train, classCount: classCount, blockRows: blockRows)
        if let validation { try checkLabels(validation.labels, classCount: classCount) }
        setBLASThreads(config.kind == .softmaxRegression ? 1 : config.blasThreads)
        let layout = ParameterLayout(kind: config.kind, dimension: d,
                                     hiddenUnits: config.kind == .mlp ? config.hiddenUnits : 0, classCount: classCount)
        let n = train.rowCount
        let batchSize = min(config.batchSize, n)
        let capacity = min(n, Self.shuffleBufferRows(memoryBudget: memoryBudget, dimension: d, batchSize: batchSize,
                                                     blockRows: data.blockRows))

        var rng = SplitMix64(seed: config.seed)
        var parameters = layout.initialParameters(rng: &rng)
        var adam = Adam(parameterCount: layout.parameterCount)
        let objective = Objective(layout: layout, l2: config.l2)
        var minibatch = Minibatch(layout: layout, capacity: batchSize)
        var bufferX = [Float](repeating: 0, count: capacity * d)
        var bufferLabels = [Int32](repeating: 0, count: capacity)
        var bufferWeights: [Float]? = data.weights == nil ? nil : [Float](repeating: 1, count: capacity)
        var standardized = [Float](repeating: 0, count: data.blockRows * d)
        var best: (loss: Double, parameters: [Float], epoch: Int)?
        var sinceBest = 0
        var epoch = 0
        let labels = train.labels

        while epoch < config.maxEpochs {
            epoch += 1
            let started = Date()
            var lossSum = 0.0, correct = 0
            var filled = 0
            var free: [Int] = []
            var slots = Array(0..<capacity)
            func step(_ rows: [Int]) {
                let value = minibatch.step(rows: rows, x: bufferX, labels: bufferLabels, weights: bufferWeights,
                                           objective: objective, parameters: &parameters, adam: &adam,
                                           learningRate: config.learningRate)
                lossSum += value.dataLoss * Double(rows.count)
                correct += value.correct
            }
            try data.source.forEachBlock(maxRows: data.blockRows) { first, block in
                let count = block.count / d
                data.standardizer.standardize(block, into: &standardized)
                for row in 0..<count {
                    if free.isEmpty && filled == capacity {
                        // A full buffer: a mini-batch of distinct slots drawn uniformly (partial Fisher–Yates).
                        for index in 0..<batchSize {
                            slots.swapAt(index, index + Int(rng.next() % UInt64(capacity - index)))
                        }
                        free = Array(slots[0..<batchSize])
                        step(free)
                    }
                    let slot: Int
                    if let reused = free.popLast() { slot = reused } else { slot = filled; filled += 1 }
                    bufferX.withUnsafeMutableBufferPointer { buffer in
                        standardized.withUnsafeBufferPointer { source in
                            (buffer.baseAddress! + slot * d).update(from: source.baseAddress! + row * d, count: d)
                        }
                    }
                    bufferLabels[slot] = labels[first + row]
                    bufferWeights?[slot] = data.weights![first + row]
                }
            }
            // Drain what is left, in a shuffled order.
            let freeSet = Set(free)
            var rest = (0..<filled).filter { !freeSet.contains($0) }
            rng.shuffle(&rest)
            for start in stride(from: 0, to: rest.count, by: batchSize) {
                step(Array(rest[start..<min(start + batchSize, rest.count)]))
            }

            var validationLoss: Double?, validationAccuracy: Double?
            var stop = epoch >= config.maxEpochs
            if let validation, validation.rowCount > 0 {
                let evaluation = try HeadModel(layout: layout, parameters: parameters, standardizer: data.standardizer)
                    .evaluate(source: validation)
                validationLoss = evaluation.loss
                validationAccuracy = evaluation.top1
                if evaluation.loss < (best?.loss ?? .infinity) {
                    best = (evaluation.loss, parameters, epoch)
                    sinceBest = 0
                } else {
                    sinceBest += 1
                    if let patience = config.earlyStoppingPatience, sinceBest >= patience { stop = true }
                }
            }
            try onEpoch(EpochMetrics(epoch: epoch, trainLoss: lossSum / Double(n), trainAccuracy: Double(correct) / Double(n),
                                     validationLoss: validationLoss, validationAccuracy: validationAccuracy,
                                     seconds: Date().timeIntervalSince(started)))
            if stop { break }
        }
        let useBest = config.earlyStoppingPatience != nil && best != nil
        keptEpoch = useBest ? best!.epoch : epoch
        return HeadModel(layout: layout, parameters: useBest ? best!.parameters : parameters, standardizer: data.standardizer)
    }
}
