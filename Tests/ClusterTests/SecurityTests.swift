import FeatStreamTestSupport
import FeatureStore
import Foundation
import RoleMetrics
import Transport
import WireProtocol
import XCTest

/// Secure by default, tried the way an attacker on the same host or network would: real processes,
/// real sockets, counts read from the roles' metrics.
final class SecurityTests: XCTestCase {
    var cluster: ClusterHarness!

    override func setUpWithError() throws { cluster = try ClusterHarness(items: 64) }
    override func tearDown() { cluster.shutdown() }

    /// The sum of `featstream_rejected_frames_total` samples with `reason` at `port` (0 when absent or unreachable).
    func rejected(_ reason: String, port: Int) -> Double {
        guard let text = try? fetchMetrics("http://127.0.0.1:\(port)", timeoutSeconds: 2) else { return 0 }
        return MetricSample.parse(text).filter { $0.name == "featstream_rejected_frames_total" && $0.labels["reason"] == reason }
            .map(\.value).reduce(0, +)
    }

    func metric(_ name: String, port: Int) -> [MetricSample] {
        MetricSample.parse((try? fetchMetrics("http://127.0.0.1:\(port)", timeoutSeconds: 2)) ?? "").filter { $0.name == name }
    }

    /// Waits until `condition` holds or `seconds` pass; returns whether it held.
    func eventually(_ seconds: Double = 20, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition()
    }

    /// Every message an attacker would send to take over a job.
    static let attack: [Message] = [
        .hello(workerID: "attacker", host: "x", pid: 1, capabilities: [:]),
        .shardRequest(workerID: "attacker"),
        .headHello(epoch: 1, committed: Array(0..<64), plan: 0),
        .shardCommitted(shardID: 0, attempt: 1, items: 8, deadLetters: 0),
        .shutdown(reason: "forged"),
    ]

    /// A default `featstream run` (nothing configured): a plaintext client and a client with a stranger's
    /// CURVE key, on the coordinator's and the head's sockets, cannot lease, commit, send batches or shut
    /// anything down; every attempt is counted; no featstream listener is on a wildcard address.
    func testRawClientsAgainstADefaultRunGetNothing() throws {
        let out = cluster.directory.appendingPathComponent("run")
        let (run, log) = try cluster.startRun(["--limit", "200", "--shard-size", "8", "--workers", "1", "--batch", "4", "--no-train",
                                               "--out", out.path], logName: "run")
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL); run.waitUntilExit() } }
        func runLog() -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        struct State: Decodable {
            var coordinator: String, head: String, encrypted: Bool, publicKeys: [String: String], metricsPorts: [String: Int]
        }
        var state: State?
        XCTAssertTrue(eventually { state = try? JSONDecoder().decode(State.self, from: Data(contentsOf: out.appendingPathComponent("run.json"))); return state != nil })
        let s = try XCTUnwrap(state, runLog())
        XCTAssertTrue(s.encrypted)
        let coordinatorPort = s.metricsPorts["coordinator"]!, headPort = s.metricsPorts["head"]!
        XCTAssertTrue(eventually { !metric("featstream_shards", port: coordinatorPort).isEmpty && (try? fetchMetrics("http://127.0.0.1:\(headPort)")) != nil },
                      "the roles' metrics never came up\n\(runLog())")

        // No featstream listener on a wildcard address: control, data and metrics are all on loopback.
        let listeners = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["ss", "-Hltnp"])
        let ours = listeners.output.split(separator: "\n").filter { $0.contains("featstream") }
        XCTAssertGreaterThanOrEqual(ours.count, 4, "expected the coordinator's and the head's sockets and metrics listeners\n\(listeners.output)")
        for line in ours {
            let local = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first.map(String.init) ?? ""
            XCTAssertTrue(local.hasPrefix("127.0.0.1:"), "a featstream listener not on loopback: \(line)")
        }

        // The attackers: plaintext, and a stranger's key that knows the servers' public keys.
        let stranger = try CurveKeyPair.generate()
        let context = ZMQContext()
        var sockets: [ZMQSocket] = []
        for (address, serverKey) in [(s.coordinator, s.publicKeys["coordinator"]!), (s.head, s.publicKeys["head"]!)] {
            for security in [ZMQSecurity.none, try .curveClient(keys: stranger, serverPublicKey: serverKey)] {
                let socket = try ZMQSocket(context, .dealer, security: security)
                try socket.connect(address)
                for message in Self.attack { _ = try socket.send([FrameCodec.encode(message)]) }
                sockets.append(socket)
            }
        }
        // Each server counts the plaintext knock (a failed handshake) and the stranger's key (a ZAP denial).
        for port in [coordinatorPort, headPort] {
            XCTAssertTrue(eventually { rejected("handshake_failed", port: port) >= 1 && rejected("curve_denied", port: port) >= 1 },
                          "attempts on port \(port) not counted: handshake_failed \(rejected("handshake_failed", port: port)), "
                          + "curve_denied \(rejected("curve_denied", port: port))\n\(runLog())")
        }
        // Nothing reached a role: the attackers never got a reply, and the job completes with every item once.
        for socket in sockets { XCTAssertNil(try socket.receive(), "an attacker got a reply") }
        let deadline = Date().addingTimeInterval(240)
        while run.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        XCTAssertEqual(run.terminationStatus, 0, runLog())
        let store = try FeatureStore.open(at: out.appendingPathComponent("store"))
        XCTAssertEqual(store.inspect().rows + store.inspect().deadLetters, 200, runLog())
        XCTAssertFalse(runLog().contains("forged"), "a forged shutdown was obeyed")
        XCTAssertFalse(runLog().contains("attacker"), "an attacker's hello was accepted")
        // Everything the roles wrote is private to the user: folders 0700, files 0600.
        let files = FileManager.default.enumerator(atPath: out.path)!.compactMap { $0 as? String }
        XCTAssertTrue(files.contains("coordinator.journal") && files.contains { $0.hasPrefix("store/") }, "\(files)")
        for file in [""] + files {
            var info = stat()
            XCTAssertEqual(lstat(out.appendingPathComponent(file).path, &info), 0, file)
            XCTAssertEqual(info.st_mode & 0o077, 0, "\(file) has mode 0\(String(info.st_mode & 0o777, radix: 8))")
        }
    }

    /// SIGTERM to `featstream run` leaves no child alive, and its ephemeral key folder is gone.
    func testSIGTERMToRunStopsEveryChild() throws {
        let out = cluster.directory.appendingPathComponent("run")
        let runtime = cluster.directory.appendingPathComponent("runtime")
        try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true)
        let (run, log) = try cluster.startRun(["--shard-size", "8", "--workers", "2", "--batch", "2", "--no-train", "--out", out.path],
                                              logName: "run", environment: ["XDG_RUNTIME_DIR": runtime.path])
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL); run.waitUntilExit() } }
        func children() -> [Int32] {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }.filter { pid in
                guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")") else { return false }
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                return fields.count > 2 && Int32(fields[1]) == run.processIdentifier
            }
        }
        // Four children (coordinator, head, two workers), and the job under way: a shard committed.
        var pids: [Int32] = []
        XCTAssertTrue(eventually(60) { pids = children(); return pids.count == 4 }, "children: \(pids)")
        struct State: Decodable { var metricsPorts: [String: Int] }
        var port: Int?
        XCTAssertTrue(eventually { port = (try? JSONDecoder().decode(State.self, from: Data(contentsOf: out.appendingPathComponent("run.json"))))?.metricsPorts["coordinator"]; return port != nil })
        XCTAssertTrue(eventually(120) { (metric("featstream_shards_committed_total", port: port ?? 0).first?.value ?? 0) >= 1 },
                      (try? String(contentsOf: log, encoding: .utf8)) ?? "")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: runtime.path).filter { $0.hasPrefix("featstream-run.") }.count, 1)
        kill(run.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while run.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(run.isRunning, "featstream run ignored SIGTERM")
        XCTAssertNotEqual(run.terminationStatus, 0)
        for pid in pids { XCTAssertNotEqual(kill(pid, 0), 0, "child \(pid) outlived featstream run") }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: runtime.path).filter { $0.hasPrefix("featstream-run.") }, [],
                       "the ephemeral key folder was left behind")
    }

    /// A valid worker key may only speak as a worker: head-only messages to the coordinator and a
    /// coordinator-only shutdown to the head are dropped and counted; once its `.pub` is removed and
    /// the servers get SIGHUP, even its worker messages on the open connection are dropped. The job
    /// then completes exactly once.
    func testWorkerKeyCannotActAsAnotherRoleAndIsRevocable() throws {
        let coordinatorPort = try freeLocalPort(), headPort = try freeLocalPort()
        try cluster.startCoordinator(extra: ["--metrics-port", String(coordinatorPort)])
        try cluster.startHead(extra: ["--metrics-port", String(headPort)])
        let context = ZMQContext()
        let toCoordinator = try ZMQSocket(context, .dealer, security: cluster.clientSecurity(as: .worker("w3"), to: .coordinator))
        try toCoordinator.connect(cluster.control)
        let toHead = try ZMQSocket(context, .dealer, security: cluster.clientSecurity(as: .worker("w3"), to: .head))
        try toHead.connect(cluster.data)
        func sendEventually(_ socket: ZMQSocket, _ message: Message) -> Bool {
            eventually { (try? socket.send([FrameCodec.encode(message)])) == true }
        }
        XCTAssertTrue(sendEventually(toCoordinator, .headHello(epoch: 1, committed: Array(0..<8), plan: 0)))
        XCTAssertTrue(sendEventually(toCoordinator, .shardCommitted(shardID: 0, attempt: 1, items: 8, deadLetters: 0)))
        XCTAssertTrue(sendEventually(toHead, .shutdown(reason: "forged")))
        XCTAssertTrue(eventually { rejected("wrong_role", port: coordinatorPort) >= 2 }, cluster.logTails())
        XCTAssertTrue(eventually { rejected("wrong_role", port: headPort) >= 1 }, cluster.logTails())
        // Nor may it speak for another worker: a hello and a shard request in w0's name are refused.
        XCTAssertTrue(sendEventually(toCoordinator, .hello(workerID: "w0", host: "x", pid: 1, capabilities: [:])))
        XCTAssertTrue(sendEventually(toCoordinator, .shardRequest(workerID: "w0")))
        XCTAssertTrue(eventually { rejected("wrong_name", port: coordinatorPort) >= 2 }, cluster.logTails())
        XCTAssertEqual(metric("featstream_shards_committed_total", port: coordinatorPort).first?.value ?? 0, 0, cluster.logTails())
        XCTAssertTrue(cluster.head!.isRunning, "the head obeyed a worker's shutdown\n\(cluster.logTails())")
        XCTAssertFalse(HeadJobMarker.exists(cluster.storeURL), "the head wrote its job-complete marker")
        // The log names the key by fingerprint (its public key's prefix), never a secret.
        let fingerprint = keyFingerprint(try cluster.keys.publicKey(.worker("w3")))
        XCTAssertTrue(cluster.log("coordinator").contains(fingerprint), cluster.log("coordinator"))

        // Revoke w3: remove its public key, SIGHUP both servers. Its open connections are closed (libzmq has no
        // per-peer close; the servers shut the TCP connection down, see PeerConnections): its sockets reconnect,
        // and each server's ZAP handler refuses the key, counted as curve_denied.
        XCTAssertEqual(rejected("curve_denied", port: coordinatorPort), 0)
        XCTAssertEqual(rejected("curve_denied", port: headPort), 0)
        try FileManager.default.removeItem(at: cluster.keys.url.appendingPathComponent("workers/w3.pub"))
        kill(cluster.coordinator!.processIdentifier, SIGHUP)
        kill(cluster.head!.processIdentifier, SIGHUP)
        XCTAssertTrue(eventually { rejected("curve_denied", port: coordinatorPort) >= 1 }, "w3's coordinator connection stayed open\n\(cluster.logTails())")
        XCTAssertTrue(eventually { rejected("curve_denied", port: headPort) >= 1 }, "w3's head connection stayed open\n\(cluster.logTails())")
        // From then on nothing of that key gets through: for two seconds it asks for work and says hello;
        // whatever still reaches a server is dropped (revoked_key), no lease is granted and nothing answers.
        let stop = Date().addingTimeInterval(2)
        while Date() < stop {
            _ = try? toCoordinator.send([FrameCodec.encode(.shardRequest(workerID: "w3"))])
            _ = try? toHead.send([FrameCodec.encode(.hello(workerID: "w3", host: "x", pid: 1, capabilities: [:]))])
            Thread.sleep(forTimeInterval: 0.05)
        }
        while let frames = try toCoordinator.receive() {
            let message = try FrameCodec.decode(frames[0])
            if case .assignment = message { XCTFail("a revoked key got a lease") }
        }
        XCTAssertNil(try toHead.receive(), "the head answered a revoked key")
        XCTAssertEqual(metric("featstream_shards_leased_total", port: coordinatorPort).first?.value ?? 0, 0, cluster.logTails())
        // The refused key's socket does not get a connection back (libzmq stops reconnecting after a ZAP refusal).
        XCTAssertGreaterThanOrEqual(rejected("curve_denied", port: coordinatorPort), 1)

        try cluster.startWorker("w0")
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        // Secret keys never reach the logs.
        for role in [PeerRole.coordinator, .head, .worker("w0")] {
            let (directory, name) = role == .coordinator ? (cluster.keys.url, "coordinator") : role == .head ? (cluster.keys.url, "head")
                : (cluster.keys.url.appendingPathComponent("workers"), "w0")
            let secret = try String(contentsOf: directory.appendingPathComponent("\(name).key"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            for log in ["coordinator", "head", "w0"] { XCTAssertFalse(cluster.log(log).contains(secret), "\(name)'s secret key in the \(log) log") }
        }
    }

    /// The store's width is the job's model's, not the first batch's: a head given `--model` creates its
    /// store with the model's 1,280-value rows before anyone speaks, and a valid worker key that sends a
    /// well-formed, decodable batch of 7-value rows first has it dropped and counted (`wrong_dimension`);
    /// the real workers then fill the store exactly once.
    func testStoreWidthComesFromTheModelNotTheFirstBatch() throws {
        let headPort = try freeLocalPort()
        try cluster.startCoordinator()
        try cluster.startHead(extra: ["--model", ClusterHarness.home.appendingPathComponent("models/efficientnet-lite0").path,
                                      "--metrics-port", String(headPort)])
        XCTAssertTrue(eventually(60) { (try? FeatureStore.open(at: cluster.storeURL))?.dimension == 1280 },
                      "the head did not create a 1280-wide store at start\n\(cluster.logTails())")
        let context = ZMQContext()
        let toHead = try ZMQSocket(context, .dealer, security: cluster.clientSecurity(as: .worker("w3"), to: .head))
        try toHead.connect(cluster.data)
        XCTAssertTrue(eventually { (try? toHead.send([FrameCodec.encode(.hello(workerID: "w3", host: "x", pid: 1, capabilities: [:]))])) == true })
        var credited = false
        XCTAssertTrue(eventually {
            // A credit of 0 comes first when the head is not yet bound to the job's plan (PROTOCOL.md §8.1).
            while let frames = try? toHead.receive() {
                if case .credit(_, let limit)? = try? FrameCodec.decode(frames[0]), limit > 0 { credited = true }
            }
            if !credited { _ = try? toHead.send([FrameCodec.encode(.hello(workerID: "w3", host: "x", pid: 1, capabilities: [:]))]) }
            return credited
        }, "no credit from the head\n\(cluster.logTails())")
        let narrow = FeatureBatch(shardID: 0, attempt: 1, shardItemCount: 8, offsets: [0], indexes: [0], labels: [0], keys: ["x"],
                                  deadLetters: [], dtype: .f32, dimension: 7, codec: .raw, rawLength: 28, payload: [UInt8](repeating: 0, count: 28))
        XCTAssertTrue(try toHead.send([FrameCodec.encode(.featureBatch(narrow))]))
        XCTAssertTrue(eventually { rejected("wrong_dimension", port: headPort) >= 1 }, "the narrow batch was not refused\n\(cluster.logTails())")
        XCTAssertEqual(try FeatureStore.open(at: cluster.storeURL).dimension, 1280)

        try cluster.startWorker("w0")
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        XCTAssertEqual(try FeatureStore.open(at: cluster.storeURL).dimension, 1280)
    }

    /// A head told a width its store does not have refuses to start, naming the store; the store is untouched.
    func testHeadRefusesAStoreOfAnotherWidth() throws {
        try cluster.startHead(extra: ["--feature-dimension", "1280"])
        XCTAssertTrue(eventually(30) { (try? FeatureStore.open(at: cluster.storeURL))?.dimension == 1280 }, cluster.logTails())
        cluster.kill(cluster.head)
        let run = try runProcess(productsDirectory.appendingPathComponent("featstream"),
                                 ["head", "--bind", cluster.data, "--coordinator", cluster.control, "--store", cluster.storeURL.path,
                                  "--feature-dimension", "7", "--keys", cluster.keys.url.path])
        XCTAssertNotEqual(run.status, 0, run.output)
        // Refused for its width (the message names both), not for anything else such as the writer lock.
        XCTAssertTrue(run.output.contains(cluster.storeURL.path) && run.output.contains("1280") && run.output.contains("7"), run.output)
        XCTAssertEqual(try FeatureStore.open(at: cluster.storeURL).dimension, 1280)
    }

    /// A store records the precision its job's model config extracts at (STORE.md §1); a head whose config
    /// says another refuses to reopen it, naming both, and leaves it as it was.
    func testHeadRefusesAStoreOfAnotherPrecision() throws {
        let lite0 = ClusterHarness.home.appendingPathComponent("models/efficientnet-lite0")
        try cluster.startHead(extra: ["--model", lite0.path])
        XCTAssertTrue(eventually(30) { (try? FeatureStore.open(at: cluster.storeURL))?.metadata.precision == "fp32" }, cluster.logTails())
        cluster.kill(cluster.head)
        let int8 = cluster.directory.appendingPathComponent("lite0-int8")
        try FileManager.default.createDirectory(at: int8, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: lite0.appendingPathComponent("model.json"))) as! [String: Any]
        config["onnx"] = lite0.appendingPathComponent(config["onnx"] as! String).path
        config["precision"] = "int8"
        try JSONSerialization.data(withJSONObject: config).write(to: int8.appendingPathComponent("model.json"))
        let run = try runProcess(productsDirectory.appendingPathComponent("featstream"),
                                 ["head", "--bind", cluster.data, "--coordinator", cluster.control, "--store", cluster.storeURL.path,
                                  "--model", int8.path, "--keys", cluster.keys.url.path])
        XCTAssertNotEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("extracted at fp32") && run.output.contains("says int8"), run.output)
        XCTAssertEqual(try FeatureStore.open(at: cluster.storeURL).metadata.precision, "fp32")
    }

    /// The servers' own keys are bound to their roles too: the head's key cannot lease work or forge a
    /// shutdown at the coordinator, and the coordinator's key is not admitted to the head's data socket
    /// (only worker keys are), so it cannot send batches or hellos there.
    func testServerKeysCannotActAsWorkersOrForgeShutdowns() throws {
        let coordinatorPort = try freeLocalPort(), headPort = try freeLocalPort()
        try cluster.startCoordinator(extra: ["--metrics-port", String(coordinatorPort)])
        try cluster.startHead(extra: ["--metrics-port", String(headPort)])
        let context = ZMQContext()
        let asHead = try ZMQSocket(context, .dealer, security: cluster.clientSecurity(as: .head, to: .coordinator))
        try asHead.connect(cluster.control)
        for message: Message in [.hello(workerID: "head", host: "x", pid: 1, capabilities: [:]), .shardRequest(workerID: "head"),
                                 .shardDone(shardID: 0, attempt: 1, items: 8, deadLetters: 0), .shutdown(reason: "forged")] {
            XCTAssertTrue(eventually { (try? asHead.send([FrameCodec.encode(message)])) == true })
        }
        XCTAssertTrue(eventually { rejected("wrong_role", port: coordinatorPort) >= 4 }, cluster.logTails())
        let asCoordinator = try ZMQSocket(context, .dealer, security: cluster.clientSecurity(as: .coordinator, to: .head))
        try asCoordinator.connect(cluster.data)
        XCTAssertTrue(eventually { rejected("curve_denied", port: headPort) >= 1 }, "the head admitted the coordinator's key\n\(cluster.logTails())")
        XCTAssertFalse(try asCoordinator.send([FrameCodec.encode(.hello(workerID: "w0", host: "x", pid: 1, capabilities: [:]))]))
        XCTAssertNil(try asHead.receive(), "the coordinator answered the head's key as a worker")
        XCTAssertEqual(metric("featstream_shards_leased_total", port: coordinatorPort).first?.value ?? 0, 0)
        XCTAssertTrue(cluster.coordinator!.isRunning && cluster.head!.isRunning, cluster.logTails())
        XCTAssertFalse(HeadJobMarker.exists(cluster.storeURL))
    }

    /// Metric labels flooded from many connections at once: 200 sockets holding a valid worker key, each
    /// a worker under a fresh name, leave the coordinator's per-worker series within the cap (32 here).
    func testManyConnectionsKeepMetricSeriesWithinTheCap() throws {
        let coordinatorPort = try freeLocalPort()
        setenv("FEATSTREAM_MAX_SERIES", "32", 1)
        defer { unsetenv("FEATSTREAM_MAX_SERIES") }
        try cluster.startCoordinator(extra: ["--metrics-port", String(coordinatorPort), "--heartbeat-ms", "100"])
        let context = ZMQContext()
        var sockets: [ZMQSocket] = []
        for index in 0..<200 {
            let socket = try ZMQSocket(context, .dealer, security: cluster.clientSecurity(as: .worker("w3"), to: .coordinator))
            try socket.connect(cluster.control)
            sockets.append(socket)
            _ = index
        }
        var welcomed = Set<Int>()
        XCTAssertTrue(eventually(120) {
            for (index, socket) in sockets.enumerated() where !welcomed.contains(index) {
                _ = try? socket.send([FrameCodec.encode(.hello(workerID: "w3@flood-\(index)", host: "h\(index)", pid: 1, capabilities: [:]))])
                while let frames = try? socket.receive() {
                    if case .welcome? = try? FrameCodec.decode(frames[0]) { welcomed.insert(index) }
                }
            }
            return welcomed.count == sockets.count
        }, "only \(welcomed.count) of \(sockets.count) connections were welcomed\n\(cluster.logTails())")
        var series = 0
        XCTAssertTrue(eventually(30) {
            series = metric("featstream_heartbeat_age_seconds", port: coordinatorPort).count
            return series >= 16
        }, "the flood did not reach the per-worker series (\(series))\n\(cluster.logTails())")
        XCTAssertLessThanOrEqual(series, 32, "per-worker series: \(series), cap 32")
        XCTAssertLessThanOrEqual(metric("featstream_worker_current_shard", port: coordinatorPort).count, 32)
        XCTAssertTrue(cluster.coordinator!.isRunning)
    }

    /// 10,000 hellos with random names from a valid worker key: the coordinator's metric series stay
    /// within the configured cap (oldest-idle evicted) and it keeps serving.
    func testHelloFloodKeepsMetricSeriesBounded() throws {
        let coordinatorPort = try freeLocalPort()
        // The cap is configurable; 64 keeps the check quick (the default is 256).
        setenv("FEATSTREAM_MAX_SERIES", "64", 1)
        defer { unsetenv("FEATSTREAM_MAX_SERIES") }
        try cluster.startCoordinator(extra: ["--metrics-port", String(coordinatorPort), "--heartbeat-ms", "100"])
        let context = ZMQContext()
        let socket = try ZMQSocket(context, .dealer, highWaterMark: 20_000, security: cluster.clientSecurity(as: .worker("w3"), to: .coordinator))
        try socket.connect(cluster.control)
        var sent = 0
        let deadline = Date().addingTimeInterval(60)
        while sent < 10_000 && Date() < deadline {
            // Fresh names a worker key may use (its own name at any "host"); other names are refused outright.
            if (try? socket.send([FrameCodec.encode(.hello(workerID: "w3@\(UUID().uuidString)", host: "h-\(sent)", pid: 1, capabilities: [:]))])) == true {
                sent += 1
            } else {
                _ = try? socket.receive()
                Thread.sleep(forTimeInterval: 0.001)
            }
        }
        XCTAssertEqual(sent, 10_000)
        // Every hello is answered with a welcome: count them, so all 10,000 names have reached the coordinator.
        var welcomes = 0
        XCTAssertTrue(eventually(120) {
            while let frames = try? socket.receive() {
                if case .welcome? = try? FrameCodec.decode(frames[0]) { welcomes += 1 }
            }
            return welcomes >= 10_000
        }, "only \(welcomes) welcomes\n\(cluster.logTails())")
        // Its per-worker gauges are published every heartbeat for the workers the coordinator tracks. One
        // connection is one worker (the latest name it gave), so the series stay far below the cap; the cap
        // itself is `MetricsEndpointTests.testSeriesLimitEvictsTheLeastRecentlyUsed`'s subject.
        var series = 0
        XCTAssertTrue(eventually(30) {
            series = metric("featstream_heartbeat_age_seconds", port: coordinatorPort).count
            return series >= 1
        }, "no per-worker series at all")
        XCTAssertLessThanOrEqual(series, 64, "per-worker series: \(series), cap 64")
        XCTAssertLessThanOrEqual(metric("featstream_worker_current_shard", port: coordinatorPort).count, 64)
        XCTAssertTrue(cluster.coordinator!.isRunning)
    }
}

/// The head's job-complete marker, read as a file (the contract tests may read).
enum HeadJobMarker {
    static func exists(_ store: URL) -> Bool { FileManager.default.fileExists(atPath: store.appendingPathComponent("job-complete").path) }
}
