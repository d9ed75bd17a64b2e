import ArgumentParser
import Backbone
import ClusterLaunch
import ClusterRoles
import DatasetIndex
import Extraction
import FeatureStore
import HeadExport
import HeadJob
import HeadTraining
import Foundation
import ImageInput
import RoleMetrics
import Transport
import WireProtocol

/// Options naming the job's dataset: the coordinator's (and, for class names and splits, the head's).
struct DatasetOptions: ParsableArguments {
    @Option(help: "Dataset: ImageFolder root, .tar shard or folder of shards, or .csv/.jsonl manifest.")
    var data: String

    @Option(help: "Dataset format; detected from the path when omitted.")
    var format: DatasetKind?

    @Option(help: "Only this split (train or val).")
    var split: String?

    @Option(help: "Only the first N items (after --split).")
    var limit: Int?

    var selection: DatasetSelection { DatasetSelection(path: data, format: format, split: split, limit: limit) }
}

/// How a role's sockets are secured, and where its metrics listen. CURVE is the default: a role
/// without `--keys` refuses to start unless told `--insecure-plaintext` (see `RoleSecurity`).
struct SecurityOptions: ParsableArguments {
    @Option(help: "The cluster's CURVE key folder (from `featstream keygen`): this role's key pair and its peers' public keys.")
    var keys: String?
    @Flag(help: "Run without encryption or authentication (loopback addresses only). Anyone who can reach the port can act as any role.")
    var insecurePlaintext = false
    @Flag(help: "With --insecure-plaintext: allow non-loopback addresses too.")
    var allowRemotePlaintext = false
    @Option(help: "Interface for the metrics endpoint (default 127.0.0.1; 0.0.0.0 for every interface).")
    var metricsBind = "127.0.0.1"

    /// Resolves the flags for `role`, printing the plaintext warning loudly; also applies --metrics-bind.
    /// Files the role creates (store, journal) are private to its user: umask 077.
    func resolve(role: String, endpoints: [String]) throws -> RoleSecurity {
        umask(0o077)
        MetricsEndpoint.defaultHost = metricsBind
        let security = try RoleSecurity(role: role, keysDirectory: keys, insecurePlaintext: insecurePlaintext,
                                        allowRemotePlaintext: allowRemotePlaintext, endpoints: endpoints)
        if let warning = security.plaintextWarning {
            printError(String(repeating: "!", count: 72) + "\n" + warning + "\n" + String(repeating: "!", count: 72))
        }
        return security
    }
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
    @Option(help: "Items per shard.") var shardSize = CoordinatorOptions.defaultShardSize
    @Option(help: "Journal file (append-only).") var journal: String
    @Option(help: "Heartbeat interval, ms.") var heartbeatMs: UInt64 = 500
    @Option(help: "A peer is dead after this many missed heartbeats.") var deadAfterBeats: UInt64 = 10
    @Option(help: "Shard lease, ms (renewed by the worker's heartbeats).") var leaseMs: UInt64 = 30_000
    @Option(help: "After a worker reports a shard done, wait this long (ms) for the head's commit.") var commitWaitMs: UInt64 = 30_000
    @Option(help: "Log stuck shards and workers after this long (ms) without a commit.") var stallMs: UInt64 = 60_000
    @Option(help: "Serve Prometheus metrics on this port (0: any free port).") var metricsPort: Int?
    @OptionGroup var security: SecurityOptions

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
            options.security = try security.resolve(role: "coordinator", endpoints: [bind]).coordinatorControl()
            // SIGHUP re-reads the key folder: a worker whose .pub was removed is refused from then on.
            let hangup = options.security.peers?.reloadOnHangup { printError("coordinator: \($0)") }
            defer { hangup?.cancel() }
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
        A store whose job is complete is reported to the coordinator first (refused if it serves
        another job); with no coordinator answering within 10 s the head goes on to train.
        """)

    @Option(help: "Data address to bind, tcp://host:port.") var bind: String
    @Option(help: "The coordinator's control address.") var coordinator: String
    @Option(help: "Feature store folder.") var store: String
    @Option(help: "Batches each worker may have in flight.") var credits: UInt32 = 4
    @Option(help: "Element type kept in the store: f32 or f16.") var dtype = "f16"
    @Option(help: "The backbone's model config (recorded in the store; needed for --train-out; fixes the feature width).") var model: String?
    @Option(help: "Values per feature row the job's model produces (default: read from --model). Batches of another width are dropped.")
    var featureDimension: Int?
    @Option(help: "The job's dataset, for class names and the train/val split.") var data: String?
    @Option(help: "Dataset format, with --data.") var format: DatasetKind?
    @Option(help: "The job's --split, with --data.") var split: String?
    @Option(help: "The job's --limit, with --data.") var limit: Int?
    @Option(help: "Train the head when the job completes and write the model folder here.") var trainOut: String?
    @Option(help: "Serve Prometheus metrics on this port (0: any free port).") var metricsPort: Int?
    @OptionGroup var training: HeadTrainingOptions
    @OptionGroup var security: SecurityOptions

    func run() throws {
        try runRole("head") {
            let backbone = try model.map { try ModelConfig.load($0) }
            let datasetOptions = try data.map { try DatasetOptions.parse(jobDatasetArguments($0, format, self.split, limit)) }
            let (split, classes) = try validationSplit(dataset: datasetOptions, store: store, fraction: training.validationFraction)
            if trainOut != nil && backbone == nil { throw ValidationError("--train-out needs --model") }
            // Also on a store whose job is complete: the coordinator's plan is checked before the head trains (HeadService.run).
            do {
                var options = HeadOptions(bind: bind, coordinator: coordinator, storePath: store)
                options.creditWindow = credits
                options.dtype = try parseDType(dtype)
                options.metadata = StoreMetadata(model: backbone?.name, classNames: classes,
                                                 precision: backbone?.precisionName)
                options.featureDimension = try expectedFeatureDimension(given: featureDimension, model: backbone)
                options.metricsPort = metricsPort
                (options.dataSecurity, options.controlSecurity) = try security.resolve(role: "head", endpoints: [bind, coordinator]).head()
                let hangup = options.dataSecurity.peers?.reloadOnHangup { printError("head: \($0)") }
                defer { hangup?.cancel() }
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
        Never opens the dataset itself: each assignment names its items' files (or tar members), as
        the coordinator's index found them: the dataset must be at the same path on every host, or
        mapped with --path-map.
        Sends no more batches than the head granted credits for. Reconnects with backoff when the
        coordinator or head restarts. On SIGTERM it gives its current shard back, then exits.
        """)

    @Option(help: "The coordinator's control address.") var coordinator: String
    @Option(help: "Model folder, config or .onnx.") var model: String
    @Option(help: "Images per backbone run.") var batch = 16
    @Option(help: "oneDNN threads (default: all cores).") var threads: Int?
    @Option(help: "Decoder threads.") var decodeThreads = 1
    @Option(help: "Feature element type on the wire: f32 or f16.") var dtype = "f16"
    @Option(help: "Convolution precision: fp32, or int8 (needs `featstream calibrate` first). Default: the model config's.")
    var precision: Precision?
    @Option(help: "Worker name (default: host-pid).") var name: String?
    @Option(help: "FROM=TO: this host sees the coordinator's dataset folder FROM at TO (assignments name the coordinator's paths).")
    var pathMap: String?
    @Option(help: "Serve Prometheus metrics on this port (0: any free port).") var metricsPort: Int?
    @Option(help: "Seconds the extraction may produce no batch before the worker gives its shard up as stalled and exits to be restarted (a hung input).")
    var stallAfter = WorkerOptions.defaultStallAfterSeconds
    @OptionGroup var security: SecurityOptions
    @Option(help: "This worker's key in the key folder: workers/NAME.key (default: --name).") var keyName: String?

    func run() throws {
        try runRole("worker") {
            let id = name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
            var options = WorkerOptions(coordinator: coordinator, model: model, workerID: id)
            options.batch = batch
            options.threads = threads
            options.decodeThreads = decodeThreads
            options.dtype = try parseDType(dtype)
            options.precision = precision
            options.metricsPort = metricsPort
            options.stallAfterSeconds = stallAfter
            if let pathMap {
                guard let map = PathMap(pathMap) else { throw ValidationError("--path-map wants FROM=TO with two absolute paths, not \(pathMap)") }
                options.pathMap = map
            }
            (options.controlSecurity, options.dataSecurity) = try security.resolve(role: "worker", endpoints: [coordinator])
                .worker(keyName: keyName ?? id)
            let service = try WorkerService(options: options)
            do {
                _ = try service.run()
            } catch let stalled as WorkerStalled {
                // A distinct status, so that a supervisor starts a fresh process (`WorkerRestarts`).
                printError("featstream worker: \(stalled)")
                throw ExitCode(WorkerRestarts.stalledExitStatus)
            }
        }
    }
}

/// The row width the head's store must have: `--feature-dimension`, else the width of the model's feature
/// node (read from the ONNX graph's shapes, no weights run), else nil (the first batch decides).
func expectedFeatureDimension(given: Int?, model: ModelConfig?) throws -> Int? {
    if let given, given < 1 { throw ValidationError("--feature-dimension must be at least 1, not \(given)") }
    guard let model else { return given }
    let inspection = try ModelInspection(modelPath: model.onnxPath)
    guard let width = inspection.candidates.first(where: { $0.name == model.featureNode })?.width else {
        if let given { return given }
        throw ValidationError("cannot tell the feature width of \(model.name) (node \(model.featureNode)); pass --feature-dimension")
    }
    if let given, given != width {
        throw ValidationError("--feature-dimension \(given) contradicts \(model.name), whose \(model.featureNode) has \(width) values")
    }
    return width
}

func parseDType(_ text: String) throws -> FeatureDType {
    guard let dtype = FeatureDType(name: text) else { throw ValidationError("dtype must be f32 or f16, not \(text)") }
    return dtype
}

struct Store: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Look into a head's feature store.",
        subcommands: [Inspect.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Shards, rows, dead letters and sizes of a store.")
        @Argument(help: "Store folder.") var path: String
        @Flag(help: "Print one JSON object (RoleMetrics' JobStatus.Store: path, shards, rows, deadLetters, problems).") var json = false

        func run() throws {
            try runRole("store inspect") {
                let store = try FeatureStore.open(at: URL(fileURLWithPath: path))
                let summary = store.inspect()
                print(json ? try JobStatus.Store(path: path, shards: summary.shards, rows: summary.rows, deadLetters: summary.deadLetters,
                                                 problems: summary.problems).json()
                           : summary.description)
            }
        }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate CurveZMQ keys: a cluster's key folder, or one key pair.",
        discussion: """
        `--cluster FILE`: the key folder a cluster file's [keys] dir names (or FILE.keys next to it),
        with the coordinator's, the head's and one pair per worker of the file.
        `--keys DIR --workers w0,w1`: the same layout for hand-started roles (`--keys DIR` on each).
        `--out DIR --name NAME`: a single pair, NAME.pub and NAME.key.
        Secret keys are mode 0600 in 0700 folders; existing keys are never overwritten, so adding
        workers is the same command with more names.
        """)
    @Option(help: "Cluster file: make the key folder it uses, one key per worker.") var cluster: String?
    @Option(help: "Key folder to make (with --workers).") var keys: String?
    @Option(help: "Comma-separated worker names (with --keys).") var workers: String?
    @Option(help: "Folder for a single key pair.") var out: String?
    @Option(help: "Key pair name: writes NAME.pub and NAME.key.") var name: String?

    func run() throws {
        try runRole("keygen") {
            if let cluster {
                let definition = try ClusterFile.parse(path: cluster)
                let names = Launcher.plan(definition).compactMap(\.keyName)
                try ClusterKeyFolder.generate(at: definition.keysDirectory, workers: names)
                print(definition.keysDirectory)
                printError("wrote keys for the coordinator, the head and \(names.count) worker(s) to \(definition.keysDirectory); "
                           + "copy the folder to the same path on every host (each host needs only its own .key)")
            } else if let keys {
                let names = (workers ?? "").split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                try ClusterKeyFolder.generate(at: keys, workers: names)
                print(keys)
                printError("wrote keys for the coordinator, the head and \(names.count) worker(s) to \(keys)")
            } else if let out, let name {
                let result = try runCurveKeygen(outDirectory: out, name: name)
                print(result.publicKey)
                printError("wrote \(result.publicFile.path) and \(result.secretFile.path) (mode 0600)")
            } else {
                throw ValidationError("give --cluster FILE, --keys DIR [--workers NAMES], or --out DIR --name NAME")
            }
        }
    }
}
