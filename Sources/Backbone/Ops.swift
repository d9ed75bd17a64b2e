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
    case batchNorm(scale: [Float], shift: [Float], mean: [Float], variance: [Float], epsilon: Float)
    /// One or more activations applied in order.
    case activation([Activation])
    /// Elementwise add or multiply with numpy broadcasting; `constant` replaces the second input.
    case binary(BinaryKind, constant: ConstantTensor?)
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
    /// Zero padding of H and W; supported only where it folds into the convolution that follows.
    case pad(begin: [Int], end: [Int])
}

/// Elementwise binary kinds.
enum BinaryKind {
    case add, mul
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
