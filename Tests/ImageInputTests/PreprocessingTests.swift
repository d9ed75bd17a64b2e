import Foundation
import XCTest
@testable import ImageInput

final class PreprocessingTests: XCTestCase {
    func testConfigDecodesFromModelJSON() throws {
        let json = """
        {"resizeShorterSide": 256, "crop": 224, "filter": "bilinear", "colorOrder": "RGB",
         "mean": [127.0,127.0,127.0], "std": [128.0,128.0,128.0]}
        """
        let config = try JSONDecoder().decode(Preprocessing.self, from: Data(json.utf8))
        XCTAssertEqual(config.resizeShorterSide, 256)
        XCTAssertEqual(config.crop, 224)
        XCTAssertEqual(config.filter, .bilinear)
        XCTAssertEqual(config.colorOrder, .rgb)
        XCTAssertEqual(config.mean, [127, 127, 127])
        XCTAssertEqual(config.std, [128, 128, 128])
        let withoutFilter = try JSONDecoder().decode(Preprocessing.self, from: Data("""
        {"resizeShorterSide": 8, "crop": 8, "colorOrder": "BGR", "mean": [0,0,0], "std": [1,1,1]}
        """.utf8))
        XCTAssertEqual(withoutFilter.filter, .bilinear)
        XCTAssertEqual(withoutFilter.colorOrder, .bgr)
        XCTAssertEqual(withoutFilter.resize, Preprocessing.defaultResize)
        XCTAssertFalse(withoutFilter.exifOrientation)
        let chosen = try JSONDecoder().decode(Preprocessing.self, from: Data("""
        {"resizeShorterSide": 8, "crop": 8, "colorOrder": "RGB", "mean": [0,0,0], "std": [1,1,1],
         "resize": "fast", "exifOrientation": true}
        """.utf8))
        XCTAssertEqual(chosen.resize, .fast)
        XCTAssertTrue(chosen.exifOrientation)
        XCTAssertThrowsError(try JSONDecoder().decode(Preprocessing.self, from: Data("""
        {"resizeShorterSide": 8, "crop": 8, "colorOrder": "RGB", "mean": [0,0,0], "std": [1,1,1], "resize": "quick"}
        """.utf8)))
        XCTAssertEqual(try JSONDecoder().decode(TensorLayout.self, from: Data("\"NHWC\"".utf8)), .nhwc)
    }

    func testInvalidConfigsAreRejected() {
        XCTAssertThrowsError(try ImagePreprocessor(Preprocessing(resizeShorterSide: 100, crop: 200)))
        XCTAssertThrowsError(try ImagePreprocessor(Preprocessing(mean: [0, 0], std: [1, 1, 1])))
        XCTAssertThrowsError(try ImagePreprocessor(Preprocessing(std: [1, 0, 1])))
    }

    // torchvision: long side = int(size * long / short); CenterCrop offset uses Python's round-half-to-even.
    func testGeometryFollowsTorchvision() throws {
        let p = try ImagePreprocessor(Preprocessing(resizeShorterSide: 64, crop: 56))
        XCTAssertTrue(p.resizedSize(width: 320, height: 240) == (85, 64))
        XCTAssertTrue(p.resizedSize(width: 240, height: 320) == (64, 85))
        XCTAssertTrue(p.cropOrigin(resizedWidth: 85, resizedHeight: 64) == (14, 4))   // round(14.5) == 14
        XCTAssertTrue(p.cropOrigin(resizedWidth: 87, resizedHeight: 64) == (16, 4))   // round(15.5) == 16
    }

    /// Runs the fixture through `config` with identity normalisation and returns the crop as 0…255 floats, HWC.
    private func resizedFixture(_ config: Preprocessing, layout: TensorLayout = .nhwc) throws -> [Float] {
        let source = try ImageDecoder().decode(try Fixtures.bytes("golden_source.png"), name: "golden_source.png")
        let preprocessor = try ImagePreprocessor(config)
        var out = [Float](repeating: .nan, count: 2 * config.valuesPerImage)
        out.withUnsafeMutableBufferPointer { preprocessor.write(source, into: $0.baseAddress!, slot: 1, layout: layout) }
        XCTAssertTrue(out[0..<config.valuesPerImage].allSatisfy(\.isNaN), "slot 0 must be left untouched")
        return Array(out[config.valuesPerImage...])
    }

    // Tolerance: Pillow rounds to 8 bits after each separable pass (and uses 22-bit fixed-point weights);
    // we keep floats throughout, so differences of 1 are expected. 2 pixel units (= 2/255 of range) is the bound.
    private func assertMatchesGolden(_ golden: String, size: Int, crop: Int, filter: ResizeFilter) throws {
        let config = Preprocessing(resizeShorterSide: size, crop: crop, filter: filter, mean: [0, 0, 0], std: [1, 1, 1])
        let ours = try resizedFixture(config)
        let expected = try ImageDecoder().decode(try Fixtures.bytes(golden), name: golden)
        XCTAssertEqual([expected.width, expected.height], [crop, crop])
        let diffs = zip(ours, expected.pixels).map { abs($0 - Float($1)) }
        let worst = diffs.max() ?? .infinity
        XCTAssertLessThanOrEqual(worst, 2, "\(golden): max abs diff \(worst)")
        let mean = diffs.reduce(0, +) / Float(diffs.count)
        XCTAssertLessThan(mean, 0.6, "\(golden): mean abs diff \(mean)")
    }

    func testBilinearUpscaleMatchesPillowGolden() throws {
        try assertMatchesGolden("golden_bilinear_256_224.png", size: 256, crop: 224, filter: .bilinear)
    }

    func testBilinearDownscaleMatchesPillowGolden() throws {
        try assertMatchesGolden("golden_bilinear_64_56.png", size: 64, crop: 56, filter: .bilinear)
    }

    func testBicubicMatchesPillowGolden() throws {
        try assertMatchesGolden("golden_bicubic_100_96.png", size: 100, crop: 96, filter: .bicubic)
    }

    func testLayoutColourOrderAndNormalisation() throws {
        let plain = Preprocessing(resizeShorterSide: 64, crop: 56, mean: [0, 0, 0], std: [1, 1, 1])
        let hwc = try resizedFixture(plain)
        let chw = try resizedFixture(plain, layout: .nchw)
        let side = 56
        for (y, x) in [(0, 0), (10, 33), (55, 55)] {
            for c in 0..<3 {
                XCTAssertEqual(hwc[(y * side + x) * 3 + c], chw[c * side * side + y * side + x])
            }
        }
        let normalised = Preprocessing(resizeShorterSide: 64, crop: 56, colorOrder: .bgr,
                                       mean: [10, 20, 30], std: [2, 4, 8])
        let bgr = try resizedFixture(normalised)
        for i in stride(from: 0, to: hwc.count, by: 97 * 3) {
            // Output channel 0 is blue, normalised with mean[0]/std[0].
            XCTAssertEqual(bgr[i], (hwc[i + 2] - 10) / 2, accuracy: 1e-4)
            XCTAssertEqual(bgr[i + 1], (hwc[i + 1] - 20) / 4, accuracy: 1e-4)
            XCTAssertEqual(bgr[i + 2], (hwc[i] - 30) / 8, accuracy: 1e-4)
        }
    }

    func testFilterTablesAreCachedPerGeometry() throws {
        let preprocessor = try ImagePreprocessor(Preprocessing(resizeShorterSide: 32, crop: 28))
        let image = try ImageDecoder().decode(try Fixtures.bytes("rgb8.png"), name: "rgb8.png")
        var out = [Float](repeating: 0, count: 2 * 3 * 28 * 28)
        out.withUnsafeMutableBufferPointer {
            preprocessor.write(image, into: $0.baseAddress!, slot: 0, layout: .nchw)
            preprocessor.write(image, into: $0.baseAddress!, slot: 1, layout: .nchw)
        }
        XCTAssertEqual(preprocessor.cachedFilterTables, 2)   // one per axis, reused by the second image
        XCTAssertEqual(Array(out[0..<(3 * 28 * 28)]), Array(out[(3 * 28 * 28)...]))
    }

    func testFastDecodeIntoBatchUsesDCTScaling() throws {
        let preprocessor = try ImagePreprocessor(Preprocessing(resizeShorterSide: 96, crop: 96, mean: [0, 0, 0], std: [1, 1, 1],
                                                               resize: .fast))
        var out = [Float](repeating: 0, count: 3 * 96 * 96)
        try Fixtures.bytes("large_1024x768.jpg").withUnsafeBytes { bytes in
            try out.withUnsafeMutableBufferPointer {
                try preprocessor.decode(bytes, name: "large", with: ImageDecoder(), into: $0.baseAddress!, slot: 0, layout: .nchw)
            }
        }
        // The source is a grey top-to-bottom gradient: the crop's top row is darker than its bottom row.
        XCTAssertLessThan(out[2 * 96 + 48] + 20, out[93 * 96 + 48])
        XCTAssertTrue(out.allSatisfy { $0 >= 0 && $0 <= 255 })
    }
}
