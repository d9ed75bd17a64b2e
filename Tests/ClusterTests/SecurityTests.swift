import FeatStreamTestSupport
import Foundation
import Transport
import WireProtocol
import XCTest

/// CurveZMQ on every socket: only allowed keys get shards or deliver features; everyone else is
/// refused, counted and logged, and the job still completes exactly once.
final class SecurityTests: XCTestCase {
    var cluster: ClusterHarness!

    override func setUpWithError() throws { cluster = try ClusterHarness(items: 64) }
    override func tearDown() { cluster.shutdown() }

    func testUnknownKeysAndPlaintextGetNothingAndTheJobCompletes() throws {
        let keys = cluster.directory.appendingPathComponent("keys")
        let allowCoordinator = cluster.directory.appendingPathComponent("allow-coordinator")
        let allowHead = cluster.directory.appendingPathComponent("allow-head")
        let intruderKeys = cluster.directory.appendingPathComponent("intruder")
        var publicKeys: [String: String] = [:]
        for name in ["coordinator", "head", "w0"] {
            let result = try runFeatstream(["keygen", "--out", keys.path, "--name", name])
            XCTAssertEqual(result.status, 0, result.output)
            publicKeys[name] = result.output.split(separator: "\n").first.map(String.init)
        }
        XCTAssertEqual(try runFeatstream(["keygen", "--out", intruderKeys.path, "--name", "intruder"]).status, 0)
        for (folder, names) in [(allowCoordinator, ["head", "w0"]), (allowHead, ["w0"])] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for name in names {
                try FileManager.default.copyItem(at: keys.appendingPathComponent("\(name).pub"),
                                                 to: folder.appendingPathComponent("\(name).pub"))
            }
        }
        func pair(_ name: String, in folder: URL = keys) -> [String] {
            ["--curve-secret", folder.appendingPathComponent("\(name).key").path,
             "--curve-public", folder.appendingPathComponent("\(name).pub").path]
        }
        let coordinatorPublic = ["--curve-coordinator-public", keys.appendingPathComponent("coordinator.pub").path]
        try cluster.startCoordinator(extra: pair("coordinator") + ["--curve-allow", allowCoordinator.path])
        try cluster.startHead(extra: pair("head") + ["--curve-allow", allowHead.path] + coordinatorPublic)
        // A worker with a key nobody allowed, pointed at the right servers: it must get no shard.
        try cluster.startWorker("intruder", extra: pair("intruder", in: intruderKeys) + coordinatorPublic
                                + ["--curve-head-public", keys.appendingPathComponent("head.pub").path])
        // Plaintext clients on both sockets: a hello and a feature batch each.
        let context = ZMQContext()
        for address in [cluster.control, cluster.data] {
            let socket = try ZMQSocket(context, .dealer)
            try socket.connect(address)
            _ = try socket.send([FrameCodec.encode(.hello(workerID: "plain", host: "x", pid: 1, capabilities: [:]))])
        }
        Thread.sleep(forTimeInterval: 3)
        XCTAssertTrue(cluster.coordinator!.isRunning && cluster.head!.isRunning, cluster.logTails())
        XCTAssertEqual(cluster.committedShards, 0, "a refused client produced commits\n\(cluster.logTails())")
        XCTAssertFalse(cluster.log("intruder").contains("welcomed"), cluster.log("intruder"))
        XCTAssertFalse(cluster.log("coordinator").contains("worker intruder joined"), cluster.log("coordinator"))
        XCTAssertTrue(cluster.log("coordinator").contains("CURVE"), "refusals are not logged\n\(cluster.log("coordinator"))")

        try cluster.startWorker("w0", extra: pair("w0") + coordinatorPublic
                                + ["--curve-head-public", keys.appendingPathComponent("head.pub").path])
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        // Secret keys never reach the logs.
        for name in ["coordinator", "head", "w0"] {
            let secret = try String(contentsOf: keys.appendingPathComponent("\(name).key"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let secretLine = secret.split(separator: "\n").last.map(String.init) ?? secret
            for log in ["coordinator", "head", "w0", "intruder"] {
                XCTAssertFalse(cluster.log(log).contains(secretLine), "\(name)'s secret key appears in the \(log) log")
            }
        }
        XCTAssertNotNil(publicKeys["w0"])
    }
}
