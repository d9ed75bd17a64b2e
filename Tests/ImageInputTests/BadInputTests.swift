import CPNGShim
import DatasetIndex
import Foundation
import XCTest
@testable import ImageInput

/// Opens a PNG with the C shim directly, to prove its own limit check runs before libpng sees the stream.
private func shimOpenStatus(_ buffer: UnsafeRawBufferPointer, limit: UInt64, width: inout UInt32,
                            height: inout UInt32, message: inout [CChar]) -> Int32 {
    var reader: OpaquePointer?
    var interlaced: Int32 = 0
    let status = pngshim_open(buffer.baseAddress, buffer.count, limit, &reader, &width, &height, &interlaced,
                              &message, message.count)
    pngshim_close(reader)
    return status
}

final class BadInputTests: XCTestCase {
    private func decodeError(_ bytes: [UInt8], limit: Int = 100_000_000) -> ImageDecodeError? {
        do {
            _ = try ImageDecoder(pixelLimit: limit).decode(bytes, name: "input")
            return nil
        } catch let error as ImageDecodeError {
            return error
        } catch {
            XCTFail("unexpected error type \(error)")
            return nil
        }
    }

    /// A syntactically valid PNG header (signature + IHDR with correct CRC) and nothing else.
    private func pngHeader(width: UInt32, height: UInt32) -> [UInt8] {
        let body = Array("IHDR".utf8) + bigEndian(width) + bigEndian(height) + [8, 2, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + bigEndian(13) + body + bigEndian(crc32(body))
    }

    func testEmptyFile() {
        XCTAssertEqual(decodeError([])?.kind, .emptyFile)
        XCTAssertEqual(decodeError([])?.reason, "empty file")
    }

    func testTruncatedJPEGIsAnErrorNotAGreyImage() throws {
        let full = try Fixtures.bytes("baseline.jpg")
        let error = decodeError(Array(full.prefix(full.count / 2)))
        XCTAssertEqual(error?.kind, .truncated)
        XCTAssertTrue(error?.reason.hasPrefix("truncated JPEG:") ?? false, error?.reason ?? "no error")
        // Header-only truncation must fail too.
        XCTAssertNotNil(decodeError(Array(full.prefix(20))))
    }

    func testTruncatedPNG() throws {
        let full = try Fixtures.bytes("rgb16.png")
        let error = decodeError(Array(full.prefix(full.count * 2 / 3)))
        XCTAssertEqual(error?.kind, .truncated)
        XCTAssertTrue(error?.reason.hasPrefix("truncated PNG:") ?? false, error?.reason ?? "no error")
    }

    func testCorruptPNGChecksumIsReportedNotFatal() throws {
        var bytes = try Fixtures.bytes("rgb8.png")
        bytes[20] ^= 0xFF   // inside IHDR data: CRC no longer matches
        let error = decodeError(bytes)
        XCTAssertEqual(error?.kind, .corrupt)
        XCTAssertTrue(error?.reason.hasPrefix("corrupt PNG:") ?? false, error?.reason ?? "no error")
    }

    func testRandomBytesWithJPEGExtension() {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[0] = 0x00   // make sure it cannot accidentally start with a real signature
        let error = decodeError(bytes)
        XCTAssertEqual(error?.kind, .unknownSignature)
        XCTAssertEqual(error?.reason, "not an image (unknown signature)")
    }

    func testJPEGSignatureFollowedByGarbage() {
        let bytes: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0] + [UInt8](repeating: 0x41, count: 200)
        let error = decodeError(bytes)
        XCTAssertNotNil(error)
        XCTAssertTrue([.corrupt, .truncated].contains(error!.kind), error!.reason)
    }

    func testTextFileWithPNGExtension() {
        XCTAssertEqual(decodeError(Array("hello, I am not a picture\n".utf8))?.kind, .unknownSignature)
    }

    // Formats no library here decodes are told by their bytes and named, whatever the file is called.
    func testUnsupportedFormatsAreNamed() {
        let heic: [UInt8] = [0, 0, 0, 24] + Array("ftypheic".utf8) + [0, 0, 0, 0] + Array("mif1heic".utf8) + [0, 0, 0, 0]
        XCTAssertEqual(decodeError(heic)?.reason, "unsupported format: HEIC")
        XCTAssertEqual(decodeError(heic)?.kind, .unsupportedFormat)
        let avif: [UInt8] = [0, 0, 0, 28] + Array("ftypavif".utf8) + [0, 0, 0, 0] + Array("avifmif1miaf".utf8)
        XCTAssertEqual(decodeError(avif)?.reason, "unsupported format: AVIF")
        let jp2: [UInt8] = [0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A, 0, 0]
        XCTAssertEqual(decodeError(jp2)?.reason, "unsupported format: JPEG 2000")
        XCTAssertEqual(decodeError(Array("8BPS".utf8) + [0, 1, 0, 0])?.reason, "unsupported format: PSD")
        XCTAssertEqual(decodeError(Array("%PDF-1.7\n".utf8))?.reason, "unsupported format: PDF")
    }

    // Recognised formats with broken contents say which format and what is wrong.
    func testDamagedNewFormatsAreNamedErrors() throws {
        let gif = Array("GIF89a".utf8) + [1, 0, 1, 0, 0, 0, 0, 0x3B]
        XCTAssertEqual(decodeError(gif)?.reason.hasPrefix("corrupt GIF"), true, decodeError(gif)?.reason ?? "")
        let bmp = Array("BM".utf8) + [UInt8](repeating: 0, count: 60)
        XCTAssertEqual(decodeError(bmp)?.reason.hasPrefix("corrupt BMP"), true, decodeError(bmp)?.reason ?? "")
        for name in ["lossy.webp", "rgb8_lzw.tif", "rgb16_tiles.tif", "palette.gif"] {
            let full = try Fixtures.bytes(name)
            let error = decodeError(Array(full.prefix(full.count * 2 / 3)))
            XCTAssertNotNil(error, name)
            XCTAssertTrue([.truncated, .corrupt].contains(error?.kind), "\(name): \(error?.reason ?? "")")
            let format = ImageFormat.detect(full)!.rawValue
            XCTAssertTrue(error?.reason.contains(format) ?? false, "\(name): \(error?.reason ?? "")")
        }
    }

    // Every format checks the pixel limit against its header before it allocates pixels.
    func testPixelLimitAppliesToEveryFormat() throws {
        for name in ["lossless.webp", "palette.gif", "rgb24.bmp", "rgb8_tiles.tif", "rgb8.png", "baseline.jpg"] {
            let error = decodeError(try Fixtures.bytes(name), limit: 40 * 30 - 1)
            XCTAssertEqual(error?.kind, .exceedsPixelLimit, name)
            XCTAssertEqual(error?.reason, "image 40x30 exceeds pixel limit 1199", name)
        }
    }

    // 20000×20000×3 would be 1.2 GB: the header check must fire before any buffer exists,
    // which the 50 MB resident-set bound below would notice if the buffer were touched.
    func testPixelLimitRejectsHugePNGHeaderBeforeAllocating() {
        let before = residentMegabytes()
        let error = decodeError(pngHeader(width: 20000, height: 20000))
        XCTAssertEqual(error?.kind, .exceedsPixelLimit)
        XCTAssertEqual(error?.reason, "image 20000x20000 exceeds pixel limit 100000000")
        XCTAssertLessThan(residentMegabytes() - before, 50)
        // The C shim enforces the limit on its own too, for callers that skip the Swift header check.
        var width: UInt32 = 0, height: UInt32 = 0
        XCTAssertEqual(pngHeader(width: 20000, height: 20000).withUnsafeBytes { buffer in
            var message = [CChar](repeating: 0, count: 128)
            return shimOpenStatus(buffer, limit: 1000, width: &width, height: &height, message: &message)
        }, Int32(PNGSHIM_TOO_LARGE.rawValue))
    }

    func testPixelLimitRejectsHugeJPEGHeader() throws {
        var bytes = try Fixtures.bytes("baseline.jpg")
        // Rewrite the SOF0 frame size to 20000×20000.
        let sof = try XCTUnwrap((0..<(bytes.count - 9)).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xC0 })
        bytes[sof + 5] = 0x4E; bytes[sof + 6] = 0x20
        bytes[sof + 7] = 0x4E; bytes[sof + 8] = 0x20
        let error = decodeError(bytes)
        XCTAssertEqual(error?.kind, .exceedsPixelLimit)
        XCTAssertEqual(error?.reason, "image 20000x20000 exceeds pixel limit 100000000")
        XCTAssertEqual(decodeError(try Fixtures.bytes("baseline.jpg"), limit: 100)?.kind, .exceedsPixelLimit)
    }

    // The dead-letter path: a folder of bad files yields one reason per file and no crash.
    func testBadCorpusBecomesDeadLettersThroughTheDatasetPath() throws {
        let dir = try TemporaryDirectory()
        let jpeg = try Fixtures.bytes("baseline.jpg")
        try dir.write("junk/empty.jpg", [])
        try dir.write("junk/truncated.jpg", Array(jpeg.prefix(jpeg.count / 2)))
        try dir.write("junk/text.png", text: "not a png")
        try dir.write("junk/huge.png", pngHeader(width: 40000, height: 40000))
        try dir.write("junk/anim.png", [0, 0, 0, 24] + Array("ftypheic".utf8) + [0, 0, 0, 0] + Array("mif1heic".utf8))
        try dir.write("junk/good.jpg", jpeg)
        let index = try scanIndex(dir.path)
        XCTAssertEqual(index.count, 6)
        let decoder = ImageDecoder()
        var reasons: [String: String] = [:]
        var decoded = 0
        for item in try index.items(0..<index.count) {
            do {
                _ = try decoder.decode(try item.locator.bytes(), name: item.key)
                decoded += 1
            } catch let error as ImageDecodeError {
                reasons[item.key] = error.reason
            }
        }
        XCTAssertEqual(decoded, 1)
        XCTAssertEqual(reasons["junk/empty.jpg"], "empty file")
        XCTAssertEqual(reasons["junk/text.png"], "not an image (unknown signature)")
        XCTAssertEqual(reasons["junk/anim.png"], "unsupported format: HEIC")
        XCTAssertEqual(reasons["junk/huge.png"], "image 40000x40000 exceeds pixel limit 1000000000")
        XCTAssertTrue(reasons["junk/truncated.jpg"]?.hasPrefix("truncated JPEG") ?? false)
    }

    private func residentMegabytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = Int(status.split(separator: " ")[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
    }
}
