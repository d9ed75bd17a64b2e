import Foundation

/// Writes an `ExportedHead` as a `.safetensors` file that Hugging Face's `safetensors` library
/// (and `SafetensorsFile.read`) loads: tensors `mean`, `std`, `layer{i}.weight` (`[out, in]`) and
/// `layer{i}.bias` (`[out]`), all F32, plus `__metadata__` with `classNames` (a JSON list),
/// `backbone`, `featureNode`, `normalization`, `format` and `layers`.
public enum SafetensorsWriter {
    /// The `format` metadata value that marks a file as a FeatureStream head.
    public static let formatName = "featurestream-head"

    /// Validates `head` and writes it to `url` atomically (a reader never sees half a file).
    public static func write(_ head: ExportedHead, to url: URL) throws {
        try head.validate()
        try encode(head).write(to: url, options: .atomic)
    }

    /// The bytes of the `.safetensors` file for `head`; validates it first.
    public static func encode(_ head: ExportedHead) throws -> Data {
        try head.validate()
        var tensors: [(name: String, shape: [Int], values: [Float])] = [
            ("mean", [head.mean.count], head.mean),
            ("std", [head.std.count], head.std),
        ]
        for (index, layer) in head.layers.enumerated() {
            tensors.append(("layer\(index).weight", [layer.outputs, layer.inputs], layer.weights))
            tensors.append(("layer\(index).bias", [layer.outputs], layer.bias))
        }
        let classNamesJSON = String(decoding: try JSONSerialization.data(withJSONObject: head.classNames), as: UTF8.self)
        let metadata = [
            "format": formatName,
            "classNames": classNamesJSON,
            "backbone": head.backbone,
            "featureNode": head.featureNode,
            "normalization": head.normalization,
            "layers": String(head.layers.count),
        ]
        return try encode(tensors: tensors, metadata: metadata)
    }

    /// The bytes of a `.safetensors` file holding F32 `tensors` in the given order and a
    /// string-to-string `metadata` map; tensor names must be unique and not `__metadata__`.
    public static func encode(tensors: [(name: String, shape: [Int], values: [Float])], metadata: [String: String]) throws -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for tensor in tensors {
            guard tensor.name != "__metadata__", header[tensor.name] == nil else {
                throw HeadExportError.invalidArguments("tensor name \(tensor.name) is reserved or repeated")
            }
            guard tensor.shape.allSatisfy({ $0 >= 0 }), tensor.shape.reduce(1, *) == tensor.values.count else {
                throw HeadExportError.invalidArguments("tensor \(tensor.name) has shape \(tensor.shape) but \(tensor.values.count) values")
            }
            let end = offset + tensor.values.count * MemoryLayout<Float>.size
            header[tensor.name] = ["dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, end]] as [String: Any]
            offset = end
        }
        var headerBytes = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes])
        // The format allows trailing spaces in the header; padding to 8 keeps the data aligned
        // for readers that map the file and view tensors in place.
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

        var file = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(headerBytes)
        for tensor in tensors {
            let littleEndian = tensor.values.map { $0.bitPattern.littleEndian }
            littleEndian.withUnsafeBytes { file.append(contentsOf: $0) }
        }
        return file
    }
}

/// A parsed `.safetensors` file whose tensors are all F32, as `SafetensorsWriter` produces.
///
/// Reading checks the whole layout (header bounds, dtypes, shapes against byte ranges, and that
/// the ranges tile the data section without gaps or overlaps), so a truncated or foreign file
/// fails with `HeadExportError.malformedFile` instead of yielding wrong numbers.
public struct SafetensorsFile: Sendable, Equatable {
    /// One tensor: its dimensions (outermost first) and its elements in row-major order.
    public struct Tensor: Sendable, Equatable {
        /// Dimensions, outermost first; empty for a scalar.
        public var shape: [Int]
        /// Elements in row-major order.
        public var values: [Float]

        /// Wraps values with a shape.
        public init(shape: [Int], values: [Float]) {
            self.shape = shape
            self.values = values
        }
    }

    /// Every tensor in the file, by name.
    public var tensors: [String: Tensor]
    /// The `__metadata__` map, empty when the file has none.
    public var metadata: [String: String]

    /// Reads and validates the file at `url`.
    public static func read(_ url: URL) throws -> SafetensorsFile {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw HeadExportError.malformedFile(path: url.path, reason: "unreadable: \(error.localizedDescription)")
        }
        return try parse(data, name: url.path)
    }

    /// Parses `.safetensors` bytes; `name` appears in errors.
    public static func parse(_ data: Data, name: String = "<memory>") throws -> SafetensorsFile {
        func fail(_ reason: String) -> HeadExportError { .malformedFile(path: name, reason: reason) }
        let bytes = [UInt8](data)
        guard bytes.count >= 8 else { throw fail("shorter than the 8-byte header length") }
        let headerLength = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw fail("header length \(headerLength) runs past the end of the \(bytes.count)-byte file")
        }
        let dataStart = 8 + Int(headerLength)
        let headerObject: Any
        do {
            headerObject = try JSONSerialization.jsonObject(with: Data(bytes[8..<dataStart]))
        } catch {
            throw fail("header is not valid JSON")
        }
        guard let header = headerObject as? [String: Any] else { throw fail("header is not a JSON object") }

        var metadata: [String: String] = [:]
        if let rawMetadata = header["__metadata__"] {
            guard let map = rawMetadata as? [String: Any] else { throw fail("__metadata__ is not an object") }
            for (key, value) in map {
                guard let text = value as? String else { throw fail("__metadata__.\(key) is not a string") }
                metadata[key] = text
            }
        }

        let dataLength = bytes.count - dataStart
        var ranges: [(begin: Int, end: Int)] = []
        var tensors: [String: Tensor] = [:]
        for (tensorName, entry) in header where tensorName != "__metadata__" {
            guard let info = entry as? [String: Any] else { throw fail("entry \(tensorName) is not an object") }
            guard let dtype = info["dtype"] as? String else { throw fail("\(tensorName) has no dtype") }
            guard dtype == "F32" else { throw fail("\(tensorName) has dtype \(dtype); only F32 is read") }
            guard let shape = Self.integers(info["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
                throw fail("\(tensorName) has no valid shape")
            }
            guard let offsets = Self.integers(info["data_offsets"]), offsets.count == 2,
                  offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= dataLength else {
                throw fail("\(tensorName) has data_offsets outside the \(dataLength)-byte data section")
            }
            let count = shape.reduce(1, *)
            guard offsets[1] - offsets[0] == count * 4 else {
                throw fail("\(tensorName) has shape \(shape) but \(offsets[1] - offsets[0]) bytes")
            }
            let start = dataStart + offsets[0]
            let values = (0..<count).map { index -> Float in
                let at = start + index * 4
                let word = UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
                return Float(bitPattern: word)
            }
            ranges.append((offsets[0], offsets[1]))
            tensors[tensorName] = Tensor(shape: shape, values: values)
        }
        // The spec forbids holes and overlaps; checking it catches files spliced or truncated by hand.
        var expectedBegin = 0
        for range in ranges.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
            guard range.begin == expectedBegin else { throw fail("tensor byte ranges leave a gap or overlap at \(expectedBegin)") }
            expectedBegin = range.end
        }
        guard expectedBegin == dataLength else {
            throw fail("tensors cover \(expectedBegin) of \(dataLength) data bytes")
        }
        return SafetensorsFile(tensors: tensors, metadata: metadata)
    }

    /// Wraps parsed tensors and metadata.
    public init(tensors: [String: Tensor], metadata: [String: String]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Rebuilds the head `SafetensorsWriter.write` stored, validated; `name` appears in errors.
    public func head(name: String = "<memory>") throws -> ExportedHead {
        func fail(_ reason: String) -> HeadExportError { .malformedFile(path: name, reason: reason) }
        guard let mean = tensors["mean"], let std = tensors["std"] else { throw fail("no mean/std tensors: not a head file") }
        guard let classNamesJSON = metadata["classNames"],
              let classNames = try? JSONSerialization.jsonObject(with: Data(classNamesJSON.utf8)) as? [String] else {
            throw fail("__metadata__.classNames is missing or not a JSON list of strings")
        }
        var layers: [DenseLayer] = []
        while let weight = tensors["layer\(layers.count).weight"] {
            guard let bias = tensors["layer\(layers.count).bias"] else { throw fail("layer\(layers.count).bias is missing") }
            guard weight.shape.count == 2 else { throw fail("layer\(layers.count).weight is not 2-D") }
            layers.append(DenseLayer(weights: weight.values, bias: bias.values, inputs: weight.shape[1], outputs: weight.shape[0]))
        }
        if let declared = metadata["layers"], Int(declared) != layers.count {
            throw fail("__metadata__ declares \(declared) layers but the file has \(layers.count)")
        }
        let head = ExportedHead(
            classNames: classNames, mean: mean.values, std: std.values, layers: layers,
            backbone: metadata["backbone"] ?? "", featureNode: metadata["featureNode"] ?? "",
            normalization: metadata["normalization"] ?? "")
        do { try head.validate() } catch let error as HeadExportError {
            throw fail(error.description)
        }
        return head
    }

    /// Reads a head written by `SafetensorsWriter.write`, as `featstream predict` needs it.
    public static func readHead(_ url: URL) throws -> ExportedHead {
        try read(url).head(name: url.path)
    }

    private static func integers(_ value: Any?) -> [Int]? {
        guard let numbers = value as? [Any] else { return nil }
        var result: [Int] = []
        for number in numbers {
            guard let number = number as? NSNumber, let exact = Int(exactly: number.doubleValue) else { return nil }
            result.append(exact)
        }
        return result
    }
}
