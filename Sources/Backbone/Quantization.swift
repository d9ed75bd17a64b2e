import CDNNL
import Foundation

/// The activation ranges an int8 network is built from, measured by running the fp32 network over
/// calibration images. Stored as JSON beside the model (`featstream calibrate`).
///
/// Keys are the names of the tensors that feed convolutions in the engine's plan (ONNX tensor
/// names, or a name derived from one); a plan of the same model always uses the same names.
public struct Calibration: Codable, Sendable, Equatable {
    /// The observed range of one tensor over all calibration images.
    public struct Range: Codable, Sendable, Equatable {
        public var min: Float
        public var max: Float
        public init(min: Float, max: Float) {
            self.min = min
            self.max = max
        }
    }

    /// How ranges were measured: "minmax", or "percentile P" (each range clipped to the P-th percentile of
    /// its tensor's magnitudes, `clipped(atPercentile:)`).
    public var method: String
    /// The images the ranges come from, as the caller named them (dataset keys).
    public var images: [String]
    /// Range per tensor name.
    public var ranges: [String: Range]
    /// Per tensor, how many values fell into each magnitude bin (`magnitudeBin`): what a percentile clip is
    /// read from. Not stored in the file.
    var magnitudes: [String: [UInt64]] = [:]

    private enum CodingKeys: String, CodingKey { case method, images, ranges }

    /// Equal when the file would be: the same method, images and ranges (the counts are not stored).
    public static func == (a: Calibration, b: Calibration) -> Bool {
        a.method == b.method && a.images == b.images && a.ranges == b.ranges
    }

    public init(method: String = "minmax", images: [String] = [], ranges: [String: Range] = [:]) {
        self.method = method
        self.images = images
        self.ranges = ranges
    }

    /// Widens the range of `name` to include `values`, and counts their magnitudes.
    mutating func observe(_ name: String, _ values: UnsafeBufferPointer<Float>) {
        var low = ranges[name]?.min ?? .infinity, high = ranges[name]?.max ?? -.infinity
        var bins = magnitudes[name] ?? [UInt64](repeating: 0, count: Self.magnitudeBins)
        bins.withUnsafeMutableBufferPointer { bins in
            for v in values {
                low = Swift.min(low, v)
                high = Swift.max(high, v)
                let bin = Self.magnitudeBin(v)
                if bin < Self.magnitudeBins { bins[bin] += 1 }
            }
        }
        ranges[name] = Range(min: low, max: high)
        magnitudes[name] = bins
    }

    /// The percentile `featstream calibrate` and `run` clip to unless told otherwise; nil: plain min/max.
    public static let defaultClipPercentile: Double? = nil

    /// Bins of |x| by its float exponent and top 5 mantissa bits: 32 bins an octave (3% wide), exact for
    /// every finite float; infinities and NaNs fall past the last bin and are not counted.
    static let magnitudeBins = 255 << 5
    static func magnitudeBin(_ value: Float) -> Int { Int((value.bitPattern & 0x7FFF_FFFF) >> 18) }
    /// The largest magnitude bin `bin` holds (its upper edge).
    static func magnitudeBinTop(_ bin: Int) -> Float { Float(bitPattern: UInt32(bin + 1) << 18) }

    /// The ranges clipped to the `percentile`-th percentile (0–100) of each tensor's magnitudes over every
    /// calibration value: one outlier no longer sets the scale of a whole tensor, which keeps resolution
    /// for the bulk of it (the outliers saturate instead). A range already inside the clip is kept; a
    /// tensor without counted magnitudes keeps its min/max.
    public func clipped(atPercentile percentile: Double) -> Calibration {
        var result = Calibration(method: "percentile \(percentile)", images: images, ranges: ranges)
        for (name, range) in ranges {
            guard let bins = magnitudes[name] else { continue }
            let total = bins.reduce(0, +)
            guard total > 0 else { continue }
            let wanted = UInt64((Double(total) * percentile / 100).rounded(.up))
            var seen: UInt64 = 0, bin = 0
            while bin < bins.count - 1 {
                seen += bins[bin]
                if seen >= wanted { break }
                bin += 1
            }
            let clip = Self.magnitudeBinTop(bin)
            result.ranges[name] = Range(min: Swift.max(range.min, -clip), max: Swift.min(range.max, clip))
        }
        return result
    }
}

/// The numeric precision of the convolutions.
public enum Precision: String, Codable, Sendable, CaseIterable {
    /// Everything in 32-bit float.
    case fp32
    /// Convolutions on 8-bit integers (VNNI): per-output-channel symmetric s8 weights, per-tensor
    /// activation scales from a `Calibration`; everything else, and the features, stay f32.
    case int8
}

/// How one convolution input is quantised: `q = round(x / scale)`, unsigned when the calibrated range is non-negative.
struct ActivationQuantization {
    var scale: Float
    var unsigned: Bool

    init(scale: Float, unsigned: Bool) {
        self.scale = scale
        self.unsigned = unsigned
    }

    /// - Parameter signed: s8 even for a non-negative range (a destination a signed residual is added to).
    init?(_ range: Calibration.Range, signed: Bool = false) {
        let magnitude = Swift.max(abs(range.min), abs(range.max))
        guard magnitude > 0, magnitude.isFinite else { return nil }
        // After ReLU-like ops the range starts at 0: u8 gives twice the resolution of s8.
        unsigned = range.min >= 0 && !signed
        scale = magnitude / (unsigned ? 255 : 127)
    }

    /// The oneDNN element type: u8 or s8.
    var dataType: dnnl_data_type_t { unsigned ? dnnl_u8 : dnnl_s8 }
}

/// Per-output-channel symmetric s8 weights: `w ≈ q * scales[o]`.
func quantizeWeights(_ weights: [Float], outChannels: Int) -> (values: [Int8], scales: [Float]) {
    let perOut = weights.count / outChannels
    var values = [Int8](repeating: 0, count: weights.count)
    var scales = [Float](repeating: 1, count: outChannels)
    for o in 0..<outChannels {
        let row = weights[(o * perOut)..<((o + 1) * perOut)]
        let magnitude = row.reduce(0) { Swift.max($0, abs($1)) }
        guard magnitude > 0 else { continue }
        let scale = magnitude / 127
        scales[o] = scale
        for (i, w) in zip((o * perOut)..., row) {
            values[i] = Int8(Swift.max(-127, Swift.min(127, (w / scale).rounded())))
        }
    }
    return (values, scales)
}

extension PostOp {
    /// `clip(0, h)` (ReLU6 and friends): unchanged in meaning when its input is scaled.
    var isClipFromZero: Bool {
        if case .activation(.clip(low: 0, _)) = self { return true }
        return false
    }

    /// Whether `f(k·x) = k·f(x)` for every k > 0 once `rescaled(by:)` (ReLU, leaky ReLU, clip from
    /// zero, the sum): an int8 destination's scale can then be folded into the output scales.
    var commutesWithScaling: Bool {
        switch self {
        case .sum, .activation(.relu): return true
        default: return isClipFromZero
        }
    }

    /// The same post-op on values multiplied by `factor` (for an int8 destination); only post-ops
    /// that `commutesWithScaling` reach here.
    func rescaled(by factor: Float) -> PostOp {
        if case .activation(.clip(let low, let high)) = self { return .activation(.clip(low: low * factor, high: high * factor)) }
        return self
    }
}

/// The int8 storage plan: which tensors an int8 network keeps in u8/s8, decided from the plan alone.
extension CompiledNetwork {
    /// How a convolution step's input is quantised when it runs in int8; `nil` keeps it fp32 (the
    /// convolution reading the image, or an input without a calibrated range).
    static func inputQuantization(_ step: Step, graphInput: String, calibration: Calibration?) -> ActivationQuantization? {
        guard case .convolution = step.op, step.inputs[0] != graphInput else { return nil }
        return calibration?.ranges[step.inputs[0]].flatMap { ActivationQuantization($0) }
    }

    /// Whether `step` reads `name` as u8/s8 directly: as the input or residual of an int8
    /// convolution, or as the input of max/average pooling (which then writes int8 at the same scale).
    static func readsInt8(_ step: Step, _ name: String, graphInput: String, calibration: Calibration?) -> Bool {
        switch step.op {
        case .convolution(let conv):
            return inputQuantization(step, graphInput: graphInput, calibration: calibration) != nil
                && (step.inputs[0] == name || conv.sumInput == name)
        case .maxPool, .averagePool:
            return true
        default:
            return false
        }
    }

    /// The int8 storage plan: an int8 convolution writes u8/s8 when every reader of its output reads
    /// int8 (other convolutions, residual sums, pooling), so activations stay 8-bit from convolution to
    /// convolution with the requantisation in the output scales; pooling of an int8 tensor stays int8.
    /// A step that needs f32 gets a dequantising copy.
    static func int8Storage(_ plan: Plan, calibration: Calibration?) -> [String: ActivationQuantization] {
        guard let calibration else { return [:] }
        var readers: [String: [Step]] = [:]
        for step in plan.steps { for name in Set(step.inputs) { readers[name, default: []].append(step) } }
        var result: [String: ActivationQuantization] = [:]
        for step in plan.steps where !plan.outputs.contains(step.output) {
            guard let users = readers[step.output], !users.isEmpty,
                  users.allSatisfy({ readsInt8($0, step.output, graphInput: plan.input, calibration: calibration) }) else { continue }
            switch step.op {
            case .convolution:
                guard inputQuantization(step, graphInput: plan.input, calibration: calibration) != nil,
                      let range = calibration.ranges[step.output] else { continue }
                result[step.output] = ActivationQuantization(range)
            case .maxPool, .averagePool:
                if let q = result[step.inputs[0]] { result[step.output] = q }
            default:
                continue
            }
        }
        return result
    }
}
