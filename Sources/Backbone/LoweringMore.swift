import CDNNL
import Foundation

/// The lowering of the ops beyond convolution and pooling: broadcasting binaries, normalisations,
/// reductions, slices, resampling and padding. Same rules as `Lowering.swift`: each op meets
/// oneDNN here only, and operands are brought into a layout for which oneDNN has a JIT kernel
/// (a broadcast operand gets the layout of the full-size one; oneDNN's binary falls back to
/// its reference kernel otherwise).
extension CompiledNetwork {
    /// `value` in a dense layout: itself when dense (row-major, permuted or channel-blocked), else a plain copy.
    func dense(_ value: Value, label: String) throws -> Value {
        if value.md.isChannelBlocked || value.md.denseOrder != nil { return value }
        return try reorder(value, to: try .plain(value.md.shape), label: label)
    }

    func lowerBinary(_ kind: BinaryKind, constant c: ConstantTensor?, constantFirst: Bool, post: [Activation],
                     step: Step, outputDims: [Int], isLastUse: (String) -> Bool) throws {
        var src0Name = step.inputs[0]
        var src0 = values[src0Name]!
        var src1: Value
        if let c {
            src0 = try dense(src0, label: step.label)
            let dims = [Int](repeating: 1, count: max(0, outputDims.count - c.shape.count)) + c.shape
            let md = try src0.md.sameLayout(dims)
            src1 = Value(md: md, memory: try constant(c.floats, md: try .plain(dims), as: md), slot: nil)
        } else {
            src1 = values[step.inputs[1]]!
            if src0.md.shape != outputDims {
                guard kind.commutes else {
                    throw BackboneError.unsupportedOp(op: step.opType, node: step.node,
                                                      detail: "broadcasting the first operand of a non-commutative op")
                }
                swap(&src0, &src1)
                src0Name = step.inputs[1]
            }
            src0 = try dense(src0, label: step.label)
            if src1.md.shape.count < outputDims.count {
                // A lower-rank operand broadcasts from the right: view it with leading 1s.
                let plain = try reorder(src1, to: try .plain(src1.md.shape), label: step.label)
                let dims = [Int](repeating: 1, count: outputDims.count - src1.md.shape.count) + src1.md.shape
                src1 = try view(plain, md: try .plain(dims))
            }
            src1 = try reorder(src1, to: try src0.md.sameLayout(src1.md.shape), label: step.label)
        }
        guard src0.md.shape == outputDims else {
            throw BackboneError.unsupportedOp(op: step.opType, node: step.node,
                                              detail: "broadcasting both operands (\(src0.md.shape), \(src1.md.shape)) is not supported")
        }
        let algorithms: [BinaryKind: dnnl_alg_kind_t] = [.add: dnnl_binary_add, .mul: dnnl_binary_mul, .sub: dnnl_binary_sub,
                                                          .div: dnnl_binary_div, .max: dnnl_binary_max, .min: dnnl_binary_min]
        // c - x is computed as -(x - c).
        let postOps = (constantFirst && kind == .sub ? [PostOp.activation(.linear(alpha: -1, beta: 0))] : [])
            + post.map(PostOp.activation)
        var desc = dnnl_binary_desc_t()
        var md0 = src0.md, md1 = src1.md, dstMD = src0.md
        try dnnlCheck(dnnl_binary_desc_init(&desc, algorithms[kind]!, &md0, &md1, &dstMD), "binary_desc_init")
        let pd = try PrimitiveDesc(&desc, postOps: postOps, context: context, call: "primitive_desc_create(binary)")
        let dst = try output(step.output, md: src0.md, reusing: src0Name, isLastUse: isLastUse)
        try execute(pd, label: step.label, [(DNNL_ARG_SRC_0, src0.memory), (DNNL_ARG_SRC_1, src1.memory), (DNNL_ARG_DST, dst.memory)])
    }

    func lowerSoftmax(axis: Int, step: Step, isLastUse: (String) -> Bool) throws {
        let src = try dense(values[step.inputs[0]]!, label: step.label)
        var desc = dnnl_softmax_desc_t()
        var md = src.md
        try dnnlCheck(dnnl_softmax_forward_desc_init(&desc, dnnl_forward_inference, &md, Int32(axis)), "softmax_forward_desc_init")
        let pd = try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(softmax)")
        let dst = try output(step.output, md: src.md, reusing: step.inputs[0], isLastUse: isLastUse)
        try execute(pd, label: step.label, [(DNNL_ARG_SRC, src.memory), (DNNL_ARG_DST, dst.memory)])
    }

    func lowerLayerNorm(scale: [Float], shift: [Float], epsilon: Float, step: Step, isLastUse: (String) -> Bool) throws {
        let src = try reorder(values[step.inputs[0]]!, to: try .plain(values[step.inputs[0]]!.md.shape), label: step.label)
        var desc = dnnl_layer_normalization_desc_t()
        var md = src.md
        let flags = dnnl_use_scale.rawValue | dnnl_use_shift.rawValue
        try dnnlCheck(dnnl_layer_normalization_forward_desc_init(&desc, dnnl_forward_inference, &md, nil, epsilon, flags),
                      "layer_normalization_forward_desc_init")
        let pd = try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(layer_norm)")
        let dst = try output(step.output, md: src.md, reusing: step.inputs[0], isLastUse: isLastUse)
        try execute(pd, label: step.label, [(DNNL_ARG_SRC, src.memory), (DNNL_ARG_DST, dst.memory),
                                            (DNNL_ARG_SCALE, try constant(scale)), (DNNL_ARG_SHIFT, try constant(shift))])
    }

    func lowerReduce(_ kind: ReduceKind, step: Step, outputDims: [Int]) throws {
        let src = try reorder(values[step.inputs[0]]!, to: try .plain(values[step.inputs[0]]!.md.shape), label: step.label)
        var srcMD = src.md
        var dstMD = try MemoryDesc.plain(outputDims)
        var desc = dnnl_reduction_desc_t()
        let alg = kind == .mean ? dnnl_reduction_mean : kind == .max ? dnnl_reduction_max : dnnl_reduction_sum
        try dnnlCheck(dnnl_reduction_desc_init(&desc, alg, &srcMD, &dstMD, 0, 0), "reduction_desc_init")
        let pd = try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(reduction)")
        let dst = try output(step.output, md: dstMD)
        try execute(pd, label: step.label, [(DNNL_ARG_SRC, src.memory), (DNNL_ARG_DST, dst.memory)])
    }

    func lowerPRelu(slope: ConstantTensor, step: Step, isLastUse: (String) -> Bool) throws {
        let src = try dense(values[step.inputs[0]]!, label: step.label)
        let dims = [Int](repeating: 1, count: max(0, src.md.shape.count - slope.shape.count)) + slope.shape
        let weightsMD = try src.md.sameLayout(dims)
        var desc = dnnl_prelu_desc_t()
        var srcMD = src.md, wMD = weightsMD
        try dnnlCheck(dnnl_prelu_forward_desc_init(&desc, dnnl_forward_inference, &srcMD, &wMD), "prelu_forward_desc_init")
        let pd = try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(prelu)")
        let weights = try constant(slope.floats, md: try .plain(dims), as: pd.md(dnnl_query_weights_md))
        let dst = try output(step.output, md: src.md, reusing: step.inputs[0], isLastUse: isLastUse)
        try execute(pd, label: step.label, [(DNNL_ARG_SRC, src.memory), (DNNL_ARG_WEIGHTS, weights), (DNNL_ARG_DST, dst.memory)])
    }

    /// A slice is a reorder from a sub-memory view; channel slices of a blocked tensor stay blocked when aligned.
    func lowerSlice(axis: Int, start: Int, step: Step, outputDims: [Int]) throws {
        var src = values[step.inputs[0]]!
        let aligned = src.md.isChannelBlocked && axis == 1 && start % DNNLContext.channelBlock == 0
        if !aligned { src = try reorder(src, to: try .plain(src.md.shape), label: step.label) }
        var offsets = [Int](repeating: 0, count: outputDims.count)
        offsets[axis] = start
        var parent = src.md
        var sub = MemoryDesc()
        try dnnlCheck(dnnl_memory_desc_init_submemory(&sub, &parent, dnnlDims(outputDims), dnnlDims(offsets)), "memory_desc_init_submemory")
        let source = try view(src, md: sub)
        let dst = try output(step.output, md: aligned ? try .tagged(outputDims, DNNLContext.blockedTag) : try .plain(outputDims))
        try emitReorder(from: source, to: dst, label: step.label)
    }

    func lowerResize(linear: Bool, step: Step, outputDims: [Int]) throws {
        let src = try dense(values[step.inputs[0]]!, label: step.label)
        var srcMD = src.md
        var dstMD = try MemoryDesc.any(outputDims)
        var desc = dnnl_resampling_desc_t()
        try dnnlCheck(dnnl_resampling_forward_desc_init(&desc, dnnl_forward_inference, linear ? dnnl_resampling_linear : dnnl_resampling_nearest,
                                                        nil, &srcMD, &dstMD), "resampling_forward_desc_init")
        let pd = try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(resampling)")
        let dst = try output(step.output, md: pd.md(dnnl_query_dst_md))
        try execute(pd, label: step.label, [(DNNL_ARG_SRC, src.memory), (DNNL_ARG_DST, dst.memory)])
    }

    /// Padding writes the input into the interior of a buffer of its own; a constant border is
    /// filled once at load, a reflected or replicated one is copied row by row on every run.
    func lowerPad(begin: [Int], end: [Int], mode: PadMode, value: Float, step: Step, outputDims: [Int]) throws {
        let src = values[step.inputs[0]]!
        let srcDims = src.md.shape
        let md = try MemoryDesc.plain(outputDims)
        let pointer = allocate(md.byteCount)
        pointer.initializeMemory(as: Float.self, repeating: value, count: outputDims.reduce(1, *))
        let dst = Value(md: md, memory: try makeMemory(md, pointer: pointer), slot: nil)
        values[step.output] = dst
        func region(_ dims: [Int], _ offsets: [Int]) throws -> Value {
            var parent = md
            var sub = MemoryDesc()
            try dnnlCheck(dnnl_memory_desc_init_submemory(&sub, &parent, dnnlDims(dims), dnnlDims(offsets)), "memory_desc_init_submemory")
            return try view(dst, md: sub)
        }
        try emitReorder(from: src, to: try region(srcDims, begin), label: step.label)
        guard mode != .constant else { return }
        // Dim by dim, outermost first: dims already done span the padded extent, later ones the interior,
        // so corners are filled from rows that are themselves already padded.
        for d in srcDims.indices where begin[d] + end[d] > 0 {
            var dims = srcDims.indices.map { $0 < d ? outputDims[$0] : srcDims[$0] }
            dims[d] = 1
            let base = srcDims.indices.map { $0 < d ? 0 : begin[$0] }
            func at(_ index: Int) -> [Int] { var o = base; o[d] = index; return o }
            let first = begin[d], last = begin[d] + srcDims[d] - 1
            for i in 0..<begin[d] {
                let from = mode == .reflect ? first + 1 + i : first
                try emitReorder(from: try region(dims, at(from)), to: try region(dims, at(first - 1 - i)), label: step.label)
            }
            for i in 0..<end[d] {
                let from = mode == .reflect ? last - 1 - i : last
                try emitReorder(from: try region(dims, at(from)), to: try region(dims, at(last + 1 + i)), label: step.label)
            }
        }
    }

    /// Another oneDNN memory object over the same bytes, for a sub-region or a reshaped view.
    func view(_ value: Value, md: MemoryDesc) throws -> Value {
        var pointer: UnsafeMutableRawPointer?
        try dnnlCheck(dnnl_memory_get_data_handle(value.memory, &pointer), "memory_get_data_handle")
        let memory = try makeMemory(md, pointer: pointer)
        if isInputView(value.memory) { markInputView(memory) }
        return Value(md: md, memory: memory, slot: value.slot)
    }
}

extension MemoryDesc {
    /// For an unblocked dense layout, the dims ordered outermost first (e.g. [0, 2, 3, 1] for NHWC); nil otherwise.
    var denseOrder: [Int]? {
        guard let strides = plainStrides else { return nil }
        let dims = shape
        let order = dims.indices.sorted { strides[$0] != strides[$1] ? strides[$0] > strides[$1] : $0 < $1 }
        var expected = 1
        for d in order.reversed() {
            if dims[d] != 1 && strides[d] != expected { return nil }
            expected *= dims[d]
        }
        return order
    }

    /// A dense descriptor for `dims` in this descriptor's layout (same block size or same dim order),
    /// as oneDNN's binary and PReLU kernels want for a broadcast operand.
    func sameLayout(_ dims: [Int]) throws -> MemoryDesc {
        if isChannelBlocked, dims.count == 4 { return try .tagged(dims, DNNLContext.blockedTag) }
        guard let order = denseOrder, order.count == dims.count else { return try .plain(dims) }
        var strides = [Int](repeating: 0, count: dims.count)
        var running = 1
        for d in order.reversed() {
            strides[d] = running
            running *= dims[d]
        }
        return try .strided(dims, strides: strides)
    }
}
