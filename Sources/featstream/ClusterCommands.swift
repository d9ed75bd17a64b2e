import ArgumentParser
import ClusterRoles
import FeatureStore
import Foundation
import ImageInput
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

    func run() throws {
        try runRole("coordinator") {
            var options = CoordinatorOptions(bind: bind, headAddress: head, dataset: dataset.selection, journalPath: journal)
            options.shardSize = shardSize
            options.heartbeatMs = heartbeatMs
            options.deadAfterBeats = deadAfterBeats
            options.leaseMs = leaseMs
            options.commitWaitMs = commitWaitMs
            options.stallMs = stallMs
            let counters = try CoordinatorService(options: options).run()
            print("coordinator: job complete; \(counters.rejectedTotal) malformed frames rejected")
        }
    }
}

struct Head: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive feature batches, deduplicate them and commit each shard atomically to a store.",
        discussion: """
        Grants each worker a window of credits, so memory stays bounded when the head is slow.
        A shard is committed (and reported to the coordinator) only once every item arrived as a
        feature or a dead letter; a restarted head reopens its store and reports what it has.
        """)

    @Option(help: "Data address to bind, tcp://host:port.") var bind: String
    @Option(help: "The coordinator's control address.") var coordinator: String
    @Option(help: "Feature store folder.") var store: String
    @Option(help: "Batches each worker may have in flight.") var credits: UInt32 = 4
    @Option(help: "Element type kept in the store: f32 or f16.") var dtype = "f16"

    func run() throws {
        try runRole("head") {
            var options = HeadOptions(bind: bind, coordinator: coordinator, storePath: store)
            options.creditWindow = credits
            options.dtype = try parseDType(dtype)
            let statistics = try HeadService(options: options).run()
            print("head: \(statistics.committedShards) shards committed this run, \(statistics.rejectedFrames) malformed frames rejected")
        }
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

    func run() throws {
        try runRole("worker") {
            let id = name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
            var options = WorkerOptions(coordinator: coordinator, model: model, dataset: dataset.selection, workerID: id)
            options.batch = batch
            options.threads = threads
            options.decodeThreads = decodeThreads
            options.dtype = try parseDType(dtype)
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
