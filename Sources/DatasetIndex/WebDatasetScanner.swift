import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Scans WebDataset shards header by header (Protocols/INDEX.md §3.3): an item is a sample (consecutive
/// members sharing a key), located by its image member's offset and size. Image data is never read; only
/// label members (`.cls`, `.txt`, at most 4 KiB) are. Every fault is a dead letter and never a crash.
struct WebDatasetScanner {
    let context: ScanContext
    let path: String
    /// Member types taken as a sample's image, in order of preference: every format the decoder reads. The
    /// decoder still tells the format by the bytes, so a mislabelled member is decoded or named, not lost.
    public static let imageTypes = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "gif", "bmp"]
    /// Member types that are never a sample's image (labels and metadata). A sample with no member of
    /// `imageTypes` takes its first member of any other type as its image, so the worker decodes it or
    /// dead-letters it naming its format ("unsupported format: HEIC"); nothing is dropped by its extension.
    public static let annotationTypes = ["cls", "cls2", "txt", "json", "jsonl", "xml", "csv", "idx", "id", "index"]
    static let labelLimit = 4096
    static let paxLimit = 1 << 20

    func run() throws {
        var info = stat()
        guard stat(path, &info) == 0 else { throw IndexError("cannot read \(path): \(errnoText())") }
        if (info.st_mode & S_IFMT) != S_IFDIR {
            try shard(path, name: (path as NSString).lastPathComponent)
            return
        }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw IndexError("cannot read WebDataset folder \(path): \(errnoText())") }
        defer { close(fd) }
        guard fstat(fd, &info) == 0 else { throw IndexError("cannot stat \(path): \(errnoText())") }
        try context.writer.addFingerprint(FingerprintEntry(path: ".", kind: .directory, size: UInt64(info.st_size), mtimeNs: mtimeNs(info), sampleHash: 0))
        let sorter = ExternalSorter(runBytes: context.options.sortRunBytes, temporaryDirectory: context.temporaryDirectory)
        guard let dir = fdopendir(dup(fd)) else { throw IndexError("cannot read WebDataset folder \(path): \(errnoText())") }
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { try context.dead("./", "reading the folder failed part way: \(errnoText())") }
                break
            }
            let name = entryName(entry)
            if name == "." || name == ".." { continue }
            try sorter.add(Array(name.utf8))
        }
        closedir(dir)
        let names = try sorter.finish()
        while let bytes = try names.next(), !context.full {
            let name = String(decoding: bytes, as: UTF8.self)
            var entryInfo = stat()
            guard fstatat(fd, name, &entryInfo, 0) == 0 else { try context.dead(name, "cannot be read: \(errnoText())"); continue }
            guard (entryInfo.st_mode & S_IFMT) == S_IFREG else {
                try context.dead(name, "is not a regular file, so it is not scanned as a shard")
                continue
            }
            guard name.lowercased().hasSuffix(".tar") else {
                try context.dead(name, "is not a .tar shard, so nothing in it is indexed")
                continue
            }
            try shard(path + "/" + name, name: name)
        }
    }

    /// One sample being collected: members with the same key in a row.
    private struct Sample {
        /// UTF-8 of `<shard name>:<sample key>`, the item key.
        var key: [UInt8]
        var image: (kind: Int, offset: UInt64, size: UInt64)?
        var label: [UInt8]?
        var labelFromCls = false
        /// Types of its members that are not images, named when the sample has no image.
        var others: [String] = []
    }

    private static let imageKinds: [[UInt8]] = imageTypes.map { Array($0.utf8) }
    private static let annotationKinds: Set<[UInt8]> = Set(annotationTypes.map { Array($0.utf8) })
    private static let cls = Array("cls".utf8), txt = Array("txt".utf8)

    private func shard(_ file: String, name: String) throws {
        let tar: DurableFile
        let info: stat
        do { tar = try DurableFile.open(file, access: .readOnly) } catch { try context.dead(name, "cannot be opened: \(failureText(error))"); return }
        do { info = try tar.status() } catch { try context.dead(name, "cannot be read: \(failureText(error))"); return }
        let size = UInt64(info.st_size)
        try context.writer.addFingerprint(FingerprintEntry(path: name, kind: .tar, size: size, mtimeNs: mtimeNs(info),
                                                           sampleHash: sampledHash(fd: tar.descriptor, size: size, blocks: 2)))
        let source = try context.writer.addSource(name)
        let reader = WindowReader(file: tar, size: size)
        var sample: Sample?
        var lastMember = "(none)"
        let prefix = Array((name + ":").utf8)

        func emit() throws {
            guard let s = sample else { return }
            sample = nil
            guard let image = s.image else {
                let key = String(decoding: s.key, as: UTF8.self)
                try context.dead(key, "the sample has no image member (it has \(s.others.map { "." + $0 }.joined(separator: ", ")))")
                return
            }
            guard image.size <= UInt64(UInt32.max) else { try context.dead(String(decoding: s.key, as: UTF8.self), "image member is \(image.size) bytes, above the 4 GiB an index locator holds"); return }
            var label: Int32 = -1
            if let text = s.label {
                let t = trimmed(text[...])
                switch Array(t).withUnsafeBytes({ context.labels.id(for: $0, at: String(decoding: s.key, as: UTF8.self)) }) {
                case .success(let id): label = id
                case .failure(let refusal): try context.dead(String(decoding: s.key, as: UTF8.self), "bad label: \(refusal.reason)"); return
                }
            }
            try s.key.withUnsafeBytes {
                try context.writer.appendItem(key: $0, label: label, source: source, memberOffset: image.offset, memberSize: UInt32(image.size))
            }
            try context.publishIfDue()
        }

        var offset: UInt64 = 0
        var longName: String?
        var paxPath: String?
        var paxSize: UInt64?
        var paxFault: String?
        scan: while offset < size && !context.full {
            guard size - offset >= 512 else {
                let partial = reader.bytes(at: offset, count: Int(size - offset)).map { cString($0.prefix(100)) } ?? ""
                try emit()
                try context.dead(name + ":" + (partial.isEmpty ? lastMember : partial),
                                 "\(name) ends mid-header at offset \(offset) (\(size - offset) of 512 bytes; last complete member: \(lastMember))")
                break
            }
            guard let header = reader.bytes(at: offset, count: 512) else { try context.dead(name, "cannot read the header at offset \(offset)"); break }
            if header.allSatisfy({ $0 == 0 }) { break }   // end-of-archive marker
            let headerName = cString(UnsafeRawBufferPointer(rebasing: header[0..<100]))
            func stop(_ reason: String) throws {
                try emit()
                try context.dead(name + ":" + (headerName.isEmpty ? "@\(offset)" : headerName), "\(name): corrupt tar header at offset \(offset): \(reason); the rest of the shard is not indexed")
            }
            guard let stored = parseNumber(UnsafeRawBufferPointer(rebasing: header[148..<156])) else { try stop("checksum field is not a number"); break }
            var unsigned = 0, signed = 0
            for k in 0..<512 {
                let v = k >= 148 && k < 156 ? 0x20 : header[k]
                unsigned &+= Int(v); signed &+= Int(Int8(bitPattern: v))
            }
            guard UInt64(unsigned) == stored || Int(truncatingIfNeeded: stored) == signed else { try stop("checksum mismatch"); break }
            guard let headerSize = parseNumber(UnsafeRawBufferPointer(rebasing: header[124..<136])) else { try stop("size field is not a number"); break }
            let type = header[156]
            let magic = Array(header[257..<263])
            var memberName = headerName
            if magic == Array("ustar\0".utf8) {
                let prefix = cString(UnsafeRawBufferPointer(rebasing: header[345..<500]))
                if !prefix.isEmpty { memberName = prefix + "/" + memberName }
            }
            let isMeta = type == 0x78 || type == 0x67 || type == 0x4C || type == 0x4B
            let dataSize = isMeta ? headerSize : (paxSize ?? headerSize)
            let dataOffset = offset + 512
            guard dataSize <= size - dataOffset else {
                try emit()
                try context.dead(name + ":" + (longName ?? paxPath ?? memberName),
                                 "\(name) is truncated: member data (\(dataSize) bytes at offset \(dataOffset)) runs past the end of the file (\(size) bytes)")
                break scan
            }
            let next = dataOffset + (dataSize + 511) / 512 * 512
            defer { offset = next }
            switch type {
            case 0x4C:   // GNU long name for the next header
                guard dataSize <= 65536, let data = reader.bytes(at: dataOffset, count: Int(dataSize)) else { try stop("GNU long name of \(dataSize) bytes"); break scan }
                longName = cString(data)
            case 0x78:   // pax extended header for the next header
                guard dataSize <= UInt64(Self.paxLimit), let data = reader.bytes(at: dataOffset, count: Int(dataSize)) else {
                    paxFault = "its pax header is \(dataSize) bytes, above the \(Self.paxLimit)-byte limit"
                    continue scan
                }
                switch parsePax(data) {
                case .success(let fields):
                    paxPath = fields["path"]
                    if let text = fields["size"] {
                        if let value = UInt64(text) { paxSize = value } else { paxFault = "its pax size '\(text)' is not a number" }
                    }
                case .failure(let fault): paxFault = "its pax header is malformed: \(fault.reason)"
                }
            case 0x67, 0x4B, 0x35:   // global pax defaults, GNU long link names, directories: not members
                break
            default:
                let full = paxPath ?? longName ?? memberName
                let fault = paxFault
                longName = nil; paxPath = nil; paxSize = nil; paxFault = nil
                lastMember = full
                if let fault { try emit(); try context.dead(name + ":" + full, "member \(full) is skipped: \(fault)"); continue scan }
                guard type == 0x30 || type == 0 || type == 0x37 else {
                    try emit()
                    try context.dead(name + ":" + full, "member is not a regular file (tar type '\(Character(Unicode.Scalar(type)))')")
                    continue scan
                }
                // Grouping on bytes (no String work per member): key = directory + basename up to its first
                // dot, kind = the last dotted component, lower-cased.
                var member = Array(full.utf8)[...]
                while member.starts(with: [0x2E, 0x2F]) { member = member.dropFirst(2) }
                let baseStart = (member.lastIndex(of: 0x2F).map { $0 + 1 }) ?? member.startIndex
                guard let dot = member[baseStart...].firstIndex(of: 0x2E), dot != baseStart else {
                    try emit()
                    try context.dead(name + ":" + full, "member name has no extension, so it belongs to no sample")
                    continue scan
                }
                let lastDot = member.lastIndex(of: 0x2E)!
                let kindBytes = member[(lastDot + 1)...].map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
                let keyBytes = member[member.startIndex..<dot]
                if let current = sample, current.key.count == prefix.count + keyBytes.count,
                   current.key[prefix.count...].elementsEqual(keyBytes) {
                    // same sample
                } else {
                    try emit()
                    sample = Sample(key: prefix + keyBytes)
                }
                if let rank = Self.imageKinds.firstIndex(of: kindBytes) {
                    if sample!.image == nil || rank < sample!.image!.kind { sample!.image = (rank, dataOffset, dataSize) }
                } else if kindBytes == Self.cls || (kindBytes == Self.txt && !sample!.labelFromCls) {
                    guard dataSize <= UInt64(Self.labelLimit), let data = reader.bytes(at: dataOffset, count: Int(dataSize)) else {
                        try context.dead(name + ":" + full, "label member is \(dataSize) bytes, above the \(Self.labelLimit)-byte limit")
                        continue scan
                    }
                    sample!.label = Array(data)
                    sample!.labelFromCls = kindBytes == Self.cls
                    let kind = String(decoding: kindBytes, as: UTF8.self)
                    if !sample!.others.contains(kind) { sample!.others.append(kind) }
                } else {
                    if !Self.annotationKinds.contains(kindBytes), sample!.image == nil {
                        sample!.image = (Self.imageKinds.count, dataOffset, dataSize)   // below every image type
                    }
                    let kind = String(decoding: kindBytes, as: UTF8.self)
                    if !sample!.others.contains(kind) { sample!.others.append(kind) }
                }
            }
        }
        // At the limit the loop stopped on the first member of the next sample, which lies past the limit:
        // unread input, so neither an item nor a dead letter (INDEX.md §2).
        if context.full { sample = nil } else { try emit() }
    }
}

/// Reads a file through a 64 KiB window: consecutive small headers cost one read per window, and a
/// large member is skipped by moving the window, so its data is never read.
final class WindowReader {
    private let file: DurableFile
    private let size: UInt64
    private var window: UnsafeMutableRawBufferPointer
    private var windowStart: UInt64 = 0
    private var windowLength = 0

    init(file: DurableFile, size: UInt64) {
        self.file = file
        self.size = size
        window = .allocate(byteCount: 1 << 16, alignment: 16)
    }

    deinit { window.deallocate() }

    /// `count` bytes at `offset`, valid until the next call, or nil when they are not all in the file or
    /// cannot be read.
    func bytes(at offset: UInt64, count: Int) -> UnsafeRawBufferPointer? {
        guard offset <= size, UInt64(count) <= size - offset else { return nil }
        if offset < windowStart || offset + UInt64(count) > windowStart + UInt64(windowLength) {
            if count > window.count {
                window.deallocate()
                window = .allocate(byteCount: count, alignment: 16)
            }
            let want = Int(min(UInt64(window.count), size - offset))
            // A failed read counts as the file ending there: the caller names the offset it could not read.
            let got = (try? file.readAvailable(into: UnsafeMutableRawBufferPointer(rebasing: window[0..<want]), at: Int(offset))) ?? 0
            windowStart = offset
            windowLength = got
            guard got >= count else { windowLength = 0; return nil }
        }
        let start = Int(offset - windowStart)
        return UnsafeRawBufferPointer(rebasing: window[start..<start + count])
    }
}

func cString(_ bytes: UnsafeRawBufferPointer) -> String {
    let end = bytes.firstIndex(of: 0) ?? bytes.endIndex
    return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[bytes.startIndex..<end]), as: UTF8.self)
}

func cString(_ bytes: Slice<UnsafeRawBufferPointer>) -> String { cString(UnsafeRawBufferPointer(rebasing: bytes)) }

/// Octal (space/NUL padded) or GNU base-256 (high bit set) numeric field; nil if neither or too large.
func parseNumber(_ field: UnsafeRawBufferPointer) -> UInt64? {
    guard let first = field.first else { return nil }
    if first & 0x80 != 0 {
        guard first & 0x40 == 0 else { return nil }   // negative
        var value = UInt64(first & 0x3F)
        for byte in field.dropFirst() {
            guard value < (UInt64(1) << 55) else { return nil }
            value = value << 8 | UInt64(byte)
        }
        return value
    }
    var value: UInt64 = 0
    var seenDigit = false
    for byte in field {
        switch byte {
        case 0x30...0x37:
            guard value < (UInt64(1) << 60) else { return nil }
            value = value * 8 + UInt64(byte - 0x30)
            seenDigit = true
        case 0x20, 0:
            if seenDigit { return value }
        default:
            return nil
        }
    }
    return seenDigit ? value : nil
}

struct PaxFault: Error { let reason: String }

/// Pax records are `"<len> <key>=<value>\n"`, `<len>` counting the whole record. Every length and index is
/// checked before use, so no record can make a range run backwards or past the data.
func parsePax(_ data: UnsafeRawBufferPointer) -> Result<[String: String], PaxFault> {
    var fields: [String: String] = [:]
    var index = 0
    while index < data.count {
        if data[index] == 0 { break }
        var length = 0
        var cursor = index
        while cursor < data.count, data[cursor] >= 0x30 && data[cursor] <= 0x39, cursor - index < 12 {
            length = length * 10 + Int(data[cursor] - 0x30)
            cursor += 1
        }
        guard cursor > index, cursor < data.count, data[cursor] == 0x20 else {
            return .failure(PaxFault(reason: "record at byte \(index) does not start with '<length> '"))
        }
        guard length > cursor - index + 1, length <= data.count - index else {
            return .failure(PaxFault(reason: "record at byte \(index) has length \(length), outside the \(data.count - index) bytes left"))
        }
        let recordEnd = index + length
        guard data[recordEnd - 1] == 0x0A else { return .failure(PaxFault(reason: "record at byte \(index) does not end with a newline")) }
        let body = UnsafeRawBufferPointer(rebasing: data[(cursor + 1)..<(recordEnd - 1)])
        guard let equals = body.firstIndex(of: 0x3D) else { return .failure(PaxFault(reason: "record at byte \(index) has no '='")) }
        let key = String(decoding: UnsafeRawBufferPointer(rebasing: body[body.startIndex..<equals]), as: UTF8.self)
        fields[key] = String(decoding: UnsafeRawBufferPointer(rebasing: body[(equals + 1)...]), as: UTF8.self)
        index = recordEnd
    }
    return .success(fields)
}
