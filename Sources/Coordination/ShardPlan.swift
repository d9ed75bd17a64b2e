import WireProtocol

/// A contiguous run of dataset items leased and committed as one unit.
public struct Shard: Equatable, Hashable, Sendable {
    /// Position of the shard in its plan (0-based, dense); stable for a given item list and shard size.
    public var id: UInt32
    /// The items, in dataset order; the shard's item offsets are positions in this array.
    public var items: [ItemRef]

    /// Makes a shard; `ShardPlan.cut` is the usual source of shards.
    public init(id: UInt32, items: [ItemRef]) {
        self.id = id
        self.items = items
    }
}

/// What the lease table needs of a shard plan: how many shards, how many items each, and a shard's items
/// when it is leased. The coordinator's plan reads them from the memory-mapped dataset index
/// (`IndexShardPlan`), so nothing per item is held in memory; `ShardPlan` keeps them in an array (tests,
/// the simulator).
public protocol ShardSource: Sendable {
    /// Shards, with ids `0..<shardCount`.
    var shardCount: Int { get }
    /// Items per shard (the last shard may hold fewer).
    var shardSize: Int { get }
    /// Changes (barring collision) whenever any shard's items would; a journal is tied to it.
    var fingerprint: UInt64 { get }
    /// Items (and index-time rejects) of shard `id`; `id < shardCount`.
    func itemCount(of id: UInt32) -> Int
    /// The assignment's items of shard `id`, in offset order; `id < shardCount`.
    func items(of id: UInt32) -> [ItemRef]
    /// Whether `shardCount` is every shard of the job. A plan read from a scan that is still running is not:
    /// a later plan (`LeaseTable.extend`) keeps these shards as they are and adds more.
    var isFinal: Bool { get }
}

extension ShardSource {
    /// Plans cut from a finished item list are final.
    public var isFinal: Bool { true }
}

/// How a dataset is cut into shards, and a fingerprint that changes whenever the cut or the data would.
public struct ShardPlan: Equatable, ShardSource {
    /// Format tag mixed into the fingerprint so a change of the algorithm below invalidates old journals.
    private static let fingerprintTag = "featurestream.shardplan.v1"

    /// The shards, ids `0..<shards.count` in order.
    public let shards: [Shard]
    /// Items per shard (the last shard may hold fewer).
    public let shardSize: Int
    /// Items over all shards.
    public let itemCount: Int
    /// 64-bit FNV-1a over the shard count, shard size, item count and every item (index, key, label):
    /// equal for the same items and shard size on every platform and run, different (barring collision)
    /// if anything a shard would contain changed.
    public let fingerprint: UInt64

    public var shardCount: Int { shards.count }
    public func itemCount(of id: UInt32) -> Int { shards[Int(id)].items.count }
    public func items(of id: UInt32) -> [ItemRef] { shards[Int(id)].items }

    /// Cuts `items` into shards of `shardSize` (at least 1) and fingerprints the result.
    public init(items: [ItemRef], shardSize: Int) {
        let shards = ShardPlan.cut(items, shardSize: shardSize)
        self.shards = shards
        self.shardSize = shardSize
        self.itemCount = items.count
        self.fingerprint = ShardPlan.fingerprint(shards, shardSize: shardSize)
    }

    /// A plan of shards already cut (ids `0..<shards.count` in order); the shard size is the first shard's.
    public init(shards: [Shard]) {
        self.shards = shards
        self.shardSize = max(shards.first?.items.count ?? 1, 1)
        self.itemCount = shards.reduce(0) { $0 + $1.items.count }
        self.fingerprint = ShardPlan.fingerprint(shards, shardSize: shardSize)
    }

    /// Cuts `items` in their given order into consecutive shards of `shardSize` items (the last one may be
    /// shorter), numbered from 0; the same input always yields the same shards. `shardSize` must be positive.
    public static func cut(_ items: [ItemRef], shardSize: Int) -> [Shard] {
        precondition(shardSize > 0, "shardSize must be positive, got \(shardSize)")
        precondition(items.count / shardSize < Int(UInt32.max), "too many shards for 32-bit shard ids")
        var shards: [Shard] = []
        shards.reserveCapacity((items.count + shardSize - 1) / shardSize)
        var start = 0
        while start < items.count {
            let end = min(start + shardSize, items.count)
            shards.append(Shard(id: UInt32(shards.count), items: Array(items[start..<end])))
            start = end
        }
        return shards
    }

    /// The fingerprint of an already cut plan (see `fingerprint`); exposed so a journal can be checked
    /// against shards that were not made by `init(items:shardSize:)`.
    public static func fingerprint(_ shards: [Shard], shardSize: Int) -> UInt64 {
        var hash = FNV1a64()
        hash.add(bytes: Array(fingerprintTag.utf8))
        hash.add(UInt64(shards.count))
        hash.add(UInt64(shardSize))
        hash.add(UInt64(shards.reduce(0) { $0 + $1.items.count }))
        for shard in shards {
            // Shard boundaries matter even when the flattened items are equal.
            hash.add(UInt64(shard.id))
            hash.add(UInt64(shard.items.count))
            for item in shard.items {
                hash.add(item.index)
                let key = Array(item.key.utf8)
                // Length prefix keeps ("ab","c") and ("a","bc") apart.
                hash.add(UInt64(key.count))
                hash.add(bytes: key)
                hash.add(UInt64(UInt32(bitPattern: item.label)))
            }
        }
        return hash.value
    }
}

/// 64-bit FNV-1a; chosen because it is tiny, dependency-free and identical on every platform.
public struct FNV1a64 {
    public init() {}

    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public mutating func add(bytes: [UInt8]) {
        for byte in bytes {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01b3
        }
    }

    /// Little-endian, so the hash does not depend on the host's byte order.
    public mutating func add(_ word: UInt64) {
        var word = word
        for _ in 0..<8 {
            value ^= word & 0xff
            value = value &* 0x0000_0100_0000_01b3
            word >>= 8
        }
    }
}

/// The first `shardCount` shards of a plan, final only when told: a plan growing as a scan would publish
/// it, for the simulator and tests (the coordinator's own growing plan is `IndexShardPlan` over a scan).
public struct ShardPlanPrefix: ShardSource {
    /// The whole plan the prefix grows towards.
    public let whole: ShardPlan
    public let shardCount: Int
    public let isFinal: Bool
    /// The job id the plan is bound to (a growing plan's journal keeps it); `whole`'s fingerprint by default.
    public let fingerprint: UInt64

    /// The first `shardCount` shards of `whole` (all of them when `isFinal`).
    public init(_ whole: ShardPlan, shardCount: Int, isFinal: Bool = false, fingerprint: UInt64? = nil) {
        precondition(shardCount <= whole.shardCount)
        self.whole = whole
        self.shardCount = isFinal ? whole.shardCount : shardCount
        self.isFinal = isFinal
        self.fingerprint = fingerprint ?? whole.fingerprint
    }

    public var shardSize: Int { whole.shardSize }
    public func itemCount(of id: UInt32) -> Int { whole.itemCount(of: id) }
    public func items(of id: UInt32) -> [ItemRef] { whole.items(of: id) }
}
