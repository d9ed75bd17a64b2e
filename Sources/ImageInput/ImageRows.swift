// The system modules are imported so the Swift object autolinks their libraries: a C target's includes carry no
// link flags.
import CGIF
import CImageCodecs
import CJPEG
import CPNG
import CPNGShim
import CSTBImage
import CTIFF
import CWebP

/// Decoded 8-bit RGB rows handed out top row first, so a consumer (the resampler) never needs the whole picture.
public protocol ImageRows: AnyObject {
    /// Width in pixels.
    var width: Int { get }
    /// Height in pixels.
    var height: Int { get }
    /// Feeds the rows top to bottom, in bands: `consume(pixels, count)` gets `count` tightly packed RGB rows that
    /// stay valid only during the call, and returns false once it needs no more (the rest is then never decoded).
    /// Can be called once.
    func feed(_ consume: (UnsafePointer<UInt8>, Int) throws -> Bool) throws
}

/// A picture that is already fully decoded.
final class WholeImageRows: ImageRows {
    let image: RGBImage
    var width: Int { image.width }
    var height: Int { image.height }

    init(_ image: RGBImage) { self.image = image }

    func feed(_ consume: (UnsafePointer<UInt8>, Int) throws -> Bool) throws {
        try image.pixels.withUnsafeBufferPointer { _ = try consume($0.baseAddress!, image.height) }
    }
}

/// The band loop of the streaming readers: hands `consume` bands of about 1 MB of RGB (at least one row), each
/// filled by `read(buffer, rows, message)`, which returns the error to throw (its text in `message`) or nil.
private func feedBands(width: Int, height: Int, messageCapacity: Int, _ consume: (UnsafePointer<UInt8>, Int) throws -> Bool,
                       read: (UnsafeMutablePointer<UInt8>, Int, inout [CChar]) -> ImageDecodeError?) throws {
    let band = max(1, min(256, (1 << 20) / max(1, width * 3)))
    let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: band * width * 3)
    defer { buffer.deallocate() }
    var message = [CChar](repeating: 0, count: messageCapacity)
    var row = 0
    while row < height {
        let count = min(band, height - row)
        if let error = read(buffer, count, &message) { throw error }
        row += count
        if try !consume(buffer, count) { return }
    }
}

/// A non-interlaced PNG decoded by libpng one row at a time (an Adam7 one is decoded whole on the first band).
final class PNGRows: ImageRows {
    let width: Int
    let height: Int
    /// Adam7 images need their whole frame in memory, unlike every other PNG.
    let interlaced: Bool
    private let reader: OpaquePointer
    private let name: String

    /// `bytes` must outlive this object.
    init(_ bytes: UnsafeRawBufferPointer, name: String, pixelLimit: Int) throws {
        var message = [CChar](repeating: 0, count: 256)
        var width: UInt32 = 0, height: UInt32 = 0, interlaced: Int32 = 0
        var reader: OpaquePointer?
        let status = pngshim_open(bytes.baseAddress, bytes.count, UInt64(pixelLimit), &reader, &width, &height,
                                  &interlaced, &message, message.count)
        guard status == Int32(PNGSHIM_OK.rawValue), let reader else {
            throw Self.error(name: name, status: status, message: message)
        }
        self.reader = reader
        self.width = Int(width)
        self.height = Int(height)
        self.interlaced = interlaced != 0
        self.name = name
    }

    deinit { pngshim_close(reader) }

    func feed(_ consume: (UnsafePointer<UInt8>, Int) throws -> Bool) throws {
        try feedBands(width: width, height: height, messageCapacity: 256, consume) { buffer, count, message in
            let status = pngshim_read_rows(reader, buffer, UInt32(count), &message, message.count)
            return status == Int32(PNGSHIM_OK.rawValue) ? nil : Self.error(name: name, status: status, message: message)
        }
    }

    static func error(name: String, status: Int32, message: [CChar]) -> ImageDecodeError {
        let text = cText(message)
        switch UInt32(status) {
        case PNGSHIM_TRUNCATED.rawValue:
            return ImageDecodeError(name: name, kind: .truncated, reason: "truncated PNG: \(text)")
        case PNGSHIM_TOO_LARGE.rawValue:
            return ImageDecodeError(name: name, kind: .exceedsPixelLimit, reason: text)
        case PNGSHIM_NOT_PNG.rawValue:
            return ImageDecodeError(name: name, kind: .unknownSignature, reason: "not an image (\(text))")
        default:
            return ImageDecodeError(name: name, kind: .corrupt, reason: "corrupt PNG: \(text)")
        }
    }
}

/// A JPEG decoded by libjpeg a scanline at a time, optionally scaled in the DCT domain.
final class JPEGRows: ImageRows {
    let width: Int
    let height: Int
    private let reader: OpaquePointer
    private let name: String

    /// `bytes` must outlive this object. With `shorterSideAtLeast`, the picture shrinks in the DCT domain by the
    /// smallest factor n/8 that keeps its shorter side at least that (`ImageDecoder.jpegScale`).
    init(_ bytes: UnsafeRawBufferPointer, name: String, pixelLimit: Int, shorterSideAtLeast: Int?) throws {
        var message = [CChar](repeating: 0, count: 256)
        var width: UInt32 = 0, height: UInt32 = 0
        var opened: OpaquePointer?
        var status = jpegshim_open(bytes.baseAddress, bytes.count, UInt64(pixelLimit), &opened, &width, &height, &message, message.count)
        guard status == Int32(CODEC_OK.rawValue), let reader = opened else { throw Self.error(name: name, status: status, text: cText(message)) }
        self.reader = reader
        self.name = name
        let eighths = ImageDecoder.jpegScale(width: Int(width), height: Int(height), shorterSideAtLeast: shorterSideAtLeast).eighths
        status = jpegshim_start(reader, UInt32(eighths), &width, &height, &message, message.count)
        self.width = Int(width)
        self.height = Int(height)
        guard status == Int32(CODEC_OK.rawValue) else { throw Self.error(name: name, status: status, text: cText(message)) }
    }

    deinit { jpegshim_close(reader) }

    func feed(_ consume: (UnsafePointer<UInt8>, Int) throws -> Bool) throws {
        try feedBands(width: width, height: height, messageCapacity: 256, consume) { buffer, count, message in
            let status = jpegshim_read_rows(reader, buffer, UInt32(count), &message, message.count)
            return status == Int32(CODEC_OK.rawValue) ? nil : Self.error(name: name, status: status, text: cText(message))
        }
        // libjpeg pads missing or corrupt data with grey and only warns: rows already handed over may be grey.
        let warnings = String(cString: jpegshim_warnings(reader)).split(separator: "\n").map(String.init)
        if let spoiling = warnings.first(where: Self.warningSpoilsPixels) {
            throw Self.error(name: name, status: Int32(CODEC_CORRUPT.rawValue), text: spoiling, stage: "data")
        }
    }

    /// Warnings like "extraneous bytes before marker" leave pixels intact (Pillow accepts them); these do not.
    static func warningSpoilsPixels(_ message: String) -> Bool {
        let lowered = message.lowercased()
        if lowered.contains("premature end") { return true }
        if lowered.contains("extraneous bytes") { return false }
        return lowered.contains("corrupt") || lowered.contains("bad huffman") || lowered.contains("invalid")
    }

    static func error(name: String, status: Int32, text: String, stage: String = "header") -> ImageDecodeError {
        if status == Int32(CODEC_TOO_LARGE.rawValue) { return ImageDecodeError(name: name, kind: .exceedsPixelLimit, reason: text) }
        let lowered = text.lowercased()
        if lowered.contains("premature end") || lowered.contains("empty input") || lowered.contains("insufficient") {
            return ImageDecodeError(name: name, kind: .truncated, reason: "truncated JPEG: \(text)")
        }
        return ImageDecodeError(name: name, kind: .corrupt, reason: "corrupt JPEG (\(stage)): \(text)")
    }
}

/// The first page of a TIFF decoded by libtiff one strip or row of tiles at a time.
final class TIFFRows: ImageRows {
    let width: Int
    let height: Int
    /// The Orientation tag (1 when absent).
    let orientation: Int
    private let reader: OpaquePointer
    private let name: String

    /// `bytes` must outlive this object.
    init(_ bytes: UnsafeRawBufferPointer, name: String, pixelLimit: Int) throws {
        var message = [CChar](repeating: 0, count: 1024)
        var width: UInt32 = 0, height: UInt32 = 0, orientation: UInt16 = 1
        var reader: OpaquePointer?
        let status = tiffshim_open(bytes.baseAddress, bytes.count, UInt64(pixelLimit), &reader, &width, &height,
                                   &orientation, &message, message.count)
        guard status == Int32(CODEC_OK.rawValue), let reader else {
            throw codecError(name: name, format: .tiff, status: status, message: message)
        }
        self.reader = reader
        self.width = Int(width)
        self.height = Int(height)
        self.orientation = Int(orientation)
        self.name = name
    }

    deinit { tiffshim_close(reader) }

    func feed(_ consume: (UnsafePointer<UInt8>, Int) throws -> Bool) throws {
        try feedBands(width: width, height: height, messageCapacity: 1024, consume) { buffer, count, message in
            let status = tiffshim_read_rows(reader, buffer, UInt32(count), &message, message.count)
            return status == Int32(CODEC_OK.rawValue) ? nil : codecError(name: name, format: .tiff, status: status, message: message)
        }
    }
}

func cText(_ message: [CChar]) -> String {
    message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

/// Maps a `codec_status` from CImageCodecs to the module's error vocabulary.
func codecError(name: String, format: ImageFormat, status: Int32, message: [CChar]) -> ImageDecodeError {
    let text = cText(message)
    switch UInt32(status) {
    case CODEC_TOO_LARGE.rawValue:
        return ImageDecodeError(name: name, kind: .exceedsPixelLimit, reason: text)
    case CODEC_TRUNCATED.rawValue:
        return ImageDecodeError(name: name, kind: .truncated, reason: "truncated \(format.rawValue): \(text)")
    case CODEC_UNSUPPORTED.rawValue:
        return ImageDecodeError(name: name, kind: .unsupportedFormat,
                                reason: "unsupported \(format.rawValue) variant: \(text)")
    default:
        return ImageDecodeError(name: name, kind: .corrupt, reason: "corrupt \(format.rawValue): \(text)")
    }
}

/// Decoders for formats whose library hands back a whole frame (GIF, WebP, BMP).
enum WholeFrameCodecs {
    static func pixelLimitError(name: String, width: Int, height: Int, limit: Int) -> ImageDecodeError {
        ImageDecodeError(name: name, kind: .exceedsPixelLimit, reason: "image \(width)x\(height) exceeds pixel limit \(limit)")
    }

    static func gif(_ bytes: UnsafeRawBufferPointer, name: String, pixelLimit: Int) throws -> RGBImage {
        var message = [CChar](repeating: 0, count: 256)
        var width: UInt32 = 0, height: UInt32 = 0
        var status = gifshim_info(bytes.baseAddress, bytes.count, &width, &height, &message, message.count)
        guard status == Int32(CODEC_OK.rawValue) else { throw codecError(name: name, format: .gif, status: status, message: message) }
        let (w, h) = (Int(width), Int(height))
        guard w * h <= pixelLimit else { throw pixelLimitError(name: name, width: w, height: h, limit: pixelLimit) }
        let pixels = [UInt8](unsafeUninitializedCapacity: w * h * 3) { buffer, count in
            status = gifshim_decode_first_frame(bytes.baseAddress, bytes.count, UInt64(pixelLimit), buffer.baseAddress,
                                                buffer.count, width, height, &message, message.count)
            count = buffer.count
        }
        guard status == Int32(CODEC_OK.rawValue) else { throw codecError(name: name, format: .gif, status: status, message: message) }
        return RGBImage(width: w, height: h, pixels: pixels)
    }

    /// With `shorterSideAtLeast`, libwebp scales while decoding by the largest power of two (up to 8, like JPEG's
    /// DCT scaling) that keeps the shorter side at or above it.
    static func webp(_ bytes: UnsafeRawBufferPointer, name: String, pixelLimit: Int, shorterSideAtLeast: Int?) throws -> RGBImage {
        var message = [CChar](repeating: 0, count: 256)
        var width: UInt32 = 0, height: UInt32 = 0, alpha: Int32 = 0, animated: Int32 = 0
        var status = webpshim_info(bytes.baseAddress, bytes.count, &width, &height, &alpha, &animated, &message, message.count)
        guard status == Int32(CODEC_OK.rawValue) else { throw codecError(name: name, format: .webp, status: status, message: message) }
        let (w, h) = (Int(width), Int(height))
        guard w * h <= pixelLimit else { throw pixelLimitError(name: name, width: w, height: h, limit: pixelLimit) }
        let out = webpScaledSize(width: w, height: h, shorterSideAtLeast: shorterSideAtLeast)
        var pixels = [UInt8](unsafeUninitializedCapacity: out.width * out.height * 4) { buffer, count in
            status = webpshim_decode(bytes.baseAddress, bytes.count, buffer.baseAddress, buffer.count,
                                     UInt32(out.width), UInt32(out.height), &message, message.count)
            count = buffer.count
        }
        guard status == Int32(CODEC_OK.rawValue) else { throw codecError(name: name, format: .webp, status: status, message: message) }
        pixels.removeLast(out.width * out.height)
        return RGBImage(width: out.width, height: out.height, pixels: pixels)
    }

    /// The decode size for a WebP: halved (up to three times) while the shorter side stays ≥ the target.
    static func webpScaledSize(width: Int, height: Int, shorterSideAtLeast target: Int?) -> (width: Int, height: Int) {
        guard let target, target > 0 else { return (width, height) }
        var divisor = 1
        while divisor < 8 && min(width, height) / (divisor * 2) >= target { divisor *= 2 }
        return ((width + divisor - 1) / divisor, (height + divisor - 1) / divisor)
    }

    static func bmp(_ bytes: UnsafeRawBufferPointer, name: String, pixelLimit: Int) throws -> RGBImage {
        var message = [CChar](repeating: 0, count: 256)
        var width: UInt32 = 0, height: UInt32 = 0
        var status = bmpshim_info(bytes.baseAddress, bytes.count, &width, &height, &message, message.count)
        guard status == Int32(CODEC_OK.rawValue) else { throw codecError(name: name, format: .bmp, status: status, message: message) }
        let (w, h) = (Int(width), Int(height))
        guard w * h <= pixelLimit else { throw pixelLimitError(name: name, width: w, height: h, limit: pixelLimit) }
        let pixels = [UInt8](unsafeUninitializedCapacity: w * h * 3) { buffer, count in
            status = bmpshim_decode(bytes.baseAddress, bytes.count, UInt64(pixelLimit), buffer.baseAddress, buffer.count,
                                    width, height, &message, message.count)
            count = buffer.count
        }
        guard status == Int32(CODEC_OK.rawValue) else { throw codecError(name: name, format: .bmp, status: status, message: message) }
        return RGBImage(width: w, height: h, pixels: pixels)
    }
}
