import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a CSV or JSONL manifest once, in 4 MiB chunks, in file order (Protocols/INDEX.md §3.2): an item is
/// final as soon as its line is read, and memory does not depend on the manifest's length.
struct ManifestScanner {
    let context: ScanContext
    let path: String
    /// A record longer than this (an unterminated quote, a binary file) is a dead letter.
    static let recordLimit = 1 << 20
    private static let chunk = 4 << 20

    /// One parsed row, fields as byte arrays (the slow path) or nil when absent.
    private struct Row { var path: [UInt8]?; var label: [UInt8]?; var labelIsNumber = false; var split: [UInt8]? }

    func run() throws {
        let manifest: DurableFile
        let info: stat
        do { manifest = try DurableFile.open(path, access: .readOnly) } catch { throw IndexError("cannot read manifest \(path): \(failureText(error))") }
        do { info = try manifest.status() } catch { throw IndexError("cannot stat manifest \(path): \(failureText(error))") }
        let name = (path as NSString).lastPathComponent
        try context.writer.addFingerprint(FingerprintEntry(path: name, kind: .manifest, size: UInt64(info.st_size), mtimeNs: mtimeNs(info),
                                                           sampleHash: sampledHash(fd: manifest.descriptor, size: UInt64(info.st_size), blocks: 16)))
        let directory = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { if directory >= 0 { close(directory) } }
        var lines = LineSource(file: manifest)
        lines.beforeRead = { [context] in try context.publish() }
        var state = RowState(context: context, manifest: name, directory: directory)
        if (path as NSString).pathExtension.lowercased() == "csv" {
            try scanCSV(&lines, &state)
        } else {
            try scanJSONL(&lines, &state)
        }
    }

    // MARK: CSV

    private func scanCSV(_ lines: inout LineSource, _ state: inout RowState) throws {
        guard let header = try lines.next() else { throw IndexError("manifest \(path) is empty; it needs a header row with a 'path' column") }
        var headerBytes = Array(header.bytes)
        if headerBytes.starts(with: [0xEF, 0xBB, 0xBF]) { headerBytes.removeFirst(3) }
        let columns = headerBytes.split(separator: 0x2C, omittingEmptySubsequences: false).map {
            String(decoding: trimmed($0), as: UTF8.self).lowercased()
        }
        guard let pathColumn = columns.firstIndex(of: "path") else {
            throw IndexError("manifest \(path) needs a header row with a 'path' column (found: \(columns.joined(separator: ",")))")
        }
        let labelColumn = columns.firstIndex(of: "label") ?? -1
        let splitColumn = columns.firstIndex(of: "split") ?? -1
        if let split = context.selection.split, splitColumn < 0 {
            throw IndexError("manifest \(path) has no 'split' column, so split '\(split)' selects nothing")
        }
        let wanted = context.selection.split.map { Array($0.utf8) }
        while !context.full, let line = try lines.next() {
            let number = line.number
            let bytes = line.bytes
            if bytes.isEmpty { continue }
            // The fast path, one pass: fields are the bytes between commas, unless a quote shows up.
            var column = 0, start = 0
            var pathRange = 0..<0, labelRange = 0..<0, splitRange: Range<Int>? = nil
            var havePath = false, quoted = false, clean = true
            var seen: UInt8 = 0
            let base = bytes.baseAddress!
            for i in 0..<bytes.count {
                let b = base.load(fromByteOffset: i, as: UInt8.self)
                seen |= b
                if b == 0x2C {
                    if column == pathColumn { pathRange = start..<i; havePath = true }
                    else if column == labelColumn { labelRange = start..<i }
                    else if column == splitColumn { splitRange = start..<i }
                    column += 1
                    start = i + 1
                } else if b == 0x22 { quoted = true; break }
                else if b == 0 { clean = false }
            }
            if quoted {
                // Quoted fields may hold commas, doubled quotes and newlines: the slow path.
                guard let fields = try quotedRecord(first: line, lines: &lines) else {
                    try state.dead(number, "has an unterminated quoted field (no closing quote within \(Self.recordLimit) bytes)")
                    continue
                }
                if fields.count == 1 && fields[0].isEmpty { continue }
                func field(_ c: Int) -> [UInt8]? { c >= 0 && c < fields.count ? fields[c] : nil }
                let p = field(pathColumn) ?? []
                let l = field(labelColumn).map { Array(trimmed($0[...])) } ?? []
                let s = field(splitColumn).map { trimmed($0[...]) }
                try p.withUnsafeBytes { pb in try l.withUnsafeBytes { lb in
                    try state.row(number, path: pb, label: lb, labelIsNumber: false, split: s, wanted: wanted, clean: false)
                } }
                continue
            }
            if column == pathColumn { pathRange = start..<bytes.count; havePath = true }
            else if column == labelColumn { labelRange = start..<bytes.count }
            else if column == splitColumn { splitRange = start..<bytes.count }
            column += 1
            if !havePath { try state.dead(number, "has \(column) fields but the 'path' column is field \(pathColumn + 1)"); continue }
            let label = trimmed(bytes[labelRange])
            try state.row(number, path: UnsafeRawBufferPointer(rebasing: bytes[pathRange]), label: UnsafeRawBufferPointer(rebasing: label),
                          labelIsNumber: false, split: splitRange.map { ArraySlice(trimmed(bytes[$0])) }, wanted: wanted,
                          clean: clean && seen < 0x80)
        }
    }

    /// Parses one RFC 4180 record that starts at `first`, pulling further lines while a quote is open.
    /// Returns nil when no closing quote comes within `recordLimit` bytes or before the end of the file; the
    /// lines it pulled are then handed back, so only the first line is lost (as a dead letter).
    private func quotedRecord(first: Line, lines: inout LineSource) throws -> [[UInt8]]? {
        var fields: [[UInt8]] = []
        var field: [UInt8] = []
        var quoted = false
        var text = Array(first.bytes)
        var pulled: [(bytes: [UInt8], number: Int)] = []
        var i = 0
        while true {
            while i < text.count {
                let b = text[i]
                if quoted {
                    if b == 0x22 {
                        if i + 1 < text.count && text[i + 1] == 0x22 { field.append(0x22); i += 1 } else { quoted = false }
                    } else { field.append(b) }
                } else if b == 0x22 { quoted = true }
                else if b == 0x2C { fields.append(field); field = [] }
                else { field.append(b) }
                i += 1
            }
            if !quoted { break }
            guard text.count < Self.recordLimit, let more = try lines.next() else {
                lines.pushBack(pulled)
                return nil
            }
            pulled.append((Array(more.bytes), more.number))
            field.append(0x0A)
            i = text.count
            text.append(contentsOf: more.bytes)
        }
        fields.append(field)
        return fields
    }

    // MARK: JSONL

    private func scanJSONL(_ lines: inout LineSource, _ state: inout RowState) throws {
        let wanted = context.selection.split.map { Array($0.utf8) }
        var first = true
        while !context.full, let line = try lines.next() {
            var bytes = line.bytes
            if first, bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = UnsafeRawBufferPointer(rebasing: bytes[3...]) }
            first = false
            let text = trimmed(bytes[...])
            if text.isEmpty { continue }
            var parser = JSONLine(bytes: UnsafeRawBufferPointer(rebasing: text))
            let row: JSONLine.Fields
            do { row = try parser.object() } catch let error as JSONLine.Failure {
                try state.dead(line.number, "is not a JSON object: \(error.reason)")
                continue
            }
            if let reason = row.refusal { try state.dead(line.number, reason); continue }
            guard let p = row.path, !p.isEmpty else { try state.dead(line.number, "object has no string 'path'"); continue }
            if wanted != nil && row.split == nil { context.skipped += 1; continue }
            try p.withUnsafeBytes { pb in try (row.label ?? []).withUnsafeBytes { lb in
                try state.row(line.number, path: pb, label: lb, labelIsNumber: row.labelIsNumber, split: row.split.map { $0[...] }, wanted: wanted, clean: false)
            } }
        }
    }
}

/// What every manifest row goes through once its fields are known: split filter, label, path checks, item.
private struct RowState {
    let context: ScanContext
    let manifest: String
    let directory: Int32
    private var scratch: [CChar] = []

    init(context: ScanContext, manifest: String, directory: Int32) {
        self.context = context
        self.manifest = manifest
        self.directory = directory
        scratch.reserveCapacity(4096)
    }

    func dead(_ line: Int, _ reason: String) throws {
        try context.dead("\(manifest):\(line)", "line \(line) \(reason)")
    }

    mutating func row(_ line: Int, path: UnsafeRawBufferPointer, label: UnsafeRawBufferPointer, labelIsNumber: Bool,
                      split: ArraySlice<UInt8>?, wanted: [UInt8]?, clean: Bool) throws {
        if let wanted, split.map({ !$0.elementsEqual(wanted) }) ?? true { context.skipped += 1; return }
        if path.isEmpty { try dead(line, "has no path"); return }
        // `clean`: the caller saw only ASCII without NUL in the whole line, so these scans can be skipped.
        if !clean {
            if path.contains(0) { try dead(line, "has a NUL byte in its path"); return }
            if path.contains(where: { $0 >= 0x80 }) && String(validating: path, as: UTF8.self) == nil {
                try dead(line, "has a path that is not UTF-8"); return
            }
        }
        let labelID: Int32
        switch context.labels.id(for: label, isNumber: labelIsNumber, at: "line \(line)") {
        case .success(let id): labelID = id
        case .failure(let refusal): try dead(line, "has a bad label: \(refusal.reason)"); return
        }
        if context.selection.checkPaths, let refusal = check(path) {
            try dead(line, "names '\(String(decoding: path, as: UTF8.self))', which \(refusal)"); return
        }
        try context.writer.appendItem(key: path, label: labelID)
        try context.publishIfDue()
    }

    /// Why the file at `path` (relative to the manifest's folder) cannot be an item, or nil if it can.
    private mutating func check(_ path: UnsafeRawBufferPointer) -> String? {
        scratch.removeAll(keepingCapacity: true)
        for b in path { scratch.append(CChar(bitPattern: b)) }
        scratch.append(0)
        var info = stat()
        guard fstatat(directory >= 0 ? directory : AT_FDCWD, scratch, &info, 0) == 0 else {
            return errno == ENOENT ? "does not exist" : "cannot be read: \(errnoText())"
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "is a directory, not a file"
        case S_IFIFO: return "is a FIFO, not a regular file"
        case S_IFSOCK: return "is a socket, not a regular file"
        default: return "is a device, not a regular file"
        }
    }
}

/// A line of the manifest: its bytes (valid until the next call) and its 1-based number.
struct Line { var bytes: UnsafeRawBufferPointer; var number: Int }

/// Lines of a file through one growing buffer, with no per-line allocation; a `\r` before `\n` is dropped.
struct LineSource {
    private let file: DurableFile
    private var buffer: UnsafeMutableRawBufferPointer
    private var start = 0, end = 0
    private var atEOF = false
    private var number = 0
    private var box: Box

    /// Frees the buffer when the last copy of the source goes.
    private final class Box {
        var buffer: UnsafeMutableRawBufferPointer
        init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
        deinit { buffer.deallocate() }
    }

    /// Lines of `file` from its current position (read sequentially, so it may be a pipe).
    init(file: DurableFile, chunk: Int = 1 << 22) {
        self.file = file
        buffer = .allocate(byteCount: chunk, alignment: 16)
        box = Box(buffer)
    }

    /// Called before each read of the file: the scanner publishes its items there, so a manifest that
    /// arrives slowly (a pipe) never holds final items back while the read waits.
    var beforeRead: (() throws -> Void)?
    /// Lines handed back by `pushBack`, returned before the file's next line.
    private var replay: [(bytes: [UInt8], number: Int)] = []
    private var replayed: UnsafeMutableRawBufferPointer?

    /// Returns `lines` (copies, in order) to the source: a record that pulled lines and then gave up
    /// lets them be read again as lines of their own.
    mutating func pushBack(_ lines: [(bytes: [UInt8], number: Int)]) {
        replay.insert(contentsOf: lines, at: 0)
    }

    /// The next line, or nil at the end of the file. A final line without `\n` is still a line.
    mutating func next() throws -> Line? {
        if !replay.isEmpty {
            let line = replay.removeFirst()
            replayed?.deallocate()
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(line.bytes.count, 1), alignment: 1)
            copy.copyBytes(from: line.bytes)
            replayed = copy
            return Line(bytes: UnsafeRawBufferPointer(rebasing: copy[0..<line.bytes.count]), number: line.number)
        }
        while true {
            if let newline = memchr(buffer.baseAddress! + start, 0x0A, end - start) {
                let stop = buffer.baseAddress!.distance(to: newline)
                var lineEnd = stop
                if lineEnd > start && buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                let line = UnsafeRawBufferPointer(rebasing: buffer[start..<lineEnd])
                start = stop + 1
                number += 1
                return Line(bytes: line, number: number)
            }
            if atEOF {
                guard start < end else { return nil }
                var lineEnd = end
                if buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                let line = UnsafeRawBufferPointer(rebasing: buffer[start..<lineEnd])
                start = end
                number += 1
                return Line(bytes: line, number: number)
            }
            try refill()
        }
    }

    private mutating func refill() throws {
        try beforeRead?()
        if start > 0 {
            if end > start { memmove(buffer.baseAddress!, buffer.baseAddress! + start, end - start) }
            end -= start
            start = 0
        }
        if end == buffer.count {
            // A line longer than the buffer: grow (bounded by the record limit callers enforce).
            let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: buffer.count * 2, alignment: 16)
            bigger.copyMemory(from: UnsafeRawBufferPointer(buffer))
            box = Box(bigger)
            buffer = bigger
        }
        let n = try indexIO { try file.readNext(into: UnsafeMutableRawBufferPointer(rebasing: buffer[end...])) }
        if n == 0 { atEOF = true }
        end += n
    }
}

/// `bytes` without leading and trailing spaces, tabs, carriage returns and newlines.
func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
    var s = bytes.startIndex, e = bytes.endIndex
    while s < e && isBlank(bytes[s]) { s += 1 }
    while e > s && isBlank(bytes[e - 1]) { e -= 1 }
    return bytes[s..<e]
}

/// `bytes` without leading and trailing spaces, tabs, carriage returns and newlines.
func trimmed(_ bytes: Slice<UnsafeRawBufferPointer>) -> Slice<UnsafeRawBufferPointer> {
    var s = bytes.startIndex, e = bytes.endIndex
    while s < e && isBlank(bytes[s]) { s += 1 }
    while e > s && isBlank(bytes[e - 1]) { e -= 1 }
    return bytes[s..<e]
}

@inline(__always) func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A }
