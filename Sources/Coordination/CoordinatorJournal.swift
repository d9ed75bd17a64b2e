import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
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
    /// Another process holds the journal open.
    case inUse(path: String)
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
            return "coordinator journal \(path) has format version \(version); this build reads version "
                + "\(CoordinatorJournal.formatVersion)"
        case let .inUse(path):
            return "coordinator journal \(path) is locked by another process (is another coordinator running?)"
        case let .unusable(path):
            return "coordinator journal \(path) is closed or had a failed write; restart the coordinator to replay it"
        }
    }
}

/// The coordinator's durable memory: an append-only file recording which plan it serves, which shards the
/// head committed, and how far attempt numbers have been reserved. Every append is on disk (fsync'd) before
/// it returns, so a restarted coordinator replays exactly what it acknowledged.
///
/// Layout: records of `[UInt32 LE payload length][UInt32 LE CRC-32 of length and payload][payload]`;
/// the first payload is the header (format version, plan fingerprint, shard count, shard size), the rest
/// are commits (shard id, attempt) and attempt reservations. Only a torn final record (an interrupted
/// append) is tolerated: it is truncated away on open. The file is locked while open.
public final class CoordinatorJournal {
    /// The on-disk format this build writes and reads.
    public static let formatVersion: UInt32 = 1

    private enum Kind: UInt8 {
        case header = 1
        case committed = 2
        case attemptsReserved = 3
    }

    private struct PlanIdentity {
        var fingerprint: UInt64
        var shardCount: Int
        var shardSize: Int
    }

    private static let magic: [UInt8] = Array("FSCJ".utf8)
    /// Far above any real payload, so a damaged length field is recognized instead of read as a torn tail.
    private static let maxPayload = 64
    private static let recordOverhead = 8

    /// The journal file.
    public let path: String
    /// Committed shards with the attempt the head committed, as replayed plus appended since.
    public private(set) var committedAttempts: [UInt32: UInt32]
    /// Highest attempt number reserved so far; a restarted coordinator starts above it
    /// (`LeaseTable(firstAttempt: attemptsReservedThrough + 1)`).
    public private(set) var attemptsReservedThrough: UInt32
    /// Bytes of a torn final record that `open` truncated away (0 when the file ended cleanly).
    public let discardedTailBytes: Int

    private var fd: Int32
    private var endOffset: Int
    private var isUnusable = false
    private let shardCount: Int

    /// Committed shard ids (the keys of `committedAttempts`), for `LeaseTable(committed:)`; kept as a set
    /// because the coordinator consults it on every commit.
    public private(set) var committed: Set<UInt32>

    private init(path: String, fd: Int32, endOffset: Int, committedAttempts: [UInt32: UInt32],
                 attemptsReservedThrough: UInt32, discardedTailBytes: Int, shardCount: Int) {
        self.path = path
        self.fd = fd
        self.endOffset = endOffset
        self.committedAttempts = committedAttempts
        self.committed = Set(committedAttempts.keys)
        self.attemptsReservedThrough = attemptsReservedThrough
        self.discardedTailBytes = discardedTailBytes
        self.shardCount = shardCount
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
        let plan = PlanIdentity(fingerprint: fingerprint, shardCount: shardCount, shardSize: shardSize)
        var created = true
        var fd = posixOpen(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 && errno == EEXIST {
            created = false
            fd = posixOpen(path, O_RDWR | O_CLOEXEC, 0)
        }
        guard fd >= 0 else { throw JournalError.io(path: path, operation: "open", errno: errno) }
        var success = false
        defer { if !success { _ = posixClose(fd) } }

        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EWOULDBLOCK { throw JournalError.inUse(path: path) }
            throw JournalError.io(path: path, operation: "flock", errno: errno)
        }
        if created {
            // The header's fsync makes the contents durable, not the name; without this a crash could
            // lose the whole file after commits were acknowledged.
            try syncDirectory(of: path)
        }

        let bytes = try readAll(fd: fd, path: path)
        let replay = try parse(bytes, path: path, plan: plan)
        var endOffset = replay.validLength
        if replay.validLength < bytes.count {
            guard ftruncate(fd, off_t(replay.validLength)) == 0 else {
                throw JournalError.io(path: path, operation: "ftruncate torn tail", errno: errno)
            }
            guard fsync(fd) == 0 else { throw JournalError.io(path: path, operation: "fsync", errno: errno) }
        }
        if !replay.hasHeader {
            let header = encodeHeader(plan: plan)
            try writeFully(fd: fd, bytes: header, at: 0, path: path)
            guard fsync(fd) == 0 else { throw JournalError.io(path: path, operation: "fsync", errno: errno) }
            endOffset = header.count
        }
        success = true
        return CoordinatorJournal(path: path, fd: fd, endOffset: endOffset, committedAttempts: replay.committed,
                                  attemptsReservedThrough: replay.reservedThrough,
                                  discardedTailBytes: bytes.count - replay.validLength,
                                  shardCount: plan.shardCount)
    }

    /// Durably records that the head committed `shardID` with `attempt`; returns only once it is on disk.
    public func append(shardID: UInt32, attempt: UInt32) throws {
        precondition(Int(shardID) < shardCount, "shard \(shardID) is outside the plan")
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

    /// Releases the file and its lock; later appends throw. Safe to call more than once.
    public func close() {
        if fd >= 0 {
            _ = posixClose(fd)
            fd = -1
            isUnusable = true
        }
    }

    // MARK: - Writing

    private func appendRecord(_ payload: [UInt8]) throws {
        guard !isUnusable, fd >= 0 else { throw JournalError.unusable(path: path) }
        let record = Self.frame(payload)
        do {
            try Self.writeFully(fd: fd, bytes: record, at: endOffset, path: path)
        } catch {
            // A partial record followed by later appends would read back as mid-file corruption.
            if ftruncate(fd, off_t(endOffset)) != 0 { isUnusable = true }
            throw error
        }
        guard fsync(fd) == 0 else {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing on disk can be trusted.
            let code = errno
            isUnusable = true
            throw JournalError.io(path: path, operation: "fsync", errno: code)
        }
        endOffset += record.count
    }

    private static func frame(_ payload: [UInt8]) -> [UInt8] {
        var lengthBytes: [UInt8] = []
        lengthBytes.appendLE(UInt32(payload.count))
        var crc = CRC32()
        crc.update(lengthBytes)
        crc.update(payload)
        var record = lengthBytes
        record.appendLE(crc.value)
        record += payload
        return record
    }

    private static func encodeHeader(plan: PlanIdentity) -> [UInt8] {
        var payload: [UInt8] = [Kind.header.rawValue]
        payload += magic
        payload.appendLE(formatVersion)
        payload.appendLE(plan.fingerprint)
        payload.appendLE(UInt32(plan.shardCount))
        payload.appendLE(UInt32(plan.shardSize))
        return frame(payload)
    }

    private static func writeFully(fd: Int32, bytes: [UInt8], at offset: Int, path: String) throws {
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                pwrite(fd, buffer.baseAddress! + written, bytes.count - written, off_t(offset + written))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw JournalError.io(path: path, operation: "write", errno: errno)
            }
            written += result
        }
    }

    private static func syncDirectory(of path: String) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let dirFD = posixOpen(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard dirFD >= 0 else { throw JournalError.io(path: path, operation: "open directory \(directory)", errno: errno) }
        defer { _ = posixClose(dirFD) }
        guard fsync(dirFD) == 0 else {
            throw JournalError.io(path: path, operation: "fsync directory \(directory)", errno: errno)
        }
    }

    // MARK: - Replay

    private struct Replay {
        var hasHeader = false
        var committed: [UInt32: UInt32] = [:]
        var reservedThrough: UInt32 = 0
        /// Bytes up to the end of the last intact record.
        var validLength = 0
    }

    private static func readAll(fd: Int32, path: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, off_t(bytes.count)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw JournalError.io(path: path, operation: "read", errno: errno)
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
        }
    }

    private static func parse(_ bytes: [UInt8], path: String, plan: PlanIdentity) throws -> Replay {
        var replay = Replay()
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
            var crc = CRC32()
            crc.update(bytes[offset..<offset + 4])
            crc.update(bytes[offset + recordOverhead..<end])
            if crc.value != storedCRC {
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
            guard version == formatVersion else { throw JournalError.unsupportedVersion(path: path, version: version) }
            let fingerprint = payload.readLE(UInt64.self, at: 9)
            let shardCount = payload.readLE(UInt32.self, at: 17)
            let shardSize = payload.readLE(UInt32.self, at: 21)
            if shardCount != plan.shardCount || shardSize != plan.shardSize || fingerprint != plan.fingerprint {
                throw JournalError.planMismatch(path: path, detail: "journal: \(shardCount) shards of \(shardSize), "
                    + "fingerprint \(hex(fingerprint)); now: \(plan.shardCount) shards of \(plan.shardSize), "
                    + "fingerprint \(hex(plan.fingerprint))")
            }
            replay.hasHeader = true
        case .committed:
            guard payload.count == 9 else { throw corrupt("commit record of \(payload.count) bytes") }
            let shardID = payload.readLE(UInt32.self, at: 1)
            let attempt = payload.readLE(UInt32.self, at: 5)
            guard Int(shardID) < plan.shardCount else { throw corrupt("commit of shard \(shardID) outside the plan") }
            if replay.committed[shardID] == nil { replay.committed[shardID] = attempt }
            // Attempts seen in commits were issued, so they count as reserved even if a reservation was lost.
            replay.reservedThrough = max(replay.reservedThrough, attempt)
        case .attemptsReserved:
            guard payload.count == 5 else { throw corrupt("reservation record of \(payload.count) bytes") }
            replay.reservedThrough = max(replay.reservedThrough, payload.readLE(UInt32.self, at: 1))
        }
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// The class's `open` and `close` shadow the POSIX calls inside it.
private func posixOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
    #if canImport(Glibc)
    return Glibc.open(path, flags, mode)
    #else
    return Darwin.open(path, flags, mode)
    #endif
}

private func posixClose(_ fd: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.close(fd)
    #else
    return Darwin.close(fd)
    #endif
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), so records can be checked without a dependency.
struct CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        return crc
    }

    private var state: UInt32 = 0xFFFF_FFFF

    var value: UInt32 { state ^ 0xFFFF_FFFF }

    mutating func update<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        for byte in bytes {
            state = Self.table[Int((state ^ UInt32(byte)) & 0xff)] ^ (state >> 8)
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
