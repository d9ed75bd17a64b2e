import DatasetIndex
import Foundation
import XCTest
@testable import ImageInput

/// Folders, shards and manifests full of everything a scraped corpus holds: each file the index scan sees must end
/// as features or as a dead letter with a reason (the scan's or the decoder's), never neither and never both.
final class HostileFolderTests: XCTestCase {
    /// Indexes `path` and runs every item through decode and preprocess, as extraction does.
    private func account(_ path: String) throws -> (decoded: Set<String>, dead: [String: String]) {
        let index = try scanIndex(path)
        let config = Preprocessing(resizeShorterSide: 16, crop: 16)
        let preprocessor = try ImagePreprocessor(config)
        let decoder = ImageDecoder()
        var out = [Float](repeating: 0, count: config.valuesPerImage)
        var decoded = Set<String>()
        var dead: [String: String] = [:]
        for letter in try (0..<index.deadLetterCount).map(index.deadLetter) {
            XCTAssertNil(dead.updateValue(letter.reason, forKey: letter.key), "\(letter.key) dead-lettered twice")
        }
        for item in try index.items(0..<index.count) {
            do {
                let bytes = try item.locator.bytes()
                try bytes.withUnsafeBytes { raw in
                    try out.withUnsafeMutableBufferPointer {
                        try preprocessor.decode(raw, name: item.key, with: decoder, into: $0.baseAddress!, slot: 0, layout: .nchw)
                    }
                }
                XCTAssertTrue(decoded.insert(item.key).inserted, "\(item.key) listed twice")
            } catch let error as ImageDecodeError {
                XCTAssertNil(dead.updateValue(error.reason, forKey: item.key), "\(item.key) dead-lettered twice")
            } catch {
                XCTAssertNil(dead.updateValue("\(error)", forKey: item.key), "\(item.key) dead-lettered twice")
            }
        }
        XCTAssertTrue(decoded.isDisjoint(with: dead.keys), "an entry is both features and a dead letter")
        for (key, reason) in dead { XCTAssertFalse(reason.isEmpty, "\(key) has no reason") }
        return (decoded, dead)
    }

    private static let goodFixtures = [
        "baseline.jpg", "progressive.jpg", "cmyk.jpg", "grey.jpg", "rgb8.png", "rgb16.png", "palette.png", "rgba.png",
        "interlaced.png", "lossless.webp", "lossy.webp", "alpha.webp", "animated.webp", "palette.gif", "animated.gif",
        "transparent.gif", "rgb24.bmp", "palette8.bmp", "mono1.bmp", "rgb16_strips.tif", "rgb8_tiles.tif",
        "rgb8_lzw.tif", "multipage.tif", "rgba.tif", "grey16.tif",
    ]

    private static let heic: [UInt8] = [0, 0, 0, 24] + Array("ftypheic".utf8) + [0, 0, 0, 0] + Array("mif1heic".utf8)

    func testEveryFileInAnImageFolderIsAccountedFor() throws {
        let dir = try TemporaryDirectory()
        var expectedDecoded = Set<String>()
        var expectedDead: [String: String] = [:]
        for (i, name) in Self.goodFixtures.enumerated() {
            // Extensions lie half of the time: formats are told by their bytes.
            let stored = i % 2 == 0 ? name : "mislabelled_\(i).jpg"
            let key = "good/\(stored)"
            try dir.write(key, try Fixtures.bytes(name))
            expectedDecoded.insert(key)
        }
        let jpeg = try Fixtures.bytes("baseline.jpg")
        let bad: [(String, [UInt8], String)] = [
            ("bad/empty.jpg", [], "empty file"),
            ("bad/photo.heic", Self.heic, "unsupported format: HEIC"),
            ("bad/heic_named.png", Self.heic, "unsupported format: HEIC"),
            ("bad/notes.txt", Array("not a picture\n".utf8), "not an image (unknown signature)"),
            ("bad/no_extension", Array("plain text".utf8), "not an image (unknown signature)"),
            ("bad/.DS_Store", [0, 0, 0, 1, 0x42, 0x75, 0x64, 0x31], "not an image (unknown signature)"),
            ("bad/deep/nested/truncated.jpg", Array(jpeg.prefix(jpeg.count / 2)), "truncated JPEG"),
            ("bad/truncated.webp", Array(try Fixtures.bytes("lossy.webp").prefix(300)), "WebP"),
            ("bad/truncated.tif", Array(try Fixtures.bytes("rgb8_lzw.tif").prefix(400)), "TIFF"),
            ("bad/broken.gif", Array("GIF89a".utf8) + [1, 0, 1, 0, 0, 0, 0], "GIF"),
            ("bad/broken.bmp", Array("BM".utf8) + [UInt8](repeating: 7, count: 40), "BMP"),
            ("bad/doc.pdf", Array("%PDF-1.4\n".utf8), "unsupported format: PDF"),
            ("loose_at_root.jpg", jpeg, "outside any class folder"),
        ]
        for (key, bytes, reason) in bad {
            try dir.write(key, bytes)
            expectedDead[key] = reason
        }
        let (decoded, dead) = try account(dir.path)
        XCTAssertEqual(decoded, expectedDecoded)
        XCTAssertEqual(Set(dead.keys), Set(expectedDead.keys))
        for (key, reason) in expectedDead {
            XCTAssertTrue(dead[key]?.contains(reason) ?? false, "\(key): expected '\(reason)', got '\(dead[key] ?? "nothing")'")
        }
    }

    func testEveryWebDatasetMemberIsAccountedFor() throws {
        let dir = try TemporaryDirectory()
        var tar = TarWriter()
        var expectedDecoded = Set<String>()
        for (i, name) in Self.goodFixtures.enumerated() {
            let ext = (name as NSString).pathExtension
            tar.add("s\(i).\(ext)", try Fixtures.bytes(name))
            tar.add("s\(i).cls", text: "\(i % 3)")
            expectedDecoded.insert("shard.tar:s\(i)")
        }
        tar.add("photo.heic", Self.heic)
        tar.add("photo.cls", text: "1")
        tar.add("labelonly.cls", text: "2")
        tar.add("README", text: "a member with no extension")
        try dir.write("shard.tar", tar.finished())
        let (decoded, dead) = try account(dir.path)
        XCTAssertEqual(decoded, expectedDecoded)
        XCTAssertTrue(dead["shard.tar:photo"]?.localizedCaseInsensitiveContains("heic") ?? false, dead["shard.tar:photo"] ?? "nothing")
        XCTAssertTrue(dead["shard.tar:labelonly"]?.contains("(it has .cls)") ?? false, dead["shard.tar:labelonly"] ?? "nothing")
        XCTAssertTrue(dead["shard.tar:README"]?.contains("has no extension") ?? false, dead["shard.tar:README"] ?? "nothing")
        XCTAssertEqual(dead.count, 3)
    }

    func testEveryManifestRowIsAccountedFor() throws {
        let dir = try TemporaryDirectory()
        var rows = ["path,label"]
        for name in Self.goodFixtures {
            try dir.write("img/\(name)", try Fixtures.bytes(name))
            rows.append("img/\(name),a")
        }
        try dir.write("img/photo.heic", Self.heic)
        rows += ["img/photo.heic,b", "img/missing.png,b", ",b"]
        try dir.write("list.csv", text: rows.joined(separator: "\n") + "\n")
        let (decoded, dead) = try account(dir.path + "/list.csv")
        XCTAssertEqual(decoded, Set(Self.goodFixtures.map { "img/\($0)" }))
        XCTAssertEqual(dead["img/photo.heic"], "unsupported format: HEIC")
        // The scan checks every listed path: a missing file is rejected at index time, keyed by its line.
        let missingLine = Self.goodFixtures.count + 3
        XCTAssertTrue(dead["list.csv:\(missingLine)"]?.contains("img/missing.png") ?? false, "\(dead)")
        XCTAssertNotNil(dead["list.csv:\(missingLine + 1)"], "the row without a path: \(dead)")
        XCTAssertEqual(dead.count, 3)
    }
}
