import DatasetIndex
import DurableFile
import Foundation
import WireProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Why a coordinator journal could not be opened or written; every case names the journal file.
public enum JournalError: Error, Equatable, CustomStringConvertible {
    /// A system call failed.
    case io(path: String, operation: String, errno: Int32)
    /// A record before the end of the file is damaged (a torn final record is repaired instead).
    case corrupt(path: String, offset: Int, detail: String)
    /// The journal belongs to a different plan (other data, shard size or shard count).
    case planMismatch(path: String, detail: String)
    /// The journal was written by an incompatible version of FeatureStream.
    case unsupportedVersion(path: String, version: UInt32)
    /// Another coordinator holds the journal open (`holderPID` names it when the kernel says).
    case inUse(path: String, holderPID: Int32?)
    /// The journal was closed, or an earlier append or sync failed so what is on disk is unknown
    /// (the process should restart and replay).
    case unusable(path: String)

    /// A one-line explanation naming the file, for the operator.
    public var description: String {
        switch self {
        case let .io(path, operation, code):
            return "coordinator journal \(path): \(operation) failed: \(String(cString: strerror(code))) (errno \(code))"
        case let .corrupt(path, offset, detail):
            return "coordinator journal \(path) is corrupt at byte \(offset): \(detail); "
                + "move it aside to start the job over (every shard will be processed again)"
        case let .planMismatch(path, detail):
            return "coordinator journal \(path) belongs to a different shard plan (\(detail)); the dataset or "
                + "shard size changed since it was written: restore them, or use a new journal path"
        case let .unsupportedVersion(path, version):
            return "coordinator journal \(path) has format version \(version); this build reads versions "
                + "\(CoordinatorJournal.readableVersions.lowerBound) to \(CoordinatorJournal.formatVersion) (Protocols/JOURNAL.md): finish that job with the build that "
                + "started it, or move the journal aside to start the job over (every shard will be processed again)"
        case let .inUse(path, pid):
            return "coordinator journal \(path) is locked by " + (pid.map { "process \($0)" } ?? "another process")
                + " (is another coordinator running?)"
        case let .unusable(path):
            return "coordinator journal \(path) is closed or had a failed write; restart the coordinator to replay it"
        }
    }
}

/// The coordinator's durable memory: an append-only file recording which plan it serves, which shards the
/// head committed, and how far attempt numbers have been reserved. Every append is on disk (fsync'd) before
/// it returns, so a restarted coordinator replays exactly what it acknowledged.
///
/// Layout (Protocols/JOURNAL.md): records of `[UInt32 LE payload length][UInt32 LE CRC-32C of length and
/// payload][payload]`; the first payload is the header (format version, plan fingerprint, shard count,
/// shard size), the rest are commits (shard id, attempt), attempt reservations and (version 3) poison
/// verdicts. Only a torn final
/// record (an interrupted append) is tolerated: it is truncated away on open. The file is locked while open.
public final class CoordinatorJournal {
    /// The on-disk format this build writes. Version 1 checksummed records with CRC-32 (zlib); version 2
    /// uses CRC-32C, the checksum of frames and store records; version 3 adds poison verdicts; version 4
    /// adds plans that grow while the dataset is scanned (scan checkpoints and the seal).
    public static let formatVersion: UInt32 = 4
    /// The versions this build reads. A version-2 journal is resumed as version 2: its verdicts are not
    /// journaled (a build that reads only version 2 would take them for damage); a version-3 one as
    /// version 3, with a plan fixed at start.
    public static let readableVersions: ClosedRange<UInt32> = 2...4

    private enum Kind: UInt8 {
        case header = 1
        case committed = 2
        case attemptsReserved = 3
        case poisoned = 4
        case checkpoint = 5
        case sealed = 6
    }

    /// The plan a coordinator opens its journal with.
    private struct PlanIdentity {
        /// The plan's fingerprint; for a growing plan, the job id a new journal is created with.
        var fingerprint: UInt64
        /// 0 for a growing plan (JOURNAL.md §2: its header says 0 shards).
        var shardCount: Int
        var shardSize: Int
        var growing: Bool { shardCount == 0 }
    }

    /// The end of a growing plan's scan: the finished index's content id and its entry count.
    public struct Seal: Sendable, Equatable {
        public var contentID: UInt64
        public var entries: UInt64

        /// A seal with the given fields.
        public init(contentID: UInt64, entries: UInt64) {
            self.contentID = contentID
            self.entries = entries
        }
    }

    private static let magic: [UInt8] = Array("FSCJ".utf8)
    /// Far above any real payload, so a damaged length field is recognized instead of read as a torn tail.
    private static let maxPayload = 64
    private static let recordOverhead = 8
    /// Where the header record keeps its kind, magic and version: fixed, so any version is recognised
    /// before its records' checksum (which may be another algorithm) is checked.
    private static let headerKindOffset = recordOverhead
    private static let headerVersionOffset = recordOverhead + 5

    /// The journal file.
    public let path: String
    /// Committed shards with the attempt the head committed, as replayed plus appended since.
    public private(set) var committedAttempts: [UInt32: UInt32]
    /// Highest attempt number reserved so far; a restarted coordinator starts above it
    /// (`LeaseTable(firstAttempt: attemptsReservedThrough + 1)`).
    public private(set) var attemptsReservedThrough: UInt32
    /// Bytes of a torn final record that `open` truncated away (0 when the file ended cleanly).
    public let discardedTailBytes: Int
    /// The file's format version (a resumed version-2 journal stays version 2).
    public let version: UInt32
    /// Poison items found, as replayed plus appended since, first verdict per item; a restarted coordinator
    /// passes them to `LeaseTable(poisoned:)` instead of finding them again.
    public private(set) var poisonVerdicts: [PoisonVerdict]

    /// The fingerprint the job is bound to: the plan's, or a growing plan's job id (from the header).
    public let fingerprint: UInt64
    /// Whether the journal serves a plan that grows while its scan runs (version 4, header shard count 0).
    public let isGrowing: Bool
    /// A growing plan's scan checkpoints, in the order journaled (entry counts increase).
    public private(set) var checkpoints: [ScanCheckpoint]
    /// A growing plan's seal, once its scan finished.
    public private(set) var seal: Seal?

    private var file: DurableFile?
    private var endOffset: Int
    private var isUnusable = false
    /// Shard ids below this may be committed: the plan's count, or what a growing plan has offered.
    private var shardBound: Int
    private let shardSize: Int

    /// Committed shard ids (the keys of `committedAttempts`), for `LeaseTable(committed:)`; kept as a set
    /// because the coordinator consults it on every commit.
    public private(set) var committed: Set<UInt32>

    private init(path: String, file: DurableFile, endOffset: Int, committedAttempts: [UInt32: UInt32],
                 attemptsReservedThrough: UInt32, discardedTailBytes: Int, plan: PlanIdentity, replay: Replay, version: UInt32,
                 poisonVerdicts: [PoisonVerdict]) {
        self.path = path
        fingerprint = replay.fingerprint ?? plan.fingerprint
        isGrowing = plan.growing
        checkpoints = replay.checkpoints
        seal = replay.seal
        shardSize = plan.shardSize
        shardBound = plan.growing ? replay.shardBound : plan.shardCount
        self.version = version
        self.poisonVerdicts = poisonVerdicts
        self.file = file
        self.endOffset = endOffset
        self.committedAttempts = committedAttempts
        self.committed = Set(committedAttempts.keys)
        self.attemptsReservedThrough = attemptsReservedThrough
        self.discardedTailBytes = discardedTailBytes
    }

    deinit { close() }

    /// Opens the journal for `plan`; see `open(path:fingerprint:shardCount:shardSize:)`.
    public static func open(path: String, plan: any ShardSource) throws -> CoordinatorJournal {
        try open(path: path, fingerprint: plan.fingerprint, shardCount: plan.shardCount, shardSize: plan.shardSize)
    }

    /// Opens (creating it durably, directory entry included, if absent) and locks the journal at `path`,
    /// replays it, and checks that it was written for the plan with this fingerprint, shard count and shard
    /// size. A torn final record is truncated away; any other damage, a different plan, or a lock held by
    /// another process throws a `JournalError` naming the file.
    public static func open(path: String, fingerprint: UInt64, shardCount: Int, shardSize: Int) throws -> CoordinatorJournal {
        precondition(shardCount > 0, "a fixed plan has shards; a growing one opens with openGrowing")
        return try open(path: path, plan: PlanIdentity(fingerprint: fingerprint, shardCount: shardCount, shardSize: shardSize))
    }

    /// Opens (creating it if absent) and locks the journal of a job whose plan grows while its dataset is
    /// scanned (version 4): its shards of `shardSize` are offered as the scan's checkpoints are journaled,
    /// and the job is bound to an id the journal keeps: `newJobID` for a new journal (nonzero), else the one
    /// in its header. Throws as `open` does, and `planMismatch` for a journal of a plan fixed at start or of
    /// another shard size.
    public static func openGrowing(path: String, shardSize: Int, newJobID: UInt64) throws -> CoordinatorJournal {
        precondition(newJobID != 0 && shardSize > 0)
        return try open(path: path, plan: PlanIdentity(fingerprint: newJobID, shardCount: 0, shardSize: shardSize))
    }

    /// The format version and the fingerprint the job is bound to (the plan's, or a growing plan's job id)
    /// of the journal at `path`, from its header without checking or locking anything; nil when there is no
    /// header (absent or empty file, or not a journal).
    public static func existingHeader(at path: String) -> (version: UInt32, fingerprint: UInt64)? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        let bytes = [UInt8](handle.readData(ofLength: headerVersionOffset + 12))
        guard bytes.count == headerVersionOffset + 12, bytes[headerKindOffset] == Kind.header.rawValue,
              Array(bytes[headerKindOffset + 1..<headerVersionOffset]) == magic else { return nil }
        return (bytes.readLE(UInt32.self, at: headerVersionOffset), bytes.readLE(UInt64.self, at: headerVersionOffset + 4))
    }

    private static func open(path: String, plan: PlanIdentity) throws -> CoordinatorJournal {
        do {
            let file = try DurableFile.open(path, access: .readWrite, creation: .ifAbsent(mode: 0o644))
            do {
                try file.lock()
            } catch let DurableFileError.locked(_, pid) {
                throw JournalError.inUse(path: path, holderPID: pid)
            }
            if file.created {
                // The header's fsync makes the contents durable, not the name; without this a crash could
                // lose the whole file after commits were acknowledged.
                try DurableFile.syncParentDirectory(of: path)
            }

            let bytes = try file.readAll()
            let replay = try parse(bytes, path: path, plan: plan)
            var endOffset = replay.validLength
            if replay.validLength < bytes.count {
                try file.truncate(to: replay.validLength)
                try file.sync()
            }
            if !replay.hasHeader {
                let header = encodeHeader(plan: plan)
                try file.write(header, at: 0)
                try file.sync()
                endOffset = header.count
            }
            return CoordinatorJournal(path: path, file: file, endOffset: endOffset, committedAttempts: replay.committed,
                                      attemptsReservedThrough: replay.reservedThrough,
                                      discardedTailBytes: bytes.count - replay.validLength,
                                      plan: plan, replay: replay, version: replay.version ?? (plan.growing ? formatVersion : 3),
                                      poisonVerdicts: replay.poisoned)
        } catch let error as DurableFileError {
            throw JournalError(error, journal: path)
        }
    }

    /// Durably records that the head committed `shardID` with `attempt`; returns only once it is on disk.
    public func append(shardID: UInt32, attempt: UInt32) throws {
        precondition(Int(shardID) < shardBound, "shard \(shardID) is outside the plan")
        var payload: [UInt8] = [Kind.committed.rawValue]
        payload.appendLE(shardID)
        payload.appendLE(attempt)
        try appendRecord(payload)
        if committedAttempts[shardID] == nil { committedAttempts[shardID] = attempt }
        committed.insert(shardID)
    }

    /// Durably records that attempt numbers up to `through` may have been handed out, so that a restarted
    /// coordinator never reuses them. Reserve in blocks ahead of `LeaseTable.nextAttempt` to keep fsyncs rare.
    public func reserveAttempts(through: UInt32) throws {
        guard through > attemptsReservedThrough else { return }
        var payload: [UInt8] = [Kind.attemptsReserved.rawValue]
        payload.appendLE(through)
        try appendRecord(payload)
        attemptsReservedThrough = through
    }

    /// Durably records a poison verdict (version 3; a no-op on a resumed version-2 journal, whose
    /// coordinator would find the item again after a restart). A second verdict for an item is ignored.
    public func append(_ verdict: PoisonVerdict) throws {
        precondition(Int(verdict.shardID) < shardBound, "shard \(verdict.shardID) is outside the plan")
        guard version >= 3, !poisonVerdicts.contains(where: { $0.shardID == verdict.shardID && $0.offset == verdict.offset })
        else { return }
        var payload: [UInt8] = [Kind.poisoned.rawValue]
        payload.appendLE(verdict.shardID)
        payload.appendLE(verdict.offset)
        payload.appendLE(verdict.losses)
        try appendRecord(payload)
        poisonVerdicts.append(verdict)
    }

    /// Shard ids a commit may name: the plan's, or the shards a growing plan offered so far (a shard id
    /// beyond them is no shard of this job yet).
    public func mayCommit(shardID: UInt32) -> Bool { Int(shardID) < shardBound }

    /// Durably records (growing plans) that the scan's first `checkpoint.entries` entries are as given,
    /// before their shards are offered: a restarted coordinator's rescan must reach it unchanged
    /// (`ScanOptions.expectedCheckpoints`). Entry counts must increase.
    public func append(_ checkpoint: ScanCheckpoint) throws {
        precondition(isGrowing && seal == nil && checkpoint.entries > (checkpoints.last?.entries ?? 0))
        var payload: [UInt8] = [Kind.checkpoint.rawValue]
        payload.appendLE(checkpoint.items)
        payload.appendLE(checkpoint.deadLetters)
        payload.appendLE(checkpoint.recordsCRC)
        payload.appendLE(checkpoint.keysCRC)
        payload.appendLE(checkpoint.deadLettersCRC)
        try appendRecord(payload)
        checkpoints.append(checkpoint)
        shardBound = max(shardBound, Self.shards(checkpoint.entries, shardSize))
    }

    /// Durably records (growing plans) the finished index the plan is final on; a restarted coordinator
    /// uses that index only if its content id is the same.
    public func append(_ seal: Seal) throws {
        precondition(isGrowing && self.seal == nil)
        var payload: [UInt8] = [Kind.sealed.rawValue]
        payload.appendLE(seal.contentID)
        payload.appendLE(seal.entries)
        try appendRecord(payload)
        self.seal = seal
        shardBound = Self.shards(seal.entries, shardSize)
    }

    /// Shards of `entries` entries, the last one possibly short.
    private static func shards(_ entries: UInt64, _ shardSize: Int) -> Int { Int((entries + UInt64(shardSize) - 1) / UInt64(shardSize)) }

    /// Releases the file and its lock; later appends throw. Safe to call more than once.
    public func close() {
        if let file {
            file.close()
            self.file = nil
            isUnusable = true
        }
    }

    // MARK: - Writing

    private func appendRecord(_ payload: [UInt8]) throws {
        guard !isUnusable, let file else { throw JournalError.unusable(path: path) }
        let record = Self.frame(payload)
        do {
            try file.write(record, at: endOffset)
        } catch let error as DurableFileError {
            // A partial record followed by later appends would read back as mid-file corruption.
            if (try? file.truncate(to: endOffset)) == nil { isUnusable = true }
            throw JournalError(error, journal: path)
        }
        do {
            try file.sync()
        } catch let error as DurableFileError {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing on disk can be trusted.
            isUnusable = true
            throw JournalError(error, journal: path)
        }
        endOffset += record.count
    }

    private static func frame(_ payload: [UInt8]) -> [UInt8] {
        var record: [UInt8] = []
        record.appendLE(UInt32(payload.count))
        record.appendLE(CRC32C.checksum(payload, seed: CRC32C.checksum(record)))
        record += payload
        return record
    }

    private static func encodeHeader(plan: PlanIdentity) -> [UInt8] {
        var payload: [UInt8] = [Kind.header.rawValue]
        payload += magic
        // A fixed plan's new journal is still version 3: nothing in it needs version 4, and builds that read
        // only version 3 can finish its job.
        payload.appendLE(plan.growing ? formatVersion : 3)
        payload.appendLE(plan.fingerprint)
        payload.appendLE(UInt32(plan.shardCount))
        payload.appendLE(UInt32(plan.shardSize))
        return frame(payload)
    }

    // MARK: - Replay

    private struct Replay {
        var hasHeader = false
        var version: UInt32?
        var poisoned: [PoisonVerdict] = []
        var committed: [UInt32: UInt32] = [:]
        var reservedThrough: UInt32 = 0
        /// A growing plan's job id, from the header.
        var fingerprint: UInt64?
        var checkpoints: [ScanCheckpoint] = []
        var seal: Seal?
        /// Shard ids below this may be committed (growing plans: what the checkpoints and seal offered).
        var shardBound = 0
        /// Bytes up to the end of the last intact record.
        var validLength = 0
    }

    private static func parse(_ bytes: [UInt8], path: String, plan: PlanIdentity) throws -> Replay {
        var replay = Replay()
        // The version is read before any checksum, so a journal of another version gets its own error.
        let versionEnd = headerVersionOffset + 4
        if bytes.count >= versionEnd, bytes[headerKindOffset] == Kind.header.rawValue,
           Array(bytes[headerKindOffset + 1..<headerVersionOffset]) == magic {
            let version = bytes.readLE(UInt32.self, at: headerVersionOffset)
            guard readableVersions.contains(version) else { throw JournalError.unsupportedVersion(path: path, version: version) }
        }
        var offset = 0
        while offset < bytes.count {
            let remaining = bytes.count - offset
            // An append interrupted by a crash leaves a prefix of its record, or (on some file systems)
            // zeros where its data should be; anything else is damage to acknowledged data.
            var restIsZero: Bool { bytes[offset...].allSatisfy { $0 == 0 } }
            if remaining < recordOverhead { break }
            let length = Int(bytes.readLE(UInt32.self, at: offset))
            let storedCRC = bytes.readLE(UInt32.self, at: offset + 4)
            if length == 0 || length > maxPayload {
                if restIsZero { break }
                throw JournalError.corrupt(path: path, offset: offset, detail: "impossible record length \(length)")
            }
            if recordOverhead + length > remaining { break }
            let end = offset + recordOverhead + length
            let crc = bytes.withUnsafeBytes { file in
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: file[offset + recordOverhead..<end]),
                                seed: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: file[offset..<offset + 4])))
            }
            if crc != storedCRC {
                if end == bytes.count || restIsZero { break }
                throw JournalError.corrupt(path: path, offset: offset, detail: "checksum mismatch with records after it")
            }
            try apply(Array(bytes[offset + recordOverhead..<end]), at: offset, to: &replay, path: path, plan: plan)
            offset = end
            replay.validLength = offset
        }
        return replay
    }

    private static func apply(_ payload: [UInt8], at offset: Int, to replay: inout Replay,
                              path: String, plan: PlanIdentity) throws {
        func corrupt(_ detail: String) -> JournalError { .corrupt(path: path, offset: offset, detail: detail) }
        guard let kind = Kind(rawValue: payload[0]) else { throw corrupt("unknown record kind \(payload[0])") }
        if !replay.hasHeader && kind != .header { throw corrupt("first record is not a journal header") }
        switch kind {
        case .header:
            guard !replay.hasHeader else { throw corrupt("second header record") }
            guard payload.count == 25, Array(payload[1..<5]) == magic else {
                throw corrupt("not a FeatureStream coordinator journal")
            }
            let version = payload.readLE(UInt32.self, at: 5)
            guard readableVersions.contains(version) else { throw JournalError.unsupportedVersion(path: path, version: version) }
            replay.version = version
            let fingerprint = payload.readLE(UInt64.self, at: 9)
            let shardCount = payload.readLE(UInt32.self, at: 17)
            let shardSize = payload.readLE(UInt32.self, at: 21)
            if plan.growing {
                // A growing plan's fingerprint is the job id the journal was created with.
                guard version >= 4, shardCount == 0, shardSize == plan.shardSize else {
                    throw JournalError.planMismatch(path: path, detail: "journal: \(shardCount == 0 ? "a plan grown while scanning" : "\(shardCount) shards") "
                        + "of \(shardSize)\(version < 4 ? " (version \(version), fixed at start)" : ""); now: a plan grown while scanning, shards of \(plan.shardSize)")
                }
                replay.fingerprint = fingerprint
            } else if shardCount != plan.shardCount || shardSize != plan.shardSize || fingerprint != plan.fingerprint {
                throw JournalError.planMismatch(path: path, detail: "journal: \(shardCount) shards of \(shardSize), "
                    + "fingerprint \(hex(fingerprint)); now: \(plan.shardCount) shards of \(plan.shardSize), "
                    + "fingerprint \(hex(plan.fingerprint))")
            }
            replay.hasHeader = true
        case .committed:
            guard payload.count == 9 else { throw corrupt("commit record of \(payload.count) bytes") }
            let shardID = payload.readLE(UInt32.self, at: 1)
            let attempt = payload.readLE(UInt32.self, at: 5)
            guard Int(shardID) < (plan.growing ? replay.shardBound : plan.shardCount) else {
                throw corrupt("commit of shard \(shardID) outside the plan")
            }
            if replay.committed[shardID] == nil { replay.committed[shardID] = attempt }
            // Attempts seen in commits were issued, so they count as reserved even if a reservation was lost.
            replay.reservedThrough = max(replay.reservedThrough, attempt)
        case .attemptsReserved:
            guard payload.count == 5 else { throw corrupt("reservation record of \(payload.count) bytes") }
            replay.reservedThrough = max(replay.reservedThrough, payload.readLE(UInt32.self, at: 1))
        case .poisoned:
            guard (replay.version ?? 0) >= 3 else { throw corrupt("poison verdict in a version-\(replay.version ?? 0) journal") }
            guard payload.count == 13 else { throw corrupt("poison verdict record of \(payload.count) bytes") }
            let verdict = PoisonVerdict(shardID: payload.readLE(UInt32.self, at: 1), offset: payload.readLE(UInt32.self, at: 5),
                                        losses: payload.readLE(UInt32.self, at: 9))
            guard Int(verdict.shardID) < (plan.growing ? replay.shardBound : plan.shardCount) else {
                throw corrupt("poison verdict for shard \(verdict.shardID) outside the plan")
            }
            if !replay.poisoned.contains(where: { $0.shardID == verdict.shardID && $0.offset == verdict.offset }) {
                replay.poisoned.append(verdict)
            }
        case .checkpoint:
            guard plan.growing, replay.seal == nil else { throw corrupt("scan checkpoint in a journal of a plan fixed at start or sealed") }
            guard payload.count == 29 else { throw corrupt("scan checkpoint record of \(payload.count) bytes") }
            let checkpoint = ScanCheckpoint(items: payload.readLE(UInt64.self, at: 1), deadLetters: payload.readLE(UInt64.self, at: 9),
                                            recordsCRC: payload.readLE(UInt32.self, at: 17), keysCRC: payload.readLE(UInt32.self, at: 21),
                                            deadLettersCRC: payload.readLE(UInt32.self, at: 25))
            guard checkpoint.entries > (replay.checkpoints.last?.entries ?? 0) else { throw corrupt("scan checkpoint does not grow the plan") }
            replay.checkpoints.append(checkpoint)
            replay.shardBound = max(replay.shardBound, shards(checkpoint.entries, plan.shardSize))
        case .sealed:
            guard plan.growing, replay.seal == nil else { throw corrupt("seal in a journal of a plan fixed at start, or a second seal") }
            guard payload.count == 17 else { throw corrupt("seal record of \(payload.count) bytes") }
            let seal = Seal(contentID: payload.readLE(UInt64.self, at: 1), entries: payload.readLE(UInt64.self, at: 9))
            guard seal.entries >= (replay.checkpoints.last?.entries ?? 0) else { throw corrupt("seal of fewer entries than a checkpoint") }
            replay.seal = seal
            replay.shardBound = shards(seal.entries, plan.shardSize)
        }
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
    }
}

extension JournalError {
    /// The journal's own error for a failed file operation on it.
    init(_ error: DurableFileError, journal path: String) {
        switch error {
        case let .io(file, operation, code):
            self = .io(path: path, operation: file == path ? operation : "\(operation) \(file)", errno: code)
        case let .endOfFile(_, offset, _, _):
            self = .corrupt(path: path, offset: offset, detail: "the file ends inside a record")
        case let .locked(_, pid):
            self = .inUse(path: path, holderPID: pid)
        }
    }
}

extension Array where Element == UInt8 {
    fileprivate mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        var value = value.littleEndian
        Swift.withUnsafeBytes(of: &value) { append(contentsOf: $0) }
    }

    fileprivate func readLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in (0..<MemoryLayout<T>.size).reversed() {
            value = value << 8 | T(self[offset + index])
        }
        return value
    }
}
