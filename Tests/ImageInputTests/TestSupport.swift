import DatasetIndex
import Foundation
import XCTest

/// Scans the dataset at `path` the way `featstream extract` does (the one dataset reader, `DatasetIndex`) into a
/// throwaway folder; the mapped index stays readable after the folder is removed.
func scanIndex(_ path: String) throws -> IndexedDataset {
    let folder = NSTemporaryDirectory() + "imageinput-index-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    return try IndexScan.run(IndexSelection(path: path), indexPath: folder + "/dataset.index")
}

/// Fixtures live next to this file; located via #filePath because the test target declares no resources.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: directory.appendingPathComponent(name)))
    }

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// `name -> [width, height]` written by make_fixtures.py.
    static func expectedSizes() throws -> [String: [Int]] {
        try JSONDecoder().decode([String: [Int]].self, from: Data(contentsOf: directory.appendingPathComponent("expected.json")))
    }
}

/// A fresh directory per test, removed afterwards.
final class TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "imageinput-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ relative: String, _ bytes: [UInt8]) throws -> String {
        let full = path + "/" + relative
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: full))
        return full
    }

    @discardableResult
    func write(_ relative: String, text: String) throws -> String {
        try write(relative, Array(text.utf8))
    }
}

/// CRC-32 (PNG/zlib polynomial), so tests can craft chunks libpng accepts.
func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}

func bigEndian(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
}

/// Minimal ustar writer: enough to build WebDataset shards without depending on /usr/bin/tar.
struct TarWriter {
    private(set) var bytes: [UInt8] = []

    mutating func add(_ name: String, _ content: [UInt8], type: UInt8 = UInt8(ascii: "0")) {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) {
            for (i, b) in text.utf8.enumerated() { header[offset + i] = b }
        }
        precondition(name.utf8.count < 100, "TarWriter keeps names in the 100-byte field")
        put(name, at: 0)
        put("0000644\0", at: 100)
        put("0000000\0", at: 108)
        put("0000000\0", at: 116)
        put(String(format: "%011o", content.count) + "\0", at: 124)
        put("00000000000\0", at: 136)
        put("        ", at: 148)
        header[156] = type
        put("ustar\0", at: 257)
        put("00", at: 263)
        let sum = header.reduce(0) { $0 + Int($1) }
        put(String(format: "%06o", sum) + "\0 ", at: 148)
        bytes += header
        bytes += content
        bytes += [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
    }

    mutating func add(_ name: String, text: String) { add(name, Array(text.utf8)) }

    func finished() -> [UInt8] { bytes + [UInt8](repeating: 0, count: 1024) }
}

func maxAbsDifference(_ a: [UInt8], _ b: [UInt8]) -> Int {
    zip(a, b).map { abs(Int($0) - Int($1)) }.max() ?? 0
}
