import CDNNL

/// Thin, throwing wrappers over the oneDNN C API: status checks, memory descriptors, and the
/// engine/stream pair. Lowering decisions live in `Lowering.swift`, not here.

@inline(__always)
func dnnlCheck(_ status: dnnl_status_t, _ call: @autoclosure () -> String) throws {
    guard status == dnnl_success else { throw BackboneError.dnnl(call: call(), status: Int(status.rawValue)) }
}

/// oneDNN takes dimension lists as fixed C arrays of `DNNL_MAX_NDIMS` entries.
func dnnlDims(_ values: [Int]) -> [dnnl_dim_t] {
    values.map { dnnl_dim_t($0) } + [dnnl_dim_t](repeating: 0, count: Int(DNNL_MAX_NDIMS) - values.count)
}

typealias MemoryDesc = dnnl_memory_desc_t

extension MemoryDesc {
    /// A descriptor with an explicit format tag.
    static func tagged(_ dims: [Int], _ tag: dnnl_format_tag_t, type: dnnl_data_type_t = dnnl_f32) throws -> MemoryDesc {
        var md = MemoryDesc()
        try dnnlCheck(dnnl_memory_desc_init_by_tag(&md, Int32(dims.count), dnnlDims(dims), type, tag),
                      "memory_desc_init_by_tag(\(dims))")
        return md
    }

    /// Dense row-major layout, the layout of NumPy arrays and of ONNX tensors.
    static func plain(_ dims: [Int], type: dnnl_data_type_t = dnnl_f32) throws -> MemoryDesc {
        let tags: [dnnl_format_tag_t] = [dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde, dnnl_abcdef]
        guard (1...tags.count).contains(dims.count) else {
            throw BackboneError.invalidGraph("tensors of rank \(dims.count) are not supported")
        }
        return try tagged(dims, tags[dims.count - 1], type: type)
    }

    /// "Let the primitive choose": used where oneDNN knows the fastest layout better than we do.
    static func any(_ dims: [Int], type: dnnl_data_type_t = dnnl_f32) throws -> MemoryDesc {
        try tagged(dims, dnnl_format_tag_any, type: type)
    }

    /// An arbitrary strided view, used for zero-copy transposes.
    static func strided(_ dims: [Int], strides: [Int]) throws -> MemoryDesc {
        var md = MemoryDesc()
        try dnnlCheck(dnnl_memory_desc_init_by_strides(&md, Int32(dims.count), dnnlDims(dims), dnnl_f32, dnnlDims(strides)),
                      "memory_desc_init_by_strides(\(dims), \(strides))")
        return md
    }

    /// The logical dimensions (the C field `dims` is a fixed-size tuple).
    var shape: [Int] {
        withUnsafeBytes(of: dims) { raw in
            Array(raw.bindMemory(to: dnnl_dim_t.self).prefix(Int(ndims)).map(Int.init))
        }
    }

    /// Bytes needed to hold a tensor of this descriptor, including block padding.
    var byteCount: Int {
        withUnsafePointer(to: self) { dnnl_memory_desc_get_size($0) }
    }

    /// Strides of a blocked layout without inner blocks; `nil` for blocked-by-channel layouts.
    var plainStrides: [Int]? {
        guard format_kind == dnnl_blocked, format_desc.blocking.inner_nblks == 0 else { return nil }
        return withUnsafeBytes(of: format_desc.blocking.strides) { raw in
            Array(raw.bindMemory(to: dnnl_dim_t.self).prefix(Int(ndims)).map(Int.init))
        }
    }

    /// True for a channel-blocked layout such as nChw16c, the layout convolutions are fastest in.
    var isChannelBlocked: Bool {
        format_kind == dnnl_blocked && format_desc.blocking.inner_nblks > 0
    }

    /// The same dims and layout holding another element type (element strides do not change).
    func withType(_ type: dnnl_data_type_t) -> MemoryDesc {
        var md = self
        md.data_type = type
        md.extra = dnnl_memory_extra_desc_t()
        return md
    }

    /// True for u8/s8 storage.
    var isInt8: Bool { data_type == dnnl_u8 || data_type == dnnl_s8 }

    func same(as other: MemoryDesc) -> Bool {
        var a = self, b = other
        return dnnl_memory_desc_equal(&a, &b) != 0
    }
}

/// The CPU engine and the single in-order stream every primitive runs on.
///
/// oneDNN's OpenMP runtime builds a thread team per calling thread, so one context is driven
/// from one thread at a time.
final class DNNLContext {
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t

    init() throws {
        var engine: dnnl_engine_t?
        try dnnlCheck(dnnl_engine_create(&engine, dnnl_cpu, 0), "engine_create")
        var stream: dnnl_stream_t?
        try dnnlCheck(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue), "stream_create")
        self.engine = engine!
        self.stream = stream!
    }

    deinit {
        dnnl_stream_destroy(stream)
        dnnl_engine_destroy(engine)
    }

    /// The channel block size the fastest convolution kernels use on this CPU.
    static var channelBlock: Int {
        let isa = dnnl_get_effective_cpu_isa()
        return isa.rawValue >= dnnl_cpu_isa_avx512_core.rawValue ? 16 : 8
    }

    static var blockedTag: dnnl_format_tag_t { channelBlock == 16 ? dnnl_aBcd16b : dnnl_aBcd8b }
}

/// A primitive descriptor, owned. Queried for the layouts a primitive chose, then turned into a primitive.
final class PrimitiveDesc {
    let handle: dnnl_primitive_desc_t

    /// Creates from an op descriptor (`dnnl_convolution_desc_t` and friends) and optional post-ops.
    /// - Parameter outputScales: oneDNN's output scales (int8): a mask (0 per tensor, 2 per output channel) and the values.
    /// - Parameters:
    ///   - sumScale: what `PostOp.sum` multiplies the destination's previous content by (int8 rescaling).
    ///   - sumType: how the sum reads the destination's previous content, when not as the destination's
    ///     own type (an s8 residual under a u8 destination).
    init<OpDesc>(_ desc: inout OpDesc, postOps: [PostOp] = [], outputScales: (mask: Int32, values: [Float])? = nil,
                 sumScale: Float = 1, sumType: dnnl_data_type_t = dnnl_data_type_undef, context: DNNLContext, call: String) throws {
        let attr = try Self.attributes(postOps, outputScales: outputScales, sumScale: sumScale, sumType: sumType)
        defer { if let attr { dnnl_primitive_attr_destroy(attr) } }
        var pd: dnnl_primitive_desc_t?
        try withUnsafePointer(to: &desc) { pointer in
            try dnnlCheck(dnnl_primitive_desc_create(&pd, UnsafeRawPointer(pointer), attr, context.engine, nil), call)
        }
        handle = pd!
    }

    init(owning handle: dnnl_primitive_desc_t) { self.handle = handle }

    deinit { dnnl_primitive_desc_destroy(handle) }

    static func attributes(_ postOps: [PostOp], outputScales: (mask: Int32, values: [Float])? = nil,
                           sumScale: Float = 1, sumType: dnnl_data_type_t = dnnl_data_type_undef) throws -> dnnl_primitive_attr_t? {
        guard !postOps.isEmpty || outputScales != nil else { return nil }
        var attr: dnnl_primitive_attr_t?
        try dnnlCheck(dnnl_primitive_attr_create(&attr), "primitive_attr_create")
        if let outputScales {
            try dnnlCheck(dnnl_primitive_attr_set_output_scales(attr, Int64(outputScales.values.count), outputScales.mask, outputScales.values),
                          "primitive_attr_set_output_scales")
        }
        guard !postOps.isEmpty else { return attr }
        var ops: dnnl_post_ops_t?
        try dnnlCheck(dnnl_post_ops_create(&ops), "post_ops_create")
        defer { dnnl_post_ops_destroy(ops) }
        for op in postOps {
            switch op {
            case .sum:
                try dnnlCheck(dnnl_post_ops_append_sum_v2(ops, sumScale, sumType), "post_ops_append_sum_v2")
            case .activation(let activation):
                let (alg, alpha, beta) = activation.dnnl
                try dnnlCheck(dnnl_post_ops_append_eltwise(ops, 1, alg, alpha, beta), "post_ops_append_eltwise")
            }
        }
        try dnnlCheck(dnnl_primitive_attr_set_post_ops(attr, ops), "primitive_attr_set_post_ops")
        return attr
    }

    func md(_ query: dnnl_query_t, _ index: Int32 = 0) -> MemoryDesc {
        dnnl_primitive_desc_query_md(handle, query, index).pointee
    }

    /// The implementation oneDNN picked, e.g. `jit:avx512_core`; `ref` means a slow reference kernel.
    var implementation: String {
        var name: UnsafePointer<CChar>?
        _ = dnnl_primitive_desc_query(handle, dnnl_query_impl_info_str, 0, &name)
        return name.map { String(cString: $0) } ?? "?"
    }

    /// True when oneDNN picked its reference (unoptimised) implementation.
    var isReference: Bool { implementation.hasPrefix("ref") }
}

extension Activation {
    /// The oneDNN eltwise algorithm and its alpha/beta for this activation.
    var dnnl: (dnnl_alg_kind_t, Float, Float) {
        switch self {
        case .relu(let slope): return (dnnl_eltwise_relu, slope, 0)
        case let .clip(low, high): return (dnnl_eltwise_clip, low, high)
        case .sigmoid: return (dnnl_eltwise_logistic, 0, 0)
        case .hardSwish: return (dnnl_eltwise_hardswish, 0, 0)
        case let .linear(alpha, beta): return (dnnl_eltwise_linear, alpha, beta)
        case .tanh: return (dnnl_eltwise_tanh, 0, 0)
        case .swish(let alpha): return (dnnl_eltwise_swish, alpha, 0)
        case .geluErf: return (dnnl_eltwise_gelu_erf, 0, 0)
        case .geluTanh: return (dnnl_eltwise_gelu_tanh, 0, 0)
        case .mish: return (dnnl_eltwise_mish, 0, 0)
        case .softplus: return (dnnl_eltwise_soft_relu, 1, 0)
        case .elu(let alpha): return (dnnl_eltwise_elu, alpha, 0)
        case .exp: return (dnnl_eltwise_exp, 0, 0)
        case .sqrt: return (dnnl_eltwise_sqrt, 0, 0)
        case .abs: return (dnnl_eltwise_abs, 0, 0)
        case .square: return (dnnl_eltwise_square, 0, 0)
        case .erf:
            // The planner rejects an Erf that is not part of a GELU, so none reaches oneDNN.
            preconditionFailure("Erf outside a GELU pattern reached lowering")
        }
    }
}
