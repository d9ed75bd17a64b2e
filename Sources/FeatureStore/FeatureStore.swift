import Foundation
import WireProtocol
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Descriptive information recorded in `store.json`; never interpreted by the store.
public struct StoreMetadata: Codable, Equatable, Sendable {
    /// Name of the backbone that produced the features.
    public var model: String?
    /// Class names, indexed by label.
    public var classNames: [String]?

    /// Metadata with any subset of fields.
    public init(model: String? = nil, classNames: [String]? = nil) {
        self.model = model
        self.classNames = classNames
    }
}

/// Why a store could not be created, opened, committed to or read.
public enum FeatureStoreError: Error, Equatable, CustomStringConvertible {
    /// `create` found an existing `store.json`.
    case alreadyExists(path: String)
    /// `open` found no `store.json`.
    case notAStore(path: String)
    /// `store.json` is unreadable, of an unknown format version, or describes an impossible store.
    case badManifest(path: String, reason: String)
    /// A committed shard directory failed verification; the store refuses to open rather than hide it.
    case corruptShard(path: String, reason: String)
    /// `shards/` holds something that is neither a shard nor a leftover temporary directory.
    case unexpectedEntry(path: String)
    /// Contents handed to `commit` are internally inconsistent or do not fit the store.
    case invalidContents(shardID: UInt32, reason: String)
    /// A system call failed.
    case io(path: String, operation: String, errno: Int32)

    /// One line naming the path and the problem.
    public var description: String {
        switch self {
        case .alreadyExists(let path): "\(path): a feature store already exists here"
        case .notAStore(let path): "\(path): not a feature store (no store.json)"
        case .badManifest(let path, let reason): "\(path): \(reason)"
        case .corruptShard(let path, let reason): "\(path): corrupt shard: \(reason)"
        case .unexpectedEntry(let path): "\(path): unexpected entry in the shards directory"
        case .invalidContents(let shardID, let reason): "shard \(shardID): cannot commit: \(reason)"
        case .io(let path, let operation, let code): "\(path): \(operation) failed: \(String(cString: strerror(code)))"
        }
    }
}

/// A shard as committed: what `meta.json` records about it.
public struct CommittedShard: Equatable, Sendable {
    /// The shard's identifier.
    public var shardID: UInt32
    /// The lease attempt whose data was stored.
    public var attempt: UInt32
    /// Items in the shard; always `rows + deadLetters`.
    public var shardItemCount: UInt32
    /// Feature rows stored.
    public var rows: Int
    /// Items stored as dead letters.
    public var deadLetters: Int
    /// Bytes of all the shard's files.
    public var bytes: Int
}

/// An append-only, crash-safe store of feature rows, committed one whole shard at a time.
///
/// Promises: a shard is either entirely visible (all files fsynced, verified sizes) or absent, whatever
/// point a process is killed at; a shard is committed at most once; `open` refuses a store with a damaged
/// shard instead of silently skipping it. One process should own a store for writing at a time: `open`
/// deletes leftover temporary directories, which would include those of a concurrent writer.
public final class FeatureStore {
    /// The store's root directory.
    public let root: URL
    /// Element type of stored features, fixed at creation.
    public let dtype: FeatureDTypeCode
    /// Values per row, fixed at creation.
    public let dimension: Int
    /// Model and class names recorded at creation.
    public let metadata: StoreMetadata
    /// Creation time (ISO 8601), as recorded.
    public let created: String

    private var shardsByID: [UInt32: ShardMeta]

    /// Test hook: called at each commit stage so tests can kill the process there.
    var commitStageObserver: ((CommitStage) -> Void)?

    enum CommitStage: String {
        case tmpDirectoryCreated, featuresWritten, allFilesWritten, renamed, durable
    }

    static let formatVersion = 1
    private static let featuresFile = "features.bin"
    private static let indexesFile = "indexes.bin"
    private static let labelsFile = "labels.bin"
    private static let keysFile = "keys.txt"
    private static let deadLettersFile = "dead_letters.jsonl"
    private static let metaFile = "meta.json"
    private static let tmpPrefix = ".tmp-"

    private init(root: URL, manifest: StoreManifest, dtype: FeatureDTypeCode, shards: [UInt32: ShardMeta]) {
        self.root = root
        self.dtype = dtype
        self.dimension = manifest.dimension
        self.metadata = StoreMetadata(model: manifest.model, classNames: manifest.classNames)
        self.created = manifest.created
        self.shardsByID = shards
    }

    private var shardsDirectory: URL { root.appendingPathComponent("shards", isDirectory: true) }

    // MARK: creating and opening

    /// Creates an empty store at `root` (creating the directory if needed) and makes `store.json` durable.
    public static func create(at root: URL, dtype: FeatureDTypeCode, dimension: Int,
                              metadata: StoreMetadata = StoreMetadata()) throws -> FeatureStore {
        guard dimension > 0 else {
            throw FeatureStoreError.badManifest(path: root.path, reason: "dimension must be positive, not \(dimension)")
        }
        let fileManager = FileManager.default
        let manifestURL = root.appendingPathComponent("store.json")
        if fileManager.fileExists(atPath: manifestURL.path) { throw FeatureStoreError.alreadyExists(path: root.path) }
        try fileManager.createDirectory(at: root.appendingPathComponent("shards"), withIntermediateDirectories: true)

        let manifest = StoreManifest(formatVersion: formatVersion, dtype: FeatureEncoding.name(of: dtype), dimension: dimension,
                                     created: ISO8601DateFormatter().string(from: Date()),
                                     model: metadata.model, classNames: metadata.classNames)
        // store.json appears whole or not at all, so a crash during create never leaves a half-written manifest.
        let staging = root.appendingPathComponent(".store.json\(tmpPrefix)\(UUID().uuidString)")
        try Durable.writeFile(try jsonEncoder().encode(manifest), to: staging)
        try Durable.renameItem(staging, to: manifestURL)
        try Durable.syncDirectory(root.appendingPathComponent("shards"))
        try Durable.syncDirectory(root)
        return FeatureStore(root: root, manifest: manifest, dtype: dtype, shards: [:])
    }

    /// Opens an existing store: validates `store.json`, deletes temporary directories left by interrupted
    /// commits, and verifies every shard's `meta.json` against its file sizes (and, when `verifyChecksums`
    /// is true, against the CRC-32C of every file). Throws naming the first shard that fails.
    public static func open(at root: URL, verifyChecksums: Bool = false) throws -> FeatureStore {
        let fileManager = FileManager.default
        let manifestURL = root.appendingPathComponent("store.json")
        guard fileManager.fileExists(atPath: manifestURL.path) else { throw FeatureStoreError.notAStore(path: root.path) }
        let manifest: StoreManifest
        do {
            manifest = try JSONDecoder().decode(StoreManifest.self, from: Data(contentsOf: manifestURL))
        } catch {
            throw FeatureStoreError.badManifest(path: manifestURL.path, reason: "unreadable: \(error)")
        }
        guard manifest.formatVersion == formatVersion else {
            throw FeatureStoreError.badManifest(path: manifestURL.path, reason: "unsupported format version \(manifest.formatVersion)")
        }
        guard let dtype = FeatureEncoding.dtype(named: manifest.dtype) else {
            throw FeatureStoreError.badManifest(path: manifestURL.path, reason: "unknown dtype \(manifest.dtype)")
        }
        guard manifest.dimension > 0 else {
            throw FeatureStoreError.badManifest(path: manifestURL.path, reason: "dimension must be positive, not \(manifest.dimension)")
        }

        for name in (try? fileManager.contentsOfDirectory(atPath: root.path)) ?? [] where name.hasPrefix(".store.json\(tmpPrefix)") {
            try? fileManager.removeItem(at: root.appendingPathComponent(name))
        }

        let shardsDirectory = root.appendingPathComponent("shards", isDirectory: true)
        let names: [String]
        do {
            names = try fileManager.contentsOfDirectory(atPath: shardsDirectory.path)
        } catch {
            throw FeatureStoreError.badManifest(path: shardsDirectory.path, reason: "shards directory unreadable: \(error)")
        }
        var shards: [UInt32: ShardMeta] = [:]
        var removedLeftovers = false
        for name in names.sorted() {
            let url = shardsDirectory.appendingPathComponent(name, isDirectory: true)
            if name.hasPrefix(tmpPrefix) {
                // An interrupted commit: never renamed, so never visible and never acknowledged.
                try fileManager.removeItem(at: url)
                removedLeftovers = true
                continue
            }
            guard let shardID = UInt32(name), name == directoryName(shardID) else {
                throw FeatureStoreError.unexpectedEntry(path: url.path)
            }
            shards[shardID] = try verifyShard(at: url, shardID: shardID, dtype: dtype, dimension: manifest.dimension,
                                              checksums: verifyChecksums)
        }
        if removedLeftovers { try Durable.syncDirectory(shardsDirectory) }
        return FeatureStore(root: root, manifest: manifest, dtype: dtype, shards: shards)
    }

    private static func verifyShard(at url: URL, shardID: UInt32, dtype: FeatureDTypeCode, dimension: Int,
                                    checksums: Bool) throws -> ShardMeta {
        func corrupt(_ reason: String) -> FeatureStoreError { .corruptShard(path: url.path, reason: reason) }
        let meta: ShardMeta
        do {
            meta = try JSONDecoder().decode(ShardMeta.self, from: Data(contentsOf: url.appendingPathComponent(metaFile)))
        } catch {
            throw corrupt("meta.json unreadable: \(error)")
        }
        guard meta.formatVersion == formatVersion else { throw corrupt("unsupported format version \(meta.formatVersion)") }
        guard meta.shardID == shardID else { throw corrupt("meta.json names shard \(meta.shardID)") }
        guard meta.rows >= 0, meta.deadLetters >= 0, meta.rows + meta.deadLetters == Int(meta.shardItemCount) else {
            throw corrupt("\(meta.rows) rows + \(meta.deadLetters) dead letters ≠ \(meta.shardItemCount) items")
        }
        let expectedSizes = [
            featuresFile: meta.rows * dimension * FeatureEncoding.width(of: dtype),
            indexesFile: meta.rows * 8,
            labelsFile: meta.rows * 4,
        ]
        for file in [featuresFile, indexesFile, labelsFile, keysFile, deadLettersFile] {
            guard let digest = meta.files[file] else { throw corrupt("meta.json does not describe \(file)") }
            if let expected = expectedSizes[file], digest.bytes != expected {
                throw corrupt("meta.json gives \(file) \(digest.bytes) bytes, \(meta.rows) rows need \(expected)")
            }
            let fileURL = url.appendingPathComponent(file)
            let size = (try? FileManager.default.attributesOfItem(atPath: fileURL.path)[.size] as? NSNumber)?.intValue
            guard let size else { throw corrupt("\(file) is missing") }
            guard size == digest.bytes else { throw corrupt("\(file) has \(size) bytes, meta.json says \(digest.bytes)") }
            if checksums {
                let crc = try Data(contentsOf: fileURL, options: .alwaysMapped).withUnsafeBytes { CRC32C.checksum($0) }
                guard crc == digest.crc32c else { throw corrupt("\(file) CRC-32C \(crc) ≠ \(digest.crc32c) in meta.json") }
            }
        }
        return meta
    }

    // MARK: committing

    /// Shards whose data is durably stored.
    public var committedShards: Set<UInt32> { Set(shardsByID.keys) }

    /// What each committed shard holds, in shard order.
    public var shards: [CommittedShard] {
        shardsByID.values.sorted { $0.shardID < $1.shardID }.map {
            CommittedShard(shardID: $0.shardID, attempt: $0.attempt, shardItemCount: $0.shardItemCount,
                           rows: $0.rows, deadLetters: $0.deadLetters, bytes: $0.files.values.reduce(0) { $0 + $1.bytes })
        }
    }

    /// Feature rows stored.
    public var rowCount: Int { shardsByID.values.reduce(0) { $0 + $1.rows } }
    /// Dead letters stored.
    public var deadLetterCount: Int { shardsByID.values.reduce(0) { $0 + $1.deadLetters } }
    /// Committed shards.
    public var shardCount: Int { shardsByID.count }

    /// Durably stores one shard: when this returns true, the shard survives any crash; if the process dies
    /// before, the shard is absent after the next `open`. Returns false, writing nothing, when the shard is
    /// already committed. Features are converted to the store's dtype.
    @discardableResult
    public func commit(_ contents: ShardContents, shardID: UInt32, attempt: UInt32) throws -> Bool {
        if shardsByID[shardID] != nil { return false }
        try validate(contents, shardID: shardID)

        let fileManager = FileManager.default
        let name = Self.directoryName(shardID)
        let staging = shardsDirectory.appendingPathComponent("\(Self.tmpPrefix)\(name)-\(UUID().uuidString)", isDirectory: true)
        let final = shardsDirectory.appendingPathComponent(name, isDirectory: true)
        try fileManager.createDirectory(at: staging, withIntermediateDirectories: false)
        var renamed = false
        defer { if !renamed { try? fileManager.removeItem(at: staging) } }
        commitStageObserver?(.tmpDirectoryCreated)

        var files: [String: FileDigest] = [:]
        func store(_ data: Data, as file: String) throws {
            try Durable.writeFile(data, to: staging.appendingPathComponent(file))
            files[file] = FileDigest(bytes: data.count, crc32c: data.withUnsafeBytes { CRC32C.checksum($0) })
        }
        try store(FeatureEncoding.littleEndianBytes(of: contents.features, dtype: dtype), as: Self.featuresFile)
        commitStageObserver?(.featuresWritten)
        try store(FeatureEncoding.bytes(ofLittleEndian: contents.indexes), as: Self.indexesFile)
        try store(FeatureEncoding.bytes(ofLittleEndian: contents.labels), as: Self.labelsFile)
        try store(Data(contents.keys.map { FeatureEncoding.escapeKey($0) + "\n" }.joined().utf8), as: Self.keysFile)
        let encoder = Self.jsonEncoder()
        var deadLetterLines = Data()
        for letter in contents.deadLetters {
            deadLetterLines += try encoder.encode(DeadLetterLine(offset: letter.offset, key: letter.key, reason: letter.reason))
            deadLetterLines += Data("\n".utf8)
        }
        try store(deadLetterLines, as: Self.deadLettersFile)

        let meta = ShardMeta(formatVersion: Self.formatVersion, shardID: shardID, attempt: attempt,
                             shardItemCount: contents.shardItemCount, rows: contents.rowCount,
                             deadLetters: contents.deadLetters.count, files: files)
        try Durable.writeFile(try encoder.encode(meta), to: staging.appendingPathComponent(Self.metaFile))
        try Durable.syncDirectory(staging)
        commitStageObserver?(.allFilesWritten)

        try Durable.renameItem(staging, to: final)
        renamed = true
        // Visible from here on, so the in-memory view must agree even if the directory sync below fails.
        shardsByID[shardID] = meta
        commitStageObserver?(.renamed)
        try Durable.syncDirectory(shardsDirectory)
        commitStageObserver?(.durable)
        return true
    }

    private func validate(_ contents: ShardContents, shardID: UInt32) throws {
        func invalid(_ reason: String) -> FeatureStoreError { .invalidContents(shardID: shardID, reason: reason) }
        let rows = contents.rowCount
        guard contents.dimension == dimension else { throw invalid("dimension \(contents.dimension), store has \(dimension)") }
        guard contents.features.count == rows * dimension else {
            throw invalid("\(contents.features.count) feature values for \(rows) rows of dimension \(dimension)")
        }
        guard contents.indexes.count == rows, contents.labels.count == rows, contents.keys.count == rows else {
            throw invalid("\(rows) offsets but \(contents.indexes.count) indexes, \(contents.labels.count) labels, \(contents.keys.count) keys")
        }
        guard rows + contents.deadLetters.count == Int(contents.shardItemCount) else {
            throw invalid("\(rows) rows + \(contents.deadLetters.count) dead letters ≠ \(contents.shardItemCount) items")
        }
        // Offsets are not stored, so this is the last chance to prove each item of the shard appears exactly once:
        // with the counts above, increasing, in-range and disjoint offsets cover 0..<shardItemCount.
        let deadOffsets = contents.deadLetters.map(\.offset)
        for (name, offsets) in [("row", contents.offsets), ("dead letter", deadOffsets)] {
            guard zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }) else { throw invalid("\(name) offsets are not increasing") }
            guard offsets.last.map({ $0 < contents.shardItemCount }) ?? true else { throw invalid("\(name) offset beyond the shard") }
        }
        let rowOffsets = Set(contents.offsets)
        if let both = deadOffsets.first(where: rowOffsets.contains) {
            throw invalid("offset \(both) is both a row and a dead letter")
        }
    }

    // MARK: reading

    /// Every stored row in (shard, offset) order, with features memory-mapped.
    public func rows() throws -> StoreRows {
        var segments: [StoreRows.Segment] = []
        var indexes: [UInt64] = []
        var labels: [Int32] = []
        var keys: [String] = []
        for meta in shardsByID.values.sorted(by: { $0.shardID < $1.shardID }) where meta.rows > 0 {
            let directory = shardDirectory(meta.shardID)
            let features = try Data(contentsOf: directory.appendingPathComponent(Self.featuresFile), options: .alwaysMapped)
            guard features.count == meta.rows * dimension * FeatureEncoding.width(of: dtype) else {
                throw FeatureStoreError.corruptShard(path: directory.path, reason: "features.bin changed size since open")
            }
            segments.append(.init(shardID: meta.shardID, firstRow: indexes.count, rowCount: meta.rows, featureBytes: features))
            let shard = try readShardColumns(meta)
            indexes += shard.indexes
            labels += shard.labels
            keys += shard.keys
        }
        return StoreRows(dtype: dtype, dimension: dimension, segments: segments, indexes: indexes, labels: labels, keys: keys)
    }

    /// Every dead letter in (shard, offset) order.
    public func deadLetters() throws -> [(shardID: UInt32, entry: DeadLetterEntry)] {
        var result: [(shardID: UInt32, entry: DeadLetterEntry)] = []
        for meta in shardsByID.values.sorted(by: { $0.shardID < $1.shardID }) where meta.deadLetters > 0 {
            result += try readDeadLetters(meta).map { (meta.shardID, $0) }
        }
        return result
    }

    /// Checks that each of `expectedIndexes` is stored exactly once, as a feature row or a dead letter.
    ///
    /// Dead letters carry only their shard offset and key, so `deadLetterIndex` must name their dataset
    /// index (for example by looking the key up) for them to count; those it cannot name are only counted
    /// as unresolved, so leave dead-lettered items out of `expectedIndexes` when passing no resolver.
    public func exactlyOnceReport(expectedIndexes: Set<UInt64>,
                                  deadLetterIndex: (_ shardID: UInt32, _ entry: DeadLetterEntry) -> UInt64? = { _, _ in nil })
        -> ExactlyOnceReport {
        var counts: [UInt64: Int] = [:]
        var report = tally(deadLetterIndex: deadLetterIndex) { counts[$0, default: 0] += 1 }
        report.expectedCount = expectedIndexes.count
        report.missing = expectedIndexes.filter { counts[$0] == nil }.sorted()
        report.duplicated = counts.filter { $0.value > 1 }
        report.unexpected = counts.keys.filter { !expectedIndexes.contains($0) }.sorted()
        return report
    }

    /// `exactlyOnceReport` for a contiguous range of indexes, using one byte per expected index.
    public func exactlyOnceReport(expectedIndexes: Range<UInt64>,
                                  deadLetterIndex: (_ shardID: UInt32, _ entry: DeadLetterEntry) -> UInt64? = { _, _ in nil })
        -> ExactlyOnceReport {
        var inRange = [UInt8](repeating: 0, count: expectedIndexes.count)
        var outside: [UInt64: Int] = [:]
        var report = tally(deadLetterIndex: deadLetterIndex) { index in
            if expectedIndexes.contains(index) {
                let slot = Int(index - expectedIndexes.lowerBound)
                if inRange[slot] < UInt8.max { inRange[slot] += 1 }
            } else {
                outside[index, default: 0] += 1
            }
        }
        report.expectedCount = expectedIndexes.count
        for (slot, count) in inRange.enumerated() where count != 1 {
            let index = expectedIndexes.lowerBound + UInt64(slot)
            if count == 0 { report.missing.append(index) } else { report.duplicated[index] = Int(count) }
        }
        for (index, count) in outside where count > 1 { report.duplicated[index] = count }
        report.unexpected = outside.keys.sorted()
        return report
    }

    private func tally(deadLetterIndex: (UInt32, DeadLetterEntry) -> UInt64?, record: (UInt64) -> Void) -> ExactlyOnceReport {
        var report = ExactlyOnceReport(expectedCount: 0, rows: 0, deadLetters: 0, missing: [], duplicated: [:], unexpected: [],
                                       unresolvedDeadLetters: 0, unreadableShards: [:])
        for meta in shardsByID.values.sorted(by: { $0.shardID < $1.shardID }) {
            do {
                let indexes = try readShardColumns(meta, keys: false).indexes
                let letters = meta.deadLetters > 0 ? try readDeadLetters(meta) : []
                report.rows += indexes.count
                report.deadLetters += letters.count
                indexes.forEach(record)
                for letter in letters {
                    if let index = deadLetterIndex(meta.shardID, letter) { record(index) } else { report.unresolvedDeadLetters += 1 }
                }
            } catch {
                report.unreadableShards[meta.shardID] = "\(error)"
            }
        }
        return report
    }

    /// A summary for humans; problems reading dead letters are reported inside it rather than thrown.
    public func inspect() -> StoreSummary {
        let shardList = shards
        var firstDeadLetters: [(shardID: UInt32, entry: DeadLetterEntry)] = []
        var problems: [String] = []
        for meta in shardsByID.values.sorted(by: { $0.shardID < $1.shardID }) where meta.deadLetters > 0 {
            if firstDeadLetters.count >= 5 { break }
            do {
                firstDeadLetters += try readDeadLetters(meta).prefix(5 - firstDeadLetters.count).map { (meta.shardID, $0) }
            } catch {
                problems.append("shard \(meta.shardID): \(error)")
            }
        }
        let ids = shardList.map(\.shardID)
        return StoreSummary(path: root.path, dtype: dtype, dimension: dimension, created: created, metadata: metadata,
                            shards: shardList.count, shardIDRange: ids.first.flatMap { first in ids.last.map { first...$0 } },
                            rows: rowCount, deadLetters: deadLetterCount, bytes: shardList.reduce(0) { $0 + $1.bytes },
                            firstDeadLetters: firstDeadLetters, problems: problems)
    }

    // MARK: files

    static func directoryName(_ shardID: UInt32) -> String {
        let digits = String(shardID)
        return String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }

    func shardDirectory(_ shardID: UInt32) -> URL {
        shardsDirectory.appendingPathComponent(Self.directoryName(shardID), isDirectory: true)
    }

    private func readShardColumns(_ meta: ShardMeta, keys readKeys: Bool = true) throws
        -> (indexes: [UInt64], labels: [Int32], keys: [String]) {
        let directory = shardDirectory(meta.shardID)
        func corrupt(_ reason: String) -> FeatureStoreError { .corruptShard(path: directory.path, reason: reason) }
        let indexData = try Data(contentsOf: directory.appendingPathComponent(Self.indexesFile))
        guard indexData.count == meta.rows * 8 else { throw corrupt("indexes.bin changed size since open") }
        guard readKeys else { return (FeatureEncoding.integers(fromLittleEndian: indexData, as: UInt64.self), [], []) }
        let labelData = try Data(contentsOf: directory.appendingPathComponent(Self.labelsFile))
        guard labelData.count == meta.rows * 4 else { throw corrupt("labels.bin changed size since open") }
        let keyText = String(decoding: try Data(contentsOf: directory.appendingPathComponent(Self.keysFile)), as: UTF8.self)
        var lines = keyText.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.last == "" else { throw corrupt("keys.txt does not end with a newline") }
        lines.removeLast()
        guard lines.count == meta.rows else { throw corrupt("keys.txt has \(lines.count) keys for \(meta.rows) rows") }
        return (FeatureEncoding.integers(fromLittleEndian: indexData, as: UInt64.self),
                FeatureEncoding.integers(fromLittleEndian: labelData, as: Int32.self),
                lines.map(FeatureEncoding.unescapeKey))
    }

    private func readDeadLetters(_ meta: ShardMeta) throws -> [DeadLetterEntry] {
        let directory = shardDirectory(meta.shardID)
        let data = try Data(contentsOf: directory.appendingPathComponent(Self.deadLettersFile))
        let decoder = JSONDecoder()
        let letters = try data.split(separator: UInt8(ascii: "\n")).map { line in
            let entry = try decoder.decode(DeadLetterLine.self, from: Data(line))
            return DeadLetterEntry(offset: entry.offset, key: entry.key, reason: entry.reason)
        }
        guard letters.count == meta.deadLetters else {
            throw FeatureStoreError.corruptShard(path: directory.path,
                                                 reason: "dead_letters.jsonl has \(letters.count) entries, meta.json says \(meta.deadLetters)")
        }
        return letters
    }

    private static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

// MARK: - on-disk records

struct StoreManifest: Codable {
    var formatVersion: Int
    var dtype: String
    var dimension: Int
    var created: String
    var model: String?
    var classNames: [String]?
}

struct FileDigest: Codable, Equatable {
    var bytes: Int
    var crc32c: UInt32
}

struct ShardMeta: Codable, Equatable {
    var formatVersion: Int
    var shardID: UInt32
    var attempt: UInt32
    var shardItemCount: UInt32
    var rows: Int
    var deadLetters: Int
    var files: [String: FileDigest]
}

struct DeadLetterLine: Codable {
    var offset: UInt32
    var key: String
    var reason: String
}

/// fsync-backed file operations: each returns only once its effect survives power loss.
enum Durable {
    static func writeFile(_ data: Data, to url: URL) throws {
        let descriptor = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FeatureStoreError.io(path: url.path, operation: "open", errno: errno) }
        defer { _ = close(descriptor) }
        try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var written = 0
            while written < bytes.count {
                let result = write(descriptor, bytes.baseAddress! + written, bytes.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    throw FeatureStoreError.io(path: url.path, operation: "write", errno: errno)
                }
                written += result
            }
        }
        guard fsync(descriptor) == 0 else { throw FeatureStoreError.io(path: url.path, operation: "fsync", errno: errno) }
    }

    static func syncDirectory(_ url: URL) throws {
        let descriptor = open(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard descriptor >= 0 else { throw FeatureStoreError.io(path: url.path, operation: "open", errno: errno) }
        defer { _ = close(descriptor) }
        guard fsync(descriptor) == 0 else { throw FeatureStoreError.io(path: url.path, operation: "fsync", errno: errno) }
    }

    static func renameItem(_ source: URL, to destination: URL) throws {
        guard rename(source.path, destination.path) == 0 else {
            throw FeatureStoreError.io(path: destination.path, operation: "rename", errno: errno)
        }
    }
}
