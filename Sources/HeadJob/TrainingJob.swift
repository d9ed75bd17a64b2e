import Extraction
import FeatureStore
import Foundation
import HeadExport
import HeadTraining
import ImageInput

/// How rows of a store are split into training and validation.
public enum ValidationSplit: Sendable {
    /// Use the dataset's own split of each item (an ImageFolder's `train/` and `val/`): `splitOf[index]`.
    case dataset(splitOf: [UInt64: String], validation: String)
    /// Hold out this fraction of rows, chosen by a hash of the item's dataset index (stable across runs).
    case fraction(Double)
}

extension ValidationSplit {
    /// Whether the item with this dataset index is held out for validation.
    public func holdsOut(_ index: UInt64) -> Bool {
        switch self {
        case let .dataset(splitOf, name): return splitOf[index] == name
        case .fraction(let fraction): return Double(stableHash(index) % 10_000) / 10_000 < fraction
        }
    }
}

/// The store's rows as training and validation sets.
public struct TrainingData {
    public var train: LabeledFeatures
    public var validation: LabeledFeatures?
    public var classNames: [String]

    /// Reads every row of `store`; labels must be `0..<classNames.count` (class names come from the
    /// store's metadata, or are the label numbers).
    public static func load(_ store: FeatureStore, split: ValidationSplit, classNames: [String]? = nil) throws -> TrainingData {
        let rows = try store.rows()
        guard rows.count > 0 else { throw TrainingError.emptyTrainingSet }
        let names = classNames ?? store.metadata.classNames
            ?? (0...Int(rows.labels.max() ?? 0)).map(String.init)
        var train = (features: [Float](), labels: [Int32]())
        var validation = (features: [Float](), labels: [Int32]())
        train.features.reserveCapacity(rows.count * store.dimension)
        for position in 0..<rows.count {
            let label = rows.labels[position]
            guard label >= 0 else { continue }
            if split.holdsOut(rows.indexes[position]) {
                validation.features += rows.features(ofRow: position)
                validation.labels.append(label)
            } else {
                train.features += rows.features(ofRow: position)
                train.labels.append(label)
            }
        }
        let trainSet = LabeledFeatures(features: train.features, labels: train.labels, dimension: store.dimension)
        let validationSet = validation.labels.isEmpty ? nil
            : LabeledFeatures(features: validation.features, labels: validation.labels, dimension: store.dimension)
        return TrainingData(train: trainSet, validation: validationSet, classNames: names)
    }
}

/// A 64-bit mix of an index (SplitMix64's finaliser), so held-out rows are spread over the dataset.
func stableHash(_ value: UInt64) -> UInt64 {
    var z = value &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// What `TrainingJob.run` wrote and measured.
public struct TrainingOutcome {
    public var model: HeadModel
    public var evaluation: Evaluation
    /// Whether the evaluation is on held-out data (false: no validation rows, evaluated on train).
    public var evaluatedOnValidation: Bool
    public var epochs: [EpochMetrics]
    public var sweep: [L2SweepResult]
    public var directory: URL
}

/// The files a trained model folder holds.
public enum TrainedModelFiles {
    public static let head = "head.safetensors"
    public static let classifier = "classifier.onnx"
    public static let predictor = "predictor.json"
    public static let reportJSON = "report.json"
    public static let reportHTML = "report.html"
    public static let checkpoint = "checkpoint.json"
}

/// What `featstream predict` needs to rebuild the classifier: the backbone config and the head.
public struct PredictorManifest: Codable {
    /// Absolute path of the backbone's model config (`model.json`).
    public var backboneConfig: String
    public var backbone: String
    public var featureNode: String
    public var classNames: [String]
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

    /// Fits (or sweeps `l2Values` and keeps the best on validation), evaluates and exports into `directory`.
    ///
    /// An interrupted fit resumes from `directory/checkpoint.json` (a sweep starts over).
    public static func run(data: TrainingData, config: TrainingConfig, l2Values: [Float] = [], backbone: ModelConfig,
                           directory: URL, extraction: Extraction = Extraction(), log: (String) -> Void = { _ in }) throws -> TrainingOutcome {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var config = config
        config.classCount = data.classNames.count
        var epochs: [EpochMetrics] = []
        var sweep: [L2SweepResult] = []
        let model: HeadModel
        if l2Values.count > 1 {
            guard let validation = data.validation else {
                throw TrainingError.invalidConfiguration("an L2 sweep needs validation rows to choose by")
            }
            let result = try HeadTrainer.sweepL2(l2Values, config: config, train: data.train, validation: validation)
            sweep = result.results
            for trial in sweep {
                log(String(format: "l2 %g: validation top-1 %.4f, loss %.4f", trial.l2, trial.validation.top1, trial.validation.loss))
            }
            model = result.best
        } else {
            if let l2 = l2Values.first { config.l2 = l2 }
            let checkpoint = directory.appendingPathComponent(TrainedModelFiles.checkpoint)
            if FileManager.default.fileExists(atPath: checkpoint.path) { log("resuming from \(checkpoint.path)") }
            model = try HeadTrainer(config: config).fit(
                train: data.train, validation: data.validation,
                checkpoint: checkpoint) { metrics in
                epochs.append(metrics)
                log(String(format: "epoch %d: train loss %.4f acc %.4f", metrics.epoch, metrics.trainLoss, metrics.trainAccuracy)
                    + (metrics.validationLoss.map { String(format: ", validation loss %.4f acc %.4f", $0, metrics.validationAccuracy ?? 0) } ?? ""))
            }
        }
        let evaluationSet = data.validation ?? data.train
        let evaluation = try model.evaluate(on: evaluationSet)
        try export(model, classNames: data.classNames, backbone: backbone, to: directory)
        let report = ReportData(
            title: "FeatureStream: \(backbone.name) head on \(data.train.count) training rows",
            summary: [
                .init(label: "Backbone", value: "\(backbone.name) (\(backbone.featureNode), \(data.train.dimension)-d)"),
                .init(label: "Head", value: model.kind == .mlp ? "MLP, \(model.hiddenUnits ?? 0) hidden units" : "softmax regression"),
                .init(label: "L2", value: String(format: "%g", sweep.isEmpty ? config.l2 : bestL2(sweep))),
                .init(label: "Training rows", value: String(data.train.count)),
                .init(label: data.validation == nil ? "Evaluated on (no validation rows)" : "Validation rows",
                      value: String(evaluationSet.count)),
            ],
            epochs: epochs.map { .init(epoch: $0.epoch, trainLoss: $0.trainLoss, trainAccuracy: $0.trainAccuracy,
                                       validationLoss: $0.validationLoss, validationAccuracy: $0.validationAccuracy) },
            evaluation: .init(classNames: data.classNames, top1: evaluation.top1, top5: evaluation.top5,
                              perClassPrecision: evaluation.perClassPrecision, perClassRecall: evaluation.perClassRecall,
                              confusion: evaluation.confusion),
            throughput: extraction.throughput, deadLetters: extraction.deadLetters)
        try report.writeJSON(to: directory.appendingPathComponent(TrainedModelFiles.reportJSON))
        try report.writeHTML(to: directory.appendingPathComponent(TrainedModelFiles.reportHTML))
        return TrainingOutcome(model: model, evaluation: evaluation, evaluatedOnValidation: data.validation != nil,
                               epochs: epochs, sweep: sweep, directory: directory)
    }

    private static func bestL2(_ sweep: [L2SweepResult]) -> Float {
        sweep.max { ($0.validation.top1, -$0.validation.loss) < ($1.validation.top1, -$1.validation.loss) }?.l2 ?? 0
    }

    /// Writes the head (safetensors), the one-file ONNX classifier and the predictor manifest.
    public static func export(_ model: HeadModel, classNames: [String], backbone: ModelConfig, to directory: URL) throws {
        let head = exportedHead(model, classNames: classNames, backbone: backbone)
        try SafetensorsWriter.write(head, to: directory.appendingPathComponent(TrainedModelFiles.head))
        try ONNXClassifierExporter.export(backboneONNX: URL(fileURLWithPath: backbone.onnxPath), featureNode: backbone.featureNode,
                                          head: head, to: directory.appendingPathComponent(TrainedModelFiles.classifier))
        let manifest = PredictorManifest(backboneConfig: backbone.configPath, backbone: backbone.name,
                                         featureNode: backbone.featureNode, classNames: classNames)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(manifest).write(to: directory.appendingPathComponent(TrainedModelFiles.predictor), options: .atomic)
    }

    static func exportedHead(_ model: HeadModel, classNames: [String], backbone: ModelConfig) -> ExportedHead {
        var layers = [DenseLayer(weights: model.layer1Weights, bias: model.layer1Bias, inputs: model.dimension,
                                 outputs: model.layer1Bias.count)]
        if let weights = model.layer2Weights, let bias = model.layer2Bias {
            layers.append(DenseLayer(weights: weights, bias: bias, inputs: model.layer1Bias.count, outputs: bias.count))
        }
        let p = backbone.preprocess
        return ExportedHead(classNames: classNames, mean: model.standardizer.mean, std: model.standardizer.std, layers: layers,
                            backbone: backbone.name, featureNode: backbone.featureNode,
                            normalization: "\(p.colorOrder.rawValue), resize \(p.resizeShorterSide), crop \(p.crop), mean \(p.mean), std \(p.std)")
    }
}
