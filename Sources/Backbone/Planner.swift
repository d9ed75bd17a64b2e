/// Turns an ONNX graph into the steps that compute the requested tensors, for one batch size.
///
/// Four passes, each readable alone:
/// 1. `prune`: keep only nodes on a path from the graph input to a requested tensor, so that ops
///    feeding only a discarded head (an ArgMax, say) never need support.
/// 2. Constant folding (`ConstantFolding.swift`): shape arithmetic and constant subgraphs are
///    evaluated now, for the concrete batch size; none of it runs at inference.
/// 3. `translate`: each remaining ONNX node becomes typed `Step`s, with shapes inferred and
///    constants folded in. Every unsupported node is collected, so one error lists them all.
/// 4. `fuse` (`Fusion.swift`): BatchNorm and per-channel affine ops fold into the convolution
///    before them, activations and residual Adds become post-ops, and composite patterns
///    (Swish, GELU, Mish, HardSwish) become single oneDNN eltwise algorithms.
struct Plan {
    var steps: [Step]
    var shapes: [String: [Int]]
    var input: String
    var outputs: [String]

    /// - Parameter imageShape: the input's dims after the batch, for models whose graph leaves them symbolic.
    /// - Parameter fusing: false skips pass 4, for callers that want only shapes (model inspection).
    init(graph: ONNXGraph, input: String, outputs: [String], batch: Int, imageShape: [Int]? = nil, fusing: Bool = true) throws {
        guard let declared = graph.inputs.first(where: { $0.name == input }) else {
            throw BackboneError.unknownTensor(input)
        }
        let perImage: [Int]
        if let imageShape {
            guard imageShape.count == declared.shape.count - 1,
                  zip(imageShape, declared.shape.dropFirst()).allSatisfy({ $1 == nil || $0 == $1 }) else {
                throw BackboneError.invalidGraph("input '\(input)' is declared \(declared.shape.map { $0.map(String.init) ?? "?" }), which an image of \(imageShape) does not fit")
            }
            perImage = imageShape
        } else {
            guard declared.shape.count >= 2, declared.shape.dropFirst().allSatisfy({ $0 != nil }) else {
                throw BackboneError.invalidGraph("input '\(input)' has symbolic dimensions after the batch dimension; give the image shape (input.shape in model.json)")
            }
            perImage = declared.shape.dropFirst().map { $0! }
        }
        self.input = input
        self.outputs = outputs
        let nodes = try Self.prune(graph: graph, input: input, outputs: outputs)
        var shapes = [input: [batch] + perImage]
        var constants = graph.constants
        var steps: [Step] = []
        var aliases: [String: String] = [:]
        var unsupported: [UnsupportedNode] = []
        // Outputs of unsupported nodes: their consumers are not translated, only checked by op type.
        var poisoned = Set<String>()
        for node in nodes {
            let inputs = node.inputs.map { aliases[$0] ?? $0 }
            if inputs.contains(where: poisoned.contains) {
                poisoned.formUnion(node.outputs)
                if !Self.knownOps.contains(node.opType) {
                    unsupported.append(UnsupportedNode(op: node.opType, node: node.label, detail: ""))
                }
                continue
            }
            do {
                if let folded = try ConstantFolding.evaluate(node, inputs: inputs, constants: constants, shapes: shapes,
                                                             opset: graph.opsetVersion) {
                    for (name, value) in zip(node.outputs, folded) { constants[name] = value }
                    continue
                }
                if ["Identity", "Dropout"].contains(node.opType) || (node.opType == "Cast" && [1, 10, 11, 16].contains(node.int("to") ?? 0)) {
                    aliases[node.outputs[0]] = inputs[0]
                    continue
                }
                for step in try Self.translate(node, inputs: inputs, constants: constants, shapes: shapes, opset: graph.opsetVersion) {
                    shapes[step.output] = try Self.inferShape(step, shapes: shapes)
                    steps.append(step)
                }
            } catch BackboneError.unsupportedOp(let op, let name, let detail) {
                unsupported.append(UnsupportedNode(op: op, node: name, detail: detail))
                poisoned.formUnion(node.outputs)
            }
        }
        // A requested tensor may be an Identity of another.
        self.outputs = outputs.map { aliases[$0] ?? $0 }
        for name in self.outputs where shapes[name] == nil && !poisoned.contains(name) {
            throw BackboneError.invalidGraph("'\(name)' does not depend on the input '\(input)'")
        }
        self.shapes = shapes
        self.steps = fusing ? Self.fuse(steps, shapes: shapes, outputs: self.outputs) : steps
        // An Erf that did not turn out to be part of a GELU has no oneDNN kernel.
        for step in self.steps where fusing {
            if case .activation(let activations) = step.op, activations.contains(.erf) {
                unsupported.append(UnsupportedNode(op: "Erf", node: step.node, detail: "only as part of GELU (x * 0.5 * (1 + erf(x / sqrt 2)))"))
            }
        }
        if !unsupported.isEmpty { throw BackboneError.unsupportedOps(unsupported) }
    }

    /// Every op type the planner accepts in some form (folded, aliased or translated).
    static let knownOps: Set<String> = ConstantFolding.foldable.union([
        "Identity", "Dropout", "Cast", "Conv", "BatchNormalization", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish",
        "HardSigmoid", "Clip", "Elu", "Softplus", "Exp", "Sqrt", "Abs", "Erf", "Mish", "Gelu", "Neg", "Pow", "Add", "Sub",
        "Mul", "Div", "Max", "Min", "Sum", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten",
        "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Gemm", "MatMul", "Concat", "Pad", "Softmax", "ReduceMean",
        "ReduceMax", "ReduceSum", "LayerNormalization", "PRelu", "Split", "Slice", "Resize", "Upsample",
    ])

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
        case let .pad(begin, end, _, _):
            return x.indices.map { x[$0] + begin[$0] + end[$0] }
        case .maxPool(let p), .averagePool(let p, _):
            return [x[0], x[1]] + (try window(p.kernel, p.strides, p.dilations, p.padsBegin, p.padsEnd))
        case .batchNorm, .activation, .softmax, .layerNorm, .prelu:
            return x
        case let .binary(_, constant, _, _):
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
        case let .reduce(_, axes):
            return x.indices.map { axes.contains($0) ? 1 : x[$0] }
        case let .slice(axis, start, end):
            var result = x
            result[axis] = end - start
            return result
        case let .resize(_, shape):
            return shape
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
}
