import Foundation
import XCTest
@testable import ImageInput

final class DecodeTests: XCTestCase {
    private func assertMatchesPillow(_ name: String, tolerance: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let sizes = try Fixtures.expectedSizes()
        let size = try XCTUnwrap(sizes[name], "no expectation for \(name)", file: file, line: line)
        let image = try ImageDecoder().decode(try Fixtures.bytes(name), name: name)
        XCTAssertEqual(image.width, size[0], name, file: file, line: line)
        XCTAssertEqual(image.height, size[1], name, file: file, line: line)
        let expected = try Fixtures.bytes(name + ".rgb")
        XCTAssertEqual(image.pixels.count, expected.count, name, file: file, line: line)
        let diff = maxAbsDifference(image.pixels, expected)
        XCTAssertLessThanOrEqual(diff, tolerance, "\(name) differs from Pillow by up to \(diff)", file: file, line: line)
    }

    // PNG decoding is lossless, so plain variants must match Pillow exactly.
    func testPlainPNGVariantsMatchPillowExactly() throws {
        for name in ["rgb8.png", "rgb16.png", "grey16.png", "palette.png", "grey.png", "interlaced.png"] {
            try assertMatchesPillow(name, tolerance: 0)
        }
    }

    // Alpha is composited over white with Pillow's rounded blend; allow one level for rounding-order differences.
    func testAlphaPNGsAreCompositedOverWhite() throws {
        try assertMatchesPillow("rgba.png", tolerance: 1)
        try assertMatchesPillow("grey_alpha.png", tolerance: 1)
        let image = try ImageDecoder().decode(try Fixtures.bytes("rgba.png"), name: "rgba.png")
        // The rotated gradient leaves fully transparent pixels: they must come out pure white, not black.
        let whites = stride(from: 0, to: image.pixels.count, by: 3).filter {
            image.pixels[$0] == 255 && image.pixels[$0 + 1] == 255 && image.pixels[$0 + 2] == 255
        }
        XCTAssertFalse(whites.isEmpty)
    }

    // Same IDCT and upsampling in both libjpeg-turbo builds; tolerance 2 covers version drift in CMYK/colour conversion.
    func testJPEGVariantsMatchPillow() throws {
        for name in ["baseline.jpg", "progressive.jpg", "grey.jpg", "cmyk.jpg"] {
            try assertMatchesPillow(name, tolerance: 2)
        }
    }

    func testGreyJPEGComesOutAsEqualRGBChannels() throws {
        let image = try ImageDecoder().decode(try Fixtures.bytes("grey.jpg"), name: "grey.jpg")
        for i in stride(from: 0, to: image.pixels.count, by: 3) {
            XCTAssertEqual(image.pixels[i], image.pixels[i + 1])
            XCTAssertEqual(image.pixels[i], image.pixels[i + 2])
        }
    }

    // Factors are n/8; the smallest one keeping the shorter side ≥ target wins (768·3/8 = 288 ≥ 256 > 768·2/8).
    func testDCTScalingPicksSmallestFactorKeepingShorterSide() throws {
        let decoder = ImageDecoder()
        XCTAssertEqual(ImageDecoder.jpegScale(width: 1024, height: 768, shorterSideAtLeast: 256).width, 384)
        XCTAssertEqual(ImageDecoder.jpegScale(width: 1024, height: 768, shorterSideAtLeast: 256).height, 288)
        XCTAssertEqual(ImageDecoder.jpegScale(width: 1024, height: 768, shorterSideAtLeast: 96).width, 128)
        XCTAssertEqual(ImageDecoder.jpegScale(width: 1024, height: 768, shorterSideAtLeast: 97).height, 192)
        XCTAssertEqual(ImageDecoder.jpegScale(width: 512, height: 512, shorterSideAtLeast: 256).width, 256)
        XCTAssertEqual(ImageDecoder.jpegScale(width: 500, height: 375, shorterSideAtLeast: 256).height, 282)
        // Never upscales in the DCT domain.
        XCTAssertEqual(ImageDecoder.jpegScale(width: 100, height: 80, shorterSideAtLeast: 256).width, 100)

        let bytes = try Fixtures.bytes("large_1024x768.jpg")
        let scaled = try decoder.decode(bytes, name: "large", shorterSideAtLeast: 256)
        XCTAssertEqual([scaled.width, scaled.height], [384, 288])
        XCTAssertEqual(scaled.pixels.count, 384 * 288 * 3)
        let full = try decoder.decode(bytes, name: "large")
        XCTAssertEqual([full.width, full.height], [1024, 768])
        // The scaled decode is the same picture: the vertical gradient has the same value at the matching row.
        XCTAssertEqual(Double(scaled.pixels[(144 * 384 + 192) * 3]), Double(full.pixels[(384 * 1024 + 512) * 3]), accuracy: 6)
    }

    func testFormatIsDetectedBySignatureNotExtension() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("actually_png.jpg", try Fixtures.bytes("rgb8.png"))
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(ImageFormat.detect(bytes), .png)
        let image = try ImageDecoder().decode(bytes, name: "actually_png.jpg")
        XCTAssertEqual(image.width, 40)
    }

    func testDecoderHandlesAreIndependentAcrossThreads() throws {
        let bytes = try Fixtures.bytes("baseline.jpg")
        let reference = try ImageDecoder().decode(bytes, name: "ref").pixels
        final class Tally: @unchecked Sendable {
            private let lock = NSLock()
            private(set) var mismatches = 0
            func add(_ n: Int) { lock.lock(); mismatches += n; lock.unlock() }
        }
        let tally = Tally()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let decoder = ImageDecoder()
            tally.add((0..<50).filter { _ in (try? decoder.decode(bytes, name: "t").pixels) != reference }.count)
        }
        XCTAssertEqual(tally.mismatches, 0)
    }
}
