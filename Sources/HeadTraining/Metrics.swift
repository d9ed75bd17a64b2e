import Foundation

/// Quality of a model on a labelled set.
public struct Evaluation: Codable, Sendable, Equatable {
    /// Rows evaluated.
    public var count: Int
    /// Mean cross-entropy (natural log), unweighted, without the L2 term.
    public var loss: Double
    /// Fraction of rows whose most probable class is the label.
    public var top1: Double
    /// Fraction of rows whose label is among the five most probable classes (all classes when there are fewer).
    public var top5: Double
    /// Per class: correct predictions of it / all predictions of it; 0 when it was never predicted.
    public var perClassPrecision: [Double]
    /// Per class: correct predictions of it / rows labelled with it; 0 when it never occurs.
    public var perClassRecall: [Double]
    /// `confusion[label][predicted]` row counts.
    public var confusion: [[Int]]
}

/// What one epoch (Adam) or one iteration (L-BFGS) of `HeadTrainer.fit` achieved.
public struct EpochMetrics: Codable, Sendable, Equatable {
    /// 1-based epoch (or L-BFGS iteration) number, counted across resumes.
    public var epoch: Int
    /// Mean class-weighted cross-entropy on the training set, without the L2 term.
    /// Adam reports the average over the epoch's mini-batches, L-BFGS the value at the new point.
    public var trainLoss: Double
    /// Training top-1 accuracy, measured like `trainLoss`.
    public var trainAccuracy: Double
    /// Mean unweighted cross-entropy on the validation set, when one was given.
    public var validationLoss: Double?
    /// Validation top-1 accuracy, when a validation set was given.
    public var validationAccuracy: Double?
    /// Wall time of this epoch, including validation.
    public var seconds: Double
}

extension HeadModel {
    /// Loss, top-1/top-5 accuracy, per-class precision/recall and the confusion matrix on `data`.
    /// Throws for malformed data, NaN/Inf features, a dimension mismatch or labels outside `0..<classCount`.
    public func evaluate(on data: LabeledFeatures) throws -> Evaluation {
        try data.validate()
        guard data.dimension == dimension else { throw TrainingError.dimensionMismatch(expected: dimension, actual: data.dimension) }
        for (row, label) in data.labels.enumerated() where label < 0 || Int(label) >= classCount {
            throw TrainingError.invalidLabel(row: row, label: label, classCount: classCount)
        }
        return try evaluate(source: data)
    }

    /// `evaluate(on:)` over a source read block by block, for validation sets larger than memory.
    public func evaluate(source: any TrainingRowSource) throws -> Evaluation {
        guard source.dimension == dimension else { throw TrainingError.dimensionMismatch(expected: dimension, actual: source.dimension) }
        let labels = source.labels
        for (row, label) in labels.enumerated() where label < 0 || Int(label) >= classCount {
            throw TrainingError.invalidLabel(row: row, label: label, classCount: classCount)
        }
        let k = classCount
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
        var loss = 0.0
        var top5Hits = 0
        let topK = min(5, k)
        try source.forEachBlock(maxRows: 1024) { first, block in
            let rows = block.count / dimension
            var probabilities = try logits(Array(block), count: rows)
            softmaxRows(&probabilities, columns: k)
            for row in 0..<rows {
                let base = row * k
                let label = Int(labels[first + row])
                let predicted = argmax(probabilities, offset: base, count: k)
                confusion[label][predicted] += 1
                // Floor at the smallest normal so a confident mistake costs a large finite loss, not infinity.
                loss -= log(max(Double(probabilities[base + label]), Double(Float.leastNormalMagnitude)))
                let labelProbability = probabilities[base + label]
                var ranked = 0
                for column in 0..<k where probabilities[base + column] > labelProbability { ranked += 1 }
                if ranked < topK { top5Hits += 1 }
            }
        }
        let n = Double(max(labels.count, 1))
        let correct = (0..<k).reduce(0) { $0 + confusion[$1][$1] }
        let precision = (0..<k).map { column -> Double in
            let predicted = (0..<k).reduce(0) { $0 + confusion[$1][column] }
            return predicted == 0 ? 0 : Double(confusion[column][column]) / Double(predicted)
        }
        let recall = (0..<k).map { row -> Double in
            let actual = confusion[row].reduce(0, +)
            return actual == 0 ? 0 : Double(confusion[row][row]) / Double(actual)
        }
        return Evaluation(count: labels.count, loss: loss / n, top1: Double(correct) / n, top5: Double(top5Hits) / n,
                          perClassPrecision: precision, perClassRecall: recall, confusion: confusion)
    }
}
