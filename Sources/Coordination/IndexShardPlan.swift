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

    /// Where the entries are read: the finished index, or the scan still writing it (its published prefix).
    public let entries: any IndexEntries
    public let shardSize: Int
    public let shardCount: Int
    /// Items plus dead letters the plan covers: all of them when `isFinal`, else a published prefix.
    public let entryCount: Int
    /// Items and dead letters readable through `entries` (bounds for finding a shard's first entries).
    private let itemsVisible: Int
    private let deadLettersVisible: Int
    /// The job's binding fingerprint: by default FNV-1a 64 over the tag, the index's content id (which
    /// covers every section's CRC), the shard size and the entry count; a job that leased while its scan ran
    /// uses the id its journal was created with instead (JOURNAL.md version 4).
    public let fingerprint: UInt64
    /// Whether the plan holds every shard (false while the scan runs: more shards follow).
    public let isFinal: Bool

    /// Cuts the finished `index` into shards of `shardSize` entries (at least 1). `fingerprint` replaces the
    /// one made from the index's content (a job whose journal carries its own id).
    public init(index: IndexedDataset, shardSize: Int, fingerprint: UInt64? = nil) {
        precondition(shardSize > 0, "shardSize must be positive, got \(shardSize)")
        entries = index
        self.shardSize = shardSize
        itemsVisible = index.count
        deadLettersVisible = index.deadLetterCount
        entryCount = index.count + index.deadLetterCount
        precondition(entryCount / shardSize < Int(UInt32.max), "too many shards for 32-bit shard ids")
        shardCount = (entryCount + shardSize - 1) / shardSize
        isFinal = true
        if let fingerprint {
            self.fingerprint = fingerprint
        } else {
            var hash = FNV1a64()
            hash.add(bytes: Array(Self.fingerprintTag.utf8))
            hash.add(index.contentID)
            hash.add(UInt64(shardSize))
            hash.add(UInt64(entryCount))
            self.fingerprint = hash.value
        }
    }

    /// The whole shards of a scan's published prefix `checkpoint` (INDEX.md §6: those entries never change),
    /// or every shard once `complete` (the scan's items are all written; the last shard may be short).
    /// Bound to the job's `fingerprint`.
    public init(scan: IndexScan, checkpoint: ScanCheckpoint, complete: Bool, shardSize: Int, fingerprint: UInt64) {
        precondition(shardSize > 0, "shardSize must be positive, got \(shardSize)")
        entries = scan
        self.shardSize = shardSize
        itemsVisible = Int(checkpoint.items)
        deadLettersVisible = Int(checkpoint.deadLetters)
        let published = Int(checkpoint.entries)
        shardCount = complete ? (published + shardSize - 1) / shardSize : published / shardSize
        precondition(shardCount < Int(UInt32.max), "too many shards for 32-bit shard ids")
        entryCount = complete ? published : shardCount * shardSize
        // Complete items are not a finished file yet: the job's plan becomes final with the file (its content id).
        isFinal = false
        self.fingerprint = fingerprint
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
            if letter < lettersThrough, let dead = try? entries.deadLetter(letter), dead.position <= UInt64(position) {
                refs.append(ItemRef(index: ItemRef.rejectedIndexBase + UInt64(letter), key: dead.key, label: -1,
                                    locator: .rejected(reason: "index: \(dead.reason)")))
                letter += 1
            } else if letter < lettersThrough, position >= itemsVisible {
                // Only a damaged dead-letter table gets here (its entry would not read above).
                refs.append(ItemRef(index: ItemRef.rejectedIndexBase + UInt64(letter), key: "index:dead-letter-\(letter)", label: -1,
                                    locator: .rejected(reason: "index: dead letter \(letter) cannot be read")))
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
            let item = try entries.item(position)
            return ItemRef(index: item.position, key: item.key, label: item.label, locator: item.locator)
        } catch {
            return ItemRef(index: UInt64(position), key: "index:\(position)", label: -1,
                           locator: .rejected(reason: "index: item \(position) cannot be read: \(error)"))
        }
    }

    /// How many dead letters are among the first `entries` entries: the largest k such that dead letter
    /// k − 1 sits at entry `position + (k − 1)` < `entries`. Entry ordinals of dead letters strictly
    /// increase, so a binary search over the mapped table finds it in O(log D).
    private func deadLettersAmongEntries(_ count: Int) -> Int {
        var low = 0, high = deadLettersVisible
        while low < high {
            let mid = (low + high) / 2
            let position = (try? entries.deadLetter(mid).position).map(Int.init) ?? itemsVisible
            if position + mid < count { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

/// What a shard plan reads its entries from: a finished index, or a scan still writing one (whose
/// published prefix never changes).
public protocol IndexEntries: Sendable {
    /// Item `position`.
    func item(_ position: Int) throws -> IndexedItem
    /// Dead letter `i`, in the order the scan met them.
    func deadLetter(_ i: Int) throws -> IndexDeadLetter
}

extension IndexedDataset: IndexEntries {}

extension IndexScan: IndexEntries {
    public func item(_ position: Int) throws -> IndexedItem { try items(position..<position + 1)[0] }
}
