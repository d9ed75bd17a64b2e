import FeatureCodec
import FeatureStore
import Foundation
import HeadTraining
import WireProtocol

/// How rows of a store are split into training and validation.
public enum ValidationSplit: Sendable {
    /// Use the dataset's own split of each item (an ImageFolder's `train/` and `val/`): `splitOf[index]`.
    case dataset(splitOf: [UInt64: String], validation: String)
    /// Hold out this fraction of rows, chosen by a hash of the item's dataset index (stable across runs).
    case fraction(Double)
}

extension ValidationSplit {
    /// Whether the item with this dataset index is held out for validation.
    public func holdsOut(_ index: UInt64) -> Bool {
        switch self {
        case let .dataset(splitOf, name): return splitOf[index] == name
        case .fraction(let fraction): return Double(stableHash(index) % 10_000) / 10_000 < fraction
        }
    }
}

/// The store's rows as training and validation sets, read from the store when training asks for them.
public struct TrainingData {
    public var train: StoreRowSource
    public var validation: StoreRowSource?
    public var classNames: [String]

    /// Splits the labelled rows of `store` (labels must be `0..<classNames.count`; class names come
    /// from the store's metadata, or are the label numbers). Reads the row columns (index, label,
    /// key), not the features: those are memory-mapped and widened block by block when trained on.
    public static func load(_ store: FeatureStore, split: ValidationSplit, classNames: [String]? = nil) throws -> TrainingData {
        let rows = try store.rows()
        guard rows.count > 0 else { throw TrainingError.emptyTrainingSet }
        let names = classNames ?? store.metadata.classNames
            ?? (0...Int(rows.labels.max() ?? 0)).map(String.init)
        var train: [Int] = [], validation: [Int] = []
        for position in 0..<rows.count where rows.labels[position] >= 0 {
            if split.holdsOut(rows.indexes[position]) { validation.append(position) } else { train.append(position) }
        }
        guard !train.isEmpty else { throw TrainingError.emptyTrainingSet }
        return TrainingData(train: StoreRowSource(rows, positions: train),
                            validation: validation.isEmpty ? nil : StoreRowSource(rows, positions: validation),
                            classNames: names)
    }
}

/// Chosen rows of a store, read segment by segment from the memory-mapped shard files. f16 stays
/// f16 until a block of rows is widened for training, so memory holds one block, not the store.
public struct StoreRowSource: TrainingRowSource {
    private let rows: StoreRows
    /// Store positions of the chosen rows, ascending.
    public let positions: [Int]
    public let labels: [Int32]
    public var dimension: Int { rows.dimension }

    /// The rows at `positions` (ascending) of `rows`.
    public init(_ rows: StoreRows, positions: [Int]) {
        self.rows = rows
        self.positions = positions
        labels = positions.map { rows.labels[$0] }
    }

    /// Every row of `rows`.
    public init(allOf rows: StoreRows) { self.init(rows, positions: Array(0..<rows.count)) }

    public func forEachBlock(maxRows: Int, _ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws {
        let d = dimension
        let width = rows.dtype.width
        var block = [Float](repeating: 0, count: max(1, maxRows) * d)
        var filled = 0, blockFirst = 0, next = 0
        func flush() throws {
            guard filled > 0 else { return }
            try block.withUnsafeBufferPointer { try body(blockFirst, UnsafeBufferPointer(rebasing: $0[0..<(filled * d)])) }
            blockFirst += filled
            filled = 0
        }
        for segment in rows.segments where next < positions.count {
            let end = segment.firstRow + segment.rowCount
            guard positions[next] < end else { continue }
            try segment.featureBytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                while next < positions.count, positions[next] < end {
                    let source = raw.baseAddress! + (positions[next] - segment.firstRow) * d * width
                    block.withUnsafeMutableBufferPointer { destination in
                        let target = destination.baseAddress! + filled * d
                        rows.dtype.load(source, count: d, into: target)
                    }
                    filled += 1
                    next += 1
                    if filled == maxRows { try flush() }
                }
            }
        }
        try flush()
    }
}

/// How much memory training may use for feature rows before it streams them from the store instead.
public enum MemoryBudget {
    /// Half of the memory this process may use: the smaller of physical memory and its cgroup's
    /// `memory.max` (which `systemd-run -p MemoryMax=` and containers set).
    public static var defaultBytes: Int {
        var limit = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        if let cgroup = cgroupLimit() { limit = min(limit, cgroup) }
        return limit / 2
    }

    /// The memory limit of this process's cgroup, when set: `memory.max` (v2) or `memory.limit_in_bytes` (v1).
    static func cgroupLimit() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let file: String
            if fields[0] == "0" && fields[1].isEmpty {
                file = "/sys/fs/cgroup" + fields[2] + "/memory.max"
            } else if fields[1].split(separator: ",").contains("memory") {
                file = "/sys/fs/cgroup/memory" + fields[2] + "/memory.limit_in_bytes"
            } else {
                continue
            }
            // "max" (v2) or a number near Int64.max (v1) mean no limit.
            if let value = try? String(contentsOfFile: file, encoding: .utf8),
               let bytes = Int(value.trimmingCharacters(in: .whitespacesAndNewlines)), bytes < 1 << 60 {
                return bytes
            }
        }
        return nil
    }

    /// Bytes from text such as `512M`, `2G`, `1.5GiB` or a plain number of bytes; nil when it is none of those.
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased().replacingOccurrences(of: "IB", with: "")
            .replacingOccurrences(of: "B", with: "")
        let units: [Character: Double] = ["K": 1024, "M": 1_048_576, "G": 1_073_741_824, "T": 1_099_511_627_776]
        if let last = trimmed.last, let unit = units[last], let number = Double(trimmed.dropLast()), number > 0 {
            return Int(number * unit)
        }
        return Int(trimmed).flatMap { $0 > 0 ? $0 : nil }
    }
}

/// A 64-bit mix of an index (SplitMix64's finaliser), so held-out rows are spread over the dataset.
func stableHash(_ value: UInt64) -> UInt64 {
    var z = value &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
