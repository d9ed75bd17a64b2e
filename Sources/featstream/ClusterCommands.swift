import ArgumentParser
import ClusterRoles
import Extraction
import FeatureStore
import HeadExport
import HeadJob
import HeadTraining
import Foundation
import ImageInput
import Transport
import WireProtocol

/// Options naming the job's dataset; the coordinator and every worker must be given the same.
struct DatasetOptions: ParsableArguments {
    @Option(help: "Dataset: ImageFolder root, .tar shard or folder of shards, or .csv/.jsonl manifest.")
    var data: String

    @Option(help: "Dataset format; detected from the path when omitted.")
    var format: DatasetFormat?

    @Option(help: "Only this split (train or val).")
    var split: String?

    @Option(help: "Only the first N items (after --split).")
    var limit: Int?

    var selection: DatasetSelection { DatasetSelection(path: data, format: format, split: split, limit: limit) }
}

/// This role's CurveZMQ key pair; giving both turns CurveZMQ on for every socket of the role.
struct CurveOptions: ParsableArguments {
    @Option(help: "This role's CURVE secret key file (mode 0600, from `featstream keygen`).") var curveSecret: String?
    @Option(help: "This role's CURVE public key file.") var curvePublic: String?
}

/// Runs a role, turning any error into one clear line and a failing exit status.
func runRole(_ name: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch {
        printError("featstream \(name): \(error)")
        throw ExitCode.failure
    }
}

struct Coordinator: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cut the dataset into shards, lease them to workers, and record the head's commits.",
        discussion: """
        Workers pull shards; each lease has a timeout and is renewed by heartbeats. A dead worker's
        or expired lease goes to another worker; at the end idle workers get backup copies of
        stragglers and the first commit wins. Commits are journaled (fsync'd) before they count,
        so a restarted coordinator resumes without redoing committed shards.
        """)

    @Option(help: "Control address to bind, tcp://host:port.") var bind: String
    @Option(help: "The head's data address, as workers reach it.") var head: String
    @OptionGroup var dataset: DatasetOptions
    @Option(help: "Items per shard.") var shardSize = 64
    @Option(help: "Journal file (append-only).") var journal: String
    @Option(help: "Heartbeat interval, ms.") var heartbeatMs: UInt64 = 500
    @Option(help: "A peer is dead after this many missed heartbeats.") var deadAfterBeats: UInt64 = 10
    @Option(help: "Shard lease, ms (renewed by the worker's heartbeats).") var leaseMs: UInt64 = 30_000
    @Option(help: "After a worker reports a shard done, wait this long (ms) for the head's commit.") var commitWaitMs: UInt64 = 30_000
    @Option(help: "Log stuck shards and workers after this long (ms) without a commit.") var stallMs: UInt64 = 60_000
    @Option(help: "Serve Prometheus metrics on this port (0: any free port).") var metricsPort: Int?
    @OptionGroup var curve: CurveOptions
    @Option(help: "Folder of allowed client public keys (*.pub: every worker's and the head's).") var curveAllow: String?

    func run() throws {
        try runRole("coordinator") {
            var options = CoordinatorOptions(bind: bind, headAddress: head, dataset: dataset.selection, journalPath: journal)
            options.shardSize = shardSize
            options.heartbeatMs = heartbeatMs
            options.deadAfterBeats = deadAfterBeats
            options.leaseMs = leaseMs
            options.commitWaitMs = commitWaitMs
            options.stallMs = stallMs
            options.metricsPort = metricsPort
            options.security = try CurveFlags.server(secretFile: curve.curveSecret, publicFile: curve.curvePublic,
                                                     allowDirectory: curveAllow)
            let counters = try CoordinatorService(options: options).run()
            print("coordinator: job complete; \(counters.rejectedTotal) malformed frames rejected")
        }
    }
}

struct Head: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive feature batches, commit each shard atomically to a store, and train the head.",
        discussion: """
        Grants each worker a window of credits, so memory stays bounded when the head is slow.
        A shard is committed (and reported to the coordinator) only once every item arrived as a
        feature or a dead letter; a restarted head reopens its store and reports what it has.
        With --train-out, each committed shard of the training split feeds an online pass while
        the job runs; when the job is complete the head trains from the whole store (resuming
        from its checkpoint after a crash) and writes the model folder.
        """)

    @Option(help: "Data address to bind, tcp://host:port.") var bind: String
    @Option(help: "The coordinator's control address.") var coordinator: String
    @Option(help: "Feature store folder.") var store: String
    @Option(help: "Batches each worker may have in flight.") var credits: UInt32 = 4
    @Option(help: "Element type kept in the store: f32 or f16.") var dtype = "f16"
    @Option(help: "The backbone's model config (recorded in the store; needed for --train-out).") var model: String?
    @Option(help: "The dataset, for class names and the train/val split.") var data: String?
    @Option(help: "Dataset format, with --data.") var format: DatasetFormat?
    @Option(help: "Train the head when the job completes and write the model folder here.") var trainOut: String?
    @Option(help: "Serve Prometheus metrics on this port (0: any free port).") var metricsPort: Int?
    @OptionGroup var training: HeadTrainingOptions
    @OptionGroup var curve: CurveOptions
    @Option(help: "Folder of allowed worker public keys (*.pub).") var curveAllow: String?
    @Option(help: "The coordinator's CURVE public key file.") var curveCoordinatorPublic: String?

    func run() throws {
        try runRole("head") {
            let backbone = try model.map { try ModelConfig.load($0) }
            let datasetOptions = try data.map { try DatasetOptions.parse(["--data", $0] + (format.map { ["--format", $0.rawValue] } ?? [])) }
            let (split, classes) = try validationSplit(dataset: datasetOptions, fraction: training.validationFraction)
            if trainOut != nil && backbone == nil { throw ValidationError("--train-out needs --model") }
            if !HeadService.jobComplete(storePath: store) {
                var options = HeadOptions(bind: bind, coordinator: coordinator, storePath: store)
                options.creditWindow = credits
                options.dtype = try parseDType(dtype)
                options.metadata = StoreMetadata(model: backbone?.name, classNames: classes)
                options.metricsPort = metricsPort
                options.dataSecurity = try CurveFlags.server(secretFile: curve.curveSecret, publicFile: curve.curvePublic,
                                                             allowDirectory: curveAllow)
                options.controlSecurity = try CurveFlags.client(secretFile: curve.curveSecret, publicFile: curve.curvePublic,
                                                                serverPublicFile: curveCoordinatorPublic,
                                                                serverFlag: "--curve-coordinator-public")
                let service = try HeadService(options: options)
                if trainOut != nil, let classes {
                    let online = OnlineTraining(config: training.config, classCount: classes.count, split: split,
                                                log: service.log.event) { service.recordTrainingLoss($0, split: "online") }
                    service.onCommit = online.absorb
                }
                let statistics = try service.run()
                print("head: \(statistics.committedShards) shards committed this run, \(statistics.rejectedFrames) malformed frames rejected")
            }
            guard let trainOut, let backbone else { return }
            let featureStore = try FeatureStore.open(at: URL(fileURLWithPath: store))
            let data = try TrainingData.load(featureStore, split: split, classNames: classes)
            let outcome = try TrainingJob.run(data: data, config: training.config, l2Values: try training.l2Values, backbone: backbone,
                                              directory: URL(fileURLWithPath: trainOut), extraction: extractionFacts(featureStore),
                                              memoryBudget: try training.memoryBudgetBytes) {
                printError("head: training: \($0)")
            }
            print(String(format: "head: trained; %@ top-1 %.4f, top-5 %.4f on %d rows; model in %@",
                         outcome.evaluatedOnValidation ? "validation" : "training", outcome.evaluation.top1,
                         outcome.evaluation.top5, outcome.evaluation.count, trainOut))
        }
    }

    /// Per-worker throughput (from the head's ingest.json) and dead letters, for the report.
    private func extractionFacts(_ featureStore: FeatureStore) -> TrainingJob.Extraction {
        var throughput: [String: [ReportData.ThroughputSample]] = [:]
        let url = URL(fileURLWithPath: store).appendingPathComponent("ingest.json")
        if let data = try? Data(contentsOf: url), let statistics = try? JSONDecoder().decode(HeadStatistics.self, from: data) {
            for (worker, perSecond) in statistics.rowsPerSecond {
                throughput[worker] = perSecond.keys.sorted().map { .init(seconds: Double($0), imagesPerSecond: Double(perSecond[$0]!)) }
            }
        }
        let letters = ((try? featureStore.deadLetters()) ?? []).map { ReportData.DeadLetter(key: $0.entry.key, reason: $0.entry.reason) }
        return TrainingJob.Extraction(throughput: throughput, deadLetters: letters)
    }
}

struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull shards, decode images, run the backbone, and stream compressed features to the head.",
        discussion: """
        Sends no more batches than the head granted credits for. Reconnects with backoff when the
        coordinator or head restarts. On SIGTERM it finishes its current shard, then exits.
        """)

    @Option(help: "The coordinator's control address.") var coordinator: String
    @Option(help: "Model folder, config or .onnx.") var model: String
    @OptionGroup var dataset: DatasetOptions
    @Option(help: "Images per backbone run.") var batch = 16
    @Option(help: "oneDNN threads (default: all cores).") var threads: Int?
    @Option(help: "Decoder threads.") var decodeThreads = 1
    @Option(help: "Feature element type on the wire: f32 or f16.") var dtype = "f16"
    @Option(help: "Worker name (default: host-pid).") var name: String?
    @Option(help: "Serve Prometheus metrics on this port (0: any free port).") var metricsPort: Int?
    @OptionGroup var curve: CurveOptions
    @Option(help: "The coordinator's CURVE public key file.") var curveCoordinatorPublic: String?
    @Option(help: "The head's CURVE public key file.") var curveHeadPublic: String?

    func run() throws {
        try runRole("worker") {
            let id = name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
            var options = WorkerOptions(coordinator: coordinator, model: model, dataset: dataset.selection, workerID: id)
            options.batch = batch
            options.threads = threads
            options.decodeThreads = decodeThreads
            options.dtype = try parseDType(dtype)
            options.metricsPort = metricsPort
            options.controlSecurity = try CurveFlags.client(secretFile: curve.curveSecret, publicFile: curve.curvePublic,
                                                            serverPublicFile: curveCoordinatorPublic,
                                                            serverFlag: "--curve-coordinator-public")
            options.dataSecurity = try CurveFlags.client(secretFile: curve.curveSecret, publicFile: curve.curvePublic,
                                                         serverPublicFile: curveHeadPublic, serverFlag: "--curve-head-public")
            let service = try WorkerService(options: options)
            _ = try service.run()
        }
    }
}

func parseDType(_ text: String) throws -> FeatureDTypeCode {
    switch text {
    case "f32": return .f32
    case "f16": return .f16
    default: throw ValidationError("dtype must be f32 or f16, not \(text)")
    }
}

struct Store: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Look into a head's feature store.",
        subcommands: [Inspect.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Shards, rows, dead letters and sizes of a store.")
        @Argument(help: "Store folder.") var path: String

        func run() throws {
            try runRole("store inspect") {
                let store = try FeatureStore.open(at: URL(fileURLWithPath: path))
                print(store.inspect().description)
            }
        }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a CurveZMQ key pair: NAME.pub (share it) and NAME.key (mode 0600, keep it private).",
        discussion: """
        Put each client's NAME.pub into the --curve-allow folder of every server it connects to:
        the coordinator's folder needs every worker's and the head's; the head's needs every worker's.
        Existing files are never overwritten.
        """)
    @Option(help: "Folder for the key files (created with mode 0700 if missing).") var out: String
    @Option(help: "Key pair name: writes NAME.pub and NAME.key.") var name: String

    func run() throws {
        try runRole("keygen") {
            let result = try runCurveKeygen(outDirectory: out, name: name)
            print(result.publicKey)
            printError("wrote \(result.publicFile.path) and \(result.secretFile.path) (mode 0600)")
        }
    }
}
