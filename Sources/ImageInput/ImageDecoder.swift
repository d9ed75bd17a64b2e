// CPNG is imported only so the Swift object autolinks libpng16: a C target's own includes carry no link flags.
import CPNG
import CPNGShim
import CTurboJPEG

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
public enum ImageFormat: String, Sendable, Equatable {
    /// JPEG/JFIF/EXIF (`FF D8 FF`).
    case jpeg = "JPEG"
    /// PNG (8-byte signature).
    case png = "PNG"
    /// Recognised but not decoded here.
    case gif = "GIF"
    /// Recognised but not decoded here.
    case bmp = "BMP"
    /// Recognised but not decoded here.
    case webp = "WebP"
    /// Recognised but not decoded here.
    case tiff = "TIFF"

    /// Identifies the format by magic bytes; extensions lie, signatures rarely do. Returns nil when nothing matches.
    public static func detect<Bytes: Collection>(_ bytes: Bytes) -> ImageFormat? where Bytes.Element == UInt8 {
        let head = Array(bytes.prefix(12))
        func starts(_ magic: [UInt8]) -> Bool { head.count >= magic.count && Array(head.prefix(magic.count)) == magic }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return .gif }
        if starts(Array("BM".utf8)) && head.count >= 6 { return .bmp }
        if starts(Array("RIFF".utf8)) && head.count >= 12 && Array(head[8..<12]) == Array("WEBP".utf8) { return .webp }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return .tiff }
        return nil
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

/// Decodes JPEG and PNG bytes to `RGBImage`.
///
/// Holds a TurboJPEG handle, which is not thread-safe: create one decoder per thread or task and do not share it.
public final class ImageDecoder {
    /// Largest `width * height` a header may claim; larger images are rejected before any pixel buffer exists.
    public let pixelLimit: Int
    private let jpegHandle: tjhandle?
    private let scalingFactors: [tjscalingfactor]

    /// Creates a decoder with its own TurboJPEG handle.
    public init(pixelLimit: Int = 100_000_000) {
        self.pixelLimit = pixelLimit
        jpegHandle = tjInitDecompress()
        var count: Int32 = 0
        if let factors = tjGetScalingFactors(&count), count > 0 {
            // Only downscaling factors: DCT upscaling would not match what Pillow feeds its resampler.
            scalingFactors = UnsafeBufferPointer(start: factors, count: Int(count))
                .filter { $0.num > 0 && $0.denom > 0 && $0.num <= $0.denom }
        } else {
            scalingFactors = [tjscalingfactor(num: 1, denom: 1)]
        }
    }

    deinit {
        if let jpegHandle { tjDestroy(jpegHandle) }
    }

    /// Decodes an image.
    ///
    /// - Parameters:
    ///   - bytes: the whole file.
    ///   - name: used only in error messages.
    ///   - shorterSideAtLeast: when set, JPEGs are downscaled in the DCT domain by the smallest TurboJPEG factor
    ///     that keeps the shorter side ≥ this value (Pillow's `draft`), which is much cheaper than decoding full size.
    public func decode(_ bytes: UnsafeRawBufferPointer, name: String, shorterSideAtLeast: Int? = nil) throws -> RGBImage {
        guard bytes.count > 0 else {
            throw ImageDecodeError(name: name, kind: .emptyFile, reason: "empty file")
        }
        guard let format = ImageFormat.detect(bytes) else {
            throw ImageDecodeError(name: name, kind: .unknownSignature, reason: "not an image (unknown signature)")
        }
        switch format {
        case .jpeg: return try decodeJPEG(bytes, name: name, shorterSideAtLeast: shorterSideAtLeast)
        case .png: return try decodePNG(bytes, name: name)
        default:
            throw ImageDecodeError(name: name, kind: .unsupportedFormat, reason: "unsupported image format \(format.rawValue)")
        }
    }

    /// Array convenience for `decode(_:name:shorterSideAtLeast:)`.
    public func decode(_ bytes: [UInt8], name: String, shorterSideAtLeast: Int? = nil) throws -> RGBImage {
        try bytes.withUnsafeBytes { try decode($0, name: name, shorterSideAtLeast: shorterSideAtLeast) }
    }

    /// The smallest TurboJPEG factor whose scaled shorter side is still ≥ `target`; 1/1 when none qualifies.
    public func jpegScaledSize(width: Int, height: Int, shorterSideAtLeast target: Int?) -> (width: Int, height: Int) {
        guard let target, target > 0 else { return (width, height) }
        var best = (width: width, height: height)
        for factor in scalingFactors {
            let w = scaled(width, factor), h = scaled(height, factor)
            if min(w, h) >= target && w * h < best.width * best.height { best = (w, h) }
        }
        return best
    }

    private func scaled(_ dimension: Int, _ factor: tjscalingfactor) -> Int {
        (dimension * Int(factor.num) + Int(factor.denom) - 1) / Int(factor.denom)
    }

    private func jpegMessage() -> String {
        String(cString: tjGetErrorStr2(jpegHandle))
    }

    private func decodeJPEG(_ bytes: UnsafeRawBufferPointer, name: String, shorterSideAtLeast: Int?) throws -> RGBImage {
        guard let jpegHandle else {
            throw ImageDecodeError(name: name, kind: .corrupt, reason: "TurboJPEG could not be initialised")
        }
        let source = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let size = UInt(bytes.count)
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        if tjDecompressHeader3(jpegHandle, source, size, &width, &height, &subsampling, &colorspace) != 0 {
            throw jpegError(name: name, stage: "header")
        }
        guard width > 0, height > 0 else {
            throw ImageDecodeError(name: name, kind: .corrupt, reason: "corrupt JPEG: zero-sized image")
        }
        if Int(width) * Int(height) > pixelLimit {
            throw ImageDecodeError(
                name: name, kind: .exceedsPixelLimit,
                reason: "image \(width)x\(height) exceeds pixel limit \(pixelLimit)")
        }
        let target = jpegScaledSize(width: Int(width), height: Int(height), shorterSideAtLeast: shorterSideAtLeast)
        let isCMYK = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let channels = isCMYK ? 4 : 3
        let format = isCMYK ? TJPF_CMYK : TJPF_RGB
        var decoded = [UInt8](unsafeUninitializedCapacity: target.width * target.height * channels) { buffer, count in
            count = buffer.count
        }
        let status = decoded.withUnsafeMutableBufferPointer { out in
            tjDecompress2(jpegHandle, source, size, out.baseAddress, Int32(target.width), 0, Int32(target.height),
                          Int32(format.rawValue), 0)
        }
        if status != 0 {
            let message = jpegMessage()
            let isWarning = tjGetErrorCode(jpegHandle) == Int32(TJERR_WARNING.rawValue)
            // A warning for missing data means libjpeg padded the rest with grey: that image must be dead-lettered.
            if !isWarning || Self.warningSpoilsPixels(message) {
                throw jpegError(name: name, stage: "data", message: message)
            }
        }
        if isCMYK {
            decoded = Self.cmykToRGB(decoded, pixelCount: target.width * target.height)
        }
        return RGBImage(width: target.width, height: target.height, pixels: decoded)
    }

    /// Warnings like "extraneous bytes before marker" leave pixels intact (Pillow accepts them); these do not.
    private static func warningSpoilsPixels(_ message: String) -> Bool {
        let lowered = message.lowercased()
        if lowered.contains("premature end") { return true }
        if lowered.contains("extraneous bytes") { return false }
        return lowered.contains("corrupt") || lowered.contains("bad huffman") || lowered.contains("invalid")
    }

    private func jpegError(name: String, stage: String, message: String? = nil) -> ImageDecodeError {
        let text = message ?? jpegMessage()
        let lowered = text.lowercased()
        if lowered.contains("premature end") || lowered.contains("empty input") || lowered.contains("insufficient") {
            return ImageDecodeError(name: name, kind: .truncated, reason: "truncated JPEG: \(text)")
        }
        return ImageDecodeError(name: name, kind: .corrupt, reason: "corrupt JPEG (\(stage)): \(text)")
    }

    /// Pillow's CMYK→RGB (`R = (255-K) - C*(255-K)/255`, same rounding); libjpeg hands back Adobe-inverted
    /// samples, so each stored value is already `255 - C`.
    private static func cmykToRGB(_ cmyk: [UInt8], pixelCount: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: pixelCount * 3) { out, count in
            cmyk.withUnsafeBufferPointer { input in
                for i in 0..<pixelCount {
                    let k = UInt32(input[4 * i + 3])
                    for c in 0..<3 {
                        let t = (255 - UInt32(input[4 * i + c])) * k + 128
                        out[3 * i + c] = UInt8(k - (((t >> 8) + t) >> 8))
                    }
                }
            }
            count = pixelCount * 3
        }
    }

    private func decodePNG(_ bytes: UnsafeRawBufferPointer, name: String) throws -> RGBImage {
        var message = [CChar](repeating: 0, count: 256)
        var width: UInt32 = 0, height: UInt32 = 0
        let headerStatus = pngshim_read_header(bytes.baseAddress, bytes.count, &width, &height, &message, message.count)
        if headerStatus != Int32(PNGSHIM_OK.rawValue) {
            throw pngError(name: name, status: headerStatus, message: message)
        }
        if Int(width) * Int(height) > pixelLimit {
            throw ImageDecodeError(
                name: name, kind: .exceedsPixelLimit,
                reason: "image \(width)x\(height) exceeds pixel limit \(pixelLimit)")
        }
        let capacity = Int(width) * Int(height) * 3
        var status: Int32 = 0
        let pixels = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            status = pngshim_decode_rgb8(bytes.baseAddress, bytes.count, UInt64(pixelLimit), buffer.baseAddress, capacity,
                                         &width, &height, &message, message.count)
            // Unread pixels are left as whatever the allocator gave: the array is discarded on failure anyway.
            count = capacity
        }
        if status != Int32(PNGSHIM_OK.rawValue) {
            throw pngError(name: name, status: status, message: message)
        }
        return RGBImage(width: Int(width), height: Int(height), pixels: pixels)
    }

    private func pngError(name: String, status: Int32, message: [CChar]) -> ImageDecodeError {
        let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
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
