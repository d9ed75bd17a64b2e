/// Pass 4 of planning: rewrites that make the step list cheaper without changing its result.
///
/// - BatchNorm and per-channel `Mul`/`Add`/`Sub`/`Div` by constants after a convolution fold into
///   its weights and bias (TensorFlow exports express BatchNorm that way).
/// - `x * Sigmoid(x)` becomes Swish, `x * HardSigmoid(x)` HardSwish, `x * Tanh(Softplus(x))` Mish,
///   and `0.5 * x * (1 + Erf(x / √2))` GELU: one oneDNN eltwise algorithm each.
/// - Activations after a convolution or a binary op, and a residual Add after a convolution,
///   become post-ops; a zero Pad before a convolution becomes its padding.
extension Plan {
    static func fuse(_ input: [Step], shapes: [String: [Int]], outputs: [String]) -> [Step] {
        var steps = input
        func uses(_ name: String) -> Int {
            steps.reduce(0) { $0 + $1.inputs.filter { $0 == name }.count } + (outputs.contains(name) ? 1 : 0)
        }
        func producer(_ name: String) -> Int? { steps.firstIndex(where: { $0.output == name }) }
        /// The position of the convolution producing `name`, if nothing else reads its result.
        func soleConvolution(_ name: String) -> (Int, Convolution)? {
            guard uses(name) == 1, let source = producer(name), case .convolution(let conv) = steps[source].op else { return nil }
            return (source, conv)
        }
        /// The activation chain producing `name` from some other tensor, if nothing else reads `name`.
        func soleActivation(_ name: String) -> (index: Int, activations: [Activation], input: String)? {
            guard uses(name) == 1, let source = producer(name), case .activation(let list) = steps[source].op else { return nil }
            return (source, list, steps[source].inputs[0])
        }
        /// `name = x * c` or `x + c` with a scalar constant `c`, if nothing else reads `name`.
        func soleScalar(_ name: String, _ kind: BinaryKind) -> (index: Int, value: Float, input: String)? {
            guard uses(name) == 1, let source = producer(name),
                  case let .binary(k, c?, false, post) = steps[source].op, k == kind, post.isEmpty, c.count == 1 else { return nil }
            return (source, c.floats[0], steps[source].inputs[0])
        }
        /// Removes the steps at `indices` and returns how many of them were before `index`.
        func remove(_ indices: [Int], before index: Int) -> Int {
            for i in indices.sorted(by: >) { steps.remove(at: i) }
            return indices.filter { $0 < index }.count
        }

        var index = 0
        while index < steps.count {
            if case .binary(.mul, _, false, []) = steps[index].op, let gelu = matchGELU(at: index) {
                steps[index].op = .activation([.geluErf])
                steps[index].inputs = [gelu.input]
                index -= remove(gelu.removed, before: index)
                continue
            }
            let step = steps[index]
            var fused: (source: Int, conv: Convolution)?
            switch step.op {
            case let .batchNorm(scale, shift, mean, variance, epsilon, false):
                if case (let source, var conv)? = soleConvolution(step.inputs[0]), conv.postOps.isEmpty {
                    let factors = (0..<conv.outChannels).map { scale[$0] / (variance[$0] + epsilon).squareRoot() }
                    let offsets = (0..<conv.outChannels).map { shift[$0] - mean[$0] * factors[$0] }
                    conv.scale(by: factors, then: offsets)
                    fused = (source, conv)
                }

            case let .binary(kind, c?, constantFirst, post) where post.isEmpty:
                let channels = shapes[step.output]!.count == 4 ? shapes[step.output]![1] : -1
                guard let perChannel = c.perChannel(channels),
                      case (let source, var conv)? = soleConvolution(step.inputs[0]), conv.postOps.isEmpty else { break }
                let ones = [Float](repeating: 1, count: channels), zeros = [Float](repeating: 0, count: channels)
                switch (kind, constantFirst) {
                case (.mul, _): conv.scale(by: perChannel, then: zeros)
                case (.add, _): conv.scale(by: ones, then: perChannel)
                case (.sub, false): conv.scale(by: ones, then: perChannel.map { -$0 })
                case (.sub, true): conv.scale(by: ones.map { -$0 }, then: perChannel)
                default: break
                }
                if [.mul, .add, .sub].contains(kind) { fused = (source, conv) }

            case .binary(.mul, nil, _, let post) where post.isEmpty:
                // x * f(x), where f(x) is read only here: one eltwise algorithm.
                var replaced: (x: String, activation: Activation, removed: [Int])?
                for (operand, other) in [(0, 1), (1, 0)] where replaced == nil {
                    let x = step.inputs[other]
                    guard let f = soleActivation(step.inputs[operand]) else { continue }
                    if f.input == x, f.activations == [.sigmoid] {
                        replaced = (x, .swish(alpha: 1), [f.index])
                    } else if f.input == x, f.activations.count == 2, case let .linear(alpha, beta) = f.activations[0],
                              f.activations[1] == .clip(low: 0, high: 1), abs(alpha - 1.0 / 6) < 1e-6, beta == 0.5 {
                        replaced = (x, .hardSwish, [f.index])
                    } else if f.activations == [.tanh], let g = soleActivation(f.input), g.activations == [.softplus], g.input == x {
                        replaced = (x, .mish, [f.index, g.index])
                    }
                }
                if let replaced {
                    steps[index].op = .activation([replaced.activation])
                    steps[index].inputs = [replaced.x]
                    index -= remove(replaced.removed, before: index)
                    continue
                }

            case .activation(let activations) where !activations.contains(.erf):
                if case (let source, var conv)? = soleConvolution(step.inputs[0]) {
                    conv.postOps += activations.map(PostOp.activation)
                    fused = (source, conv)
                } else if uses(step.inputs[0]) == 1, let source = producer(step.inputs[0]),
                          case let .binary(kind, c, first, post) = steps[source].op {
                    steps[source].op = .binary(kind, constant: c, constantFirst: first, post: post + activations)
                    steps[source].output = step.output
                    steps.remove(at: index)
                    index = source
                    continue
                } else if activations == [.relu(negativeSlope: 0)], uses(step.inputs[0]) == 1, let source = producer(step.inputs[0]),
                          case let .batchNorm(scale, shift, mean, variance, epsilon, false) = steps[source].op {
                    // oneDNN's batch normalization applies a ReLU in the same pass (fuse_norm_relu).
                    steps[source].op = .batchNorm(scale: scale, shift: shift, mean: mean, variance: variance, epsilon: epsilon, relu: true)
                    steps[source].output = step.output
                    steps.remove(at: index)
                    index = source
                    continue
                }

            case .binary(.add, nil, _, let post) where post.isEmpty && shapes[step.inputs[0]] == shapes[step.inputs[1]]:
                for (operand, other) in [(0, 1), (1, 0)] {
                    if case (let source, var conv)? = soleConvolution(step.inputs[operand]), conv.sumInput == nil {
                        conv.postOps.append(.sum)
                        conv.sumInput = step.inputs[other]
                        fused = (source, conv)
                        break
                    }
                }

            case let .pad(begin, end, .constant, 0) where begin.count == 4 && begin[0] == 0 && begin[1] == 0 && end[0] == 0 && end[1] == 0:
                // A zero Pad before a convolution is just more convolution padding.
                if uses(step.output) == 1, let consumer = steps.firstIndex(where: { $0.inputs.first == step.output }),
                   case .convolution(var conv) = steps[consumer].op {
                    for d in 0..<2 {
                        conv.padsBegin[d] += begin[2 + d]
                        conv.padsEnd[d] += end[2 + d]
                    }
                    steps[consumer].op = .convolution(conv)
                    steps[consumer].inputs[0] = step.inputs[0]
                    steps.remove(at: index)
                    continue
                }
            default:
                break
            }
            guard let (source, conv) = fused else {
                index += 1
                continue
            }
            // The convolution moves to where its consumer was, so that a residual input computed
            // after the convolution (in file order) is ready when the fused step runs.
            var merged = steps[source]
            merged.op = .convolution(conv)
            merged.output = step.output
            if let extra = conv.sumInput, !merged.inputs.contains(extra) { merged.inputs.append(extra) }
            steps[index] = merged
            steps.remove(at: source)
            index = source
        }
        return steps

        /// Matches the Erf form of GELU ending at the Mul at `end`; returns its input and the steps it replaces.
        func matchGELU(at end: Int) -> (input: String, removed: [Int])? {
            let step = steps[end]
            // Form A: (x * (1 + erf(x/√2))) * 0.5 — the final step is a scalar Mul by 0.5.
            if case let .binary(.mul, c?, _, []) = step.op, c.count == 1, abs(c.floats[0] - 0.5) < 1e-6,
               uses(step.inputs[0]) == 1, let m = producer(step.inputs[0]), case .binary(.mul, nil, _, []) = steps[m].op,
               let (x, chain) = erfChain(steps[m].inputs) {
                return (x, [m] + chain)
            }
            // Form B: (x * 0.5) * (1 + erf(x/√2)).
            if case .binary(.mul, nil, _, []) = step.op {
                for (a, b) in [(0, 1), (1, 0)] {
                    if let half = soleScalar(step.inputs[a], .mul), abs(half.value - 0.5) < 1e-6,
                       let (x, chain) = erfChain([half.input, step.inputs[b]]) {
                        return (x, [half.index] + chain)
                    }
                }
            }
            return nil
        }
        /// Given the two operands of a Mul, finds `x` and `1 + erf(x * 1/√2)` among them.
        func erfChain(_ operands: [String]) -> (String, [Int])? {
            for (a, b) in [(0, 1), (1, 0)] {
                let x = operands[a]
                guard let plus = soleScalar(operands[b], .add), abs(plus.value - 1) < 1e-6,
                      let erf = soleActivation(plus.input), erf.activations == [.erf],
                      let scaled = soleScalar(erf.input, .mul), abs(scaled.value - 0.70710678) < 1e-5, scaled.input == x else { continue }
                return (x, [plus.index, erf.index, scaled.index])
            }
            return nil
        }
    }
}

extension Convolution {
    /// Folds `y * factors[o] + offsets[o]` per output channel into the weights and bias.
    mutating func scale(by factors: [Float], then offsets: [Float]) {
        let perOut = weights.count / outChannels
        for o in 0..<outChannels {
            for i in 0..<perOut { weights[o * perOut + i] *= factors[o] }
            bias[o] = bias[o] * factors[o] + offsets[o]
        }
    }
}

extension ConstantTensor {
    /// The values per channel of an NCHW tensor with `channels` channels, if this constant is a
    /// scalar or broadcasts only along the channel axis ([C,1,1], [1,C,1,1]).
    func perChannel(_ channels: Int) -> [Float]? {
        guard channels > 0, shape.count <= 4 else { return nil }
        if count == 1 { return [Float](repeating: floats[0], count: channels) }
        let padded = [Int](repeating: 1, count: 4 - shape.count) + shape
        guard padded == [1, channels, 1, 1] else { return nil }
        return floats
    }
}
