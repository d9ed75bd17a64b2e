import Foundation
import ONNXProto
import SwiftProtobuf

/// A constant tensor from the model file, widened to the two element types the engine computes with.
///
/// Weights are always `Float`; shape operands (Reshape's target, Pad's amounts) are `Int64`.
public struct ConstantTensor: Sendable {
    /// The tensor's dimensions, outermost first.
    public var shape: [Int]
    /// The values as floats, for float tensors (empty otherwise).
    public var floats: [Float]
    /// The values as integers, for integer tensors (empty otherwise).
    public var ints: [Int64]

    /// The number of elements the shape describes.
    public var count: Int { shape.reduce(1, *) }

    /// True for tensors whose values are integers (shape operands, indices, booleans).
    public var isInteger: Bool { floats.isEmpty && (count == 0 || !ints.isEmpty) }

    init(shape: [Int], floats: [Float] = [], ints: [Int64] = []) {
        self.shape = shape
        self.floats = floats
        self.ints = ints
    }

    /// The values as floats whichever element type the tensor has.
    var asFloats: [Float] { floats.isEmpty ? ints.map(Float.init) : floats }
    /// The values as integers whichever element type the tensor has (floats truncate, as Cast does).
    var asInts: [Int64] { ints.isEmpty && !floats.isEmpty ? floats.map { Int64($0) } : ints }
}

/// One node of the ONNX graph with its attributes decoded, before any planning.
struct GraphNode {
    var name: String
    var opType: String
    var inputs: [String]
    var outputs: [String]
    var attributes: [String: Onnx_AttributeProto]

    /// A label for error messages: the node's name when it has one, otherwise its first output.
    var label: String { name.isEmpty ? (outputs.first ?? "?") : name }

    func int(_ key: String) -> Int? { attributes[key].map { Int($0.i) } }
    func float(_ key: String) -> Float? { attributes[key].map { $0.f } }
    func ints(_ key: String) -> [Int]? { attributes[key].map { $0.ints.map(Int.init) } }
    func string(_ key: String) -> String? {
        attributes[key].map { String(decoding: $0.s, as: UTF8.self) }
    }
}

/// The parts of an ONNX model the engine needs: nodes in file order, constants, and graph inputs.
struct ONNXGraph {
    var nodes: [GraphNode]
    var constants: [String: ConstantTensor]
    /// Graph inputs that are not initializers, with their declared shapes (`nil` for symbolic dims).
    var inputs: [(name: String, shape: [Int?])]
    var opsetVersion: Int
    /// For each graph input, the symbolic name of each dimension (`nil` where it is fixed or unnamed).
    var inputDimNames: [String: [String?]]
    /// The graph's declared outputs, in order.
    var graphOutputs: [String]

    /// Reads and decodes an `.onnx` file.
    init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw BackboneError.unreadableModel(path: url.path, reason: error.localizedDescription)
        }
        let model: Onnx_ModelProto
        do {
            var options = BinaryDecodingOptions()
            options.messageDepthLimit = 200
            model = try Onnx_ModelProto(serializedBytes: data, options: options)
        } catch {
            throw BackboneError.unreadableModel(path: url.path, reason: "not an ONNX protobuf (\(error))")
        }
        try self.init(model: model, path: url.path)
    }

    init(model: Onnx_ModelProto, path: String) throws {
        opsetVersion = Int(model.opsetImport.first(where: { $0.domain.isEmpty || $0.domain == "ai.onnx" })?.version ?? 13)
        var constants: [String: ConstantTensor] = [:]
        for tensor in model.graph.initializer {
            constants[tensor.name] = try ConstantTensor(tensor, path: path)
        }
        var nodes: [GraphNode] = []
        for node in model.graph.node {
            if node.opType == "Constant", node.domain.isEmpty || node.domain == "ai.onnx",
               let value = try Self.constantValue(node, path: path) {
                constants[node.output[0]] = value
                continue
            }
            var attributes: [String: Onnx_AttributeProto] = [:]
            for attribute in node.attribute { attributes[attribute.name] = attribute }
            nodes.append(GraphNode(
                name: node.name, opType: node.domain.isEmpty || node.domain == "ai.onnx" ? node.opType : "\(node.domain).\(node.opType)", inputs: node.input, outputs: node.output,
                attributes: attributes))
        }
        self.nodes = nodes
        self.constants = constants
        inputs = model.graph.input.filter { constants[$0.name] == nil }.map { info in
            let dims = info.type.tensorType.shape.dim.map { dim -> Int? in
                if case .dimValue(let v)? = dim.value, v > 0 { return Int(v) }
                return nil
            }
            return (info.name, dims)
        }
        inputDimNames = Dictionary(uniqueKeysWithValues: model.graph.input.filter { constants[$0.name] == nil }.map { info in
            (info.name, info.type.tensorType.shape.dim.map { dim -> String? in
                if case .dimParam(let name)? = dim.value, !name.isEmpty { return name }
                return nil
            })
        })
        graphOutputs = model.graph.output.map(\.name)
    }

    /// A Constant node's value from whichever attribute holds it (`value`, `value_float`, `value_ints`, ...).
    static func constantValue(_ node: Onnx_NodeProto, path: String) throws -> ConstantTensor? {
        guard let attribute = node.attribute.first else { return nil }
        switch attribute.name {
        case "value": return try ConstantTensor(attribute.t, path: path)
        case "value_float": return ConstantTensor(shape: [], floats: [attribute.f])
        case "value_floats": return ConstantTensor(shape: [attribute.floats.count], floats: attribute.floats)
        case "value_int": return ConstantTensor(shape: [], ints: [attribute.i])
        case "value_ints": return ConstantTensor(shape: [attribute.ints.count], ints: attribute.ints)
        default: return nil
        }
    }
}

extension ConstantTensor {
    init(_ tensor: Onnx_TensorProto, path: String) throws {
        shape = tensor.dims.map(Int.init)
        floats = []
        ints = []
        let count = shape.reduce(1, *)
        if !tensor.externalData.isEmpty {
            throw BackboneError.unreadableModel(
                path: path, reason: "tensor '\(tensor.name)' uses external data, which is not supported")
        }
        let raw = tensor.rawData
        switch Onnx_TensorProto.DataType(rawValue: Int(tensor.dataType)) {
        case .float?:
            floats = raw.isEmpty ? tensor.floatData : Self.decode(raw, as: Float.self)
            guard floats.count == count else { throw Self.sizeMismatch(tensor, path: path) }
        case .double?:
            floats = raw.isEmpty ? tensor.doubleData.map(Float.init) : Self.decode(raw, as: Double.self).map(Float.init)
            guard floats.count == count else { throw Self.sizeMismatch(tensor, path: path) }
        case .int64?:
            ints = raw.isEmpty ? tensor.int64Data : Self.decode(raw, as: Int64.self)
            guard ints.count == count else { throw Self.sizeMismatch(tensor, path: path) }
        case .int32?:
            ints = raw.isEmpty ? tensor.int32Data.map(Int64.init) : Self.decode(raw, as: Int32.self).map(Int64.init)
            guard ints.count == count else { throw Self.sizeMismatch(tensor, path: path) }
        case .int8?, .int16?:
            ints = raw.isEmpty ? tensor.int32Data.map(Int64.init)
                : (tensor.dataType == Int32(Onnx_TensorProto.DataType.int8.rawValue)
                    ? Self.decode(raw, as: Int8.self).map(Int64.init) : Self.decode(raw, as: Int16.self).map(Int64.init))
            guard ints.count == count else { throw Self.sizeMismatch(tensor, path: path) }
        case .uint8?, .bool?:
            ints = raw.isEmpty ? tensor.int32Data.map(Int64.init) : Self.decode(raw, as: UInt8.self).map(Int64.init)
            guard ints.count == count else { throw Self.sizeMismatch(tensor, path: path) }
        default:
            // Other element types (strings, bool, fp16) never feed the conv path; keep the shape only.
            break
        }
    }

    private static func decode<T>(_ data: Data, as: T.Type) -> [T] {
        data.withUnsafeBytes { raw in
            let n = raw.count / MemoryLayout<T>.stride
            return [T](unsafeUninitializedCapacity: n) { buffer, initialized in
                memcpy(buffer.baseAddress!, raw.baseAddress!, n * MemoryLayout<T>.stride)
                initialized = n
            }
        }
    }

    private static func sizeMismatch(_ tensor: Onnx_TensorProto, path: String) -> BackboneError {
        .unreadableModel(path: path, reason: "tensor '\(tensor.name)' holds the wrong number of values for shape \(tensor.dims)")
    }
}

/// Everything that can go wrong while loading or running a backbone, with a message a user can act on.
public enum BackboneError: Error, CustomStringConvertible, Equatable {
    /// The file is missing, not ONNX, or malformed.
    case unreadableModel(path: String, reason: String)
    /// The graph uses an operator (or an operator variant) the engine does not implement.
    case unsupportedOp(op: String, node: String, detail: String)
    /// Every unsupported node of a model, found in one pass so a user sees the whole list at once.
    case unsupportedOps([UnsupportedNode])
    /// oneDNN chose its slow reference kernel for these primitives (`step: implementation`);
    /// a load error unless the caller allows reference kernels.
    case referenceKernels([String])
    /// A requested output or input name does not exist in the graph.
    case unknownTensor(String)
    /// Shapes in the graph do not fit together.
    case invalidGraph(String)
    /// oneDNN refused a call; `call` names it.
    case dnnl(call: String, status: Int)
    /// A run was asked for more images than the engine was built for, or with a wrongly sized buffer.
    case invalidBatch(String)

    public var description: String {
        switch self {
        case let .unreadableModel(path, reason): return "cannot load model \(path): \(reason)"
        case let .unsupportedOp(op, node, detail):
            return "unsupported ONNX op \(op) at node '\(node)'" + (detail.isEmpty ? "" : ": \(detail)")
        case let .unsupportedOps(nodes):
            let types = Set(nodes.map(\.op)).sorted()
            return "the model uses \(types.count) unsupported op type\(types.count == 1 ? "" : "s") (\(types.joined(separator: ", "))): "
                + nodes.map { "\($0.op) at node '\($0.node)'" + ($0.detail.isEmpty ? "" : " (\($0.detail))") }.joined(separator: "; ")
        case let .referenceKernels(steps):
            return "oneDNN would run \(steps.count) primitive\(steps.count == 1 ? "" : "s") on its slow reference kernels ("
                + steps.joined(separator: "; ") + "); pass --allow-reference-kernels to run anyway"
        case let .unknownTensor(name): return "the graph has no tensor named '\(name)'"
        case let .invalidGraph(message): return "invalid graph: \(message)"
        case let .dnnl(call, status): return "oneDNN \(call) failed with status \(status)"
        case let .invalidBatch(message): return "invalid batch: \(message)"
        }
    }
}

/// One node the engine cannot run, with why.
public struct UnsupportedNode: Equatable, Sendable {
    /// The ONNX op type (prefixed with its domain when not the default one).
    public var op: String
    /// The node's name, or its first output when it has none.
    public var node: String
    /// What about the node is unsupported; empty when the op type itself is.
    public var detail: String

    public init(op: String, node: String, detail: String) {
        self.op = op
        self.node = node
        self.detail = detail
    }
}
