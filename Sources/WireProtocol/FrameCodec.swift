#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bounds a decoder enforces before it allocates anything a frame asks for.
///
/// Every length and count on the wire is attacker- or bug-controlled; these keep one bad frame
/// from costing more than `maxFrameBytes` of memory or from wedging a receiver. Both ends should
/// use the same limits: `FrameCodec.validate(_:limits:)` lets a sender check before it sends.
public struct FrameLimits: Sendable, Equatable {
    /// Largest whole frame (header + body + trailer) accepted, and largest `rawLength` a batch may declare.
    public var maxFrameBytes: Int
    /// Largest UTF-8 byte length of any string field (never more than 65 535, the u16 prefix).
    public var maxString: Int
    /// Most items an `assignment` may carry; also bounds `shardItemCount` and a batch's dead letters.
    public var maxItemsPerShard: Int
    /// Most feature rows one `FeatureBatch` may carry.
    public var maxRows: Int
    /// Largest feature `dimension` a `FeatureBatch` may declare.
    public var maxDimension: Int
    /// Most entries a string map (hello capabilities) may carry.
    public var maxMapEntries: Int

    /// Limits as given; no field is clamped, so a receiver can be stricter or looser than the default.
    public init(maxFrameBytes: Int = 64 << 20, maxString: Int = 4096, maxItemsPerShard: Int = 1 << 20,
                maxRows: Int = 65_536, maxDimension: Int = 1 << 16, maxMapEntries: Int = 256) {
        self.maxFrameBytes = maxFrameBytes
        self.maxString = maxString
        self.maxItemsPerShard = maxItemsPerShard
        self.maxRows = maxRows
        self.maxDimension = maxDimension
        self.maxMapEntries = maxMapEntries
    }

    /// The limits of PROTOCOL.md §6: 64 MiB frames, 4 KiB strings, 2^20 items per shard,
    /// 65 536 rows per batch, dimension ≤ 65 536, 256 map entries.
    public static let `default` = FrameLimits()
}

/// Why a byte string is not a frame this implementation accepts.
///
/// Each case maps to one rule of PROTOCOL.md; receivers count rejections by case (`counterName`).
public enum FrameError: Error, Equatable, CustomStringConvertible, Sendable {
    /// Fewer bytes than header + trailer; carries the byte count seen.
    case tooShort(Int)
    /// The first two bytes are not "FS".
    case badMagic
    /// The major version differs from `FrameCodec.majorVersion`.
    case unsupportedVersion(major: UInt8, minor: UInt8)
    /// A message type this version does not define (checked after the checksum).
    case unknownType(UInt8)
    /// The header's body length disagrees with the bytes received; both are whole-frame byte counts.
    case lengthMismatch(declared: Int, actual: Int)
    /// The CRC-32C trailer does not match header + body.
    case checksumMismatch
    /// A length or count exceeds `FrameLimits`; the string says which.
    case exceedsLimit(String)
    /// The body breaks a structural rule (truncated field, bad UTF-8, counts that disagree, …).
    case malformed(String)

    /// Human-readable reason, for logs.
    public var description: String {
        switch self {
        case .tooShort(let n): return "frame too short (\(n) bytes, need at least \(FrameCodec.overhead))"
        case .badMagic: return "bad magic (expected \"FS\")"
        case .unsupportedVersion(let major, let minor):
            return "unsupported protocol version \(major).\(minor) (this is \(FrameCodec.majorVersion).\(FrameCodec.minorVersion))"
        case .unknownType(let t): return "unknown message type 0x\(String(t, radix: 16))"
        case .lengthMismatch(let declared, let actual): return "length mismatch: header says \(declared) bytes, got \(actual)"
        case .checksumMismatch: return "CRC-32C mismatch"
        case .exceedsLimit(let what): return "exceeds limit: \(what)"
        case .malformed(let what): return "malformed: \(what)"
        }
    }

    /// A stable, low-cardinality label for a rejection counter (e.g. `frames_rejected_total{reason=...}`).
    public var counterName: String {
        switch self {
        case .tooShort: return "too_short"
        case .badMagic: return "bad_magic"
        case .unsupportedVersion: return "unsupported_version"
        case .unknownType: return "unknown_type"
        case .lengthMismatch: return "length_mismatch"
        case .checksumMismatch: return "checksum_mismatch"
        case .exceedsLimit: return "exceeds_limit"
        case .malformed: return "malformed"
        }
    }
}

/// The message type byte of a frame header (PROTOCOL.md §4).
///
/// The high nibble groups by plane so a capture is readable at a glance.
public enum MessageType: UInt8, Sendable, CaseIterable {
    /// `Message.hello`, worker → coordinator.
    case hello = 0x01
    /// `Message.shardRequest`, worker → coordinator.
    case shardRequest = 0x02
    /// `Message.shardDone`, worker → coordinator.
    case shardDone = 0x03
    /// `Message.shardFailed`, worker → coordinator.
    case shardFailed = 0x04
    /// `Message.welcome`, coordinator → worker or head.
    case welcome = 0x10
    /// `Message.assignment`, coordinator → worker.
    case assignment = 0x11
    /// `Message.noWork`, coordinator → worker.
    case noWork = 0x12
    /// `Message.shutdown`, coordinator → worker or head.
    case shutdown = 0x13
    /// `Message.probe`, coordinator → worker (3.1).
    case probe = 0x14
    /// `Message.heartbeat`, any direction, both planes.
    case heartbeat = 0x20
    /// `Message.headHello`, head → coordinator.
    case headHello = 0x30
    /// `Message.shardCommitted`, head → coordinator.
    case shardCommitted = 0x31
    /// `Message.featureBatch`, worker → head (data plane).
    case featureBatch = 0x40
    /// `Message.credit`, head → worker (data plane).
    case credit = 0x41
}

extension Message {
    /// The type byte this message is framed with.
    public var type: MessageType {
        switch self {
        case .hello: return .hello
        case .shardRequest: return .shardRequest
        case .shardDone: return .shardDone
        case .shardFailed: return .shardFailed
        case .welcome: return .welcome
        case .assignment: return .assignment
        case .noWork: return .noWork
        case .shutdown: return .shutdown
        case .probe: return .probe
        case .heartbeat: return .heartbeat
        case .headHello: return .headHello
        case .shardCommitted: return .shardCommitted
        case .featureBatch: return .featureBatch
        case .credit: return .credit
        }
    }
}

/// Sans-I/O encoder and decoder of FeatureStream frames: bytes in, `Message` out, and back.
///
/// It owns no sockets, clocks or state, so every transport (ZeroMQ today) and every test drives
/// the same code. Layout (PROTOCOL.md §3):
///
///     offset 0  "F" "S"          magic
///            2  u8 major (3)     3  u8 minor (1)
///            4  u8 type          5  u8 flags (0)
///            6  u32 body length (LE)
///           10  body
///     10 + len  u32 CRC-32C (LE) over bytes [0, 10 + len)
public enum FrameCodec {
    /// Wire major version; frames with any other major are rejected.
    public static let majorVersion: UInt8 = 3
    /// Wire minor version this codec writes; frames with a higher minor are accepted and their
    /// unknown trailing body bytes ignored.
    public static let minorVersion: UInt8 = 1
    /// The `hello` capability that names the sender's protocol version, e.g. `"fswp": "3.1"` (§7): a
    /// message type newer than 3.0 is sent only to a peer that declared a minor that has it.
    public static let versionCapability = (key: "fswp", value: "\(majorVersion).\(minorVersion)")

    /// The minor version of our major that `capabilities` (a peer's `hello`) declare; 0 when they
    /// declare none, or another major.
    public static func peerMinor(_ capabilities: [String: String]) -> UInt8 {
        guard let text = capabilities[versionCapability.key] else { return 0 }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, UInt8(parts[0]) == majorVersion, let minor = UInt8(parts[1]) else { return 0 }
        return minor
    }
    /// Bytes before the body.
    public static let headerSize = 10
    /// Bytes after the body.
    public static let trailerSize = 4
    /// Bytes of every frame that are not body.
    public static let overhead = headerSize + trailerSize
    /// The magic "FS".
    public static let magic: (UInt8, UInt8) = (0x46, 0x53)

    // MARK: - Encoding

    /// The frame for `message`, checksum included.
    ///
    /// Deterministic: equal messages give identical bytes (maps are written in ascending UTF-8 key
    /// order). Never fails: a string longer than 65 535 UTF-8 bytes is cut at the last whole scalar
    /// that fits, and values outside `FrameLimits` are written as they are, for the peer to reject;
    /// call `validate(_:limits:)` first to catch those at the sender.
    public static func encode(_ message: Message) -> [UInt8] {
        var w = Writer(capacity: overhead + estimatedBodySize(message))
        w.u8(magic.0); w.u8(magic.1); w.u8(majorVersion); w.u8(minorVersion)
        w.u8(message.type.rawValue); w.u8(0); w.u32(0)
        switch message {
        case .hello(let workerID, let host, let pid, let capabilities):
            w.str(workerID); w.str(host); w.u32(pid)
            let sorted = capabilities.map { (Array($0.key.utf8), $0.value) }.sorted { $0.0.lexicographicallyPrecedes($1.0) }
            w.u16(UInt16(truncatingIfNeeded: sorted.count))
            for (k, v) in sorted.prefix(Int(UInt16.max)) { w.strBytes(k); w.str(v) }
        case .shardRequest(let workerID):
            w.str(workerID)
        case .shardDone(let shardID, let attempt, let items, let deadLetters),
             .shardCommitted(let shardID, let attempt, let items, let deadLetters):
            w.u32(shardID); w.u32(attempt); w.u32(items); w.u32(deadLetters)
        case .shardFailed(let shardID, let attempt, let reason):
            w.u32(shardID); w.u32(attempt); w.str(reason)
        case .welcome(let epoch, let headAddress, let heartbeatIntervalMs, let deadAfterBeats, let plan):
            w.u64(epoch); w.str(headAddress); w.u32(heartbeatIntervalMs); w.u32(deadAfterBeats); w.u64(plan)
        case .assignment(let shardID, let attempt, let leaseMs, let items),
             .probe(let shardID, let attempt, let leaseMs, let items):
            w.u32(shardID); w.u32(attempt); w.u32(leaseMs); w.u32(UInt32(truncatingIfNeeded: items.count))
            for item in items {
                w.u64(item.index); w.i32(item.label); w.str(item.key)
                switch item.locator {
                case .file(let path): w.u8(0); w.str(path)
                case let .tarMember(path, offset, size): w.u8(1); w.str(path); w.u64(offset); w.u32(size)
                case .rejected(let reason): w.u8(2); w.str(reason)
                }
            }
        case .noWork(let retryAfterMs):
            w.u32(retryAfterMs)
        case .shutdown(let reason):
            w.str(reason)
        case .heartbeat(let epoch, let sequence):
            w.u64(epoch); w.u64(sequence)
        case .headHello(let epoch, let committed, let plan):
            w.u64(epoch); w.u32(UInt32(truncatingIfNeeded: committed.count))
            for s in committed { w.u32(s) }
            w.u64(plan)
        case .featureBatch(let b):
            w.u32(b.shardID); w.u32(b.attempt); w.u32(b.shardItemCount)
            w.u8(b.dtype.rawValue); w.u8(b.codec.rawValue); w.u32(b.dimension); w.u32(b.rawLength)
            w.u32(UInt32(truncatingIfNeeded: b.offsets.count)); for v in b.offsets { w.u32(v) }
            w.u32(UInt32(truncatingIfNeeded: b.indexes.count)); for v in b.indexes { w.u64(v) }
            w.u32(UInt32(truncatingIfNeeded: b.labels.count)); for v in b.labels { w.i32(v) }
            w.u32(UInt32(truncatingIfNeeded: b.keys.count)); for v in b.keys { w.str(v) }
            w.u32(UInt32(truncatingIfNeeded: b.deadLetters.count))
            for d in b.deadLetters { w.u32(d.offset); w.str(d.key); w.str(d.reason) }
            w.u32(UInt32(truncatingIfNeeded: b.payload.count)); w.bytes.append(contentsOf: b.payload)
        case .credit(let epoch, let limit):
            w.u64(epoch); w.u32(limit)
        }
        let bodyLength = UInt32(truncatingIfNeeded: w.bytes.count - headerSize)
        w.bytes.withUnsafeMutableBytes { $0.storeBytes(of: bodyLength.littleEndian, toByteOffset: 6, as: UInt32.self) }
        let crc = CRC32C.checksum(w.bytes)
        w.u32(crc)
        return w.bytes
    }

    /// Body bytes `encode` will write, give or take string truncation; used to allocate once.
    private static func estimatedBodySize(_ message: Message) -> Int {
        switch message {
        case .featureBatch(let b):
            return 46 + b.offsets.count * 16 + b.keys.reduce(0) { $0 + 2 + $1.utf8.count }
                + b.deadLetters.reduce(0) { $0 + 8 + $1.key.utf8.count + $1.reason.utf8.count } + b.payload.count
        case .assignment(_, _, _, let items), .probe(_, _, _, let items):
            return 16 + items.reduce(0) { $0 + 29 + $1.key.utf8.count + $1.locatorText.utf8.count }
        case .headHello(_, let committed, _):
            return 20 + committed.count * 4
        default:
            return 64
        }
    }

    /// Checks `message` against the rules a receiver with `limits` enforces, without encoding it.
    ///
    /// Promises: if this does not throw, `decode(encode(message), limits: limits) == message`.
    public static func validate(_ message: Message, limits: FrameLimits = .default) throws(FrameError) {
        let bytes = encode(message)
        let back = try decode(bytes, limits: limits)
        if back != message { throw .malformed("\(message.type) does not survive encoding (string too long for u16?)") }
    }

    // MARK: - Decoding

    /// Decodes one frame from a byte array; see `decode(_:limits:)` on raw buffers for the rules.
    public static func decode(_ bytes: [UInt8], limits: FrameLimits = .default) throws(FrameError) -> Message {
        do {
            return try bytes.withUnsafeBytes { (buf) throws(FrameError) -> Message in try decode(buf, limits: limits) }
        } catch let e as FrameError {
            throw e
        } catch {
            throw .malformed("\(error)")  // unreachable: the closure only throws FrameError
        }
    }

    /// Decodes exactly one frame occupying all of `bytes` (one ZeroMQ message part).
    ///
    /// Checks, in order: size ≥ 14, magic, major version, declared length ≤ `maxFrameBytes` and
    /// equal to the bytes given, CRC-32C, message type, then the body field by field. Every count
    /// is checked against the bytes left and against `limits` before anything is allocated, so a
    /// hostile frame costs at most its own size. Never reads outside `bytes`; never traps.
    public static func decode(_ bytes: UnsafeRawBufferPointer, limits: FrameLimits = .default) throws(FrameError) -> Message {
        let n = bytes.count
        guard n >= overhead, let base = bytes.baseAddress else { throw .tooShort(n) }
        guard base.load(as: UInt8.self) == magic.0, base.load(fromByteOffset: 1, as: UInt8.self) == magic.1 else { throw .badMagic }
        let major = base.load(fromByteOffset: 2, as: UInt8.self)
        let minor = base.load(fromByteOffset: 3, as: UInt8.self)
        guard major == majorVersion else { throw .unsupportedVersion(major: major, minor: minor) }
        let typeByte = base.load(fromByteOffset: 4, as: UInt8.self)
        let flags = base.load(fromByteOffset: 5, as: UInt8.self)
        let bodyLength = Int(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 6, as: UInt32.self)))
        let declared = bodyLength + overhead
        if declared > limits.maxFrameBytes { throw .exceedsLimit("frame of \(declared) bytes > maxFrameBytes \(limits.maxFrameBytes)") }
        guard declared == n else { throw .lengthMismatch(declared: declared, actual: n) }
        let stored = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: headerSize + bodyLength, as: UInt32.self))
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(start: base, count: headerSize + bodyLength))
        guard stored == computed else { throw .checksumMismatch }
        guard let type = MessageType(rawValue: typeByte) else { throw .unknownType(typeByte) }
        // Flags and trailing bytes are extension points of later minors; from a peer on our own
        // minor (or older) they can only mean a bug, so they are refused rather than ignored.
        let newerPeer = minor > minorVersion
        if flags != 0 && !newerPeer { throw .malformed("reserved flags 0x\(String(flags, radix: 16)) set") }
        var r = Reader(base: base + headerSize, count: bodyLength, limits: limits)
        let message = try decodeBody(type, &r, minor: minor)
        if r.remaining != 0 && !newerPeer { throw .malformed("\(r.remaining) trailing body bytes") }
        return message
    }

    /// `minor` is the sender's: a field appended in a later minor is absent from an older sender's body.
    private static func decodeBody(_ type: MessageType, _ r: inout Reader, minor: UInt8) throws(FrameError) -> Message {
        switch type {
        case .hello:
            let workerID = try r.str("workerID")
            let host = try r.str("host")
            let pid = try r.u32("pid")
            let count = Int(try r.u16("capabilities count"))
            if count > r.limits.maxMapEntries { throw .exceedsLimit("capabilities count \(count) > maxMapEntries \(r.limits.maxMapEntries)") }
            try r.needItems(count, minSize: 4, "capabilities")
            var caps: [String: String] = [:]
            caps.reserveCapacity(count)
            var previous: [UInt8]? = nil
            for _ in 0..<count {
                let keyBytes = try r.strBytes("capability key")
                if let p = previous, !p.lexicographicallyPrecedes(keyBytes) {
                    throw .malformed("capability keys not in strictly ascending UTF-8 order")
                }
                let key = try Reader.utf8(keyBytes, "capability key")
                // Swift compares strings by canonical equivalence, so distinct bytes can still collide.
                if caps[key] != nil { throw .malformed("capability keys \"\(key)\" are canonically equivalent") }
                caps[key] = try r.str("capability value")
                previous = keyBytes
            }
            return .hello(workerID: workerID, host: host, pid: pid, capabilities: caps)
        case .shardRequest:
            return .shardRequest(workerID: try r.str("workerID"))
        case .shardDone:
            return .shardDone(shardID: try r.u32("shardID"), attempt: try r.u32("attempt"),
                              items: try r.u32("items"), deadLetters: try r.u32("deadLetters"))
        case .shardFailed:
            return .shardFailed(shardID: try r.u32("shardID"), attempt: try r.u32("attempt"), reason: try r.str("reason"))
        case .welcome:
            return .welcome(epoch: try r.u64("epoch"), headAddress: try r.str("headAddress"),
                            heartbeatIntervalMs: try r.u32("heartbeatIntervalMs"), deadAfterBeats: try r.u32("deadAfterBeats"),
                            plan: try r.u64("plan"))
        case .assignment, .probe:
            let shardID = try r.u32("shardID")
            let attempt = try r.u32("attempt")
            let leaseMs = try r.u32("leaseMs")
            let count = Int(try r.u32("items count"))
            if count > r.limits.maxItemsPerShard { throw .exceedsLimit("items count \(count) > maxItemsPerShard \(r.limits.maxItemsPerShard)") }
            try r.needItems(count, minSize: 17, "items")
            var items: [ItemRef] = []
            items.reserveCapacity(count)
            for _ in 0..<count {
                let index = try r.u64("item index")
                let label = try r.i32("item label")
                let key = try r.str("item key")
                let locator: ItemLocator
                switch try r.u8("item locator kind") {
                case 0: locator = .file(path: try r.str("item path"))
                case 1: locator = .tarMember(path: try r.str("item tar path"), offset: try r.u64("item tar offset"), size: try r.u32("item tar size"))
                case 2: locator = .rejected(reason: try r.str("item rejection reason"))
                case let kind: throw .malformed("item locator kind \(kind) is not 0 (file), 1 (tar member) or 2 (rejected)")
                }
                items.append(ItemRef(index: index, key: key, label: label, locator: locator))
            }
            return type == .probe ? .probe(shardID: shardID, attempt: attempt, leaseMs: leaseMs, items: items)
                : .assignment(shardID: shardID, attempt: attempt, leaseMs: leaseMs, items: items)
        case .noWork:
            return .noWork(retryAfterMs: try r.u32("retryAfterMs"))
        case .shutdown:
            return .shutdown(reason: try r.str("reason"))
        case .heartbeat:
            return .heartbeat(epoch: try r.u64("epoch"), sequence: try r.u64("sequence"))
        case .headHello:
            let epoch = try r.u64("epoch")
            let count = Int(try r.u32("committed count"))
            try r.needItems(count, minSize: 4, "committed")
            let committed = try r.integers(count, "committed", as: UInt32.self)
            // 3.1 appended the store's plan; a 3.0 head's store counts as bound to no plan.
            return .headHello(epoch: epoch, committed: committed, plan: minor >= 1 ? try r.u64("plan") : 0)
        case .shardCommitted:
            return .shardCommitted(shardID: try r.u32("shardID"), attempt: try r.u32("attempt"),
                                   items: try r.u32("items"), deadLetters: try r.u32("deadLetters"))
        case .featureBatch:
            return .featureBatch(try decodeFeatureBatch(&r))
        case .credit:
            return .credit(epoch: try r.u64("epoch"), limit: try r.u32("limit"))
        }
    }

    private static func decodeFeatureBatch(_ r: inout Reader) throws(FrameError) -> FeatureBatch {
        let limits = r.limits
        let shardID = try r.u32("shardID")
        let attempt = try r.u32("attempt")
        let shardItemCount = try r.u32("shardItemCount")
        if Int(shardItemCount) > limits.maxItemsPerShard {
            throw .exceedsLimit("shardItemCount \(shardItemCount) > maxItemsPerShard \(limits.maxItemsPerShard)")
        }
        let dtypeByte = try r.u8("dtype")
        guard let dtype = FeatureDType(rawValue: dtypeByte) else { throw .malformed("unknown dtype \(dtypeByte)") }
        let codecByte = try r.u8("codec")
        guard let codec = CodecID(rawValue: codecByte) else { throw .malformed("unknown codec \(codecByte)") }
        let dimension = try r.u32("dimension")
        if Int(dimension) > limits.maxDimension { throw .exceedsLimit("dimension \(dimension) > maxDimension \(limits.maxDimension)") }
        if dimension == 0 { throw .malformed("dimension 0") }
        let rawLength = try r.u32("rawLength")

        let rows = Int(try r.u32("offsets count"))
        if rows > limits.maxRows { throw .exceedsLimit("rows \(rows) > maxRows \(limits.maxRows)") }
        if rows > Int(shardItemCount) { throw .malformed("rows \(rows) > shardItemCount \(shardItemCount)") }
        let expectedRaw = UInt64(rows) * UInt64(dimension) * UInt64(dtype.width)
        if expectedRaw != UInt64(rawLength) {
            throw .malformed("rawLength \(rawLength) != rows \(rows) × dimension \(dimension) × width \(dtype.width)")
        }
        if Int(rawLength) > limits.maxFrameBytes { throw .exceedsLimit("rawLength \(rawLength) > maxFrameBytes \(limits.maxFrameBytes)") }

        try r.needItems(rows, minSize: 4, "offsets")
        let offsets = try r.integers(rows, "offsets", as: UInt32.self)
        for o in offsets where o >= shardItemCount { throw .malformed("offset \(o) >= shardItemCount \(shardItemCount)") }
        try r.expectCount(rows, "indexes")
        try r.needItems(rows, minSize: 8, "indexes")
        let indexes = try r.integers(rows, "indexes", as: UInt64.self)
        try r.expectCount(rows, "labels")
        try r.needItems(rows, minSize: 4, "labels")
        let labels = try r.integers(rows, "labels", as: Int32.self)
        try r.expectCount(rows, "keys")
        try r.needItems(rows, minSize: 2, "keys")
        var keys: [String] = []
        keys.reserveCapacity(rows)
        for _ in 0..<rows { keys.append(try r.str("row key")) }

        let deadCount = Int(try r.u32("deadLetters count"))
        if deadCount > limits.maxItemsPerShard { throw .exceedsLimit("deadLetters \(deadCount) > maxItemsPerShard \(limits.maxItemsPerShard)") }
        if rows + deadCount > Int(shardItemCount) {
            throw .malformed("rows \(rows) + deadLetters \(deadCount) > shardItemCount \(shardItemCount)")
        }
        try r.needItems(deadCount, minSize: 8, "deadLetters")
        var dead: [DeadLetterEntry] = []
        dead.reserveCapacity(deadCount)
        for _ in 0..<deadCount {
            let offset = try r.u32("deadLetter offset")
            if offset >= shardItemCount { throw .malformed("deadLetter offset \(offset) >= shardItemCount \(shardItemCount)") }
            dead.append(DeadLetterEntry(offset: offset, key: try r.str("deadLetter key"), reason: try r.str("deadLetter reason")))
        }

        let payloadLength = Int(try r.u32("payload length"))
        switch codec {
        case .raw:
            if payloadLength != Int(rawLength) { throw .malformed("raw payload \(payloadLength) bytes != rawLength \(rawLength)") }
        case .lz4, .shuffleLZ4:
            // LZ4_compressBound: incompressible input never grows past this, so anything larger is garbage.
            let bound = Int(rawLength) + Int(rawLength) / 255 + 16
            if payloadLength > bound { throw .malformed("lz4 payload \(payloadLength) bytes > bound \(bound) for rawLength \(rawLength)") }
            if rawLength == 0 && payloadLength != 0 { throw .malformed("payload of \(payloadLength) bytes for an empty batch") }
            if rawLength > 0 && payloadLength == 0 { throw .malformed("empty lz4 payload for rawLength \(rawLength)") }
        }
        let payload = try r.bytes(payloadLength, "payload")
        return FeatureBatch(shardID: shardID, attempt: attempt, shardItemCount: shardItemCount, offsets: offsets,
                            indexes: indexes, labels: labels, keys: keys, deadLetters: dead, dtype: dtype,
                            dimension: dimension, codec: codec, rawLength: rawLength, payload: payload)
    }
}

// MARK: - Byte plumbing

/// Appends little-endian fields to a growing frame.
private struct Writer {
    var bytes: [UInt8]

    init(capacity: Int) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(truncatingIfNeeded: v)); bytes.append(UInt8(truncatingIfNeeded: v >> 8)) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }

    mutating func str(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            var n = min(utf8.count, Int(UInt16.max))
            // Cut only before a lead byte, so a truncated string is still valid UTF-8.
            if n < utf8.count { while n > 0 && (utf8[n] & 0xC0) == 0x80 { n -= 1 } }
            u16(UInt16(n))
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[0..<n]))
        }
    }

    mutating func strBytes(_ b: [UInt8]) {
        var n = min(b.count, Int(UInt16.max))
        if n < b.count { while n > 0 && (b[n] & 0xC0) == 0x80 { n -= 1 } }
        u16(UInt16(n))
        bytes.append(contentsOf: b[0..<n])
    }
}

/// Reads little-endian fields from a frame body, bounds-checking every read.
private struct Reader {
    let base: UnsafeRawPointer
    let count: Int
    var position = 0
    let limits: FrameLimits

    init(base: UnsafeRawPointer, count: Int, limits: FrameLimits) {
        self.base = base
        self.count = count
        self.limits = limits
    }

    var remaining: Int { count - position }

    @inline(__always)
    mutating func take(_ n: Int, _ what: StaticString) throws(FrameError) -> UnsafeRawPointer {
        guard n <= remaining else { throw .malformed("body truncated in \(what)") }
        let p = base + position
        position += n
        return p
    }

    mutating func u8(_ what: StaticString) throws(FrameError) -> UInt8 { try take(1, what).load(as: UInt8.self) }
    mutating func u16(_ what: StaticString) throws(FrameError) -> UInt16 { UInt16(littleEndian: try take(2, what).loadUnaligned(as: UInt16.self)) }
    mutating func u32(_ what: StaticString) throws(FrameError) -> UInt32 { UInt32(littleEndian: try take(4, what).loadUnaligned(as: UInt32.self)) }
    mutating func i32(_ what: StaticString) throws(FrameError) -> Int32 { Int32(bitPattern: try u32(what)) }
    mutating func u64(_ what: StaticString) throws(FrameError) -> UInt64 { UInt64(littleEndian: try take(8, what).loadUnaligned(as: UInt64.self)) }

    /// Refuses a count whose smallest possible encoding would not fit in the rest of the body.
    func needItems(_ count: Int, minSize: Int, _ what: StaticString) throws(FrameError) {
        if count > remaining / minSize { throw .malformed("\(what) count \(count) does not fit in \(remaining) remaining body bytes") }
    }

    /// Reads a u32 count that must equal `rows` (a FeatureBatch's parallel columns).
    mutating func expectCount(_ rows: Int, _ what: StaticString) throws(FrameError) {
        let c = try u32(what)
        if Int(c) != rows { throw .malformed("\(what) count \(c) != offsets count \(rows)") }
    }

    /// `count` little-endian integers copied with one memcpy (offsets, indexes, labels, shard ids).
    mutating func integers<T: FixedWidthInteger>(_ count: Int, _ what: StaticString, as: T.Type = T.self) throws(FrameError) -> [T] {
        let width = MemoryLayout<T>.size
        let p = try take(count * width, what)
        return [T](unsafeUninitializedCapacity: count) { buf, initialized in
            if count > 0 { memcpy(buf.baseAddress!, p, count * width) }
            #if _endian(big)
            for i in 0..<count { buf[i] = T(littleEndian: buf[i]) }
            #endif
            initialized = count
        }
    }

    /// Copies `n` bytes with one memcpy (the feature payload path).
    mutating func bytes(_ n: Int, _ what: StaticString) throws(FrameError) -> [UInt8] {
        let p = try take(n, what)
        return [UInt8](unsafeUninitializedCapacity: n) { buf, initialized in
            if n > 0 { memcpy(buf.baseAddress!, p, n) }
            initialized = n
        }
    }

    mutating func strBytes(_ what: StaticString) throws(FrameError) -> [UInt8] {
        let n = Int(try u16(what))
        if n > limits.maxString { throw .exceedsLimit("\(what) of \(n) bytes > maxString \(limits.maxString)") }
        return try bytes(n, what)
    }

    mutating func str(_ what: StaticString) throws(FrameError) -> String {
        let n = Int(try u16(what))
        if n > limits.maxString { throw .exceedsLimit("\(what) of \(n) bytes > maxString \(limits.maxString)") }
        let p = try take(n, what)
        guard let s = String(validating: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self) else {
            throw .malformed("\(what) is not valid UTF-8")
        }
        return s
    }

    static func utf8(_ b: [UInt8], _ what: StaticString) throws(FrameError) -> String {
        guard let s = String(validating: b, as: UTF8.self) else { throw .malformed("\(what) is not valid UTF-8") }
        return s
    }
}

extension ItemRef {
    /// The locator's one string (path or reason), for sizing an encoding.
    fileprivate var locatorText: String {
        switch locator {
        case .file(let path), .tarMember(let path, _, _): return path
        case .rejected(let reason): return reason
        }
    }
}
