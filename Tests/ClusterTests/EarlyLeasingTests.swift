import Coordination
import FeatStreamTestSupport
import FeatureStore
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Leases start while the coordinator's scan still runs (issue 15 §3, INDEX.md §6, JOURNAL.md version 4).
/// The manifest is a pipe the test writes to, so the scan cannot end before the test lets it: a shard stored
/// while the pipe is open was leased before the scan ended. Real processes; every wait has a deadline and
/// every check reads the store, the journal, the index file or an exit status.
final class EarlyLeasingTests: XCTestCase {
    var cluster: ClusterHarness!
    var manifest: String { cluster.directory.appendingPathComponent("live.csv").path }

    override func setUpWithError() throws {
        cluster = try ClusterHarness(items: 48, shardSize: 8)
        cluster.manifest = manifest
    }

    override func tearDown() { cluster.shutdown() }

    /// The header and 48 demo images as manifest lines (absolute path, class name), two from each class in turn.
    func lines() throws -> [String] {
        let root = ClusterHarness.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder/val")
        let classes = try FileManager.default.contentsOfDirectory(atPath: root.path).sorted()
        let files = try classes.map { try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent($0).path).sorted() }
        var lines: [String] = []
        for round in 0..<3 {
            for (klass, names) in zip(classes, files) where lines.count < 48 {
                for name in names[(2 * round)..<(2 * round + 2)] { lines.append("\(root.path)/\(klass)/\(name),\(klass)") }
            }
        }
        XCTAssertEqual(lines.count, 48)
        return lines
    }

    /// Opens the pipe for writing once the coordinator's scan opened it for reading (non-blocking tries, so a
    /// coordinator that never gets there fails the test instead of hanging it).
    func openPipeForWriting(timeout: TimeInterval = 60) throws -> FileHandle {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let fd = open(manifest, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            if fd >= 0 {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
                return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            }
            guard errno == ENXIO, cluster.coordinator?.isRunning == true else { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTFail("the coordinator never opened its manifest\n\(cluster.logTails())")
        throw CocoaError(.fileReadNoSuchFile)
    }

    /// Starts the job on the pipe with the first 24 lines written (three shards), and waits until a shard is
    /// stored: the scan is still waiting for the rest of the pipe, so no dataset index exists yet.
    func startWithThePipeOpen(_ lines: [String]) throws -> FileHandle {
        XCTAssertEqual(mkfifo(manifest, 0o644), 0)
        try cluster.startCoordinator()
        let pipe = try openPipeForWriting()
        pipe.write(Data(("path,label\n" + lines[0..<24].joined(separator: "\n") + "\n").utf8))
        try cluster.startHead()
        try cluster.startWorker("w0")
        XCTAssertTrue(cluster.waitUntil("a shard was stored while the scan runs", timeout: 120) { cluster.committedShards >= 1 })
        XCTAssertFalse(FileManager.default.fileExists(atPath: cluster.directory.appendingPathComponent("dataset.index").path),
                       "the scan ended before the test let it")
        XCTAssertEqual(CoordinatorJournal.existingHeader(at: cluster.journalPath)?.version, 4)
        return pipe
    }

    func testShardsAreLeasedAndStoredBeforeTheScanEnds() throws {
        let lines = try lines()
        let pipe = try startWithThePipeOpen(lines)
        pipe.write(Data((lines[24...].joined(separator: "\n") + "\nnot,a,line,that,parses\n").utf8))
        try pipe.close()
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        XCTAssertEqual(try cluster.jobIndex().count, 48)
        XCTAssertEqual(try FeatureStore.open(at: cluster.storeURL).inspect().deadLetters, 1, "the line that does not parse")
    }

    /// Killed mid-scan, the coordinator rescans (the manifest is a regular file now, with the same lines): the
    /// rescan reaches the journaled checkpoint unchanged, so the job goes on and ends exactly once.
    func testACoordinatorKilledMidScanRescansAndGoesOn() throws {
        let lines = try lines()
        let pipe = try startWithThePipeOpen(lines)
        cluster.kill(cluster.coordinator)
        try? pipe.close()
        unlink(manifest)
        try Data(("path,label\n" + lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: manifest))
        try cluster.startCoordinator()
        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
        XCTAssertEqual(try cluster.jobIndex().count, 48)
    }

    /// The same, but two lines the job had already offered were swapped while it was down: the restarted
    /// coordinator stops (naming the change) before it offers or records anything more.
    func testACoordinatorKilledMidScanStopsWhenWhatItOfferedChanged() throws {
        var lines = try lines()
        let pipe = try startWithThePipeOpen(lines)
        cluster.kill(cluster.coordinator)
        try? pipe.close()
        let stored = cluster.committedShards
        lines.swapAt(1, 2)
        unlink(manifest)
        try Data(("path,label\n" + lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: manifest))
        try cluster.startCoordinator()
        XCTAssertTrue(cluster.waitUntil("the coordinator stopped", timeout: 60) { cluster.coordinator?.isRunning == false })
        XCTAssertNotEqual(cluster.coordinator?.terminationStatus, 0, cluster.logTails())
        XCTAssertTrue(cluster.log("coordinator#2").contains("the dataset changed since this job leased its first"), cluster.logTails())
        XCTAssertLessThanOrEqual(cluster.committedShards, stored + 2, "only attempts already running when it was killed may land")
    }
}
