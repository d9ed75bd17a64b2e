import DatasetIndex
import FeatStreamTestSupport
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Bounded-memory sorting, a 100k-item round trip, and items readable while the scan still runs.
final class ScaleTests: XCTestCase {
    /// A folder of 1,000 files sorted with 512-byte runs (about 130 spilled runs, more than the 64 merged at
    /// once, so the merge takes two passes) indexes exactly like the in-memory sort.
    func testExternalMergeSortGivesTheSameIndexAsAnInMemorySort() throws {
        let d = try TemporaryDirectory()
        var rng = SplitMix64(seed: 15)
        var names: [String] = []
        for i in 0..<1000 {
            let alphabet = Array("abcXYZ.-_09é")
            let name = String((0..<(1 + Int(rng.next() % 12))).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }) + "-\(i)"
            names.append(name)
            try d.write("r/c/" + name, "x")
        }
        try d.write("r/c/sub/inner.jpg", "x")
        var tiny = ScanOptions()
        tiny.sortRunBytes = 512
        let external = try scan(IndexSelection(path: d.path + "/r"), in: d, name: "external.fsix", options: tiny)
        let memory = try scan(IndexSelection(path: d.path + "/r"), in: d, name: "memory.fsix")
        let expected = (names.map { "c/" + $0 } + ["c/sub/inner.jpg"]).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        XCTAssertEqual(try external.allKeys, expected)
        XCTAssertEqual(try memory.allKeys, expected)
        XCTAssertEqual(external.contentID, memory.contentID)
        // The runs went to the index's building folder and were removed with it.
        XCTAssertFalse(FileManager.default.fileExists(atPath: d.path + "/external.fsix.building"))
    }

    func testHundredThousandItemManifestRoundTrip() throws {
        let d = try TemporaryDirectory()
        var text = "path,label\n"
        text.reserveCapacity(3_000_000)
        for i in 0..<100_000 { text += "images/\(i % 997)/img-\(i).jpg,\(i % 1000)\n" }
        try d.write("m.csv", text)
        let index = try scan(IndexSelection(path: d.path + "/m.csv", checkPaths: false), in: d)
        XCTAssertEqual(index.count, 100_000)
        XCTAssertEqual(index.classCount, 1000)
        try index.verify()
        for i in stride(from: 0, to: 100_000, by: 1) where i % 7919 == 0 || i == 99_999 {
            let item = try index.item(i)
            XCTAssertEqual(item.key, "images/\(i % 997)/img-\(i).jpg")
            XCTAssertEqual(item.label, Int32(i % 1000))
            XCTAssertEqual(item.locator, .file(path: d.path + "/images/\(i % 997)/img-\(i).jpg"))
        }
        let shard = try index.items(64_000..<64_064)
        XCTAssertEqual(shard.map(\.position), (64_000..<64_064).map(UInt64.init))
        XCTAssertEqual(shard.last?.key, "images/\(64_063 % 997)/img-64063.jpg")
    }

    /// The manifest is a pipe the test writes to: items must become readable while the scan is still
    /// waiting for the rest, which is what lets a coordinator lease shards before the scan ends.
    func testItemsAreReadableBeforeTheScanEnds() throws {
        let d = try TemporaryDirectory()
        let pipe = d.path + "/live.csv"
        XCTAssertEqual(mkfifo(pipe, 0o644), 0)
        let writerReady = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var handle: FileHandle? }
        let box = Box()
        Thread {
            box.handle = FileHandle(forWritingAtPath: pipe)   // blocks until the scan opens the pipe
            writerReady.signal()
        }.start()
        let scan = try IndexScan.start(IndexSelection(path: pipe, checkPaths: false), indexPath: d.path + "/live.fsix")
        writerReady.wait()
        let writer = box.handle
        var first = "path,label\n"
        for i in 0..<5000 { first += "a/\(i).jpg,\(i % 3)\n" }
        writer!.write(Data(first.utf8))
        let progress = scan.wait(forItems: 5000, until: Date().addingTimeInterval(30))
        XCTAssertEqual(progress.finalItems, 5000)
        XCTAssertFalse(progress.finished)
        let early = try scan.items(4936..<5000)
        XCTAssertEqual(early.map(\.key), (4936..<5000).map { "a/\($0).jpg" })
        XCTAssertThrowsError(try scan.items(4999..<5001))
        writer!.write(Data("a/5000.jpg,0\nnot,a,number\n".utf8))
        try writer!.close()
        let index = try scan.finished()
        XCTAssertEqual(index.count, 5001)
        XCTAssertEqual(try index.deadLetters().map(\.key), ["live.csv:5003"])
        XCTAssertEqual(try index.items(4936..<5000), early)
        XCTAssertEqual(try scan.items(0..<3).map(\.key), ["a/0.jpg", "a/1.jpg", "a/2.jpg"])
    }
}
