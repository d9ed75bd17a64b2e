import FeatStreamTestSupport
import Foundation
import XCTest
@testable import WireProtocol

/// Protocols/vectors, found from this file's path so tests run from any working directory.
let vectorsDirectory: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Protocols/vectors")

enum VectorError: Error { case lz4(String) }

func loadVector(_ name: String) throws -> [UInt8] {
    try parseHex(String(contentsOf: vectorsDirectory.appendingPathComponent(name + ".hex"), encoding: .utf8))
}

/// Every `.hex` vector, by name without extension.
func allVectorNames() throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: vectorsDirectory.path)
        .filter { $0.hasSuffix(".hex") }.map { String($0.dropLast(4)) }.sorted()
}

/// A minimal LZ4 block decoder, only to prove the vectors' payloads are real LZ4.
func lz4Decompress(_ src: [UInt8], rawLength: Int) throws -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(rawLength)
    var i = 0
    func byte() throws -> Int {
        guard i < src.count else { throw VectorError.lz4("truncated") }
        defer { i += 1 }
        return Int(src[i])
    }
    func length(_ base: Int) throws -> Int {
        var n = base
        if base == 15 { while true { let b = try byte(); n += b; if b != 255 { break } } }
        return n
    }
    while true {
        let token = try byte()
        let literals = try length(token >> 4)
        guard i + literals <= src.count else { throw VectorError.lz4("literals overrun") }
        out.append(contentsOf: src[i..<(i + literals)])
        i += literals
        if i == src.count { break }
        let offset = try byte() | (try byte() << 8)
        let match = try length(token & 15) + 4
        guard offset > 0, offset <= out.count else { throw VectorError.lz4("bad offset") }
        for _ in 0..<match { out.append(out[out.count - offset]) }
    }
    guard out.count == rawLength else { throw VectorError.lz4("decoded \(out.count) bytes, expected \(rawLength)") }
    return out
}

/// Inverse of the shuffle filter: byte k of value j sits at `k * count + j`.
func unshuffle(_ bytes: [UInt8], width: Int) -> [UInt8] {
    let count = bytes.count / width
    var out = [UInt8](repeating: 0, count: bytes.count)
    for k in 0..<width { for j in 0..<count { out[j * width + k] = bytes[k * count + j] } }
    return out
}

/// The values generate.py writes: v(r, c) = ((r*dim + c) % 7 - 3) / 4, little-endian.
func expectedFeatureBytes(rows: Int, dimension: Int, dtype: FeatureDType) -> [UInt8] {
    var out: [UInt8] = []
    for r in 0..<rows {
        for c in 0..<dimension {
            let v = Float((r * dimension + c) % 7 - 3) / 4
            switch dtype {
            case .f32: withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) }
            case .f16: withUnsafeBytes(of: float16Bits(v).littleEndian) { out.append(contentsOf: $0) }
            }
        }
    }
    return out
}

/// IEEE binary16 bits of a value that binary16 represents exactly (enough for the test values).
func float16Bits(_ v: Float) -> UInt16 {
    if v == 0 { return v.sign == .minus ? 0x8000 : 0 }
    let sign: UInt16 = v < 0 ? 0x8000 : 0
    let a = abs(v)
    let e = Int(a.exponent)
    let mantissa = UInt16((a.significand - 1) * 1024)
    return sign | UInt16(e + 15) << 10 | mantissa
}

