import Extraction
import FeatureStore
import Foundation
import HeadExport
import HeadTraining
import ImageInput

/// What `TrainingJob.run` wrote and measured.
public struct TrainingOutcome {
    public var model: HeadModel
    public var evaluation: Evaluation
    /// Whether the evaluation is on held-out data (false: no validation rows, evaluated on train).
    public var evaluatedOnValidation: Bool
    public var epochs: [EpochMetrics]
    public var sweep: [L2SweepResult]
    /// The L2 chosen on validation, when it was chosen.
    public var chosenL2: Float?
    /// The epoch whose weights were kept, for epoch-based fits.
    public var keptEpoch: Int?
    public var directory: URL
}

/// Trains a head on a store and writes a complete model folder: the head as safetensors, the
/// backbone with the head as one ONNX classifier, the predictor manifest, and JSON/HTML reports.
public enum TrainingJob {
    /// Extraction facts to put in the report.
    public struct Extraction {
        public var throughput: [String: [ReportData.ThroughputSample]]
        public var deadLetters: [ReportData.DeadLetter]
        public init(throughput: [String: [ReportData.ThroughputSample]] = [:], deadLetters: [ReportData.DeadLetter] = []) {
            self.throughput = throughput
            self.deadLetters = deadLetters
        }
    }

    /// Trains, evaluates and writes the model folder into `directory`.
    ///
    /// The penalty: one value in `l2Values` forces it. Otherwise softmax regression with validation
    /// rows chooses it on validation (`HeadTrainer.fitSelectingL2` over `l2Values`, or the default grid
    /// when empty) and ships the refit on training + validation rows; the evaluation reported is the
    /// chosen model's on validation, trained without those rows. An MLP trains at `config.l2` (or sweeps
    /// several given values, cold) and keeps its best validation epoch. A single fit resumes from
    /// `directory/checkpoint.json` after a crash; the L2 walk starts over (it costs a few fits).
    ///
    /// Feature rows are read into memory when they fit `memoryBudget` bytes (default
    /// `MemoryBudget.defaultBytes`); beyond it softmax regression streams them from the store on every
    /// L-BFGS pass, and an MLP streams its Adam epochs through a shuffle buffer (`HeadTrainer.fitStreamed`,
    /// without checkpoints); an MLP L2 sweep, or a fixed-L2 softmax fit without validation rows, needs them in memory.
    public static func run(data: TrainingData, config: TrainingConfig, l2Values: [Float] = [], backbone: ModelConfig,
                           directory: URL, extraction: Extraction = Extraction(), memoryBudget: Int? = nil,
                           log: (String) -> Void = { _ in }) throws -> TrainingOutcome {
        let budget = memoryBudget ?? MemoryBudget.defaultBytes
        let rowBytes = 8 * data.train.dimension * (data.train.rowCount + (data.validation?.rowCount ?? 0))
        let fits = rowBytes <= budget
        if !fits {
            log(String(format: "the features need %.0f MB as f32 but the memory budget is %.0f MB: streaming them from the store on every pass",
                       Double(rowBytes) / 1e6, Double(budget) / 1e6))
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var config = config
        config.classCount = data.classNames.count
        var epochs: [EpochMetrics] = []
        var sweep: [L2SweepResult] = []
        var chosenL2: Float?
        var keptEpoch: Int?
        var heldOut: Evaluation?
        var refitNote: String?
        var passes: Int?
        var streamed = false
        let started = Date()
        let model: HeadModel
        let streamFixedL2 = !fits && config.kind == .softmaxRegression && l2Values.count == 1 && data.validation != nil
        if (l2Values.count != 1 || streamFixedL2), config.kind == .softmaxRegression, let validation = data.validation {
            if !l2Values.isEmpty { config.l2Grid = l2Values }
            if streamFixedL2 { config.refitOnTrainAndValidation = false }
            log("choosing L2 on \(validation.rowCount) validation rows, from \(config.l2Grid.count) values strongest first")
            let selection = try HeadTrainer(config: config).fitSelectingL2(train: data.train, validation: validation,
                                                                           memoryBudget: budget) { trial in
                log(String(format: "L2 %g: validation top-1 %.4f, loss %.4f after %d iterations", trial.l2, trial.validation.top1,
                           trial.validation.loss, trial.epochs))
            }
            sweep = selection.sweep
            chosenL2 = selection.l2
            passes = selection.passes
            streamed = selection.streamed
            heldOut = selection.validation
            model = selection.model
            if let refitL2 = selection.refitL2 {
                refitNote = String(format: "refit on training + validation rows at L2 %g (the same C)", refitL2)
                log(String(format: "kept L2 %g; ", selection.l2) + refitNote!)
            } else {
                log(String(format: "kept L2 %g", selection.l2))
            }
        } else if !fits && config.kind == .mlp && l2Values.count <= 1 {
            if let l2 = l2Values.first { config.l2 = l2 }
            let blockRows = max(32, min(4096, budget / (16 * data.train.dimension)))
            let bufferRows = min(data.train.rowCount, HeadTrainer.shuffleBufferRows(
                memoryBudget: budget, dimension: data.train.dimension, batchSize: config.batchSize, blockRows: blockRows))
            log("training the MLP by Adam epochs streamed from the store through a shuffle buffer of \(bufferRows) rows")
            let trainer = HeadTrainer(config: config)
            model = try trainer.fitStreamed(train: data.train, validation: data.validation, memoryBudget: budget) { metrics in
                epochs.append(metrics)
                log(String(format: "epoch %d: train loss %.4f, accuracy %.4f", metrics.epoch, metrics.trainLoss, metrics.trainAccuracy)
                    + (metrics.validationLoss.map { String(format: "; validation loss %.4f, accuracy %.4f", $0, metrics.validationAccuracy ?? 0) } ?? ""))
            }
            streamed = true
            keptEpoch = trainer.keptEpoch
            if let keptEpoch, let last = epochs.last?.epoch, keptEpoch != last {
                log("kept the weights of epoch \(keptEpoch), the lowest validation loss (trained to epoch \(last))")
            }
        } else if !fits {
            throw TrainingError.invalidConfiguration(String(
                format: "the features need %.0f MB in memory (budget %.0f MB): beyond the budget softmax regression trains "
                    + "streaming only with validation rows, and an MLP only at one L2; raise --memory-budget",
                Double(rowBytes) / 1e6, Double(budget) / 1e6))
        } else if l2Values.count > 1, let validation = data.validation {
            let result = try HeadTrainer.sweepL2(l2Values, config: config, train: data.train.materialized(),
                                                 validation: validation.materialized())
            sweep = result.results
            for trial in sweep {
                log(String(format: "L2 %g: validation top-1 %.4f, loss %.4f", trial.l2, trial.validation.top1, trial.validation.loss))
            }
            chosenL2 = sweep.max { ($0.validation.top1, -$0.validation.loss) < ($1.validation.top1, -$1.validation.loss) }?.l2
            model = result.best
        } else {
            if l2Values.count > 1 { throw TrainingError.invalidConfiguration("an L2 sweep needs validation rows to choose by") }
            if let l2 = l2Values.first { config.l2 = l2 } else if data.validation == nil {
                log(String(format: "no validation rows to choose L2 by; training at L2 %g", config.l2))
            }
            let checkpoint = directory.appendingPathComponent(TrainedModelFiles.checkpoint)
            if FileManager.default.fileExists(atPath: checkpoint.path) { log("resuming from \(checkpoint.path)") }
            let trainer = HeadTrainer(config: config)
            model = try trainer.fit(train: data.train.materialized(), validation: data.validation?.materialized(),
                                    checkpoint: checkpoint) { metrics in
                epochs.append(metrics)
                log(String(format: "epoch %d: train loss %.4f, accuracy %.4f", metrics.epoch, metrics.trainLoss, metrics.trainAccuracy)
                    + (metrics.validationLoss.map { String(format: "; validation loss %.4f, accuracy %.4f", $0, metrics.validationAccuracy ?? 0) } ?? ""))
            }
            keptEpoch = trainer.keptEpoch
            if let keptEpoch, let last = epochs.last?.epoch, keptEpoch != last {
                log("kept the weights of epoch \(keptEpoch), the lowest validation loss (trained to epoch \(last))")
            }
        }
        let fitSeconds = Date().timeIntervalSince(started)
        let evaluationSet: any TrainingRowSource = data.validation ?? data.train
        let evaluation = try heldOut ?? model.evaluate(source: evaluationSet)
        try ModelFolder.write(model, classNames: data.classNames, backbone: backbone, to: directory)
        if backbone.precision == .int8 { log(ModelFolder.int8Note) }
        var summary: [ReportData.SummaryEntry] = [
            .init(label: "Backbone", value: "\(backbone.name) (\(backbone.featureNode), \(data.train.dimension)-d)"
                  + (backbone.precision == .int8 ? "; " + ModelFolder.int8Note : "")),
            .init(label: "Head", value: model.kind == .mlp ? "MLP, \(model.hiddenUnits ?? 0) hidden units" : "softmax regression"),
            .init(label: "L2", value: String(format: "%g", chosenL2 ?? config.l2)
                  + (sweep.isEmpty ? (l2Values.count == 1 ? " (given)" : " (default)") : " (best on validation)")),
            .init(label: "Training rows", value: String(data.train.rowCount)),
            .init(label: data.validation == nil ? "Evaluated on (no validation rows)" : "Validation rows",
                  value: String(evaluationSet.rowCount)),
        ]
        if let refitNote { summary.append(.init(label: "Shipped model", value: refitNote + "; the evaluation below is of the model trained without the validation rows")) }
        if let keptEpoch { summary.append(.init(label: "Kept epoch", value: "\(keptEpoch) of \(epochs.last?.epoch ?? keptEpoch)")) }
        var report = ReportData(
            title: "FeatureStream: \(backbone.name) head on \(data.train.rowCount) training rows",
            summary: summary,
            epochs: epochs.map { .init(epoch: $0.epoch, trainLoss: $0.trainLoss, trainAccuracy: $0.trainAccuracy,
                                       validationLoss: $0.validationLoss, validationAccuracy: $0.validationAccuracy) },
            evaluation: .init(classNames: data.classNames, top1: evaluation.top1, top5: evaluation.top5,
                              perClassPrecision: evaluation.perClassPrecision, perClassRecall: evaluation.perClassRecall,
                              confusion: evaluation.confusion),
            throughput: extraction.throughput, deadLetters: extraction.deadLetters)
        if !sweep.isEmpty {
            report.l2Sweep = sweep.map { .init(l2: Double($0.l2), validationAccuracy: $0.validation.top1, validationLoss: $0.validation.loss,
                                               trainLoss: $0.trainLoss, iterations: $0.epochs) }
            report.chosenL2 = chosenL2.map(Double.init)
        }
        report.keptEpoch = keptEpoch
        report.fit = .init(seconds: fitSeconds, passes: passes, streamed: streamed, memoryBudget: budget)
        try report.writeJSON(to: directory.appendingPathComponent(TrainedModelFiles.reportJSON))
        try report.writeHTML(to: directory.appendingPathComponent(TrainedModelFiles.reportHTML))
        return TrainingOutcome(model: model, evaluation: evaluation, evaluatedOnValidation: data.validation != nil,
                               epochs: epochs, sweep: sweep, chosenL2: chosenL2, keptEpoch: keptEpoch, directory: directory)
    }
}
