import DatasetIndex
import FeatStreamTestSupport
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Every rejected input becomes a named dead letter in the index, counted in its totals, and the scan goes on.
final class BadInputTests: XCTestCase {
    /// Two scans into one index path (two coordinators on one job folder) would write the same part files:
    /// the second is refused while the first holds `<index>.lock`, and runs once it is released.
    func testASecondScanIntoTheSameIndexIsRefused() throws {
        let d = try TemporaryDirectory()
        try d.write("list.csv", "path\na.jpg\n")
        let indexPath = d.path + "/index.fsix"
        let held = open(indexPath + ".lock", O_RDWR | O_CREAT, 0o600)
        XCTAssertEqual(flock(held, LOCK_EX | LOCK_NB), 0)
        XCTAssertThrowsError(try IndexScan.run(IndexSelection(path: d.path + "/list.csv", checkPaths: false), indexPath: indexPath)) { error in
            XCTAssertTrue("\(error)".contains("another process is scanning"), "\(error)")
            XCTAssertTrue("\(error)".contains("pid \(getpid()) holds"), "\(error)")
        }
        close(held)
        XCTAssertEqual(try IndexScan.run(IndexSelection(path: d.path + "/list.csv", checkPaths: false), indexPath: indexPath).count, 1)
    }

    func testManifestLinesThatDoNotParseAreDeadLettersWithTheirLineNumbers() throws {
        let d = try TemporaryDirectory()
        try d.write("a.jpg", "x"); try d.write("b.jpg", "x")
        try d.write("m.csv", "path,label\na.jpg,cat\n,dog\n\"never closed,cat\nb.jpg,dog\n")
        let csv = try scan(IndexSelection(path: d.path + "/m.csv"), in: d, name: "csv.fsix")
        XCTAssertEqual(try csv.allKeys, ["a.jpg", "b.jpg"])
        let csvLetters = try csv.deadLetters()
        XCTAssertEqual(csvLetters.map(\.key), ["m.csv:3", "m.csv:4"])
        XCTAssertTrue(csvLetters[1].reason.contains("unterminated quoted field"), csvLetters[1].reason)
        XCTAssertEqual(csv.deadLetterCount, 2)

        try d.write("m.jsonl", "{\"path\":\"a.jpg\",\"label\":1}\n{\"path\": \"b.jpg\"\n[1,2]\n{\"path\":3}\n{\"path\":\"b.jpg\",\"label\":\"cat\"}\n{\"path\":\"b.jpg\",\"label\":2.5}\n{\"path\":\"b.jpg\"} trailing\n{\"path\":\"b.jpg\",\"label\":2}\n")
        let jsonl = try scan(IndexSelection(path: d.path + "/m.jsonl"), in: d, name: "jsonl.fsix")
        XCTAssertEqual(try jsonl.allKeys, ["a.jpg", "b.jpg"])
        XCTAssertEqual(try jsonl.allLabels, [1, 2])
        let letters = try jsonl.deadLetters()
        XCTAssertEqual(letters.map(\.key), (2...7).map { "m.jsonl:\($0)" })
        XCTAssertTrue(letters[4].reason.contains("label"), letters[4].reason)
        XCTAssertEqual(letters.map(\.position), [1, 1, 1, 1, 1, 1])
    }

    func testMissingAndNonRegularManifestPathsAreDeadLetters() throws {
        let d = try TemporaryDirectory()
        try d.write("ok.jpg", "x")
        try d.mkdir("folder")
        XCTAssertEqual(mkfifo(d.path + "/pipe.jpg", 0o644), 0)
        try d.write("m.csv", "path\nok.jpg\nmissing.jpg\nfolder\npipe.jpg\n\(d.path)/ok.jpg\n")
        let index = try scan(IndexSelection(path: d.path + "/m.csv"), in: d)
        XCTAssertEqual(try index.allKeys, ["ok.jpg", d.path + "/ok.jpg"])
        let letters = try index.deadLetters()
        XCTAssertEqual(letters.map(\.key), ["m.csv:3", "m.csv:4", "m.csv:5"])
        XCTAssertTrue(letters[0].reason.contains("'missing.jpg', which does not exist"), letters[0].reason)
        XCTAssertTrue(letters[1].reason.contains("directory"), letters[1].reason)
        XCTAssertTrue(letters[2].reason.contains("FIFO"), letters[2].reason)
        // Without the path check the same lines are items, for the decoder to dead-letter.
        let unchecked = try scan(IndexSelection(path: d.path + "/m.csv", checkPaths: false), in: d, name: "unchecked.fsix")
        XCTAssertEqual(unchecked.count, 5)
    }

    /// Keys are not required to be unique: a path listed twice is two items, told apart by position.
    func testDuplicateKeysAreKeptAndDisambiguatedByPosition() throws {
        let d = try TemporaryDirectory()
        try d.write("a.jpg", "x")
        try d.write("m.csv", "path,label\na.jpg,0\na.jpg,1\n")
        let index = try scan(IndexSelection(path: d.path + "/m.csv"), in: d)
        XCTAssertEqual(try index.items(0..<2).map(\.position), [0, 1])
        XCTAssertEqual(try index.allKeys, ["a.jpg", "a.jpg"])
        XCTAssertEqual(try index.allLabels, [0, 1])
        XCTAssertEqual(index.deadLetterCount, 0)
    }

    func testImageFolderStrayFilesSpecialFilesAndLinksAreDeadLetters() throws {
        let d = try TemporaryDirectory()
        try d.write("r/cat/1.jpg", "x")
        try d.write("r/README", "x")
        XCTAssertEqual(mkfifo(d.path + "/r/cat/fifo", 0o644), 0)
        XCTAssertEqual(symlink(d.path + "/r/cat", d.path + "/r/cat/loop"), 0)
        XCTAssertEqual(symlink("nowhere", d.path + "/r/cat/dangling"), 0)
        XCTAssertEqual(symlink("1.jpg", d.path + "/r/cat/alias.jpg"), 0)
        let index = try scan(IndexSelection(path: d.path + "/r"), in: d)
        XCTAssertEqual(try index.allKeys, ["cat/1.jpg", "cat/alias.jpg"])
        XCTAssertEqual(try index.deadLetters().map(\.key), ["README", "cat/dangling", "cat/fifo", "cat/loop"])
    }

    /// Root reads every directory, so the unreadable case runs the real CLI as `nobody` when the tests run as root.
    func testUnreadableDirectoryIsADeadLetterAndTheScanGoesOn() throws {
        let d = try TemporaryDirectory()
        try d.write("r/cat/1.jpg", "x")
        try d.write("r/cat/locked/2.jpg", "x")
        try d.write("r/dog/3.jpg", "x")
        XCTAssertEqual(chmod(d.path, 0o777), 0)
        XCTAssertEqual(chmod(d.path + "/r/cat/locked", 0o000), 0)
        defer { chmod(d.path + "/r/cat/locked", 0o755) }
        let out = d.path + "/index.fsix"
        if geteuid() == 0 {
            let binary = productsDirectory.appendingPathComponent("featstream-index")
            let run = try runProcess(URL(fileURLWithPath: "/usr/bin/setpriv"),
                                     ["--reuid=65534", "--regid=65534", "--clear-groups", binary.path, "build", d.path + "/r", "--out", out])
            XCTAssertEqual(run.status, 0, run.output)
        } else {
            _ = try IndexScan.run(IndexSelection(path: d.path + "/r"), indexPath: out)
        }
        let index = try IndexedDataset(path: out)
        XCTAssertEqual(try index.allKeys, ["cat/1.jpg", "dog/3.jpg"])
        let letters = try index.deadLetters()
        XCTAssertEqual(letters.map(\.key), ["cat/locked/"])
        XCTAssertTrue(letters[0].reason.contains("cannot read directory"), letters[0].reason)
    }

    func testTarEndingMidHeaderIsADeadLetterNamingTheMember() throws {
        let d = try TemporaryDirectory()
        var tar = TarBuilder()
        tar.add("s0.jpg", [1, 2, 3]); tar.add("s0.cls", "1")
        tar.add("s1.jpg", [4])
        let cut = Array(tar.bytes[0..<(tar.bytes.count - 1024 + 300)])   // 300 bytes of s1.jpg's header
        try d.write("w/t.tar", Data(cut))
        let index = try scan(IndexSelection(path: d.path + "/w"), in: d)
        XCTAssertEqual(try index.allKeys, ["t.tar:s0"])
        let letters = try index.deadLetters()
        XCTAssertEqual(letters.map(\.key), ["t.tar:s1.jpg"])
        XCTAssertTrue(letters[0].reason.contains("ends mid-header"), letters[0].reason)
        XCTAssertTrue(letters[0].reason.contains("last complete member: s0.cls"), letters[0].reason)
    }

    func testTarWhoseMemberDataRunsPastTheEndIsADeadLetter() throws {
        let d = try TemporaryDirectory()
        var tar = TarBuilder()
        tar.add("s0.jpg", [1])
        tar.add("s1.jpg", [UInt8](repeating: 2, count: 2000))
        try d.write("t.tar", Data(tar.bytes[0..<(512 + 512 + 512 + 100)]))
        let index = try scan(IndexSelection(path: d.path + "/t.tar"), in: d)
        XCTAssertEqual(try index.allKeys, ["t.tar:s0"])
        XCTAssertEqual(try index.deadLetters().map(\.key), ["t.tar:s1.jpg"])
    }

    /// The pax record lengths that crashed the old reader (a range whose lower bound passed its upper bound).
    func testMalformedPaxHeadersAreDeadLettersNeverACrash() throws {
        let d = try TemporaryDirectory()
        let malformed: [[UInt8]] = [
            Array("99 path=x\n".utf8),          // length past the data
            Array("3 a\n".utf8),                // length shorter than its own digits and space
            Array("0 \n".utf8),                 // zero length
            Array("12 path=abcd".utf8),         // no newline
            Array("x path=y\n".utf8),           // no length
            Array("10 pathxxx\n".utf8),         // no '='
            Array("99999999999999999999 a=b\n".utf8),
        ]
        for (i, records) in malformed.enumerated() {
            var tar = TarBuilder()
            tar.add("good\(i).jpg", [1])
            tar.pax(records)
            tar.add("victim\(i).jpg", [2])
            tar.add("after\(i).jpg", [3])
            tar.end()
            try d.write("w/\(i).tar", Data(tar.bytes))
        }
        let index = try scan(IndexSelection(path: d.path + "/w"), in: d)
        XCTAssertEqual(try index.allKeys, malformed.indices.flatMap { ["\($0).tar:good\($0)", "\($0).tar:after\($0)"] })
        let letters = try index.deadLetters()
        XCTAssertEqual(letters.map(\.key), malformed.indices.map { "\($0).tar:victim\($0).jpg" })
        XCTAssertTrue(letters.allSatisfy { $0.reason.contains("pax header is malformed") }, "\(letters)")
    }

    func testCorruptHeaderChecksumStopsOnlyThatShard() throws {
        let d = try TemporaryDirectory()
        var bad = TarBuilder()
        bad.add("a.jpg", [1]); bad.add("b.jpg", [2]); bad.end()
        var bytes = bad.bytes
        bytes[1024 + 10] ^= 0xFF   // b.jpg's name, so its checksum no longer matches
        try d.write("w/1.tar", Data(bytes))
        var good = TarBuilder()
        good.add("c.jpg", [3]); good.end()
        try d.write("w/2.tar", Data(good.bytes))
        try d.write("w/readme.md", "not a shard")
        let index = try scan(IndexSelection(path: d.path + "/w"), in: d)
        XCTAssertEqual(try index.allKeys, ["1.tar:a", "2.tar:c"])
        let letters = try index.deadLetters()
        XCTAssertEqual(letters.count, 2)
        XCTAssertTrue(letters[0].reason.contains("checksum mismatch"), letters[0].reason)
        XCTAssertEqual(letters[1].key, "readme.md")
    }

    func testSampleWithoutAnImageIsADeadLetter() throws {
        let d = try TemporaryDirectory()
        var tar = TarBuilder()
        tar.add("s0.json", "{}"); tar.add("s0.txt", "3"); tar.add("s1.jpg", [1]); tar.add("noext", [1]); tar.end()
        try d.write("t.tar", Data(tar.bytes))
        let index = try scan(IndexSelection(path: d.path + "/t.tar"), in: d)
        XCTAssertEqual(try index.allKeys, ["t.tar:s1"])
        let letters = try index.deadLetters()
        XCTAssertEqual(letters.map(\.key), ["t.tar:s0", "t.tar:noext"])
        XCTAssertEqual(letters[0].reason, "the sample has no image member (it has .json, .txt)")
    }

    func testMissingDatasetIsAnErrorNotADeadLetter() throws {
        let d = try TemporaryDirectory()
        XCTAssertThrowsError(try scan(IndexSelection(path: d.path + "/absent.csv"), in: d)) { error in
            XCTAssertTrue("\(error)".contains("absent.csv"), "\(error)")
        }
        try d.write("noheader.csv", "a.jpg,1\n")
        XCTAssertThrowsError(try scan(IndexSelection(path: d.path + "/noheader.csv"), in: d)) { error in
            XCTAssertTrue("\(error)".contains("'path' column"), "\(error)")
        }
    }
}
