import Foundation

/// A trained classification head: standardization, then a linear or one-hidden-layer network.
///
/// Softmax regression: `logits = Xs · layer1Weightsᵀ + layer1Bias` (layer 1 is the output layer).
/// MLP: `H = relu(Xs · layer1Weightsᵀ + layer1Bias)`, `logits = H · layer2Weightsᵀ + layer2Bias`.
/// `Xs` is the input after `standardizer`, so callers always pass raw backbone features.
public struct HeadModel: Codable, Sendable, Equatable {
    /// The architecture of a head.
    public enum Kind: String, Codable, Sendable {
        /// Multinomial logistic regression: one linear layer and a softmax.
        case softmaxRegression
        /// One hidden ReLU layer, then a linear layer and a softmax.
        case mlp
    }

    /// Which architecture the weights describe.
    public var kind: Kind
    /// Input feature width.
    public var dimension: Int
    /// Number of classes; labels and logit columns are `0..<classCount`.
    public var classCount: Int
    /// Hidden units of an MLP; `nil` for softmax regression.
    public var hiddenUnits: Int?
    /// First layer, `[outputs × dimension]` row-major, where outputs is `classCount` or `hiddenUnits`.
    public var layer1Weights: [Float]
    /// First-layer bias, one per output.
    public var layer1Bias: [Float]
    /// MLP output layer, `[classCount × hiddenUnits]` row-major; `nil` for softmax regression.
    public var layer2Weights: [Float]?
    /// MLP output bias, one per class; `nil` for softmax regression.
    public var layer2Bias: [Float]?
    /// Applied to raw features before the first layer.
    public var standardizer: Standardizer

    /// Class logits for `count` raw feature rows, `[count × classCount]` row-major.
    /// Throws `dimensionMismatch`/`malformedFeatures` for the wrong shape and `nonFiniteFeature` for NaN/Inf.
    public func logits(_ features: [Float], count: Int) throws -> [Float] {
        guard features.count == count * dimension else {
            if count > 0, features.count % count == 0 {
                throw TrainingError.dimensionMismatch(expected: dimension, actual: features.count / count)
            }
            throw TrainingError.malformedFeatures("\(features.count) values is not \(count) rows × \(dimension)")
        }
        var standardized = features
        try standardizer.apply(&standardized, dimension: dimension)
        let objective = Objective(layout: layout, l2: 0)
        let workspace = Workspace()
        return parameters.withUnsafeBufferPointer { parameters in
            standardized.withUnsafeBufferPointer { x in
                objective.forward(parameters: parameters.baseAddress!, x: x.baseAddress!, rows: count, workspace: workspace)
                return Array(workspace.logits[0..<(count * classCount)])
            }
        }
    }

    /// Class probabilities (softmax of `logits`), `[count × classCount]` row-major; rows sum to 1.
    public func probabilities(_ features: [Float], count: Int) throws -> [Float] {
        var values = try logits(features, count: count)
        softmaxRows(&values, columns: classCount)
        return values
    }

    /// The most probable class of each row.
    public func predict(_ features: [Float], count: Int) throws -> [Int32] {
        let values = try logits(features, count: count)
        return (0..<count).map { row in Int32(argmax(values, offset: row * classCount, count: classCount)) }
    }

    /// A model from its parts: one layer (softmax regression), or two with a ReLU between them (an MLP).
    /// Shapes follow the properties' documentation; `logits` checks the input against them.
    public init(standardizer: Standardizer, layer1Weights: [Float], layer1Bias: [Float],
                layer2Weights: [Float]? = nil, layer2Bias: [Float]? = nil) {
        let isMLP = layer2Weights != nil && layer2Bias != nil
        kind = isMLP ? .mlp : .softmaxRegression
        dimension = standardizer.dimension
        classCount = isMLP ? layer2Bias!.count : layer1Bias.count
        hiddenUnits = isMLP ? layer1Bias.count : nil
        self.layer1Weights = layer1Weights
        self.layer1Bias = layer1Bias
        self.layer2Weights = isMLP ? layer2Weights : nil
        self.layer2Bias = isMLP ? layer2Bias : nil
        self.standardizer = standardizer
    }

    /// Where each weight lives in the flat vector optimizers work on.
    var layout: ParameterLayout {
        ParameterLayout(kind: kind, dimension: dimension, hiddenUnits: hiddenUnits ?? 0, classCount: classCount)
    }

    /// All weights in `layout` order.
    var parameters: [Float] {
        layer1Weights + layer1Bias + (layer2Weights ?? []) + (layer2Bias ?? [])
    }

    /// A model from a flat parameter vector in `layout` order.
    init(layout: ParameterLayout, parameters: [Float], standardizer: Standardizer) {
        precondition(parameters.count == layout.parameterCount)
        kind = layout.kind
        dimension = layout.dimension
        classCount = layout.classCount
        hiddenUnits = layout.kind == .mlp ? layout.hiddenUnits : nil
        layer1Weights = Array(parameters[layout.layer1Weights])
        layer1Bias = Array(parameters[layout.layer1Bias])
        layer2Weights = layout.kind == .mlp ? Array(parameters[layout.layer2Weights]) : nil
        layer2Bias = layout.kind == .mlp ? Array(parameters[layout.layer2Bias]) : nil
        self.standardizer = standardizer
    }
}

/// Index ranges of each layer inside the flat parameter vector `[W1, b1, W2, b2]`.
struct ParameterLayout: Equatable {
    let kind: HeadModel.Kind
    let dimension: Int
    let hiddenUnits: Int
    let classCount: Int

    /// Width of the first layer's output.
    var layer1Outputs: Int { kind == .mlp ? hiddenUnits : classCount }
    var layer1Weights: Range<Int> { 0..<(layer1Outputs * dimension) }
    var layer1Bias: Range<Int> { layer1Weights.upperBound..<(layer1Weights.upperBound + layer1Outputs) }
    var layer2Weights: Range<Int> {
        layer1Bias.upperBound..<(layer1Bias.upperBound + (kind == .mlp ? classCount * hiddenUnits : 0))
    }
    var layer2Bias: Range<Int> { layer2Weights.upperBound..<(layer2Weights.upperBound + (kind == .mlp ? classCount : 0)) }
    var parameterCount: Int { layer2Bias.upperBound }

    /// Starting weights: zeros for softmax regression (the problem is convex, and zero is where
    /// scikit-learn starts too); He-scaled Gaussian first layer and small output layer for an MLP,
    /// because zero weights would leave every hidden unit identical.
    func initialParameters(rng: inout SplitMix64) -> [Float] {
        var parameters = [Float](repeating: 0, count: parameterCount)
        guard kind == .mlp else { return parameters }
        let scale1 = Float((2.0 / Double(dimension)).squareRoot())
        for index in layer1Weights { parameters[index] = scale1 * rng.nextGaussian() }
        let scale2 = Float((1.0 / Double(hiddenUnits)).squareRoot())
        for index in layer2Weights { parameters[index] = scale2 * rng.nextGaussian() }
        return parameters
    }
}

/// Reusable scratch matrices, grown on demand, so a training loop does not allocate per step.
final class Workspace {
    var hidden: [Float] = []
    var logits: [Float] = []
    var hiddenGradient: [Float] = []
    var partialGradients: [Float] = []

    func reserve(rows: Int, layout: ParameterLayout) {
        let logitCount = rows * layout.classCount
        if logits.count < logitCount { logits = [Float](repeating: 0, count: logitCount) }
        if layout.kind == .mlp {
            let hiddenCount = rows * layout.hiddenUnits
            if hidden.count < hiddenCount {
                hidden = [Float](repeating: 0, count: hiddenCount)
                hiddenGradient = [Float](repeating: 0, count: hiddenCount)
            }
        }
    }
}

/// Pointers one fused softmax evaluation shares between its row partitions; each partition
/// writes disjoint logit rows and its own result slot and gradient buffer.
struct FusedPass: @unchecked Sendable {
    let parameters: UnsafePointer<Float>
    let x: UnsafePointer<Float>
    let labels: UnsafePointer<Int32>
    let sampleWeights: UnsafePointer<Float>?
    let logits: UnsafeMutablePointer<Float>
    let gradient: UnsafeMutablePointer<Float>
    let partialGradients: UnsafeMutablePointer<Float>?
    let results: UnsafeMutablePointer<(lossSum: Double, correct: Int)>
}

/// What `Objective.fusedSoftmaxPass` needs to standardize raw rows itself: the standardizer's mean
/// and reciprocal spread, and scratch for one slice (`sliceRows × dimension` floats).
struct Standardizing {
    let mean: UnsafePointer<Float>
    let inverseStd: UnsafePointer<Float>
    let scratch: UnsafeMutablePointer<Float>

    /// Writes `rows` standardized rows of `x` into `scratch`: (x − mean) · (1/std), computed exactly
    /// as `Standardizer.standardized` does, so streamed and in-memory fits see the same values.
    func apply(_ x: UnsafePointer<Float>, rows: Int, dimension d: Int) {
        for row in 0..<rows {
            let source = x + row * d, target = scratch + row * d
            for column in 0..<d { target[column] = (source[column] - mean[column]) * inverseStd[column] }
        }
    }
}

/// Statistics of one objective evaluation over a set of rows.
struct ObjectiveValue {
    /// Mean (weighted) cross-entropy + (l2/2)·||W||², the quantity being minimised.
    var objective: Double
    /// Mean (weighted) cross-entropy alone, comparable with validation loss.
    var dataLoss: Double
    /// Rows whose arg-max logit is the label.
    var correct: Int
}

/// The training objective: mean sample-weighted cross-entropy plus (l2/2)·||W||² on weights, not biases.
struct Objective {
    let layout: ParameterLayout
    let l2: Float
    /// Threads splitting the rows of a softmax-regression evaluation (each runs single-threaded BLAS).
    var threads: Int = 1

    /// Logits for `rows` standardized rows into `workspace.logits` (and hidden activations into `workspace.hidden`).
    func forward(parameters: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, workspace: Workspace) {
        workspace.reserve(rows: rows, layout: layout)
        let d = layout.dimension, k = layout.classCount
        let w1 = parameters + layout.layer1Weights.lowerBound
        let b1 = parameters + layout.layer1Bias.lowerBound
        if layout.kind == .softmaxRegression {
            workspace.logits.withUnsafeMutableBufferPointer { z in
                NarrowLayer.logits(x: x, rows: rows, d: d, w: w1, k: k, z: z.baseAddress!)
                addBias(z.baseAddress!, b1, rows: rows, columns: k)
            }
            return
        }
        let h = layout.hiddenUnits
        let w2 = parameters + layout.layer2Weights.lowerBound
        let b2 = parameters + layout.layer2Bias.lowerBound
        workspace.hidden.withUnsafeMutableBufferPointer { hidden in
            let hp = hidden.baseAddress!
            BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: h, k: d, a: x, lda: d, b: w1, ldb: d, c: hp, ldc: h)
            addBias(hp, b1, rows: rows, columns: h)
            for index in 0..<(rows * h) where hp[index] < 0 { hp[index] = 0 }
            workspace.logits.withUnsafeMutableBufferPointer { z in
                BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: k, k: h, a: hp, lda: h, b: w2, ldb: h, c: z.baseAddress!, ldc: k)
                addBias(z.baseAddress!, b2, rows: rows, columns: k)
            }
        }
    }

    /// Objective over `rows` standardized rows; writes its gradient into `gradient` when given.
    ///
    /// `sampleWeights` (per row, or `nil` for all ones) scale each row's cross-entropy; the sum
    /// is divided by `rows`, not by the weight total, which is scikit-learn's convention.
    func evaluate(parameters: UnsafePointer<Float>, x: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                  sampleWeights: UnsafePointer<Float>?, rows: Int,
                  gradient: UnsafeMutablePointer<Float>?, workspace: Workspace) -> ObjectiveValue {
        let d = layout.dimension, k = layout.classCount
        let inverseRows = 1 / Double(rows)
        var lossSum = 0.0
        var correct = 0
        if layout.kind == .softmaxRegression, let gradient {
            workspace.reserve(rows: rows, layout: layout)
            let parts = threads > 1 && rows >= 128 * threads ? threads : 1
            let partGradientCount = k * d + k
            if workspace.partialGradients.count < (parts - 1) * partGradientCount {
                workspace.partialGradients = [Float](repeating: 0, count: (parts - 1) * partGradientCount)
            }
            var partial = [(lossSum: Double, correct: Int)](repeating: (0, 0), count: parts)
            let rowsPerPart = (rows + parts - 1) / parts
            workspace.logits.withUnsafeMutableBufferPointer { logits in
                workspace.partialGradients.withUnsafeMutableBufferPointer { partialGradients in
                    partial.withUnsafeMutableBufferPointer { partial in
                        let shared = FusedPass(parameters: parameters, x: x, labels: labels, sampleWeights: sampleWeights,
                                               logits: logits.baseAddress!, gradient: gradient,
                                               partialGradients: partialGradients.baseAddress, results: partial.baseAddress!)
                        let run: @Sendable (Int) -> Void = { part in
                            let first = part * rowsPerPart
                            let count = max(0, min(rowsPerPart, rows - first))
                            // Part 0 accumulates into the real gradient, with the L2 term; the others into
                            // scratch buffers that are added afterwards in part order, so the sum is deterministic.
                            let target = part == 0 ? shared.gradient : shared.partialGradients! + (part - 1) * partGradientCount
                            shared.results[part] = fusedSoftmaxPass(shared, rows: first..<(first + count), scale: Float(inverseRows),
                                                                    weightGradient: target, biasGradient: target + k * d,
                                                                    includePenalty: part == 0)
                        }
                        if parts == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: run) }
                        for part in 1..<max(parts, 1) {
                            BLAS.axpy(1, shared.partialGradients! + (part - 1) * partGradientCount, gradient, count: partGradientCount)
                        }
                    }
                }
            }
            for part in partial {
                lossSum += part.lossSum
                correct += part.correct
            }
            return value(lossSum: lossSum, correct: correct, rows: rows, parameters: parameters)
        }

        forward(parameters: parameters, x: x, rows: rows, workspace: workspace)
        workspace.logits.withUnsafeMutableBufferPointer { logits in
            let result = crossEntropy(logits: logits.baseAddress!, labels: labels, sampleWeights: sampleWeights, rows: rows,
                                      gradientScale: gradient == nil ? nil : Float(inverseRows))
            lossSum = result.lossSum
            correct = result.correct
        }
        let value = value(lossSum: lossSum, correct: correct, rows: rows, parameters: parameters)
        guard let gradient else { return value }
        // workspace.logits now holds dL/dZ = w_i (P − Y) / n.
        workspace.logits.withUnsafeBufferPointer { dz in
            let dzp = dz.baseAddress!
            let h = layout.hiddenUnits
            workspace.hidden.withUnsafeBufferPointer { hidden in
                let hp = hidden.baseAddress!
                backLinear(dz: dzp, input: hp, rows: rows, inputs: h, outputs: k,
                           weights: parameters + layout.layer2Weights.lowerBound,
                           weightGradient: gradient + layout.layer2Weights.lowerBound,
                           biasGradient: gradient + layout.layer2Bias.lowerBound)
                workspace.hiddenGradient.withUnsafeMutableBufferPointer { dh in
                    let dhp = dh.baseAddress!
                    BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: h, k: k, a: dzp, lda: k,
                              b: parameters + layout.layer2Weights.lowerBound, ldb: h, c: dhp, ldc: h)
                    // ReLU passes gradient only where the unit was active (hidden > 0 after clamping).
                    for index in 0..<(rows * h) where hp[index] <= 0 { dhp[index] = 0 }
                    backLinear(dz: dhp, input: x, rows: rows, inputs: d, outputs: h,
                               weights: parameters + layout.layer1Weights.lowerBound,
                               weightGradient: gradient + layout.layer1Weights.lowerBound,
                               biasGradient: gradient + layout.layer1Bias.lowerBound)
                }
            }
        }
        return value
    }

    /// Softmax regression, one block of a streamed pass: the summed weighted cross-entropy of `rows`
    /// rows, and its gradient times `scale` written into `gradient` (overwritten; no penalty).
    /// With `standardizing`, x holds raw rows that are standardized a cache-sized slice at a time
    /// (the same arithmetic as `Standardizer.standardized`), so the block is not written out standardized.
    func accumulate(parameters: UnsafePointer<Float>, x: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                    sampleWeights: UnsafePointer<Float>?, rows: Int, scale: Float,
                    standardizing: Standardizing?,
                    gradient: UnsafeMutablePointer<Float>, workspace: Workspace) -> (lossSum: Double, correct: Int) {
        precondition(layout.kind == .softmaxRegression, "streamed passes are for softmax regression")
        workspace.reserve(rows: rows, layout: layout)
        var unused = (lossSum: 0.0, correct: 0)
        return workspace.logits.withUnsafeMutableBufferPointer { logits in
            withUnsafeMutablePointer(to: &unused) { results in
                let shared = FusedPass(parameters: parameters, x: x, labels: labels, sampleWeights: sampleWeights,
                                       logits: logits.baseAddress!, gradient: gradient, partialGradients: nil, results: results)
                return fusedSoftmaxPass(shared, rows: 0..<rows, scale: scale, weightGradient: gradient,
                                        biasGradient: gradient + layout.classCount * layout.dimension, includePenalty: false,
                                        standardizing: standardizing)
            }
        }
    }

    /// Rows per slice of `fusedSoftmaxPass`: a slice of x (≤ 256 KB) stays in L2 between the two products.
    var sliceRows: Int { max(8, min(256, 65_536 / layout.dimension)) }

    /// Softmax-regression loss and gradient over `rows`, accumulated into `weightGradient`/`biasGradient`
    /// (which it overwrites: W·l2-seeded when `includePenalty`, zero-seeded otherwise).
    ///
    /// Row slices are small enough to stay in L2 between the forward and the gradient product, so X is
    /// streamed from memory once per evaluation instead of twice; that halves the cost of these skinny
    /// (classCount-wide), bandwidth-bound products. With `standardizing`, each slice of raw rows is
    /// standardized into its scratch first.
    func fusedSoftmaxPass(_ shared: FusedPass, rows: Range<Int>, scale: Float,
                          weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>,
                          includePenalty: Bool, standardizing: Standardizing? = nil) -> (lossSum: Double, correct: Int) {
        let d = layout.dimension, k = layout.classCount
        let sliceRows = self.sliceRows
        let w = shared.parameters + layout.layer1Weights.lowerBound
        let b = shared.parameters + layout.layer1Bias.lowerBound
        if includePenalty {
            for index in 0..<(k * d) { weightGradient[index] = l2 * w[index] }
        } else {
            weightGradient.update(repeating: 0, count: k * d)
        }
        biasGradient.update(repeating: 0, count: k)
        var lossSum = 0.0, correct = 0
        var first = rows.lowerBound
        while first < rows.upperBound {
            let count = min(sliceRows, rows.upperBound - first)
            var xb = shared.x + first * d
            let zb = shared.logits + first * k
            if let standardizing {
                standardizing.apply(xb, rows: count, dimension: d)
                xb = UnsafePointer(standardizing.scratch)
            }
            NarrowLayer.logits(x: xb, rows: count, d: d, w: w, k: k, z: zb)
            addBias(zb, b, rows: count, columns: k)
            let block = crossEntropy(logits: zb, labels: shared.labels + first, sampleWeights: shared.sampleWeights.map { $0 + first },
                                     rows: count, gradientScale: scale)
            lossSum += block.lossSum
            correct += block.correct
            NarrowLayer.addWeightGradient(dz: zb, rows: count, k: k, x: xb, d: d, g: weightGradient)
            for row in 0..<count {
                for column in 0..<k { biasGradient[column] += zb[row * k + column] }
            }
            first += count
        }
        return (lossSum, correct)
    }

    /// Objective value from the summed weighted cross-entropy and the weights' L2 norm.
    private func value(lossSum: Double, correct: Int, rows: Int, parameters: UnsafePointer<Float>) -> ObjectiveValue {
        var weightNorm = 0.0
        for range in [layout.layer1Weights, layout.layer2Weights] where !range.isEmpty {
            weightNorm += BLAS.dot(parameters + range.lowerBound, parameters + range.lowerBound, count: range.count)
        }
        let dataLoss = lossSum / Double(rows)
        return ObjectiveValue(objective: dataLoss + 0.5 * Double(l2) * weightNorm, dataLoss: dataLoss, correct: correct)
    }

    /// Summed weighted cross-entropy and correct predictions of `rows` logit rows. With a
    /// `gradientScale`, each row is overwritten by its loss gradient w_i·(p − onehot)·gradientScale.
    private func crossEntropy(logits z: UnsafeMutablePointer<Float>, labels: UnsafePointer<Int32>,
                              sampleWeights: UnsafePointer<Float>?, rows: Int,
                              gradientScale: Float?) -> (lossSum: Double, correct: Int) {
        let k = layout.classCount
        var lossSum = 0.0
        var correct = 0
        for row in 0..<rows {
            let base = z + row * k
            let label = Int(labels[row])
            var largest = base[0], best = 0
            for column in 1..<k where base[column] > largest { largest = base[column]; best = column }
            if best == label { correct += 1 }
            // Subtracting the row maximum keeps every exp() ≤ 1, so nothing overflows; the label's
            // shifted logit is kept because its exp() may underflow to 0 for confident mistakes.
            let shiftedLabelLogit = base[label] - largest
            var sum: Float = 0
            for column in 0..<k {
                let e = expf(base[column] - largest)
                base[column] = e
                sum += e
            }
            let weight = sampleWeights.map { $0[row] } ?? 1
            lossSum += Double(weight) * (Double(logf(sum)) - Double(shiftedLabelLogit))
            if let gradientScale {
                let scale = weight * gradientScale / sum
                for column in 0..<k { base[column] *= scale }
                base[label] -= weight * gradientScale
            }
        }
        return (lossSum, correct)
    }

    /// Gradient of a linear layer: dW = dZᵀ·input + l2·W, db = column sums of dZ.
    private func backLinear(dz: UnsafePointer<Float>, input: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int,
                            weights: UnsafePointer<Float>, weightGradient: UnsafeMutablePointer<Float>,
                            biasGradient: UnsafeMutablePointer<Float>) {
        // Copying W into the output first lets one gemm with beta = l2 add the penalty term.
        weightGradient.update(from: weights, count: outputs * inputs)
        BLAS.gemm(transposeA: true, transposeB: false, m: outputs, n: inputs, k: rows, a: dz, lda: outputs,
                  b: input, ldb: inputs, beta: l2, c: weightGradient, ldc: inputs)
        for column in 0..<outputs { biasGradient[column] = 0 }
        for row in 0..<rows {
            let base = dz + row * outputs
            for column in 0..<outputs { biasGradient[column] += base[column] }
        }
    }
}

@inline(__always)
private func addBias(_ z: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, rows: Int, columns: Int) {
    for row in 0..<rows {
        let base = z + row * columns
        for column in 0..<columns { base[column] += bias[column] }
    }
}

/// Replaces each row of logits by its softmax, stably (shifted by the row maximum).
func softmaxRows(_ values: inout [Float], columns: Int) {
    let rows = values.count / columns
    for row in 0..<rows {
        let base = row * columns
        var largest = values[base]
        for column in 1..<columns { largest = max(largest, values[base + column]) }
        var sum: Float = 0
        for column in 0..<columns {
            let e = expf(values[base + column] - largest)
            values[base + column] = e
            sum += e
        }
        for column in 0..<columns { values[base + column] /= sum }
    }
}

/// Index of the largest of `count` values starting at `offset` (the first on ties).
func argmax(_ values: [Float], offset: Int, count: Int) -> Int {
    var best = 0
    for index in 1..<count where values[offset + index] > values[offset + best] { best = index }
    return best
}
