import DatasetIndex
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory under /tmp, removed when the value goes away.
final class TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/datasetindex-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw IndexError("mkdtemp failed") }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `contents` at `relative`, creating folders.
    @discardableResult
    func write(_ relative: String, _ contents: String) throws -> String {
        try write(relative, Data(contents.utf8))
    }

    @discardableResult
    func write(_ relative: String, _ contents: Data) throws -> String {
        let full = path + "/" + relative
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try contents.write(to: URL(fileURLWithPath: full))
        return full
    }

    func mkdir(_ relative: String) throws {
        try FileManager.default.createDirectory(atPath: path + "/" + relative, withIntermediateDirectories: true)
    }
}

/// Builds tar archives byte by byte (ustar headers, pax records), so tests can damage them precisely.
struct TarBuilder {
    private(set) var bytes: [UInt8] = []

    static func header(name: String, size: Int, type: UInt8 = 0x30) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        let n = Array(name.utf8.prefix(100))
        h.replaceSubrange(0..<n.count, with: n)
        func octal(_ value: Int, _ at: Int, _ width: Int) {
            let digits = Array(String(value, radix: 8).utf8)
            let padded = [UInt8](repeating: 0x30, count: width - 1 - digits.count) + digits
            h.replaceSubrange(at..<(at + width - 1), with: padded)
        }
        octal(0o644, 100, 8); octal(0, 108, 8); octal(0, 116, 8)
        octal(size, 124, 12); octal(1_700_000_000, 136, 12)
        h[156] = type
        h.replaceSubrange(257..<263, with: Array("ustar\0".utf8))
        h[263] = 0x30; h[264] = 0x30
        h.replaceSubrange(148..<156, with: [UInt8](repeating: 0x20, count: 8))
        let sum = h.reduce(0) { $0 + Int($1) }
        let digits = Array(String(sum, radix: 8).utf8)
        let field = [UInt8](repeating: 0x30, count: 6 - digits.count) + digits + [0, 0x20]
        h.replaceSubrange(148..<156, with: field)
        return h
    }

    mutating func add(_ name: String, _ data: [UInt8], type: UInt8 = 0x30) {
        bytes += Self.header(name: name, size: data.count, type: type)
        bytes += data
        bytes += [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }

    mutating func add(_ name: String, _ text: String) { add(name, Array(text.utf8)) }

    /// A pax extended header carrying `records` verbatim (so they may be malformed).
    mutating func pax(_ records: [UInt8]) { add("PaxHeaders/x", records, type: 0x78) }

    mutating func end() { bytes += [UInt8](repeating: 0, count: 1024) }
}

/// Scans `selection` synchronously into `directory/index.fsix`.
func scan(_ selection: IndexSelection, in directory: TemporaryDirectory, name: String = "index.fsix",
          options: ScanOptions = ScanOptions()) throws -> IndexedDataset {
    try IndexScan.run(selection, indexPath: directory.path + "/" + name, options: options)
}

extension IndexedDataset {
    var allKeys: [String] { get throws { try items(0..<count).map(\.key) } }
    var allLabels: [Int32] { get throws { try items(0..<count).map(\.label) } }
}
