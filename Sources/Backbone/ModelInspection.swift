import Foundation

/// What a bare `.onnx` file says about how to use it as a backbone: its image input, the tensors
/// that look like pooled features, and whether it normalises its own input.
///
/// Everything here is read from the graph; what cannot be read (mean and std, colour order) is
/// left to the caller to guess and to say that it guessed.
public struct ModelInspection: Sendable {
    /// The graph input that takes images.
    public struct Input: Sendable {
        public var name: String
        /// Declared dims including the batch; `nil` where symbolic.
        public var shape: [Int?]
        /// Symbolic names of dims (`nil` where fixed or unnamed), e.g. `batch_size`.
        public var dimNames: [String?]
        /// "NCHW" when the channel dim (size 3) comes second, "NHWC" when last.
        public var layout: String
        /// Whether `layout` was read from a size-3 dim (false: assumed NCHW).
        public var layoutFromGraph: Bool
        /// The square image side the graph fixes, if it fixes one.
        public var imageSize: Int?
    }

    /// A tensor that could serve as the features, best first in `candidates`.
    public struct FeatureCandidate: Sendable, Equatable {
        /// The tensor name to put in `featureNode`.
        public var name: String
        /// Values per image.
        public var width: Int
        /// Why it is a candidate, in words.
        public var reason: String
    }

    public var input: Input
    public var candidates: [FeatureCandidate]
    /// When the first op on the input is arithmetic with constants (the graph normalises pixels
    /// itself), a description of it; `nil` otherwise.
    public var inGraphNormalisation: String?
    /// The graph's declared outputs.
    public var outputs: [String]

    /// Reads `modelPath` and plans each candidate at batch 1 to learn its width.
    public init(modelPath: String) throws {
        let graph = try ONNXGraph(contentsOf: URL(fileURLWithPath: modelPath))
        guard graph.inputs.count == 1, let declared = graph.inputs.first else {
            throw BackboneError.invalidGraph("the model has \(graph.inputs.count) inputs; an image backbone has one")
        }
        guard declared.shape.count == 4 else {
            throw BackboneError.invalidGraph("input '\(declared.name)' has \(declared.shape.count) dims; an image input has 4")
        }
        let nhwc = declared.shape[3] == 3 && declared.shape[1] != 3
        let layoutKnown = declared.shape[1] == 3 || declared.shape[3] == 3
        let (h, w) = nhwc ? (declared.shape[1], declared.shape[2]) : (declared.shape[2], declared.shape[3])
        input = Input(name: declared.name, shape: declared.shape, dimNames: graph.inputDimNames[declared.name] ?? [],
                      layout: nhwc ? "NHWC" : "NCHW", layoutFromGraph: layoutKnown,
                      imageSize: h != nil && h == w ? h : nil)
        outputs = graph.graphOutputs
        let side = input.imageSize ?? 224
        let imageShape = nhwc ? [side, side, 3] : [3, side, side]

        // Normalisation inside the graph: the input (maybe through a Transpose or Cast) meets Sub/Div/Mul/Add by constants.
        var consumer = graph.nodes.first { $0.inputs.contains(declared.name) }
        while let node = consumer, ["Transpose", "Cast", "Identity"].contains(node.opType) {
            consumer = graph.nodes.first { $0.inputs.contains(node.outputs[0]) }
        }
        if let node = consumer, ["Sub", "Div", "Mul", "Add"].contains(node.opType),
           node.inputs.contains(where: { graph.constants[$0] != nil }) {
            inGraphNormalisation = "\(node.opType) '\(node.label)' applies constants to the input"
        }

        // Candidates: the input of the last classifier (Gemm/MatMul), then pooled tensors, nearest the output first.
        var proposals: [(String, String)] = []
        let producer = Dictionary(graph.nodes.flatMap { n in n.outputs.map { ($0, n) } }, uniquingKeysWith: { a, _ in a })
        let pooling: Set<String> = ["GlobalAveragePool", "ReduceMean", "GlobalMaxPool"]
        let flattening: Set<String> = ["Flatten", "Reshape", "Squeeze"]
        for node in graph.nodes.reversed() where ["Gemm", "MatMul"].contains(node.opType) {
            guard let x = node.inputs.first, graph.constants[x] == nil else { continue }
            proposals.append((x, "the input of the classifier \(node.opType) '\(node.label)'"))
        }
        /// The pooling node behind `name`, through ops that keep one value per channel (ConvNeXt's LayerNorm, say).
        func pooled(_ name: String) -> GraphNode? {
            var node = producer[name]
            while let n = node, ["Transpose", "LayerNormalization", "BatchNormalization", "Identity", "Relu"].contains(n.opType) {
                node = producer[n.inputs[0]]
            }
            return node.flatMap { pooling.contains($0.opType) ? $0 : nil }
        }
        for node in graph.nodes.reversed() {
            if flattening.contains(node.opType), let source = pooled(node.inputs[0]) {
                proposals.append((node.outputs[0], "\(source.opType) '\(source.label)' flattened by \(node.opType)"))
            } else if pooling.contains(node.opType),
                      !graph.nodes.contains(where: { $0.opType == "Conv" && $0.inputs.first == node.outputs[0] }) {
                // (A pooled tensor that feeds a convolution is a squeeze-and-excitation gate, not features.)
                proposals.append((node.outputs[0], "the output of \(node.opType) '\(node.label)'"))
            }
        }
        var seen = Set<String>()
        candidates = []
        for (name, reason) in proposals where seen.insert(name).inserted {
            guard let plan = try? Plan(graph: graph, input: declared.name, outputs: [name], batch: 1, imageShape: imageShape, fusing: false),
                  let shape = plan.shapes[plan.outputs[0]] else { continue }
            // A classifier's input is only a feature vector if it is one value per channel, not a spatial map.
            guard shape.count == 2 || shape.dropFirst(2).allSatisfy({ $0 == 1 }) else { continue }
            candidates.append(FeatureCandidate(name: name, width: shape.dropFirst().reduce(1, *), reason: reason))
        }
        // Classifier inputs come from pooled tensors; rank the pooled one first when both are the same vector.
        candidates.sort { a, b in
            let ia = proposals.firstIndex { $0.0 == a.name }!, ib = proposals.firstIndex { $0.0 == b.name }!
            return ia < ib
        }
    }
}
