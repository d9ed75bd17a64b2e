import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// State every scanner shares: the writer, the selection's limit, labels, and the publication rule.
final class ScanContext {
    let writer: IndexWriter
    let selection: IndexSelection
    let options: ScanOptions
    let temporaryDirectory: String
    let scan: IndexScan
    var labels = LabelTable()
    var skipped = 0
    private var lastPublish = monotonicMs()
    private var sinceCheck = 0

    init(writer: IndexWriter, selection: IndexSelection, options: ScanOptions, temporaryDirectory: String, scan: IndexScan) {
        self.writer = writer
        self.selection = selection
        self.options = options
        self.temporaryDirectory = temporaryDirectory
        self.scan = scan
    }

    /// Whether the selection's limit is reached: the scanners stop reading.
    var full: Bool { selection.limit.map { writer.itemCount >= $0 } ?? false }

    func dead(_ key: String, _ reason: String) throws { try writer.addDeadLetter(key: key, reason: reason) }

    /// Publishes the items written so far when `publishIntervalMs` has passed (checked every 1,024 items,
    /// so the clock costs nothing per item).
    @inline(__always) func publishIfDue() throws {
        sinceCheck += 1
        guard sinceCheck >= 1024 else { return }
        sinceCheck = 0
        let now = monotonicMs()
        if now - lastPublish >= UInt64(options.publishIntervalMs) { try publish(); lastPublish = now }
    }

    func publish(complete: Bool = false) throws {
        scan.publish(try writer.checkpoint(), sources: writer.sourcePaths, complete: complete)
    }

    /// Adds `sampledFiles` evenly spaced file items to the fingerprint (image folders and manifests).
    func sampleItemFiles() throws {
        try publish()
        let n = writer.itemCount
        guard n > 0, options.sampledFiles > 0 else { return }
        let picks = Set((0..<min(n, options.sampledFiles)).map { $0 * n / min(n, options.sampledFiles) }).sorted()
        for position in picks {
            guard let item = try scan.items(position..<position + 1).first, case .file(let path) = item.locator else { continue }
            guard let state = fileState(path, blocks: 16) else { continue }
            try writer.addFingerprint(FingerprintEntry(path: item.key, kind: .sampledFile, size: state.size, mtimeNs: state.mtimeNs, sampleHash: state.hash))
        }
    }
}

/// Turns label text into class ids that are final when the item is written (Protocols/INDEX.md §4).
struct LabelTable {
    /// Largest integer label an index accepts (classes 0…max are implied).
    static let maxInteger = 999_999
    private(set) var kind = LabelKind.none
    private(set) var names: [String] = []
    private var ids: [[UInt8]: Int32] = [:]
    private(set) var maxSeen: Int32 = -1
    private var firstWhere = ""

    /// The id for `text` (already trimmed), -1 for empty text, or the reason it is refused.
    mutating func id(for text: UnsafeRawBufferPointer, isNumber: Bool = false, at place: @autoclosure () -> String) -> Result<Int32, LabelRefusal> {
        if text.isEmpty { return .success(-1) }
        var value = 0
        var digits = !text.isEmpty && text.count <= 7
        if digits { for b in text { if b < 0x30 || b > 0x39 { digits = false; break }; value = value * 10 + Int(b - 0x30) } }
        if kind == .none {
            kind = digits ? .integers : .names
            firstWhere = place()
        }
        if kind == .integers {
            guard digits else {
                return .failure(LabelRefusal("label '\(String(decoding: text, as: UTF8.self))' is not a non-negative integer like the labels before it (first at \(firstWhere))"))
            }
            guard value <= Self.maxInteger else { return .failure(LabelRefusal("label \(value) is above the largest integer label, \(Self.maxInteger)")) }
            maxSeen = max(maxSeen, Int32(value))
            return .success(Int32(value))
        }
        if isNumber { return .failure(LabelRefusal("label \(String(decoding: text, as: UTF8.self)) is a number, but the labels before it are names (first at \(firstWhere))")) }
        let bytes = Array(text)
        if let id = ids[bytes] { return .success(id) }
        guard String(validating: bytes, as: UTF8.self) != nil else { return .failure(LabelRefusal("label is not UTF-8")) }
        let id = Int32(names.count)
        ids[bytes] = id
        names.append(String(decoding: bytes, as: UTF8.self))
        return .success(id)
    }

    var classCount: Int { kind == .integers ? Int(maxSeen) + 1 : names.count }
}

struct LabelRefusal: Error { let reason: String; init(_ reason: String) { self.reason = reason } }

/// What `fileState` saw of a file.
struct FileState { var size: UInt64; var mtimeNs: Int64; var hash: UInt64 }

/// Size, mtime and the sampled hash of a file (§5), or nil when it cannot be opened.
func fileState(_ path: String, blocks: Int) -> FileState? {
    // Hand-written open, not DurableFile's: O_NONBLOCK, so that a FIFO among the files does not block the scan.
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
    return FileState(size: UInt64(info.st_size), mtimeNs: mtimeNs(info), hash: sampledHash(fd: fd, size: UInt64(info.st_size), blocks: blocks))
}

func mtimeNs(_ info: stat) -> Int64 { Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec) }

/// FNV-1a over the size and `blocks` blocks of 4,096 bytes at offsets ⌊k·max(size−4096, 0)/(blocks−1)⌋.
func sampledHash(fd: Int32, size: UInt64, blocks: Int) -> UInt64 {
    var hash = FNV1a64()
    hash.add(size)
    var block = [UInt8](repeating: 0, count: 4096)
    let span = size > 4096 ? size - 4096 : 0
    for k in 0..<blocks {
        let offset = blocks > 1 ? span * UInt64(k) / UInt64(blocks - 1) : 0
        let want = Int(min(4096, size - min(offset, size)))
        let got = block.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(offset)) }
        hash.add(offset)
        if got > 0 { hash.add(bytes: block[0..<got]) }
    }
    return hash.value
}

/// Prepares a scan (checks the dataset path, creates the writer) and runs it.
/// Handed to the scan thread once and used only there.
struct ScanJob: @unchecked Sendable {
    let context: ScanContext
    let kind: DatasetKind
    let datasetPath: String
    let indexPath: String
    /// `<index>.lock`, held (flock) for the whole scan: two scans of one index path (two coordinators, or
    /// two heads, on one job folder) would otherwise write the same part files.
    let lockFile: DurableFile

    static func prepare(_ selection: IndexSelection, indexPath: String, options: ScanOptions, scan: IndexScan) throws -> ScanJob {
        let path = selection.absolutePath
        let kind = try selection.resolvedKind()
        var info = stat()
        guard stat(path, &info) == 0 else { throw IndexError("dataset path \(path) cannot be read: \(errnoText())") }
        let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
        if kind == .imageFolder && !isDirectory { throw IndexError("image folder \(path) is not a directory") }
        if kind == .manifest && isDirectory { throw IndexError("manifest \(path) is a directory") }
        let root = isDirectory ? path : (path as NSString).deletingLastPathComponent
        let lockPath = indexPath + ".lock"
        let lockFile: DurableFile
        do {
            lockFile = try DurableFile.open(lockPath, access: .readWrite, creation: .ifAbsent(mode: 0o600), noFollow: true)
            try lockFile.lock()
        } catch DurableFileError.locked(_, let holder) {
            throw IndexError("another process is scanning into \(indexPath) (\(holder.map { "pid \($0)" } ?? "it") holds \(lockPath)); "
                + "one job folder serves one coordinator (and one head) at a time")
        } catch {
            throw IndexError("cannot lock \(lockPath): \(failureText(error))")
        }
        let building = indexPath + ".building"
        let writer = try IndexWriter(buildingDirectory: building, kind: kind, root: root,
                                     selection: selection.canonical(kind: kind, absolutePath: path))
        writer.expect(options.expectedCheckpoints)
        let context = ScanContext(writer: writer, selection: selection, options: options,
                                  temporaryDirectory: options.temporaryDirectory ?? building, scan: scan)
        return ScanJob(context: context, kind: kind, datasetPath: path, indexPath: indexPath, lockFile: lockFile)
    }

    func run() {
        defer { lockFile.close() }
        do {
            let labelKind: LabelKind
            var classNames: [String] = []
            switch kind {
            case .imageFolder:
                classNames = try FolderScanner(context: context, root: datasetPath).run()
                labelKind = classNames.isEmpty ? .none : .folders
            case .manifest:
                try ManifestScanner(context: context, path: datasetPath).run()
                labelKind = context.labels.kind
                classNames = context.labels.names
            case .webDataset:
                try WebDatasetScanner(context: context, path: datasetPath).run()
                labelKind = context.labels.kind
                classNames = context.labels.names
            }
            try context.writer.verifyNothingExpectedIsLeft()
            if kind != .webDataset { try context.sampleItemFiles() }
            try context.publish(complete: true)
            let classCount = labelKind == .integers ? context.labels.classCount : classNames.count
            try context.writer.finish(labelKind: labelKind, classNames: labelKind == .integers ? [] : classNames,
                                      classCount: classCount, skipped: context.skipped, to: indexPath)
            context.scan.end(result: try IndexedDataset(path: indexPath), failure: nil)
        } catch {
            context.scan.end(result: nil, failure: "indexing \(datasetPath) failed: \(error)")
        }
    }
}
