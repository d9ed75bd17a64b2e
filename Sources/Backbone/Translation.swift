/// Pass 3 of planning: each ONNX node becomes one or more typed steps.
///
/// Constants (weights, folded shape values) are read from the plan's constant table; an operand
/// that is neither constant nor computed from the input is an error naming the node.
extension Plan {
    static func translate(_ node: GraphNode, inputs: [String], constants: [String: ConstantTensor],
                          shapes: [String: [Int]], opset: Int) throws -> [Step] {
        func unsupported(_ detail: String = "") -> BackboneError {
            .unsupportedOp(op: node.opType, node: node.label, detail: detail)
        }
        func constant(_ index: Int) -> ConstantTensor? {
            index < inputs.count && !inputs[index].isEmpty ? constants[inputs[index]] : nil
        }
        func shape(_ index: Int) throws -> [Int] {
            guard index < inputs.count, let shape = shapes[inputs[index]] else {
                throw unsupported("input '\(index < inputs.count ? inputs[index] : "?")' must be computed from the graph input")
            }
            return shape
        }
        let computed = inputs.filter { !$0.isEmpty && constants[$0] == nil }
        func step(_ op: Op, _ stepInputs: [String]? = nil, output: String? = nil) -> Step {
            Step(op: op, inputs: stepInputs ?? computed, output: output ?? node.outputs[0], node: node.label, opType: node.opType)
        }
        func activation(_ activations: Activation...) -> [Step] { [step(.activation(activations), [inputs[0]])] }
        func axis(_ value: Int, rank: Int) -> Int { value < 0 ? value + rank : value }
        if node.outputs.count > 1, node.opType != "Split", node.outputs.dropFirst().contains(where: { !$0.isEmpty }) {
            throw unsupported("only the first output is supported")
        }

        switch node.opType {
        case "Conv":
            let x = try shape(0)
            guard x.count == 4 else { throw unsupported("only 2-D convolution (4-D tensors) is supported") }
            guard let w = constant(1), w.shape.count == 4, !w.floats.isEmpty else {
                throw unsupported("weights must be a float constant [O, I/g, kH, kW]")
            }
            let groups = node.int("group") ?? 1
            guard x[1] == w.shape[1] * groups, w.shape[0] % groups == 0 else {
                throw BackboneError.invalidGraph("node '\(node.label)': \(x[1]) input channels do not fit weights \(w.shape) with \(groups) groups")
            }
            let kernel = Array(w.shape[2...])
            let strides = node.ints("strides") ?? [1, 1]
            let dilations = node.ints("dilations") ?? [1, 1]
            let (begin, end) = try pads(node, input: Array(x[2...]), kernel: kernel, strides: strides, dilations: dilations)
            let bias = constant(2)?.floats ?? [Float](repeating: 0, count: w.shape[0])
            return [step(.convolution(Convolution(
                weights: w.floats, weightShape: w.shape, bias: bias, strides: strides, dilations: dilations,
                padsBegin: begin, padsEnd: end, groups: groups)), [inputs[0]])]

        case "BatchNormalization":
            guard let scale = constant(1), let shift = constant(2), let mean = constant(3), let variance = constant(4) else {
                throw unsupported("scale, bias, mean and variance must be constants")
            }
            let x = try shape(0)
            guard x.count >= 2, scale.count == x[1] else { throw unsupported("scale must have one value per channel") }
            if x.count != 4 {
                // oneDNN's batch norm wants 4-D; [N, C] and [N, C, L] become [N, C, L, 1] around it.
                let dims = [x[0], x[1], x.dropFirst(2).reduce(1, *), 1]
                let inner = node.outputs[0] + "#bn4d", normed = node.outputs[0] + "#bn"
                return [step(.reshape(dims), [inputs[0]], output: inner),
                        step(.batchNorm(scale: scale.asFloats, shift: shift.asFloats, mean: mean.asFloats, variance: variance.asFloats,
                                        epsilon: node.float("epsilon") ?? 1e-5), [inner], output: normed),
                        step(.reshape(x), [normed])]
            }
            return [step(.batchNorm(scale: scale.asFloats, shift: shift.asFloats, mean: mean.asFloats,
                                    variance: variance.asFloats, epsilon: node.float("epsilon") ?? 1e-5), [inputs[0]])]

        case "Relu": return activation(.relu(negativeSlope: 0))
        case "LeakyRelu": return activation(.relu(negativeSlope: node.float("alpha") ?? 0.01))
        case "Sigmoid": return activation(.sigmoid)
        case "Tanh": return activation(.tanh)
        case "HardSwish": return activation(.hardSwish)
        case "HardSigmoid":
            return activation(.linear(alpha: node.float("alpha") ?? 0.2, beta: node.float("beta") ?? 0.5), .clip(low: 0, high: 1))
        case "Elu": return activation(.elu(alpha: node.float("alpha") ?? 1))
        case "Softplus": return activation(.softplus)
        case "Exp": return activation(.exp)
        case "Sqrt": return activation(.sqrt)
        case "Abs": return activation(.abs)
        case "Erf": return activation(.erf)
        case "Mish": return activation(.mish)
        case "Neg": return activation(.linear(alpha: -1, beta: 0))
        case "Gelu":
            return activation((node.string("approximate") ?? "none") == "tanh" ? .geluTanh : .geluErf)
        case "Pow":
            guard let exponent = constant(1)?.asFloats, exponent.count == 1 else { throw unsupported("the exponent must be a scalar constant") }
            switch exponent[0] {
            case 2: return activation(.square)
            case 0.5: return activation(.sqrt)
            case 1: return activation(.linear(alpha: 1, beta: 0))
            default: throw unsupported("exponent \(exponent[0]) (only 0.5, 1 and 2)")
            }
        case "Clip":
            // Opset 11 moved the bounds from attributes to optional constant inputs.
            var low = node.float("min") ?? -Float.greatestFiniteMagnitude
            var high = node.float("max") ?? Float.greatestFiniteMagnitude
            if inputs.count > 1, !inputs[1].isEmpty {
                guard let value = constant(1)?.asFloats.first else { throw unsupported("min must be a constant") }
                low = value
            }
            if inputs.count > 2, !inputs[2].isEmpty {
                guard let value = constant(2)?.asFloats.first else { throw unsupported("max must be a constant") }
                high = value
            }
            return activation(.clip(low: low, high: high))

        case "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum":
            let kinds: [String: BinaryKind] = ["Add": .add, "Sum": .add, "Sub": .sub, "Mul": .mul, "Div": .div, "Max": .max, "Min": .min]
            let kind = kinds[node.opType]!
            guard inputs.count == 2 else { throw unsupported("exactly two operands are supported") }
            if computed.count == 2 { return [step(.binary(kind, constant: nil, constantFirst: false, post: []))] }
            guard computed.count == 1, let c = constant(0) ?? constant(1) else {
                throw unsupported("needs at least one computed input")
            }
            let first = constant(0) != nil
            if first && kind == .div { throw unsupported("a constant divided by a tensor is not supported") }
            var value = ConstantTensor(shape: c.shape, floats: c.asFloats)
            // x / c is x * (1/c): one binary kind fewer for fusion to handle.
            if kind == .div { value.floats = value.floats.map { 1 / $0 }; return [step(.binary(.mul, constant: value, constantFirst: false, post: []))] }
            return [step(.binary(kind, constant: value, constantFirst: first && !kind.commutes, post: []))]

        case "PRelu":
            guard let slope = constant(1) else { throw unsupported("the slope must be a constant") }
            return [step(.prelu(slope: ConstantTensor(shape: slope.shape, floats: slope.asFloats)), [inputs[0]])]

        case "MaxPool", "AveragePool":
            let x = try shape(0)
            guard x.count == 4, let kernel = node.ints("kernel_shape") else { throw unsupported("only 2-D pooling is supported") }
            let strides = node.ints("strides") ?? [1, 1]
            let dilations = node.ints("dilations") ?? [1, 1]
            var (begin, end) = try pads(node, input: Array(x[2...]), kernel: kernel, strides: strides, dilations: dilations)
            let countIncludePad = (node.int("count_include_pad") ?? 0) != 0
            if (node.int("ceil_mode") ?? 0) != 0 {
                // Ceil mode adds a last window that starts inside the input; more end padding gives it to oneDNN.
                for d in 0..<2 {
                    let span = (kernel[d] - 1) * dilations[d] + 1
                    let padded = x[2 + d] + begin[d] + end[d] - span
                    var out = (padded + strides[d] - 1) / strides[d] + 1
                    if (out - 1) * strides[d] >= x[2 + d] + begin[d] { out -= 1 }
                    let extra = (out - 1) * strides[d] + span - (x[2 + d] + begin[d] + end[d])
                    if extra > 0 {
                        if node.opType == "AveragePool" && countIncludePad { throw unsupported("ceil_mode with count_include_pad") }
                        end[d] += extra
                    }
                }
            }
            let window = Pooling(kernel: kernel, strides: strides, padsBegin: begin, padsEnd: end, dilations: dilations)
            if node.opType == "MaxPool" { return [step(.maxPool(window), [inputs[0]])] }
            return [step(.averagePool(window, countIncludePad: countIncludePad), [inputs[0]])]

        case "GlobalAveragePool", "GlobalMaxPool":
            let x = try shape(0)
            guard x.count == 4 else { throw unsupported("only 4-D input is supported") }
            if node.opType == "GlobalAveragePool" { return [step(.globalAveragePool)] }
            return [step(.maxPool(Pooling(kernel: [x[2], x[3]], strides: [1, 1], padsBegin: [0, 0], padsEnd: [0, 0], dilations: [1, 1])))]

        case "ReduceMean", "ReduceMax", "ReduceSum":
            let x = try shape(0)
            let rawAxes = (opset >= 18 || node.opType == "ReduceSum" && opset >= 13) ? constant(1)?.asInts.map(Int.init) : node.ints("axes")
            let axes = (rawAxes ?? Array(x.indices)).map { axis($0, rank: x.count) }.sorted()
            let keep = (node.int("keepdims") ?? 1) != 0
            let kept = x.indices.map { axes.contains($0) ? 1 : x[$0] }
            let reduced = keep ? node.outputs[0] : node.outputs[0] + "#keepdims"
            var steps: [Step]
            let pool: (Int, Int) -> Op = { h, w in
                node.opType == "ReduceMean" ? .globalAveragePool
                    : .maxPool(Pooling(kernel: [h, w], strides: [1, 1], padsBegin: [0, 0], padsEnd: [0, 0], dilations: [1, 1]))
            }
            if x.count == 4, axes == [2, 3], node.opType != "ReduceSum" {
                steps = [step(pool(x[2], x[3]), [inputs[0]], output: reduced)]
            } else if x.count == 4, axes == [1, 2], node.opType != "ReduceSum" {
                // NHWC (TensorFlow) global pooling: pool the NCHW view, whose [N, C, 1, 1] has the bytes of [N, 1, 1, C].
                let nchw = node.outputs[0] + "#nchw", pooled = node.outputs[0] + "#pooled"
                steps = [step(.transpose([0, 3, 1, 2]), [inputs[0]], output: nchw), step(pool(x[1], x[2]), [nchw], output: pooled),
                         step(.reshape(kept), [pooled], output: reduced)]
            } else {
                let kind: ReduceKind = node.opType == "ReduceMean" ? .mean : node.opType == "ReduceMax" ? .max : .sum
                steps = [step(.reduce(kind, axes: axes), [inputs[0]], output: reduced)]
            }
            if !keep { steps.append(step(.reshape(x.indices.filter { !axes.contains($0) }.map { kept[$0] }), [reduced])) }
            return steps

        case "Softmax":
            let x = try shape(0)
            let a = axis(node.int("axis") ?? (opset >= 13 ? -1 : 1), rank: x.count)
            if opset >= 13 || a == x.count - 1 { return [step(.softmax(axis: a), [inputs[0]])] }
            // Before opset 13, Softmax flattened everything from `axis` on into one dimension.
            let flat = [x[..<a].reduce(1, *), x[a...].reduce(1, *)]
            let inner = node.outputs[0] + "#2d", soft = node.outputs[0] + "#softmax"
            return [step(.reshape(flat), [inputs[0]], output: inner), step(.softmax(axis: 1), [inner], output: soft), step(.reshape(x), [soft])]

        case "LayerNormalization":
            let x = try shape(0)
            let a = axis(node.int("axis") ?? -1, rank: x.count)
            guard let scale = constant(1) else { throw unsupported("scale must be a constant") }
            let width = x[a...].reduce(1, *)
            let shift = constant(2)?.asFloats ?? [Float](repeating: 0, count: width)
            guard scale.count == width, shift.count == width else { throw unsupported("scale and bias must cover the normalised dims") }
            let op = Op.layerNorm(scale: scale.asFloats, shift: shift, epsilon: node.float("epsilon") ?? 1e-5)
            if a == x.count - 1 { return [step(op, [inputs[0]])] }
            let flat = [x[..<a].reduce(1, *), width]
            let inner = node.outputs[0] + "#2d", normed = node.outputs[0] + "#ln"
            return [step(.reshape(flat), [inputs[0]], output: inner), step(op, [inner], output: normed), step(.reshape(x), [normed])]

        case "Flatten":
            let x = try shape(0)
            let a = axis(node.int("axis") ?? 1, rank: x.count)
            return [step(.reshape([x[..<a].reduce(1, *), x[a...].reduce(1, *)]), [inputs[0]])]

        case "Reshape":
            let x = try shape(0)
            let target: [Int]
            if let c = constant(1) { target = c.asInts.map(Int.init) } else if let s = node.ints("shape") { target = s } else {
                throw unsupported("the target shape must be computable at load time")
            }
            return [step(.reshape(try resolveReshape(x, target, allowZero: (node.int("allowzero") ?? 0) != 0, node: node)), [inputs[0]])]

        case "Squeeze", "Unsqueeze":
            let x = try shape(0)
            let given = constant(1)?.asInts.map(Int.init) ?? node.ints("axes")
            if node.opType == "Squeeze" {
                let drop = Set((given ?? x.indices.filter { x[$0] == 1 }).map { axis($0, rank: x.count) })
                return [step(.reshape(x.indices.filter { !drop.contains($0) }.map { x[$0] }), [inputs[0]])]
            }
            guard let axes = given else { throw unsupported("axes must be given as a constant") }
            let rank = x.count + axes.count
            var result = x
            for a in axes.map({ axis($0, rank: rank) }).sorted() { result.insert(1, at: a) }
            return [step(.reshape(result), [inputs[0]])]

        case "Transpose":
            let x = try shape(0)
            let permutation = node.ints("perm") ?? Array((0..<x.count).reversed())
            guard permutation.sorted() == Array(0..<x.count) else { throw unsupported("perm \(permutation) is not a permutation") }
            return [step(.transpose(permutation), [inputs[0]])]

        case "Gemm", "MatMul":
            let x = try shape(0)
            guard computed.count == 1, computed[0] == inputs[0], let b = constant(1), b.shape.count == 2 else {
                throw unsupported("the second operand must be a 2-D constant")
            }
            guard node.opType == "MatMul" ? x.count >= 2 : x.count == 2 else { throw unsupported("the computed operand must be [N, K]") }
            if (node.int("transA") ?? 0) != 0 { throw unsupported("transA=1 is not supported") }
            let alpha = node.float("alpha") ?? 1, beta = node.float("beta") ?? 1
            let transB = node.opType == "Gemm" && (node.int("transB") ?? 0) != 0
            let (k, m) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
            guard k == x[x.count - 1] else { throw BackboneError.invalidGraph("node '\(node.label)': \(x) times \(b.shape)") }
            let bf = b.asFloats
            var weights = [Float](repeating: 0, count: m * k)
            for row in 0..<m {
                for col in 0..<k {
                    weights[row * k + col] = alpha * (transB ? bf[row * k + col] : bf[col * m + row])
                }
            }
            var bias = [Float](repeating: 0, count: m)
            if node.opType == "Gemm", let c = constant(2) {
                guard c.count == m || c.count == 1 else { throw unsupported("bias C must broadcast along the rows") }
                let cf = c.asFloats
                for j in 0..<m { bias[j] = beta * cf[c.count == 1 ? 0 : j] }
            }
            let product = Op.innerProduct(weights: weights, bias: bias, outFeatures: m)
            if x.count == 2 { return [step(product, [inputs[0]])] }
            // [..., K] x [K, M]: the leading dims are rows of one inner product.
            let rows = x.dropLast().reduce(1, *)
            let flat = node.outputs[0] + "#2d", multiplied = node.outputs[0] + "#ip"
            return [step(.reshape([rows, k]), [inputs[0]], output: flat), step(product, [flat], output: multiplied),
                    step(.reshape(Array(x.dropLast()) + [m]), [multiplied])]

        case "Concat":
            guard let a = node.int("axis") else { throw unsupported("axis is required") }
            guard computed.count == inputs.filter({ !$0.isEmpty }).count else { throw unsupported("constant inputs are not supported") }
            return [step(.concat(axis: axis(a, rank: try shape(0).count)))]

        case "Split":
            let x = try shape(0)
            let a = axis(node.int("axis") ?? 0, rank: x.count)
            let outputs = node.outputs
            var sizes = constant(1)?.asInts.map(Int.init) ?? node.ints("split") ?? []
            if sizes.isEmpty {
                let n = outputs.count
                let chunk = (x[a] + n - 1) / n
                sizes = (0..<n).map { min(chunk, max(0, x[a] - $0 * chunk)) }
            }
            guard sizes.count == outputs.count, sizes.reduce(0, +) == x[a] else { throw unsupported("split sizes \(sizes) do not cover \(x[a])") }
            var start = 0
            var steps: [Step] = []
            for (output, size) in zip(outputs, sizes) {
                if !output.isEmpty { steps.append(step(.slice(axis: a, start: start, end: start + size), [inputs[0]], output: output)) }
                start += size
            }
            return steps

        case "Slice":
            let x = try shape(0)
            let starts: [Int], ends: [Int], axes: [Int], steps: [Int]
            if opset < 10 {
                starts = node.ints("starts") ?? []; ends = node.ints("ends") ?? []
                axes = node.ints("axes") ?? Array(0..<starts.count); steps = [Int](repeating: 1, count: starts.count)
            } else {
                guard let s = constant(1), let e = constant(2) else { throw unsupported("starts and ends must be computable at load time") }
                starts = s.asInts.map(Int.init); ends = e.asInts.map(Int.init)
                axes = constant(3)?.asInts.map(Int.init) ?? Array(0..<starts.count)
                steps = constant(4)?.asInts.map(Int.init) ?? [Int](repeating: 1, count: starts.count)
            }
            guard steps.allSatisfy({ $0 == 1 }) else { throw unsupported("steps other than 1 on a computed tensor") }
            let ranges = try ConstantFolding.sliceRanges(x, starts: starts, ends: ends, axes: axes, steps: steps, node: node)
            var result: [Step] = []
            var source = inputs[0]
            let cut = ranges.indices.filter { ranges[$0].count != x[$0] }
            for (i, a) in cut.enumerated() {
                let output = i == cut.count - 1 ? node.outputs[0] : node.outputs[0] + "#slice\(i)"
                result.append(step(.slice(axis: a, start: ranges[a].first ?? 0, end: (ranges[a].first ?? 0) + ranges[a].count), [source], output: output))
                source = output
            }
            return result.isEmpty ? [step(.reshape(x), [inputs[0]])] : result

        case "Pad":
            let x = try shape(0)
            guard let amounts = constant(1)?.asInts.map(Int.init) ?? node.ints("pads"), amounts.count == 2 * x.count else {
                throw unsupported("the pads must be computable at load time and cover every dim")
            }
            if constant(3) != nil { throw unsupported("the axes input is not supported") }
            let mode: PadMode
            switch node.string("mode") ?? "constant" {
            case "constant": mode = .constant
            case "reflect": mode = .reflect
            case "edge": mode = .edge
            case let other: throw unsupported("mode \(other)")
            }
            guard amounts.allSatisfy({ $0 >= 0 }) else { throw unsupported("negative pads (cropping) are not supported") }
            let value = constant(2)?.asFloats.first ?? node.float("value") ?? 0
            let begin = Array(amounts[..<x.count]), end = Array(amounts[x.count...])
            if mode == .reflect, x.indices.contains(where: { begin[$0] >= x[$0] || end[$0] >= x[$0] }) {
                throw unsupported("reflect padding wider than the input")
            }
            return [step(.pad(begin: begin, end: end, mode: mode, value: value), [inputs[0]])]

        case "Resize", "Upsample":
            let x = try shape(0)
            guard x.count == 4 else { throw unsupported("only 4-D input is supported") }
            var out: [Int]
            if let sizes = constant(3)?.asInts, !sizes.isEmpty {
                out = sizes.map(Int.init)
            } else if let scales = (node.opType == "Upsample" || opset == 10 ? constant(1) : constant(2))?.asFloats ?? node.attributes["scales"].map({ $0.floats }), scales.count == 4 {
                out = zip(x, scales).map { Int((Float($0) * $1).rounded(.down)) }
            } else {
                throw unsupported("scales or sizes must be computable at load time")
            }
            guard out[0] == x[0], out[1] == x[1] else { throw unsupported("only H and W can be resized") }
            let mode = node.string("mode") ?? "nearest"
            let transform = node.string("coordinate_transformation_mode") ?? (node.opType == "Upsample" || opset < 11 ? "asymmetric" : "half_pixel")
            switch mode {
            case "nearest":
                let rounding = node.string("nearest_mode") ?? "round_prefer_floor"
                // oneDNN's nearest is half_pixel with rounding; for integer upscaling, asymmetric floor picks the same pixels.
                let integral = out[2] % x[2] == 0 && out[3] % x[3] == 0
                guard (transform == "asymmetric" && (rounding == "floor" || node.opType == "Upsample" || opset < 11) && integral)
                        || (transform == "half_pixel" && rounding == "round_prefer_floor") else {
                    throw unsupported("nearest with \(transform)/\(rounding)")
                }
                return [step(.resize(linear: false, shape: out), [inputs[0]])]
            case "linear", "bilinear":
                guard transform == "half_pixel" || (transform == "pytorch_half_pixel" && out[2] > 1 && out[3] > 1) else {
                    throw unsupported("linear with \(transform) (half_pixel and pytorch_half_pixel are supported)")
                }
                return [step(.resize(linear: true, shape: out), [inputs[0]])]
            default:
                throw unsupported("mode \(mode)")
            }

        default:
            throw unsupported()
        }
    }
}
