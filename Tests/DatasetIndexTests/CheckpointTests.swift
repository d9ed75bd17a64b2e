import DatasetIndex
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A restarted coordinator rescans and must not offer again entries that differ from those it offered
/// before (INDEX.md §6): the rescan reaches each journaled checkpoint with the same digest, or fails.
final class CheckpointTests: XCTestCase {
    /// 300 items with a line that does not parse (a dead letter) at line 150 and another at the end.
    static let manifest: String = {
        var text = "path,label\n"
        for i in 0..<300 {
            text += "a/\(i).jpg,\(i % 3)\n"
            if i == 147 { text += "not,a,number\n" }
        }
        return text + "also,not,one\n"
    }()

    /// Scans `text` through a pipe, taking the checkpoint published once 200 items are final, and the last one.
    func checkpoints(of text: String, in d: TemporaryDirectory) throws -> [ScanCheckpoint] {
        let pipe = d.path + "/live.csv"
        XCTAssertEqual(mkfifo(pipe, 0o644), 0)
        defer { unlink(pipe) }
        final class Box: @unchecked Sendable { var handle: FileHandle? }
        let box = Box(), opened = DispatchSemaphore(value: 0)
        Thread { box.handle = FileHandle(forWritingAtPath: pipe); opened.signal() }.start()
        let scan = try IndexScan.start(IndexSelection(path: pipe, checkPaths: false), indexPath: d.path + "/first.fsix")
        opened.wait()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        box.handle!.write(Data((lines[0..<205].joined(separator: "\n") + "\n").utf8))
        let middle = scan.wait(forItems: 200, until: Date().addingTimeInterval(30))
        XCTAssertGreaterThanOrEqual(middle.finalItems, 200)
        XCTAssertFalse(middle.finished)
        box.handle!.write(Data(lines[205...].joined(separator: "\n").utf8))
        try box.handle!.close()
        _ = try scan.finished()
        return [middle.checkpoint!, scan.progress.checkpoint!]
    }

    /// The same entries from a regular file (another fingerprint, same entries) pass; the rescan's items are
    /// readable as before.
    func testARescanOfTheSameEntriesReachesEveryCheckpoint() throws {
        let d = try TemporaryDirectory()
        let taken = try checkpoints(of: Self.manifest, in: d)
        XCTAssertEqual(taken[0].deadLetters, 1, "the dead letter at line 150 is inside the first checkpoint")
        XCTAssertEqual(taken[1].items, 300)
        XCTAssertEqual(taken[1].deadLetters, 2)
        try d.write("live.csv", Self.manifest)
        var options = ScanOptions()
        options.expectedCheckpoints = taken
        let index = try IndexScan.run(IndexSelection(path: d.path + "/live.csv", checkPaths: false), indexPath: d.path + "/again.fsix", options: options)
        XCTAssertEqual(index.count, 300)
    }

    /// Each way a dataset can change under a job: a path replaced, a label changed, a line that no longer
    /// parses (an item becomes a dead letter), and fewer lines than were offered.
    func testARescanOfChangedEntriesFailsNamingTheChange() throws {
        let d = try TemporaryDirectory()
        let taken = try checkpoints(of: Self.manifest, in: d)
        let changes = [
            Self.manifest.replacingOccurrences(of: "a/10.jpg", with: "a/1O.jpg"),
            Self.manifest.replacingOccurrences(of: "a/11.jpg,2", with: "a/11.jpg,1"),
            Self.manifest.replacingOccurrences(of: "a/12.jpg,0", with: "a/12.jpg,zero"),
            Self.manifest.split(separator: "\n").prefix(150).joined(separator: "\n") + "\n",
        ]
        for (n, changed) in changes.enumerated() {
            try d.write("live.csv", changed)
            var options = ScanOptions()
            options.expectedCheckpoints = taken
            XCTAssertThrowsError(try IndexScan.run(IndexSelection(path: d.path + "/live.csv", checkPaths: false),
                                                   indexPath: d.path + "/changed\(n).fsix", options: options), "change \(n)") { error in
                XCTAssertTrue("\(error)".contains("the dataset changed since this job leased its first \(taken[0].entries) entries"), "change \(n): \(error)")
            }
        }
        // A change after the last checkpoint is no change to what was offered.
        try d.write("live.csv", Self.manifest + "a/300.jpg,0\n")
        var options = ScanOptions()
        options.expectedCheckpoints = taken
        XCTAssertEqual(try IndexScan.run(IndexSelection(path: d.path + "/live.csv", checkPaths: false), indexPath: d.path + "/longer.fsix",
                                         options: options).count, 301)
    }

    /// Dead letters are readable while the scan runs, like items: a shard of the published prefix carries them.
    func testDeadLettersAreReadableBeforeTheScanEnds() throws {
        let d = try TemporaryDirectory()
        let pipe = d.path + "/live.csv"
        XCTAssertEqual(mkfifo(pipe, 0o644), 0)
        final class Box: @unchecked Sendable { var handle: FileHandle? }
        let box = Box(), opened = DispatchSemaphore(value: 0)
        Thread { box.handle = FileHandle(forWritingAtPath: pipe); opened.signal() }.start()
        let scan = try IndexScan.start(IndexSelection(path: pipe, checkPaths: false), indexPath: d.path + "/live.fsix")
        opened.wait()
        box.handle!.write(Data("path,label\na/0.jpg,0\nbroken,line,here\na/1.jpg,1\n".utf8))
        let progress = scan.wait(forItems: 2, until: Date().addingTimeInterval(30))
        XCTAssertEqual(progress.deadLetters, 1)
        XCTAssertFalse(progress.finished)
        let letter = try scan.deadLetter(0)
        XCTAssertEqual(letter.key, "live.csv:3")
        XCTAssertEqual(letter.position, 1)
        XCTAssertThrowsError(try scan.deadLetter(1))
        try box.handle!.close()
        XCTAssertEqual(try scan.finished().deadLetter(0), letter)
    }
}
