/// The engine's op set: what every supported ONNX operator becomes before lowering.
///
/// It is deliberately small. Each case is lowered to oneDNN in exactly one place (`Lowering.swift`),
/// and every ONNX operator the engine accepts is translated into these cases in `Planner.swift`.

/// An elementwise function that oneDNN can run alone or fuse after a convolution.
enum Activation: Equatable {
    case relu(negativeSlope: Float)
    case clip(low: Float, high: Float)
    case sigmoid
    case hardSwish
    /// `alpha * x + beta`; with a following clip it forms HardSigmoid.
    case linear(alpha: Float, beta: Float)
    case tanh
    /// `x * sigmoid(alpha * x)`: Swish/SiLU, recognised from `x * Sigmoid(x)`.
    case swish(alpha: Float)
    case geluErf
    case geluTanh
    /// `x * tanh(softplus(x))`.
    case mish
    /// `log(1 + exp(x))`.
    case softplus
    case elu(alpha: Float)
    case exp
    case sqrt
    case abs
    /// `x²`, from `Pow(x, 2)`.
    case square
    /// `erf(x)`: no oneDNN kernel of its own; only runs as part of a GELU that `fuse` recognises.
    case erf
}

/// What a convolution does to its result before writing it, in order.
enum PostOp: Equatable {
    case activation(Activation)
    /// Adds the tensor already in the destination buffer (a residual connection).
    case sum
}

/// A 2-D convolution with its weights already folded (BatchNorm, Pad) and its epilogue attached.
struct Convolution {
    /// `[outChannels, inChannels / groups, kernelH, kernelW]`, row-major.
    var weights: [Float]
    var weightShape: [Int]
    var bias: [Float]
    var strides: [Int]
    /// oneDNN counts dilation from zero; this is ONNX's count (1 = dense).
    var dilations: [Int]
    var padsBegin: [Int]
    var padsEnd: [Int]
    var groups: Int
    var postOps: [PostOp] = []
    /// The input that `PostOp.sum` adds, when a residual Add was fused in.
    var sumInput: String?

    var outChannels: Int { weightShape[0] }
    var kernel: [Int] { Array(weightShape[2...]) }
}

/// A max or average pooling window.
struct Pooling {
    var kernel: [Int]
    var strides: [Int]
    var padsBegin: [Int]
    var padsEnd: [Int]
    var dilations: [Int]
}

/// The typed op, after ONNX attributes are decoded and constants are folded in.
enum Op {
    case convolution(Convolution)
    /// Inference BatchNorm that could not be folded into a convolution.
    /// `relu`: a ReLU after it runs inside the same pass (DenseNet's BN → ReLU before each convolution).
    case batchNorm(scale: [Float], shift: [Float], mean: [Float], variance: [Float], epsilon: Float, relu: Bool = false)
    /// One or more activations applied in order.
    case activation([Activation])
    /// Elementwise arithmetic with numpy broadcasting; `constant` replaces the second input, or the
    /// first when `constantFirst` (as in `1 - x`). Activations run fused after it.
    case binary(BinaryKind, constant: ConstantTensor?, constantFirst: Bool, post: [Activation])
    case maxPool(Pooling)
    case averagePool(Pooling, countIncludePad: Bool)
    /// `[N, C, H, W] -> [N, C, 1, 1]`.
    case globalAveragePool
    /// A new shape for the same elements in row-major order.
    case reshape([Int])
    /// `output.dims[i] = input.dims[permutation[i]]`.
    case transpose([Int])
    /// `y = x · Wᵀ + b` on `[N, K]`, with `weights` as `[M, K]`.
    case innerProduct(weights: [Float], bias: [Float], outFeatures: Int)
    case concat(axis: Int)
    /// Padding of any dims by `begin`/`end` amounts; zero padding of H and W folds into the next Conv.
    case pad(begin: [Int], end: [Int], mode: PadMode, value: Float)
    /// Softmax over one axis.
    case softmax(axis: Int)
    /// LayerNormalization over the last axis, with per-channel scale and shift.
    case layerNorm(scale: [Float], shift: [Float], epsilon: Float)
    /// Mean, max or sum over `axes` (kept as size-1 dims; a following reshape drops them).
    case reduce(ReduceKind, axes: [Int])
    /// `x` for x ≥ 0, `slope[c] * x` otherwise; `slope` broadcasts like a binary constant.
    case prelu(slope: ConstantTensor)
    /// The elements `start..<end` of `axis` (a Split output or a Slice of a computed tensor).
    case slice(axis: Int, start: Int, end: Int)
    /// Nearest or linear resampling of H and W to `shape`.
    case resize(linear: Bool, shape: [Int])
}

/// How Pad fills the border.
enum PadMode: Equatable {
    case constant, reflect, edge
}

enum ReduceKind: Equatable {
    case mean, max, sum
}

/// Elementwise binary kinds.
enum BinaryKind: Equatable {
    case add, mul, sub, div, max, min

    /// Whether swapping the operands leaves the result unchanged.
    var commutes: Bool { self == .add || self == .mul || self == .max || self == .min }
}

/// One op applied to named tensors, producing one named tensor.
struct Step {
    var op: Op
    var inputs: [String]
    var output: String
    /// The ONNX node it came from, for error messages.
    var node: String
    var opType: String
}

extension Step {
    /// How diagnostics name this step: its op type and ONNX node.
    var label: String { "\(opType) '\(node)'" }
}
