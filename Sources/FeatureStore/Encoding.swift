import FeatureCodec
import Foundation
import WireProtocol

/// Little-endian conversions between `Float` and the stored element types.
enum FeatureEncoding {
    static func width(of dtype: FeatureDTypeCode) -> Int {
        switch dtype {
        case .f32: 4
        case .f16: 2
        }
    }

    static func name(of dtype: FeatureDTypeCode) -> String {
        switch dtype {
        case .f32: "f32"
        case .f16: "f16"
        }
    }

    static func dtype(named name: String) -> FeatureDTypeCode? {
        switch name {
        case "f32": .f32
        case "f16": .f16
        default: nil
        }
    }

    static func littleEndianBytes(of values: [Float], dtype: FeatureDTypeCode) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: values.count * width(of: dtype))
        data.withUnsafeMutableBytes { raw in
            switch dtype {
            case .f32:
                for (i, value) in values.enumerated() {
                    raw.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self)
                }
            case .f16:
                // The scalar Float16 initializer is a library call per value; this path is vectorised.
                values.withUnsafeBufferPointer { HalfConversion.toHalf($0.baseAddress!, into: raw.baseAddress!, count: values.count) }
            }
        }
        return data
    }

    /// Nil when `bytes` is not a whole number of values.
    static func floats<Bytes: Collection>(fromLittleEndian bytes: Bytes, dtype: FeatureDTypeCode) -> [Float]?
    where Bytes.Element == UInt8 {
        let width = width(of: dtype)
        guard bytes.count % width == 0 else { return nil }
        let count = bytes.count / width
        let decode = { (raw: UnsafeRawBufferPointer) -> [Float] in
            switch dtype {
            case .f32:
                (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            case .f16:
                [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                    HalfConversion.toFloat(raw.baseAddress!, into: buffer.baseAddress!, count: count)
                    initialized = count
                }
            }
        }
        if let result = bytes.withContiguousStorageIfAvailable({ decode(UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return Array(bytes).withUnsafeBytes(decode)
    }
}
