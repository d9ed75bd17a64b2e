import Foundation
import XCTest
@testable import ImageInput

final class DatasetTests: XCTestCase {
    func testImageFolderWithSplitsUsesUnionOfSortedClasses() throws {
        let dir = try TemporaryDirectory()
        let jpeg = try Fixtures.bytes("baseline.jpg")
        try dir.write("train/dog/b.jpg", jpeg)
        try dir.write("train/dog/a.JPEG", jpeg)
        try dir.write("train/cat/x.png", try Fixtures.bytes("rgb8.png"))
        try dir.write("train/cat/notes.txt", text: "an item too: dead-lettered at decode time, never dropped")
        try dir.write("val/bird/1.jpg", jpeg)
        try dir.write("val/cat/fake.png", text: "an image extension does not make an image")
        try dir.write("val/cat/nested/deep.jpg", jpeg)

        let index = try DatasetIndex.open(path: dir.path)
        XCTAssertEqual(index.format, .imagefolder)
        XCTAssertEqual(index.classes, ["bird", "cat", "dog"])
        XCTAssertEqual(index.items.map(\.key), [
            "train/cat/notes.txt", "train/cat/x.png", "train/dog/a.JPEG", "train/dog/b.jpg",
            "val/bird/1.jpg", "val/cat/fake.png", "val/cat/nested/deep.jpg",
        ])
        XCTAssertEqual(index.items.map(\.label), [1, 1, 2, 2, 0, 1, 1])
        XCTAssertEqual(index.items.map(\.split), ["train", "train", "train", "train", "val", "val", "val"])
        XCTAssertEqual(index.items.map(\.index), Array(0..<7))
        XCTAssertEqual(try index.bytes(of: index.items[3]), jpeg)

        // Same tree, same order: determinism does not depend on directory listing order.
        XCTAssertEqual(try DatasetIndex.open(path: dir.path).items, index.items)
    }

    func testImageFolderWithoutSplits() throws {
        let dir = try TemporaryDirectory()
        try dir.write("zebra/1.jpg", [1])
        try dir.write("ant/2.png", [2])
        try dir.write("ant/1.png", [3])
        try FileManager.default.createDirectory(atPath: dir.path + "/empty_class", withIntermediateDirectories: true)
        let index = try ImageFolderReader.index(root: dir.path)
        XCTAssertEqual(index.classes, ["ant", "empty_class", "zebra"])
        XCTAssertEqual(index.items.map(\.key), ["ant/1.png", "ant/2.png", "zebra/1.jpg"])
        XCTAssertEqual(index.items.map(\.label), [0, 0, 2])
        XCTAssertEqual(index.items.map(\.split), [nil, nil, nil])
    }

    func testWebDatasetShardsWithClsLabels() throws {
        let dir = try TemporaryDirectory()
        let jpeg = try Fixtures.bytes("baseline.jpg")
        let png = try Fixtures.bytes("rgb8.png")
        var first = TarWriter()
        first.add("sample0.jpg", jpeg)
        first.add("sample0.cls", text: "3\n")
        first.add("sub/sample1.png", png)
        first.add("sub/sample1.cls", text: "1")
        first.add("meta.json", text: "{}")     // a sample with no image: reported, not silently dropped
        var second = TarWriter()
        second.add("a.b.c.jpeg", jpeg)          // key stops at the first dot of the basename
        second.add("a.b.c.cls", text: "0")
        // Shards are visited in name order regardless of creation order.
        try dir.write("shard-001.tar", second.finished())
        try dir.write("shard-000.tar", first.finished())
        try dir.write("readme.md", text: "not a shard")

        let index = try DatasetIndex.open(path: dir.path)
        XCTAssertEqual(index.format, .webdataset)
        XCTAssertEqual(index.items.map(\.key), ["shard-000.tar:sample0", "shard-000.tar:sub/sample1", "shard-001.tar:a"])
        XCTAssertEqual(index.classes, ["0", "1", "2", "3"])
        XCTAssertEqual(index.items.map(\.label), [3, 1, 0])
        XCTAssertEqual(try index.bytes(of: index.items[0]), jpeg)
        XCTAssertEqual(try index.bytes(of: index.items[1]), png)
        XCTAssertEqual(try index.bytes(of: index.items[2]), jpeg)
        if case .tarMember(let shard, let offset, let size) = index.items[1].source {
            XCTAssertTrue(shard.hasSuffix("shard-000.tar"))
            XCTAssertEqual(offset % 512, 0)
            XCTAssertEqual(size, png.count)
        } else {
            XCTFail("expected a tar member source")
        }
        XCTAssertEqual(index.deadLetters, [DeadLetter(key: "shard-000.tar:meta", reason: "the sample has no image member (it has .json)")])
        let decoded = try ImageDecoder().decode(try index.bytes(of: index.items[1]), name: index.items[1].key)
        XCTAssertEqual(decoded.width, 40)
    }

    func testWebDatasetTxtClassNamesFromSystemTarWithLongNames() throws {
        let dir = try TemporaryDirectory()
        let staging = dir.path + "/staging"
        let longDirectory = String(repeating: "d", count: 120)
        let jpeg = try Fixtures.bytes("baseline.jpg")
        try dir.write("staging/\(longDirectory)/cat01.jpg", jpeg)
        try dir.write("staging/\(longDirectory)/cat01.txt", text: "tabby")
        try dir.write("staging/x/dog01.jpg", jpeg)
        try dir.write("staging/x/dog01.txt", text: "beagle\n")
        try dir.write("staging/x/dog02.png", try Fixtures.bytes("rgb8.png"))
        try dir.write("staging/x/dog02.txt", text: "beagle")
        let shard = dir.path + "/single.tar"
        for format in ["gnu", "pax"] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
            process.arguments = ["--format=\(format)", "--sort=name", "-cf", shard, "-C", staging, longDirectory, "x"]
            try process.run()
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0)

            let index = try DatasetIndex.open(path: shard)
            XCTAssertEqual(index.format, .webdataset)
            XCTAssertEqual(index.classes, ["beagle", "tabby"], format)
            XCTAssertEqual(index.items.map(\.key), [
                "single.tar:\(longDirectory)/cat01", "single.tar:x/dog01", "single.tar:x/dog02",
            ], format)
            XCTAssertEqual(index.items.map(\.label), [1, 0, 0], format)
            XCTAssertEqual(try index.bytes(of: index.items[0]), jpeg, format)
        }
    }

    func testCorruptTarHeaderNamesShardAndOffset() throws {
        let dir = try TemporaryDirectory()
        var writer = TarWriter()
        writer.add("good.jpg", try Fixtures.bytes("baseline.jpg"))
        let firstMemberBlocks = writer.bytes.count
        writer.add("bad.jpg", [1, 2, 3])
        var bytes = writer.finished()
        bytes[firstMemberBlocks + 124] = UInt8(ascii: "9")    // size field: not octal, and checksum now wrong
        let shard = try dir.write("broken.tar", bytes)

        XCTAssertThrowsError(try TarScanner.members(of: shard)) { error in
            let tarError = error as? TarFormatError
            XCTAssertEqual(tarError?.offset, Int64(firstMemberBlocks))
            XCTAssertEqual(tarError?.description.hasPrefix("corrupt tar header in \(shard) at offset \(firstMemberBlocks):"), true,
                           "\(error)")
        }
        // Indexing keeps what precedes the damage and dead-letters the shard.
        let index = try WebDatasetReader.index(path: shard)
        XCTAssertEqual(index.items.map(\.key), ["broken.tar:good"])
        XCTAssertEqual(index.deadLetters.count, 1)
        XCTAssertEqual(index.deadLetters.first?.key, "broken.tar")
        XCTAssertTrue(index.deadLetters.first?.reason.contains("at offset \(firstMemberBlocks)") ?? false)
    }

    /// A pax record whose length is too short for its own text once crashed the reader (issue 13, item 9).
    func testMalformedPaxRecordsAreDeadLetteredNotACrash() throws {
        let dir = try TemporaryDirectory()
        for (number, record) in ["1 ab\n", "3 x\n", "5 path=a\n", "0 \n", "8 path=ab"].enumerated() {
            var writer = TarWriter()
            writer.add("good.jpg", try Fixtures.bytes("baseline.jpg"))
            writer.add("PaxHeader", Array(record.utf8), type: UInt8(ascii: "x"))
            writer.add("next.jpg", try Fixtures.bytes("baseline.jpg"))
            let shard = try dir.write("pax\(number).tar", writer.finished())
            let index = try WebDatasetReader.index(path: shard)
            XCTAssertEqual(index.items.map(\.key), ["pax\(number).tar:good"], record)
            XCTAssertEqual(index.deadLetters.map(\.key), ["pax\(number).tar"], record)
            XCTAssertTrue(index.deadLetters.first?.reason.contains("malformed pax record") ?? false, "\(index.deadLetters)")
        }
    }

    func testTarMemberRunningPastEndOfFileIsReported() throws {
        let dir = try TemporaryDirectory()
        var writer = TarWriter()
        writer.add("big.jpg", [UInt8](repeating: 7, count: 5000))
        let shard = try dir.write("cut.tar", Array(writer.bytes.prefix(2048)))
        XCTAssertThrowsError(try TarScanner.members(of: shard)) { error in
            XCTAssertTrue("\(error)".contains("runs past the end"), "\(error)")
        }
    }

    func testCSVManifestWithClassNames() throws {
        let dir = try TemporaryDirectory()
        let jpeg = try Fixtures.bytes("baseline.jpg")
        try dir.write("data/images/one.jpg", jpeg)
        try dir.write("data/images/two, with comma.jpg", jpeg)
        let manifest = try dir.write("data/list.csv", text: """
        path,label
        images/one.jpg,zebra
        "images/two, with comma.jpg",ant
        images/missing.jpg,zebra

        """)
        let index = try DatasetIndex.open(path: manifest)
        XCTAssertEqual(index.format, .manifest)
        XCTAssertEqual(index.classes, ["ant", "zebra"])
        XCTAssertEqual(index.items.map(\.key), ["images/one.jpg", "images/two, with comma.jpg", "images/missing.jpg"])
        XCTAssertEqual(index.items.map(\.label), [1, 0, 1])
        XCTAssertEqual(try index.bytes(of: index.items[1]), jpeg)
        // A listed-but-missing file fails at read time with a reason, to be dead-lettered by the caller.
        XCTAssertThrowsError(try index.bytes(of: index.items[2])) { error in
            XCTAssertTrue("\(error)".contains("missing.jpg"), "\(error)")
        }
    }

    func testJSONLManifestWithIntegerLabels() throws {
        let dir = try TemporaryDirectory()
        try dir.write("imgs/a.png", try Fixtures.bytes("rgb8.png"))
        let manifest = try dir.write("m.jsonl", text: """
        {"path": "imgs/a.png", "label": 4}
        {"path": "imgs/b.png", "label": 0, "split": "val"}
        this line is broken
        {"label": 2}
        {"path": "\(dir.path)/imgs/a.png"}
        """)
        let index = try DatasetIndex.open(path: manifest)
        XCTAssertEqual(index.classes, ["0", "1", "2", "3", "4"])
        XCTAssertEqual(index.items.count, 3)
        XCTAssertEqual(index.items.map(\.label), [4, 0, nil])
        XCTAssertEqual(index.items.map(\.split), [nil, "val", nil])
        XCTAssertEqual(index.items[0].source, .file(path: dir.path + "/imgs/a.png"))
        XCTAssertEqual(try index.bytes(of: index.items[2]), try Fixtures.bytes("rgb8.png"))
        XCTAssertEqual(index.deadLetters.map(\.key), ["m.jsonl:3", "m.jsonl:4"])
    }

    func testFormatDetection() throws {
        let dir = try TemporaryDirectory()
        try dir.write("folder/cls/a.jpg", [0])
        try dir.write("shards/s.tar", TarWriter().finished())
        let csv = try dir.write("x.csv", text: "path,label\n")
        XCTAssertEqual(try DatasetFormat.detect(path: dir.path + "/folder"), .imagefolder)
        XCTAssertEqual(try DatasetFormat.detect(path: dir.path + "/shards"), .webdataset)
        XCTAssertEqual(try DatasetFormat.detect(path: dir.path + "/shards/s.tar"), .webdataset)
        XCTAssertEqual(try DatasetFormat.detect(path: csv), .manifest)
        XCTAssertThrowsError(try DatasetFormat.detect(path: dir.path + "/nope"))
    }
}
