import WireProtocol

/// One committed shard as it sits in a segment file: a fixed header, the feature rows as received,
/// the row columns, and a CRC-32C over all of it. Performs no I/O. `Protocols/STORE.md` gives the
/// layout byte by byte.
///
/// The features sit right after the header, 16-byte aligned in the file, so a mapped segment hands
/// them to readers as they are; everything else a reader needs (indexes, labels, keys, dead letters)
/// is in the columns block after them.
struct CommitRecord: Equatable {
    static let magic: [UInt8] = Array("FSR1".utf8)
    static let headerSize = 48
    static let trailerSize = 4
    /// Records start on this boundary, so that every feature block is aligned for its element type.
    static let alignment = 16

    /// What the header says.
    struct Header: Equatable {
        var dtype: FeatureDType
        var shardID: UInt32
        var attempt: UInt32
        var shardItemCount: UInt32
        var rows: Int
        var deadLetters: Int
        var dimension: Int
        var columnsLength: Int

        var featuresLength: Int { rows * dimension * dtype.width }
        /// Header, features, columns and trailer, padded to `alignment`.
        var recordLength: Int {
            let unpadded = CommitRecord.headerSize + featuresLength + columnsLength + CommitRecord.trailerSize
            return (unpadded + CommitRecord.alignment - 1) / CommitRecord.alignment * CommitRecord.alignment
        }
    }

    /// The row columns: everything of a shard except its features.
    struct Columns: Equatable {
        var indexes: [UInt64]
        var labels: [Int32]
        var keys: [String]
        var deadLetters: [DeadLetterEntry]
    }

    /// Why bytes are not a record.
    enum DecodeError: Error, Equatable, CustomStringConvertible {
        case short(needed: Int, have: Int)
        case badMagic
        case headerChecksum
        case unknownDType(UInt8)
        case impossibleCounts(String)
        case recordChecksum
        case columns(String)

        var description: String {
            switch self {
            case let .short(needed, have): "record needs \(needed) bytes, \(have) remain"
            case .badMagic: "no record magic"
            case .headerChecksum: "record header CRC-32C mismatch"
            case .unknownDType(let code): "unknown dtype code \(code)"
            case .impossibleCounts(let detail): "impossible record header: \(detail)"
            case .recordChecksum: "record CRC-32C mismatch"
            case .columns(let detail): "bad columns block: \(detail)"
            }
        }
    }

    // MARK: encoding

    /// The header bytes for `header` (its CRC included).
    static func encodeHeader(_ header: Header) -> [UInt8] {
        var bytes = magic
        bytes.reserveCapacity(headerSize)
        bytes += [header.dtype.rawValue, 0, 0, 0]
        for value in [header.shardID, header.attempt, header.shardItemCount, UInt32(header.rows), UInt32(header.deadLetters),
                      UInt32(header.dimension)] {
            append(value, to: &bytes)
        }
        append(UInt64(header.columnsLength), to: &bytes)
        append(UInt32(0), to: &bytes)
        append(CRC32C.checksum(bytes), to: &bytes)
        return bytes
    }

    /// The columns block: indexes, labels, then length-prefixed keys and dead letters.
    static func encodeColumns(_ columns: Columns) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(columns.indexes.count * 12 + columns.keys.reduce(0) { $0 + 4 + $1.utf8.count })
        columns.indexes.withUnsafeBytes { bytes += $0 }
        columns.labels.withUnsafeBytes { bytes += $0 }
        func string(_ text: String) {
            append(UInt32(text.utf8.count), to: &bytes)
            bytes += text.utf8
        }
        columns.keys.forEach(string)
        for letter in columns.deadLetters {
            append(letter.offset, to: &bytes)
            string(letter.key)
            string(letter.reason)
        }
        return bytes
    }

    /// The trailer (record CRC, then zero padding) that completes a record whose header, features and
    /// columns have CRC `crcSoFar` and `unpaddedLength` bytes.
    static func trailer(crcSoFar: UInt32, recordLength: Int, unpaddedLength: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        append(crcSoFar, to: &bytes)
        bytes += [UInt8](repeating: 0, count: recordLength - unpaddedLength - trailerSize)
        return bytes
    }

    // MARK: decoding

    /// Reads and checks a header, including that its counts are possible, so that a damaged header
    /// cannot make a reader allocate or seek absurdly.
    static func decodeHeader(_ bytes: UnsafeRawBufferPointer) throws -> Header {
        guard bytes.count >= headerSize else { throw DecodeError.short(needed: headerSize, have: bytes.count) }
        guard bytes.prefix(4).elementsEqual(magic) else { throw DecodeError.badMagic }
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<44])) == u32(bytes, 44) else {
            throw DecodeError.headerChecksum
        }
        guard let dtype = FeatureDType(rawValue: bytes[4]) else { throw DecodeError.unknownDType(bytes[4]) }
        let header = Header(dtype: dtype, shardID: u32(bytes, 8), attempt: u32(bytes, 12), shardItemCount: u32(bytes, 16),
                            rows: Int(u32(bytes, 20)), deadLetters: Int(u32(bytes, 24)), dimension: Int(u32(bytes, 28)),
                            columnsLength: Int(truncatingIfNeeded: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 32, as: UInt64.self))))
        guard header.rows + header.deadLetters == Int(header.shardItemCount) else {
            throw DecodeError.impossibleCounts("\(header.rows) rows + \(header.deadLetters) dead letters ≠ \(header.shardItemCount) items")
        }
        guard header.dimension > 0 || header.rows == 0 else { throw DecodeError.impossibleCounts("dimension 0") }
        // Each row needs at least 16 bytes of columns, each dead letter 12: a bound on what a header may claim.
        guard header.columnsLength >= header.rows * 16 + header.deadLetters * 12, header.columnsLength < 1 << 40 else {
            throw DecodeError.impossibleCounts("columns block of \(header.columnsLength) bytes for \(header.rows) rows")
        }
        return header
    }

    /// Checks the record CRC of a whole record (`bytes` starts at its header and holds `recordLength` bytes).
    static func verify(_ bytes: UnsafeRawBufferPointer, header: Header) throws {
        let unpadded = headerSize + header.featuresLength + header.columnsLength
        guard bytes.count >= unpadded + trailerSize else { throw DecodeError.short(needed: unpadded + trailerSize, have: bytes.count) }
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<unpadded])) == u32(bytes, unpadded) else {
            throw DecodeError.recordChecksum
        }
    }

    /// Parses a columns block of `header`'s record; `keys: false` skips the strings (for index-only scans).
    static func decodeColumns(_ bytes: UnsafeRawBufferPointer, header: Header, keys readKeys: Bool = true) throws -> Columns {
        let rows = header.rows
        guard bytes.count == header.columnsLength, bytes.count >= rows * 12 else {
            throw DecodeError.columns("\(bytes.count) bytes for \(rows) rows")
        }
        let indexes = (0..<rows).map { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        guard readKeys else { return Columns(indexes: indexes, labels: [], keys: [], deadLetters: []) }
        let labels = (0..<rows).map { Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: rows * 8 + $0 * 4, as: Int32.self)) }
        var position = rows * 12
        func string() throws -> String {
            guard position + 4 <= bytes.count else { throw DecodeError.columns("truncated string length at \(position)") }
            let length = Int(u32(bytes, position))
            position += 4
            guard length <= bytes.count - position else { throw DecodeError.columns("string of \(length) bytes overruns the block") }
            defer { position += length }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[position..<(position + length)]), as: UTF8.self)
        }
        let keys = try (0..<rows).map { _ in try string() }
        var deadLetters: [DeadLetterEntry] = []
        deadLetters.reserveCapacity(header.deadLetters)
        for _ in 0..<header.deadLetters {
            guard position + 4 <= bytes.count else { throw DecodeError.columns("truncated dead letter at \(position)") }
            let offset = u32(bytes, position)
            position += 4
            deadLetters.append(DeadLetterEntry(offset: offset, key: try string(), reason: try string()))
        }
        guard position == bytes.count else { throw DecodeError.columns("\(bytes.count - position) bytes left over") }
        return Columns(indexes: indexes, labels: labels, keys: keys, deadLetters: deadLetters)
    }

    private static func u32(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }
}
