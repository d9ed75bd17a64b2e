import Foundation
import ONNXProto

/// Builds one self-contained ONNX classifier from a frozen backbone and a trained head, so the
/// result runs anywhere onnxruntime does without FeatureStream.
///
/// The exported graph keeps the backbone's input, its IR version and its opset imports, keeps only
/// the backbone nodes the feature tensor depends on, and appends
/// `Flatten(axis=1)` (when the feature tensor is not known to be 2-D) → `Sub(mean)` → `Div(std)` →
/// `Gemm(transB=1)` per layer with `Relu` between → `Softmax(axis=1)`. Its outputs are
/// `probabilities` `[N, classes]` and `logits` `[N, classes]`, and its `metadata_props` carry
/// `classNames` (a JSON list), `backbone`, `featureNode` and `normalization`.
public enum ONNXClassifierExporter {
    /// Name of the graph output holding softmax probabilities, `[N, classes]`.
    public static let probabilitiesOutput = "probabilities"
    /// Name of the graph output holding pre-softmax scores, `[N, classes]`.
    public static let logitsOutput = "logits"

    /// Reads the backbone at `backboneONNX`, appends `head` at `featureNode` and writes the
    /// classifier to `url` atomically. Throws `HeadExportError` when the head is invalid, the node
    /// is absent, the opset predates broadcasting (< 7), or a head tensor name is already taken.
    public static func export(backboneONNX: URL, featureNode: String, head: ExportedHead, to url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: backboneONNX) } catch {
            throw HeadExportError.malformedFile(path: backboneONNX.path, reason: "unreadable: \(error.localizedDescription)")
        }
        let backbone: Onnx_ModelProto
        do { backbone = try Onnx_ModelProto(serializedBytes: data) } catch {
            throw HeadExportError.malformedFile(path: backboneONNX.path, reason: "not an ONNX model: \(error)")
        }
        let classifier = try classifier(backbone: backbone, featureNode: featureNode, head: head)
        let bytes: Data = try classifier.serializedBytes()
        try bytes.write(to: url, options: .atomic)
    }

    /// The classifier model for an already parsed backbone; `export` is this plus file I/O.
    public static func classifier(backbone: Onnx_ModelProto, featureNode: String, head: ExportedHead) throws -> Onnx_ModelProto {
        try head.validate()
        let opset = backbone.opsetImport.first { $0.domain.isEmpty || $0.domain == "ai.onnx" }?.version ?? 1
        // Before opset 7 Sub/Div/Gemm broadcast only with an explicit attribute; no backbone
        // FeatureStream ships is that old, so refusing beats emitting a second code path.
        guard opset >= 7 else {
            throw HeadExportError.incompatibleBackbone("default-domain opset \(opset) predates numpy broadcasting (opset 7)")
        }

        var model = backbone
        var graph = try pruned(backbone.graph, keeping: featureNode)

        let featureRank = declaredShape(of: featureNode, in: backbone.graph)?.count
        if let shape = declaredShape(of: featureNode, in: backbone.graph), shape.count >= 2 {
            let known = shape.dropFirst().compactMap { $0 }
            if known.count == shape.count - 1, known.reduce(1, *) != head.featureDimension {
                throw HeadExportError.incompatibleBackbone(
                    "\(featureNode) has \(known.reduce(1, *)) features per row but the head expects \(head.featureDimension)")
            }
        }

        let taken = tensorNames(in: graph)
        let prefix = "featurestream_head/"
        for name in [probabilitiesOutput, logitsOutput] where taken.contains(name) {
            throw HeadExportError.incompatibleBackbone("the kept backbone graph already has a tensor named \(name)")
        }
        if let clash = taken.first(where: { $0.hasPrefix(prefix) }) {
            throw HeadExportError.incompatibleBackbone("the backbone already uses the head's name prefix (\(clash))")
        }

        var current = featureNode
        func append(_ opType: String, _ inputs: [String], _ output: String, _ attributes: [Onnx_AttributeProto] = []) {
            var node = Onnx_NodeProto()
            node.opType = opType
            node.name = output
            node.input = inputs
            node.output = [output]
            node.attribute = attributes
            graph.node.append(node)
            current = output
        }

        if featureRank != 2 {
            append("Flatten", [current], prefix + "flat", [intAttribute("axis", 1)])
        }
        graph.initializer.append(floatTensor(prefix + "mean", dims: [head.featureDimension], values: head.mean))
        graph.initializer.append(floatTensor(prefix + "std", dims: [head.featureDimension], values: head.std))
        append("Sub", [current, prefix + "mean"], prefix + "centered")
        append("Div", [current, prefix + "std"], prefix + "standardized")
        for (index, layer) in head.layers.enumerated() {
            let weight = prefix + "layer\(index).weight"
            let bias = prefix + "layer\(index).bias"
            graph.initializer.append(floatTensor(weight, dims: [layer.outputs, layer.inputs], values: layer.weights))
            graph.initializer.append(floatTensor(bias, dims: [layer.outputs], values: layer.bias))
            let isLast = index == head.layers.count - 1
            append("Gemm", [current, weight, bias], isLast ? logitsOutput : prefix + "layer\(index).output",
                   [intAttribute("transB", 1)])
            if !isLast { append("Relu", [current], prefix + "layer\(index).relu") }
        }
        append("Softmax", [logitsOutput], probabilitiesOutput, [intAttribute("axis", 1)])

        let batch = batchDimension(of: backbone.graph)
        graph.output = [
            valueInfo(probabilitiesOutput, batch: batch, classes: head.classNames.count),
            valueInfo(logitsOutput, batch: batch, classes: head.classNames.count),
        ]
        model.graph = graph

        let classNamesJSON = String(decoding: try JSONSerialization.data(withJSONObject: head.classNames), as: UTF8.self)
        let properties = [
            "classNames": classNamesJSON, "backbone": head.backbone,
            "featureNode": featureNode, "normalization": head.normalization,
        ]
        model.metadataProps.removeAll { properties[$0.key] != nil }
        for key in properties.keys.sorted() {
            var entry = Onnx_StringStringEntryProto()
            entry.key = key
            entry.value = properties[key]!
            model.metadataProps.append(entry)
        }
        return model
    }

    /// The graph restricted to the nodes `featureNode` depends on, with only the initializers and
    /// value infos those nodes use. Real inputs (not backed by an initializer) stay, because callers
    /// feed the exported model exactly as they fed the backbone.
    static func pruned(_ graph: Onnx_GraphProto, keeping featureNode: String) throws -> Onnx_GraphProto {
        let initializerNames = Set(graph.initializer.map(\.name) + graph.sparseInitializer.map(\.values.name))
        let inputNames = Set(graph.input.map(\.name))
        let produced = Set(graph.node.flatMap(\.output))
        guard produced.contains(featureNode) || inputNames.contains(featureNode) else {
            throw HeadExportError.incompatibleBackbone("no node produces \(featureNode) and no graph input has that name")
        }

        var needed: Set<String> = [featureNode]
        var keep = [Bool](repeating: false, count: graph.node.count)
        // ONNX requires nodes in topological order, so one backward sweep sees every consumer
        // before its producers.
        for index in graph.node.indices.reversed() {
            let node = graph.node[index]
            guard node.output.contains(where: needed.contains) else { continue }
            keep[index] = true
            needed.formUnion(node.input.filter { !$0.isEmpty })
            needed.formUnion(outerScopeReferences(of: node))
        }

        var result = graph
        result.node = graph.node.indices.filter { keep[$0] }.map { graph.node[$0] }
        result.initializer = graph.initializer.filter { needed.contains($0.name) }
        result.sparseInitializer = graph.sparseInitializer.filter { needed.contains($0.values.name) }
        result.input = graph.input.filter { !initializerNames.contains($0.name) || needed.contains($0.name) }
        result.valueInfo = graph.valueInfo.filter { needed.contains($0.name) }
        result.output = []
        return result
    }

    /// Names a control-flow node's subgraphs read from the enclosing graph; without them pruning
    /// would drop producers that only an `If`/`Loop` body consumes.
    private static func outerScopeReferences(of node: Onnx_NodeProto) -> [String] {
        var names: [String] = []
        for attribute in node.attribute {
            for subgraph in [attribute.g] + attribute.graphs where !subgraph.node.isEmpty {
                names += subgraph.node.flatMap { $0.input + outerScopeReferences(of: $0) }
            }
        }
        return names
    }

    private static func tensorNames(in graph: Onnx_GraphProto) -> Set<String> {
        var names = Set(graph.node.flatMap { $0.input + $0.output })
        names.formUnion(graph.initializer.map(\.name))
        names.formUnion(graph.input.map(\.name))
        names.formUnion(graph.valueInfo.map(\.name))
        return names
    }

    /// Dimensions of `name` as the backbone declares them (nil entries are symbolic), or nil when
    /// the graph carries no shape for it.
    private static func declaredShape(of name: String, in graph: Onnx_GraphProto) -> [Int?]? {
        let infos = graph.valueInfo + graph.output + graph.input
        guard let info = infos.first(where: { $0.name == name }), info.type.tensorType.hasShape else { return nil }
        return info.type.tensorType.shape.dim.map { dimension in
            if case .dimValue(let value)? = dimension.value, value > 0 { return Int(value) }
            return nil
        }
    }

    /// The backbone input's symbolic batch dimension name, reused so the outputs read `[N, classes]`
    /// in the same vocabulary as the input.
    private static func batchDimension(of graph: Onnx_GraphProto) -> Onnx_TensorShapeProto.Dimension {
        let initializerNames = Set(graph.initializer.map(\.name))
        var dimension = Onnx_TensorShapeProto.Dimension()
        if let input = graph.input.first(where: { !initializerNames.contains($0.name) }),
           let first = input.type.tensorType.shape.dim.first, first.value != nil {
            dimension.value = first.value
        } else {
            dimension.dimParam = "N"
        }
        return dimension
    }

    private static func valueInfo(_ name: String, batch: Onnx_TensorShapeProto.Dimension, classes: Int) -> Onnx_ValueInfoProto {
        var classesDimension = Onnx_TensorShapeProto.Dimension()
        classesDimension.dimValue = Int64(classes)
        var tensorType = Onnx_TypeProto.Tensor()
        tensorType.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        tensorType.shape.dim = [batch, classesDimension]
        var info = Onnx_ValueInfoProto()
        info.name = name
        info.type.tensorType = tensorType
        return info
    }

    private static func intAttribute(_ name: String, _ value: Int64) -> Onnx_AttributeProto {
        var attribute = Onnx_AttributeProto()
        attribute.name = name
        attribute.type = .int
        attribute.i = value
        return attribute
    }

    private static func floatTensor(_ name: String, dims: [Int], values: [Float]) -> Onnx_TensorProto {
        var tensor = Onnx_TensorProto()
        tensor.name = name
        tensor.dims = dims.map(Int64.init)
        tensor.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        // raw_data is little-endian by definition; it is also far smaller than packed float_data.
        let littleEndian = values.map { $0.bitPattern.littleEndian }
        tensor.rawData = littleEndian.withUnsafeBytes { Data($0) }
        return tensor
    }
}
