import DatasetIndex
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A restarted coordinator reuses an index of an unchanged dataset and is told, by name, what changed otherwise.
final class ReuseTests: XCTestCase {
    private func reuse(_ d: TemporaryDirectory, _ selection: IndexSelection) -> IndexReuse {
        IndexReuse.check(indexPath: d.path + "/index.fsix", selection: selection)
    }

    private func changes(_ result: IndexReuse, file: StaticString = #filePath, line: UInt = #line) -> [DatasetChange] {
        guard case .datasetChanged(_, let changes) = result else {
            XCTFail("expected a changed dataset, got \(result)", file: file, line: line)
            return []
        }
        return changes
    }

    private func assertReusable(_ result: IndexReuse, count: Int, file: StaticString = #filePath, line: UInt = #line) {
        guard case .reusable(let index) = result else { return XCTFail("expected reusable, got \(result)", file: file, line: line) }
        XCTAssertEqual(index.count, count, file: file, line: line)
    }

    /// Sets a file's mtime back to `seconds`, so a content change is only visible to the sampled hash.
    private func setMtime(_ path: String, seconds: Int) {
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        XCTAssertEqual(utimensat(AT_FDCWD, path, &times, 0), 0)
    }

    func testImageFolderAddedRemovedAndModifiedFilesAreDetected() throws {
        let d = try TemporaryDirectory()
        for file in ["r/cat/1.jpg", "r/cat/2.jpg", "r/dog/3.jpg"] { try d.write(file, "pixels") }
        let selection = IndexSelection(path: d.path + "/r")
        _ = try scan(selection, in: d)
        assertReusable(reuse(d, selection), count: 3)

        try d.write("r/dog/4.jpg", "new")
        XCTAssertEqual(changes(reuse(d, selection)).map(\.path), ["dog"])
        _ = try scan(selection, in: d)
        assertReusable(reuse(d, selection), count: 4)

        try FileManager.default.removeItem(atPath: d.path + "/r/cat/2.jpg")
        let removed = changes(reuse(d, selection))
        XCTAssertEqual(removed.map(\.path), ["cat", "cat/2.jpg"])
        XCTAssertTrue(removed[0].what.contains("added, removed or renamed"), removed[0].what)
        _ = try scan(selection, in: d)

        // Every file of a small folder is sampled: an in-place rewrite is seen through size or mtime.
        try d.write("r/cat/1.jpg", "other pixels")
        XCTAssertTrue(changes(reuse(d, selection)).contains { $0.path == "cat/1.jpg" })

        try FileManager.default.removeItem(atPath: d.path + "/r/dog")
        XCTAssertTrue(changes(reuse(d, selection)).contains { $0.path == "dog" && $0.what == "was removed" })
    }

    func testManifestRewrittenWithTheSameSizeAndMtimeIsCaughtByTheSampledHash() throws {
        let d = try TemporaryDirectory()
        try d.write("a.jpg", "x"); try d.write("b.jpg", "x")
        let manifest = try d.write("m.csv", "path,label\na.jpg,1\nb.jpg,2\n")
        setMtime(manifest, seconds: 1_600_000_000)
        let selection = IndexSelection(path: manifest)
        _ = try scan(selection, in: d)
        assertReusable(reuse(d, selection), count: 2)
        try d.write("m.csv", "path,label\nb.jpg,1\na.jpg,2\n")   // same size
        setMtime(manifest, seconds: 1_600_000_000)
        let found = changes(reuse(d, selection))
        XCTAssertEqual(found.map(\.path), ["m.csv"])
        XCTAssertTrue(found[0].what.contains("sampled hash"), found[0].what)
    }

    func testWebDatasetShardAddedOrTruncatedIsDetected() throws {
        let d = try TemporaryDirectory()
        var tar = TarBuilder()
        tar.add("s.jpg", [1]); tar.end()
        try d.write("w/0.tar", Data(tar.bytes))
        let selection = IndexSelection(path: d.path + "/w")
        _ = try scan(selection, in: d)
        assertReusable(reuse(d, selection), count: 1)
        try d.write("w/1.tar", Data(tar.bytes))
        XCTAssertEqual(changes(reuse(d, selection)).map(\.path), ["."])
        _ = try scan(selection, in: d)
        XCTAssertEqual(truncate(d.path + "/w/1.tar", 1024), 0)
        XCTAssertEqual(changes(reuse(d, selection)).map(\.path), ["1.tar"])
    }

    func testAnotherSelectionOrAMissingIndexMeansRescan() throws {
        let d = try TemporaryDirectory()
        try d.write("r/train/cat/1.jpg", "x"); try d.write("r/val/cat/2.jpg", "x")
        guard case .absent = reuse(d, IndexSelection(path: d.path + "/r")) else { return XCTFail("no index yet") }
        _ = try scan(IndexSelection(path: d.path + "/r", split: "train"), in: d)
        assertReusable(reuse(d, IndexSelection(path: d.path + "/r", split: "train")), count: 1)
        guard case .absent(let reason) = reuse(d, IndexSelection(path: d.path + "/r", split: "val")) else { return XCTFail("other split") }
        XCTAssertTrue(reason.contains("another selection"), reason)
        guard case .absent = reuse(d, IndexSelection(path: d.path + "/r", split: "train", limit: 1)) else { return XCTFail("other limit") }
        try d.write("index.fsix", "garbage that is not an index, but long enough to be read as a header. " + String(repeating: "x", count: 300))
        guard case .absent(let damaged) = reuse(d, IndexSelection(path: d.path + "/r", split: "train")) else { return XCTFail("damaged") }
        XCTAssertTrue(damaged.contains("bad magic"), damaged)
    }
}
