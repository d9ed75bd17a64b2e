import ArgumentParser
import Extraction
import FeatureStore
import Foundation
import HeadExport
import HeadJob
import HeadTraining
import ClusterRoles
import DatasetIndex
import ImageInput

/// Options shared by everything that trains a head.
struct HeadTrainingOptions: ParsableArguments {
    @Option(help: """
        L2 penalty. 'auto' (softmax regression with validation rows): choose it on validation from 1 down to 1e-6, \
        then refit on train + validation. One value forces it; a comma-separated list is the grid to choose from.
        """)
    var l2 = "auto"

    @Flag(help: "Train a one-hidden-layer MLP instead of softmax regression.")
    var mlp = false

    @Option(help: "Hidden units of the MLP.")
    var hidden = 256

    @Option(help: "Epochs (Adam) or iterations (L-BFGS) at most.")
    var maxEpochs = 100

    @Option(help: "Hold out this fraction of rows for validation when the dataset has no val/ split.")
    var validationFraction = 0.1

    @Flag(help: "Weight classes inversely to their frequency (like scikit-learn's 'balanced').")
    var balanced = false

    @Option(help: "Memory for feature rows in training, e.g. 4G (default: half of RAM or of the cgroup's limit). Beyond it, training streams from the store.")
    var memoryBudget: String?

    var memoryBudgetBytes: Int? {
        get throws {
            guard let memoryBudget else { return nil }
            guard let bytes = MemoryBudget.parse(memoryBudget) else {
                throw ValidationError("--memory-budget takes a size such as 512M or 4G, not '\(memoryBudget)'")
            }
            return bytes
        }
    }

    /// The L2 values given; empty for `auto`.
    var l2Values: [Float] {
        get throws {
            if l2.trimmingCharacters(in: .whitespaces).lowercased() == "auto" { return [] }
            let values = l2.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! >= 0 }) else {
                throw ValidationError("--l2 takes 'auto' or non-negative numbers separated by commas, not '\(l2)'")
            }
            return values.map { $0! }
        }
    }

    var config: TrainingConfig {
        var config = TrainingConfig()
        config.kind = mlp ? .mlp : .softmaxRegression
        config.hiddenUnits = hidden
        config.maxEpochs = maxEpochs
        config.maxIterations = max(maxEpochs, 100)
        config.blasThreads = 1
        // L-BFGS on the convex softmax objective converges; the L2 penalty, not early stopping, regularises it
        // (stopping on validation loss after one or two iterations left it badly underfit).
        if !mlp { config.earlyStoppingPatience = nil }
        if balanced { config.classWeights = .balanced }
        return config
    }
}

/// The class names and validation split for a store of a cluster job over `dataset`: the dataset's own
/// `val` split when it has one, else a fraction.
///
/// The names and the positions come from the same dataset index the coordinator built (INDEX.md: the same
/// selection always scans to the same index), kept at `<store>/dataset.index` and reused while the dataset
/// is unchanged, so labels, class names and row positions agree with what the workers extracted.
func validationSplit(dataset: DatasetOptions?, store: String, fraction: Double) throws -> (ValidationSplit, [String]?) {
    guard let dataset else { return (.fraction(fraction), nil) }
    let indexPath = URL(fileURLWithPath: store).appendingPathComponent("dataset.index").path
    try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
    let index = try dataset.selection.openIndex(at: indexPath, hasProgress: false) { printError("head: \($0)") }
    let classes = try index.classNames()
    guard dataset.split == nil else { return (.fraction(fraction), classes) }
    var splitOf: [UInt64: String] = [:]
    switch index.kind {
    case .imageFolder:
        for position in 0..<index.count where index.folderSplit(of: try index.item(position)) == "val" {
            splitOf[UInt64(position)] = "val"
        }
    case .manifest:
        // The index keeps no split column (INDEX.md §2): scan the `val` selection too and walk both in manifest
        // order. The val items are a subsequence of the job's, so each is the next job item with its key
        // (a repeated path takes its first unmatched occurrence); nothing per item is held but the result.
        // The job's own scan of this manifest just succeeded, so the only way this one fails is the
        // selection itself: a manifest without a `split` column has no `val` rows (INDEX.md §3).
        guard let validation = try? scanIntoTemporaryIndex(IndexSelection(path: dataset.data, kind: .manifest, split: "val")) else {
            return (.fraction(fraction), classes)
        }
        var next = 0
        for position in 0..<index.count where next < validation.count {
            if try index.item(position).key == validation.item(next).key {
                splitOf[UInt64(position)] = "val"
                next += 1
            }
        }
    case .webDataset:
        break
    }
    guard !splitOf.isEmpty else { return (.fraction(fraction), classes) }
    return (.dataset(splitOf: splitOf, validation: "val"), classes)
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a head from a feature store, without re-extracting anything.",
        discussion: """
        Writes head.safetensors, classifier.onnx (backbone + head in one graph), predictor.json,
        report.json and report.html to --out. A checkpoint is written every epoch; running the
        same command again after a crash resumes from it.
        """)

    @Option(help: "Feature store folder (a head's --store).") var store: String
    @Option(help: "The backbone's model folder, config or .onnx (for the exported classifier).") var model: String
    @Option(help: "Output folder for the trained model.") var out: String
    @Option(help: "The job's dataset, for its class names and train/val split (optional).") var data: String?
    @Option(help: "Dataset format, with --data.") var format: DatasetKind?
    @Option(help: "The job's --split, with --data.") var split: String?
    @Option(help: "The job's --limit, with --data.") var limit: Int?
    @OptionGroup var training: HeadTrainingOptions

    func run() throws {
        try runRole("train") {
            let featureStore = try FeatureStore.open(at: URL(fileURLWithPath: store))
            let backbone = try ModelConfig.load(model)
            if let mismatch = featureStore.metadata.precisionMismatch(wanted: backbone.precisionName, store: store) {
                throw ValidationError(mismatch)
            }
            let datasetOptions = try data.map { try DatasetOptions.parse(jobDatasetArguments($0, format, self.split, limit)) }
            let (split, classes) = try validationSplit(dataset: datasetOptions, store: store, fraction: training.validationFraction)
            let trainingData = try TrainingData.load(featureStore, split: split, classNames: classes)
            let outcome = try TrainingJob.run(data: trainingData, config: training.config, l2Values: try training.l2Values,
                                              backbone: backbone, directory: URL(fileURLWithPath: out),
                                              memoryBudget: try training.memoryBudgetBytes) { printError("train: \($0)") }
            print(String(format: "train: %@ top-1 %.4f (top-5 %.4f) on %d rows; model in %@",
                         outcome.evaluatedOnValidation ? "validation" : "training", outcome.evaluation.top1,
                         outcome.evaluation.top5, outcome.evaluation.count, out))
        }
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images with a trained model folder.",
        discussion: """
        Prints the top-k classes with probabilities for each image, or JSON with --json. Given a
        folder, it classifies every image below it (JPEG, PNG, WebP, GIF, BMP, TIFF, told by their
        bytes, not their names) and writes predictions.csv there (or to --csv): one line per entry
        it met, an image with its class, anything else (another format, a corrupt image, a FIFO)
        with the reason in the error column. --json prints the same lines as JSON objects.
        A corrupt image is reported with its file name and the others go on.
        """)

    @Option(help: "Trained model folder (from featstream run or train).") var model: String
    @Option(help: "Classes to show per image.") var topK = 5
    @Flag(help: "One JSON object per image.") var json = false
    @Option(help: "Where to write the CSV when given a folder.") var csv: String?
    @Argument(help: "Image files or one folder.") var inputs: [String]
    @Option(help: "fast or exact resize; overrides the model folder's (by default the training job's) choice.")
    var resize: ResizeMode?

    func run() throws {
        try runRole("predict") {
            let predictor = try Predictor(modelDirectory: URL(fileURLWithPath: model), resize: resize)
            var isDirectory: ObjCBool = false
            if inputs.count == 1, FileManager.default.fileExists(atPath: inputs[0], isDirectory: &isDirectory), isDirectory.boolValue {
                let folder = URL(fileURLWithPath: inputs[0])
                let target = csv ?? folder.appendingPathComponent("predictions.csv").path
                // Every entry is in the CSV once: classified, or refused with its reason (the CSV itself aside).
                let predictions = try predictor.classify(folder: folder.path, excluding: [target], topK: topK)
                var text = "file,class,probability,error\n"
                for p in predictions {
                    text += [csvQuote(p.file), csvQuote(p.top.first?.name ?? ""),
                             p.top.first.map { String(format: "%.6f", $0.probability) } ?? "", csvQuote(p.error ?? "")]
                        .joined(separator: ",") + "\n"
                }
                try text.write(toFile: target, atomically: true, encoding: .utf8)
                let failed = predictions.filter { $0.error != nil }
                if json { try predictions.forEach(printJSON) } else { for p in failed { printError("predict: \(p.file): \(p.error!)") } }
                let summary = "predict: \(predictions.count - failed.count) images classified, \(failed.count) entries not classified "
                    + "(each named with its reason) -> \(target)"
                if json { printError(summary) } else { print(summary) }
                return
            }
            for p in predictor.classify(inputs, topK: topK) {
                if json {
                    try printJSON(p)
                } else if let error = p.error {
                    printError("predict: \(p.file): \(error)")
                } else {
                    print(p.file)
                    for entry in p.top { print(String(format: "  %.4f  %@", entry.probability, entry.name)) }
                }
            }
        }
    }

    /// One prediction as a JSON line: `file` with `top` classes, or `file` with `error`.
    private func printJSON(_ p: Prediction) throws {
        let object: [String: Any] = p.error.map { ["file": p.file, "error": $0] } ?? [
            "file": p.file,
            "top": p.top.map { ["class": $0.name, "index": $0.index, "probability": Double($0.probability)] },
        ]
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

struct ExportFeatures: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-features",
        abstract: "Write a store's features as NumPy files: features.npy, labels.npy, indexes.npy, metadata.json.")

    @Option(help: "Feature store folder.") var store: String
    @Option(help: "Output folder.") var out: String

    func run() throws {
        try runRole("export-features") {
            let featureStore = try FeatureStore.open(at: URL(fileURLWithPath: store))
            let rows = try featureStore.rows()
            let classes = featureStore.metadata.classNames ?? (0...Int(rows.labels.max() ?? 0)).map(String.init)
            // Block by block from the memory-mapped shards: the export holds one block of features, not the store.
            try FeatureExport.exportNumpy(rows: rows.count, dimension: featureStore.dimension, labels: Array(rows.labels),
                                          indexes: Array(rows.indexes), keys: Array(rows.keys), classNames: classes,
                                          to: URL(fileURLWithPath: out)) { emit in
                try StoreRowSource(allOf: rows).forEachBlock(maxRows: 4096) { _, block in try emit(block) }
            }
            print("export-features: \(rows.count) rows of \(featureStore.dimension) -> \(out)")
        }
    }
}

func csvQuote(_ value: String) -> String {
    guard value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) else { return value }
    return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

/// `--data D [--format F] [--split S] [--limit N]`, for parsing into `DatasetOptions`.
func jobDatasetArguments(_ data: String, _ format: DatasetKind?, _ split: String?, _ limit: Int?) -> [String] {
    ["--data", data] + (format.map { ["--format", $0.name] } ?? []) + (split.map { ["--split", $0] } ?? [])
        + (limit.map { ["--limit", String($0)] } ?? [])
}
