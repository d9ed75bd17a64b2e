import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A regular file inside a tar archive.
public struct TarMember: Sendable, Equatable {
    /// Full member path (ustar prefix, pax `path` and GNU long names applied).
    public let name: String
    /// Byte offset of the member's data within the archive.
    public let offset: Int64
    /// Data length in bytes.
    public let size: Int
}

/// A tar header that cannot be parsed; names the shard and header offset so the file can be inspected.
public struct TarFormatError: Error, CustomStringConvertible, Sendable {
    /// Archive path.
    public let shard: String
    /// Offset of the offending 512-byte header.
    public let offset: Int64
    /// What is wrong with it.
    public let reason: String
    /// `corrupt tar header in <shard> at offset <n>: <reason>`.
    public var description: String { "corrupt tar header in \(shard) at offset \(offset): \(reason)" }
}

/// Lists tar members by reading headers only (ustar, GNU and pax), skipping data with offsets.
public enum TarScanner {
    private static let block = 512

    /// Regular-file members of `path` in archive order. Throws `TarFormatError` at the first bad header.
    public static func members(of path: String) throws -> [TarMember] {
        let scan = try scanMembers(of: path)
        if let failure = scan.failure { throw failure }
        return scan.members
    }

    /// Members up to the first bad header plus that header's error, so callers can keep the readable part.
    static func scanMembers(of path: String) throws -> (members: [TarMember], failure: TarFormatError?) {
        // inout is written back even when `scan` throws, so `members` holds everything read before the failure.
        var members: [TarMember] = []
        do {
            try scan(path, into: &members)
            return (members, nil)
        } catch let failure as TarFormatError {
            return (members, failure)
        }
    }

    private static func scan(_ path: String, into members: inout [TarMember]) throws {
        let file = try openForReading(path)
        let fileSize: Int64
        do { fileSize = Int64(try file.size()) } catch { throw DatasetError(reason: "cannot stat \(path): \(reason(error))") }

        var offset: Int64 = 0
        var longName: String?      // from a GNU 'L' entry, applies to the next header
        var paxPath: String?       // from a pax 'x' entry, applies to the next header
        var paxSize: Int?
        var header = [UInt8](repeating: 0, count: block)

        while offset + Int64(block) <= fileSize {
            let got: Int
            do {
                got = try header.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: Int(offset)) }
            } catch {
                throw DatasetError(reason: "cannot read \(path): \(reason(error))")
            }
            guard got == block else {
                throw TarFormatError(shard: path, offset: offset, reason: "short read of header")
            }
            if header.allSatisfy({ $0 == 0 }) { break }   // end-of-archive marker

            func fail(_ reason: String) -> TarFormatError { TarFormatError(shard: path, offset: offset, reason: reason) }
            guard let stored = parseNumber(header[148..<156]) else { throw fail("checksum field is not a number") }
            let unsignedSum = header.enumerated().reduce(0) { $0 + (148..<156 ~= $1.offset ? 32 : Int($1.element)) }
            let signedSum = header.enumerated().reduce(0) { $0 + (148..<156 ~= $1.offset ? 32 : Int(Int8(bitPattern: $1.element))) }
            guard stored == unsignedSum || stored == signedSum else {
                throw fail("checksum mismatch (stored \(stored), computed \(unsignedSum))")
            }
            guard let headerSize = parseNumber(header[124..<136]), headerSize >= 0 else {
                throw fail("size field is not a number")
            }
            let type = header[156]
            let size = (type == UInt8(ascii: "x") || type == UInt8(ascii: "g") || type == UInt8(ascii: "L")) ? headerSize : (paxSize ?? headerSize)
            let dataOffset = offset + Int64(block)
            guard dataOffset + Int64(size) <= fileSize else {
                throw fail("member data (\(size) bytes) runs past the end of the file (\(fileSize) bytes)")
            }

            switch type {
            case UInt8(ascii: "L"):
                longName = cString(try preadExactly(file, offset: dataOffset, size: size, what: path)[...])
            case UInt8(ascii: "x"):
                let records = try preadExactly(file, offset: dataOffset, size: size, what: path)
                let fields = try parsePax(records, fail: fail)
                paxPath = fields["path"]
                if let text = fields["size"] {
                    guard let value = Int(text), value >= 0 else { throw fail("pax size '\(text)' is not a number") }
                    paxSize = value
                }
            case UInt8(ascii: "g"), UInt8(ascii: "K"):
                break   // global pax defaults and long link names do not affect member names we use
            default:
                let magic = Array(header[257..<263])
                var name = cString(header[0..<100])
                // The prefix field only means "prefix" in POSIX ustar; GNU stores timestamps there.
                if magic == Array("ustar\0".utf8) {
                    let prefix = cString(header[345..<500])
                    if !prefix.isEmpty { name = prefix + "/" + name }
                }
                if let longName { name = longName }
                if let paxPath { name = paxPath }
                if type == 0 || type == UInt8(ascii: "0") || type == UInt8(ascii: "7") {
                    members.append(TarMember(name: name, offset: dataOffset, size: size))
                }
                longName = nil; paxPath = nil; paxSize = nil
            }
            offset = dataOffset + (Int64(size) + Int64(block - 1)) / Int64(block) * Int64(block)
        }
        if offset < fileSize && offset + Int64(block) > fileSize && fileSize % Int64(block) != 0 {
            throw TarFormatError(shard: path, offset: offset, reason: "truncated header (\(fileSize - offset) trailing bytes)")
        }
    }

    private static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        let end = bytes.firstIndex(of: 0) ?? bytes.endIndex
        return String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self)
    }

    /// Octal (space/NUL padded) or GNU base-256 (high bit set) numeric field.
    static func parseNumber(_ field: ArraySlice<UInt8>) -> Int? {
        guard let first = field.first else { return nil }
        if first & 0x80 != 0 {
            var value = Int(first & 0x7F)
            for byte in field.dropFirst() {
                guard value < (Int.max >> 8) else { return nil }
                value = value << 8 | Int(byte)
            }
            return value
        }
        var value = 0
        var seenDigit = false
        for byte in field {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                guard value < (Int.max >> 3) else { return nil }
                value = value * 8 + Int(byte - UInt8(ascii: "0"))
                seenDigit = true
            case UInt8(ascii: " "), 0:
                if seenDigit { return value }
            default:
                return nil
            }
        }
        return seenDigit ? value : nil
    }

    /// Pax records are `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
    private static func parsePax(_ data: [UInt8], fail: (String) -> TarFormatError) throws -> [String: String] {
        var fields: [String: String] = [:]
        var index = 0
        while index < data.count {
            if data[index] == 0 { break }
            guard let space = data[index...].firstIndex(of: UInt8(ascii: " ")),
                  let length = Int(String(decoding: data[index..<space], as: UTF8.self)),
                  length > 0, index + length <= data.count,
                  // The record must hold its length, a space, and a newline after the key=value part.
                  space + 1 < index + length, data[index + length - 1] == UInt8(ascii: "\n") else {
                throw fail("malformed pax record at byte \(index)")
            }
            let record = data[(space + 1)..<(index + length - 1)]
            if let equals = record.firstIndex(of: UInt8(ascii: "=")) {
                let key = String(decoding: record[record.startIndex..<equals], as: UTF8.self)
                fields[key] = String(decoding: record[(equals + 1)...], as: UTF8.self)
            }
            index += length
        }
        return fields
    }
}

/// Indexes WebDataset shards: members are grouped into samples by key (directory plus basename up to the first
/// dot), the image from a `.jpg`/`.jpeg`/`.png`/`.webp`/`.tif`/`.tiff`/`.gif`/`.bmp` member (or else any member that
/// is not a label or metadata, so an unsupported image such as `.heic` is dead-lettered with its format), labels
/// from `.cls` (integer) or `.txt` (name or integer).
public enum WebDatasetReader {
    /// Indexes one shard or every `*.tar` in a directory (sorted by name). Shards are scanned header by header;
    /// a corrupt shard keeps the samples before the damage and adds a dead letter naming the shard and offset.
    public static func index(path: String) throws -> DatasetIndex {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DatasetError(reason: "dataset path \(path) does not exist")
        }
        let shards: [String]
        if isDirectory.boolValue {
            shards = try FileManager.default.contentsOfDirectory(atPath: path)
                .filter { $0.lowercased().hasSuffix(".tar") }
                .sorted(by: codePointOrder)
                .map { path + "/" + $0 }
        } else {
            shards = [path]
        }

        var samples: [(key: String, image: TarMember, shard: String, label: String?)] = []
        var deadLetters: [DeadLetter] = []
        for shard in shards {
            let shardName = (shard as NSString).lastPathComponent
            let scan = try TarScanner.scanMembers(of: shard)
            if let failure = scan.failure {
                deadLetters.append(DeadLetter(key: shardName, reason: failure.description))
            }
            let (grouped, strays) = try group(scan.members, shard: shard)
            for stray in strays {
                deadLetters.append(DeadLetter(key: "\(shardName):\(stray)",
                                              reason: "the member has no extension, so it belongs to no sample"))
            }
            for sample in grouped {
                let sampleKey = "\(shardName):\(sample.key)"
                let other = sample.files.keys.filter { !annotationExtensions.contains($0) }.sorted().first
                guard let image = imageExtensions.lazy.compactMap({ sample.files[$0] }).first ?? other.flatMap({ sample.files[$0] }) else {
                    let found = sample.files.keys.sorted().map { "." + $0 }.joined(separator: ", ")
                    deadLetters.append(DeadLetter(key: sampleKey, reason: "the sample has no image member (it has \(found))"))
                    continue
                }
                samples.append((sampleKey, image, shard, sample.label))
            }
        }
        let (classes, labels) = resolveLabels(samples.map(\.label))
        let items = samples.enumerated().map { index, sample in
            DatasetItem(index: index, key: sample.key, label: labels[index], split: nil,
                        source: .tarMember(shard: sample.shard, offset: sample.image.offset, size: sample.image.size))
        }
        return DatasetIndex(format: .webdataset, root: path, classes: classes, items: items, deadLetters: deadLetters)
    }

    /// Samples in archive order, plus the names of members that cannot belong to one (no dotted extension).
    private static func group(_ members: [TarMember], shard: String)
        throws -> (samples: [(key: String, files: [String: TarMember], label: String?)], strays: [String]) {
        var order: [String] = []
        var strays: [String] = []
        var files: [String: [String: TarMember]] = [:]
        for member in members {
            var name = member.name
            while name.hasPrefix("./") { name.removeFirst(2) }
            let slash = name.lastIndex(of: "/")
            let directory = slash.map { String(name[...$0]) } ?? ""
            let base = slash.map { String(name[name.index(after: $0)...]) } ?? name
            guard let dot = base.firstIndex(of: "."), dot != base.startIndex else {
                strays.append(name)
                continue
            }
            let key = directory + base[..<dot]
            // Like webdataset's decoders, the type is the last dotted component (`x.seg.png` is a png).
            let suffix = base[base.index(after: dot)...].lowercased()
            let kind = suffix.split(separator: ".").last.map(String.init) ?? suffix
            if files[key] == nil { order.append(key); files[key] = [:] }
            if files[key]![kind] == nil { files[key]![kind] = member }
        }
        let file = try openForReading(shard)
        let samples = try order.map { key in
            let sample = files[key]!
            var label: String?
            if let labelMember = sample["cls"] ?? sample["txt"] {
                let bytes = try preadExactly(file, offset: labelMember.offset, size: min(labelMember.size, 4096),
                                             what: "\(shard) member \(labelMember.name)")
                let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                label = text.isEmpty ? nil : text
            }
            return (key, sample, label)
        }
        return (samples, strays)
    }
}
