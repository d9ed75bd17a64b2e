import Foundation

/// Training rows read block by block, so a set larger than memory can be trained on: each pass of
/// the optimiser reads the blocks again instead of holding every row.
public protocol TrainingRowSource {
    /// Values per row.
    var dimension: Int { get }
    /// One label per row, in the order the blocks deliver rows (labels are small enough to keep).
    var labels: [Int32] { get }
    /// Calls `body` with consecutive blocks of raw (not standardized) rows, in the same order on every
    /// call: the index of the block's first row and `rows × dimension` values. Every block but the last
    /// holds exactly `maxRows` rows. The buffer is only valid during the call.
    func forEachBlock(maxRows: Int, _ body: (_ firstRow: Int, _ features: UnsafeBufferPointer<Float>) throws -> Void) throws
}

extension TrainingRowSource {
    /// Rows in the source.
    public var rowCount: Int { labels.count }

    /// Every row read into memory.
    public func materialized() throws -> LabeledFeatures {
        if let data = self as? LabeledFeatures { return data }
        var features = [Float]()
        features.reserveCapacity(rowCount * dimension)
        try forEachBlock(maxRows: 4096) { _, block in features.append(contentsOf: block) }
        return LabeledFeatures(features: features, labels: labels, dimension: dimension)
    }
}

extension LabeledFeatures: TrainingRowSource {
    public func forEachBlock(maxRows: Int, _ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws {
        try features.withUnsafeBufferPointer { all in
            var first = 0
            while first < count {
                let rows = min(maxRows, count - first)
                try body(first, UnsafeBufferPointer(rebasing: all[(first * dimension)..<((first + rows) * dimension)]))
                first += rows
            }
        }
    }
}

/// One source after another (training then validation rows, for the refit on both).
public struct ConcatenatedRows: TrainingRowSource {
    public let parts: [any TrainingRowSource]
    public let dimension: Int
    public let labels: [Int32]

    /// The rows of `parts` in order; all must have the same dimension.
    public init(_ parts: [any TrainingRowSource]) {
        precondition(!parts.isEmpty && parts.allSatisfy { $0.dimension == parts[0].dimension })
        self.parts = parts
        dimension = parts[0].dimension
        labels = parts.flatMap(\.labels)
    }

    public func forEachBlock(maxRows: Int, _ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws {
        var offset = 0
        for part in parts {
            try part.forEachBlock(maxRows: maxRows) { first, block in try body(offset + first, block) }
            offset += part.rowCount
        }
    }
}

/// Column sums for `Standardizer`, added block by block: sums of x − x₀ and (x − x₀)², x₀ being the
/// first row, so E[x²] − E[x]² does not cancel when a feature's mean is large relative to its spread.
/// 32-row groups are summed in float (vectorised) and each group's total added into doubles, so
/// the float error stays that of a short sum. Blocks whose sizes are multiples of 32 give exactly
/// the statistics of one call over all rows.
struct StandardizerAccumulator {
    let dimension: Int
    private var shift: [Float] = []
    private var sum: [Double]
    private var squares: [Double]
    private var blockSum: [Float]
    private var blockSquares: [Float]
    private(set) var count = 0

    init(dimension: Int) {
        self.dimension = dimension
        sum = [Double](repeating: 0, count: dimension)
        squares = sum
        blockSum = [Float](repeating: 0, count: dimension)
        blockSquares = blockSum
    }

    mutating func add(_ x: UnsafePointer<Float>, rows: Int) {
        guard rows > 0 else { return }
        let dimension = self.dimension
        if shift.isEmpty { shift = Array(UnsafeBufferPointer(start: x, count: dimension)) }
        shift.withUnsafeBufferPointer { x0 in
            sum.withUnsafeMutableBufferPointer { sum in
                squares.withUnsafeMutableBufferPointer { squares in
                    blockSum.withUnsafeMutableBufferPointer { blockSum in
                        blockSquares.withUnsafeMutableBufferPointer { blockSquares in
                            var first = 0
                            while first < rows {
                                let last = min(first + 32, rows)
                                for column in 0..<dimension { blockSum[column] = 0; blockSquares[column] = 0 }
                                for row in first..<last {
                                    let base = row * dimension
                                    for column in 0..<dimension {
                                        let deviation = x[base + column] - x0[column]
                                        blockSum[column] += deviation
                                        blockSquares[column] += deviation * deviation
                                    }
                                }
                                for column in 0..<dimension {
                                    sum[column] += Double(blockSum[column])
                                    squares[column] += Double(blockSquares[column])
                                }
                                first = last
                            }
                        }
                    }
                }
            }
        }
        count += rows
    }

    var standardizer: Standardizer {
        let n = Double(max(count, 1))
        var mean = [Float](repeating: 0, count: dimension)
        var std = [Float](repeating: 0, count: dimension)
        for column in 0..<dimension {
            let shiftedMean = sum[column] / n
            mean[column] = Float(Double(shift.isEmpty ? 0 : shift[column]) + shiftedMean)
            std[column] = Float(max(0, squares[column] / n - shiftedMean * shiftedMean).squareRoot())
        }
        return Standardizer(mean: mean, std: std)
    }
}

/// A training set that stays where it is: one pass over the source per objective evaluation.
/// Only the labels, per-row weights, one block of raw rows and one slice of standardized rows are in memory.
struct StreamedData {
    let source: any TrainingRowSource
    let classCount: Int
    let standardizer: Standardizer
    let weights: [Float]?
    /// Rows per block read: a multiple of 32 (see `StandardizerAccumulator`).
    let blockRows: Int

    init(config: TrainingConfig, source: any TrainingRowSource, classCount: Int, blockRows: Int) throws {
        let labels = source.labels
        guard !labels.isEmpty else { throw TrainingError.emptyTrainingSet }
        try checkLabels(labels, classCount: classCount)
        if labels.allSatisfy({ $0 == labels[0] }) { throw TrainingError.singleClass(label: labels[0]) }
        self.source = source
        self.classCount = classCount
        self.blockRows = max(32, blockRows / 32 * 32)
        var accumulator = StandardizerAccumulator(dimension: source.dimension)
        var firstBad: Int?
        try source.forEachBlock(maxRows: self.blockRows) { first, block in
            if firstBad == nil, let row = firstNonFiniteRow(Array(block), dimension: source.dimension) { firstBad = first + row }
            accumulator.add(block.baseAddress!, rows: block.count / source.dimension)
        }
        if let firstBad { throw TrainingError.nonFiniteFeature(row: firstBad) }
        standardizer = accumulator.standardizer
        var counts = [Int](repeating: 0, count: classCount)
        for label in labels { counts[Int(label)] += 1 }
        weights = sampleWeights(labels: labels, weighting: config.classWeights, classCounts: counts)
    }

    /// The objective at penalty `l2` over every row, one streamed pass per call.
    ///
    /// Blocks arrive raw; the fused pass standardizes them a cache-sized slice at a time, so a block
    /// is read from memory once (widened by the source) instead of also being written out standardized
    /// and read back.
    func evaluator(layout: ParameterLayout, l2: Float) -> LBFGS.Evaluate {
        let objective = Objective(layout: layout, l2: 0)
        let workspace = Workspace()
        let data = self
        let d = layout.dimension
        let rows = source.rowCount
        let inverseStd = standardizer.std.map { 1 / $0 }
        var scratch = [Float](repeating: 0, count: objective.sliceRows * d)
        var blockGradient = [Float](repeating: 0, count: layout.parameterCount)
        return { parameters, gradient in
            var lossSum = 0.0, correct = 0
            for index in gradient.indices { gradient[index] = 0 }
            let labels = data.source.labels
            try! data.source.forEachBlock(maxRows: data.blockRows) { first, block in
                let count = block.count / d
                let part = parameters.withUnsafeBufferPointer { p in
                    labels.withUnsafeBufferPointer { l in
                        blockGradient.withUnsafeMutableBufferPointer { g in
                            data.weights.withUnsafeBufferPointerOrNil { w in
                                data.standardizer.mean.withUnsafeBufferPointer { mean in
                                    inverseStd.withUnsafeBufferPointer { inverseStd in
                                        scratch.withUnsafeMutableBufferPointer { scratch in
                                            let standardizing = Standardizing(mean: mean.baseAddress!, inverseStd: inverseStd.baseAddress!,
                                                                              scratch: scratch.baseAddress!)
                                            return objective.accumulate(parameters: p.baseAddress!, x: block.baseAddress!,
                                                                        labels: l.baseAddress! + first, sampleWeights: w.map { $0 + first },
                                                                        rows: count, scale: 1 / Float(rows), standardizing: standardizing,
                                                                        gradient: g.baseAddress!, workspace: workspace)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                lossSum += part.lossSum
                correct += part.correct
                gradient.addScaled(1, blockGradient)
            }
            // The penalty once, on weights only.
            var weightNorm = 0.0
            for range in [layout.layer1Weights, layout.layer2Weights] where !range.isEmpty {
                for index in range {
                    gradient[index] += l2 * parameters[index]
                    weightNorm += Double(parameters[index]) * Double(parameters[index])
                }
            }
            let dataLoss = lossSum / Double(rows)
            return ObjectiveValue(objective: dataLoss + 0.5 * Double(l2) * weightNorm, dataLoss: dataLoss, correct: correct)
        }
    }
}

extension Standardizer {
    /// Writes the standardized `block` into the front of `destination` (which must be large enough).
    func standardize(_ block: UnsafeBufferPointer<Float>, into destination: inout [Float]) {
        let d = dimension
        let scale = std.map { 1 / $0 }
        destination.withUnsafeMutableBufferPointer { out in
            mean.withUnsafeBufferPointer { mean in
                scale.withUnsafeBufferPointer { scale in
                    var base = 0
                    while base < block.count {
                        for column in 0..<d { out[base + column] = (block[base + column] - mean[column]) * scale[column] }
                        base += d
                    }
                }
            }
        }
    }
}
