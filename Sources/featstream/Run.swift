import ArgumentParser
import FeatureStore
import HeadExport
import Transport
import Extraction
import Foundation

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a whole cluster on this host: a coordinator, a head and N workers as child processes.",
        discussion: """
        The embedded default. Picks free localhost ports, starts every role, waits for the job to
        finish and prints a summary. Re-running with the same --out resumes an interrupted job.
        """)

    @Option(help: "Model folder, config or .onnx.") var model: String
    @OptionGroup var dataset: DatasetOptions
    @Option(help: "Worker processes.") var workers = 2
    @Option(help: "Output folder: store/, coordinator.journal.") var out: String
    @Option(help: "Items per shard.") var shardSize = 64
    @Option(help: "Images per backbone run.") var batch = 16
    @Option(help: "Feature element type on the wire and in the store: f32 or f16.") var dtype = "f16"
    @Flag(help: "Only extract; do not train a head.") var noTrain = false
    @OptionGroup var training: HeadTrainingOptions

    func run() throws {
        try runRole("run") {
            guard workers >= 1 else { throw ValidationError("--workers must be at least 1") }
            _ = try parseDType(dtype)
            announceInferredConfig(try ModelConfig.load(model), command: "run")
            let outURL = URL(fileURLWithPath: out)
            try FileManager.default.createDirectory(at: outURL, withIntermediateDirectories: true)
            let control = "tcp://127.0.0.1:\(try freeLocalPort())"
            let dataAddress = "tcp://127.0.0.1:\(try freeLocalPort())"
            let cores = ProcessInfo.processInfo.activeProcessorCount
            let threads = max(1, cores / workers)
            var datasetArguments = ["--data", dataset.data]
            if let format = dataset.format { datasetArguments += ["--format", format.rawValue] }
            if let split = dataset.split { datasetArguments += ["--split", split] }
            if let limit = dataset.limit { datasetArguments += ["--limit", String(limit)] }

            let metricsPort = try freeLocalPort()
            FileHandle.standardError.write(Data("run: live status with `featstream status http://127.0.0.1:\(metricsPort)`\n".utf8))
            let start = Date()
            let coordinator = try spawn(["coordinator", "--bind", control, "--head", dataAddress, "--metrics-port", String(metricsPort),
                                         "--journal", outURL.appendingPathComponent("coordinator.journal").path,
                                         "--shard-size", String(shardSize)] + datasetArguments)
            var headArguments = ["head", "--bind", dataAddress, "--coordinator", control,
                                 "--store", outURL.appendingPathComponent("store").path, "--dtype", dtype,
                                 "--model", model, "--data", dataset.data]
            if let format = dataset.format { headArguments += ["--format", format.rawValue] }
            if !noTrain {
                headArguments += ["--train-out", outURL.appendingPathComponent("model").path, "--l2", training.l2,
                                  "--hidden", String(training.hidden), "--max-epochs", String(training.maxEpochs),
                                  "--validation-fraction", String(training.validationFraction)]
                if training.mlp { headArguments.append("--mlp") }
                if training.balanced { headArguments.append("--balanced") }
            }
            let head = try spawn(headArguments)
            var workerProcesses: [Process] = []
            for index in 0..<workers {
                workerProcesses.append(try spawn(["worker", "--coordinator", control, "--model", model,
                                                  "--batch", String(batch), "--threads", String(threads),
                                                  "--dtype", dtype, "--name", "w\(index)"] + datasetArguments))
            }
            let everyone = [coordinator, head] + workerProcesses
            // Ctrl-C or SIGTERM ends the children too; nothing is left behind.
            let stop = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
            signal(SIGINT, SIG_IGN)
            stop.setEventHandler {
                for process in everyone where process.isRunning { kill(process.processIdentifier, SIGTERM) }
            }
            stop.resume()

            // The job is over when the coordinator exits; it fails if the head dies, or if the coordinator
            // has not finished a while after every worker is gone.
            var workersGoneAt: Date?
            while coordinator.isRunning {
                if !head.isRunning && head.terminationStatus != 0 { break }
                if workerProcesses.allSatisfy({ !$0.isRunning }) {
                    workersGoneAt = workersGoneAt ?? Date()
                    if Date().timeIntervalSince(workersGoneAt!) > 15 { break }
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            let deadline = Date().addingTimeInterval(10)
            while workerProcesses.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
            let extracted = Date().timeIntervalSince(start)
            let finished = !coordinator.isRunning && coordinator.terminationStatus == 0
            for process in [coordinator] + workerProcesses where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            // The head goes on to train once the job is complete; it ends by itself (or on Ctrl-C).
            if !finished && head.isRunning { kill(head.processIdentifier, SIGTERM) }
            for process in everyone { process.waitUntilExit() }
            guard coordinator.terminationStatus == 0, head.terminationStatus == 0 else {
                throw ClusterFailure(message: "coordinator exited with \(coordinator.terminationStatus), head with \(head.terminationStatus)")
            }
            try summarize(outURL, seconds: extracted)
        }
    }

    private func summarize(_ outURL: URL, seconds: Double) throws {
        let storeURL = outURL.appendingPathComponent("store")
        let store = try FeatureStore.open(at: storeURL)
        let summary = store.inspect()
        let images = summary.rows + summary.deadLetters
        var wire = ""
        if let data = try? Data(contentsOf: storeURL.appendingPathComponent("ingest.json")),
           let stats = try? JSONDecoder().decode(HeadIngest.self, from: data), stats.payloadBytes > 0 {
            let f32 = Double(stats.rows) * Double(store.dimension) * 4
            wire = String(format: ", %.1f MB of features on the wire (%.2fx smaller than raw f32)",
                          Double(stats.payloadBytes) / 1e6, f32 / Double(stats.payloadBytes))
        }
        print(String(format: "run: %d images (%d features, %d dead letters) in %.1f s, %.1f img/s%@; store %@",
                     images, summary.rows, summary.deadLetters, seconds, Double(images) / seconds, wire, storeURL.path))
        let modelURL = outURL.appendingPathComponent("model")
        if !noTrain, let data = try? Data(contentsOf: modelURL.appendingPathComponent("report.json")),
           let report = try? ReportData.decodeJSON(data), let evaluation = report.evaluation {
            print(String(format: "run: validation accuracy %.2f%% (top-5 %.2f%%); model, classifier.onnx and report.html in %@",
                         100 * evaluation.top1, 100 * evaluation.top5, modelURL.path))
        }
    }

    private func spawn(_ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = arguments
        try process.run()
        return process
    }
}

/// The fields of the head's `ingest.json` that the summary reports.
struct HeadIngest: Decodable {
    var rows: Int
    var payloadBytes: Int
}

struct ClusterFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
