import CDNNL
import Foundation

/// A `Plan` lowered to oneDNN primitives for one batch size: the only place where ops meet oneDNN.
///
/// Layout policy: convolutions write channel-blocked tensors (nChw16c on AVX-512, nChw8c otherwise),
/// which is measurably faster than letting oneDNN pick; every other op works in whatever layout its
/// input has, and a reorder is inserted only where an op needs a different one. Intermediate buffers
/// come from a pool and are reused as soon as their last reader has run. With batch 1, a Concat's
/// inputs are written straight into their slices of its output where oneDNN allows it
/// (`ConcatPlacement`), so the Concat copies nothing.
final class CompiledNetwork {
    /// Input elements expected per call, in the ONNX input's own layout.
    let inputShape: [Int]
    /// For each requested output, its shape flattened to `[batch, features]`.
    let outputShapes: [[Int]]
    /// The implementation picked for each primitive, in execution order (for diagnostics and tests).
    private(set) var implementations: [(step: String, implementation: String)] = []

    let context: DNNLContext
    private var executions: [(primitive: dnnl_primitive_t, args: [dnnl_exec_arg_t])] = []
    /// One memory per requested output, in the plan's output order (emitted in execution order).
    private var outputMemories: [dnnl_memory_t?] = []

    // Everything below is owned, and released in deinit.
    private var memories: [dnnl_memory_t] = []
    private var buffers: [UnsafeMutableRawPointer] = []
    private var primitiveDescs: [PrimitiveDesc] = []

    /// A tensor during lowering: its layout, its oneDNN memory object, and the pool slot behind it.
    struct Value {
        var md: MemoryDesc
        var memory: dnnl_memory_t
        /// `nil` for memory the caller owns (the input) or constants.
        var slot: Int?
        /// For u8/s8 storage, what one unit is worth: the real value is `stored * scale` (1 for f32).
        var scale: Float = 1
    }

    private struct Slot {
        var pointer: UnsafeMutableRawPointer
        var capacity: Int
        /// How many live values view this slot; it returns to the pool at zero.
        var views: Int
    }

    var values: [String: Value] = [:]
    private var slots: [Slot] = []
    private var freeSlots: [Int] = []
    /// Slots holding reordered copies that only the step being lowered reads.
    private var temporaries: [Int] = []
    /// The input memory and every view of it: their data handle is the caller's buffer, set per run.
    private var inputViews: [dnnl_memory_t] = []

    /// Activation ranges for int8 convolutions; `nil` builds an all-fp32 network.
    let calibration: Calibration?
    /// The graph input: the convolution reading it stays fp32 (quantising normalised pixels costs the most accuracy).
    private let graphInput: String
    /// Convolutions that run in int8, by step label (for tests and diagnostics).
    private(set) var int8Convolutions: [String] = []
    /// Tensors stored as u8/s8 (nhwc) between the steps that produce and read them, with the
    /// quantisation int8 convolutions write them at; every other tensor is f32.
    let int8Storage: [String: ActivationQuantization]
    /// The names of `int8Storage` (for tests and diagnostics).
    var int8Tensors: Set<String> { Set(int8Storage.keys) }

    /// Which tensors live in a slice of a Concat's buffer (empty for int8 networks and batch > 1).
    private let concatPlacement: ConcatPlacement
    /// The pool slot of each `concatPlacement` root, once the first of its tensors is made.
    private var rootSlots: [Int: Int] = [:]
    /// Names whose current value is their `concatPlacement` region (rather than a buffer of their own).
    private var inRegion: Set<String> = []
    /// Concats that copy nothing because their inputs were written in place (for tests and diagnostics).
    private(set) var inPlaceConcats: [String] = []

    init(plan: Plan, context: DNNLContext, calibration: Calibration? = nil) throws {
        self.context = context
        self.calibration = calibration
        graphInput = plan.input
        int8Storage = Self.int8Storage(plan, calibration: calibration)
        // int8 tensors are nhwc u8/s8 at per-tensor scales a Concat would have to reconcile: in-place
        // Concat is an fp32 optimisation only.
        concatPlacement = calibration == nil ? ConcatPlacement(plan: plan, channelBlock: DNNLContext.channelBlock) : ConcatPlacement()
        inputShape = plan.shapes[plan.input]!
        outputShapes = plan.outputs.map { name in
            let shape = plan.shapes[name]!
            return [shape[0], shape.dropFirst().reduce(1, *)]
        }

        outputMemories = [dnnl_memory_t?](repeating: nil, count: plan.outputs.count)
        var lastUse: [String: Int] = [:]
        for (index, step) in plan.steps.enumerated() {
            for name in step.inputs { lastUse[name] = index }
        }
        for name in plan.outputs { lastUse[name] = Int.max }

        let inputMD = try MemoryDesc.plain(inputShape)
        let input = try makeMemory(inputMD, pointer: nil)
        inputViews = [input]
        values[plan.input] = Value(md: inputMD, memory: input, slot: nil)

        for (index, step) in plan.steps.enumerated() {
            let isLastUse = { (name: String) in lastUse[name] == index }
            do {
                // A step that cannot read u8/s8 reads a dequantised f32 copy (same layout).
                var quantized: [(String, Value)] = []
                for name in Set(step.inputs) {
                    guard let value = values[name], value.md.isInt8,
                          !Self.readsInt8(step, name, graphInput: graphInput, calibration: calibration) else { continue }
                    quantized.append((name, value))
                    values[name] = try reorder(value, to: value.md.withType(dnnl_f32), label: step.label, scale: value.scale)
                }
                try lower(step, index: index, isLastUse: isLastUse, shapes: plan.shapes)
                for (name, value) in quantized { values[name] = value }
            } catch BackboneError.dnnl(let call, let status) {
                throw BackboneError.dnnl(call: "\(call) for \(step.opType) node '\(step.node)'", status: status)
            }
            if let outputIndex = plan.outputs.firstIndex(of: step.output) {
                try emitOutput(step.output, index: outputIndex)
            }
            for name in Set(step.inputs) where isLastUse(name) { release(name) }
            for slot in temporaries {
                slots[slot].views = 0
                freeSlots.append(slot)
            }
            temporaries.removeAll()
            if lastUse[step.output] == nil { release(step.output) }
            for (root, description) in concatPlacement.roots.enumerated() where description.lastConcat == index {
                // Nothing more is placed in this root: its buffer now lives only as long as its views.
                if let slot = rootSlots[root] { releaseSlot(slot) }
            }
        }
        if plan.outputs.contains(plan.input) {
            try emitOutput(plan.input, index: plan.outputs.firstIndex(of: plan.input)!)
        }
    }

    deinit {
        for execution in executions { dnnl_primitive_destroy(execution.primitive) }
        for memory in memories { dnnl_memory_destroy(memory) }
        for buffer in buffers { free(buffer) }
    }

    /// Primitives whose implementation is oneDNN's slow reference kernel.
    var referenceKernels: [String] {
        implementations.filter { $0.implementation.hasPrefix("ref") }.map { "\($0.step): \($0.implementation)" }
    }

    /// Runs the network on `input` (dense, ONNX layout) and writes each output to `outputs[i]` as `[batch, features]`.
    func run(input: UnsafeRawPointer, outputs: [UnsafeMutableRawPointer]) throws {
        for view in inputViews {
            try dnnlCheck(dnnl_memory_set_data_handle(view, UnsafeMutableRawPointer(mutating: input)), "memory_set_data_handle")
        }
        for (memory, pointer) in zip(outputMemories, outputs) {
            guard let memory else { continue }
            try dnnlCheck(dnnl_memory_set_data_handle(memory, pointer), "memory_set_data_handle")
        }
        for execution in executions {
            try execution.args.withUnsafeBufferPointer { args in
                try dnnlCheck(dnnl_primitive_execute(execution.primitive, context.stream, Int32(args.count), args.baseAddress),
                              "primitive_execute")
            }
        }
        try dnnlCheck(dnnl_stream_wait(context.stream), "stream_wait")
    }

    // MARK: - Lowering, one case per op

    private func lower(_ step: Step, index: Int, isLastUse: (String) -> Bool, shapes: [String: [Int]]) throws {
        let outputDims = shapes[step.output]!
        switch step.op {
        case .convolution(let conv):
            try lowerConvolution(conv, step: step, outputDims: outputDims, isLastUse: isLastUse)

        case let .batchNorm(scale, shift, mean, variance, epsilon, relu):
            let src = values[step.inputs[0]]!
            var desc = dnnl_batch_normalization_desc_t()
            var md = src.md
            let flags = dnnl_use_global_stats.rawValue | dnnl_use_scale.rawValue | dnnl_use_shift.rawValue
                | (relu ? dnnl_fuse_norm_relu.rawValue : 0)
            try dnnlCheck(dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_inference, &md, epsilon, flags),
                          "batch_normalization_forward_desc_init")
            let pd = try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(batch_norm)")
            let dst = try output(step.output, md: src.md, reusing: step.inputs[0], isLastUse: isLastUse)
            try execute(pd, label: step.label, [
                (DNNL_ARG_SRC, src.memory), (DNNL_ARG_DST, dst.memory),
                (DNNL_ARG_MEAN, try constant(mean)), (DNNL_ARG_VARIANCE, try constant(variance)),
                (DNNL_ARG_SCALE, try constant(scale)), (DNNL_ARG_SHIFT, try constant(shift)),
            ])

        case .activation(let activations):
            var src = try dense(values[step.inputs[0]]!, label: step.label)
            let dst = try output(step.output, md: src.md, reusing: step.inputs[0], isLastUse: isLastUse)
            for activation in activations {
                var desc = dnnl_eltwise_desc_t()
                var md = dst.md
                let (alg, alpha, beta) = activation.dnnl
                try dnnlCheck(dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_inference, alg, &md, alpha, beta),
                              "eltwise_forward_desc_init")
                let pd = try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(eltwise)")
                try execute(pd, label: step.label, [(DNNL_ARG_SRC, src.memory), (DNNL_ARG_DST, dst.memory)])
                // Later activations of the chain run in place.
                src = dst
            }

        case let .binary(kind, constantOperand, constantFirst, post):
            try lowerBinary(kind, constant: constantOperand, constantFirst: constantFirst, post: post, step: step,
                            outputDims: outputDims, isLastUse: isLastUse)

        case .maxPool(let window):
            try lowerPooling(dnnl_pooling_max, window, step: step, outputDims: outputDims)
        case let .averagePool(window, countIncludePad):
            try lowerPooling(countIncludePad ? dnnl_pooling_avg_include_padding : dnnl_pooling_avg_exclude_padding,
                             window, step: step, outputDims: outputDims)
        case .globalAveragePool:
            let dims = values[step.inputs[0]]!.md.shape
            let window = Pooling(kernel: [dims[2], dims[3]], strides: [1, 1], padsBegin: [0, 0], padsEnd: [0, 0], dilations: [1, 1])
            try lowerPooling(dnnl_pooling_avg_exclude_padding, window, step: step, outputDims: outputDims)

        case .reshape(let dims):
            let src = try reorder(values[step.inputs[0]]!, to: try .plain(values[step.inputs[0]]!.md.shape), label: step.label)
            try alias(step.output, of: src, md: try .plain(dims))

        case .transpose(let permutation):
            let src = try reorder(values[step.inputs[0]]!, to: try .plain(values[step.inputs[0]]!.md.shape), label: step.label)
            let strides = src.md.plainStrides!
            let md = try MemoryDesc.strided(permutation.map { src.md.shape[$0] }, strides: permutation.map { strides[$0] })
            try alias(step.output, of: src, md: md)

        case let .innerProduct(weights, bias, m):
            let srcDims = values[step.inputs[0]]!.md.shape
            var srcMD = try MemoryDesc.plain(srcDims)
            var weightsMD = try MemoryDesc.any([m, srcDims[1]])
            var biasMD = try MemoryDesc.plain([m])
            var dstMD = try MemoryDesc.plain(outputDims)
            var desc = dnnl_inner_product_desc_t()
            try dnnlCheck(dnnl_inner_product_forward_desc_init(&desc, dnnl_forward_inference, &srcMD, &weightsMD, &biasMD, &dstMD),
                          "inner_product_forward_desc_init")
            let pd = try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(inner_product)")
            let src = try reorder(values[step.inputs[0]]!, to: srcMD, label: step.label)
            let packed = try constant(weights, md: try .plain([m, srcDims[1]]), as: pd.md(dnnl_query_weights_md))
            let dst = try output(step.output, md: dstMD)
            try execute(pd, label: step.label, [(DNNL_ARG_SRC, src.memory), (DNNL_ARG_WEIGHTS, packed),
                                         (DNNL_ARG_BIAS, try constant(bias)), (DNNL_ARG_DST, dst.memory)])

        case .concat(let axis):
            if concatPlacement.regions[step.output] != nil {
                // In place: the inputs already sit side by side in this Concat's buffer. One whose
                // producer wrote another layout (so not in its region) is copied there now, before
                // any Concat covering its region is read.
                for name in step.inputs where !inRegion.contains(name) {
                    let produced = values[name]!
                    let placed = try regionValue(name)
                    try emitReorder(from: produced, to: placed, label: step.label)
                    if let slot = produced.slot { releaseSlot(slot) }
                }
                try regionValue(step.output)
                inPlaceConcats.append(step.label)
                return
            }
            var sources = step.inputs.map { values[$0]! }
            var pd: PrimitiveDesc
            if let blocked = try? makeConcat(sources.map(\.md), axis: axis), !blocked.isReference {
                pd = blocked
            } else {
                // Blocked layouts concatenate along a partially filled channel block only by the reference kernel.
                sources = try sources.map { try reorder($0, to: try .plain($0.md.shape), label: step.label) }
                pd = try makeConcat(sources.map(\.md), axis: axis)
            }
            let dst = try output(step.output, md: pd.md(dnnl_query_dst_md))
            var args = sources.enumerated().map { (DNNL_ARG_MULTIPLE_SRC + Int32($0.offset), $0.element.memory) }
            args.append((DNNL_ARG_DST, dst.memory))
            try execute(pd, label: step.label, args)

        case let .pad(begin, end, mode, value):
            try lowerPad(begin: begin, end: end, mode: mode, value: value, step: step, outputDims: outputDims)
        case .softmax(let axis):
            try lowerSoftmax(axis: axis, step: step, isLastUse: isLastUse)
        case let .layerNorm(scale, shift, epsilon):
            try lowerLayerNorm(scale: scale, shift: shift, epsilon: epsilon, step: step, isLastUse: isLastUse)
        case let .reduce(kind, _):
            try lowerReduce(kind, step: step, outputDims: outputDims)
        case .prelu(let slope):
            try lowerPRelu(slope: slope, step: step, isLastUse: isLastUse)
        case let .slice(axis, start, _):
            try lowerSlice(axis: axis, start: start, step: step, outputDims: outputDims)
        case .resize(let linear, _):
            try lowerResize(linear: linear, step: step, outputDims: outputDims)
        }
    }

    private func lowerConvolution(_ conv: Convolution, step: Step, outputDims: [Int], isLastUse: (String) -> Bool) throws {
        let src = values[step.inputs[0]]!
        let groups = conv.groups
        let weightDims = groups == 1 ? conv.weightShape
            : [groups, conv.outChannels / groups] + conv.weightShape.dropFirst()
        let sumValue = conv.sumInput.map { values[$0]! }

        // int8: per-output-channel s8 weights; the input as stored (u8/s8 at its producer's scale) or
        // quantised from f32 with its calibrated scale; s32 accumulation rescaled by oneDNN's output
        // scales; the result written as u8/s8 when `int8Storage` says so, else f32.
        let calibrated = Self.inputQuantization(step, graphInput: graphInput, calibration: calibration)
        let inputQuantization = calibrated.map { q in
            src.md.isInt8 ? ActivationQuantization(scale: src.scale, unsigned: src.md.data_type == dnnl_u8) : q
        }
        let int8Weights = inputQuantization.map { _ in quantizeWeights(conv.weights, outChannels: conv.outChannels) }
        var useInt8 = inputQuantization != nil
        var outputQuantization = useInt8 ? int8Storage[step.output] : nil
        if let sum = sumValue, !sum.md.isInt8, outputQuantization?.unsigned == true, let range = calibration?.ranges[step.output] {
            // An f32 residual converted into a u8 destination would lose its negative values.
            outputQuantization = ActivationQuantization(range, signed: true)
        }
        /// Whether the destination's scale folds into the output scales (ReLU-like post-ops), or
        /// needs a final `linear` post-op (Swish and friends).
        let folds = conv.postOps.allSatisfy(\.commutesWithScaling)

        // oneDNN's `auto` takes Winograd for a 3×3 stride-1 convolution only from batch 4 up (a rule tuned on
        // Xeons); on this project's machines it is faster at batch 1 too (ResNet-50 at batch 1: 1.24×
        // onnxruntime against 1.06× direct, README), so fp32 asks for it first, `auto` where oneDNN has none.
        let winograd = !useInt8 && groups == 1 && conv.weightShape.suffix(2) == [3, 3]
            && conv.strides.allSatisfy { $0 == 1 } && conv.dilations.allSatisfy { $0 == 1 }

        func describe(src srcChoice: MemoryDesc, dst dstChoice: MemoryDesc,
                      algorithm: dnnl_alg_kind_t = dnnl_convolution_auto) throws -> PrimitiveDesc {
            var srcMD = srcChoice
            var weightsMD = try MemoryDesc.any(weightDims, type: useInt8 ? dnnl_s8 : dnnl_f32)
            var biasMD = try MemoryDesc.plain([conv.outChannels])
            var dstMD = dstChoice
            var desc = dnnl_convolution_desc_t()
            try dnnlCheck(dnnl_dilated_convolution_forward_desc_init(
                &desc, dnnl_forward_inference, algorithm, &srcMD, &weightsMD, &biasMD, &dstMD,
                dnnlDims(conv.strides), dnnlDims(conv.dilations.map { $0 - 1 }),
                dnnlDims(conv.padsBegin), dnnlDims(conv.padsEnd)), "convolution_forward_desc_init")
            guard useInt8, let int8Weights, let inputQuantization else {
                return try PrimitiveDesc(&desc, postOps: conv.postOps, context: context, call: "primitive_desc_create(convolution)")
            }
            let accumulator = int8Weights.scales.map { $0 * inputQuantization.scale }
            var postOps = conv.postOps
            var scales = accumulator
            if let out = outputQuantization, dstChoice.isInt8 {
                if folds {
                    scales = accumulator.map { $0 / out.scale }
                    postOps = postOps.map { $0.rescaled(by: 1 / out.scale) }
                } else {
                    postOps.append(.activation(.linear(alpha: 1 / out.scale, beta: 0)))
                }
            }
            let sum = residualPlacement(dst: dstChoice)
            return try PrimitiveDesc(&desc, postOps: postOps, outputScales: (mask: 2, values: scales),
                                     sumScale: dstChoice.isInt8 && folds ? sum.scale / (outputQuantization?.scale ?? 1) : sum.scale,
                                     sumType: sum.type, context: context, call: "primitive_desc_create(convolution)")
        }
        /// How the residual sits in the destination buffer before the sum post-op reads it: an int8
        /// residual under an int8 destination as it is stored (u8 or s8, its own scale); one of the
        /// destination's type as it is; otherwise converted to the destination's type and scale.
        func residualPlacement(dst: MemoryDesc) -> (type: dnnl_data_type_t, scale: Float, convert: Float?) {
            guard let sumValue else { return (dnnl_data_type_undef, 1, nil) }
            if (dst.isInt8 && sumValue.md.isInt8) || sumValue.md.data_type == dst.data_type {
                return (sumValue.md.data_type, sumValue.scale, nil)
            }
            let dstScale = dst.isInt8 ? outputQuantization?.scale ?? 1 : 1
            return (dst.data_type, dstScale, sumValue.scale / dstScale)
        }
        // Preferred layouts first: the residual's own layout, then channel-blocked, then oneDNN's choice.
        // A layout for which oneDNN has only its reference kernel (grouped convolutions with few
        // channels per group, say) is skipped for the next one.
        let srcDefault = src.md.isChannelBlocked ? src.md : try MemoryDesc.any(src.md.shape)
        var candidates: [(MemoryDesc, MemoryDesc)] = []
        if let sum = sumValue, sum.md.isChannelBlocked { candidates.append((srcDefault, sum.md)) }
        candidates += [(srcDefault, try .tagged(outputDims, DNNLContext.blockedTag)), (srcDefault, try .any(outputDims)),
                       (try .any(src.md.shape), try .any(outputDims)), (try .plain(src.md.shape), try .plain(outputDims))]
        var chosen: PrimitiveDesc?
        var firstWorking: PrimitiveDesc?
        var lastError: Error?
        if let inputQuantization {
            // oneDNN's int8 kernels work on nhwc; `any` lets them say so.
            let srcMD = try MemoryDesc.any(src.md.shape, type: inputQuantization.dataType)
            var dsts = [try MemoryDesc.any(outputDims)]
            if let out = outputQuantization { dsts.insert(try .any(outputDims, type: out.dataType), at: 0) }
            for dst in dsts where chosen == nil {
                if let pd = try? describe(src: srcMD, dst: dst), !pd.isReference { chosen = pd }
            }
            if let pd = chosen, !pd.md(dnnl_query_dst_md).isInt8 { outputQuantization = nil }
            // No int8 kernel for this convolution: it stays fp32.
            useInt8 = chosen != nil
            if !useInt8 { outputQuantization = nil }
        }
        if winograd {
            for (srcChoice, dstChoice) in candidates where chosen == nil {
                if let pd = try? describe(src: srcChoice, dst: dstChoice, algorithm: dnnl_convolution_winograd), !pd.isReference { chosen = pd }
            }
        }
        for (srcChoice, dstChoice) in candidates where chosen == nil {
            do {
                let pd = try describe(src: srcChoice, dst: dstChoice)
                if !pd.isReference { chosen = pd; break }
                firstWorking = firstWorking ?? pd
            } catch {
                lastError = error
            }
        }
        guard let pd = chosen ?? firstWorking else { throw lastError! }
        let input: Value
        let weights: dnnl_memory_t
        if useInt8, let inputQuantization, let int8Weights {
            // An input already stored as int8 is used as is; an f32 one is quantised on the way in.
            input = try reorder(src, to: pd.md(dnnl_query_src_md), label: step.label,
                                scale: src.md.isInt8 ? nil : 1 / inputQuantization.scale)
            weights = try constant(int8Weights.values, md: try .plain(weightDims, type: dnnl_s8), as: pd.md(dnnl_query_weights_md))
            int8Convolutions.append(step.label)
        } else {
            input = try reorder(src, to: pd.md(dnnl_query_src_md), label: step.label, scale: src.md.isInt8 ? src.scale : nil)
            weights = try constant(conv.weights, md: try .plain(weightDims), as: pd.md(dnnl_query_weights_md))
        }
        let dstMD = pd.md(dnnl_query_dst_md)
        let dstScale = dstMD.isInt8 ? outputQuantization!.scale : 1
        let dst: Value
        if let sum = sumValue, let name = conv.sumInput {
            // The sum post-op adds what is already in dst: the residual lands there, in place if it is
            // dead, converted to the destination's type and scale if `residualPlacement` says so.
            let placement = residualPlacement(dst: dstMD)
            let placed = placement.convert == nil ? dstMD.withType(sum.md.data_type) : dstMD
            if let slot = sum.slot, isLastUse(name), slots[slot].views == 1, sum.md.same(as: placed) {
                dst = try alias(step.output, of: sum, md: dstMD)
            } else {
                dst = try output(step.output, md: dstMD)
                try emitReorder(from: sum, to: try view(dst, md: placed), label: step.label, scale: placement.convert)
            }
        } else {
            dst = try output(step.output, md: dstMD)
        }
        values[step.output]!.scale = dstScale
        // oneDNN 2.x adds the bias before applying the output scales: in int8 it is in accumulator units.
        let bias = useInt8 ? zip(conv.bias, int8Weights!.scales).map { $0 / ($1 * inputQuantization!.scale) } : conv.bias
        try execute(pd, label: step.label, [(DNNL_ARG_SRC, input.memory), (DNNL_ARG_WEIGHTS, weights),
                                     (DNNL_ARG_BIAS, try constant(bias)), (DNNL_ARG_DST, dst.memory)])
    }

    func lowerPooling(_ alg: dnnl_alg_kind_t, _ window: Pooling, step: Step, outputDims: [Int]) throws {
        var src = values[step.inputs[0]]!
        func describe() throws -> PrimitiveDesc {
            var srcMD = src.md
            // int8 pooling writes the same type at the same scale.
            var dstMD = try MemoryDesc.any(outputDims, type: src.md.data_type)
            var desc = dnnl_pooling_v2_desc_t()
            try dnnlCheck(dnnl_pooling_v2_forward_desc_init(
                &desc, dnnl_forward_inference, alg, &srcMD, &dstMD, dnnlDims(window.strides), dnnlDims(window.kernel),
                dnnlDims(window.dilations.map { $0 - 1 }), dnnlDims(window.padsBegin), dnnlDims(window.padsEnd)),
                "pooling_v2_forward_desc_init")
            return try PrimitiveDesc(&desc, context: context, call: "primitive_desc_create(pooling)")
        }
        var pd = try describe()
        if src.md.isInt8, pd.isReference {
            src = try reorder(src, to: src.md.withType(dnnl_f32), label: step.label, scale: src.scale)
            pd = try describe()
        }
        let dst = try output(step.output, md: pd.md(dnnl_query_dst_md))
        values[step.output]!.scale = src.scale
        var args: [(Int32, dnnl_memory_t)] = [(DNNL_ARG_SRC, src.memory), (DNNL_ARG_DST, dst.memory)]
        let workspace = pd.md(dnnl_query_workspace_md)
        if workspace.byteCount > 0 { args.append((DNNL_ARG_WORKSPACE, try scratch(workspace))) }
        try execute(pd, label: step.label, args)
    }

    private func makeConcat(_ mds: [MemoryDesc], axis: Int) throws -> PrimitiveDesc {
        var pd: dnnl_primitive_desc_t?
        try mds.withUnsafeBufferPointer { buffer in
            try dnnlCheck(dnnl_concat_primitive_desc_create(&pd, nil, Int32(mds.count), Int32(axis), buffer.baseAddress, nil, context.engine),
                          "concat_primitive_desc_create")
        }
        let owned = PrimitiveDesc(owning: pd!)
        primitiveDescs.append(owned)
        return owned
    }

    // MARK: - Values and buffers

    func makeMemory(_ md: MemoryDesc, pointer: UnsafeMutableRawPointer?) throws -> dnnl_memory_t {
        var md = md
        var memory: dnnl_memory_t?
        try dnnlCheck(dnnl_memory_create(&memory, &md, context.engine, pointer), "memory_create")
        memories.append(memory!)
        return memory!
    }

    func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        let pointer = UnsafeMutableRawPointer(aligned64: max(bytes, 64))
        buffers.append(pointer)
        return pointer
    }

    /// A pool slot of at least `bytes`: the smallest free one that fits, or a new one.
    func takeSlot(_ bytes: Int) -> Int {
        if let best = freeSlots.filter({ slots[$0].capacity >= bytes }).min(by: { slots[$0].capacity < slots[$1].capacity }) {
            freeSlots.removeAll { $0 == best }
            slots[best].views = 1
            return best
        }
        slots.append(Slot(pointer: allocate(bytes), capacity: bytes, views: 1))
        return slots.count - 1
    }

    /// A fresh value for `name`: its slice of a Concat's buffer when `concatPlacement` placed it
    /// there and `md` is that slice's layout; otherwise, when `reusing` names a dead input with the
    /// same layout, that input's buffer in place; otherwise a pooled buffer.
    @discardableResult
    func output(_ name: String, md: MemoryDesc, reusing source: String? = nil,
                        isLastUse: (String) -> Bool = { _ in false }) throws -> Value {
        if let region = concatPlacement.regions[name], md.same(as: try regionMD(region)) {
            return try regionValue(name)
        }
        if let source, let value = values[source], let slot = value.slot, isLastUse(source),
           slots[slot].views == 1, value.md.same(as: md) {
            return try alias(name, of: value, md: md)
        }
        let slot = takeSlot(md.byteCount)
        let value = Value(md: md, memory: try makeMemory(md, pointer: slots[slot].pointer), slot: slot)
        values[name] = value
        return value
    }

    /// A second view of the same bytes under a new name and layout.
    @discardableResult
    func alias(_ name: String, of value: Value, md: MemoryDesc) throws -> Value {
        var pointer: UnsafeMutableRawPointer?
        try dnnlCheck(dnnl_memory_get_data_handle(value.memory, &pointer), "memory_get_data_handle")
        if let slot = value.slot {
            if let temporary = temporaries.firstIndex(of: slot) {
                // A reordered copy made for this step now outlives it: the new name takes over its one view.
                temporaries.remove(at: temporary)
            } else {
                slots[slot].views += 1
            }
        }
        let view = Value(md: md, memory: try makeMemory(md, pointer: pointer), slot: value.slot)
        if inputViews.contains(value.memory) { inputViews.append(view.memory) }
        values[name] = view
        return view
    }

    func isInputView(_ memory: dnnl_memory_t) -> Bool { inputViews.contains(memory) }
    func markInputView(_ memory: dnnl_memory_t) { inputViews.append(memory) }

    func release(_ name: String) {
        guard let value = values.removeValue(forKey: name), let slot = value.slot else { return }
        releaseSlot(slot)
    }

    /// Drops one view of `slot`; it returns to the pool at zero.
    private func releaseSlot(_ slot: Int) {
        slots[slot].views -= 1
        if slots[slot].views == 0 { freeSlots.append(slot) }
    }

    /// The layout of a `ConcatPlacement` region: dense, channel-blocked, batch 1.
    private func regionMD(_ region: ConcatPlacement.Region) throws -> MemoryDesc {
        let dims = concatPlacement.roots[region.root].dims
        return try .tagged([1, region.channels, dims[2], dims[3]], DNNLContext.blockedTag)
    }

    /// `name`'s value as its slice of its root's buffer, which is allocated on first use.
    ///
    /// With batch 1, channel block b of nChw16c (or nChw8c) is the b-th run of H·W·block floats, so a
    /// slice starting at a channel that is a multiple of the block is a dense tensor of its own
    /// `channelOffset · H · W` floats into the buffer. The root's slot holds one view per live
    /// placed value, plus one from its allocation until the root's last placed Concat is lowered,
    /// so the buffer cannot return to the pool between the producers that fill it.
    @discardableResult
    private func regionValue(_ name: String) throws -> Value {
        let region = concatPlacement.regions[name]!
        let root = concatPlacement.roots[region.root]
        let slot: Int
        if let existing = rootSlots[region.root] {
            slot = existing
            slots[slot].views += 1
        } else {
            let rootMD = try MemoryDesc.tagged(root.dims, DNNLContext.blockedTag)
            slot = takeSlot(rootMD.byteCount)
            slots[slot].views += 1  // the allocation's own view, released after `root.lastConcat`
            rootSlots[region.root] = slot
        }
        let md = try regionMD(region)
        let offset = region.channelOffset * root.dims[2] * root.dims[3] * MemoryLayout<Float>.size
        precondition(region.channelOffset % DNNLContext.channelBlock == 0 && offset + md.byteCount <= slots[slot].capacity,
                     "concat region of '\(name)' does not fit its root")
        let value = Value(md: md, memory: try makeMemory(md, pointer: slots[slot].pointer + offset), slot: slot)
        values[name] = value
        inRegion.insert(name)
        return value
    }

    /// `value` in layout `md`, converting through a pooled buffer when the layouts differ.
    func reorder(_ value: Value, to md: MemoryDesc, label: String, scale: Float? = nil) throws -> Value {
        if value.md.same(as: md) && scale == nil { return value }
        let slot = takeSlot(md.byteCount)
        let converted = Value(md: md, memory: try makeMemory(md, pointer: slots[slot].pointer), slot: slot)
        try emitReorder(from: value, to: converted, label: label, scale: scale)
        // Only the current step reads the converted copy; its slot is freed once the step is lowered.
        temporaries.append(slot)
        return converted
    }

    /// A reorder, optionally multiplying by `scale` on the way (how f32 is quantised to u8/s8).
    func emitReorder(from source: Value, to target: Value, label: String, scale: Float? = nil) throws {
        var pd: dnnl_primitive_desc_t?
        var from = source.md, to = target.md
        let attr = try scale.flatMap { try PrimitiveDesc.attributes([], outputScales: (mask: 0, values: [$0])) }
        defer { if let attr { dnnl_primitive_attr_destroy(attr) } }
        try dnnlCheck(dnnl_reorder_primitive_desc_create(&pd, &from, context.engine, &to, context.engine, attr), "reorder_primitive_desc_create")
        let owned = PrimitiveDesc(owning: pd!)
        try execute(owned, label: "reorder for \(label)", [(DNNL_ARG_FROM, source.memory), (DNNL_ARG_TO, target.memory)])
    }

    func emitOutput(_ name: String, index: Int) throws {
        let value = values[name]!
        let md = try MemoryDesc.plain(value.md.shape)
        let memory = try makeMemory(md, pointer: nil)
        outputMemories[index] = memory
        try emitReorder(from: value, to: Value(md: md, memory: memory, slot: nil), label: "output '\(name)'",
                        scale: value.md.isInt8 ? value.scale : nil)
    }

    /// A constant (weights, bias) kept for the network's lifetime, optionally converted to the layout a primitive wants.
    func constant<Element>(_ data: [Element], md: MemoryDesc? = nil, as packed: MemoryDesc? = nil) throws -> dnnl_memory_t {
        let md = try md ?? MemoryDesc.plain([data.count])
        let pointer = allocate(md.byteCount)
        data.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let memory = try makeMemory(md, pointer: pointer)
        guard let packed, !packed.same(as: md) else { return memory }
        let target = try makeMemory(packed, pointer: allocate(packed.byteCount))
        // Weights are converted once, now, rather than on every run.
        var pd: dnnl_primitive_desc_t?
        var from = md, to = packed
        try dnnlCheck(dnnl_reorder_primitive_desc_create(&pd, &from, context.engine, &to, context.engine, nil), "reorder_primitive_desc_create")
        let owned = PrimitiveDesc(owning: pd!)
        var primitive: dnnl_primitive_t?
        try dnnlCheck(dnnl_primitive_create(&primitive, owned.handle), "primitive_create(reorder)")
        defer { dnnl_primitive_destroy(primitive) }
        let args = [dnnl_exec_arg_t(arg: DNNL_ARG_FROM, memory: memory), dnnl_exec_arg_t(arg: DNNL_ARG_TO, memory: target)]
        try dnnlCheck(dnnl_primitive_execute(primitive, context.stream, 2, args), "primitive_execute(reorder)")
        try dnnlCheck(dnnl_stream_wait(context.stream), "stream_wait")
        return target
    }

    func scratch(_ md: MemoryDesc) throws -> dnnl_memory_t {
        try makeMemory(md, pointer: allocate(md.byteCount))
    }

    func execute(_ pd: PrimitiveDesc, label: String, _ args: [(Int32, dnnl_memory_t)]) throws {
        var primitive: dnnl_primitive_t?
        try dnnlCheck(dnnl_primitive_create(&primitive, pd.handle), "primitive_create")
        var execArgs = args.map { dnnl_exec_arg_t(arg: $0.0, memory: $0.1) }
        let scratchpad = pd.md(dnnl_query_scratchpad_md)
        if scratchpad.byteCount > 0 {
            execArgs.append(dnnl_exec_arg_t(arg: DNNL_ARG_SCRATCHPAD, memory: try scratch(scratchpad)))
        }
        executions.append((primitive!, execArgs))
        implementations.append((step: label, implementation: pd.implementation))
    }
}

extension UnsafeMutableRawPointer {
    /// 64-byte aligned memory, as oneDNN's vector kernels prefer.
    init(aligned64 bytes: Int) {
        var pointer: UnsafeMutableRawPointer?
        guard posix_memalign(&pointer, 64, bytes) == 0, let pointer else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        self = pointer
    }
}
