import DatasetIndex
import Extraction
import FeatStreamTestSupport
import Foundation
import NumpyFormat
import XCTest

/// The whole single-host path on real files: decode → preprocess → backbone → output folder.
final class ExtractionTests: XCTestCase {
    static let home = featureStreamHome(anchor: #filePath)
    static var lite0: String { home.appendingPathComponent("models/efficientnet-lite0").path }
    static var demo: URL { home.appendingPathComponent("data/fashion-mnist-demo") }

    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    /// ImageNet sanity through the full Swift path: the 20 foolbox JPEGs, whose names end in the
    /// class index, must get at least 16 right at top-1 from Lite0's logits.
    func testLite0ClassifiesImageNetSamplesThroughTheSwiftPipeline() throws {
        let samples = Self.home.appendingPathComponent("data/imagenet-samples")
        let files = try FileManager.default.contentsOfDirectory(atPath: samples.path).filter { $0.hasSuffix(".jpg") }.sorted()
        XCTAssertEqual(files.count, 20)
        let manifest = scratch.appendingPathComponent("imagenet.csv")
        try ("path,label\n" + files.map { "\(samples.path)/\($0),\($0.split(separator: "_").last!.dropLast(4))\n" }.joined())
            .write(to: manifest, atomically: true, encoding: .utf8)
        let dataset = try IndexScan.run(IndexSelection(path: manifest.path), indexPath: scratch.appendingPathComponent("dataset.index").path)
        let classes = try dataset.classNames()
        let config = try ModelConfig.load(Self.lite0)
        let extractor = try FeatureExtractor(config: config, batchSize: 8, threads: 2, includeLogits: true)
        var correct = 0, seen = 0
        try extractor.extract(try dataset.items(0..<dataset.count), decodeThreads: 2) { batch in
            XCTAssertEqual(batch.deadLetters, [])
            let width = extractor.logitsWidth!
            for (row, item) in batch.items.enumerated() {
                let scores = batch.logits![(row * width)..<((row + 1) * width)]
                let predicted = scores.indices.max { scores[$0] < scores[$1] }! - row * width
                // Manifest labels are integers, so class i is the string "i" in sorted order; map back.
                if String(predicted) == classes[Int(item.label)] { correct += 1 }
                seen += 1
            }
        }
        XCTAssertEqual(seen, 20)
        print("Lite0 top-1 on the foolbox ImageNet samples: \(correct)/20")
        XCTAssertGreaterThanOrEqual(correct, 16)
    }

    /// A corpus with every kind of bad file between good ones: each bad file is dead-lettered with
    /// its reason (the index scan's rejects first, then the decode failures), every good one comes out,
    /// in order, and the command succeeds; the index stays in the output folder and a rerun reuses it.
    func testBadInputIsDeadLetteredAndGoodImagesStillComeOut() throws {
        let root = scratch.appendingPathComponent("corpus")
        let good = try FileManager.default.contentsOfDirectory(atPath: Self.demo.appendingPathComponent("imagefolder/val/1-trouser").path).sorted().prefix(5)
        let classDir = root.appendingPathComponent("trouser")
        try FileManager.default.createDirectory(at: classDir, withIntermediateDirectories: true)
        for name in good {
            try FileManager.default.copyItem(at: Self.demo.appendingPathComponent("imagefolder/val/1-trouser/\(name)"),
                                             to: classDir.appendingPathComponent("good-\(name)"))
        }
        let jpeg = try Data(contentsOf: Self.home.appendingPathComponent("data/imagenet-samples/imagenet_00_243.jpg"))
        let png = try Data(contentsOf: classDir.appendingPathComponent("good-\(good.first!)"))
        var hugePNG = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var ihdr = Data("IHDR".utf8)
        ihdr.append(contentsOf: [0x00, 0x00, 0x4E, 0x20, 0x00, 0x00, 0x4E, 0x20, 8, 2, 0, 0, 0])  // 20000 x 20000 RGB
        hugePNG.append(contentsOf: [0, 0, 0, 13])
        hugePNG.append(ihdr)
        let crc = crc32(ihdr)
        hugePNG.append(contentsOf: [UInt8(crc >> 24), UInt8(crc >> 16 & 0xff), UInt8(crc >> 8 & 0xff), UInt8(crc & 0xff)])
        let bad: [(String, Data, String)] = [
            ("bad-empty.png", Data(), "empty"),
            ("bad-truncated.jpg", jpeg.prefix(jpeg.count / 3), "truncated"),
            ("bad-truncated.png", png.prefix(png.count / 2), ""),
            ("bad-random.jpg", Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }), ""),
            ("bad-text.png", Data("hello, I am not an image\n".utf8), ""),
            ("bad-huge.png", hugePNG, "pixel limit"),
            ("bad-gif.jpg", Data("GIF89a".utf8) + Data(repeating: 0, count: 64), "GIF"),
        ]
        for (name, bytes, _) in bad { try bytes.write(to: classDir.appendingPathComponent(name)) }
        try Data("outside any class".utf8).write(to: root.appendingPathComponent("loose.txt"))

        let out = scratch.appendingPathComponent("out")
        let result = try runFeatstream(["extract", "--model", Self.lite0, "--data", root.path, "--out", out.path,
                                        "--batch", "4", "--max-pixels", "50000000"])
        XCTAssertEqual(result.status, 0, result.output)

        let features = try NumpyArray(contentsOf: out.appendingPathComponent("features.npy"))
        XCTAssertEqual(features.shape, [good.count, 1280])
        let metadata = try String(contentsOf: out.appendingPathComponent("metadata.csv"), encoding: .utf8)
            .split(separator: "\n").dropFirst()
        XCTAssertEqual(metadata.map { String($0.split(separator: ",")[2]) }, good.map { "trouser/good-\($0)" })
        let letters = try String(contentsOf: out.appendingPathComponent("dead_letters.csv"), encoding: .utf8)
            .split(separator: "\n").dropFirst().map(String.init)
        XCTAssertEqual(letters.count, bad.count + 1, letters.joined(separator: "\n"))
        XCTAssertTrue(letters.first?.hasPrefix("loose.txt,") ?? false, "the index's reject comes first: \(letters)")
        XCTAssertTrue(letters.first?.contains("outside any class folder") ?? false, "\(letters)")
        for (name, _, reason) in bad {
            let line = letters.first { $0.hasPrefix("trouser/\(name),") || $0.hasPrefix("\"trouser/\(name)\"") }
            XCTAssertNotNil(line, "\(name) missing from dead_letters.csv")
            let text = line.map { String($0.dropFirst("trouser/\(name),".count)) } ?? ""
            XCTAssertFalse(text.isEmpty, "\(name) has no reason")
            if !reason.isEmpty { XCTAssertTrue(text.localizedCaseInsensitiveContains(reason), "\(name): \(text)") }
        }
        XCTAssertTrue(result.output.contains("\(bad.count + 1) dead letters"), result.output)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("dataset.index").path))

        let again = try runFeatstream(["extract", "--model", Self.lite0, "--data", root.path, "--out", out.path,
                                       "--batch", "4", "--max-pixels", "50000000"])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("reusing the dataset index"), again.output)
        XCTAssertEqual(try NumpyArray(contentsOf: out.appendingPathComponent("features.npy")), features)
    }

    /// Output order and values do not depend on decoder threading or dataset format: the demo val
    /// split as an ImageFolder with 1 or 3 decoder threads, and as a WebDataset shard, gives the same
    /// feature for every image.
    func testOutputIsDeterministicAcrossThreadsAndFormats() throws {
        func extract(_ data: String, threads: Int, extra: [String]) throws -> [String: ArraySlice<Float>] {
            let out = scratch.appendingPathComponent("\(threads)-\(UUID().uuidString)")
            let result = try runFeatstream(["extract", "--model", Self.lite0, "--data", Self.demo.appendingPathComponent(data).path,
                                            "--out", out.path, "--decode-threads", String(threads), "--batch", "7"] + extra)
            XCTAssertEqual(result.status, 0, result.output)
            let features = try NumpyArray(contentsOf: out.appendingPathComponent("features.npy"))
            let keys = try String(contentsOf: out.appendingPathComponent("metadata.csv"), encoding: .utf8)
                .split(separator: "\n").dropFirst().map { String($0.split(separator: ",")[2]) }
            XCTAssertEqual(features.shape, [200, 1280])
            XCTAssertEqual(keys.count, 200)
            // Both layouts name the image by its official index: .../00019.png and ...:val-00019.
            var byIndex: [String: ArraySlice<Float>] = [:]
            for (row, key) in keys.enumerated() {
                let digits = String(key.reversed().drop { !$0.isNumber }.prefix { $0.isNumber }.reversed())
                byIndex[digits] = features.values[(row * 1280)..<((row + 1) * 1280)]
            }
            return byIndex
        }
        let oneThread = try extract("imagefolder", threads: 1, extra: ["--split", "val"])
        let threeThreads = try extract("imagefolder", threads: 3, extra: ["--split", "val"])
        let shard = try extract("webdataset/val-000000.tar", threads: 2, extra: [])
        XCTAssertEqual(oneThread.count, 200)
        XCTAssertEqual(oneThread, threeThreads, "decoder threads changed the output")
        XCTAssertEqual(Set(oneThread.keys), Set(shard.keys))
        for (index, features) in oneThread {
            XCTAssertEqual(Array(features), Array(shard[index] ?? []), "image \(index) differs between ImageFolder and WebDataset")
        }
    }

    /// A worker calls `extract` once per shard on one extractor, which keeps its batch buffers
    /// between calls. Calls after one whose sink threw while decoders were still busy, and calls
    /// shard by shard, give bit for bit the features of one long call.
    func testShardByShardCallsAfterAnAbortedCallMatchOneLongCall() throws {
        struct Abort: Error {}
        let dataset = try IndexScan.run(IndexSelection(path: Self.demo.appendingPathComponent("imagefolder").path, split: "val", limit: 24),
                                        indexPath: scratch.appendingPathComponent("dataset.index").path)
        let items = try dataset.items(0..<dataset.count)
        func features(_ items: [IndexedItem], on extractor: FeatureExtractor, decodeThreads: Int) throws -> [String: [Float]] {
            var byKey: [String: [Float]] = [:]
            try extractor.extract(items, decodeThreads: decodeThreads) { batch in
                XCTAssertEqual(batch.deadLetters, [])
                for (row, item) in batch.items.enumerated() {
                    byKey[item.key] = Array(batch.features[(row * extractor.featureWidth)..<((row + 1) * extractor.featureWidth)])
                }
            }
            return byKey
        }
        let config = try ModelConfig.load(Self.lite0)
        let expected = try features(items, on: try FeatureExtractor(config: config, batchSize: 4, threads: 1), decodeThreads: 1)
        XCTAssertEqual(expected.count, 24)

        let extractor = try FeatureExtractor(config: config, batchSize: 4, threads: 1)
        var sunk = 0
        XCTAssertThrowsError(try extractor.extract(items, decodeThreads: 3) { _ in
            sunk += 1
            throw Abort()
        }) { XCTAssertTrue($0 is Abort) }
        XCTAssertEqual(sunk, 1)
        var shardByShard: [String: [Float]] = [:]
        for start in stride(from: 0, to: items.count, by: 7) {
            let shard = Array(items[start..<min(items.count, start + 7)])
            try shardByShard.merge(features(shard, on: extractor, decodeThreads: 3)) { a, _ in a }
        }
        XCTAssertEqual(shardByShard, expected)
    }

    /// `--dtype f16` halves the file and stays within half precision of the f32 features.
    func testHalfPrecisionFeatures() throws {
        var arrays: [NumpyArray] = []
        for dtype in ["f32", "f16"] {
            let out = scratch.appendingPathComponent(dtype)
            let result = try runFeatstream(["extract", "--model", Self.lite0, "--data",
                                            Self.demo.appendingPathComponent("imagefolder").path, "--split", "val",
                                            "--limit", "8", "--out", out.path, "--dtype", dtype])
            XCTAssertEqual(result.status, 0, result.output)
            let data = try Data(contentsOf: out.appendingPathComponent("features.npy"))
            XCTAssertTrue(String(decoding: data.prefix(128), as: UTF8.self).contains(dtype == "f32" ? "<f4" : "<f2"))
            arrays.append(try decodeNpy(data))
        }
        XCTAssertEqual(arrays[0].shape, arrays[1].shape)
        let maxValue = arrays[0].values.map(abs).max()!
        for (a, b) in zip(arrays[0].values, arrays[1].values) {
            XCTAssertEqual(a, b, accuracy: max(abs(a) * 1e-3, maxValue * 1e-4))
        }
    }

    func testUnknownSplitAndMissingModelAreClearErrors() throws {
        let noSplit = try runFeatstream(["extract", "--model", Self.lite0, "--data", Self.demo.appendingPathComponent("imagefolder").path,
                                         "--split", "test", "--out", scratch.appendingPathComponent("x").path])
        XCTAssertNotEqual(noSplit.status, 0)
        XCTAssertTrue(noSplit.output.contains("split 'test' selects nothing"), noSplit.output)
        let noModel = try runFeatstream(["extract", "--model", "/nonexistent/model", "--data", scratch.path,
                                         "--out", scratch.appendingPathComponent("y").path])
        XCTAssertNotEqual(noModel.status, 0)
        XCTAssertTrue(noModel.output.contains("/nonexistent/model"), noModel.output)
    }
}

/// `.npy` with f4 or f2 data (NumpyArray reads f4; f2 is widened here).
func decodeNpy(_ data: Data) throws -> NumpyArray {
    let header = String(decoding: data.prefix(128), as: UTF8.self)
    guard header.contains("<f2") else { return try NumpyArray(npy: data) }
    let headerEnd = 10 + Int(data[8]) + Int(data[9]) << 8
    let halves: [Float16] = data[headerEnd...].withUnsafeBytes { Array($0.bindMemory(to: Float16.self)) }
    let shapeText = header[header.range(of: "(")!.upperBound..<header.range(of: ")")!.lowerBound]
    let shape = shapeText.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    return NumpyArray(shape: shape, values: halves.map(Float.init))
}

func crc32(_ data: Data) -> UInt32 {
    var crc: UInt32 = 0xffff_ffff
    for byte in data {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xedb8_8320 : crc >> 1 }
    }
    return ~crc
}
