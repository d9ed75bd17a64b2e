import DatasetIndex
import Foundation
import XCTest

/// What ImageInput's in-memory readers were tested for and the index scanners' own tests did not cover:
/// reading an item's bytes through its locator, archives made by the system's tar, empty class folders,
/// layout detection.
final class ReaderTests: XCTestCase {
    /// `ItemLocator.bytes()` is the one reading path (extract, calibration, workers): a file whole, a tar
    /// member exactly, and a failure as a sentence naming the file, never a crash or a short array.
    func testLocatorBytesReadFilesAndTarMembersAndNameWhatFailed() throws {
        let d = try TemporaryDirectory()
        let image = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try d.write("imgs/a.jpg", Data(image))
        try d.write("m.csv", "path,label\nimgs/a.jpg,cat\nimgs/missing.jpg,dog\n")
        let manifest = try scan(IndexSelection(path: d.path + "/m.csv", checkPaths: false), in: d, name: "m.fsix")
        XCTAssertEqual(try manifest.item(0).locator.bytes(), image)
        XCTAssertThrowsError(try manifest.item(1).locator.bytes()) { error in
            XCTAssertTrue("\(error)".hasPrefix("cannot open \(d.path)/imgs/missing.jpg: No such file"), "\(error)")
        }

        var tar = TarBuilder()
        tar.add("s0.png", [1, 2, 3]); tar.add("s1.jpg", image); tar.add("s1.cls", "2")
        tar.end()
        let shard = try d.write("w/a.tar", Data(tar.bytes))
        let shards = try scan(IndexSelection(path: d.path + "/w"), in: d, name: "w.fsix")
        XCTAssertEqual(try shards.item(0).locator.bytes(), [1, 2, 3])
        XCTAssertEqual(try shards.item(1).locator.bytes(), image)
        // The tar shrank after the scan: the member's read comes up short and says so.
        let file = try FileHandle(forWritingTo: URL(fileURLWithPath: shard))
        try file.truncate(atOffset: 2048)
        try file.close()
        XCTAssertThrowsError(try shards.item(1).locator.bytes()) { error in
            XCTAssertTrue("\(error)".contains("unexpected end of file reading \(shard) at offset"), "\(error)")
        }
        XCTAssertThrowsError(try ItemLocator.rejected(reason: "bad line").bytes()) { XCTAssertEqual("\($0)", "bad line") }
    }

    /// GNU long names and pax paths, as /usr/bin/tar writes them, give the same samples; `.txt` labels are
    /// class names.
    func testWebDatasetFromSystemTarWithLongNamesAndTxtClassNames() throws {
        let d = try TemporaryDirectory()
        let longDirectory = String(repeating: "d", count: 120)
        try d.write("staging/\(longDirectory)/cat01.jpg", "cat")
        try d.write("staging/\(longDirectory)/cat01.txt", "tabby")
        try d.write("staging/x/dog01.jpg", "dog1")
        try d.write("staging/x/dog01.txt", "beagle\n")
        try d.write("staging/x/dog02.png", "dog2")
        try d.write("staging/x/dog02.txt", "beagle")
        for format in ["gnu", "pax"] {
            let shard = d.path + "/\(format).tar"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
            process.arguments = ["--format=\(format)", "--sort=name", "-cf", shard, "-C", d.path + "/staging", longDirectory, "x"]
            try process.run()
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0)

            let index = try scan(IndexSelection(path: shard), in: d, name: "\(format).fsix")
            XCTAssertEqual(try index.allKeys, ["\(format).tar:\(longDirectory)/cat01", "\(format).tar:x/dog01", "\(format).tar:x/dog02"], format)
            XCTAssertEqual(try index.classNames(), ["tabby", "beagle"], format)
            XCTAssertEqual(try index.allLabels, [0, 1, 1], format)
            XCTAssertEqual(try index.item(0).locator.bytes(), Array("cat".utf8), format)
            XCTAssertEqual(index.deadLetterCount, 0, format)
        }
    }

    /// A class folder with no files still names a class, so class ids do not depend on which folders hold
    /// images today.
    func testEmptyClassFolderStillNamesAClass() throws {
        let d = try TemporaryDirectory()
        try d.write("r/zebra/1.jpg", "x")
        try d.write("r/ant/2.png", "x")
        try d.mkdir("r/empty_class")
        let index = try scan(IndexSelection(path: d.path + "/r"), in: d)
        XCTAssertEqual(try index.classNames(), ["ant", "empty_class", "zebra"])
        XCTAssertEqual(try index.allKeys, ["ant/2.png", "zebra/1.jpg"])
        XCTAssertEqual(try index.allLabels, [0, 2])
    }

    func testLayoutDetection() throws {
        let d = try TemporaryDirectory()
        try d.write("folder/cls/a.jpg", "x")
        var tar = TarBuilder(); tar.end()
        try d.write("shards/s.tar", Data(tar.bytes))
        let csv = try d.write("x.csv", "path,label\n")
        let jsonl = try d.write("x.jsonl", "")
        XCTAssertEqual(try DatasetKind.detect(path: d.path + "/folder"), .imageFolder)
        XCTAssertEqual(try DatasetKind.detect(path: d.path + "/shards"), .webDataset)
        XCTAssertEqual(try DatasetKind.detect(path: d.path + "/shards/s.tar"), .webDataset)
        XCTAssertEqual(try DatasetKind.detect(path: csv), .manifest)
        XCTAssertEqual(try DatasetKind.detect(path: jsonl), .manifest)
        XCTAssertThrowsError(try DatasetKind.detect(path: d.path + "/nope"))
        XCTAssertThrowsError(try DatasetKind.detect(path: d.path + "/folder/cls/a.jpg"))
    }

    /// `folderSplit` (extract's `split` column, the head's validation rows) is the key's split folder, for
    /// image folders only.
    func testFolderSplitIsTheKeysSplitFolder() throws {
        let d = try TemporaryDirectory()
        for file in ["r/train/cat/1.jpg", "r/val/dog/2.jpg", "flat/train-like/3.jpg"] { try d.write(file, "x") }
        try d.write("m.csv", "path,split\nr/val/dog/2.jpg,val\n")
        let split = try scan(IndexSelection(path: d.path + "/r"), in: d, name: "r.fsix")
        XCTAssertEqual(try split.items(0..<split.count).map { split.folderSplit(of: $0) }, ["train", "val"])
        let flat = try scan(IndexSelection(path: d.path + "/flat"), in: d, name: "flat.fsix")
        XCTAssertNil(flat.folderSplit(of: try flat.item(0)))
        let manifest = try scan(IndexSelection(path: d.path + "/m.csv"), in: d, name: "m.fsix")
        XCTAssertNil(manifest.folderSplit(of: try manifest.item(0)))
    }
}
