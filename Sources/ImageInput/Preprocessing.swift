/// Resampling kernel used when resizing; both match Pillow's definitions so results agree with PIL-trained models.
public enum ResizeFilter: String, Codable, Sendable {
    /// Triangle kernel with support 1 (Pillow `BILINEAR`).
    case bilinear
    /// Keys cubic kernel with a = -0.5 and support 2 (Pillow `BICUBIC`).
    case bicubic
}

/// How an image is brought down to the model's size.
public enum ResizeMode: String, Codable, Sendable, CaseIterable {
    /// Scale while decoding where the format allows (JPEG DCT scaling as Pillow's `draft`, WebP's decoder
    /// scaling), then resize: much cheaper on big photos, slightly different pixels.
    case fast
    /// Full decode, then the antialiased resize alone (torchvision's `Resize` on a PIL image): the pixels a
    /// torchvision pipeline feeds the network.
    case exact
}

/// Channel order the model expects in its input tensor.
public enum ColorOrder: String, Codable, Sendable {
    /// Red, green, blue.
    case rgb = "RGB"
    /// Blue, green, red (Caffe-era models).
    case bgr = "BGR"
}

/// Memory layout of one batch tensor.
public enum TensorLayout: String, Codable, Sendable {
    /// `[B, C, H, W]`.
    case nchw = "NCHW"
    /// `[B, H, W, C]`.
    case nhwc = "NHWC"
}

/// The `preprocess` section of a model config: torchvision-style `Resize(int)` → `CenterCrop` → normalise.
///
/// `mean` and `std` are in 0…255 pixel units and indexed in *output* colour order,
/// so the value written for channel `c` is `(x - mean[c]) / std[c]`.
public struct Preprocessing: Codable, Sendable, Equatable {
    /// Target length of the shorter image side after resizing.
    public var resizeShorterSide: Int
    /// Side of the square centre crop taken after resizing.
    public var crop: Int
    /// Resampling kernel.
    public var filter: ResizeFilter
    /// Channel order of the output tensor.
    public var colorOrder: ColorOrder
    /// Per-channel mean, pixel units, output order.
    public var mean: [Float]
    /// Per-channel standard deviation, pixel units, output order.
    public var std: [Float]
    /// Fast (scale while decoding) or exact (full decode) resizing; `exact` when omitted.
    public var resize: ResizeMode
    /// Turn images upright by their EXIF Orientation tag first; off when omitted, like torchvision.
    public var exifOrientation: Bool

    /// Builds a config; defaults follow the common ImageNet recipe expressed in pixel units.
    public init(
        resizeShorterSide: Int = 256,
        crop: Int = 224,
        filter: ResizeFilter = .bilinear,
        colorOrder: ColorOrder = .rgb,
        mean: [Float] = [123.675, 116.28, 103.53],
        std: [Float] = [58.395, 57.12, 57.375],
        resize: ResizeMode = Preprocessing.defaultResize,
        exifOrientation: Bool = false
    ) {
        self.resizeShorterSide = resizeShorterSide
        self.crop = crop
        self.filter = filter
        self.colorOrder = colorOrder
        self.mean = mean
        self.std = std
        self.resize = resize
        self.exifOrientation = exifOrientation
    }

    /// The resize mode when a config names none (see README "Fast or exact resize" for the measurements).
    public static let defaultResize = ResizeMode.exact

    private enum CodingKeys: String, CodingKey {
        case resizeShorterSide, crop, filter, colorOrder, mean, std, resize, exifOrientation
    }

    /// Decodes the JSON fragment; `filter` may be omitted (bilinear is the torchvision default), as may
    /// `resize` (`defaultResize`) and `exifOrientation` (false).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        resizeShorterSide = try container.decode(Int.self, forKey: .resizeShorterSide)
        crop = try container.decode(Int.self, forKey: .crop)
        filter = try container.decodeIfPresent(ResizeFilter.self, forKey: .filter) ?? .bilinear
        colorOrder = try container.decode(ColorOrder.self, forKey: .colorOrder)
        mean = try container.decode([Float].self, forKey: .mean)
        std = try container.decode([Float].self, forKey: .std)
        resize = try container.decodeIfPresent(ResizeMode.self, forKey: .resize) ?? Self.defaultResize
        exifOrientation = try container.decodeIfPresent(Bool.self, forKey: .exifOrientation) ?? false
    }

    /// One line for exported models' notes, so a deployment can reproduce the inputs the head was trained on,
    /// e.g. `RGB, resize 256 exact (full decode, antialiased bilinear), crop 224, mean [127.0, 127.0, 127.0], std [...],
    /// EXIF orientation ignored`.
    public var summary: String {
        let how = resize == .exact ? "exact (full decode, antialiased \(filter.rawValue))"
                                   : "fast (JPEG/WebP scaled while decoding, then antialiased \(filter.rawValue))"
        return "\(colorOrder.rawValue), resize \(resizeShorterSide) \(how), crop \(crop), mean \(mean), std \(std), "
            + "EXIF orientation \(exifOrientation ? "applied" : "ignored")"
    }

    /// Number of floats one image occupies in a batch tensor (`3 * crop * crop`).
    public var valuesPerImage: Int { 3 * crop * crop }

    /// Throws a `PreprocessingError` describing the first inconsistency, so bad configs fail before any image is read.
    public func validate() throws {
        guard resizeShorterSide > 0 else {
            throw PreprocessingError(reason: "resizeShorterSide must be positive, got \(resizeShorterSide)")
        }
        guard crop > 0, crop <= resizeShorterSide else {
            throw PreprocessingError(reason: "crop must be in 1...resizeShorterSide (\(resizeShorterSide)), got \(crop)")
        }
        guard mean.count == 3, std.count == 3 else {
            throw PreprocessingError(reason: "mean and std need 3 values each, got \(mean.count) and \(std.count)")
        }
        guard std.allSatisfy({ $0 != 0 && $0.isFinite }), mean.allSatisfy(\.isFinite) else {
            throw PreprocessingError(reason: "std must be finite and non-zero, mean finite")
        }
    }
}

/// A preprocessing config that cannot be applied.
public struct PreprocessingError: Error, CustomStringConvertible, Sendable {
    /// Human-readable explanation.
    public let reason: String
    /// Same as `reason`, so logs show the explanation rather than a type dump.
    public var description: String { reason }
}
