import Foundation
import XCTest
@testable import ImageInput

/// Every decoded format against Pillow's pixels (written by Fixtures/make_fixtures.py), and the paths around them:
/// streaming rows, fast versus exact resizing, EXIF orientation.
final class FormatTests: XCTestCase {
    private func assertMatchesPillow(_ name: String, tolerance: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let size = try XCTUnwrap(try Fixtures.expectedSizes()[name], "no expectation for \(name)", file: file, line: line)
        let image = try ImageDecoder().decode(try Fixtures.bytes(name), name: name)
        XCTAssertEqual([image.width, image.height], size, name, file: file, line: line)
        let expected = try Fixtures.bytes(name + ".rgb")
        XCTAssertEqual(image.pixels.count, expected.count, name, file: file, line: line)
        let diff = maxAbsDifference(image.pixels, expected)
        XCTAssertLessThanOrEqual(diff, tolerance, "\(name) differs from Pillow by up to \(diff)", file: file, line: line)
    }

    // Lossless formats: within one level (libtiff rounds 16-bit samples where Pillow keeps the high byte, and
    // composites premultiplied alpha; the rest is exact).
    func testLosslessFormatsMatchPillowWithinOneLevel() throws {
        for name in ["lossless.webp", "alpha.webp", "animated.webp",
                     "palette.gif", "transparent.gif", "animated.gif",
                     "rgb24.bmp", "palette8.bmp", "mono1.bmp",
                     "rgb16_strips.tif", "rgb8_tiles.tif", "rgb16_tiles.tif", "rgb8_lzw.tif", "multipage.tif",
                     "palette.tif", "rgba.tif", "grey16.tif"] {
            try assertMatchesPillow(name, tolerance: 1)
        }
    }

    // Lossy WebP goes through the same libwebp in Pillow; 2 levels covers a libwebp version difference.
    func testLossyWebPMatchesPillow() throws {
        try assertMatchesPillow("lossy.webp", tolerance: 2)
    }

    // A GIF's transparent index is white (alpha over white), not the palette colour behind it.
    func testTransparentGIFIndexComesOutWhite() throws {
        let opaque = try ImageDecoder().decode(try Fixtures.bytes("palette.gif"), name: "palette.gif")
        let transparent = try ImageDecoder().decode(try Fixtures.bytes("transparent.gif"), name: "transparent.gif")
        XCTAssertNotEqual(opaque.pixels, transparent.pixels)
        let whites = { (image: RGBImage) in stride(from: 0, to: image.pixels.count, by: 3).filter { image.pixels[$0..<($0 + 3)].allSatisfy { $0 == 255 } }.count }
        XCTAssertGreaterThan(whites(transparent), whites(opaque))
    }

    // Multi-frame files give their first frame: each fixture's first frame is the picture of a single-frame
    // fixture, the later frames a mirrored, different one.
    func testAnimationsAndMultiPageFilesGiveTheFirstFrame() throws {
        let decoder = ImageDecoder()
        for (multi, single) in [("animated.gif", "palette.gif"), ("animated.webp", "lossless.webp"), ("multipage.tif", "rgb8.png")] {
            let first = try decoder.decode(try Fixtures.bytes(multi), name: multi)
            let expected = try decoder.decode(try Fixtures.bytes(single), name: single)
            XCTAssertEqual(first, expected, "\(multi) should give the picture of \(single)")
        }
    }

    // Streaming rows into the resampler is the same arithmetic as resizing the whole decoded picture.
    func testStreamedResampleEqualsWholeImageResample() throws {
        let config = Preprocessing(resizeShorterSide: 20, crop: 18, mean: [0, 0, 0], std: [1, 1, 1], resize: .exact)
        let preprocessor = try ImagePreprocessor(config)
        for name in ["rgb8.png", "interlaced.png", "rgba.png", "rgb16_strips.tif", "rgb8_tiles.tif", "lossy.webp", "baseline.jpg"] {
            let bytes = try Fixtures.bytes(name)
            let whole = try ImageDecoder().decode(bytes, name: name)
            var viaWhole = [Float](repeating: 0, count: config.valuesPerImage)
            var viaRows = [Float](repeating: 1, count: config.valuesPerImage)
            viaWhole.withUnsafeMutableBufferPointer { preprocessor.write(whole, into: $0.baseAddress!, slot: 0, layout: .nchw) }
            try bytes.withUnsafeBytes { raw in
                try viaRows.withUnsafeMutableBufferPointer {
                    try preprocessor.decode(raw, name: name, with: ImageDecoder(), into: $0.baseAddress!, slot: 0, layout: .nchw)
                }
            }
            XCTAssertEqual(viaRows, viaWhole, name)
        }
    }

    // Exact decodes JPEGs at full size; fast scales them in the DCT domain, so the inputs differ a little.
    func testFastAndExactDifferOnlyWhereScalingApplies() throws {
        func run(_ name: String, _ mode: ResizeMode) throws -> [Float] {
            let config = Preprocessing(resizeShorterSide: 96, crop: 96, mean: [0, 0, 0], std: [1, 1, 1], resize: mode)
            let preprocessor = try ImagePreprocessor(config)
            var out = [Float](repeating: 0, count: config.valuesPerImage)
            try Fixtures.bytes(name).withUnsafeBytes { raw in
                try out.withUnsafeMutableBufferPointer {
                    try preprocessor.decode(raw, name: name, with: ImageDecoder(), into: $0.baseAddress!, slot: 0, layout: .nchw)
                }
            }
            return out
        }
        let fast = try run("large_1024x768.jpg", .fast), exact = try run("large_1024x768.jpg", .exact)
        XCTAssertNotEqual(fast, exact)
        let worst = zip(fast, exact).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worst, 16, "same picture either way")
        // Exact is the full decode followed by the resize alone.
        let full = try ImageDecoder().decode(try Fixtures.bytes("large_1024x768.jpg"), name: "large")
        var reference = [Float](repeating: 0, count: exact.count)
        let preprocessor = try ImagePreprocessor(Preprocessing(resizeShorterSide: 96, crop: 96, mean: [0, 0, 0], std: [1, 1, 1]))
        reference.withUnsafeMutableBufferPointer { preprocessor.write(full, into: $0.baseAddress!, slot: 0, layout: .nchw) }
        XCTAssertEqual(exact, reference)
        // A PNG has no scaled decode: both modes give the same numbers.
        XCTAssertEqual(try run("rgb8.png", .fast), try run("rgb8.png", .exact))
    }

    func testWebPScaledDecodeSizes() {
        XCTAssertTrue(WholeFrameCodecs.webpScaledSize(width: 4000, height: 3000, shorterSideAtLeast: 256) == (500, 375))
        XCTAssertTrue(WholeFrameCodecs.webpScaledSize(width: 1000, height: 600, shorterSideAtLeast: 256) == (500, 300))
        XCTAssertTrue(WholeFrameCodecs.webpScaledSize(width: 500, height: 300, shorterSideAtLeast: 256) == (500, 300))
        XCTAssertTrue(WholeFrameCodecs.webpScaledSize(width: 4000, height: 3000, shorterSideAtLeast: nil) == (4000, 3000))
    }

    // Orientation 6 means "rotate 90° clockwise to view"; Pillow's exif_transpose made the expected pixels.
    func testEXIFOrientationIsReadAndAppliedOnlyWhenAsked() throws {
        let bytes = try Fixtures.bytes("orientation6.jpg")
        XCTAssertEqual(bytes.withUnsafeBytes { ExifOrientation.read($0) }, 6)
        XCTAssertEqual(try Fixtures.bytes("baseline.jpg").withUnsafeBytes { ExifOrientation.read($0) }, 1)
        let stored = try ImageDecoder().decode(bytes, name: "orientation6.jpg")
        XCTAssertEqual([stored.width, stored.height], [40, 30])
        let upright = stored.oriented(6)
        XCTAssertEqual([upright.width, upright.height], try XCTUnwrap(try Fixtures.expectedSizes()["orientation6.jpg"]))
        XCTAssertLessThanOrEqual(maxAbsDifference(upright.pixels, try Fixtures.bytes("orientation6.jpg.rgb")), 2)

        func features(exif: Bool) throws -> [Float] {
            let config = Preprocessing(resizeShorterSide: 30, crop: 30, mean: [0, 0, 0], std: [1, 1, 1], exifOrientation: exif)
            let preprocessor = try ImagePreprocessor(config)
            var out = [Float](repeating: 0, count: config.valuesPerImage)
            try bytes.withUnsafeBytes { raw in
                try out.withUnsafeMutableBufferPointer {
                    try preprocessor.decode(raw, name: "o", with: ImageDecoder(), into: $0.baseAddress!, slot: 0, layout: .nhwc)
                }
            }
            return out
        }
        let ignored = try features(exif: false), honoured = try features(exif: true)
        XCTAssertNotEqual(ignored, honoured)
        // Upright, the picture's horizontal red gradient runs top to bottom: compare the first column's ends.
        XCTAssertLessThan(honoured[0], honoured[29 * 30 * 3])
    }

    // Every orientation value matches the transposition Pillow applies for it, checked on a 3x2 picture.
    func testAllEightOrientations() {
        let image = RGBImage(width: 3, height: 2, pixels: (0..<6).flatMap { [UInt8($0), 0, 0] })
        func red(_ image: RGBImage) -> [UInt8] { stride(from: 0, to: image.pixels.count, by: 3).map { image.pixels[$0] } }
        // Stored:  0 1 2 / 3 4 5
        XCTAssertEqual(red(image.oriented(1)), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(red(image.oriented(2)), [2, 1, 0, 5, 4, 3])
        XCTAssertEqual(red(image.oriented(3)), [5, 4, 3, 2, 1, 0])
        XCTAssertEqual(red(image.oriented(4)), [3, 4, 5, 0, 1, 2])
        XCTAssertEqual(red(image.oriented(5)), [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(red(image.oriented(6)), [3, 0, 4, 1, 5, 2])
        XCTAssertEqual(red(image.oriented(7)), [5, 2, 4, 1, 3, 0])
        XCTAssertEqual(red(image.oriented(8)), [2, 5, 1, 4, 0, 3])
        XCTAssertEqual([image.oriented(6).width, image.oriented(6).height], [2, 3])
    }
}
