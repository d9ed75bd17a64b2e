/// Turns an ONNX graph into the steps that compute the requested tensors, for one batch size.
///
/// Three passes, each readable alone:
/// 1. `prune`: keep only nodes on a path from the graph input to a requested tensor, so that ops
///    feeding only a discarded head (Softmax, say) never need support.
/// 2. `translate`: each ONNX node becomes a typed `Step`, with shapes inferred and constants folded in.
/// 3. `fuse`: BatchNorm folds into the convolution before it and a zero Pad into the one after it;
///    activations and residual Adds become convolution post-ops.
struct Plan {
    var steps: [Step]
    var shapes: [String: [Int]]
    var input: String
    var outputs: [String]

    init(graph: ONNXGraph, input: String, outputs: [String], batch: Int) throws {
        guard let declared = graph.inputs.first(where: { $0.name == input }) else {
            throw BackboneError.unknownTensor(input)
        }
        guard declared.shape.count >= 2, declared.shape.dropFirst().allSatisfy({ $0 != nil }) else {
            throw BackboneError.invalidGraph("input '\(input)' needs fixed dimensions after the batch dimension")
        }
        self.input = input
        self.outputs = outputs
        let nodes = try Self.prune(graph: graph, input: input, outputs: outputs)
        var shapes = [input: [batch] + declared.shape.dropFirst().map { $0! }]
        var steps: [Step] = []
        var aliases: [String: String] = [:]
        for node in nodes {
            let inputs = node.inputs.map { aliases[$0] ?? $0 }
            if ["Identity", "Dropout"].contains(node.opType) {
                aliases[node.outputs[0]] = inputs[0]
                continue
            }
            let step = try Self.translate(node, inputs: inputs, graph: graph, shapes: shapes)
            shapes[step.output] = try Self.inferShape(step, shapes: shapes)
            steps.append(step)
        }
        // A requested tensor may be an Identity of another.
        self.outputs = outputs.map { aliases[$0] ?? $0 }
        self.shapes = shapes
        self.steps = Self.fuse(steps, shapes: shapes, outputs: self.outputs)
    }

    // MARK: 1. prune

    static func prune(graph: ONNXGraph, input: String, outputs: [String]) throws -> [GraphNode] {
        var producer: [String: Int] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for output in node.outputs { producer[output] = index }
        }
        var needed = Set<Int>()
        var stack: [String] = []
        for output in outputs {
            guard output == input || producer[output] != nil else { throw BackboneError.unknownTensor(output) }
            stack.append(output)
        }
        while let name = stack.popLast() {
            guard let index = producer[name], !needed.contains(index) else { continue }
            needed.insert(index)
            stack.append(contentsOf: graph.nodes[index].inputs.filter { !$0.isEmpty && graph.constants[$0] == nil })
        }
        for index in needed {
            for name in graph.nodes[index].inputs where !name.isEmpty && graph.constants[name] == nil {
                if producer[name] == nil && name != input {
                    throw BackboneError.invalidGraph(
                        "node '\(graph.nodes[index].label)' reads '\(name)', which is neither computed, a constant, nor the input '\(input)'")
                }
            }
        }
        // ONNX requires nodes in topological order, so file order is an execution order.
        return needed.sorted().map { graph.nodes[$0] }
    }

    // MARK: 2. translate

    static func translate(_ node: GraphNode, inputs: [String], graph: ONNXGraph, shapes: [String: [Int]]) throws -> Step {
        func unsupported(_ detail: String = "") -> BackboneError {
            .unsupportedOp(op: node.opType, node: node.label, detail: detail)
        }
        func constant(_ index: Int) -> ConstantTensor? {
            index < inputs.count && !inputs[index].isEmpty ? graph.constants[inputs[index]] : nil
        }
        func shape(_ index: Int) throws -> [Int] {
            guard let shape = shapes[inputs[index]] else {
                throw unsupported("input '\(inputs[index])' must be computed from the graph input")
            }
            return shape
        }
        let computed = inputs.filter { !$0.isEmpty && graph.constants[$0] == nil }
        func step(_ op: Op, _ stepInputs: [String]? = nil) -> Step {
            Step(op: op, inputs: stepInputs ?? computed, output: node.outputs[0], node: node.label, opType: node.opType)
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
            return step(.convolution(Convolution(
                weights: w.floats, weightShape: w.shape, bias: bias, strides: strides, dilations: dilations,
                padsBegin: begin, padsEnd: end, groups: groups)), [inputs[0]])

        case "BatchNormalization":
            guard let scale = constant(1), let shift = constant(2), let mean = constant(3), let variance = constant(4) else {
                throw unsupported("scale, bias, mean and variance must be constants")
            }
            return step(.batchNorm(scale: scale.floats, shift: shift.floats, mean: mean.floats,
                                   variance: variance.floats, epsilon: node.float("epsilon") ?? 1e-5), [inputs[0]])

        case "Relu": return step(.activation([.relu(negativeSlope: 0)]))
        case "LeakyRelu": return step(.activation([.relu(negativeSlope: node.float("alpha") ?? 0.01)]))
        case "Sigmoid": return step(.activation([.sigmoid]))
        case "Tanh": return step(.activation([.tanh]))
        case "HardSwish": return step(.activation([.hardSwish]))
        case "HardSigmoid":
            return step(.activation([.linear(alpha: node.float("alpha") ?? 0.2, beta: node.float("beta") ?? 0.5),
                                     .clip(low: 0, high: 1)]))
        case "Clip":
            // Opset 11 moved the bounds from attributes to optional constant inputs.
            var low = node.float("min") ?? -Float.greatestFiniteMagnitude
            var high = node.float("max") ?? Float.greatestFiniteMagnitude
            if inputs.count > 1, !inputs[1].isEmpty {
                guard let value = constant(1)?.floats.first else { throw unsupported("min must be a constant") }
                low = value
            }
            if inputs.count > 2, !inputs[2].isEmpty {
                guard let value = constant(2)?.floats.first else { throw unsupported("max must be a constant") }
                high = value
            }
            return step(.activation([.clip(low: low, high: high)]), [inputs[0]])

        case "Add", "Mul":
            let kind: BinaryKind = node.opType == "Add" ? .add : .mul
            if computed.count == 2 { return step(.binary(kind, constant: nil)) }
            guard computed.count == 1, let c = constant(0) ?? constant(1), !c.floats.isEmpty else {
                throw unsupported("needs at least one computed input and float constants")
            }
            return step(.binary(kind, constant: c))

        case "MaxPool", "AveragePool":
            let x = try shape(0)
            guard x.count == 4, let kernel = node.ints("kernel_shape") else { throw unsupported("only 2-D pooling is supported") }
            if (node.int("ceil_mode") ?? 0) != 0 { throw unsupported("ceil_mode=1 is not supported") }
            if node.outputs.count > 1 && !node.outputs[1].isEmpty { throw unsupported("the Indices output is not supported") }
            let strides = node.ints("strides") ?? [1, 1]
            let dilations = node.ints("dilations") ?? [1, 1]
            let (begin, end) = try pads(node, input: Array(x[2...]), kernel: kernel, strides: strides, dilations: dilations)
            let window = Pooling(kernel: kernel, strides: strides, padsBegin: begin, padsEnd: end, dilations: dilations)
            if node.opType == "MaxPool" { return step(.maxPool(window)) }
            return step(.averagePool(window, countIncludePad: (node.int("count_include_pad") ?? 0) != 0))

        case "GlobalAveragePool":
            guard try shape(0).count == 4 else { throw unsupported("only 4-D input is supported") }
            return step(.globalAveragePool)

        case "Flatten":
            let x = try shape(0)
            var axis = node.int("axis") ?? 1
            if axis < 0 { axis += x.count }
            return step(.reshape([x[..<axis].reduce(1, *), x[axis...].reduce(1, *)]))

        case "Reshape":
            let x = try shape(0)
            let target: [Int]
            if let c = constant(1) { target = c.ints.map(Int.init) } else if let s = node.ints("shape") { target = s } else {
                throw unsupported("the target shape must be a constant")
            }
            return step(.reshape(try resolveReshape(x, target, allowZero: (node.int("allowzero") ?? 0) != 0, node: node)), [inputs[0]])

        case "Squeeze", "Unsqueeze":
            let x = try shape(0)
            guard let axes = constant(1)?.ints.map(Int.init) ?? node.ints("axes") else {
                throw unsupported("axes must be given as a constant")
            }
            if node.opType == "Squeeze" {
                let rank = x.count
                let drop = Set(axes.map { $0 < 0 ? $0 + rank : $0 })
                return step(.reshape(x.enumerated().filter { !drop.contains($0.offset) }.map(\.element)), [inputs[0]])
            }
            let rank = x.count + axes.count
            var result = x
            for axis in axes.map({ $0 < 0 ? $0 + rank : $0 }).sorted() { result.insert(1, at: axis) }
            return step(.reshape(result), [inputs[0]])

        case "Transpose":
            let x = try shape(0)
            let permutation = node.ints("perm") ?? Array((0..<x.count).reversed())
            guard permutation.sorted() == Array(0..<x.count) else { throw unsupported("perm \(permutation) is not a permutation") }
            return step(.transpose(permutation))

        case "Gemm", "MatMul":
            let x = try shape(0)
            guard x.count == 2 else { throw unsupported("the computed operand must be 2-D [N, K]") }
            guard computed.count == 1, computed[0] == inputs[0], let b = constant(1), b.shape.count == 2 else {
                throw unsupported("the second operand must be a 2-D constant")
            }
            if (node.int("transA") ?? 0) != 0 { throw unsupported("transA=1 is not supported") }
            let alpha = node.float("alpha") ?? 1, beta = node.float("beta") ?? 1
            let transB = node.opType == "Gemm" && (node.int("transB") ?? 0) != 0
            let (k, m) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
            guard k == x[1] else { throw BackboneError.invalidGraph("node '\(node.label)': [N, \(x[1])] times \(b.shape)") }
            var weights = [Float](repeating: 0, count: m * k)
            for row in 0..<m {
                for col in 0..<k {
                    weights[row * k + col] = alpha * (transB ? b.floats[row * k + col] : b.floats[col * m + row])
                }
            }
            var bias = [Float](repeating: 0, count: m)
            if node.opType == "Gemm", let c = constant(2) {
                guard c.count == m || c.count == 1 else { throw unsupported("bias C must broadcast along the rows") }
                for j in 0..<m { bias[j] = beta * c.floats[c.count == 1 ? 0 : j] }
            }
            return step(.innerProduct(weights: weights, bias: bias, outFeatures: m), [inputs[0]])

        case "Concat":
            guard let axis = node.int("axis") else { throw unsupported("axis is required") }
            guard computed.count == inputs.count else { throw unsupported("constant inputs are not supported") }
            let rank = try shape(0).count
            return step(.concat(axis: axis < 0 ? axis + rank : axis))

        case "Pad":
            // Only zero padding of the spatial dims is supported; `fuse` folds it into the next Conv.
            let x = try shape(0)
            let amounts = constant(1)?.ints.map(Int.init) ?? node.ints("pads") ?? []
            let mode = node.string("mode") ?? "constant"
            let value = constant(2)?.floats.first ?? node.float("value") ?? 0
            guard mode == "constant", value == 0, amounts.count == 2 * x.count, x.count == 4,
                  amounts[0] == 0, amounts[1] == 0, amounts[4] == 0, amounts[5] == 0,
                  amounts.allSatisfy({ $0 >= 0 }) else {
                throw unsupported("only constant zero padding of H and W is supported")
            }
            return step(.pad(begin: [amounts[2], amounts[3]], end: [amounts[6], amounts[7]]), [inputs[0]])

        default:
            throw unsupported()
        }
    }

    static func pads(_ node: GraphNode, input: [Int], kernel: [Int], strides: [Int], dilations: [Int]) throws -> ([Int], [Int]) {
        let autoPad = node.string("auto_pad") ?? "NOTSET"
        switch autoPad {
        case "NOTSET":
            let p = node.ints("pads") ?? [Int](repeating: 0, count: 2 * input.count)
            guard p.count == 2 * input.count else {
                throw BackboneError.invalidGraph("node '\(node.label)': pads \(p) do not match a \(input.count)-D window")
            }
            return (Array(p[..<input.count]), Array(p[input.count...]))
        case "VALID":
            return ([Int](repeating: 0, count: input.count), [Int](repeating: 0, count: input.count))
        case "SAME_UPPER", "SAME_LOWER":
            var begin: [Int] = [], end: [Int] = []
            for d in input.indices {
                let out = (input[d] + strides[d] - 1) / strides[d]
                let total = max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - input[d])
                let small = total / 2
                begin.append(autoPad == "SAME_UPPER" ? small : total - small)
                end.append(total - begin[d])
            }
            return (begin, end)
        default:
            throw BackboneError.unsupportedOp(op: node.opType, node: node.label, detail: "auto_pad=\(autoPad)")
        }
    }

    static func resolveReshape(_ x: [Int], _ target: [Int], allowZero: Bool, node: GraphNode) throws -> [Int] {
        var result = target.enumerated().map { index, value in value == 0 && !allowZero ? x[index] : value }
        let total = x.reduce(1, *)
        if let unknown = result.firstIndex(of: -1) {
            let known = result.enumerated().filter { $0.offset != unknown }.map(\.element).reduce(1, *)
            guard known > 0, total % known == 0 else {
                throw BackboneError.invalidGraph("node '\(node.label)': cannot reshape \(x) to \(target)")
            }
            result[unknown] = total / known
        }
        guard result.reduce(1, *) == total, result.allSatisfy({ $0 >= 0 }) else {
            throw BackboneError.invalidGraph("node '\(node.label)': cannot reshape \(x) to \(target)")
        }
        return result
    }

    // MARK: shape inference

    static func inferShape(_ step: Step, shapes: [String: [Int]]) throws -> [Int] {
        let x = shapes[step.inputs[0]]!
        func window(_ kernel: [Int], _ strides: [Int], _ dilations: [Int], _ begin: [Int], _ end: [Int]) throws -> [Int] {
            try (0..<2).map { d in
                let span = (kernel[d] - 1) * dilations[d] + 1
                let out = (x[2 + d] + begin[d] + end[d] - span) / strides[d] + 1
                guard out > 0 else {
                    throw BackboneError.invalidGraph("node '\(step.node)': window \(kernel) does not fit input \(x)")
                }
                return out
            }
        }
        switch step.op {
        case .convolution(let c):
            return [x[0], c.outChannels] + (try window(c.kernel, c.strides, c.dilations, c.padsBegin, c.padsEnd))
        case let .pad(begin, end):
            return [x[0], x[1], x[2] + begin[0] + end[0], x[3] + begin[1] + end[1]]
        case .maxPool(let p), .averagePool(let p, _):
            return [x[0], x[1]] + (try window(p.kernel, p.strides, p.dilations, p.padsBegin, p.padsEnd))
        case .batchNorm, .activation:
            return x
        case .binary(_, let constant):
            let other = constant?.shape ?? shapes[step.inputs[1]]!
            return try broadcast(x, other, node: step.node)
        case .globalAveragePool:
            return [x[0], x[1], 1, 1]
        case .reshape(let shape):
            return shape
        case .transpose(let permutation):
            return permutation.map { x[$0] }
        case .innerProduct(_, _, let m):
            return [x[0], m]
        case .concat(let axis):
            var result = x
            for name in step.inputs.dropFirst() {
                let other = shapes[name]!
                guard other.count == x.count, other.indices.allSatisfy({ $0 == axis || other[$0] == x[$0] }) else {
                    throw BackboneError.invalidGraph("node '\(step.node)': cannot concatenate \(x) and \(other) on axis \(axis)")
                }
                result[axis] += other[axis]
            }
            return result
        }
    }

    static func broadcast(_ a: [Int], _ b: [Int], node: String) throws -> [Int] {
        let rank = max(a.count, b.count)
        let a = [Int](repeating: 1, count: rank - a.count) + a
        let b = [Int](repeating: 1, count: rank - b.count) + b
        return try zip(a, b).map { x, y in
            guard x == y || x == 1 || y == 1 else {
                throw BackboneError.invalidGraph("node '\(node)': shapes \(a) and \(b) do not broadcast")
            }
            return max(x, y)
        }
    }

    // MARK: 3. fuse

    static func fuse(_ input: [Step], shapes: [String: [Int]], outputs: [String]) -> [Step] {
        var steps = input
        func uses(_ name: String) -> Int {
            steps.reduce(0) { $0 + $1.inputs.filter { $0 == name }.count } + (outputs.contains(name) ? 1 : 0)
        }
        /// The position of the convolution producing `name`, if nothing else reads its result.
        func soleConvolution(_ name: String) -> (Int, Convolution)? {
            guard uses(name) == 1, let source = steps.firstIndex(where: { $0.output == name }),
                  case .convolution(let conv) = steps[source].op else { return nil }
            return (source, conv)
        }

        var index = 0
        while index < steps.count {
            let step = steps[index]
            var fused: (source: Int, conv: Convolution)?
            switch step.op {
            case let .batchNorm(scale, shift, mean, variance, epsilon):
                if case (let source, var conv)? = soleConvolution(step.inputs[0]), conv.postOps.isEmpty {
                    let perOut = conv.weights.count / conv.outChannels
                    for o in 0..<conv.outChannels {
                        let factor = scale[o] / (variance[o] + epsilon).squareRoot()
                        for i in 0..<perOut { conv.weights[o * perOut + i] *= factor }
                        conv.bias[o] = (conv.bias[o] - mean[o]) * factor + shift[o]
                    }
                    fused = (source, conv)
                }
            case .activation(let activations):
                if case (let source, var conv)? = soleConvolution(step.inputs[0]) {
                    conv.postOps += activations.map(PostOp.activation)
                    fused = (source, conv)
                }
            case .binary(.add, nil) where shapes[step.inputs[0]] == shapes[step.inputs[1]]:
                for (operand, other) in [(0, 1), (1, 0)] {
                    if case (let source, var conv)? = soleConvolution(step.inputs[operand]), conv.sumInput == nil {
                        conv.postOps.append(.sum)
                        conv.sumInput = step.inputs[other]
                        fused = (source, conv)
                        break
                    }
                }
            case .pad(let begin, let end):
                // A zero Pad before a convolution is just more convolution padding.
                if uses(step.output) == 1, let consumer = steps.firstIndex(where: { $0.inputs.first == step.output }),
                   case .convolution(var conv) = steps[consumer].op {
                    for d in 0..<2 {
                        conv.padsBegin[d] += begin[d]
                        conv.padsEnd[d] += end[d]
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
    }
}

