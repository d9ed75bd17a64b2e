/// Plan-time evaluation of nodes whose inputs are all known: the shape arithmetic that exporters emit
/// for dynamic batch sizes (`Shape → Gather → Unsqueeze → Concat → Reshape`) and constant subgraphs.
///
/// Once the batch size is fixed every such value is a constant, so none of it runs at inference:
/// the results go into the plan's constant table, where the ops that read them (Reshape's target,
/// Resize's sizes, Pad's amounts) find them.
enum ConstantFolding {
    /// Op types this file evaluates when every input is constant (Shape and Size only need the input's shape).
    static let foldable: Set<String> = [
        "Shape", "Size", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "ConstantOfShape", "Range",
        "Expand", "Reshape", "Flatten", "Identity", "Add", "Sub", "Mul", "Div", "Neg", "Min", "Max", "Equal",
        "Where", "Transpose", "Floor", "Ceil", "Sqrt", "ReduceProd", "Not", "Abs",
    ]

    /// The node's outputs, when it can be computed now; `nil` when it depends on image data.
    static func evaluate(_ node: GraphNode, inputs: [String], constants: [String: ConstantTensor],
                         shapes: [String: [Int]], opset: Int) throws -> [ConstantTensor]? {
        guard foldable.contains(node.opType) else { return nil }
        func fail(_ detail: String) -> BackboneError {
            .unsupportedOp(op: node.opType, node: node.label, detail: detail)
        }
        if node.opType == "Shape" || node.opType == "Size" {
            guard let shape = shapes[inputs[0]] ?? constants[inputs[0]]?.shape else { return nil }
            if node.opType == "Size" { return [ConstantTensor(shape: [], ints: [Int64(shape.reduce(1, *))])] }
            let rank = shape.count
            func clampAxis(_ a: Int) -> Int { min(max(a < 0 ? a + rank : a, 0), rank) }
            let start = clampAxis(node.int("start") ?? 0), end = clampAxis(node.int("end") ?? rank)
            let dims = start < end ? Array(shape[start..<end]) : []
            return [ConstantTensor(shape: [dims.count], ints: dims.map(Int64.init))]
        }
        let present = inputs.filter { !$0.isEmpty }
        guard present.allSatisfy({ constants[$0] != nil }) else { return nil }
        func input(_ i: Int) -> ConstantTensor? {
            i < inputs.count && !inputs[i].isEmpty ? constants[inputs[i]] : nil
        }
        let x = input(0)
        func ints(_ i: Int) -> [Int]? { input(i)?.asInts.map(Int.init) }

        switch node.opType {
        case "Identity":
            return [x!]
        case "Cast":
            let to = node.int("to") ?? 1
            // 1 float, 10 float16, 11 double: float; everything else is an integer or boolean type.
            if [1, 10, 11, 16].contains(to) { return [ConstantTensor(shape: x!.shape, floats: x!.asFloats)] }
            return [ConstantTensor(shape: x!.shape, ints: to == 9 ? x!.asFloats.map { $0 != 0 ? 1 : 0 } : x!.asInts)]
        case "ConstantOfShape":
            let shape = x!.asInts.map(Int.init)
            let count = shape.reduce(1, *)
            if let value = node.attributes["value"]?.t, let t = try? ConstantTensor(value, path: "") {
                return [t.isInteger ? ConstantTensor(shape: shape, ints: .init(repeating: t.asInts.first ?? 0, count: count))
                        : ConstantTensor(shape: shape, floats: .init(repeating: t.floats.first ?? 0, count: count))]
            }
            return [ConstantTensor(shape: shape, floats: .init(repeating: 0, count: count))]
        case "Range":
            let (start, limit, delta) = (input(0)!, input(1)!, input(2)!)
            if start.isInteger {
                let (a, b, d) = (start.asInts[0], limit.asInts[0], delta.asInts[0])
                guard d != 0 else { throw fail("delta is zero") }
                let n = max(0, Int((Double(b - a) / Double(d)).rounded(.up)))
                return [ConstantTensor(shape: [n], ints: (0..<n).map { a + Int64($0) * d })]
            }
            let (a, b, d) = (start.asFloats[0], limit.asFloats[0], delta.asFloats[0])
            guard d != 0 else { throw fail("delta is zero") }
            let n = max(0, Int(((b - a) / d).rounded(.up)))
            return [ConstantTensor(shape: [n], floats: (0..<n).map { a + Float($0) * d })]
        case "Unsqueeze", "Squeeze":
            guard let axes = ints(1) ?? node.ints("axes") ?? (node.opType == "Squeeze" ? [] : nil) else { throw fail("axes missing") }
            var shape = x!.shape
            if node.opType == "Squeeze" {
                let drop = axes.isEmpty ? Set(shape.indices.filter { shape[$0] == 1 }) : Set(axes.map { $0 < 0 ? $0 + shape.count : $0 })
                shape = shape.indices.filter { !drop.contains($0) }.map { shape[$0] }
            } else {
                let rank = shape.count + axes.count
                for axis in axes.map({ $0 < 0 ? $0 + rank : $0 }).sorted() { shape.insert(1, at: axis) }
            }
            return [x!.reshaped(shape)]
        case "Reshape":
            guard let target = ints(1) ?? node.ints("shape") else { throw fail("shape missing") }
            return [x!.reshaped(try Plan.resolveReshape(x!.shape, target, allowZero: (node.int("allowzero") ?? 0) != 0, node: node))]
        case "Flatten":
            var axis = node.int("axis") ?? 1
            if axis < 0 { axis += x!.shape.count }
            return [x!.reshaped([x!.shape[..<axis].reduce(1, *), x!.shape[axis...].reduce(1, *)])]
        case "Concat":
            guard var axis = node.int("axis") else { throw fail("axis is required") }
            let parts = present.map { constants[$0]! }
            if axis < 0 { axis += parts[0].shape.count }
            return [try concat(parts, axis: axis)]
        case "Gather":
            var axis = node.int("axis") ?? 0
            let data = x!, indices = input(1)!.asInts.map(Int.init)
            if axis < 0 { axis += data.shape.count }
            let outer = data.shape[..<axis].reduce(1, *), inner = data.shape[(axis + 1)...].reduce(1, *)
            let extent = data.shape[axis]
            let shape = Array(data.shape[..<axis]) + input(1)!.shape + Array(data.shape[(axis + 1)...])
            var order: [Int] = []
            for o in 0..<outer {
                for i in indices {
                    let index = i < 0 ? i + extent : i
                    guard (0..<extent).contains(index) else { throw fail("index \(i) out of range \(extent)") }
                    for k in 0..<inner { order.append((o * extent + index) * inner + k) }
                }
            }
            return [data.picking(order, shape: shape)]
        case "Slice":
            let data = x!
            let starts: [Int], ends: [Int], axes: [Int], steps: [Int]
            if opset < 10 {
                starts = node.ints("starts") ?? []; ends = node.ints("ends") ?? []
                axes = node.ints("axes") ?? Array(0..<starts.count); steps = [Int](repeating: 1, count: starts.count)
            } else {
                starts = ints(1) ?? []; ends = ints(2) ?? []
                axes = ints(3) ?? Array(0..<starts.count); steps = ints(4) ?? [Int](repeating: 1, count: starts.count)
            }
            let ranges = try sliceRanges(data.shape, starts: starts, ends: ends, axes: axes, steps: steps, node: node)
            var order: [Int] = []
            let strides = rowMajorStrides(data.shape)
            let shape = ranges.map(\.count)
            forEachIndex(shape) { index in
                order.append(zip(index.indices, index).reduce(0) { $0 + ranges[$1.0][$1.1] * strides[$1.0] })
            }
            return [data.picking(order, shape: shape)]
        case "Transpose":
            let data = x!
            let permutation = node.ints("perm") ?? Array((0..<data.shape.count).reversed())
            let strides = rowMajorStrides(data.shape)
            let shape = permutation.map { data.shape[$0] }
            var order: [Int] = []
            forEachIndex(shape) { index in
                order.append(index.indices.reduce(0) { $0 + index[$1] * strides[permutation[$1]] })
            }
            return [data.picking(order, shape: shape)]
        case "Expand":
            let data = x!
            let shape = try Plan.broadcast(data.shape, input(1)!.asInts.map(Int.init), node: node.label)
            return [try elementwise([data], shape: shape) { $0[0] }]
        case "ReduceProd":
            return [ConstantTensor(shape: [], ints: [x!.asInts.reduce(1, *)])]
        case "Neg", "Floor", "Ceil", "Sqrt", "Not", "Abs":
            let f: (Double) -> Double = ["Neg": { -$0 }, "Floor": { $0.rounded(.down) }, "Ceil": { $0.rounded(.up) },
                                         "Sqrt": { $0.squareRoot() }, "Not": { $0 == 0 ? 1 : 0 }, "Abs": { abs($0) }][node.opType]!
            return [try elementwise([x!], shape: x!.shape) { f($0[0]) }]
        case "Where":
            let parts = [input(0)!, input(1)!, input(2)!]
            let shape = try Plan.broadcast(Plan.broadcast(parts[0].shape, parts[1].shape, node: node.label), parts[2].shape, node: node.label)
            return [try elementwise(parts, shape: shape, integer: parts[1].isInteger && parts[2].isInteger) { $0[0] != 0 ? $0[1] : $0[2] }]
        default:  // binary arithmetic
            let (a, b) = (input(0)!, input(1)!)
            let shape = try Plan.broadcast(a.shape, b.shape, node: node.label)
            let integer = a.isInteger && b.isInteger
            let f: ([Double]) -> Double
            switch node.opType {
            case "Add": f = { $0[0] + $0[1] }
            case "Sub": f = { $0[0] - $0[1] }
            case "Mul": f = { $0[0] * $0[1] }
            case "Div": f = integer ? { ($0[0] / $0[1]).rounded(.towardZero) } : { $0[0] / $0[1] }
            case "Min": f = { min($0[0], $0[1]) }
            case "Max": f = { max($0[0], $0[1]) }
            case "Equal": f = { $0[0] == $0[1] ? 1 : 0 }
            default: return nil
            }
            return [try elementwise([a, b], shape: shape, integer: integer || node.opType == "Equal", f)]
        }
    }

    /// For each axis, the indices a Slice keeps, with ONNX's clamping of starts and ends.
    static func sliceRanges(_ shape: [Int], starts: [Int], ends: [Int], axes: [Int], steps: [Int], node: GraphNode) throws -> [[Int]] {
        var ranges = shape.map { Array(0..<$0) }
        for (i, rawAxis) in axes.enumerated() {
            let axis = rawAxis < 0 ? rawAxis + shape.count : rawAxis
            let extent = shape[axis], step = steps[i]
            guard step != 0 else { throw BackboneError.invalidGraph("node '\(node.label)': Slice step 0") }
            func clamp(_ v: Int, _ low: Int, _ high: Int) -> Int { min(max(v, low), high) }
            var start = starts[i] < 0 ? starts[i] + extent : starts[i]
            var end = ends[i] < 0 ? ends[i] + extent : ends[i]
            if ends[i] >= Int(Int32.max) { end = extent }
            if ends[i] <= -Int(Int32.max) { end = -1 }
            if step > 0 {
                start = clamp(start, 0, extent); end = clamp(end, 0, extent)
                ranges[axis] = start < end ? Array(stride(from: start, to: end, by: step)) : []
            } else {
                start = clamp(start, 0, extent - 1); end = clamp(end, -1, extent - 1)
                ranges[axis] = start > end ? Array(stride(from: start, to: end, by: step)) : []
            }
        }
        return ranges
    }

    static func concat(_ parts: [ConstantTensor], axis: Int) throws -> ConstantTensor {
        var shape = parts[0].shape
        shape[axis] = parts.reduce(0) { $0 + $1.shape[axis] }
        let outer = shape[..<axis].reduce(1, *)
        let integer = parts.allSatisfy(\.isInteger)
        var floats: [Float] = [], ints: [Int64] = []
        for o in 0..<outer {
            for part in parts {
                let chunk = part.shape[axis...].reduce(1, *)
                if integer { ints += part.asInts[(o * chunk)..<((o + 1) * chunk)] } else { floats += part.asFloats[(o * chunk)..<((o + 1) * chunk)] }
            }
        }
        return ConstantTensor(shape: shape, floats: floats, ints: ints)
    }

    /// Applies `f` elementwise with numpy broadcasting; integer results when `integer`.
    static func elementwise(_ parts: [ConstantTensor], shape: [Int], integer: Bool? = nil,
                            _ f: ([Double]) -> Double) throws -> ConstantTensor {
        let integer = integer ?? parts.allSatisfy(\.isInteger)
        let values = parts.map { $0.isInteger ? $0.asInts.map(Double.init) : $0.asFloats.map(Double.init) }
        let strides = parts.map { part -> [Int] in
            let padded = [Int](repeating: 1, count: shape.count - part.shape.count) + part.shape
            let s = rowMajorStrides(padded)
            return padded.indices.map { padded[$0] == 1 ? 0 : s[$0] }
        }
        var result: [Double] = []
        result.reserveCapacity(shape.reduce(1, *))
        forEachIndex(shape) { index in
            result.append(f(parts.indices.map { p in values[p][zip(index, strides[p]).reduce(0) { $0 + $1.0 * $1.1 }] }))
        }
        return integer ? ConstantTensor(shape: shape, ints: result.map { Int64($0) })
            : ConstantTensor(shape: shape, floats: result.map(Float.init))
    }
}

func rowMajorStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    for i in stride(from: shape.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] }
    return strides
}

/// Calls `body` with every index of `shape` in row-major order.
func forEachIndex(_ shape: [Int], _ body: ([Int]) -> Void) {
    guard !shape.contains(0) else { return }
    var index = [Int](repeating: 0, count: shape.count)
    while true {
        body(index)
        var d = shape.count - 1
        while d >= 0 {
            index[d] += 1
            if index[d] < shape[d] { break }
            index[d] = 0
            d -= 1
        }
        if d < 0 { return }
    }
}

extension ConstantTensor {
    func reshaped(_ shape: [Int]) -> ConstantTensor { ConstantTensor(shape: shape, floats: floats, ints: ints) }

    /// The elements at `order` (flat indices), as a tensor of `shape`.
    func picking(_ order: [Int], shape: [Int]) -> ConstantTensor {
        isInteger ? ConstantTensor(shape: shape, ints: order.map { ints[$0] })
            : ConstantTensor(shape: shape, floats: order.map { floats[$0] })
    }
}
