
/// An 8-bit image with interleaved R, G, B samples and tightly packed rows.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels.
    public var width: Int
    /// Height in pixels.
    public var height: Int
    /// `width * height * 3` bytes, row-major, RGB.
    public var pixels: [UInt8]

    /// Wraps existing pixels; the count must be `width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGBImage pixel count does not match \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Container format identified from the leading bytes of a file.
public enum ImageFormat: String, Sendable, Equatable, CaseIterable {
    /// JPEG/JFIF/EXIF (`FF D8 FF`).
    case jpeg = "JPEG"
    /// PNG (8-byte signature).
    case png = "PNG"
    /// GIF87a/GIF89a; the first frame is decoded.
    case gif = "GIF"
    /// Windows bitmap (`BM`).
    case bmp = "BMP"
    /// RIFF/WEBP, lossy or lossless; the first frame of an animation is decoded.
    case webp = "WebP"
    /// Classic or BigTIFF, either byte order; the first page is decoded.
    case tiff = "TIFF"
    /// HEIF with HEVC pictures: recognised so it is named in dead letters, not decoded.
    case heic = "HEIC"
    /// HEIF with AV1 pictures: recognised, not decoded.
    case avif = "AVIF"
    /// JPEG 2000 (JP2 box or raw codestream): recognised, not decoded.
    case jpeg2000 = "JPEG 2000"
    /// JPEG XL (container or codestream): recognised, not decoded.
    case jpegXL = "JPEG XL"
    /// Photoshop document: recognised, not decoded.
    case psd = "PSD"
    /// Windows icon: recognised, not decoded.
    case ico = "ICO"
    /// PDF document: recognised, not decoded.
    case pdf = "PDF"

    /// Whether `ImageDecoder` decodes this format; the others become "unsupported format" dead letters.
    public var isDecoded: Bool {
        switch self {
        case .jpeg, .png, .gif, .bmp, .webp, .tiff: return true
        case .heic, .avif, .jpeg2000, .jpegXL, .psd, .ico, .pdf: return false
        }
    }

    /// Identifies the format by magic bytes; extensions lie, signatures rarely do. Returns nil when nothing matches.
    public static func detect<Bytes: Collection>(_ bytes: Bytes) -> ImageFormat? where Bytes.Element == UInt8 {
        let head = Array(bytes.prefix(signatureLength))
        func starts(_ magic: [UInt8], at offset: Int = 0) -> Bool {
            head.count >= offset + magic.count && Array(head[offset..<(offset + magic.count)]) == magic
        }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return .gif }
        if starts(Array("BM".utf8)) && head.count >= 6 { return .bmp }
        if starts(Array("RIFF".utf8)) && starts(Array("WEBP".utf8), at: 8) { return .webp }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A])
            || starts([0x49, 0x49, 0x2B, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2B]) { return .tiff }
        if starts(Array("ftyp".utf8), at: 4) && head.count >= 12 {
            // The major brand, then the compatible brands up to the end of the ftyp box (within what was read).
            let boxEnd = min(head.count, Int(head[0]) << 24 | Int(head[1]) << 16 | Int(head[2]) << 8 | Int(head[3]))
            var brands = [String(decoding: head[8..<12], as: UTF8.self)]
            var offset = 16
            while offset + 4 <= boxEnd {
                brands.append(String(decoding: head[offset..<(offset + 4)], as: UTF8.self))
                offset += 4
            }
            if brands.contains(where: { $0 == "avif" || $0 == "avis" }) { return .avif }
            if brands.contains(where: { ["heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1"].contains($0) }) {
                return .heic
            }
        }
        if starts([0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A])
            || starts([0xFF, 0x4F, 0xFF, 0x51]) { return .jpeg2000 }
        if starts([0xFF, 0x0A]) || starts([0x00, 0x00, 0x00, 0x0C, 0x4A, 0x58, 0x4C, 0x20, 0x0D, 0x0A, 0x87, 0x0A]) {
            return .jpegXL
        }
        if starts(Array("8BPS".utf8)) { return .psd }
        if starts([0x00, 0x00, 0x01, 0x00]) && head.count >= 6 && head[4] | head[5] != 0 { return .ico }
        if starts(Array("%PDF-".utf8)) { return .pdf }
        return nil
    }

    /// Bytes of a file's start that `detect` looks at: reading this many tells what a decode would refuse.
    public static let signatureLength = 64

    /// The format of `bytes` when `ImageDecoder` decodes it; otherwise throws the error a decode of the same
    /// bytes throws (empty file, unknown signature, or a recognised format it does not decode). This is the
    /// one place that decides which files are images: `bytes` may be the whole file or only its first
    /// `signatureLength` bytes, so a caller can refuse a file without reading all of it.
    public static func decodable<Bytes: Collection>(_ bytes: Bytes, name: String) throws -> ImageFormat where Bytes.Element == UInt8 {
        guard !bytes.isEmpty else {
            throw ImageDecodeError(name: name, kind: .emptyFile, reason: "empty file")
        }
        guard let format = detect(bytes) else {
            throw ImageDecodeError(name: name, kind: .unknownSignature, reason: "not an image (unknown signature)")
        }
        guard format.isDecoded else {
            throw ImageDecodeError(name: name, kind: .unsupportedFormat, reason: "unsupported format: \(format.rawValue)")
        }
        return format
    }
}

/// Why an image could not be decoded; `reason` is meant for dead-letter files and logs.
public struct ImageDecodeError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Broad category, so callers and tests can branch without parsing text.
    public enum Kind: String, Sendable, Equatable {
        /// Zero bytes.
        case emptyFile
        /// No known image signature.
        case unknownSignature
        /// A recognised format this module does not decode.
        case unsupportedFormat
        /// The data stops before the image does.
        case truncated
        /// The data is malformed.
        case corrupt
        /// The header claims more pixels than the decoder's limit.
        case exceedsPixelLimit
    }

    /// Display name of the input (path or dataset key).
    public let name: String
    /// Category of failure.
    public let kind: Kind
    /// Human-readable explanation, e.g. `truncated JPEG: Premature end of JPEG file`.
    public let reason: String

    /// Creates an error; public so readers layered on top can report in the same vocabulary.
    public init(name: String, kind: Kind, reason: String) {
        self.name = name
        self.kind = kind
        self.reason = reason
    }

    /// `name: reason`.
    public var description: String { "\(name): \(reason)" }
}

/// Decodes JPEG, PNG, GIF, BMP, WebP and TIFF bytes to 8-bit RGB, as rows (`withRows`) or a whole `RGBImage`.
///
/// JPEG, PNG and TIFF are decoded band by band, so with `withRows` memory stays at a few rows whatever the image
/// size (except interlaced PNG and progressive JPEG); JPEG and WebP can be scaled while decoding. Any alpha is
/// composited over white.
///
/// Keeps no state between calls (each call opens its own library reader), so one decoder may serve every thread.
public final class ImageDecoder: Sendable {
    /// Largest `width * height` a header may claim; larger images are rejected before any pixel buffer exists.
    public let pixelLimit: Int

    /// The default `pixelLimit`: 1 Gpx. Only absurd headers and decode bombs reach it, since big JPEG, PNG and
    /// TIFF images stream and big JPEG and WebP images can scale while decoding.
    public static let defaultPixelLimit = 1_000_000_000

    /// Creates a decoder.
    public init(pixelLimit: Int = ImageDecoder.defaultPixelLimit) {
        self.pixelLimit = pixelLimit
    }

    /// Decodes an image and hands its rows to `body`, top row first.
    ///
    /// - Parameters:
    ///   - bytes: the whole file; must stay valid until `body` returns.
    ///   - name: used only in error messages.
    ///   - shorterSideAtLeast: when set, JPEGs are downscaled in the DCT domain by the smallest factor n/8
    ///     that keeps the shorter side ≥ this value (Pillow's `draft`), and WebPs by the same rule with factors
    ///     1/2, 1/4, 1/8; other formats are unaffected (they are always exact).
    ///   - body: reads the rows; it may stop early, and the rest is then never decoded.
    public func withRows<T>(_ bytes: UnsafeRawBufferPointer, name: String, shorterSideAtLeast: Int? = nil,
                            _ body: (any ImageRows) throws -> T) throws -> T {
        let format = try ImageFormat.decodable(bytes, name: name)
        switch format {
        case .jpeg: return try body(JPEGRows(bytes, name: name, pixelLimit: pixelLimit, shorterSideAtLeast: shorterSideAtLeast))
        case .png: return try body(PNGRows(bytes, name: name, pixelLimit: pixelLimit))
        case .tiff: return try body(TIFFRows(bytes, name: name, pixelLimit: pixelLimit))
        case .gif: return try body(WholeImageRows(WholeFrameCodecs.gif(bytes, name: name, pixelLimit: pixelLimit)))
        case .bmp: return try body(WholeImageRows(WholeFrameCodecs.bmp(bytes, name: name, pixelLimit: pixelLimit)))
        case .webp:
            return try body(WholeImageRows(WholeFrameCodecs.webp(bytes, name: name, pixelLimit: pixelLimit,
                                                                 shorterSideAtLeast: shorterSideAtLeast)))
        case .heic, .avif, .jpeg2000, .jpegXL, .psd, .ico, .pdf:
            preconditionFailure("ImageFormat.decodable let \(format.rawValue) through")
        }
    }

    /// Decodes a whole image into memory; see `withRows` for the parameters.
    public func decode(_ bytes: UnsafeRawBufferPointer, name: String, shorterSideAtLeast: Int? = nil) throws -> RGBImage {
        try withRows(bytes, name: name, shorterSideAtLeast: shorterSideAtLeast) { rows in
            if let whole = rows as? WholeImageRows { return whole.image }
            var pixels: [UInt8] = []
            pixels.reserveCapacity(rows.width * rows.height * 3)
            try rows.feed { band, count in
                pixels.append(contentsOf: UnsafeBufferPointer(start: band, count: count * rows.width * 3))
                return true
            }
            return RGBImage(width: rows.width, height: rows.height, pixels: pixels)
        }
    }

    /// Array convenience for `decode(_:name:shorterSideAtLeast:)`.
    public func decode(_ bytes: [UInt8], name: String, shorterSideAtLeast: Int? = nil) throws -> RGBImage {
        try bytes.withUnsafeBytes { try decode($0, name: name, shorterSideAtLeast: shorterSideAtLeast) }
    }

    /// The DCT scale a JPEG of `width` x `height` decodes at: the smallest n/8 (n = 1…8) whose scaled shorter
    /// side is still ≥ `target` (libjpeg rounds scaled sizes up), and the size it gives; 8/8 when none qualifies
    /// or there is no target. Only downscaling: DCT upscaling would not match what Pillow feeds its resampler.
    public static func jpegScale(width: Int, height: Int, shorterSideAtLeast target: Int?) -> (eighths: Int, width: Int, height: Int) {
        func scaled(_ dimension: Int, _ eighths: Int) -> Int { (dimension * eighths + 7) / 8 }
        guard let target, target > 0 else { return (8, width, height) }
        let eighths = (1...8).first { min(scaled(width, $0), scaled(height, $0)) >= target } ?? 8
        return (eighths, scaled(width, eighths), scaled(height, eighths))
    }

}
