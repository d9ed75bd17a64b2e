/// Element type of feature values, everywhere they are kept: on the wire (PROTOCOL.md §2, the raw
/// value is the wire code), in store records and `store.json` (STORE.md), and in `featstream extract`'s
/// `features.npy`. The one home of each type's width, name and conversion from and to `Float`.
public enum FeatureDType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE 754 binary32, little-endian, 4 bytes.
    case f32 = 1
    /// IEEE 754 binary16, little-endian, 2 bytes.
    case f16 = 2

    /// Bytes per value.
    public var width: Int {
        switch self {
        case .f32: 4
        case .f16: 2
        }
    }

    /// The name used in `store.json`, on command lines and in reports: `f32` or `f16`.
    public var name: String {
        switch self {
        case .f32: "f32"
        case .f16: "f16"
        }
    }

    /// The type named `name` (`f32` or `f16`); nil for any other text.
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    /// The name, so the type reads the same in messages as on the command line.
    public var description: String { name }

    /// The NumPy `descr` of a little-endian array of this type (`<f4`, `<f2`).
    public var npyDescr: String {
        switch self {
        case .f32: "<f4"
        case .f16: "<f2"
        }
    }

    /// Writes `count` floats at `source` as little-endian values of this type at `destination` (any
    /// alignment, `count * width` bytes); f16 rounds to nearest, ties to even, through the vectorised
    /// `HalfConversion`.
    public func store(_ source: UnsafePointer<Float>, count: Int, into destination: UnsafeMutableRawPointer) {
        switch self {
        case .f32:
            #if _endian(little)
            destination.copyMemory(from: source, byteCount: count &* 4)
            #else
            for i in 0..<count {
                destination.storeBytes(of: source[i].bitPattern.littleEndian, toByteOffset: i &* 4, as: UInt32.self)
            }
            #endif
        case .f16:
            HalfConversion.toHalf(source, into: destination, count: count)
        }
    }

    /// Reads `count` little-endian values of this type at `source` (any alignment) into `destination`.
    public func load(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32:
            #if _endian(little)
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count &* 4)
            #else
            for i in 0..<count {
                destination[i] = Float(bitPattern: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)))
            }
            #endif
        case .f16:
            HalfConversion.toFloat(source, into: destination, count: count)
        }
    }

    /// `values` as little-endian bytes of this type.
    public func littleEndianBytes(of values: [Float]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: values.count * width) { buffer, initialized in
            values.withUnsafeBufferPointer { store($0.baseAddress!, count: values.count, into: buffer.baseAddress!) }
            initialized = values.count * width
        }
    }

    /// The floats that little-endian `bytes` of this type hold; nil when `bytes` is not a whole number of values.
    public func floats<Bytes: Collection>(fromLittleEndian bytes: Bytes) -> [Float]? where Bytes.Element == UInt8 {
        guard bytes.count % width == 0 else { return nil }
        let count = bytes.count / width
        let decode = { (raw: UnsafeRawBufferPointer) -> [Float] in
            [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0 { load(raw.baseAddress!, count: count, into: buffer.baseAddress!) }
                initialized = count
            }
        }
        if let result = bytes.withContiguousStorageIfAvailable({ decode(UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return Array(bytes).withUnsafeBytes(decode)
    }
}
