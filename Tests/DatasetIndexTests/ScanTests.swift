import DatasetIndex
import Foundation
import XCTest

/// What each scanner puts in the index for well-formed input: order, labels, locators, selection.
final class ScanTests: XCTestCase {
    func testImageFolderListsEveryRegularFileInGlobalPathOrder() throws {
        let d = try TemporaryDirectory()
        // `b/` sorts after `b.jpg` in a global path sort ('.' < '/'), which a plain per-directory name sort gets wrong.
        for file in ["root/dog/z.jpg", "root/cat/b/x.jpg", "root/cat/b.jpg", "root/cat/a.PNG", "root/cat/notes.txt", "root/cat/b-/y.jpeg"] {
            try d.write(file, "x")
        }
        let index = try scan(IndexSelection(path: d.path + "/root"), in: d)
        let keys = try index.allKeys
        XCTAssertEqual(keys, ["cat/a.PNG", "cat/b-/y.jpeg", "cat/b.jpg", "cat/b/x.jpg", "cat/notes.txt", "dog/z.jpg"])
        XCTAssertEqual(keys, keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
        XCTAssertEqual(try index.classNames(), ["cat", "dog"])
        XCTAssertEqual(index.labelKind, .folders)
        XCTAssertEqual(try index.allLabels, [0, 0, 0, 0, 0, 1])
        XCTAssertEqual(try index.item(5).locator, .file(path: d.path + "/root/dog/z.jpg"))
        XCTAssertEqual(index.deadLetterCount, 0)
        try index.verify()
    }

    func testImageFolderSplitsShareClassIdsAndSelectOneSplit() throws {
        let d = try TemporaryDirectory()
        for file in ["r/train/cat/1.jpg", "r/train/dog/2.jpg", "r/val/ant/3.jpg", "r/val/dog/4.jpg"] { try d.write(file, "x") }
        let all = try scan(IndexSelection(path: d.path + "/r"), in: d, name: "all.fsix")
        XCTAssertEqual(try all.allKeys, ["train/cat/1.jpg", "train/dog/2.jpg", "val/ant/3.jpg", "val/dog/4.jpg"])
        XCTAssertEqual(try all.classNames(), ["ant", "cat", "dog"])
        XCTAssertEqual(try all.allLabels, [1, 2, 0, 2])
        let val = try scan(IndexSelection(path: d.path + "/r", split: "val"), in: d, name: "val.fsix")
        XCTAssertEqual(try val.allKeys, ["val/ant/3.jpg", "val/dog/4.jpg"])
        XCTAssertEqual(try val.allLabels, [0, 2])
        XCTAssertThrowsError(try scan(IndexSelection(path: d.path + "/r", split: "test"), in: d, name: "test.fsix"))
    }

    func testCSVManifestInFileOrderWithQuotesSplitsAndLimit() throws {
        let d = try TemporaryDirectory()
        for file in ["a.jpg", "b,c.jpg", "d.jpg", "e.jpg"] { try d.write("img/" + file, "x") }
        try d.write("list.csv", "path, Label ,split\r\nimg/d.jpg,dog,train\n\"img/b,c.jpg\",\"cat\",train\nimg/a.jpg,dog,val\n\nimg/e.jpg,,train\n")
        let index = try scan(IndexSelection(path: d.path + "/list.csv", split: "train"), in: d)
        XCTAssertEqual(try index.allKeys, ["img/d.jpg", "img/b,c.jpg", "img/e.jpg"])
        XCTAssertEqual(try index.allLabels, [0, 1, -1])
        XCTAssertEqual(try index.classNames(), ["dog", "cat"])
        XCTAssertEqual(index.skippedCount, 1)
        XCTAssertEqual(try index.item(1).locator, .file(path: d.path + "/img/b,c.jpg"))
        let limited = try scan(IndexSelection(path: d.path + "/list.csv", limit: 2), in: d, name: "limited.fsix")
        XCTAssertEqual(try limited.allKeys, ["img/d.jpg", "img/b,c.jpg"])
    }

    func testQuotedFieldMaySpanLines() throws {
        let d = try TemporaryDirectory()
        try d.write("m.csv", "path,label\n\"multi\nline.jpg\",1\nnext.jpg,2\n")
        let index = try scan(IndexSelection(path: d.path + "/m.csv", checkPaths: false), in: d)
        XCTAssertEqual(try index.allKeys, ["multi\nline.jpg", "next.jpg"])
        XCTAssertEqual(try index.allLabels, [1, 2])
        XCTAssertEqual(index.labelKind, .integers)
        XCTAssertEqual(index.classCount, 3)
    }

    func testJSONLManifestWithIntegerLabelsEscapesAndNestedMembers() throws {
        let d = try TemporaryDirectory()
        try d.write("m.jsonl", """
        {"path": "a\\u00e9.jpg", "label": 3, "meta": {"x": [1, 2.5e3, null, true]}}
        {"label": "7", "path": "b.jpg", "split": "train"}

        {"path": "c.jpg", "label": null}

        """)
        let index = try scan(IndexSelection(path: d.path + "/m.jsonl", checkPaths: false), in: d)
        XCTAssertEqual(try index.allKeys, ["aé.jpg", "b.jpg", "c.jpg"])
        XCTAssertEqual(try index.allLabels, [3, 7, -1])
        XCTAssertEqual(try index.classNames(), (0...7).map(String.init))
        XCTAssertEqual(index.deadLetterCount, 0)
    }

    func testWebDatasetSamplesAreLocatedByMemberOffsetAndSize() throws {
        let d = try TemporaryDirectory()
        var tar = TarBuilder()
        tar.add("s0.jpg", [UInt8](repeating: 7, count: 1000)); tar.add("s0.cls", "4")
        tar.add("./dir/s1.png", [1, 2, 3]); tar.add("./dir/s1.jpg", [9, 9]); tar.add("./dir/s1.txt", " 2\n")
        tar.end()
        try d.write("w/a.tar", Data(tar.bytes))
        var second = TarBuilder()
        second.add("t.seg.png", [5]); second.end()
        try d.write("w/b.tar", Data(second.bytes))
        let index = try scan(IndexSelection(path: d.path + "/w"), in: d)
        XCTAssertEqual(index.kind, .webDataset)
        XCTAssertEqual(try index.allKeys, ["a.tar:s0", "a.tar:dir/s1", "b.tar:t"])
        XCTAssertEqual(try index.allLabels, [4, 2, -1])
        XCTAssertEqual(try index.item(0).locator, .tarMember(path: d.path + "/w/a.tar", offset: 512, size: 1000))
        // jpg is preferred over png within a sample; offsets point at the member's data.
        guard case let .tarMember(path, offset, size) = try index.item(1).locator else { return XCTFail("not a tar member") }
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(bytes[Int(offset)..<Int(offset) + Int(size)]), [9, 9])
        XCTAssertEqual(index.deadLetterCount, 0)
        try index.verify()
    }

    func testWebDatasetImageMayBeAnyDecodedTypeOrAnyNonLabelMember() throws {
        let d = try TemporaryDirectory()
        var tar = TarBuilder()
        for (i, type) in ["webp", "tif", "tiff", "gif", "bmp"].enumerated() {
            tar.add("s\(i).\(type)", [UInt8(i)]); tar.add("s\(i).cls", "1")
        }
        tar.add("p.json", Array("{}".utf8)); tar.add("p.heic", [42]); tar.add("p.cls", "2")   // no image type: the .heic is taken
        tar.add("q.png", [7]); tar.add("q.heic", [8])                                        // an image type beats a later other
        tar.add("r.heic", [8]); tar.add("r.gif", [9])                                        // and an earlier one
        tar.add("meta.json", Array("{}".utf8)); tar.add("meta.cls", "0")                     // labels and metadata only
        tar.end()
        try d.write("w/a.tar", Data(tar.bytes))
        let index = try scan(IndexSelection(path: d.path + "/w"), in: d)
        XCTAssertEqual(try index.allKeys, ["a.tar:s0", "a.tar:s1", "a.tar:s2", "a.tar:s3", "a.tar:s4", "a.tar:p", "a.tar:q", "a.tar:r"])
        func member(_ position: Int) throws -> [UInt8] {
            guard case let .tarMember(path, offset, size) = try index.item(position).locator else { XCTFail("not a tar member"); return [] }
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            return Array(bytes[Int(offset)..<Int(offset) + Int(size)])
        }
        for i in 0..<5 { XCTAssertEqual(try member(i), [UInt8(i)]) }
        XCTAssertEqual(try member(5), [42])
        XCTAssertEqual(try member(6), [7])
        XCTAssertEqual(try member(7), [9])
        XCTAssertEqual(try index.deadLetters().map(\.key), ["a.tar:meta"])
        XCTAssertEqual(try index.deadLetters().map(\.reason), ["the sample has no image member (it has .json, .cls)"])
    }

    /// With a limit the scan stops at a sample boundary: the sample after the last item, whose first member
    /// the scan already met, is neither an item (with its image first) nor a dead letter (with its label first).
    func testWebDatasetLimitStopsAtASampleBoundary() throws {
        let d = try TemporaryDirectory()
        var labelFirst = TarBuilder()
        for i in 0..<3 { labelFirst.add("s\(i).cls", "\(i)"); labelFirst.add("s\(i).png", [UInt8(i)]) }
        labelFirst.end()
        try d.write("a.tar", Data(labelFirst.bytes))
        var imageFirst = TarBuilder()
        for i in 0..<3 { imageFirst.add("s\(i).png", [UInt8(i)]); imageFirst.add("s\(i).cls", "\(i)") }
        imageFirst.end()
        try d.write("b.tar", Data(imageFirst.bytes))
        for name in ["a", "b"] {
            let index = try scan(IndexSelection(path: d.path + "/\(name).tar", limit: 2), in: d, name: "\(name).fsix")
            XCTAssertEqual(try index.allKeys, ["\(name).tar:s0", "\(name).tar:s1"], name)
            XCTAssertEqual(try index.allLabels, [0, 1], name)
            let letters = try index.deadLetters()
            XCTAssertEqual(letters, [], name)
        }
    }
}
