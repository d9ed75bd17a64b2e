import XCTest
@testable import HeadTraining

final class StreamedAdamTests: XCTestCase {
    /// Adam epochs streamed through a shuffle buffer a sixth of the training set reach about the accuracy
    /// of the in-memory fit with the same seed, keep the best validation epoch, and repeat exactly.
    func testStreamedMLPMatchesInMemoryMLP() throws {
        let train = blobs(classes: 4, perClass: 150, dimension: 12, separation: 2.5, seed: 91)
        let validation = blobs(classes: 4, perClass: 60, dimension: 12, separation: 2.5, seed: 92)
        var config = TrainingConfig()
        config.kind = .mlp
        config.hiddenUnits = 16
        config.batchSize = 32
        config.maxEpochs = 30
        config.learningRate = 3e-3
        config.seed = 5
        let budget = 9000
        let bufferRows = HeadTrainer.shuffleBufferRows(memoryBudget: budget, dimension: 12, batchSize: 32, blockRows: 32)
        XCTAssertLessThan(bufferRows, train.count / 4, "the buffer is a small part of the set")
        XCTAssertGreaterThanOrEqual(bufferRows, 32)

        let inMemory = HeadTrainer(config: config)
        let a = try inMemory.fit(train: train, validation: validation)
        var epochs: [EpochMetrics] = []
        let streamedTrainer = HeadTrainer(config: config)
        let b = try streamedTrainer.fitStreamed(train: train, validation: validation, memoryBudget: budget) { epochs.append($0) }
        let accuracy = (try a.evaluate(on: validation).top1, try b.evaluate(on: validation).top1)
        XCTAssertGreaterThan(accuracy.0, 0.85)
        XCTAssertEqual(accuracy.0, accuracy.1, accuracy: 0.04, "in memory \(accuracy.0), streamed \(accuracy.1)")
        // The kept epoch is the one with the lowest validation loss, and its weights are the ones returned.
        let kept = try XCTUnwrap(streamedTrainer.keptEpoch)
        let lowest = epochs.min { $0.validationLoss! < $1.validationLoss! }!
        XCTAssertEqual(kept, lowest.epoch)
        XCTAssertEqual(try b.evaluate(on: validation).loss, lowest.validationLoss!, accuracy: 1e-4)
        // Each epoch used every row once: the reported training accuracy is a count over n rows.
        for epoch in epochs {
            XCTAssertEqual(epoch.trainAccuracy * Double(train.count), (epoch.trainAccuracy * Double(train.count)).rounded(), accuracy: 1e-6)
        }
        // Seeded: the same run again gives the same weights.
        let again = try HeadTrainer(config: config).fitStreamed(train: train, validation: validation, memoryBudget: budget)
        XCTAssertEqual(again.parameters, b.parameters)
    }
}
