import DatasetIndex
import WireProtocol

/// The coordinator's shard plan over an on-disk dataset index: shards are ranges of the index, read from
/// the memory-mapped file when leased, so the coordinator holds nothing per item (issue 15).
///
/// The plan cuts one stream of *entries*: the index's items and its dead letters (inputs the scan
/// rejected), each dead letter placed where the scan met it (before item `position`). Shard `s` is
/// entries `[s·shardSize, (s+1)·shardSize)`. A dead letter travels in its shard's assignment as an
/// `ItemLocator.rejected` entry, so the worker sends it as a dead letter and the head stores it with the
/// shard: every input ends in the store exactly once, as a row or a dead letter (PROTOCOL.md §8.3.1).
/// Cutting entries rather than items keeps every assignment within `shardSize`, however many inputs in a
/// row the scan rejected.
public struct IndexShardPlan: ShardSource, @unchecked Sendable {
    /// Format tag mixed into the fingerprint, so a change of the cut invalidates old journals.
    private static let fingerprintTag = "featurestream.indexplan.v1"

    /// The index the shards are ranges of.
    public let index: IndexedDataset
    public let shardSize: Int
    public let shardCount: Int
    /// Items plus dead letters.
    public let entryCount: Int
    /// FNV-1a 64 over the tag, the index's content id (which covers every section's CRC), the shard size
    /// and the entry count: equal for the same index and shard size, different if any item could differ.
    public let fingerprint: UInt64

    /// Cuts `index` into shards of `shardSize` entries (at least 1).
    public init(index: IndexedDataset, shardSize: Int) {
        precondition(shardSize > 0, "shardSize must be positive, got \(shardSize)")
        self.index = index
        self.shardSize = shardSize
        entryCount = index.count + index.deadLetterCount
        precondition(entryCount / shardSize < Int(UInt32.max), "too many shards for 32-bit shard ids")
        shardCount = (entryCount + shardSize - 1) / shardSize
        var hash = FNV1a64()
        hash.add(bytes: Array(Self.fingerprintTag.utf8))
        hash.add(index.contentID)
        hash.add(UInt64(shardSize))
        hash.add(UInt64(entryCount))
        fingerprint = hash.value
    }

    public func itemCount(of id: UInt32) -> Int {
        min(shardSize, entryCount - Int(id) * shardSize)
    }

    public func items(of id: UInt32) -> [ItemRef] {
        let first = Int(id) * shardSize, end = first + itemCount(of: id)
        let lettersBefore = deadLettersAmongEntries(first), lettersThrough = deadLettersAmongEntries(end)
        var refs: [ItemRef] = []
        refs.reserveCapacity(end - first)
        var position = first - lettersBefore, letter = lettersBefore
        while refs.count < end - first {
            // A dead letter met before item `position` comes first (INDEX.md §4.3).
            if letter < lettersThrough, let dead = try? index.deadLetter(letter), dead.position <= UInt64(position) {
                refs.append(ItemRef(index: ItemRef.rejectedIndexBase + UInt64(letter), key: dead.key, label: -1,
                                    locator: .rejected(reason: "index: \(dead.reason)")))
                letter += 1
            } else if letter < lettersThrough, position >= index.count {
                // Only a damaged dead-letter table gets here (its entry would not read above).
                refs.append(ItemRef(index: ItemRef.rejectedIndexBase + UInt64(letter), key: "index:dead-letter-\(letter)", label: -1,
                                    locator: .rejected(reason: "index: dead letter \(letter) of \(index.path) cannot be read")))
                letter += 1
            } else {
                refs.append(item(at: position))
                position += 1
            }
        }
        return refs
    }

    /// Item `position` as an assignment entry; a record the mapped file cannot give (a damaged index,
    /// which the header and section checks make unlikely) becomes a dead letter naming the position.
    private func item(at position: Int) -> ItemRef {
        do {
            let item = try index.item(position)
            return ItemRef(index: item.position, key: item.key, label: item.label, locator: item.locator)
        } catch {
            return ItemRef(index: UInt64(position), key: "index:\(position)", label: -1,
                           locator: .rejected(reason: "index: item \(position) cannot be read: \(error)"))
        }
    }

    /// How many dead letters are among the first `entries` entries: the largest k such that dead letter
    /// k − 1 sits at entry `position + (k − 1)` < `entries`. Entry ordinals of dead letters strictly
    /// increase, so a binary search over the mapped table finds it in O(log D).
    private func deadLettersAmongEntries(_ entries: Int) -> Int {
        var low = 0, high = index.deadLetterCount
        while low < high {
            let mid = (low + high) / 2
            let position = (try? index.deadLetter(mid).position).map(Int.init) ?? index.count
            if position + mid < entries { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
