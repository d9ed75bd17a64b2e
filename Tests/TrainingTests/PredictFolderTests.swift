import FeatStreamTestSupport
import Foundation
import XCTest

/// Issue 17 §3 for `featstream predict` on a folder: every entry it meets is either classified or
/// named with its reason, in the CSV and in `--json`, and no supported format is skipped.
final class PredictFolderTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("ImageInputTests/Fixtures")
    /// HEIF with HEVC pictures: a real `ftyp` box, which the decoder names but does not decode.
    static let heic: [UInt8] = [0, 0, 0, 24] + Array("ftypheic".utf8) + [0, 0, 0, 0] + Array("mif1heic".utf8)

    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-predict-folder-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: scratch) }

    /// Runs featstream with stdout and stderr apart (so JSON lines are never cut by a log line).
    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = productsDirectory.appendingPathComponent("featstream")
        process.arguments = arguments
        let errors = scratch.appendingPathComponent("stderr-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = try FileHandle(forWritingTo: errors)
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), try String(contentsOf: errors, encoding: .utf8))
    }

    /// One CSV record's fields (RFC 4180 quoting, as `predict` writes it).
    func fields(_ line: Substring) -> [String] {
        var result: [String] = []
        var field = ""
        var quoted = false
        var characters = line.makeIterator()
        while let c = characters.next() {
            if quoted {
                if c == "\"" {
                    // A doubled quote is a literal quote; a single one ends the quoted part.
                    guard let next = characters.next() else { quoted = false; break }
                    if next == "\"" { field.append("\"") } else { quoted = false; if next == "," { result.append(field); field = "" } else { field.append(next) } }
                } else {
                    field.append(c)
                }
            } else if c == "\"" {
                quoted = true
            } else if c == "," {
                result.append(field)
                field = ""
            } else {
                field.append(c)
            }
        }
        result.append(field)
        return result
    }

    func testEveryEntryOfAFolderIsPredictedOrNamedWithItsReason() throws {
        let folder = scratch.appendingPathComponent("photos")
        let fm = FileManager.default
        try fm.createDirectory(at: folder.appendingPathComponent("nested/deeper"), withIntermediateDirectories: true)
        try fm.createDirectory(at: folder.appendingPathComponent("empty-folder"), withIntermediateDirectories: true)
        // One image per supported format, one of them nested, one under a name that lies about its format.
        let images = ["baseline.jpg": "a.jpg", "rgb8.png": "b.png", "lossy.webp": "c.webp", "palette.gif": "d.gif",
                      "rgb24.bmp": "e.bmp", "rgb8_lzw.tif": "nested/f.tif", "rgb8_tiles.tif": "g.TIFF",
                      "lossless.webp": "nested/deeper/h.webp", "rgba.png": "really-a-png.jpg"]
        for (fixture, name) in images {
            try fm.copyItem(at: Self.fixtures.appendingPathComponent(fixture), to: folder.appendingPathComponent(name))
        }
        let jpeg = try Data(contentsOf: Self.fixtures.appendingPathComponent("baseline.jpg"))
        // Everything else a scraped folder holds, with (a fragment of) the reason each must be named with.
        let refused: [String: String] = [
            "notes.txt": "not an image (unknown signature)",
            "photo.heic": "unsupported format: HEIC",
            "fake.heic": "not an image (unknown signature)",
            "empty.jpg": "empty file",
            "doc.pdf": "unsupported format: PDF",
            "nested/truncated.jpg": "JPEG",
            "pipe": "FIFO",
            "dangling": "symbolic link to nothing",
            "link-to-folder": "symbolic link to a directory",
        ]
        try Data("shopping list\n".utf8).write(to: folder.appendingPathComponent("notes.txt"))
        try Data(Self.heic).write(to: folder.appendingPathComponent("photo.heic"))
        try Data("not really HEIC".utf8).write(to: folder.appendingPathComponent("fake.heic"))
        try Data().write(to: folder.appendingPathComponent("empty.jpg"))
        try Data("%PDF-1.4\n".utf8).write(to: folder.appendingPathComponent("doc.pdf"))
        try jpeg.prefix(jpeg.count / 2).write(to: folder.appendingPathComponent("nested/truncated.jpg"))
        XCTAssertEqual(mkfifo(folder.appendingPathComponent("pipe").path, 0o600), 0)
        try fm.createSymbolicLink(atPath: folder.appendingPathComponent("dangling").path, withDestinationPath: "/nonexistent/nothing")
        try fm.createSymbolicLink(atPath: folder.appendingPathComponent("link-to-folder").path, withDestinationPath: folder.appendingPathComponent("nested").path)
        // A symbolic link to an image is that image.
        try fm.createSymbolicLink(atPath: folder.appendingPathComponent("link-to-image.png").path,
                                  withDestinationPath: folder.appendingPathComponent("b.png").path)
        let classified = Set(images.values).union(["link-to-image.png"])

        let model = TrainedModelTests.job.directory.appendingPathComponent("model")
        XCTAssertTrue(TrainedModelTests.job.output.hasSuffix("exit 0"), TrainedModelTests.job.output)
        let csvPath = scratch.appendingPathComponent("predictions.csv")
        let result = try run(["predict", "--model", model.path, "--json", "--top-k", "2", "--csv", csvPath.path, folder.path])
        XCTAssertEqual(result.status, 0, result.stderr)

        func relative(_ path: String) -> String {
            XCTAssertTrue(path.hasPrefix(folder.path + "/"), path)
            return String(path.dropFirst(folder.path.count + 1))
        }
        // The CSV: one line per entry, a class for each image, a reason for everything else.
        let csv = try String(contentsOf: csvPath, encoding: .utf8)
        var lines = csv.split(separator: "\n")
        XCTAssertEqual(lines.removeFirst(), "file,class,probability,error")
        var csvErrors: [String: String] = [:]
        var csvClasses: [String: String] = [:]
        for line in lines {
            let record = fields(line)
            XCTAssertEqual(record.count, 4, String(line))
            let name = relative(record[0])
            XCTAssertNil(csvErrors[name] ?? csvClasses[name], "\(name) is listed twice\n\(csv)")
            if record[3].isEmpty {
                XCTAssertFalse(record[1].isEmpty, String(line))
                XCTAssertNotNil(Float(record[2]), String(line))
                csvClasses[name] = record[1]
            } else {
                XCTAssertTrue(record[1].isEmpty && record[2].isEmpty, String(line))
                csvErrors[name] = record[3]
            }
        }
        XCTAssertEqual(Set(csvClasses.keys), classified, "classified entries\n\(csv)\n\(result.stderr)")
        XCTAssertEqual(Set(csvErrors.keys), Set(refused.keys), "refused entries\n\(csv)")
        for (name, fragment) in refused {
            XCTAssertTrue(csvErrors[name]?.contains(fragment) ?? false, "\(name): \(csvErrors[name] ?? "missing"), expected \(fragment)")
        }

        // --json: the same entries, the same classes and reasons, one object each.
        var jsonErrors: [String: String] = [:]
        var jsonClasses: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
            let name = relative(try XCTUnwrap(object["file"] as? String))
            if let error = object["error"] as? String {
                jsonErrors[name] = error
            } else {
                let top = try XCTUnwrap(object["top"] as? [[String: Any]], String(line))
                XCTAssertEqual(top.count, 2, String(line))
                jsonClasses[name] = top.first?["class"] as? String
            }
        }
        XCTAssertEqual(jsonClasses, csvClasses)
        XCTAssertEqual(jsonErrors, csvErrors)
        XCTAssertEqual(result.stdout.split(separator: "\n").count, classified.count + refused.count, result.stdout)
    }

    /// Without --csv the CSV goes into the folder, and a second run does not list the first run's CSV.
    func testTheFolderCSVIsNotAnEntryOfTheNextRun() throws {
        let folder = scratch.appendingPathComponent("two")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("lossy.webp"), to: folder.appendingPathComponent("x.webp"))
        let model = TrainedModelTests.job.directory.appendingPathComponent("model")
        for _ in 0..<2 {
            let result = try run(["predict", "--model", model.path, folder.path])
            XCTAssertEqual(result.status, 0, result.stderr)
            let csv = try String(contentsOf: folder.appendingPathComponent("predictions.csv"), encoding: .utf8)
            let lines = csv.split(separator: "\n")
            guard lines.count == 2 else { return XCTFail("expected a header and x.webp:\n\(csv)") }
            XCTAssertTrue(lines[1].hasPrefix(folder.appendingPathComponent("x.webp").path + ","), csv)
            XCTAssertTrue(lines[1].hasSuffix(","), "x.webp has an error: \(csv)")
        }
    }
}
