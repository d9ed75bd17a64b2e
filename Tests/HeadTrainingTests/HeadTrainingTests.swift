import Foundation
import XCTest
@testable import HeadTraining

/// Gaussian blobs: class c is centred at `separation` · e_c (in the first `classes` dimensions).
func blobs(classes: Int, perClass: Int, dimension: Int, separation: Float, seed: UInt64) -> LabeledFeatures {
    var rng = SplitMix64(seed: seed)
    var features: [Float] = []
    var labels: [Int32] = []
    for row in 0..<(classes * perClass) {
        let label = row % classes
        for column in 0..<dimension {
            features.append(rng.nextGaussian() + (column == label ? separation : 0) + 3)
        }
        labels.append(Int32(label))
    }
    return LabeledFeatures(features: features, labels: labels, dimension: dimension)
}

final class GradientTests: XCTestCase {
    /// Central differences of the objective against the analytic gradient, in a few random coordinates per layer.
    func checkGradient(layout: ParameterLayout, l2: Float, weighted: Bool) {
        let data = blobs(classes: layout.classCount, perClass: 4, dimension: layout.dimension, separation: 1, seed: 7)
        var rng = SplitMix64(seed: 3)
        var parameters = (0..<layout.parameterCount).map { _ in 0.3 * rng.nextGaussian() }
        let weights: [Float]? = weighted ? data.labels.map { 0.5 + Float($0) } : nil
        let objective = Objective(layout: layout, l2: l2)
        let workspace = Workspace()
        func evaluate(_ p: [Float], gradient: inout [Float]?) -> Double {
            p.withUnsafeBufferPointer { p in
                data.features.withUnsafeBufferPointer { x in
                    data.labels.withUnsafeBufferPointer { l in
                        weights.withUnsafeBufferPointerOrNil { w in
                            if gradient == nil {
                                return objective.evaluate(parameters: p.baseAddress!, x: x.baseAddress!, labels: l.baseAddress!,
                                                          sampleWeights: w, rows: data.count, gradient: nil, workspace: workspace).objective
                            }
                            return gradient!.withUnsafeMutableBufferPointer { g in
                                objective.evaluate(parameters: p.baseAddress!, x: x.baseAddress!, labels: l.baseAddress!,
                                                   sampleWeights: w, rows: data.count, gradient: g.baseAddress!, workspace: workspace).objective
                            }
                        }
                    }
                }
            }
        }
        var gradient: [Float]? = [Float](repeating: 0, count: layout.parameterCount)
        _ = evaluate(parameters, gradient: &gradient)
        var none: [Float]? = nil
        let h: Float = 1e-2
        var indices = Array(0..<layout.parameterCount)
        rng.shuffle(&indices)
        for index in indices.prefix(60) + [layout.layer1Bias.lowerBound, layout.parameterCount - 1] {
            let original = parameters[index]
            parameters[index] = original + h
            let plus = evaluate(parameters, gradient: &none)
            parameters[index] = original - h
            let minus = evaluate(parameters, gradient: &none)
            parameters[index] = original
            let numeric = (plus - minus) / Double(2 * h)
            let analytic = Double(gradient![index])
            XCTAssertEqual(analytic, numeric, accuracy: 2e-3 * max(1, abs(numeric)), "parameter \(index)")
        }
    }

    func testSoftmaxGradientMatchesFiniteDifferences() {
        checkGradient(layout: ParameterLayout(kind: .softmaxRegression, dimension: 6, hiddenUnits: 0, classCount: 4), l2: 0.1, weighted: false)
        checkGradient(layout: ParameterLayout(kind: .softmaxRegression, dimension: 6, hiddenUnits: 0, classCount: 4), l2: 0.05, weighted: true)
    }

    func testRowPartitionedEvaluationMatchesSingleThreaded() {
        let layout = ParameterLayout(kind: .softmaxRegression, dimension: 40, hiddenUnits: 0, classCount: 5)
        let data = blobs(classes: 5, perClass: 100, dimension: 40, separation: 1, seed: 17)
        var rng = SplitMix64(seed: 4)
        let parameters = (0..<layout.parameterCount).map { _ in 0.1 * rng.nextGaussian() }
        func run(threads: Int) -> (Double, [Float]) {
            var gradient = [Float](repeating: 0, count: layout.parameterCount)
            let value = parameters.withUnsafeBufferPointer { p in
                data.features.withUnsafeBufferPointer { x in
                    data.labels.withUnsafeBufferPointer { l in
                        gradient.withUnsafeMutableBufferPointer { g in
                            Objective(layout: layout, l2: 0.01, threads: threads)
                                .evaluate(parameters: p.baseAddress!, x: x.baseAddress!, labels: l.baseAddress!, sampleWeights: nil,
                                          rows: data.count, gradient: g.baseAddress!, workspace: Workspace())
                        }
                    }
                }
            }
            return (value.objective, gradient)
        }
        let single = run(threads: 1), split = run(threads: 2), splitAgain = run(threads: 2)
        // Logits are float sums whose blocking follows the partition, so the loss agrees to float precision, not to 1e-9.
        XCTAssertEqual(single.0, split.0, accuracy: 1e-6)
        for (a, b) in zip(single.1, split.1) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        XCTAssertEqual(split.1, splitAgain.1, "partial gradients must be summed in a fixed order")
        XCTAssertEqual(split.0, splitAgain.0)
    }

    func testMLPGradientMatchesFiniteDifferences() {
        // ReLU kinks make finite differences wrong only where a unit flips; with h = 1e-2 and
        // random weights that is rare enough across 62 coordinates for this fixed seed.
        checkGradient(layout: ParameterLayout(kind: .mlp, dimension: 5, hiddenUnits: 7, classCount: 3), l2: 0.1, weighted: false)
        checkGradient(layout: ParameterLayout(kind: .mlp, dimension: 5, hiddenUnits: 7, classCount: 3), l2: 0.02, weighted: true)
    }
}

final class OptimizerTests: XCTestCase {
    func testLBFGSAndLongAdamReachTheSameObjective() throws {
        let data = blobs(classes: 3, perClass: 40, dimension: 8, separation: 1.2, seed: 11)
        var config = TrainingConfig()
        config.l2 = 0.05
        config.gradientTolerance = 1e-6
        config.earlyStoppingPatience = nil
        var lbfgsLoss = 0.0
        let lbfgsModel = try HeadTrainer(config: config).fit(train: data) { lbfgsLoss = $0.trainLoss }

        config.optimizer = .adam
        config.maxEpochs = 3000
        config.batchSize = data.count   // full batch, so Adam converges to the optimum rather than a noise ball
        config.learningRate = 0.01
        let adamModel = try HeadTrainer(config: config).fit(train: data)

        func objective(_ model: HeadModel) throws -> Double {
            let loss = try model.evaluate(on: data).loss
            return loss + 0.5 * Double(config.l2) * model.layer1Weights.reduce(0) { $0 + Double($1 * $1) }
        }
        XCTAssertEqual(try objective(lbfgsModel), try objective(adamModel), accuracy: 1e-4)
        XCTAssertEqual(try lbfgsModel.evaluate(on: data).loss, lbfgsLoss, accuracy: 1e-5)
    }

    func testSeparableDataIsLearnedPerfectly() throws {
        let data = blobs(classes: 4, perClass: 30, dimension: 10, separation: 12, seed: 5)
        let test = blobs(classes: 4, perClass: 10, dimension: 10, separation: 12, seed: 6)
        let softmax = try HeadTrainer().fit(train: data)
        XCTAssertEqual(try softmax.evaluate(on: data).top1, 1)
        XCTAssertEqual(try softmax.evaluate(on: test).top1, 1)

        var config = TrainingConfig()
        config.kind = .mlp
        config.hiddenUnits = 16
        config.maxEpochs = 60
        config.batchSize = 32
        config.learningRate = 0.01
        let mlp = try HeadTrainer(config: config).fit(train: data)
        let evaluation = try mlp.evaluate(on: test)
        XCTAssertEqual(evaluation.top1, 1)
        XCTAssertEqual(evaluation.confusion.map { $0.reduce(0, +) }, [10, 10, 10, 10])
        XCTAssertEqual(evaluation.perClassRecall, [1, 1, 1, 1])
    }

    func testBalancedClassWeightsMoveTheDecisionTowardTheRareClass() throws {
        // 90 rows of class 0 and 10 of class 1, overlapping: unweighted, the boundary favours class 0.
        var rng = SplitMix64(seed: 9)
        var features: [Float] = [], labels: [Int32] = []
        for row in 0..<100 {
            let label: Int32 = row < 90 ? 0 : 1
            features.append(rng.nextGaussian() + (label == 1 ? 1 : 0))
            labels.append(label)
        }
        let data = LabeledFeatures(features: features, labels: labels, dimension: 1)
        var config = TrainingConfig()
        config.l2 = 1e-3
        let plain = try HeadTrainer(config: config).fit(train: data)
        config.classWeights = .balanced
        let balanced = try HeadTrainer(config: config).fit(train: data)
        let probe: [Float] = stride(from: -1, through: 2, by: 0.25).map { Float($0) }
        let plainRare = try plain.predict(probe, count: probe.count).filter { $0 == 1 }.count
        let balancedRare = try balanced.predict(probe, count: probe.count).filter { $0 == 1 }.count
        XCTAssertGreaterThan(balancedRare, plainRare)
        let recallPlain = try plain.evaluate(on: data).perClassRecall[1]
        let recallBalanced = try balanced.evaluate(on: data).perClassRecall[1]
        XCTAssertGreaterThan(recallBalanced, recallPlain)
    }

    func testEarlyStoppingStopsAndReturnsTheBestEpoch() throws {
        // Noise labels: validation loss can only get worse once the MLP starts memorising.
        let train = blobs(classes: 3, perClass: 30, dimension: 20, separation: 0, seed: 1)
        let validation = blobs(classes: 3, perClass: 30, dimension: 20, separation: 0, seed: 2)
        var config = TrainingConfig()
        config.kind = .mlp
        config.hiddenUnits = 64
        config.l2 = 0
        config.learningRate = 0.01
        config.batchSize = 16
        config.maxEpochs = 500
        config.earlyStoppingPatience = 3
        var history: [EpochMetrics] = []
        let model = try HeadTrainer(config: config).fit(train: train, validation: validation) { history.append($0) }
        XCTAssertLessThan(history.count, 500)
        let best = history.min { $0.validationLoss! < $1.validationLoss! }!
        XCTAssertEqual(history.count, best.epoch + 3)
        XCTAssertEqual(try model.evaluate(on: validation).loss, best.validationLoss!, accuracy: 1e-5)
    }

    func testKeptMLPEpochIsTheBestValidationEpochNotTheLast() throws {
        // Few rows, many features, no penalty: the MLP memorises and validation loss turns upward.
        let train = blobs(classes: 4, perClass: 10, dimension: 60, separation: 0.8, seed: 5)
        let validation = blobs(classes: 4, perClass: 40, dimension: 60, separation: 0.8, seed: 6)
        var config = TrainingConfig()
        config.kind = .mlp
        config.hiddenUnits = 32
        config.l2 = 0
        config.learningRate = 0.01
        config.batchSize = 8
        config.earlyStoppingPatience = 4
        var history: [EpochMetrics] = []
        let trainer = HeadTrainer(config: config)
        let model = try trainer.fit(train: train, validation: validation) { history.append($0) }
        let best = history.min { $0.validationLoss! < $1.validationLoss! }!
        XCTAssertEqual(trainer.keptEpoch, best.epoch)
        XCTAssertNotEqual(trainer.keptEpoch, history.last!.epoch, "validation loss never rose, so this test shows nothing")
        XCTAssertEqual(try model.evaluate(on: validation).loss, best.validationLoss!, accuracy: 1e-5)
    }
}

final class CheckpointTests: XCTestCase {
    struct Interrupted: Error {}

    func temporaryURL() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("headtraining-\(UUID().uuidString).json")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func checkResume(_ config: TrainingConfig, interruptAfter: Int) throws {
        let train = blobs(classes: 3, perClass: 50, dimension: 12, separation: 1, seed: 21)
        let validation = blobs(classes: 3, perClass: 20, dimension: 12, separation: 1, seed: 22)
        var uninterruptedHistory: [EpochMetrics] = []
        let uninterrupted = try HeadTrainer(config: config).fit(train: train, validation: validation) { uninterruptedHistory.append($0) }

        let url = temporaryURL()
        // Throwing from the callback stands in for a kill: the epoch's checkpoint is already on disk.
        XCTAssertThrowsError(try HeadTrainer(config: config).fit(train: train, validation: validation, checkpoint: url) {
            if $0.epoch == interruptAfter { throw Interrupted() }
        })
        var resumedEpochs: [Int] = []
        let resumed = try HeadTrainer(config: config).fit(train: train, validation: validation, checkpoint: url) { resumedEpochs.append($0.epoch) }
        XCTAssertEqual(resumedEpochs.first, interruptAfter + 1)
        XCTAssertEqual(resumedEpochs.last, uninterruptedHistory.last?.epoch)
        XCTAssertEqual(resumed, uninterrupted)
        // A finished checkpoint returns the model without training again.
        var again = 0
        XCTAssertEqual(try HeadTrainer(config: config).fit(train: train, validation: validation, checkpoint: url) { _ in again += 1 }, uninterrupted)
        XCTAssertEqual(again, 0)
    }

    func testAdamResumeMatchesUninterruptedRun() throws {
        var config = TrainingConfig()
        config.kind = .mlp
        config.hiddenUnits = 8
        config.maxEpochs = 12
        config.batchSize = 32
        config.learningRate = 0.01
        config.seed = 42
        config.earlyStoppingPatience = 100
        try checkResume(config, interruptAfter: 5)
    }

    func testLBFGSResumeMatchesUninterruptedRun() throws {
        var config = TrainingConfig()
        config.l2 = 1e-3
        config.maxIterations = 15
        config.earlyStoppingPatience = nil
        try checkResume(config, interruptAfter: 6)
    }

    func testCheckpointFromAnotherRunIsRefused() throws {
        let train = blobs(classes: 3, perClass: 10, dimension: 4, separation: 2, seed: 1)
        let url = temporaryURL()
        var config = TrainingConfig()
        config.maxIterations = 3
        _ = try HeadTrainer(config: config).fit(train: train, checkpoint: url)
        config.l2 = 0.5
        XCTAssertThrowsError(try HeadTrainer(config: config).fit(train: train, checkpoint: url)) { error in
            guard case TrainingError.checkpointMismatch(let reason) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("l2"), reason)
        }
    }
}

final class BadInputTests: XCTestCase {
    func assertError(_ expected: TrainingError, _ body: () throws -> Void, line: UInt = #line) {
        XCTAssertThrowsError(try body(), line: line) { error in
            XCTAssertEqual(error as? TrainingError, expected, line: line)
            XCTAssertFalse("\(error)".isEmpty, line: line)
        }
    }

    func testBadTrainingInputs() throws {
        let trainer = HeadTrainer()
        assertError(.emptyTrainingSet) { _ = try trainer.fit(train: LabeledFeatures(features: [], labels: [], dimension: 3)) }
        assertError(.singleClass(label: 2)) {
            _ = try trainer.fit(train: LabeledFeatures(features: [1, 2, 3, 4], labels: [2, 2], dimension: 2))
        }
        assertError(.nonFiniteFeature(row: 1)) {
            _ = try trainer.fit(train: LabeledFeatures(features: [1, 2, .nan, 4], labels: [0, 1], dimension: 2))
        }
        assertError(.nonFiniteFeature(row: 0)) {
            _ = try trainer.fit(train: LabeledFeatures(features: [.infinity, 2, 3, 4], labels: [0, 1], dimension: 2))
        }
        assertError(.malformedFeatures("3 values is not 2 rows × 2")) {
            _ = try trainer.fit(train: LabeledFeatures(features: [1, 2, 3], labels: [0, 1], dimension: 2))
        }
        assertError(.invalidLabel(row: 1, label: -1, classCount: 0)) {
            _ = try trainer.fit(train: LabeledFeatures(features: [1, 2, 3, 4], labels: [0, -1], dimension: 2))
        }
        let train = blobs(classes: 2, perClass: 5, dimension: 3, separation: 2, seed: 1)
        assertError(.dimensionMismatch(expected: 3, actual: 2)) {
            _ = try trainer.fit(train: train, validation: LabeledFeatures(features: [1, 2], labels: [0], dimension: 2))
        }
        assertError(.nonFiniteFeature(row: 0)) { _ = try Standardizer.fit(LabeledFeatures(features: [.nan], labels: [0], dimension: 1)) }
        var config = TrainingConfig()
        config.l2 = -1
        assertError(.invalidConfiguration("l2 must be finite and ≥ 0, got -1.0")) { _ = try HeadTrainer(config: config).fit(train: train) }
    }

    func testModelRefusesMismatchedOrNonFiniteFeatures() throws {
        let train = blobs(classes: 2, perClass: 5, dimension: 3, separation: 2, seed: 1)
        let model = try HeadTrainer().fit(train: train)
        assertError(.dimensionMismatch(expected: 3, actual: 4)) { _ = try model.logits([Float](repeating: 0, count: 8), count: 2) }
        assertError(.nonFiniteFeature(row: 1)) { _ = try model.probabilities([0, 0, 0, 0, .nan, 0], count: 2) }
        assertError(.dimensionMismatch(expected: 3, actual: 4)) {
            _ = try model.evaluate(on: LabeledFeatures(features: [Float](repeating: 0, count: 4), labels: [0], dimension: 4))
        }
        let probabilities = try model.probabilities(Array(train.features[0..<6]), count: 2)
        XCTAssertEqual(probabilities[0] + probabilities[1], 1, accuracy: 1e-6)
    }
}

final class OnlineAndSweepTests: XCTestCase {
    func testPartialFitLearnsFromClassSortedChunks() throws {
        let data = blobs(classes: 3, perClass: 60, dimension: 6, separation: 4, seed: 31)
        let sorted = data.rows(Array(0..<data.count).sorted { (data.labels[$0], $0) < (data.labels[$1], $1) })
        var config = TrainingConfig()
        config.classCount = 3
        config.learningRate = 0.05
        config.batchSize = 16
        let trainer = HeadTrainer(config: config)
        XCTAssertNil(trainer.onlineModel)
        for _ in 0..<5 {
            for first in stride(from: 0, to: sorted.count, by: 45) {
                try trainer.partialFit(sorted.rows(Array(first..<min(first + 45, sorted.count))))
            }
        }
        let model = try XCTUnwrap(trainer.onlineModel)
        XCTAssertGreaterThan(try model.evaluate(on: data).top1, 0.95)
        // Running statistics converge to the full-data standardizer.
        let full = try Standardizer.fit(data)
        for (a, b) in zip(model.standardizer.mean, full.mean) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        for (a, b) in zip(model.standardizer.std, full.std) { XCTAssertEqual(a, b, accuracy: 1e-4) }

        XCTAssertThrowsError(try HeadTrainer().partialFit(data)) { error in
            guard case TrainingError.invalidConfiguration = error else { return XCTFail("\(error)") }
        }
    }

    func testRestandardizationPreservesTheOnlineModel() throws {
        var state = OnlineState(config: { var c = TrainingConfig(); c.kind = .mlp; c.hiddenUnits = 5; return c }(),
                                dimension: 4, classCount: 3)
        let first = blobs(classes: 3, perClass: 5, dimension: 4, separation: 1, seed: 1)
        state.absorb(first)
        state.passes = 1
        let before = try HeadModel(layout: state.layout, parameters: state.parameters, standardizer: state.standardizer)
            .logits(first.features, count: first.count)
        var second = blobs(classes: 3, perClass: 5, dimension: 4, separation: 1, seed: 2)
        second.features = second.features.map { $0 * 3 + 2 }
        state.absorb(second)
        let after = try HeadModel(layout: state.layout, parameters: state.parameters, standardizer: state.standardizer)
            .logits(first.features, count: first.count)
        for (a, b) in zip(before, after) { XCTAssertEqual(a, b, accuracy: 1e-4) }
    }

    func testSweepKeepsTheBestValidationModel() throws {
        let train = blobs(classes: 3, perClass: 20, dimension: 30, separation: 1, seed: 41)
        let validation = blobs(classes: 3, perClass: 30, dimension: 30, separation: 1, seed: 42)
        var config = TrainingConfig()
        config.earlyStoppingPatience = nil
        let (best, results) = try HeadTrainer.sweepL2([1e-5, 1e-2, 1e-1], config: config, train: train, validation: validation)
        XCTAssertEqual(results.map(\.l2), [1e-5, 1e-2, 1e-1])
        let top = results.map(\.validation.top1).max()!
        XCTAssertEqual(try best.evaluate(on: validation).top1, top)
    }

    func testL2WalkChoosesAStrongerPenaltyForATinyNoisySetThanForALargeCleanOne() throws {
        var config = TrainingConfig()
        config.refitOnTrainAndValidation = false
        func chosen(_ train: LabeledFeatures, _ validation: LabeledFeatures) throws -> L2Selection {
            let selection = try HeadTrainer(config: config).fitSelectingL2(train: train, validation: validation)
            let best = selection.sweep.first { $0.l2 == selection.l2 }!
            // The kept value is the best of those tried: top-1 first, then loss.
            for trial in selection.sweep {
                XCTAssertTrue(trial.validation.top1 < best.validation.top1
                              || (trial.validation.top1 == best.validation.top1 && trial.validation.loss >= best.validation.loss))
            }
            XCTAssertEqual(selection.validation, try selection.model.evaluate(on: validation))
            return selection
        }
        let noisy = try chosen(blobs(classes: 3, perClass: 4, dimension: 40, separation: 0.7, seed: 51),
                               blobs(classes: 3, perClass: 20, dimension: 40, separation: 0.7, seed: 52))
        let clean = try chosen(blobs(classes: 3, perClass: 400, dimension: 10, separation: 3, seed: 53),
                               blobs(classes: 3, perClass: 100, dimension: 10, separation: 3, seed: 54))
        XCTAssertGreaterThan(noisy.l2, clean.l2 * 10, "noisy sweep \(noisy.sweep.map(\.l2)), clean \(clean.sweep.map(\.l2))")
    }

    func testL2WalkIsWarmStartedAndRefitsOnTrainAndValidation() throws {
        let train = blobs(classes: 4, perClass: 100, dimension: 30, separation: 1.2, seed: 61)
        let validation = blobs(classes: 4, perClass: 40, dimension: 30, separation: 1.2, seed: 62)
        let selection = try HeadTrainer().fitSelectingL2(train: train, validation: validation)
        // The refit minimises the objective on both sets at the same C: a cold fit there agrees with it.
        var all = train
        all.features += validation.features
        all.labels += validation.labels
        all.count += validation.count
        XCTAssertEqual(selection.refitL2!, selection.l2 * Float(train.count) / Float(all.count), accuracy: 1e-9)
        var cold = TrainingConfig()
        cold.l2 = selection.refitL2!
        cold.earlyStoppingPatience = nil
        let reference = try HeadTrainer(config: cold).fit(train: all)
        let a = try selection.model.probabilities(all.features, count: all.count)
        let b = try reference.probabilities(all.features, count: all.count)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 2e-3) }
        // Warm starts: the weakest penalties, reached last, do not each cost a cold fit's iterations.
        var coldWeak = TrainingConfig()
        coldWeak.l2 = selection.sweep.last!.l2
        var coldIterations = 0
        _ = try HeadTrainer(config: coldWeak).fit(train: train) { coldIterations = $0.epoch }
        XCTAssertLessThan(selection.sweep.last!.epochs, coldIterations)
    }

    func testStreamedWalkMatchesTheInMemoryWalk() throws {
        let train = blobs(classes: 5, perClass: 90, dimension: 24, separation: 1, seed: 71)
        let validation = blobs(classes: 5, perClass: 30, dimension: 24, separation: 1, seed: 72)
        let inMemory = try HeadTrainer().fitSelectingL2(train: train, validation: validation)
        // A budget of one byte: every evaluation streams 32-row blocks.
        let streamed = try HeadTrainer().fitSelectingL2(train: train, validation: validation, memoryBudget: 1)
        XCTAssertEqual(streamed.l2, inMemory.l2)
        XCTAssertEqual(streamed.sweep.map(\.l2), inMemory.sweep.map(\.l2))
        XCTAssertEqual(streamed.selectedModel.standardizer, inMemory.selectedModel.standardizer, "block-wise statistics differ")
        for (x, y) in zip(streamed.model.standardizer.std, inMemory.model.standardizer.std) { XCTAssertEqual(x, y, accuracy: 1e-5) }
        for (a, b) in zip(streamed.sweep, inMemory.sweep) {
            XCTAssertEqual(a.validation.top1, b.validation.top1)
            XCTAssertEqual(a.validation.loss, b.validation.loss, accuracy: 1e-3)
        }
        let a = try streamed.model.probabilities(validation.features, count: validation.count)
        let b = try inMemory.model.probabilities(validation.features, count: validation.count)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-3) }
        XCTAssertEqual(try streamed.model.predict(validation.features, count: validation.count),
                       try inMemory.model.predict(validation.features, count: validation.count))
    }

    func testModelAndMetadataRoundTrip() throws {
        let train = blobs(classes: 3, perClass: 5, dimension: 3, separation: 2, seed: 1)
        let model = try HeadTrainer().fit(train: train)
        let decoded = try JSONDecoder().decode(HeadModel.self, from: JSONEncoder().encode(model))
        XCTAssertEqual(try decoded.predict(train.features, count: train.count), try model.predict(train.features, count: train.count))

        let csv = "row,index,key,label,label_name,split\n1,5,\"a,b.png\",2,two,val\n0,4,c.png,1,one,val\n"
        let set = try labeledFeatures(features: [1, 2, 3, 4], shape: [2, 2], metadataCSV: csv)
        XCTAssertEqual(set.labels, [1, 2])
        XCTAssertThrowsError(try labeledFeatures(features: [1, 2, 3, 4], shape: [2, 2], metadataCSV: "row,label\n0,1\n"))
    }
}
