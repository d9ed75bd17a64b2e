import FeatStreamTestSupport
import FeatureStore
import Foundation
import RoleMetrics
import XCTest

/// `featstream launch` across network-namespace hosts made by Cluster/netns-cluster.sh: a real
/// job over ssh, unreachable hosts, a role that fails to start, Ctrl-C, a partitioned worker, and
/// after each of them no featstream process left in any namespace. Needs root and `ip netns`.
/// The job's progress is read from `featstream status --json` (the coordinator's metrics, port 9100 in
/// fs-h1) and from the store, never from the roles' log wording.
final class LaunchClusterTests: XCTestCase {
    static let script = repositoryRoot.appendingPathComponent("Cluster/netns-cluster.sh").path
    static let clusterFile = repositoryRoot.appendingPathComponent("Cluster/netns.toml").path
    static let model = repositoryRoot.appendingPathComponent(".featstream/models/efficientnet-lite0").path
    static let data = repositoryRoot.appendingPathComponent(".featstream/data/fashion-mnist-demo/imagefolder").path
    static var binary: String { productsDirectory.appendingPathComponent("featstream").path }

    var output: URL!

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("LaunchClusterTests need root (network namespaces and sshd); run the tests as root") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip"),
              (try? runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "netns", "list"]).status) == 0 else {
            throw XCTSkip("LaunchClusterTests need iproute2 with `ip netns` (apt-get install iproute2)")
        }
        guard FileManager.default.fileExists(atPath: Self.model), FileManager.default.fileExists(atPath: Self.data) else {
            throw XCTSkip("the demo model and dataset are missing; run Ops/setup.sh first")
        }
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else { throw XCTSkip("no featstream binary at \(Self.binary)") }
        // A cluster left over from an interrupted run must not leak into this test.
        _ = try? runProcess(URL(fileURLWithPath: Self.script), ["down"])
        output = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-launch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        let folder = output!
        addTeardownBlock {
            _ = try? runProcess(URL(fileURLWithPath: Self.script), ["down"])
            try? FileManager.default.removeItem(at: folder)
        }
    }

    override func tearDown() {
        _ = try? runProcess(URL(fileURLWithPath: Self.script), ["down"])
        super.tearDown()
    }

    // MARK: Tests

    /// Coordinator on fs-h1, head on fs-h2, one worker each on fs-h3 and fs-h4; 200 rows in the store.
    func testFullJobAcrossNamespaceHosts() throws {
        try clusterUp(4)
        let started = Date()
        let run = try LaunchRun(clusterFile: Self.clusterFile, environment: environment())
        let watch = StatusWatch(store: storeURL, while: run)
        let status = run.wait(timeout: 240)
        let text = run.text
        print("launch took \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        XCTAssertEqual(status, 0, text)
        watch.stop()
        for (host, role) in [("fs-h1", "coordinator"), ("fs-h2", "head"), ("fs-h3", "worker1"), ("fs-h4", "worker2")] {
            XCTAssertTrue(text.contains("[\(host) \(role)] "), "no output from \(role) on \(host)\n\(text)")
            XCTAssertNotNil(text.range(of: "launch:   \(host)  \(role) +[0-9]+ +exit 0", options: .regularExpression),
                            "the closing table lacks \(role) on \(host) with exit 0\n\(text)")
        }
        XCTAssertEqual(watch.workersSeen["worker1@fs-h3"].map { _ in true }, true, "status never listed worker1@fs-h3: \(watch.workersSeen)")
        XCTAssertEqual(watch.workersSeen["worker2@fs-h4"].map { _ in true }, true, "status never listed worker2@fs-h4: \(watch.workersSeen)")
        XCTAssertEqual(watch.latest?.shards.total, 13, "status --json: \(String(describing: watch.latest))")
        // netns.toml's [keys] table: the coordinator's socket runs CurveZMQ, and no secret key reaches the output.
        XCTAssertNotNil(text.range(of: "\\[fs-h1 coordinator\\] .*security: ", options: .regularExpression), text)
        let secret = (try? String(contentsOf: output.appendingPathComponent("keys/workers/worker1.key"), encoding: .utf8))?
            .split(separator: "\n").last.map(String.init) ?? "unreadable"
        XCTAssertFalse(text.contains(secret), "a secret key appears in the launch output")
        XCTAssertEqual(try FeatureStore.open(at: storeURL).committedShards.count, 13, "the store lacks shards")
        XCTAssertTrue(text.contains("launch: job complete"), text)
        try assertStoreHasEveryRowOnce()
        assertNoFeatstreamProcesses()
        XCTAssertEqual(pidFiles(), [], "pid files left behind")
    }

    /// One key per worker: with worker2's public key removed from the folder (revoked), worker2 is
    /// refused by both servers, worker1 does the whole job, and every row is stored once.
    func testRevokedWorkerKeyIsRefusedAndTheJobCompletes() throws {
        try clusterUp(4)
        let environment = environment()
        try FileManager.default.removeItem(at: output.appendingPathComponent("keys/workers/worker2.pub"))
        let run = try LaunchRun(clusterFile: Self.clusterFile, environment: environment)
        let watch = StatusWatch(store: storeURL, while: run)
        let status = run.wait(timeout: 240)
        let text = run.text
        watch.stop()
        XCTAssertEqual(status, 0, text)
        XCTAssertNotNil(watch.workersSeen["worker1@fs-h3"], "status never listed worker1: \(watch.workersSeen)")
        XCTAssertNil(watch.workersSeen["worker2@fs-h4"], "a revoked worker joined\n\(text)")
        XCTAssertGreaterThan(watch.mostRejected["curve_denied"] ?? 0, 0, "the coordinator counted no refused handshake: \(watch.mostRejected)")
        try assertStoreHasEveryRowOnce()
        assertNoFeatstreamProcesses()
    }

    /// A destination that does not answer stops the launch before anything starts.
    func testUnreachableHostStartsNothing() throws {
        try clusterUp(4)
        // A bogus address in the test /24: nothing answers ARP there.
        let bogus = try variant(name: "bogus.toml") { $0.replacingOccurrences(of: "host = \"fs-h4\"", with: "host = \"root@10.77.0.99\"") }
        var run = try LaunchRun(clusterFile: bogus, environment: environment())
        XCTAssertEqual(run.wait(timeout: 60), 2, run.text)
        XCTAssertTrue(run.text.contains("host root@10.77.0.99 (worker2) is unreachable"), run.text)
        XCTAssertTrue(run.text.contains("nothing was started"), run.text)
        XCTAssertFalse(run.text.contains("launch: started"), run.text)
        assertNoFeatstreamProcesses()

        // A host that exists but runs no sshd.
        let pidFile = stateDirectory.appendingPathComponent("fs-h3/sshd.pid").path
        let sshd = try XCTUnwrap(Int32(String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        XCTAssertEqual(kill(sshd, SIGTERM), 0)
        Thread.sleep(forTimeInterval: 0.3)
        run = try LaunchRun(clusterFile: Self.clusterFile, environment: environment())
        XCTAssertEqual(run.wait(timeout: 60), 2, run.text)
        XCTAssertTrue(run.text.contains("host fs-h3 (worker1) is unreachable"), run.text)
        XCTAssertTrue(run.text.contains("Connection refused"), run.text)
        XCTAssertFalse(run.text.contains("launch: started"), run.text)
        assertNoFeatstreamProcesses()
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.appendingPathComponent("store").path), "something ran")
    }

    /// A worker that cannot load its model is reported by name and everything is torn down.
    func testRoleThatFailsToStartTearsDownEverything() throws {
        try clusterUp(4)
        let broken = try variant(name: "broken.toml") {
            $0.replacingOccurrences(of: "host = \"fs-h4\"", with: "host = \"fs-h4\"\nmodel = \"/nonexistent/model\"")
        }
        let run = try LaunchRun(clusterFile: broken, environment: environment())
        XCTAssertEqual(run.wait(timeout: 120), 1, run.text)
        XCTAssertTrue(run.text.contains("worker2 on fs-h4 failed to start"), run.text)
        XCTAssertNotNil(run.text.range(of: "launch:   fs-h1  coordinator +[0-9]+ +.*stopped by launch", options: .regularExpression), run.text)
        assertNoFeatstreamProcesses()
        XCTAssertEqual(pidFiles(), [], "pid files left behind")
    }

    /// SIGINT (Ctrl-C) stops every role and leaves nothing behind.
    func testInterruptStopsEverything() throws {
        try clusterUp(4)
        let run = try LaunchRun(clusterFile: Self.clusterFile, environment: environment())
        XCTAssertNotNil(waitForStatus(run, "both workers joined", timeout: 60) { $0.workers.count == 2 }, run.text)
        kill(run.pid, SIGINT)
        XCTAssertEqual(run.wait(timeout: 60), 130, run.text)
        XCTAssertTrue(run.text.contains("interrupted by signal \(SIGINT)"), run.text)
        assertNoFeatstreamProcesses()
        XCTAssertEqual(pidFiles(), [], "pid files left behind")
    }

    /// The launcher killed with SIGKILL cannot clean up; the remote wrappers see their ssh stdin
    /// close and stop their roles themselves.
    func testKilledLauncherLeavesNoOrphans() throws {
        try clusterUp(4)
        let run = try LaunchRun(clusterFile: Self.clusterFile, environment: environment())
        XCTAssertNotNil(waitForStatus(run, "both workers joined", timeout: 60) { $0.workers.count == 2 }, run.text)
        kill(run.pid, SIGKILL)
        _ = run.wait(timeout: 10)
        // A role whose ssh session was still starting may appear after the kill; its wrapper stops it
        // once it sees stdin closed. So wait until none has been seen for 2 s in a row.
        let deadline = Date().addingTimeInterval(20)
        var emptySince: Date?
        while Date() < deadline {
            if featstreamProcesses().isEmpty {
                emptySince = emptySince ?? Date()
                if Date().timeIntervalSince(emptySince!) >= 2 { break }
            } else {
                emptySince = nil
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        assertNoFeatstreamProcesses()
    }

    /// fs-h4's cable is pulled for longer than a lease (1.5 s here) while the job runs: its shards go to
    /// fs-h3, and the store still holds every image exactly once.
    func testPartitionedWorkerJobCompletesExactlyOnce() throws {
        try clusterUp(4)
        let file = try variant(name: "partition.toml") {
            $0.replacingOccurrences(of: "finish_seconds = 30", with: "finish_seconds = 5")
                .replacingOccurrences(of: "shard_size = 16", with: "shard_size = 8")
                .replacingOccurrences(of: "batch = 8", with: "batch = 4")
                .replacingOccurrences(of: "heartbeat_ms = 250", with: "heartbeat_ms = 100")
                .replacingOccurrences(of: "lease_ms = 3000", with: "lease_ms = 1500")
        }
        let run = try LaunchRun(clusterFile: file, environment: environment())
        let watch = StatusWatch(store: storeURL, while: run)
        // Cut as soon as fs-h4's worker holds a lease.
        let before = try XCTUnwrap(waitForStatus(run, "worker2 holds a lease", timeout: 120) {
            $0.workers.contains { $0.name == "worker2@fs-h4" && $0.shard != nil }
        }, run.text)
        let held = before.workers.first { $0.name == "worker2@fs-h4" }!.shard!
        func stored(_ shard: Int) -> Bool { (try? FeatureStore.open(at: storeURL).committedShards.contains(UInt32(shard))) == true }
        let cut = try runProcess(URL(fileURLWithPath: Self.script), ["cut", "fs-h4"])
        XCTAssertEqual(cut.status, 0, cut.output)
        let storedAtCut = stored(held)
        // Heal once the coordinator revoked a lease, or the shard worker2 held was committed without it
        // (by the other worker, or a backup attempt at the tail).
        let moved = waitForStatus(run, "shard \(held) moved on while worker2 is cut off", timeout: 120) { status in
            status.shards.reassigned > before.shards.reassigned || (!storedAtCut && stored(held))
        }
        let heal = try runProcess(URL(fileURLWithPath: Self.script), ["heal", "fs-h4"])
        XCTAssertEqual(heal.status, 0, heal.output)
        let status = run.wait(timeout: 240)
        if ProcessInfo.processInfo.environment["FEATSTREAM_TEST_VERBOSE"] != nil { print(run.text) }
        XCTAssertEqual(status, 0, run.text)
        watch.stop()
        // The shard fs-h4 held moved on (reassigned, or a backup copy committed first) while it was cut off.
        XCTAssertNotNil(moved, "the coordinator never moved fs-h4's shard \(held) elsewhere\n\(run.text)")
        XCTAssertNotNil(run.text.range(of: "launch:   fs-h2  head +[0-9]+ +exit 0", options: .regularExpression), run.text)
        try assertStoreHasEveryRowOnce()
        assertNoFeatstreamProcesses()
    }

    /// A worker cut off for longer than its lease loses its shard to the other worker; when its link
    /// comes back it rejoins and is leased new shards, and its late batches add nothing twice.
    func testPartitionedWorkerRejoinsAfterTheLinkReturns() throws {
        try clusterUp(4)
        let file = try longJobVariant(name: "rejoin.toml") { text in
            text.replacingOccurrences(of: "heartbeat_ms = 250", with: "heartbeat_ms = 100")
                .replacingOccurrences(of: "lease_ms = 3000", with: "lease_ms = 1500")
        }
        let run = try LaunchRun(clusterFile: file, environment: environment())
        let first = try XCTUnwrap(waitForStatus(run, "worker2 holds a lease", timeout: 120) { $0.workers.contains { $0.name == "worker2@fs-h4" && $0.shard != nil } },
                                  run.text)
        XCTAssertEqual(try runProcess(URL(fileURLWithPath: Self.script), ["cut", "fs-h4"]).status, 0)
        // The coordinator gives up on the silent worker: its lease is revoked and goes back to the queue.
        let gaveUp = waitForStatus(run, "worker2's lease revoked", timeout: 30) { $0.shards.reassigned > first.shards.reassigned }
        XCTAssertNotNil(gaveUp, "the coordinator never gave up on the cut worker\n\(run.text)")
        XCTAssertEqual(try runProcess(URL(fileURLWithPath: Self.script), ["heal", "fs-h4"]).status, 0)
        // Back on the network it rejoins and is leased a new shard: its series are fresh again (a heartbeat
        // age well under the dead-after time) and name a shard other than the one it held when cut off.
        let heldAtCut = first.workers.first { $0.name == "worker2@fs-h4" }?.shard
        let leasedAgain = waitForStatus(run, "worker2 leased again after the heal", timeout: 240) { status in
            status.workers.contains { $0.name == "worker2@fs-h4" && $0.shard != nil && $0.shard != heldAtCut && ($0.heartbeatAgeSeconds ?? 9) < 0.5 }
        }
        XCTAssertNotNil(leasedAgain, "the healed worker was never leased a shard again\n\(run.text)")
        let status = run.wait(timeout: 300)
        XCTAssertEqual(status, 0, run.text)
        XCTAssertEqual(try FeatureStore.open(at: storeURL).inspect().rows, 1200)
        assertNoFeatstreamProcesses()
    }

    /// A worker killed mid-job (as a poison item's decoder crash would) is started again by `launch`
    /// (PROTOCOL.md §8.3.7 needs workers to come back): a new worker process appears on its host, and the
    /// job completes with every image once.
    func testAWorkerKilledMidJobIsStartedAgain() throws {
        try clusterUp(4)
        let file = try longJobVariant(name: "restart.toml") { $0.replacingOccurrences(of: "startup_seconds = 3", with: "startup_seconds = 1") }
        let started = Date()
        let run = try LaunchRun(clusterFile: file, environment: environment())
        // Well past the start-up window (1 s from when every role is started): a role that fails within it
        // stops the whole launch instead.
        _ = try XCTUnwrap(waitForStatus(run, "worker2 holds a lease after the start-up window", timeout: 120) { status in
            Date().timeIntervalSince(started) > 6 && status.workers.contains { $0.name == "worker2@fs-h4" && $0.shard != nil }
        }, run.text)
        let before = featstreamProcesses().filter { $0.hasPrefix("fs-h4:") }
        XCTAssertEqual(before.count, 1, "one featstream process on fs-h4: \(before)")
        for entry in before { kill(Int32(entry.split(separator: ":")[1])!, SIGKILL) }
        let deadline = Date().addingTimeInterval(60)
        var after: [String] = []
        while Date() < deadline && run.isRunning {
            after = featstreamProcesses().filter { $0.hasPrefix("fs-h4:") && !before.contains($0) }
            if !after.isEmpty { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        XCTAssertFalse(after.isEmpty, "no new worker process on fs-h4 after the kill\n\(run.text)")
        let status = run.wait(timeout: 300)
        XCTAssertEqual(status, 0, run.text)
        let summary = try FeatureStore.open(at: storeURL).inspect()
        XCTAssertEqual(summary.rows, 1200, summary.description)
        XCTAssertEqual(summary.deadLetters, 0, summary.description)
        assertNoFeatstreamProcesses()
    }

    // MARK: Helpers

    var storeURL: URL { output.appendingPathComponent("store") }

    /// Polls `status --json` until `condition` holds; nil after `timeout` s or once the launcher has exited.
    func waitForStatus(_ run: LaunchRun, _ what: String, timeout: Double, _ condition: (JobStatus) -> Bool) -> JobStatus? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && run.isRunning {
            if let status = StatusWatch.read(store: storeURL), condition(status) { return status }
            Thread.sleep(forTimeInterval: 0.2)
        }
        print("status never showed: \(what)")
        return nil
    }

    var stateDirectory: URL {
        URL(fileURLWithPath: ProcessInfo.processInfo.environment["FEATSTREAM_NETNS_STATE"] ?? "/tmp/featstream-netns")
    }

    func clusterUp(_ hosts: Int) throws {
        let up = try runProcess(URL(fileURLWithPath: Self.script), ["up", String(hosts)])
        guard up.status == 0 else { throw XCTSkip("netns-cluster.sh up \(hosts) failed (no sshd, or namespaces not permitted here):\n\(up.output)") }
    }

    /// The key folder netns.toml's [keys] table names (one key per worker), made the way an operator
    /// would: `featstream keygen --cluster FILE`. Kept if it exists.
    func makeKeys() throws {
        let result = try runProcess(URL(fileURLWithPath: "/usr/bin/env"),
                                    ["FEATSTREAM_BIN=\(Self.binary)", "FEATSTREAM_REPO=\(repositoryRoot.path)", "FEATSTREAM_LAUNCH_OUT=\(output.path)",
                                     Self.binary, "keygen", "--cluster", Self.clusterFile])
        XCTAssertEqual(result.status, 0, result.output)
    }

    func environment() -> [String: String] {
        // netns.toml runs every socket with CurveZMQ; its key folder lives in the test's output folder.
        try? makeKeys()
        var environment = ProcessInfo.processInfo.environment
        environment["FEATSTREAM_BIN"] = Self.binary
        environment["FEATSTREAM_REPO"] = repositoryRoot.path
        environment["FEATSTREAM_LAUNCH_OUT"] = output.path
        return environment
    }

    /// A copy of netns.toml, changed by `edit`, in the test's output folder.
    func variant(name: String, _ edit: (String) -> String) throws -> String {
        let text = edit(try String(contentsOfFile: Self.clusterFile, encoding: .utf8))
        let url = output.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    /// A variant over all 1,200 demo images in batches of 4 (a job long enough to act on mid-way), then `edit`.
    func longJobVariant(name: String, _ edit: (String) -> String) throws -> String {
        try variant(name: name) { text in
            edit(text.replacingOccurrences(of: "split = \"val\"\n", with: "").replacingOccurrences(of: "batch = 8", with: "batch = 4"))
        }
    }

    func assertStoreHasEveryRowOnce(file: StaticString = #filePath, line: UInt = #line) throws {
        let summary = try FeatureStore.open(at: storeURL).inspect()
        XCTAssertEqual(summary.rows, 200, summary.description, file: file, line: line)
        XCTAssertEqual(summary.deadLetters, 0, summary.description, file: file, line: line)
        XCTAssertEqual(summary.problems, [], summary.description, file: file, line: line)
    }

    func pidFiles() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: output.appendingPathComponent("run").path)) ?? []
    }

    /// featstream processes in any fs-* namespace, as "namespace:pid".
    func featstreamProcesses() -> [String] {
        guard let list = try? runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "netns", "list"]) else { return [] }
        var found: [String] = []
        for namespace in list.output.split(separator: "\n").compactMap({ $0.split(separator: " ").first.map(String.init) })
        where namespace.hasPrefix("fs-") {
            guard let pids = try? runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "netns", "pids", namespace]) else { continue }
            for pid in pids.output.split(separator: "\n") {
                let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? ""
                if comm.trimmingCharacters(in: .whitespacesAndNewlines) == "featstream" { found.append("\(namespace):\(pid)") }
            }
        }
        return found
    }

    func assertNoFeatstreamProcesses(file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(featstreamProcesses(), [], "featstream processes left in the namespaces", file: file, line: line)
    }
}

/// `ip netns exec fs-ctl featstream launch FILE`, with its output collected as it arrives.
final class LaunchRun: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var collected = Data()
    private let finishedReading = DispatchSemaphore(value: 0)

    init(clusterFile: String, environment: [String: String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ip", "netns", "exec", "fs-ctl", LaunchClusterTests.binary, "launch", clusterFile]
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                self.lock.withLock { self.collected.append(chunk) }
            }
            self.finishedReading.signal()
        }
    }

    /// Whether the launcher is still running.
    var isRunning: Bool { process.isRunning }

    /// `ip netns exec` execs the launcher in place, so this is the launcher's own pid.
    var pid: Int32 { process.processIdentifier }

    var text: String { lock.withLock { String(decoding: collected, as: UTF8.self) } }

    func waitFor(_ fragment: String, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if text.contains(fragment) { return true }
            if !process.isRunning { return text.contains(fragment) }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    /// The exit status, or -1 after killing a launcher that overran `timeout`.
    func wait(timeout: Double) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            Thread.sleep(forTimeInterval: 15)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            _ = finishedReading.wait(timeout: .now() + 5)
            return -1
        }
        process.waitUntilExit()
        _ = finishedReading.wait(timeout: .now() + 5)
        return process.terminationStatus
    }
}

/// `featstream status --json` of the test cluster's coordinator (metrics on 127.0.0.1:9100 in fs-h1, as
/// netns.toml sets), polled in the background while a launch runs: what it saw, for asserting afterwards.
final class StatusWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true
    private var _latest: JobStatus?
    private var _workersSeen: [String: String] = [:]
    private var _mostRejected: [String: Int] = [:]

    /// One read: nil while the coordinator does not answer.
    static func read(store: URL) -> JobStatus? {
        guard let result = try? runProcess(URL(fileURLWithPath: "/usr/bin/env"),
                                           ["ip", "netns", "exec", "fs-h1", LaunchClusterTests.binary, "status", "http://127.0.0.1:9100",
                                            "--json", "--store", store.path]),
              result.status == 0, let line = result.output.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else { return nil }
        return try? JSONDecoder().decode(JobStatus.self, from: Data(line.utf8))
    }

    init(store: URL, while run: LaunchRun) {
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) && run.isRunning {
                if let status = Self.read(store: store) {
                    lock.withLock {
                        _latest = status
                        for worker in status.workers { _workersSeen[worker.name] = worker.host }
                        _mostRejected.merge(status.rejectedFrames) { max($0, $1) }
                    }
                }
                Thread.sleep(forTimeInterval: 0.25)
            }
        }
    }

    func stop() { lock.withLock { running = false } }
    /// The last status read.
    var latest: JobStatus? { lock.withLock { _latest } }
    /// Every worker any status listed, name to host.
    var workersSeen: [String: String] { lock.withLock { _workersSeen } }
    /// The highest rejected-frame count seen for each reason.
    var mostRejected: [String: Int] { lock.withLock { _mostRejected } }
}
