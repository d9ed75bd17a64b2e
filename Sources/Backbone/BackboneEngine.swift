import CDNNL
import Foundation

/// A frozen ONNX CNN run on oneDNN, computing named intermediate tensors (the features) for batches of images.
///
/// Thread safety: an engine is driven from one thread at a time. oneDNN's OpenMP runtime keeps one
/// thread team per calling thread, so all calls should come from the same thread for best speed.
public final class BackboneEngine {
    /// The graph input fed by `run`.
    public let inputName: String
    /// The input's shape per image (the ONNX dims after the batch dimension), in the model's own layout.
    public let imageShape: [Int]
    /// The tensors computed by `run`, in order.
    public let outputNames: [String]
    /// The width of each output per image (its dims after the batch dimension, multiplied).
    public let outputWidths: [Int]
    /// The largest batch `run` accepts.
    public let maxBatch: Int
    /// Threads oneDNN uses for each run.
    public let threads: Int
    /// Whether primitives on oneDNN's slow reference kernels are accepted rather than a load error.
    public let allowReferenceKernels: Bool

    /// The activation ranges int8 convolutions use; `nil` for fp32.
    public let calibration: Calibration?

    private let graph: ONNXGraph
    /// fp32 networks that also output every convolution input, per batch size, for calibration.
    private var observers: [Int: (network: CompiledNetwork, names: [String], widths: [Int])] = [:]
    private let context: DNNLContext
    /// Networks are compiled per batch size on first use; the full batch and the current tail are kept.
    private var networks: [Int: CompiledNetwork] = [:]

    /// Loads `modelPath` and checks that every op between `input` and `outputs` is supported.
    ///
    /// - Parameters:
    ///   - input: the graph input to feed; `nil` picks the graph's only non-constant input.
    ///   - outputs: tensor names to compute (for example the pooled-features node).
    ///   - maxBatch: the largest batch `run` will be given.
    ///   - threads: oneDNN threads; `nil` keeps the OpenMP default (all cores).
    ///   - imageShape: the input's dims after the batch, required only when the graph leaves them symbolic.
    ///   - allowReferenceKernels: accept primitives on oneDNN's reference kernels (10-100x slower) instead of failing.
    ///   - calibration: activation ranges (`featstream calibrate`); given, convolutions run in int8
    ///     (except the one reading the image, and any without an int8 kernel), features stay f32.
    /// - Throws: `BackboneError.unsupportedOps` listing every node the engine cannot run;
    ///   `BackboneError.referenceKernels` when a primitive would run on a reference kernel and that is not allowed.
    public init(modelPath: String, input: String? = nil, outputs: [String], maxBatch: Int = 16, threads: Int? = nil,
                imageShape: [Int]? = nil, allowReferenceKernels: Bool = false, calibration: Calibration? = nil) throws {
        guard maxBatch >= 1 else { throw BackboneError.invalidBatch("maxBatch must be at least 1") }
        graph = try ONNXGraph(contentsOf: URL(fileURLWithPath: modelPath))
        if let input {
            inputName = input
        } else {
            guard graph.inputs.count == 1 else {
                throw BackboneError.invalidGraph("the model has \(graph.inputs.count) inputs; name the one to feed")
            }
            inputName = graph.inputs[0].name
        }
        if let threads { omp_set_num_threads(Int32(threads)) }
        self.threads = threads ?? Int(omp_get_max_threads())
        context = try DNNLContext()
        self.maxBatch = maxBatch
        self.allowReferenceKernels = allowReferenceKernels
        self.calibration = calibration
        // Planning the full batch validates the graph now, so unsupported ops fail at load, not mid-job.
        let plan = try Plan(graph: graph, input: inputName, outputs: outputs, batch: maxBatch, imageShape: imageShape)
        self.imageShape = Array(plan.shapes[plan.input]!.dropFirst())
        outputNames = outputs
        outputWidths = plan.outputs.map { plan.shapes[$0]!.dropFirst().reduce(1, *) }
        networks[maxBatch] = try compile(plan)
    }

    private func compile(_ plan: Plan) throws -> CompiledNetwork {
        let network = try CompiledNetwork(plan: plan, context: context, calibration: calibration)
        if !allowReferenceKernels, !network.referenceKernels.isEmpty {
            throw BackboneError.referenceKernels(network.referenceKernels)
        }
        return network
    }

    /// Floats per image in the input buffer.
    public var imageElementCount: Int { imageShape.reduce(1, *) }

    /// Primitives that fell back to oneDNN's reference kernels (a silent 10x slowdown), for the full batch.
    public var referenceKernels: [String] { networks[maxBatch]?.referenceKernels ?? [] }

    /// Each primitive of the full-batch network with the implementation oneDNN chose.
    public var implementations: [(step: String, implementation: String)] { networks[maxBatch]?.implementations ?? [] }

    /// Computes the outputs for `batch` images.
    ///
    /// - Parameters:
    ///   - input: `batch * imageElementCount` floats, dense, in the model's input layout.
    ///   - batch: 1...maxBatch.
    /// - Returns: one `[batch * outputWidths[i]]` array per output, row-major `[batch, width]`.
    public func run(_ input: UnsafeBufferPointer<Float>, batch: Int) throws -> [[Float]] {
        guard (1...maxBatch).contains(batch) else {
            throw BackboneError.invalidBatch("batch \(batch) is outside 1...\(maxBatch)")
        }
        guard input.count >= batch * imageElementCount else {
            throw BackboneError.invalidBatch("\(input.count) floats given, \(batch * imageElementCount) needed")
        }
        let network = try network(for: batch)
        let buffers = outputWidths.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: batch * $0) }
        defer { buffers.forEach { $0.deallocate() } }
        try network.run(input: UnsafeRawPointer(input.baseAddress!), outputs: buffers.map { UnsafeMutableRawPointer($0.baseAddress!) })
        return buffers.map { Array($0) }
    }

    /// Convolutions of the full-batch network that run in int8 (empty in fp32).
    public var int8Convolutions: [String] { networks[maxBatch]?.int8Convolutions ?? [] }

    /// Concats of the full-batch network that copy nothing: their inputs are written straight into
    /// their slices of the Concat's buffer (fp32 with batch 1 only; see `ConcatPlacement`).
    public var inPlaceConcats: [String] { networks[maxBatch]?.inPlaceConcats ?? [] }

    /// Tensors the full-batch int8 network plans to keep in u8/s8 (the rest are f32).
    public var int8Tensors: Set<String> { networks[maxBatch]?.int8Tensors ?? [] }

    /// Runs `batch` images through the fp32 network and widens `calibration`'s range of every tensor
    /// that feeds or leaves a convolution (the ranges an int8 engine quantises with).
    public func observeRanges(_ input: UnsafeBufferPointer<Float>, batch: Int, into calibration: inout Calibration) throws {
        guard (1...maxBatch).contains(batch), input.count >= batch * imageElementCount else {
            throw BackboneError.invalidBatch("\(input.count) floats for batch \(batch) (at most \(maxBatch))")
        }
        if observers[batch] == nil {
            var plan = try Plan(graph: graph, input: inputName, outputs: outputNames, batch: batch, imageShape: imageShape)
            var names: [String] = []
            // Convolution inputs (what int8 convolutions quantise) and outputs (what they write as
            // u8/s8 when every reader is int8, residuals included).
            for step in plan.steps {
                guard case .convolution = step.op else { continue }
                for name in [step.inputs[0], step.output] where !names.contains(name) { names.append(name) }
            }
            plan.outputs += names.filter { !plan.outputs.contains($0) }
            let network = try CompiledNetwork(plan: plan, context: context)
            let widths = plan.outputs.map { plan.shapes[$0]!.dropFirst().reduce(1, *) }
            observers[batch] = (network, plan.outputs, widths)
        }
        let observer = observers[batch]!
        let buffers = observer.widths.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: batch * $0) }
        defer { buffers.forEach { $0.deallocate() } }
        try observer.network.run(input: UnsafeRawPointer(input.baseAddress!), outputs: buffers.map { UnsafeMutableRawPointer($0.baseAddress!) })
        for (name, buffer) in zip(observer.names, buffers) {
            calibration.observe(name, UnsafeBufferPointer(buffer))
        }
    }

    /// Runs one full batch of zeros, because the first run of each primitive is much slower.
    public func warmUp() throws {
        let zeros = [Float](repeating: 0, count: maxBatch * imageElementCount)
        _ = try zeros.withUnsafeBufferPointer { try run($0, batch: maxBatch) }
    }

    private func network(for batch: Int) throws -> CompiledNetwork {
        if let network = networks[batch] { return network }
        let plan = try Plan(graph: graph, input: inputName, outputs: outputNames, batch: batch, imageShape: imageShape)
        let network = try compile(plan)
        // Keep the full-batch network and only the most recent tail size, to bound memory.
        networks = networks.filter { $0.key == maxBatch }
        networks[batch] = network
        return network
    }
}
