import Foundation

/// Per-output-pixel filter taps for one axis, restricted to the outputs that survive the crop.
///
/// Built exactly like Pillow's `precompute_coeffs` (support widened by the downscale factor, taps normalised
/// to sum to 1) but kept in `Float` without Pillow's 8-bit intermediate rounding.
struct FilterTable: Sendable {
    /// First input index contributing to each kept output.
    let first: [Int32]
    /// Number of contributing inputs for each kept output.
    let count: [Int32]
    /// `taps` weights per kept output, zero-padded.
    let weights: [Float]
    /// Row stride of `weights`.
    let taps: Int

    init(inputSize: Int, outputSize: Int, keep: Range<Int>, filter: ResizeFilter) {
        if inputSize == outputSize {
            // Pillow skips the pass entirely here; a single unit tap is the same thing.
            first = keep.map { Int32($0) }
            count = Array(repeating: 1, count: keep.count)
            weights = Array(repeating: 1, count: keep.count)
            taps = 1
            return
        }
        let baseSupport: Double = filter == .bilinear ? 1 : 2
        let scale = Double(inputSize) / Double(outputSize)
        let filterScale = max(scale, 1)
        let support = baseSupport * filterScale
        let taps = Int(support.rounded(.up)) * 2 + 1
        var first = [Int32](), count = [Int32]()
        first.reserveCapacity(keep.count)
        count.reserveCapacity(keep.count)
        var weights = [Float](repeating: 0, count: keep.count * taps)
        var raw = [Double](repeating: 0, count: taps)
        for (slot, out) in keep.enumerated() {
            let center = (Double(out) + 0.5) * scale
            // Truncation toward zero mirrors Pillow's C `(int)` casts.
            let lo = max(Int(center - support + 0.5), 0)
            let hi = min(Int(center + support + 0.5), inputSize)
            let n = min(hi - lo, taps)
            var total = 0.0
            for k in 0..<n {
                let w = Self.kernel(filter, (Double(k + lo) - center + 0.5) / filterScale)
                raw[k] = w
                total += w
            }
            for k in 0..<n {
                weights[slot * taps + k] = Float(total != 0 ? raw[k] / total : raw[k])
            }
            first.append(Int32(lo))
            count.append(Int32(n))
        }
        self.first = first
        self.count = count
        self.weights = weights
        self.taps = taps
    }

    private static func kernel(_ filter: ResizeFilter, _ x: Double) -> Double {
        let x = abs(x)
        switch filter {
        case .bilinear:
            return x < 1 ? 1 - x : 0
        case .bicubic:
            let a = -0.5
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        }
    }
}

/// Shares filter tables between images of the same size; datasets repeat a handful of sizes, so this pays off.
final class FilterTableCache: @unchecked Sendable {
    private struct Key: Hashable {
        let inputSize: Int, outputSize: Int, keepStart: Int, keepCount: Int, filter: ResizeFilter
    }

    private let lock = NSLock()
    private var tables: [Key: FilterTable] = [:]
    /// Bounds memory on datasets with thousands of distinct sizes; a full reset is cheap next to decoding.
    private let capacity = 4096

    func table(inputSize: Int, outputSize: Int, keep: Range<Int>, filter: ResizeFilter) -> FilterTable {
        let key = Key(inputSize: inputSize, outputSize: outputSize, keepStart: keep.lowerBound,
                      keepCount: keep.count, filter: filter)
        lock.lock()
        if let hit = tables[key] {
            lock.unlock()
            return hit
        }
        lock.unlock()
        let built = FilterTable(inputSize: inputSize, outputSize: outputSize, keep: keep, filter: filter)
        lock.lock()
        if tables.count >= capacity { tables.removeAll(keepingCapacity: true) }
        tables[key] = built
        lock.unlock()
        return built
    }

    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return tables.count
    }
}

/// Applies a `Preprocessing` config — resize shorter side, centre crop, colour order, normalise — writing
/// straight into a caller-owned batch tensor. Safe to share between threads; filter tables are cached inside.
public final class ImagePreprocessor: Sendable {
    /// The config being applied (already validated).
    public let config: Preprocessing
    private let tables = FilterTableCache()
    private let scale: [Float]
    private let bias: [Float]

    /// Validates `config` and precomputes the normalisation as a multiply-add.
    public init(_ config: Preprocessing) throws {
        try config.validate()
        self.config = config
        scale = config.std.map { 1 / $0 }
        bias = zip(config.mean, config.std).map { -$0 / $1 }
    }

    /// Size after torchvision `Resize(int)`: the shorter side becomes `resizeShorterSide`, the longer side is
    /// `int(size * long / short)` (truncated, as torchvision does).
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        let size = config.resizeShorterSide
        if width <= height {
            return (size, Int(Double(size * height) / Double(width)))
        }
        return (Int(Double(size * width) / Double(height)), size)
    }

    /// Top-left corner of torchvision's `CenterCrop` on the resized image (Python's round-half-to-even included).
    public func cropOrigin(resizedWidth: Int, resizedHeight: Int) -> (x: Int, y: Int) {
        let c = config.crop
        let x = (Double(resizedWidth - c) / 2).rounded(.toNearestOrEven)
        let y = (Double(resizedHeight - c) / 2).rounded(.toNearestOrEven)
        return (Int(x), Int(y))
    }

    /// Number of distinct filter tables held; exposed so callers can see the cache working.
    public var cachedFilterTables: Int { tables.count }

    /// Decodes `bytes` as the config says (fast or exact resize, EXIF orientation or not) and writes the result
    /// into batch slot `slot`. Rows stream from the decoder into the resampler, so a big PNG or TIFF costs a few
    /// rows of memory; only an EXIF rotation needs the (scaled) picture whole.
    public func decode(_ bytes: UnsafeRawBufferPointer, name: String, with decoder: ImageDecoder,
                       into batch: UnsafeMutablePointer<Float>, slot: Int, layout: TensorLayout) throws {
        let shorterSide = config.resize == .fast ? config.resizeShorterSide : nil
        let orientation = config.exifOrientation ? ExifOrientation.read(bytes) : 1
        if orientation != 1 {
            let image = try decoder.decode(bytes, name: name, shorterSideAtLeast: shorterSide).oriented(orientation)
            write(image, into: batch, slot: slot, layout: layout)
            return
        }
        try decoder.withRows(bytes, name: name, shorterSideAtLeast: shorterSide) { rows in
            try resample(rows, into: batch, slot: slot, layout: layout)
        }
    }

    /// Resizes, crops and normalises `image` into slot `slot` of a `[B,3,crop,crop]` (NCHW) or
    /// `[B,crop,crop,3]` (NHWC) float tensor. Only the rows and columns that survive the crop are computed.
    public func write(_ image: RGBImage, into batch: UnsafeMutablePointer<Float>, slot: Int, layout: TensorLayout) {
        // A whole image feeds its rows in one band and cannot fail.
        try! resample(WholeImageRows(image), into: batch, slot: slot, layout: layout)
    }

    /// `write` for rows arriving band by band: each input row is filtered horizontally once, then added into
    /// the output rows whose vertical taps cover it, so memory is one crop of floats plus one row whatever the
    /// input size. The arithmetic (and its order) is that of a horizontal pass over every needed row followed
    /// by a vertical pass, so results do not depend on how the rows are banded. Rows below the last one the
    /// crop needs are never decoded.
    public func resample(_ rows: any ImageRows, into batch: UnsafeMutablePointer<Float>, slot: Int,
                         layout: TensorLayout) throws {
        let c = config.crop
        let width = rows.width, height = rows.height
        let resized = resizedSize(width: width, height: height)
        let origin = cropOrigin(resizedWidth: resized.width, resizedHeight: resized.height)
        let horizontal = tables.table(inputSize: width, outputSize: resized.width,
                                      keep: origin.x..<(origin.x + c), filter: config.filter)
        let vertical = tables.table(inputSize: height, outputSize: resized.height,
                                    keep: origin.y..<(origin.y + c), filter: config.filter)
        let rowStart = Int(vertical.first[0])
        var rowEnd = rowStart
        for i in 0..<c { rowEnd = max(rowEnd, Int(vertical.first[i] + vertical.count[i])) }
        let clamps = config.filter == .bicubic
        let rowFloats = c * 3

        // Output rows (c of them, rowFloats each), then one horizontally filtered input row.
        let accumulators = UnsafeMutablePointer<Float>.allocate(capacity: c * rowFloats + rowFloats)
        defer { accumulators.deallocate() }
        accumulators.initialize(repeating: 0, count: c * rowFloats)
        let filtered = accumulators + c * rowFloats

        var inputRow = 0       // index of the next row the decoder hands over
        var firstOpen = 0      // first output row whose taps may still include inputRow
        try horizontal.first.withUnsafeBufferPointer { hFirst in
        try horizontal.count.withUnsafeBufferPointer { hCount in
        try horizontal.weights.withUnsafeBufferPointer { hWeights in
        try vertical.first.withUnsafeBufferPointer { vFirst in
        try vertical.count.withUnsafeBufferPointer { vCount in
        try vertical.weights.withUnsafeBufferPointer { vWeights in
            try rows.feed { band, bandCount in
                for b in 0..<bandCount {
                    let r = inputRow + b
                    if r < rowStart { continue }
                    if r >= rowEnd { break }
                    let srcRow = band + b * width * 3
                    let hTaps = horizontal.taps
                    for x in 0..<c {
                        let w = hWeights.baseAddress! + x * hTaps
                        var p = srcRow + Int(hFirst[x]) * 3
                        var s0: Float = 0, s1: Float = 0, s2: Float = 0
                        for k in 0..<Int(hCount[x]) {
                            let wk = w[k]
                            s0 += wk * Float(p[0])
                            s1 += wk * Float(p[1])
                            s2 += wk * Float(p[2])
                            p += 3
                        }
                        if clamps {
                            s0 = min(max(s0, 0), 255); s1 = min(max(s1, 0), 255); s2 = min(max(s2, 0), 255)
                        }
                        filtered[3 * x] = s0
                        filtered[3 * x + 1] = s1
                        filtered[3 * x + 2] = s2
                    }
                    while firstOpen < c && Int(vFirst[firstOpen] + vCount[firstOpen]) <= r { firstOpen += 1 }
                    var y = firstOpen
                    while y < c && Int(vFirst[y]) <= r {
                        let wk = vWeights[y * vertical.taps + (r - Int(vFirst[y]))]
                        let out = accumulators + y * rowFloats
                        for i in 0..<rowFloats { out[i] += wk * filtered[i] }
                        y += 1
                    }
                }
                inputRow += bandCount
                return inputRow < rowEnd
            }
        }
        }
        }
        }
        }
        }

        let channelSource: (Int, Int, Int) = config.colorOrder == .rgb ? (0, 1, 2) : (2, 1, 0)
        let sources = [channelSource.0, channelSource.1, channelSource.2]
        let plane = c * c
        let out = batch + slot * 3 * plane
        for y in 0..<c {
            let accumulator = accumulators + y * rowFloats
            if clamps {
                for i in 0..<rowFloats { accumulator[i] = min(max(accumulator[i], 0), 255) }
            }
            switch layout {
            case .nchw:
                for ch in 0..<3 {
                    let sc = scale[ch], bi = bias[ch], from = sources[ch]
                    let dst = out + ch * plane + y * c
                    for x in 0..<c { dst[x] = accumulator[3 * x + from] * sc + bi }
                }
            case .nhwc:
                let dst = out + y * rowFloats
                let s0 = scale[0], s1 = scale[1], s2 = scale[2]
                let b0 = bias[0], b1 = bias[1], b2 = bias[2]
                let f0 = sources[0], f1 = sources[1], f2 = sources[2]
                for x in 0..<c {
                    let px = accumulator + 3 * x
                    dst[3 * x] = px[f0] * s0 + b0
                    dst[3 * x + 1] = px[f1] * s1 + b1
                    dst[3 * x + 2] = px[f2] * s2 + b2
                }
            }
        }
    }
}
