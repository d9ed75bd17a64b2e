import Foundation
import WireProtocol

/// One stored feature row.
public struct StoreRow: Equatable, Sendable {
    /// Shard the row was committed with.
    public var shardID: UInt32
    /// Dataset index of the item.
    public var index: UInt64
    /// Label of the item (-1 when unlabeled).
    public var label: Int32
    /// Key of the item.
    public var key: String
    /// Feature values, widened to `Float` when the store holds f16.
    public var features: [Float]
}

/// Every stored row in (shard, offset) order; feature bytes stay memory-mapped until a row is read.
public struct StoreRows: RandomAccessCollection, Sendable {
    /// The rows of one shard: a contiguous run of positions backed by one mapped `features.bin`.
    public struct Segment: Sendable {
        /// The shard these rows belong to.
        public var shardID: UInt32
        /// Position in the collection of the shard's first row.
        public var firstRow: Int
        /// Rows in the shard.
        public var rowCount: Int
        /// The shard's `features.bin`, memory-mapped: `rowCount * dimension` little-endian values of `dtype`.
        public var featureBytes: Data
    }

    /// Element type of `Segment.featureBytes`.
    public let dtype: FeatureDType
    /// Values per row.
    public let dimension: Int
    /// One segment per committed shard with rows, in shard order.
    public let segments: [Segment]
    /// Dataset index of every row.
    public let indexes: [UInt64]
    /// Label of every row.
    public let labels: [Int32]
    /// Key of every row.
    public let keys: [String]

    init(dtype: FeatureDType, dimension: Int, segments: [Segment], indexes: [UInt64], labels: [Int32], keys: [String]) {
        self.dtype = dtype
        self.dimension = dimension
        self.segments = segments
        self.indexes = indexes
        self.labels = labels
        self.keys = keys
    }

    /// Always 0.
    public var startIndex: Int { 0 }
    /// The number of rows.
    public var endIndex: Int { indexes.count }

    /// The row at `position`, with its features decoded from the mapped file.
    public subscript(position: Int) -> StoreRow {
        let segment = segment(containing: position)
        return StoreRow(shardID: segment.shardID, index: indexes[position], label: labels[position], key: keys[position],
                        features: features(ofRow: position, in: segment))
    }

    /// The feature values of the row at `position`.
    public func features(ofRow position: Int) -> [Float] {
        features(ofRow: position, in: segment(containing: position))
    }

    private func features(ofRow position: Int, in segment: Segment) -> [Float] {
        let width = dtype.width * dimension
        let start = segment.featureBytes.startIndex + (position - segment.firstRow) * width
        // Only complete rows were verified on open, so a full row is always there.
        return dtype.floats(fromLittleEndian: segment.featureBytes[start..<(start + width)])!
    }

    private func segment(containing position: Int) -> Segment {
        precondition(position >= 0 && position < endIndex, "row \(position) out of range 0..<\(endIndex)")
        var low = 0
        var high = segments.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if segments[middle].firstRow <= position { low = middle } else { high = middle - 1 }
        }
        return segments[low]
    }
}

/// Result of checking that every expected dataset index was stored exactly once.
public struct ExactlyOnceReport: Equatable, Sendable, CustomStringConvertible {
    /// Indexes the caller expected.
    public var expectedCount: Int
    /// Feature rows in the store.
    public var rows: Int
    /// Dead letters in the store.
    public var deadLetters: Int
    /// Expected indexes stored neither as a row nor as a (resolved) dead letter, ascending.
    public var missing: [UInt64]
    /// Indexes stored more than once (rows and resolved dead letters together), with how many times.
    public var duplicated: [UInt64: Int]
    /// Stored indexes the caller did not expect, ascending and distinct.
    public var unexpected: [UInt64]
    /// Dead letters whose dataset index the caller's resolver could not name. They do not fail the check:
    /// `commit` proved each shard holds every offset once, so such a dead letter cannot duplicate a row of its
    /// shard, but its index cannot be compared with the expected set either.
    public var unresolvedDeadLetters: Int
    /// Shards whose files could not be read, with the reason.
    public var unreadableShards: [UInt32: String]

    /// True when every expected index was stored exactly once, nothing unexpected was stored, and every
    /// shard could be read.
    public var isExactlyOnce: Bool {
        missing.isEmpty && duplicated.isEmpty && unexpected.isEmpty && unreadableShards.isEmpty
    }

    /// A short verdict with the first few offending indexes.
    public var description: String {
        func sample(_ values: [UInt64]) -> String {
            values.prefix(10).map(String.init).joined(separator: ", ") + (values.count > 10 ? ", …" : "")
        }
        var lines = ["exactly-once: \(isExactlyOnce ? "ok" : "VIOLATED") (\(expectedCount) expected, \(rows) rows, \(deadLetters) dead letters)"]
        if !missing.isEmpty { lines.append("  missing \(missing.count): \(sample(missing))") }
        if !duplicated.isEmpty { lines.append("  duplicated \(duplicated.count): \(sample(duplicated.keys.sorted()))") }
        if !unexpected.isEmpty { lines.append("  unexpected \(unexpected.count): \(sample(unexpected))") }
        if unresolvedDeadLetters > 0 { lines.append("  unresolved dead letters: \(unresolvedDeadLetters)") }
        for (shard, reason) in unreadableShards.sorted(by: { $0.key < $1.key }) {
            lines.append("  unreadable shard \(shard): \(reason)")
        }
        return lines.joined(separator: "\n")
    }
}

/// What `featstream store inspect` prints.
public struct StoreSummary: CustomStringConvertible {
    /// The store's root directory.
    public var path: String
    /// Element type of stored features.
    public var dtype: FeatureDType
    /// Values per row.
    public var dimension: Int
    /// When the store was created (ISO 8601), as recorded.
    public var created: String
    /// Model and class names recorded at creation.
    public var metadata: StoreMetadata
    /// Committed shards.
    public var shards: Int
    /// Lowest and highest committed shard IDs, when any.
    public var shardIDRange: ClosedRange<UInt32>?
    /// Feature rows stored.
    public var rows: Int
    /// Dead letters stored.
    public var deadLetters: Int
    /// Bytes of all shard files.
    public var bytes: Int
    /// The first few dead letters in shard order.
    public var firstDeadLetters: [(shardID: UInt32, entry: DeadLetterEntry)]
    /// Problems met while summarising (for example an unreadable dead-letter file).
    public var problems: [String]

    /// Multi-line, human-readable summary.
    public var description: String {
        var lines = [
            "store: \(path)",
            "dtype: \(dtype.name)  dimension: \(dimension)  created: \(created)",
        ]
        if let model = metadata.model { lines.append("model: \(model)" + (metadata.precision.map { ", extracted at \($0)" } ?? "")) }
        if let classes = metadata.classNames { lines.append("classes: \(classes.count)") }
        let range = shardIDRange.map { " (ids \($0.lowerBound)–\($0.upperBound))" } ?? ""
        lines.append("shards: \(shards)\(range)")
        lines.append("rows: \(rows)  dead letters: \(deadLetters)  bytes: \(bytes)")
        if !firstDeadLetters.isEmpty {
            lines.append("first dead letters:")
            for (shardID, entry) in firstDeadLetters {
                lines.append("  shard \(shardID) offset \(entry.offset) \(entry.key): \(entry.reason)")
            }
        }
        lines += problems.map { "problem: \($0)" }
        return lines.joined(separator: "\n")
    }
}
