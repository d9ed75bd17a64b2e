import Foundation

/// A dense C-order float32 array read from or written to NumPy's `.npy` format (version 1.0–3.0).
///
/// This is the exchange format with NumPy users and with the Python reference scripts that
/// produce golden values; only little-endian `float32`, `float64`, `int64` and `int32` data are read.
public struct NumpyArray: Equatable, Sendable {
    /// Dimensions, outermost first.
    public var shape: [Int]
    /// Elements in C (row-major) order; `float64` and integer files are converted to `Float`.
    public var values: [Float]

    /// Wraps values with a shape; the element counts must agree.
    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.shape = shape
        self.values = values
    }

    /// Reads a `.npy` file.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw NumpyFormatError.unreadable(path: url.path, reason: error.localizedDescription)
        }
        try self.init(npy: data, name: url.path)
    }

    /// Parses `.npy` bytes; `name` appears in errors.
    public init(npy data: Data, name: String = "<memory>") throws {
        let bytes = [UInt8](data)
        func fail(_ reason: String) -> NumpyFormatError { .unreadable(path: name, reason: reason) }
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw fail("missing the \\x93NUMPY magic")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        if major == 1 {
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        } else if major == 2 || major == 3, bytes.count >= 12 {
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        } else {
            throw fail("unsupported format version \(major)")
        }
        guard headerStart + headerLength <= bytes.count else { throw fail("header runs past the end of the file") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        guard let descr = Self.field("descr", in: header), let shapeText = Self.field("shape", in: header) else {
            throw fail("header lacks descr or shape: \(header)")
        }
        if Self.field("fortran_order", in: header) == "True" { throw fail("Fortran-order arrays are not supported") }
        let shape = shapeText.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let count = shape.reduce(1, *)
        let elementSize: Int
        switch descr {
        case "'<f4'", "'<i4'": elementSize = 4
        case "'<f8'", "'<i8'": elementSize = 8
        default: throw fail("unsupported dtype \(descr) (float32, float64, int32, int64 are read)")
        }
        let start = headerStart + headerLength
        guard bytes.count - start == count * elementSize else {
            throw fail("expected \(count * elementSize) data bytes for shape \(shape), found \(bytes.count - start)")
        }
        let values: [Float] = bytes[start...].withUnsafeBytes { raw in
            switch descr {
            case "'<f4'": return Array(raw.bindMemory(to: Float.self))
            case "'<f8'": return raw.bindMemory(to: Double.self).map { Float($0) }
            case "'<i4'": return raw.bindMemory(to: Int32.self).map { Float($0) }
            default: return raw.bindMemory(to: Int64.self).map { Float($0) }
            }
        }
        self.init(shape: shape, values: values)
    }

    /// The array as `.npy` bytes, dtype `<f4`.
    public var npyData: Data { NumpyEncoding.float32Array(values, shape: shape) }

    /// Writes the array to `url` as `.npy`.
    public func write(to url: URL) throws {
        try npyData.write(to: url, options: .atomic)
    }

    private static func field(_ key: String, in header: String) -> String? {
        guard let keyRange = header.range(of: "'\(key)':") else { return nil }
        let rest = header[keyRange.upperBound...].drop { $0 == " " }
        if rest.hasPrefix("(") {
            return rest.firstIndex(of: ")").map { String(rest[rest.index(after: rest.startIndex)..<$0]) }
        }
        let end = rest.firstIndex(of: ",") ?? rest.firstIndex(of: "}") ?? rest.endIndex
        return String(rest[..<end]).trimmingCharacters(in: .whitespaces)
    }
}

/// Errors reading `.npy` data, naming the file.
public enum NumpyFormatError: Error, CustomStringConvertible {
    /// The file is missing, truncated or in a variant this reader does not handle.
    case unreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read \(path) as .npy: \(reason)"
        }
    }
}
