import ClusterLaunch
import FeatStreamTestSupport
import FeatureStore
import Coordination
import DatasetIndex
import Foundation
import NumpyFormat
import RoleMetrics
import Transport
import WireProtocol
import XCTest

/// A real cluster of `featstream` processes on localhost, for fault-injection tests.
///
/// Every role is a child process of the test with its own log file; `tearDown` kills whatever is left.
/// Roles start through the same `RoleCommand` builder as `featstream run` and `launch`, with CurveZMQ
/// keys made for the cluster (`keys`: the coordinator, the head and workers w0...w3), unless a test
/// of the plaintext path sets `security = .insecurePlaintext`.
final class ClusterHarness {
    static let home = featureStreamHome(anchor: #filePath)
    let directory: URL
    let control: String
    let data: String
    let items: Int
    let shardSize: Int
    var coordinator: Process?
    var head: Process?
    var workers: [String: Process] = [:]
    private var logs: [String: URL] = [:]
    private var started: [Process] = []

    /// A cluster over the first `items` images of the Fashion-MNIST demo's val split.
    init(items: Int = 200, shardSize: Int = 8) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        control = "tcp://127.0.0.1:\(try freeLocalPort())"
        data = "tcp://127.0.0.1:\(try freeLocalPort())"
        self.items = items
        self.shardSize = shardSize
        keys = try ClusterKeyFolder.generate(at: directory.appendingPathComponent("keys").path, workers: Self.workerNames)
        security = .keys(keys.url.path)
    }

    /// Worker names that have keys in `keys`.
    static let workerNames = ["w0", "w1", "w2", "w3"]
    /// The cluster's key folder.
    let keys: ClusterKeyFolder
    /// How every role started from now on secures its sockets.
    var security: RoleSecurityArguments

    /// A client's security as a holder of `role`'s key, talking to the server of `server`'s role (for raw test clients).
    func clientSecurity(as role: PeerRole, to server: PeerRole) throws -> ZMQSecurity {
        try .curveClient(keys: keys.pair(role), serverPublicKey: keys.publicKey(server), serverRole: server)
    }

    var dataset: DatasetArguments {
        if let manifest { return DatasetArguments(data: manifest) }
        return webdataset
            ? DatasetArguments(data: Self.home.appendingPathComponent("data/fashion-mnist-demo/webdataset/val-000000.tar").path, limit: items)
            : DatasetArguments(data: Self.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder").path, split: "val", limit: items)
    }

    /// The demo's val split by default; `webdataset` uses its val shard, which has no train/val split of its own.
    var webdataset = false

    /// A manifest to use instead of the demo's folders, when set.
    var manifest: String?

    var datasetArguments: [String] { dataset.arguments }

    var storeURL: URL { directory.appendingPathComponent("store") }

    func startCoordinator(extra: [String] = []) throws {
        var command = RoleCommand.Coordinator(bind: control, headAddress: data, dataset: dataset,
                                              journal: journalPath, security: security)
        command.shardSize = shardSize
        command.tuning = ["--heartbeat-ms": 200, "--dead-after-beats": 5, "--lease-ms": 4000, "--commit-wait-ms": 3000, "--stall-ms": 10000]
        command.metricsPort = try metricsPort("coordinator")
        coordinator = try spawn("coordinator", RoleCommand.coordinator(command).arguments + extra)
    }

    func startHead(credits: Int = 4, extra: [String] = []) throws {
        var command = RoleCommand.Head(bind: data, coordinator: control, store: storeURL.path, security: security)
        command.credits = credits
        command.metricsPort = try metricsPort("head")
        head = try spawn("head", RoleCommand.head(command).arguments + extra)
    }

    /// The usual job: a coordinator, a head and two workers, `w0` and `w1`.
    func startJob() throws {
        try startCoordinator()
        try startHead()
        try startWorker("w0")
        try startWorker("w1")
    }

    /// Starts worker `name` with the key of the same name (`keyName` to use another worker's key).
    func startWorker(_ name: String, keyName: String? = nil, extra: [String] = []) throws {
        var command = RoleCommand.Worker(coordinator: control, model: Self.home.appendingPathComponent("models/efficientnet-lite0").path,
                                         name: name, security: security)
        command.batch = 4
        command.threads = 1
        command.keyName = keyName
        command.metricsPort = try metricsPort(name)
        workers[name] = try spawn(name, RoleCommand.worker(command).arguments + extra)
    }

    /// Waits for the coordinator to finish the job; fails the test with the logs if it does not.
    func waitForCompletion(timeout: TimeInterval = 180, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(timeout)
        while let coordinator, coordinator.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        guard let coordinator, !coordinator.isRunning else {
            XCTFail("job did not complete in \(timeout) s\n\(logTails())", file: file, line: line)
            return
        }
        XCTAssertEqual(coordinator.terminationStatus, 0, "coordinator failed\n\(logTails())", file: file, line: line)
        // The head exits on the coordinator's shutdown; give it a moment to write its statistics.
        let headDeadline = Date().addingTimeInterval(10)
        while let head, head.isRunning, Date() < headDeadline { Thread.sleep(forTimeInterval: 0.1) }
    }

    /// The job's dataset index, as the coordinator built it in the job folder.
    func jobIndex() throws -> IndexedDataset {
        try IndexedDataset(path: directory.appendingPathComponent("dataset.index").path)
    }

    /// The coordinator's journal.
    var journalPath: String { directory.appendingPathComponent("journal").path }

    /// The job's shard plan as the coordinator cut it: its dataset index and shard size, bound to the job id
    /// its journal keeps (JOURNAL.md version 4).
    func jobPlan() throws -> IndexShardPlan {
        let header = CoordinatorJournal.existingHeader(at: journalPath)
        return IndexShardPlan(index: try jobIndex(), shardSize: shardSize, fingerprint: header.flatMap { $0.version >= 4 ? $0.fingerprint : nil })
    }

    /// Every entry of the job (each indexed item, and each input the scan rejected) is in the store exactly
    /// once, as a feature row or a dead letter; dead letters are resolved through the plan (shard, offset).
    func assertExactlyOnce(file: StaticString = #filePath, line: UInt = #line) throws {
        let store = try FeatureStore.open(at: storeURL)
        let plan = try jobPlan(), index = try jobIndex()
        var expected = Set(0..<UInt64(index.count))
        for letter in 0..<index.deadLetterCount { expected.insert(ItemRef.rejectedIndexBase + UInt64(letter)) }
        var shardItems: [UInt32: [ItemRef]] = [:]
        let report = store.exactlyOnceReport(expectedIndexes: expected) { shardID, entry in
            if shardItems[shardID] == nil { shardItems[shardID] = plan.items(of: shardID) }
            return shardItems[shardID]!.indices.contains(Int(entry.offset)) ? shardItems[shardID]![Int(entry.offset)].index : nil
        }
        XCTAssertTrue(report.isExactlyOnce, "not exactly once: \(report)\n\(logTails())", file: file, line: line)
        XCTAssertEqual(store.inspect().rows + store.inspect().deadLetters, plan.entryCount, file: file, line: line)
    }

    /// The dataset positions of the job's items: `0..<count` of the coordinator's index (INDEX.md §1).
    func expectedIndexes() throws -> Set<UInt64> {
        Set(0..<UInt64(try jobIndex().count))
    }

    /// Shards committed in the store so far, as a read-only open sees them (0 before the store exists).
    var committedShards: Int {
        (try? FeatureStore.open(at: storeURL).committedShards.count) ?? 0
    }

    /// Waits until at least `count` shards are committed, so a fault lands in the middle of the job.
    func waitForCommittedShards(_ count: Int, timeout: TimeInterval = 120, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(timeout)
        while committedShards < count && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertGreaterThanOrEqual(committedShards, count, "the job did not get going\n\(logTails())", file: file, line: line)
        XCTAssertLessThan(committedShards, items / shardSize, "the job ended before the fault", file: file, line: line)
    }

    // MARK: Machine-readable state

    /// Metrics port of each role by name (`coordinator`, `head`, workers); a restarted role keeps its port.
    private(set) var metricsPorts: [String: Int] = [:]

    private func metricsPort(_ role: String) throws -> Int {
        if let port = metricsPorts[role] { return port }
        let port = try freeLocalPort()
        metricsPorts[role] = port
        return port
    }

    /// `featstream status --json` against the coordinator (with the store), decoded; nil while it does not answer.
    func status() -> JobStatus? {
        guard let port = metricsPorts["coordinator"],
              let run = try? runProcess(productsDirectory.appendingPathComponent("featstream"),
                                        ["status", "http://127.0.0.1:\(port)", "--json", "--store", storeURL.path]),
              run.status == 0, let line = run.output.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else { return nil }
        return try? JSONDecoder().decode(JobStatus.self, from: Data(line.utf8))
    }

    /// The samples `role`'s metrics endpoint serves now; empty while it does not answer.
    func metrics(_ role: String) -> [MetricSample] {
        guard let port = metricsPorts[role], let text = try? fetchMetrics("http://127.0.0.1:\(port)", timeoutSeconds: 2) else { return [] }
        return MetricSample.parse(text)
    }

    /// Whether `role`'s metrics endpoint answers (a role serves metrics once its sockets are bound).
    func servesMetrics(_ role: String) -> Bool {
        guard let port = metricsPorts[role] else { return false }
        return (try? fetchMetrics("http://127.0.0.1:\(port)", timeoutSeconds: 2)) != nil
    }

    /// Frames `role` rejected so far, over every reason (its metrics).
    func rejectedFrames(_ role: String) -> Int {
        Int(metrics(role).filter { $0.name == MetricName.rejectedFrames }.map(\.value).reduce(0, +))
    }

    /// Polls `condition` every 50 ms until it holds; fails the test with the logs after `timeout` seconds.
    @discardableResult
    func waitUntil(_ what: String, timeout: TimeInterval = 60, file: StaticString = #filePath, line: UInt = #line,
                   _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        if condition() { return true }
        XCTFail("not within \(timeout) s: \(what)\n\(logTails())", file: file, line: line)
        return false
    }

    func kill(_ process: Process?, signal: Int32 = SIGKILL) {
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, signal)
        if signal == SIGKILL { process.waitUntilExit() }
    }

    /// Starts `featstream run` with the Lite0 model on `dataset` (the demo's val images by default),
    /// `arguments` after those, its output in `<directory>/<logName>.log`; the caller ends it.
    func startRun(_ arguments: [String], logName: String, environment: [String: String] = [:],
                  dataset: [String] = ["--data", ClusterHarness.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder").path, "--split", "val"])
        throws -> (Process, URL) {
        let run = Process()
        run.executableURL = productsDirectory.appendingPathComponent("featstream")
        run.arguments = ["run", "--model", Self.home.appendingPathComponent("models/efficientnet-lite0").path] + dataset + arguments
        if !environment.isEmpty { run.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let log = directory.appendingPathComponent("\(logName).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        run.standardOutput = try FileHandle(forWritingTo: log)
        run.standardError = run.standardOutput
        try run.run()
        return (run, log)
    }

    /// Resident memory of a process in KiB, from /proc.
    func residentKiB(_ process: Process) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }

    func log(_ name: String) -> String {
        logs[name].flatMap { try? String(contentsOf: $0, encoding: .utf8) } ?? ""
    }

    func logTails() -> String {
        logs.keys.sorted().map { name in
            let lines = log(name).split(separator: "\n").suffix(15)
            return "--- \(name)\n" + lines.joined(separator: "\n")
        }.joined(separator: "\n")
    }

    func shutdown() {
        for process in started where process.isRunning {
            Foundation.kill(process.processIdentifier, SIGCONT)
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    private func spawn(_ name: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = productsDirectory.appendingPathComponent("featstream")
        process.arguments = arguments
        var logName = name
        var generation = 1
        while logs[logName] != nil {
            generation += 1
            logName = "\(name)#\(generation)"
        }
        let logURL = directory.appendingPathComponent("\(logName).log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let handle = try FileHandle(forWritingTo: logURL)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        logs[logName] = logURL
        started.append(process)
        return process
    }
}
