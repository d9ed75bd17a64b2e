import XCTest
@testable import WireProtocol

/// The one feature dtype type: wire codes, widths and names are the documented ones (PROTOCOL.md §2,
/// STORE.md §1), and its conversions agree with Swift's own `Float16`.
final class FeatureDTypeTests: XCTestCase {
    func testCodesWidthsNamesAndNumpyDescriptors() {
        XCTAssertEqual(FeatureDType.allCases.map(\.rawValue), [1, 2])
        XCTAssertEqual(FeatureDType.allCases.map(\.width), [4, 2])
        XCTAssertEqual(FeatureDType.allCases.map(\.name), ["f32", "f16"])
        XCTAssertEqual(FeatureDType.allCases.map(\.npyDescr), ["<f4", "<f2"])
        XCTAssertEqual(FeatureDType.allCases.map { FeatureDType(name: $0.name) }, [.f32, .f16])
        XCTAssertNil(FeatureDType(name: "F16"))
        XCTAssertNil(FeatureDType(rawValue: 0))
        XCTAssertEqual("\(FeatureDType.f16)", "f16")
    }

    func testBytesRoundTripAndMatchFloat16() {
        let values: [Float] = [0, -0.0, 1, -2.5, 65504, 65520, 1e-8, 6.1e-5, -Float.infinity, 0.1, 3.14159]
        let f32 = FeatureDType.f32.littleEndianBytes(of: values)
        XCTAssertEqual(f32.count, values.count * 4)
        XCTAssertEqual(Array(f32[8..<12]), [0, 0, 0x80, 0x3F], "1.0 little-endian")
        XCTAssertEqual(FeatureDType.f32.floats(fromLittleEndian: f32)?.map(\.bitPattern), values.map(\.bitPattern))

        let f16 = FeatureDType.f16.littleEndianBytes(of: values)
        let expected = values.flatMap { value -> [UInt8] in
            let bits = Float16(value).bitPattern
            return [UInt8(truncatingIfNeeded: bits), UInt8(bits >> 8)]
        }
        XCTAssertEqual(f16, expected, "the vectorised path rounds as Float16 does")
        XCTAssertEqual(FeatureDType.f16.floats(fromLittleEndian: f16)?.map(\.bitPattern),
                       values.map { Float(Float16($0)).bitPattern })
        // Any collection of bytes, including a slice that does not start at 0.
        XCTAssertEqual(FeatureDType.f16.floats(fromLittleEndian: f16[2..<6]), [-0.0, 1])
        XCTAssertNil(FeatureDType.f16.floats(fromLittleEndian: f16[0..<3]), "not a whole number of values")
        XCTAssertEqual(FeatureDType.f32.floats(fromLittleEndian: [UInt8]()), [])
    }
}
