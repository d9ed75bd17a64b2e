import Foundation
import WireProtocol

/// What `FeatureStore.open` recovers from `segments/`: every whole record of every segment, and, for a
/// writer, the last segment with any interrupted append cut off.
///
/// Only the last segment can hold a torn record (a new segment is started only after the previous one
/// is synced), so damage anywhere else, or a shard stored twice, is refused naming the file.
struct RecoveryScan {
    /// Every whole record, by shard.
    var shards: [UInt32: ShardLocation] = [:]
    /// The last segment, ready for appends (`forWriting` only, and only when a segment exists).
    var writer: SegmentWriter?

    init(directory: URL, dtype: FeatureDType, dimension: Int, verifyChecksums: Bool, forWriting: Bool) throws {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw FeatureStoreError.badManifest(path: directory.path, reason: "segments directory unreadable: \(error)")
        }
        var numbers: [Int] = []
        for name in names {
            guard name.hasSuffix(".seg"), let number = Int(name.dropLast(4)), name == FeatureStore.segmentName(number) else {
                throw FeatureStoreError.unexpectedEntry(path: directory.appendingPathComponent(name).path)
            }
            numbers.append(number)
        }
        numbers.sort()

        for (position, number) in numbers.enumerated() {
            let url = directory.appendingPathComponent(FeatureStore.segmentName(number))
            let last = position == numbers.count - 1
            let scan = try SegmentScan(url: url, segment: number, dtype: dtype, dimension: dimension,
                                       verifyChecksums: verifyChecksums || last)
            if let damage = scan.damage, !last {
                throw FeatureStoreError.corruptShard(path: url.path, reason: "record at byte \(scan.validLength): \(damage)")
            }
            for location in scan.records {
                if shards[location.header.shardID] != nil {
                    throw FeatureStoreError.corruptShard(path: url.path,
                                                         reason: "shard \(location.header.shardID) is stored twice (again at byte \(location.offset))")
                }
                shards[location.header.shardID] = location
            }
            if last && forWriting {
                writer = try SegmentWriter(url: url, number: number, truncatingTo: scan.validLength)
            }
        }
    }
}

/// The records of one segment file, walked from its start up to the first that is not whole.
struct SegmentScan {
    /// Whole records, in file order.
    var records: [ShardLocation] = []
    /// Bytes from the start that hold whole records.
    var validLength = 0
    /// Why the record at `validLength` is not whole; nil when the file ends there.
    var damage: String?

    init(url: URL, segment: Int, dtype: FeatureDType, dimension: Int, verifyChecksums: Bool) throws {
        let mapped: Data
        do {
            mapped = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw FeatureStoreError.corruptShard(path: url.path, reason: "unreadable segment: \(error)")
        }
        try mapped.withUnsafeBytes { (file: UnsafeRawBufferPointer) in
            while validLength < file.count {
                let rest = UnsafeRawBufferPointer(rebasing: file[validLength...])
                do {
                    let header = try CommitRecord.decodeHeader(rest)
                    guard header.recordLength <= rest.count else {
                        throw CommitRecord.DecodeError.short(needed: header.recordLength, have: rest.count)
                    }
                    if verifyChecksums { try CommitRecord.verify(rest, header: header) }
                    guard header.dtype == dtype, header.dimension == dimension || header.rows == 0 else {
                        // A whole, checksummed record that does not fit the store is no torn append.
                        throw FeatureStoreError.corruptShard(
                            path: url.path, reason: "record at byte \(validLength) holds \(header.dtype.name) "
                                + "\(header.dimension)-d rows; the store is \(dtype.name) \(dimension)-d")
                    }
                    records.append(ShardLocation(segment: segment, offset: validLength, header: header))
                    validLength += header.recordLength
                } catch let error as CommitRecord.DecodeError {
                    damage = "\(error)"
                    return
                }
            }
        }
    }
}

