import ClusterSessions
import FeatStreamTestSupport
import FeatureCodec
import FeatureStore
import RoleMetrics
import Foundation
import Transport
import WireProtocol
import XCTest

/// The exactly-once promise tried the way an audit broke it (issue #13), with real processes and a raw
/// ZMTP client; every wait has a deadline and every check reads the store or the metrics.
final class ExactlyOnceTests: XCTestCase {
    var cluster: ClusterHarness!

    override func setUpWithError() throws { cluster = try ClusterHarness() }
    override func tearDown() { cluster.shutdown() }

    /// A raw worker on the data plane: says hello, obeys nothing else.
    final class RawWorker {
        let socket: ZMQSocket
        init(_ context: ZMQContext, head: String) throws {
            socket = try ZMQSocket(context, .dealer, highWaterMark: 10_000)
            try socket.connect(head)
        }

        /// Says hello (again every 200 ms: the socket drops messages until it is connected) and returns the
        /// highest credit limit received within `timeout`, once one arrived.
        /// `plan`: the job the raw worker claims (a head credits only workers of its store's plan); the tests
        /// without a coordinator bind the store to plan 1 beforehand.
        func open(name: String, plan: UInt64 = 1, timeout: TimeInterval = 30) throws -> UInt32? {
            let hello = FrameCodec.encode(.hello(workerID: name, host: "test", pid: 1, capabilities: DataHello.capabilities(sent: 0, plan: plan)))
            let deadline = Date().addingTimeInterval(timeout)
            var best: UInt32?
            var lastHello = Date.distantPast
            while Date() < deadline {
                if best == nil, Date().timeIntervalSince(lastHello) > 0.2 {
                    _ = try socket.send([hello])
                    lastHello = Date()
                }
                guard try waitForInput([socket], timeoutMs: 50)[0] else { continue }
                while let frames = try socket.receive() {
                    if let frame = frames.last, case .credit(_, let limit)? = try? FrameCodec.decode(frame) { best = max(best ?? 0, limit) }
                }
                if best != nil { return best }
            }
            return best
        }

        func send(_ batch: FeatureBatch) throws { _ = try socket.send([FrameCodec.encode(.featureBatch(batch))]) }
    }

    static func batch(shard: UInt32, attempt: UInt32, count: Int, offsets: [Int], indexes: [UInt64], dimension: Int) -> FeatureBatch {
        let features = [Float](repeating: 0.5, count: offsets.count * dimension)
        let (payload, raw) = features.withUnsafeBufferPointer { FeatureCodec.encode($0, dtype: .f16, codec: .shuffleLZ4) }
        return FeatureBatch(shardID: shard, attempt: attempt, shardItemCount: UInt32(count), offsets: offsets.map(UInt32.init),
                            indexes: offsets.map { indexes[$0] }, labels: offsets.map { _ in 0 }, keys: offsets.map { "raw/\(indexes[$0])" },
                            deadLetters: [], dtype: .f16, dimension: UInt32(dimension), codec: .shuffleLZ4, rawLength: UInt32(raw),
                            payload: payload)
    }

    func waitUntil(_ what: String, timeout: TimeInterval = 60, _ condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertTrue(condition(), "timed out waiting until \(what)\n\(cluster.logTails())")
    }

    func storedShards() -> [CommittedShard] { (try? FeatureStore.open(at: cluster.storeURL).shards) ?? [] }

    /// Audit item 1: a shard the head committed while the coordinator was down is announced to the
    /// restarted coordinator, which never leases it again; the job completes.
    func testACommitMadeWhileTheCoordinatorIsDownReachesItsSuccessor() throws {
        // The raw client speaks plaintext, so the roles of this test do too (keys are SecurityTests' subject).
        cluster.security = .insecurePlaintext
        try cluster.startCoordinator()
        try cluster.startHead()
        try cluster.startWorker("w0")
        waitUntil("two shards are stored") { storedShards().count >= 2 }
        cluster.kill(cluster.coordinator)
        cluster.kill(cluster.workers["w0"])
        // Deliver the last shard by hand while no coordinator runs: its acknowledgement goes nowhere.
        let expected = try cluster.expectedIndexes().sorted()
        let shardCount = (cluster.items + cluster.shardSize - 1) / cluster.shardSize
        let last = UInt32(shardCount - 1)
        let indexes = Array(expected[(Int(last) * cluster.shardSize)...])
        XCTAssertFalse(storedShards().contains { $0.shardID == last })
        let context = ZMQContext()
        let raw = try RawWorker(context, head: cluster.data)
        XCTAssertNotNil(try raw.open(name: "raw", plan: try XCTUnwrap(JobPlanBinding.read(root: cluster.storeURL))))
        try raw.send(Self.batch(shard: last, attempt: 999_999, count: indexes.count, offsets: Array(indexes.indices),
                                indexes: indexes, dimension: 1280))
        waitUntil("the hand-delivered shard is stored") { storedShards().contains { $0.shardID == last } }
        try cluster.startCoordinator()
        try cluster.startWorker("w1")
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        XCTAssertEqual(storedShards().first { $0.shardID == last }?.attempt, 999_999, "the shard was stored again")
    }

    /// Audit item 2: 160 shard attempts open at once (one per worker identity), all stored.
    func testOneHundredSixtyInterleavedShardsAreAllStored() throws {
        // The raw client speaks plaintext, so the roles of this test do too (keys are SecurityTests' subject).
        cluster.security = .insecurePlaintext
        // No coordinator: the store is bound to a plan beforehand, so the head grants credit without a welcome.
        try JobPlanBinding.write(1, root: cluster.storeURL)
        try cluster.startHead()
        let context = ZMQContext()
        let workers = try (0..<160).map { _ in try RawWorker(context, head: cluster.data) }
        for (number, worker) in workers.enumerated() { XCTAssertNotNil(try worker.open(name: "raw\(number)")) }
        for offset in 0..<2 {
            for (number, worker) in workers.enumerated() {
                try worker.send(Self.batch(shard: UInt32(number), attempt: 1, count: 2, offsets: [offset],
                                           indexes: [UInt64(2 * number), UInt64(2 * number + 1)], dimension: 8))
            }
        }
        waitUntil("160 shards are stored") { storedShards().count == 160 }
        let store = try FeatureStore.open(at: cluster.storeURL)
        XCTAssertTrue(store.exactlyOnceReport(expectedIndexes: 0..<320).isExactlyOnce)
    }

    /// Audit item 3: a client that bursts 130 batches on a grant of 4 has the excess dropped and counted:
    /// every batch is either stored or counted as a credit violation, and most are counted.
    func testBatchesBeyondTheCreditsAreDroppedAndCounted() throws {
        // The raw client speaks plaintext, so the roles of this test do too (keys are SecurityTests' subject).
        cluster.security = .insecurePlaintext
        let metricsPort = try freeLocalPort()
        try JobPlanBinding.write(1, root: cluster.storeURL)   // no coordinator to bind it (see above)
        try cluster.startHead(extra: ["--metrics-port", String(metricsPort)])
        let context = ZMQContext()
        let raw = try RawWorker(context, head: cluster.data)
        XCTAssertEqual(try raw.open(name: "greedy"), 4)
        for shard in 0..<130 {
            try raw.send(Self.batch(shard: UInt32(shard), attempt: 1, count: 1, offsets: [0], indexes: [UInt64(shard)], dimension: 8))
        }
        var violations = 0
        waitUntil("every batch is stored or counted") {
            violations = Int(metric("featstream_credit_violations_total", port: metricsPort) ?? 0)
            return violations > 0 && storedShards().count + violations == 130
        }
        XCTAssertGreaterThan(violations, 64, "a burst of 130 on a window of 4 must mostly be refused")
    }

    /// Audit item 4: a second head on a live store is refused, naming the first, and nothing is lost.
    func testASecondHeadOnALiveStoreIsRefused() throws {
        try cluster.startJob()
        cluster.waitForCommittedShards(2)
        let second = Process()
        second.executableURL = productsDirectory.appendingPathComponent("featstream")
        second.arguments = ["head", "--bind", "tcp://127.0.0.1:\(try freeLocalPort())", "--coordinator", cluster.control,
                            "--store", cluster.storeURL.path, "--keys", cluster.keys.url.path]
        let output = Pipe()
        second.standardError = output
        second.standardOutput = output
        try second.run()
        let deadline = Date().addingTimeInterval(30)
        while second.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if second.isRunning { second.terminate() }
        XCTAssertNotEqual(second.terminationStatus, 0, "a second head was accepted on a live store")
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(text.contains("pid \(cluster.head!.processIdentifier)"), "the error must name the writer: \(text)")
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
    }

    /// Audit item 6: a shard that takes several times the dead-after interval never gets its worker
    /// declared dead. With one worker and no revocation, shard k is stored with attempt k + 1.
    func testAWorkerBusyLongerThanTheDeadAfterIntervalIsNotDeclaredDead() throws {
        cluster.shutdown()
        cluster = try ClusterHarness(items: 128, shardSize: 64)
        try cluster.startCoordinator(extra: ["--heartbeat-ms", "100", "--dead-after-beats", "3"])
        try cluster.startHead()
        try cluster.startWorker("w0")
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        XCTAssertEqual(storedShards().map(\.attempt), [1, 2], "a shard was leased again: its worker was declared dead\n\(cluster.logTails())")
    }

    /// Audit item 11: SIGTERM to a worker whose coordinator is gone ends it within 5 s.
    func testSIGTERMEndsAWorkerWhoseCoordinatorIsGone() throws {
        try cluster.startJob()
        cluster.waitForCommittedShards(2)
        cluster.kill(cluster.coordinator)
        let worker = cluster.workers["w0"]!
        kill(worker.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while worker.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertFalse(worker.isRunning, "the worker outlived SIGTERM by 5 s\n\(cluster.logTails())")
    }

    /// Audit item 5: a manifest listing one image twice: both entries are items, and the job finishes.
    func testAManifestListingAnImageTwiceFinishes() throws {
        let folder = ClusterHarness.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder/val")
        let classes = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        let images = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent(classes[0]).path).sorted().prefix(5)
        var lines = ["path,label"]
        for image in images { lines.append("\(folder.path)/\(classes[0])/\(image),\(classes[0])") }
        lines.append(lines[1])
        let manifest = cluster.directory.appendingPathComponent("twice.csv")
        try lines.joined(separator: "\n").write(to: manifest, atomically: true, encoding: .utf8)
        cluster.manifest = manifest.path
        try cluster.startJob()
        cluster.waitForCompletion(timeout: 120)
        let store = try FeatureStore.open(at: cluster.storeURL)
        XCTAssertTrue(store.exactlyOnceReport(expectedIndexes: 0..<6).isExactlyOnce, "\(store.exactlyOnceReport(expectedIndexes: 0..<6))")
    }

    /// Audit items 5 and 8 with real processes: every input of a hostile manifest ends in the store exactly
    /// once, as a row or a dead letter naming it — lines the coordinator's scan rejected (no path, a path
    /// that does not exist, a FIFO) travel with their shard; a listed-twice image is two items; a file that
    /// is not an image is dead-lettered by the worker that tried it.
    func testEveryInputOfAHostileManifestEndsInTheStore() throws {
        let folder = ClusterHarness.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder/val")
        let classes = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        let images = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent(classes[0]).path).sorted().prefix(4)
        let fifo = cluster.directory.appendingPathComponent("pipe.jpg").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let notAnImage = cluster.directory.appendingPathComponent("notes.jpg")
        try "not a picture".write(to: notAnImage, atomically: true, encoding: .utf8)
        var lines = ["path,label"]
        for image in images { lines.append("\(folder.path)/\(classes[0])/\(image),\(classes[0])") }
        lines += [lines[1], ",\(classes[0])", "\(cluster.directory.path)/gone.jpg,\(classes[0])", "\(fifo),\(classes[0])",
                  "\(notAnImage.path),\(classes[0])"]
        let manifest = cluster.directory.appendingPathComponent("hostile.csv")
        try lines.joined(separator: "\n").write(to: manifest, atomically: true, encoding: .utf8)
        cluster.manifest = manifest.path
        try cluster.startJob()
        cluster.waitForCompletion(timeout: 120)
        try cluster.assertExactlyOnce()
        let store = try FeatureStore.open(at: cluster.storeURL)
        XCTAssertEqual(store.inspect().rows, 5, "four images and the line listing one of them again")
        let letters = Dictionary(try store.deadLetters().map { ($0.entry.key, $0.entry.reason) }) { first, _ in first }
        XCTAssertEqual(Set(letters.keys), ["hostile.csv:7", "hostile.csv:8", "hostile.csv:9", notAnImage.path],
                       "three lines rejected by the scan and one undecodable file: \(letters)")
        for line in ["hostile.csv:7", "hostile.csv:8", "hostile.csv:9"] {
            XCTAssertTrue(letters[line]?.hasPrefix("index: ") == true, "\(line): \(letters[line] ?? "missing")")
        }
    }

    /// A WebDataset shard with a malformed pax record and a truncated tail: the samples before the damage
    /// are extracted, the damaged members are dead letters naming them, and the job finishes.
    func testADamagedTarShardFinishesWithItsDamageNamed() throws {
        let source = try [UInt8](Data(contentsOf: ClusterHarness.home.appendingPathComponent("data/fashion-mnist-demo/webdataset/val-000000.tar")))
        // Walk the shard's headers: keep 6 members, then 300 bytes of the next header (a tail cut mid-header).
        var offset = 0, members = 0
        while members < 6 {
            let sizeField = String(decoding: source[(offset + 124)..<(offset + 136)], as: UTF8.self)
                .trimmingCharacters(in: CharacterSet(charactersIn: "\0 "))
            offset += 512 + (Int(sizeField, radix: 8)! + 511) / 512 * 512
            members += 1
        }
        let pax = Self.tarHeader(name: "PaxHeader/x", size: 10, type: UInt8(ascii: "x")) + Self.padded(Array("99 path=x\n".utf8))
        let damaged = pax + Array(source[0..<offset]) + Array(source[offset..<(offset + 300)])
        let shard = cluster.directory.appendingPathComponent("damaged.tar")
        try Data(damaged).write(to: shard)
        cluster.manifest = shard.path
        try cluster.startJob()
        cluster.waitForCompletion(timeout: 120)
        try cluster.assertExactlyOnce()
        XCTAssertGreaterThanOrEqual(try cluster.jobIndex().count, 2, "the samples before the damage are items")
        let store = try FeatureStore.open(at: cluster.storeURL)
        let reasons = try store.deadLetters().map { "\($0.entry.key): \($0.entry.reason)" }
        XCTAssertTrue(reasons.contains { $0.contains("pax") }, "\(reasons)")
        XCTAssertTrue(reasons.contains { $0.contains("ends mid-header") }, "\(reasons)")
    }

    /// Audit item 4 through the CLI: `featstream run --out X` started while another run on X is live is
    /// refused (its coordinator and head cannot take the journal's or the store's lock), and the first run
    /// finishes with every item exactly once.
    func testASecondRunOnTheSameOutputIsRefusedAndTheFirstFinishes() throws {
        let out = cluster.directory.appendingPathComponent("job")
        func start(_ name: String) throws -> (Process, URL) {
            try cluster.startRun(["--limit", "160", "--shard-size", "8", "--workers", "1", "--batch", "4", "--no-train", "--out", out.path],
                                 logName: name)
        }
        let (first, firstLog) = try start("first")
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL); first.waitUntilExit() } }
        let storeURL = out.appendingPathComponent("store")
        waitUntil("the first run stored a shard") { ((try? FeatureStore.open(at: storeURL).committedShards.count) ?? 0) >= 1 }
        let (second, secondLog) = try start("second")
        defer { if second.isRunning { kill(second.processIdentifier, SIGKILL); second.waitUntilExit() } }
        waitUntil("the second run gave up", timeout: 60) { !second.isRunning }
        XCTAssertNotEqual(second.terminationStatus, 0, (try? String(contentsOf: secondLog, encoding: .utf8)) ?? "")
        waitUntil("the first run finished", timeout: 180) { !first.isRunning }
        XCTAssertEqual(first.terminationStatus, 0, (try? String(contentsOf: firstLog, encoding: .utf8)) ?? "")
        let store = try FeatureStore.open(at: storeURL)
        XCTAssertTrue(store.exactlyOnceReport(expectedIndexes: 0..<160).isExactlyOnce, "\(store.exactlyOnceReport(expectedIndexes: 0..<160))")
    }

    /// Audit item 10: a store holding shards of one job is refused by a head whose coordinator serves
    /// another plan (here another dataset with a fresh journal): the head stops before accepting anything,
    /// and the store still holds exactly the first job's shards.
    func testAStoreOfAnotherJobIsRefused() throws {
        try cluster.startJob()
        cluster.waitForCommittedShards(2)
        for process in [cluster.coordinator, cluster.head] + Array(cluster.workers.values) { cluster.kill(process) }
        let before = storedShards().map(\.shardID).sorted()
        let boundTo = try XCTUnwrap(JobPlanBinding.read(root: cluster.storeURL), "the first job bound its store")
        XCTAssertEqual(boundTo, try cluster.jobPlan().fingerprint)
        // Another job on the same store: the WebDataset shard, a new journal and index.
        cluster.webdataset = true
        for name in ["journal", "dataset.index"] { try FileManager.default.removeItem(at: cluster.directory.appendingPathComponent(name)) }
        try cluster.startCoordinator()
        try cluster.startHead()
        try cluster.startWorker("w0")
        waitUntil("the head refused the store") { cluster.head?.isRunning == false }
        XCTAssertNotEqual(cluster.head?.terminationStatus, 0)
        XCTAssertNotEqual(try cluster.jobPlan().fingerprint, boundTo)
        XCTAssertEqual(try JobPlanBinding.read(root: cluster.storeURL), boundTo)
        XCTAssertEqual(storedShards().map(\.shardID).sorted(), before, "nothing of the other job reached the store")
    }

    /// Issue 15 §1 and "Bad input": a restarted coordinator reuses its index while the dataset is unchanged
    /// (the file is not rewritten), and refuses to go on once the dataset changed under a job with a
    /// journal (an added manifest line), leaving the journal and the store as they were.
    func testARestartedCoordinatorReusesItsIndexAndRefusesAChangedDataset() throws {
        let folder = ClusterHarness.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder/val")
        let classes = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        var lines = ["path,label"]
        for label in classes.prefix(2) {
            for image in try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent(label).path).sorted().prefix(12) {
                lines.append("\(folder.path)/\(label)/\(image),\(label)")
            }
        }
        let manifest = cluster.directory.appendingPathComponent("list.csv")
        try lines.joined(separator: "\n").write(to: manifest, atomically: true, encoding: .utf8)
        cluster.manifest = manifest.path
        try cluster.startJob()
        cluster.waitForCommittedShards(1)
        cluster.kill(cluster.coordinator)
        let indexPath = cluster.directory.appendingPathComponent("dataset.index").path
        func identity() throws -> [String] {
            let attributes = try FileManager.default.attributesOfItem(atPath: indexPath)
            return ["\(attributes[.systemFileNumber] ?? "")", "\((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)"]
        }
        let before = try identity()
        try cluster.startCoordinator()
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        XCTAssertEqual(try identity(), before, "the restarted coordinator rescanned an unchanged dataset")

        let journal = try Data(contentsOf: cluster.directory.appendingPathComponent("journal"))
        let shards = storedShards().map(\.shardID).sorted()
        try (lines + ["\(folder.path)/\(classes[0])/extra.png,\(classes[0])"]).joined(separator: "\n")
            .write(to: manifest, atomically: true, encoding: .utf8)
        try cluster.startCoordinator()
        waitUntil("the coordinator refused the changed dataset", timeout: 60) { cluster.coordinator?.isRunning == false }
        XCTAssertNotEqual(cluster.coordinator?.terminationStatus, 0)
        XCTAssertEqual(try Data(contentsOf: cluster.directory.appendingPathComponent("journal")), journal)
        XCTAssertEqual(storedShards().map(\.shardID).sorted(), shards)
    }

    /// A ustar header (checksum filled in).
    static func tarHeader(name: String, size: Int, type: UInt8) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) { for (i, byte) in text.utf8.enumerated() { header[offset + i] = byte } }
        put(name, at: 0)
        put("0000644", at: 100); put("0000000", at: 108); put("0000000", at: 116)
        put(String(format: "%011o", size), at: 124); put("00000000000", at: 136)
        header[156] = type
        put("ustar", at: 257); put("00", at: 263)
        for i in 148..<156 { header[i] = UInt8(ascii: " ") }
        put(String(format: "%06o", header.reduce(0) { $0 + Int($1) }), at: 148)
        header[154] = 0
        return header
    }

    static func padded(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512) }

    func metric(_ name: String, port: Int) -> Double? {
        guard let text = try? fetchMetrics("http://127.0.0.1:\(port)") else { return nil }
        return MetricSample.parse(text).filter { $0.name == name }.map(\.value).reduce(0, +)
    }
}
