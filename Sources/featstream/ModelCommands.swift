import ArgumentParser
import Backbone
import Extraction
import Foundation
import DatasetIndex
import ImageInput

/// `featstream model init`: bring a bare ONNX model with one command.
struct Model: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with backbone models.",
        subcommands: [Init.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init",
            abstract: "Write an editable model.json for a bare .onnx, saying which values were guessed.",
            discussion: """
            Reads the graph: the image input (name, shape, layout), the tensors that look like the
            pooled features before the classifier (with their widths), and whether the graph
            normalises its own input. Writes model.json beside the model (or --out) with the best
            candidate as featureNode, the others under featureCandidates, and every guessed value
            under guessed. `extract` and `run` on a bare .onnx use the same inference.
            """)

        @Argument(help: "The .onnx file.") var model: String
        @Option(help: "Where to write the config (default: model.json beside the model).") var out: String?
        @Flag(help: "Replace an existing config file.") var force = false

        func run() throws {
            do {
                let inferred = try ModelConfig.inferred(fromONNX: model)
                let target = out.map { URL(fileURLWithPath: $0) }
                    ?? URL(fileURLWithPath: model).deletingLastPathComponent().appendingPathComponent("model.json")
                if FileManager.default.fileExists(atPath: target.path) && !force {
                    printError("featstream model init: \(target.path) exists; pass --force to replace it")
                    throw ExitCode.failure
                }
                try inferred.json().write(to: target, options: .atomic)
                print(inferred.summary)
                print("Wrote \(target.path); edit the guessed values if they are wrong.")
            } catch let error as ExitCode {
                throw error
            } catch {
                printError("featstream model init: \(error)")
                throw ExitCode.failure
            }
        }
    }
}

/// Tells the user, on standard error, that a bare .onnx is being used with a guessed config.
func announceInferredConfig(_ config: ModelConfig, command: String) {
    guard !config.guessed.isEmpty, let inferred = try? ModelConfig.inferred(fromONNX: config.onnxPath),
          let json = try? inferred.json() else { return }
    printError("\(command): no model config beside \(config.onnxPath); using this one inferred from the graph "
               + "(`featstream model init` writes it for editing):\n" + String(decoding: json, as: UTF8.self))
}

/// `featstream calibrate`: the activation ranges int8 convolutions need, from a dataset's first images.
struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure activation ranges for --precision int8 and write them beside the model.",
        discussion: """
        Runs the fp32 backbone over the first --images images of the dataset (dataset order) and
        records, for every tensor that feeds or leaves a convolution, its minimum and maximum. The file
        (calibration.json beside the model config, or the config's "calibration") lists the images used.
        """)

    @Option(help: "Model folder, config or .onnx.") var model: String
    @Option(help: "Dataset: ImageFolder root, .tar shard or folder of shards, or .csv/.jsonl manifest.") var data: String
    @Option(help: "Dataset format; detected from the path when omitted.") var format: DatasetKind?
    @Option(help: "Images to calibrate on.") var images = 512
    @Option(help: "Images per backbone run.") var batch = 16
    @Option(help: "oneDNN threads (default: all cores).") var threads: Int?
    @Option(help: "Where to write the calibration (default: the model's calibration path).") var out: String?
    @Option(help: "Clip each range to this percentile (0-100) of its tensor's magnitudes; 100: plain min/max.")
    var clipPercentile: Double = Calibration.defaultClipPercentile ?? 100

    func run() throws {
        do {
            guard clipPercentile > 0 && clipPercentile <= 100 else { throw ValidationError("--clip-percentile must be in (0, 100]") }
            let config = try ModelConfig.load(model)
            announceInferredConfig(config, command: "calibrate")
            let dataset = try scanIntoTemporaryIndex(IndexSelection(path: data, kind: format))
            let (calibration, skipped) = try config.calibrate(on: dataset, images: images, batch: batch, threads: threads,
                                                              clipPercentile: clipPercentile < 100 ? clipPercentile : nil)
            let target = out ?? config.calibrationPath
            try config.write(calibration, to: target)
            print("calibrated \(calibration.ranges.count) tensors (convolution inputs and outputs) on \(calibration.images.count) images"
                  + (skipped > 0 ? " (\(skipped) undecodable skipped)" : "") + " -> \(target)")
        } catch {
            printError("featstream calibrate: \(error)")
            throw ExitCode.failure
        }
    }
}
