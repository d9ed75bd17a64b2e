import ArgumentParser
import Backbone
import ClusterLaunch
import ClusterRoles
import FeatureStore
import HeadExport
import DatasetIndex
import ImageInput
import Transport
import Extraction
import Foundation

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a whole cluster on this host: a coordinator, a head and N workers as child processes.",
        discussion: """
        The embedded default. Picks free localhost ports, starts every role, waits for the job to
        finish and prints a summary. Re-running with the same --out resumes an interrupted job.
        Every socket runs CurveZMQ with key pairs made for this run only, in a private folder
        (mode 0700, under $XDG_RUNTIME_DIR or ~/.cache) that is deleted when the run ends.
        OUT/run.json lists the roles' addresses and metrics ports while it runs.
        """)

    @Option(help: "Model folder, config or .onnx.") var model: String
    @OptionGroup var dataset: DatasetOptions
    @Option(help: "Worker processes.") var workers = 2
    @Option(help: "Output folder: store/, coordinator.journal.") var out: String
    @Option(help: "Items per shard.") var shardSize = CoordinatorOptions.defaultShardSize
    @Option(help: "Images per backbone run.") var batch = 16
    @Option(help: "Feature element type on the wire and in the store: f32 or f16.") var dtype = "f16"
    @Option(help: "Convolution precision: fp32, or int8 (calibrated on the dataset's first --calibration-images images when the model has no calibration yet). Default: the model config's.")
    var precision: Precision?
    @Option(help: "Images an automatic int8 calibration uses.") var calibrationImages = 512
    @Flag(help: "Only extract; do not train a head.") var noTrain = false
    @Flag(help: "At the end, print one JSON object (ClusterLaunch's RunSummary) instead of the summary lines.") var json = false
    @Flag(help: "Run the roles without CurveZMQ (loopback only; for measuring what encryption costs).") var insecurePlaintext = false
    @OptionGroup var training: HeadTrainingOptions
    @Option(help: "Seconds a worker's extraction may produce no batch before it gives its shard up as stalled and is restarted (a hung input).")
    var stallAfter = WorkerOptions.defaultStallAfterSeconds
    @Option(help: "fast (scale JPEG and WebP while decoding) or exact (full decode, as torchvision); overrides the model config's preprocess.resize for the workers and the trained model folder.")
    var resize: ResizeMode?

    func run() throws {
        try runRole("run") {
            guard workers >= 1 else { throw ValidationError("--workers must be at least 1") }
            _ = try parseDType(dtype)
            umask(0o077)
            var modelConfig = try ModelConfig.load(model)
            announceInferredConfig(modelConfig, command: "run")
            if let precision { modelConfig.precision = precision }
            if modelConfig.precision == .int8, !FileManager.default.fileExists(atPath: modelConfig.calibrationPath) {
                // int8 needs activation ranges: measure them once, on this dataset, before any worker starts.
                let (calibration, skipped) = try modelConfig.calibrate(on: try scanIntoTemporaryIndex(IndexSelection(path: dataset.data, kind: dataset.format)),
                                                                  images: calibrationImages)
                try modelConfig.write(calibration)
                print("run: calibrated int8 on the dataset's first \(calibration.images.count) images"
                      + (skipped > 0 ? " (\(skipped) undecodable skipped)" : "") + "; ranges in \(modelConfig.calibrationPath)")
            }
            let outURL = URL(fileURLWithPath: out)
            try FileManager.default.createDirectory(at: outURL, withIntermediateDirectories: true)
            // Every role reads the backbone from `model`: with --resize or --precision, from a copy of its config
            // that says so, so the head (and the model folder it writes) knows what the workers extracted with.
            let model = resize == nil && precision == nil ? self.model
                : try writeConfig(modelConfig, resize: resize ?? modelConfig.preprocess.resize, into: outURL)
            let control = "tcp://127.0.0.1:\(try freeLocalPort())"
            let dataAddress = "tcp://127.0.0.1:\(try freeLocalPort())"
            let cores = ProcessInfo.processInfo.activeProcessorCount
            let threads = max(1, cores / workers)
            let datasetArguments = DatasetArguments(data: dataset.data, format: dataset.format?.name, split: dataset.split, limit: dataset.limit)
            let names = (0..<workers).map { "w\($0)" }

            // Ephemeral keys: one pair per role, in a private folder that lives as long as this run.
            let runDirectory = try makePrivateRunDirectory()
            defer { try? FileManager.default.removeItem(at: runDirectory) }
            let security: RoleSecurityArguments
            var serverKeys: [String: String] = [:]
            if insecurePlaintext {
                security = .insecurePlaintext
            } else {
                let keys = runDirectory.appendingPathComponent("keys").path
                let folder = try ClusterKeyFolder.generate(at: keys, workers: names)
                serverKeys = ["coordinator": try folder.publicKey(.coordinator), "head": try folder.publicKey(.head)]
                security = .keys(keys)
            }

            var coordinator = RoleCommand.Coordinator(bind: control, headAddress: dataAddress, dataset: datasetArguments,
                                                      journal: outURL.appendingPathComponent("coordinator.journal").path, security: security)
            coordinator.shardSize = shardSize
            coordinator.metricsPort = try freeLocalPort()
            var head = RoleCommand.Head(bind: dataAddress, coordinator: control, store: outURL.appendingPathComponent("store").path,
                                        security: security)
            head.dtype = dtype
            head.model = model
            // The store's width comes from the model, never from the first batch a peer sends.
            head.featureDimension = try expectedFeatureDimension(given: nil, model: modelConfig)
            head.data = datasetArguments
            head.metricsPort = try freeLocalPort()
            if !noTrain {
                head.trainOut = outURL.appendingPathComponent("model").path
                head.training = ["--l2", training.l2, "--hidden", String(training.hidden), "--max-epochs", String(training.maxEpochs),
                                 "--validation-fraction", String(training.validationFraction)]
                if training.mlp { head.training.append("--mlp") }
                if training.balanced { head.training.append("--balanced") }
            }
            var workerCommands: [RoleCommand.Worker] = []
            for name in names {
                var worker = RoleCommand.Worker(coordinator: control, model: model, name: name, security: security)
                worker.batch = batch
                worker.threads = threads
                worker.dtype = dtype
                // No --precision: the config copy in `model` says it, one home for every role.
                worker.metricsPort = try freeLocalPort()
                worker.stallAfter = stallAfter
                workerCommands.append(worker)
            }
            try writeRunState(outURL, RunState(coordinator: control, head: dataAddress, encrypted: !insecurePlaintext, publicKeys: serverKeys,
                                               metricsPorts: ["coordinator": coordinator.metricsPort!, "head": head.metricsPort!]
                                                   .merging(workerCommands.map { ($0.name, $0.metricsPort!) }) { $1 }))
            FileHandle.standardError.write(Data("run: live status with `featstream status http://127.0.0.1:\(coordinator.metricsPort!)`\n".utf8))

            let start = Date()
            let supervisor = LocalSupervisor()
            // SIGINT or SIGTERM ends the children too: nothing is left behind.
            supervisor.stopOnSignals()
            let coordinatorProcess = try supervisor.spawn(.coordinator(coordinator))
            let headProcess = try supervisor.spawn(.head(head))
            var workerProcesses = try workerCommands.map { try supervisor.spawn(.worker($0)) }
            var restarts = WorkerRestarts(count: workerProcesses.count)

            // The job is over when the coordinator exits; it fails if the head dies, or if the coordinator
            // has not finished a while after every worker is gone. A worker that crashed or hung comes back.
            var workersGone = false
            while coordinatorProcess.isRunning && !supervisor.stopping {
                if !headProcess.isRunning && headProcess.terminationStatus != 0 { break }
                for (slot, process) in workerProcesses.enumerated()
                where !process.isRunning && restarts.due(slot, reason: process.terminationReason, status: process.terminationStatus) {
                    FileHandle.standardError.write(Data("run: \(names[slot]) died (\(process.terminationReason == .uncaughtSignal ? "signal" : "status") \(process.terminationStatus)); starting it again\n".utf8))
                    guard let again = try? supervisor.spawn(.worker(workerCommands[slot])) else { break }
                    workerProcesses[slot] = again
                    restarts.started(slot)
                }
                if restarts.everyWorkerGone(noneRunning: workerProcesses.allSatisfy { !$0.isRunning }) {
                    workersGone = true
                    break
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            if supervisor.stopping {
                supervisor.stopAll(graceSeconds: 5)
                throw ClusterFailure(message: "stopped by signal; every role was stopped")
            }
            let deadline = Date().addingTimeInterval(10)
            while workerProcesses.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
            let extracted = Date().timeIntervalSince(start)
            let finished = !coordinatorProcess.isRunning && coordinatorProcess.terminationStatus == 0
            for process in [coordinatorProcess] + workerProcesses where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            // The head goes on to train once the job is complete; it ends by itself (or on a signal).
            if !finished && headProcess.isRunning { kill(headProcess.processIdentifier, SIGTERM) }
            while headProcess.isRunning && !supervisor.stopping { Thread.sleep(forTimeInterval: 0.1) }
            supervisor.stopAll(graceSeconds: 5)
            if supervisor.stopping { throw ClusterFailure(message: "stopped by signal; every role was stopped") }
            if workersGone && !finished {
                throw ClusterFailure(message: "every worker is gone and the job is not complete (their log lines say why); the coordinator was stopped")
            }
            guard coordinatorProcess.terminationStatus == 0, headProcess.terminationStatus == 0 else {
                throw ClusterFailure(message: "coordinator exited with \(coordinatorProcess.terminationStatus), head with \(headProcess.terminationStatus)")
            }
            try summarize(outURL, seconds: extracted, workerRestarts: restarts.restarts)
        }
    }

    private func summarize(_ outURL: URL, seconds: Double, workerRestarts: Int) throws {
        let storeURL = outURL.appendingPathComponent("store")
        let store = try FeatureStore.open(at: storeURL)
        let inspected = store.inspect()
        let stats = (try? Data(contentsOf: storeURL.appendingPathComponent("ingest.json")))
            .flatMap { try? JSONDecoder().decode(HeadIngest.self, from: $0) }
        let modelURL = outURL.appendingPathComponent("model")
        let evaluation = noTrain ? nil : (try? Data(contentsOf: modelURL.appendingPathComponent("report.json")))
            .flatMap { try? ReportData.decodeJSON($0) }?.evaluation
        let summary = RunSummary(store: storeURL.path, model: noTrain ? nil : modelURL.path, features: inspected.rows,
                                 deadLetters: inspected.deadLetters, shards: inspected.shards, seconds: seconds,
                                 wireBytes: stats.map(\.payloadBytes), accuracy: evaluation.map { RunSummary.Accuracy(top1: $0.top1, top5: $0.top5) },
                                 workerRestarts: workerRestarts)
        if json {
            print(try summary.json())
            return
        }
        var wire = ""
        if let stats, stats.payloadBytes > 0 {
            let f32 = Double(stats.rows) * Double(store.dimension) * 4
            wire = String(format: ", %.1f MB of features on the wire (%.2fx smaller than raw f32)",
                          Double(stats.payloadBytes) / 1e6, f32 / Double(stats.payloadBytes))
        }
        print(String(format: "run: %d images (%d features, %d dead letters) in %.1f s, %.1f img/s%@; store %@",
                     summary.items, summary.features, summary.deadLetters, seconds, summary.imagesPerSecond, wire, storeURL.path))
        if workerRestarts > 0 { print("run: workers were started again \(workerRestarts) times (crashed or stalled; see their log lines)") }
        if let evaluation {
            print(String(format: "run: validation accuracy %.2f%% (top-5 %.2f%%); model, classifier.onnx and report.html in %@",
                         100 * evaluation.top1, 100 * evaluation.top5, modelURL.path))
        }
    }
}

/// `OUT/run.json`: where a running `featstream run` put its roles, for `status`, benchmarks and tests.
struct RunState: Codable {
    var coordinator: String
    var head: String
    var encrypted: Bool
    /// The servers' CURVE public keys (`coordinator`, `head`); public, printed so operators can check them.
    var publicKeys: [String: String]
    /// Metrics port of each role (`coordinator`, `head`, and each worker by name), all on 127.0.0.1.
    var metricsPorts: [String: Int]
}

private func writeRunState(_ outURL: URL, _ state: RunState) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(state).write(to: outURL.appendingPathComponent("run.json"), options: .atomic)
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

/// Writes `config` (its precision included) with `preprocess.resize` set to `resize` as
/// `OUT/backbone-config.json`, its file paths made absolute so it reads the same backbone (and int8
/// calibration) from there; returns the file's path.
func writeConfig(_ config: ModelConfig, resize: ResizeMode, into folder: URL) throws -> String {
    var config = config
    config.preprocess.resize = resize
    func absolute(_ path: String) -> String { path.hasPrefix("/") ? path : config.directory.appendingPathComponent(path).path }
    config.onnx = config.onnxPath
    config.classes = config.classes.map(absolute)
    config.calibration = config.calibration.map(absolute) ?? (config.precision == .int8 ? config.calibrationPath : nil)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let target = folder.appendingPathComponent("backbone-config.json")
    try encoder.encode(config).write(to: target, options: .atomic)
    return target.path
}
