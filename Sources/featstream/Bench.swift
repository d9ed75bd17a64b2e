import ArgumentParser
import Backbone
import Benchmarks
import Extraction
import FeatureCodec
import HeadJob
import HeadTraining
import Foundation
import DatasetIndex
import ImageInput
import NumpyFormat

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure this machine: backbone, decode+preprocess, extraction, feature codecs, head ingest and training.",
        discussion: """
        Each prints its result as one line of JSON (the Benchmarks module's Codable results; `extract`, one \
        line per progress report). Benchmarks/run.sh compares these against onnxruntime and Pillow in one run.
        """,
        subcommands: [Backbone.self, Decode.self, ExtractBench.self, Codec.self, Ingest.self, HeadIngest.self, TrainBench.self]
    )

    struct Backbone: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Backbone-only images/s on a fixed input (one JSON line).")

        @Option(help: "Model folder, config or .onnx.") var model: String
        @Option(help: "Images per run.") var batch = 16
        @Option(help: "oneDNN threads.") var threads = 2
        @Option(help: "Seconds to measure, after warm-up.") var seconds = 5.0
        @Flag(help: "Run even if oneDNN picks a slow reference kernel for some primitive.") var allowReferenceKernels = false
        @Option(help: "fp32, or int8 (with the model's calibration.json).") var precision: Precision = .fp32

        func run() throws {
            var config = try ModelConfig.load(model)
            config.precision = precision
            let result = try benchmarkBackbone(config: config, batch: batch, threads: threads, seconds: seconds,
                                               allowReferenceKernels: allowReferenceKernels) { printError("warning: \($0)") }
            print(try benchJSON(result))
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decode + resize + crop + normalise images/s, one thread, files in memory.")

        @Option(help: "Passes over the files.") var iterations = 20
        @Option(help: "Shorter side after resizing.") var resize = 256
        @Option(help: "Centre crop side.") var crop = 224
        @Flag(help: "Bicubic instead of bilinear.") var bicubic = false
        @Option(help: "fast (scale while decoding) or exact (full decode).") var resizeMode = Preprocessing.defaultResize
        @Argument(help: "Image files.") var files: [String]

        func run() throws {
            let result = try benchmarkDecode(
                files: files,
                preprocessing: Preprocessing(resizeShorterSide: resize, crop: crop, filter: bicubic ? .bicubic : .bilinear,
                                             resize: resizeMode),
                iterations: iterations)
            print(try benchJSON(result))
        }
    }

    struct ExtractBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "extract",
            abstract: "Decode + backbone over a dataset, as `featstream extract` does, writing nothing; JSON lines of the images done.",
            discussion: "Benchmarks/scaling.sh runs it beside its cluster jobs as the same work without a cluster.")

        @Option(help: "Model folder, config or .onnx.") var model: String
        @OptionGroup var dataset: DatasetOptions
        @Option(help: "Images per backbone run.") var batch = 16
        @Option(help: "oneDNN threads (default: all cores).") var threads: Int?
        @Option(help: "Decoder threads when the engine leaves cores free (decoding then overlaps the backbone); otherwise each batch is decoded between engine runs, one thread a core.") var decodeThreads = 1
        @Option(help: "Seconds between progress lines (one after the first batch, one at the end).") var every = 0.5

        func run() throws {
            let index = try scanIntoTemporaryIndex(dataset.selection.indexSelection)
            guard index.count > 0 else { throw ValidationError("\(dataset.data) has no items" + (dataset.split.map { " in split '\($0)'" } ?? "")) }
            let extractor = try FeatureExtractor(config: try ModelConfig.load(model), batchSize: batch, threads: threads)
            try extractor.engine.warmUp()
            try benchmarkExtraction(index, extractor: extractor, decodeThreads: decodeThreads, interval: every) {
                print(try benchJSON($0))
                fflush(nil)  // each line reaches a pipe as it is printed
            }
        }
    }

    struct Codec: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ratio and single-thread encode/decode speed of every feature dtype x codec on real features.")

        @Option(help: "features.npy from `featstream extract` ([rows, dimension] float32).") var features: String
        @Option(help: "Seconds of measurement in total.") var seconds = 6.0
        @Option(help: "Rows per batch, as workers send them.") var batchRows = 256

        func run() throws {
            let matrix = try loadFeatureMatrix(features)
            let reports = benchmarkCodecs(features: matrix.values, dimension: matrix.dimension, seconds: seconds, batchRows: batchRows)
            print(try benchJSON(reports))
        }
    }

    struct Ingest: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Head ingest vectors/s on one thread: frame decode, LZ4, dedup and fsync'd shard commits.")

        @Option(help: "features.npy from `featstream extract` ([rows, dimension] float32).") var features: String
        @Option(help: "Vectors to ingest (real features, cycled).") var vectors = 200_000
        @Option(help: "Rows per feature batch, as workers send them.") var batchRows = 16
        @Option(help: "Items per shard (one fsync'd commit each).") var shardSize = 1024
        @Option(help: "f16 or f32 on the wire.") var dtype = "f16"

        func run() throws {
            let matrix = try loadFeatureMatrix(features)
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-ingest-\(getpid())")
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try benchmarkIngest(features: matrix.values, dimension: matrix.dimension, vectors: vectors,
                                             rowsPerBatch: batchRows, shardSize: shardSize, dtype: try parseDType(dtype),
                                             directory: directory)
            print(try benchJSON(result))
        }
    }

    struct TrainBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Standardize + softmax regression (L-BFGS) on extracted features: test accuracy and training seconds.",
            discussion: "Benchmarks/head_vs_sklearn.py runs scikit-learn on the same folders with C = 1/(l2 * train rows).")

        @Option(help: "`featstream extract` output folder to train on (features.npy + metadata.csv).") var train: String
        @Option(help: "`featstream extract` output folder to test on.") var test: String
        @Option(help: "L2 strength; scikit-learn's C = 1/(l2 * train rows). Without it: the default head (L2 chosen on a held-out tenth, refit).") var l2: Float?
        @Option(help: "Threads.") var threads = 1
        @Option(help: "L-BFGS max-abs gradient tolerance (scikit-learn's tol).") var tol: Float = 1e-5
        @Option(help: "Timed runs; the fastest is reported.") var repeats = 5
        @Option(help: "With --l2: write the class predicted for each --test row here (.npy, int64), for paired comparisons.")
        var predictions: String?
        @Option(help: "Instead: the online pass over --train in shards of this many rows, in file order, without and with replay; top-1 on --test.")
        var onlineShardRows: Int?

        func run() throws {
            func load(_ folder: String) throws -> LabeledFeatures {
                let root = URL(fileURLWithPath: folder)
                let array = try NumpyArray(contentsOf: root.appendingPathComponent("features.npy"))
                let metadata = try String(contentsOf: root.appendingPathComponent("metadata.csv"), encoding: .utf8)
                return try labeledFeatures(features: array.values, shape: array.shape, metadataCSV: metadata)
            }
            if predictions != nil, l2 == nil || onlineShardRows != nil {
                throw ValidationError("--predictions needs --l2 (and no --online-shard-rows)")
            }
            let trainSet = try load(train), testSet = try load(test)
            if let onlineShardRows {
                let classes = Int(max(trainSet.labels.max() ?? 0, testSet.labels.max() ?? 0)) + 1
                print(try benchJSON(try benchmarkOnlinePass(train: trainSet, test: testSet, shardRows: onlineShardRows, classCount: classes)))
                return
            }
            guard let l2 else {
                var best = (accuracy: 0.0, seconds: Double.infinity, l2: Float(0), iterations: 0, validationTop1: 0.0)
                for _ in 0..<max(1, repeats) {
                    let result = try benchmarkDefaultHead(train: trainSet, test: testSet, threads: threads)
                    if result.seconds < best.seconds { best = result }
                }
                print(try benchJSON(TrainingBenchmarkReport(impl: "featstream-default", accuracy: best.accuracy, seconds: best.seconds,
                                                            l2: Double(best.l2), iterations: best.iterations, validationTop1: best.validationTop1,
                                                            trainRows: trainSet.count, testRows: testSet.count)))
                return
            }
            var best = (accuracy: 0.0, seconds: Double.infinity, predictions: [Int32]())
            for _ in 0..<max(1, repeats) {
                let result = try benchmarkTraining(train: trainSet, test: testSet, l2: l2, threads: threads, gradientTolerance: tol)
                if result.seconds < best.seconds { best = result }
            }
            if let predictions {
                try NumpyEncoding.int64Array(best.predictions.map(Int64.init)).write(to: URL(fileURLWithPath: predictions))
            }
            print(try benchJSON(TrainingBenchmarkReport(impl: "featstream", accuracy: best.accuracy, seconds: best.seconds, l2: Double(l2),
                                                        c: 1 / (Double(l2) * Double(trainSet.count)), trainRows: trainSet.count,
                                                        testRows: testSet.count)))
        }
    }
}

/// A `[rows, dimension]` float32 features.npy (from `featstream extract`), as the feature benchmarks take it.
func loadFeatureMatrix(_ path: String) throws -> (values: [Float], dimension: Int) {
    let array = try NumpyArray(contentsOf: URL(fileURLWithPath: path))
    guard array.shape.count == 2 else { throw ValidationError("expected [rows, dimension], got shape \(array.shape)") }
    return (array.values, array.shape[1])
}
