import DurableFile
import Foundation
import WireProtocol

/// Reading a store: rows, dead letters, the exactly-once check and the human summary.
extension FeatureStore {
    /// Every stored row in (shard, offset) order, with features memory-mapped (one mapping per segment).
    public func rows() throws -> StoreRows {
        var segments: [StoreRows.Segment] = []
        var indexes: [UInt64] = []
        var labels: [Int32] = []
        var keys: [String] = []
        var mapped: [Int: Data] = [:]
        for location in sortedLocations where location.header.rows > 0 {
            let header = location.header
            if mapped[location.segment] == nil {
                mapped[location.segment] = try Data(contentsOf: segmentURL(location.segment), options: .alwaysMapped)
            }
            let file = mapped[location.segment]!
            let featuresStart = location.offset + CommitRecord.headerSize
            let columnsStart = featuresStart + header.featuresLength
            guard columnsStart + header.columnsLength <= file.count else {
                throw FeatureStoreError.corruptShard(path: segmentURL(location.segment).path, reason: "segment shrank since open")
            }
            segments.append(.init(shardID: header.shardID, firstRow: indexes.count, rowCount: header.rows,
                                  featureBytes: file[featuresStart..<columnsStart]))
            let columns = try file[columnsStart..<(columnsStart + header.columnsLength)].withUnsafeBytes {
                try decodeColumns($0, location)
            }
            indexes += columns.indexes
            labels += columns.labels
            keys += columns.keys
        }
        return StoreRows(dtype: dtype, dimension: dimension, segments: segments, indexes: indexes, labels: labels, keys: keys)
    }

    /// Every dead letter in (shard, offset) order.
    public func deadLetters() throws -> [(shardID: UInt32, entry: DeadLetterEntry)] {
        var result: [(shardID: UInt32, entry: DeadLetterEntry)] = []
        for location in sortedLocations where location.header.deadLetters > 0 {
            result += try readColumns(location).deadLetters.map { (location.header.shardID, $0) }
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
        for location in sortedLocations {
            let shardID = location.header.shardID
            do {
                let columns = try readColumns(location, keys: location.header.deadLetters > 0)
                report.rows += columns.indexes.count
                report.deadLetters += columns.deadLetters.count
                columns.indexes.forEach(record)
                for letter in columns.deadLetters {
                    if let index = deadLetterIndex(shardID, letter) { record(index) } else { report.unresolvedDeadLetters += 1 }
                }
            } catch {
                report.unreadableShards[shardID] = "\(error)"
            }
        }
        return report
    }

    /// A summary for humans; problems reading dead letters are reported inside it rather than thrown.
    public func inspect() -> StoreSummary {
        let shardList = shards
        var firstDeadLetters: [(shardID: UInt32, entry: DeadLetterEntry)] = []
        var problems: [String] = []
        for location in sortedLocations where location.header.deadLetters > 0 {
            if firstDeadLetters.count >= 5 { break }
            do {
                firstDeadLetters += try readColumns(location).deadLetters.prefix(5 - firstDeadLetters.count)
                    .map { (location.header.shardID, $0) }
            } catch {
                problems.append("shard \(location.header.shardID): \(error)")
            }
        }
        let ids = shardList.map(\.shardID)
        return StoreSummary(path: root.path, dtype: dtype, dimension: dimension, created: created, metadata: metadata,
                            shards: shardList.count, shardIDRange: ids.first.flatMap { first in ids.last.map { first...$0 } },
                            rows: rowCount, deadLetters: deadLetterCount, bytes: shardList.reduce(0) { $0 + $1.bytes },
                            firstDeadLetters: firstDeadLetters, problems: problems)
    }

    // MARK: files

    var sortedLocations: [ShardLocation] { shardsByID.values.sorted { $0.header.shardID < $1.header.shardID } }

    /// The columns block of a record, read with one exact `pread`.
    private func readColumns(_ location: ShardLocation, keys: Bool = true) throws -> CommitRecord.Columns {
        let path = segmentURL(location.segment).path
        let start = location.offset + CommitRecord.headerSize + location.header.featuresLength
        let bytes: [UInt8]
        do {
            bytes = try DurableFile.open(path, access: .readOnly).read(count: location.header.columnsLength, at: start)
        } catch let error as DurableFileError {
            throw FeatureStoreError(error)
        }
        return try bytes.withUnsafeBytes { try decodeColumns($0, location, keys: keys) }
    }

    private func decodeColumns(_ bytes: UnsafeRawBufferPointer, _ location: ShardLocation, keys: Bool = true) throws
        -> CommitRecord.Columns {
        do {
            return try CommitRecord.decodeColumns(bytes, header: location.header, keys: keys)
        } catch {
            throw FeatureStoreError.corruptShard(path: segmentURL(location.segment).path,
                                                 reason: "shard \(location.header.shardID) at byte \(location.offset): \(error)")
        }
    }
}
