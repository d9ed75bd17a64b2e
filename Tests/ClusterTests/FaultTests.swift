import FeatureCodec
import FeatureStore
import Foundation
import RoleMetrics
import Transport
import WireProtocol
import XCTest

/// Real processes, real sockets: kill, stop and confuse each role, and check every sample arrives exactly once.
final class FaultTests: XCTestCase {
    var cluster: ClusterHarness!

    override func setUpWithError() throws { cluster = try ClusterHarness() }
    override func tearDown() { cluster.shutdown() }

    func testCleanRunStoresEveryItemExactlyOnce() throws {
        try cluster.startJob()
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
    }

    /// kill -9 a worker at a random point, several times over; the others (and a replacement) finish the job.
    func testWorkerKilledAtRandomPoints() throws {
        var generator = SystemRandomNumberGenerator()
        for trial in 0..<3 {
            if trial > 0 {
                cluster.shutdown()
                cluster = try ClusterHarness()
            }
            try cluster.startJob()
            cluster.waitForCommittedShards(Int.random(in: 1...12, using: &generator))
            let victim = ["w0", "w1"].randomElement(using: &generator)!
            cluster.kill(cluster.workers[victim])
            if trial % 2 == 0 { try cluster.startWorker("w2") }
            cluster.waitForCompletion()
            try cluster.assertExactlyOnce()
        }
    }

    func testCoordinatorKilledAndRestarted() throws {
        try cluster.startJob()
        cluster.waitForCommittedShards(6)
        cluster.kill(cluster.coordinator)  // SIGKILL, waited for: its port and journal lock are free
        try cluster.startCoordinator()
        // The successor replays the journal: its status counts the shards committed before the kill.
        cluster.waitUntil("the restarted coordinator reports the journal's 6 committed shards") {
            (cluster.status()?.shards.committed ?? 0) >= 6 || !(cluster.coordinator?.isRunning ?? false)
        }
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        // The first coordinator reserved attempts 1...1024; its successor hands out numbers above them. So the
        // shards committed before the kill keep small attempts, and none of them was leased (or stored) again.
        let attempts = try FeatureStore.open(at: cluster.storeURL).shards.map(\.attempt)
        XCTAssertGreaterThanOrEqual(attempts.filter { $0 <= 1024 }.count, 6, "\(attempts)")
        XCTAssertGreaterThan(attempts.filter { $0 > 1024 }.count, 0, "the restarted coordinator leased nothing: \(attempts)")
    }

    func testHeadKilledAndRestarted() throws {
        try cluster.startJob()
        cluster.waitForCommittedShards(6)
        let created = try FeatureStore.open(at: cluster.storeURL).inspect().created
        cluster.kill(cluster.head)  // SIGKILL, waited for: the store's writer lock is free
        try cluster.startHead()
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        // The restarted head reopened the store rather than making a new one.
        XCTAssertEqual(try FeatureStore.open(at: cluster.storeURL).inspect().created, created, cluster.logTails())
    }

    /// SIGSTOP the head: workers run out of credits and wait, their memory does not grow; after SIGCONT the job ends.
    func testStoppedHeadHoldsWorkersWithinCredits() throws {
        try cluster.startCoordinator()
        try cluster.startHead(credits: 2)
        try cluster.startWorker("w0")
        try cluster.startWorker("w1")
        // Each worker sends until its credits are spent, then waits (its credits_available gauge reads 0).
        func creditsLeft(_ worker: String) -> Double? {
            cluster.metrics(worker).first { $0.name == MetricName.creditsAvailable }?.value
        }
        cluster.waitForCommittedShards(4)
        // Both must hold credits before the head stops: a worker that starts late could otherwise find the
        // head stopped before its first credit, and never send at all (its gauge appears with its first batch).
        cluster.waitUntil("both workers sent a batch", timeout: 60) { ["w0", "w1"].allSatisfy { creditsLeft($0) != nil } }
        kill(cluster.head!.processIdentifier, SIGSTOP)
        cluster.waitUntil("both workers spent their credits", timeout: 60) { ["w0", "w1"].allSatisfy { creditsLeft($0) == 0 } }
        let before = cluster.workers.values.map { cluster.residentKiB($0) }
        // An observation window, not a wait for something: blocked workers must not grow while it lasts.
        var after = before
        let window = Date().addingTimeInterval(4)
        while Date() < window {
            after = zip(after, cluster.workers.values.map { cluster.residentKiB($0) }).map { max($0, $1) }
            Thread.sleep(forTimeInterval: 0.2)
        }
        kill(cluster.head!.processIdentifier, SIGCONT)
        for (b, a) in zip(before, after) {
            // A batch of 4 Lite0 features is 20 KB; 16 MB of growth would mean an unbounded queue.
            XCTAssertLessThan(a - b, 16 * 1024, "worker memory grew from \(b) to \(a) KiB while the head was stopped")
        }
        XCTAssertTrue(cluster.workers.values.allSatisfy(\.isRunning), cluster.logTails())
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
    }

    /// Garbage and malformed frames on the coordinator's and the head's sockets are rejected and counted;
    /// nothing crashes, and the job still completes exactly once afterwards.
    func testMalformedFramesAreRejectedAndCounted() throws {
        cluster.security = .insecurePlaintext  // raw plaintext clients below; SecurityTests covers CURVE
        try cluster.startCoordinator()
        try cluster.startHead()
        // Both bind their sockets before they serve metrics.
        cluster.waitUntil("the coordinator and the head serve metrics") { cluster.servesMetrics("coordinator") && cluster.servesMetrics("head") }
        let context = ZMQContext()
        var sent = 0
        for address in [cluster.control, cluster.data] {
            let socket = try ZMQSocket(context, .dealer)
            try socket.connect(address)
            // The socket refuses to queue before its connection is up (ZMQ_IMMEDIATE): retry until it takes the first frame.
            let frames = malformedFrames()
            cluster.waitUntil("the connection to \(address) is up", timeout: 10) { (try? socket.send([frames[0]])) == true }
            sent += 1
            for frame in frames.dropFirst() {
                XCTAssertTrue(try socket.send([frame]), "could not send to \(address)")
                sent += 1
            }
            // A well-formed frame with a corrupt LZ4 payload: decodes as a frame, fails as features. On the
            // data socket it comes from a peer that said hello and has a credit, so it is processed.
            if address == cluster.data {
                XCTAssertTrue(try socket.send([FrameCodec.encode(.hello(workerID: "raw", host: "test", pid: 1, capabilities: [:]))]))
                let deadline = Date().addingTimeInterval(10)
                var credited = false
                var helloAt = Date()
                // A credit of 0 comes first while the head is not yet bound to the job's plan (PROTOCOL.md §8.1):
                // wait for a usable one, saying hello again every second.
                while !credited && Date() < deadline {
                    if try waitForInput([socket], timeoutMs: 50)[0], let frames = try socket.receive(),
                       case .credit(_, let limit)? = try? FrameCodec.decode(frames.last ?? []), limit > 0 { credited = true }
                    if !credited && Date().timeIntervalSince(helloAt) > 1 {
                        _ = try socket.send([FrameCodec.encode(.hello(workerID: "raw", host: "test", pid: 1, capabilities: [:]))])
                        helloAt = Date()
                    }
                }
                XCTAssertTrue(credited, "the head never answered the hello with a credit")
            }
            XCTAssertTrue(try socket.send([FrameCodec.encode(.featureBatch(corruptPayloadBatch()))]))
            // Several frames in one message are not a protocol message either.
            XCTAssertTrue(try socket.send([[1, 2, 3], [4, 5, 6]]))
        }
        // Counted in each role's metrics (rejected_frames_total, by reason) while both keep running.
        cluster.waitUntil("both roles counted the malformed frames") {
            cluster.rejectedFrames("coordinator") >= sent / 2 && cluster.rejectedFrames("head") >= sent / 2
        }
        XCTAssertTrue(cluster.coordinator!.isRunning, cluster.logTails())
        XCTAssertTrue(cluster.head!.isRunning, cluster.logTails())
        XCTAssertGreaterThanOrEqual(cluster.status()?.rejectedFrames.values.reduce(0, +) ?? 0, sent / 2, "status --json lacks the rejected frames")
        try cluster.startWorker("w0")
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        let stats = try JSONDecoder().decode(HeadIngestStatistics.self,
                                             from: Data(contentsOf: cluster.storeURL.appendingPathComponent("ingest.json")))
        XCTAssertGreaterThanOrEqual(stats.rejectedFrames, sent / 2)
        XCTAssertEqual(stats.corruptPayloads, 1)
    }

    /// SIGTERM makes a worker finish (or hand back) its shard and exit cleanly; the job still completes exactly once.
    func testSIGTERMDrainsAWorker() throws {
        try cluster.startJob()
        cluster.waitForCommittedShards(3)
        let worker = cluster.workers["w0"]!
        kill(worker.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while worker.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(worker.isRunning, "worker ignored SIGTERM\n\(cluster.logTails())")
        XCTAssertEqual(worker.terminationStatus, 0, cluster.logTails())
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
    }

    /// A worker fed garbage by its coordinator and its head rejects and counts it, and keeps working.
    func testWorkerRejectsGarbageFromBothPeers() throws {
        cluster.security = .insecurePlaintext  // the fake peers below are plaintext; SecurityTests covers CURVE
        let context = ZMQContext()
        let fakeCoordinator = try ZMQSocket(context, .router)
        try fakeCoordinator.bind(cluster.control)
        let fakeHead = try ZMQSocket(context, .router)
        try fakeHead.bind(cluster.data)
        try cluster.startWorker("w0")
        func receive(_ socket: ZMQSocket, timeout: TimeInterval = 30) throws -> (identity: [UInt8], message: Message)? {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if try waitForInput([socket], timeoutMs: 100)[0], let frames = try socket.receive(), frames.count == 2,
                   let message = try? FrameCodec.decode(frames[1]) {
                    return (frames[0], message)
                }
            }
            return nil
        }
        // Wait for the worker's hello, answer with garbage first, then a real welcome.
        var hello: (identity: [UInt8], message: Message)?
        repeat { hello = try receive(fakeCoordinator) } while hello != nil && !isHello(hello!.message)
        let worker = try XCTUnwrap(hello, "the worker never said hello\n\(cluster.logTails())")
        for frame in malformedFrames() { _ = try fakeCoordinator.send([worker.identity, frame]) }
        _ = try fakeCoordinator.send([worker.identity, FrameCodec.encode(.welcome(epoch: 1, headAddress: cluster.data,
                                                                                 heartbeatIntervalMs: 200, deadAfterBeats: 50, plan: 1))])
        // On the data plane: garbage in reply to its hello, then a credit and a heartbeat.
        var dataHello: (identity: [UInt8], message: Message)?
        repeat { dataHello = try receive(fakeHead) } while dataHello != nil && !isHello(dataHello!.message)
        let streamer = try XCTUnwrap(dataHello, "the worker never opened a data session\n\(cluster.logTails())")
        for frame in malformedFrames() { _ = try fakeHead.send([streamer.identity, frame]) }
        _ = try fakeHead.send([streamer.identity, FrameCodec.encode(.credit(epoch: 2, limit: 1))])
        // The empty frame may not reach the worker as a message; every other one is rejected and counted.
        let expected = 2 * (malformedFrames().count - 1)
        cluster.waitUntil("the worker counted the garbage from both peers") { cluster.rejectedFrames("w0") >= expected }
        let rejected = cluster.rejectedFrames("w0")
        XCTAssertTrue(cluster.workers["w0"]!.isRunning, cluster.logTails())
        // It still obeys a well-formed shutdown.
        _ = try fakeCoordinator.send([worker.identity, FrameCodec.encode(.shutdown(reason: "test over"))])
        let deadline = Date().addingTimeInterval(20)
        while cluster.workers["w0"]!.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertEqual(cluster.workers["w0"]!.terminationStatus, 0, cluster.logTails())
        XCTAssertGreaterThanOrEqual(rejected, expected, cluster.log("w0"))
    }

    /// kill -9 the head while it trains after the job; restarted, it skips serving (the store is whole)
    /// and resumes training from its checkpoint.
    func testHeadKilledWhileTrainingResumes() throws {
        cluster.webdataset = true
        let model = ClusterHarness.home.appendingPathComponent("models/efficientnet-lite0").path
        let shard = ClusterHarness.home.appendingPathComponent("data/fashion-mnist-demo/webdataset/val-000000.tar").path
        let trainOut = cluster.directory.appendingPathComponent("model")
        let training = ["--model", model, "--data", shard, "--train-out", trainOut.path, "--mlp", "--hidden", "16",
                        "--max-epochs", "300", "--l2", "0.001"]
        try cluster.startCoordinator()
        try cluster.startHead(extra: training)
        try cluster.startWorker("w0")
        try cluster.startWorker("w1")
        // Kill it once its checkpoint (written after each epoch) records three epochs.
        func checkpointEpochs() -> Int {
            guard let data = try? Data(contentsOf: trainOut.appendingPathComponent("checkpoint.json")),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return 0 }
            return object["completedEpochs"] as? Int ?? 0
        }
        cluster.waitUntil("the head checkpointed three epochs", timeout: 180) { checkpointEpochs() >= 3 || !cluster.head!.isRunning }
        XCTAssertTrue(cluster.head!.isRunning, "training ended before the kill\n\(cluster.logTails())")
        cluster.kill(cluster.head)
        try cluster.startHead(extra: training)
        let second = cluster.head!
        let end = Date().addingTimeInterval(180)
        while second.isRunning && Date() < end { Thread.sleep(forTimeInterval: 0.1) }
        XCTAssertEqual(second.terminationStatus, 0, cluster.logTails())
        let log = cluster.log("head#2")
        XCTAssertTrue(log.contains("resuming from"), log)
        XCTAssertFalse(log.contains("listening for features"), "a head restarted after the job must not serve again\n\(log)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: trainOut.appendingPathComponent("classifier.onnx").path), log)
        try cluster.assertExactlyOnce()
    }

    func isHello(_ message: Message) -> Bool {
        if case .hello = message { return true }
        return false
    }

    func malformedFrames() -> [[UInt8]] {
        let valid = FrameCodec.encode(.heartbeat(epoch: 7, sequence: 1))
        var badVersion = valid
        badVersion[2] = 99
        var badChecksum = valid
        badChecksum[badChecksum.count - 1] ^= 0xff
        var oversized = valid
        // The body length field claims 3 GiB.
        for offset in 0..<4 where 6 + offset < oversized.count { oversized[6 + offset] = 0xC0 }
        var random = SystemRandomNumberGenerator()
        let garbage = (0..<256).map { _ in UInt8.random(in: 0...255, using: &random) }
        return [[], [0x46], Array(valid.prefix(5)), badVersion, badChecksum, oversized, garbage, Array(repeating: 0, count: 64)]
    }

    func corruptPayloadBatch() -> FeatureBatch {
        FeatureBatch(shardID: 0, attempt: 99, shardItemCount: 8, offsets: [0], indexes: [1000], labels: [0], keys: ["x"],
                     deadLetters: [], dtype: .f16, dimension: 1280, codec: .shuffleLZ4, rawLength: 2560,
                     payload: Array(repeating: 0xFF, count: 300))
    }
}

struct HeadIngestStatistics: Decodable {
    var rejectedFrames: Int
    var corruptPayloads: Int
}
