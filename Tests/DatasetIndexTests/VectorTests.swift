import DatasetIndex
import FeatStreamTestSupport
import Foundation
import XCTest

/// The index format against the byte-exact vectors of Protocols/vectors/index (written by an independent
/// Python encoder): the writer reproduces every valid file byte for byte, the reader reads back the values,
/// and every invalid file is refused with the documented fault.
final class VectorTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Protocols/vectors/index").standardized

    func cases() throws -> [[String: Any]] {
        let data = try Data(contentsOf: Self.directory.appendingPathComponent("cases.json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [[String: Any]])
    }

    func vectorBytes(_ file: String) throws -> [UInt8] {
        try parseHex(String(contentsOf: Self.directory.appendingPathComponent(file), encoding: .utf8))
    }

    func testVectorsAreCurrent() throws {
        let result = try runProcess(URL(fileURLWithPath: "/usr/bin/python3"), [Self.directory.appendingPathComponent("generate.py").path, "--check"])
        XCTAssertEqual(result.status, 0, result.output)
    }

    func testWriterReproducesEveryValidVector() throws {
        let temporary = try TemporaryDirectory()
        var checked = 0
        for vector in try cases() where vector["valid"] as? Bool == true {
            let name = vector["name"] as! String
            let writer = try IndexWriter(buildingDirectory: temporary.path + "/\(name).building",
                                         kind: DatasetKind(name: vector["kind"] as! String)!,
                                         root: vector["root"] as! String, selection: vector["selection"] as! String)
            for call in vector["calls"] as! [[String: Any]] {
                switch call["op"] as! String {
                case "source": _ = try writer.addSource(call["path"] as! String)
                case "item":
                    try writer.appendItem(key: call["key"] as! String, label: Int32(call["label"] as! Int),
                                          source: UInt32(call["source"] as? Int ?? 0xFFFF_FFFF),
                                          memberOffset: UInt64(call["offset"] as? Int ?? 0), memberSize: UInt32(call["size"] as? Int ?? 0))
                case "dead": try writer.addDeadLetter(key: call["key"] as! String, reason: call["reason"] as! String)
                case "fingerprint":
                    let kinds: [String: FingerprintEntry.Kind] = ["directory": .directory, "manifest": .manifest, "tar": .tar, "sampledFile": .sampledFile]
                    try writer.addFingerprint(FingerprintEntry(path: call["path"] as! String, kind: kinds[call["kind"] as! String]!,
                                                               size: UInt64(call["size"] as! Int), mtimeNs: Int64(call["mtimeNs"] as! Int),
                                                               sampleHash: UInt64(call["sampleHash"] as! String, radix: 16)!))
                default: XCTFail("unknown op in \(name)")
                }
            }
            let finish = vector["finish"] as! [String: Any]
            let labelKinds: [String: LabelKind] = ["none": .none, "integers": .integers, "names": .names, "folders": .folders]
            let out = temporary.path + "/\(name).fsix"
            try writer.finish(labelKind: labelKinds[finish["labelKind"] as! String]!, classNames: finish["classNames"] as! [String],
                              classCount: finish["classCount"] as! Int, skipped: finish["skipped"] as! Int, to: out)
            let written = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
            let expected = try vectorBytes(vector["file"] as! String)
            XCTAssertEqual(written.count, expected.count, name)
            if let first = zip(written, expected).enumerated().first(where: { $0.element.0 != $0.element.1 }) {
                XCTFail("\(name): first differing byte at offset \(first.offset)")
            }
            checked += 1
        }
        XCTAssertEqual(checked, 3)
    }

    func testReaderDecodesEveryValidVector() throws {
        let temporary = try TemporaryDirectory()
        var checked = 0
        for vector in try cases() where vector["valid"] as? Bool == true {
            let name = vector["name"] as! String
            let path = temporary.path + "/\(name).fsix"
            try Data(try vectorBytes(vector["file"] as! String)).write(to: URL(fileURLWithPath: path))
            let index = try IndexedDataset(path: path)
            try index.verify()
            XCTAssertEqual(index.kind, DatasetKind(name: vector["kind"] as! String))
            XCTAssertEqual(index.root, vector["root"] as? String)
            XCTAssertEqual(index.selection, vector["selection"] as? String)
            let expect = vector["expect"] as! [String: Any]
            XCTAssertEqual(try index.classNames(), expect["classes"] as? [String], name)
            XCTAssertEqual(index.skippedCount, (vector["finish"] as! [String: Any])["skipped"] as? Int)
            let items = expect["items"] as! [[String: Any]]
            XCTAssertEqual(index.count, items.count, name)
            for (i, item) in items.enumerated() {
                let got = try index.item(i)
                XCTAssertEqual(got.position, UInt64(i))
                XCTAssertEqual(got.key, item["key"] as? String, name)
                XCTAssertEqual(got.label, Int32(item["label"] as! Int), name)
                if let file = item["file"] as? String {
                    XCTAssertEqual(got.locator, .file(path: file), name)
                } else {
                    XCTAssertEqual(got.locator, .tarMember(path: item["tar"] as! String, offset: UInt64(item["offset"] as! Int),
                                                           size: UInt32(item["size"] as! Int)), name)
                }
            }
            XCTAssertEqual(try index.items(0..<index.count).map(\.key), items.map { $0["key"] as! String })
            let letters = expect["deadLetters"] as! [[String: Any]]
            XCTAssertEqual(try index.deadLetters(), letters.map {
                IndexDeadLetter(key: $0["key"] as! String, reason: $0["reason"] as! String, position: UInt64($0["position"] as! Int))
            }, name)
            XCTAssertThrowsError(try index.item(index.count))
            checked += 1
        }
        XCTAssertEqual(checked, 3)
    }

    func testReaderRefusesEveryInvalidVector() throws {
        let temporary = try TemporaryDirectory()
        var checked = 0
        for vector in try cases() where vector["valid"] as? Bool == false {
            let path = temporary.path + "/\(vector["name"] as! String).fsix"
            try Data(try vectorBytes(vector["file"] as! String)).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try IndexedDataset(path: path), vector["name"] as! String) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(vector["error"] as! String), "\(vector["name"]!): \(text)")
                XCTAssertTrue(text.contains(path), "the error names the file: \(text)")
            }
            checked += 1
        }
        XCTAssertEqual(checked, 4)
    }
}
