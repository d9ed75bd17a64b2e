import ClusterLaunch
import Coordination
import DatasetIndex
import FeatureStore
import Foundation
import XCTest

/// Audit item 7 with real processes: an input that hangs or kills every worker that reads it is isolated by
/// probes (PROTOCOL.md §8.3.7) and stored as a dead letter naming why; the job finishes, every other image
/// stored once. The poison is real: after the coordinator's scan, one image of the manifest is replaced by a
/// FIFO that nobody writes, so opening it blocks for ever (as a dead network mount would).
final class PoisonItemTests: XCTestCase {
    var cluster: ClusterHarness!

    override func setUpWithError() throws { cluster = try ClusterHarness() }
    override func tearDown() { cluster.shutdown() }

    /// Thirteen copies of demo images in a manifest, the poison one last (in the last shard, so that the
    /// workers are still loading the model or busy when it is swapped in); the manifest and the poison's path.
    func makeManifest() throws -> (manifest: URL, poison: String) {
        let folder = ClusterHarness.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder/val")
        let classes = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        var lines = ["path,label"]
        for name in classes.prefix(2) {
            for image in try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent(name).path).sorted().prefix(7) {
                let copy = cluster.directory.appendingPathComponent("\(name)-\(image)")
                try FileManager.default.copyItem(at: folder.appendingPathComponent(name).appendingPathComponent(image), to: copy)
                lines.append("\(copy.path),\(name)")
            }
        }
        lines.removeLast()
        let manifest = cluster.directory.appendingPathComponent("poison.csv")
        try lines.joined(separator: "\n").write(to: manifest, atomically: true, encoding: .utf8)
        return (manifest, String(lines.last!.split(separator: ",")[0]))
    }

    /// Runs `featstream run` over the manifest, swaps the poison in once the scan is done, and checks the
    /// store when the run has finished. `whileRunning` is called every 50 ms until then.
    func runWithPoison(stallAfter: Int, whileRunning: (Process) -> Void = { _ in }) throws {
        let (manifest, poison) = try makeManifest()
        let out = cluster.directory.appendingPathComponent("job")
        let (run, log) = try cluster.startRun(["--workers", "2", "--shard-size", "2", "--batch", "2", "--no-train", "--json",
                                               "--stall-after", String(stallAfter), "--out", out.path],
                                              logName: "run", dataset: ["--data", manifest.path])
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL); run.waitUntilExit() } }
        cluster.waitUntil("the coordinator's scan finished") {
            FileManager.default.fileExists(atPath: out.appendingPathComponent("dataset.index").path) || !run.isRunning
        }
        try FileManager.default.removeItem(atPath: poison)
        XCTAssertEqual(mkfifo(poison, 0o600), 0)
        let deadline = Date().addingTimeInterval(240)
        while run.isRunning && Date() < deadline {
            whileRunning(run)
            Thread.sleep(forTimeInterval: 0.05)
        }
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        XCTAssertFalse(run.isRunning, "the run did not finish in 240 s\n\(output.suffix(4000))")
        XCTAssertEqual(run.terminationStatus, 0, String(output.suffix(4000)))
        // Every lost attempt was a worker that died or stalled and was started again: three whole attempts
        // of the shard, then its one item probed alone three times.
        let summary = try XCTUnwrap(output.split(separator: "\n").last(where: { $0.hasPrefix("{") })
            .flatMap { try? JSONDecoder().decode(RunSummary.self, from: Data($0.utf8)) }, String(output.suffix(2000)))
        XCTAssertGreaterThanOrEqual(summary.workerRestarts, 3, String(output.suffix(4000)))
        XCTAssertEqual(summary.deadLetters, 1)
        let store = try FeatureStore.open(at: out.appendingPathComponent("store"))
        // Dead letters name their (shard, offset); the coordinator's plan says which item that is.
        let plan = IndexShardPlan(index: try IndexedDataset(path: out.appendingPathComponent("dataset.index").path), shardSize: 2)
        let report = store.exactlyOnceReport(expectedIndexes: 0..<13) { shardID, entry in plan.items(of: shardID)[Int(entry.offset)].index }
        XCTAssertTrue(report.isExactlyOnce, "\(report)")
        XCTAssertEqual(store.inspect().rows, 12, "every image but the poison")
        let letters = try store.deadLetters().map(\.entry)
        XCTAssertEqual(letters.map(\.key), [poison])
        XCTAssertEqual(letters.first?.reason, "poison: worker lost 3 times while decoding")
    }

    /// A worker whose extraction hangs gives its shard up as stalled and exits; `run` starts it again.
    func testAnInputThatHangsEveryWorkerEndsAsAPoisonDeadLetter() throws {
        try runWithPoison(stallAfter: 2)
    }

    /// Here the poison kills the worker instead: the test plays a decoder crash, SIGKILLing any worker
    /// process with a thread blocked opening the FIFO (`wait_for_partner`). `run` restarts killed workers.
    func testAnInputThatKillsEveryWorkerEndsAsAPoisonDeadLetter() throws {
        try runWithPoison(stallAfter: 600) { run in
            for pid in childProcesses(of: run.processIdentifier) where threadsWaiting(pid: pid, in: "wait_for_partner") {
                kill(pid, SIGKILL)
            }
        }
    }
}

/// Process ids whose parent is `parent` (from /proc).
private func childProcesses(of parent: Int32) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { pid in
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 2 && Int32(fields[1]) == parent
    }
}

/// Whether any thread of `pid` sleeps in the kernel function `function` (`/proc/PID/task/*/wchan`).
private func threadsWaiting(pid: Int32, in function: String) -> Bool {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return tasks.contains { (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/wchan", encoding: .utf8)) == function }
}
