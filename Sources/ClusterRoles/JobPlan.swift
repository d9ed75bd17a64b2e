import ClusterSessions
import Coordination
import DatasetIndex
import Foundation

/// The coordinator's shard plan and journal, and the scan the plan grows from while it runs
/// (Protocols/INDEX.md §6–7, JOURNAL.md version 4): leases start from the first published entries, not
/// after the whole dataset is indexed.
///
/// A new job journals a random job id, which binds the head's store instead of the index's content (not
/// known until the scan ends). Before shards of a new prefix are offered, the scan's checkpoint of that
/// prefix is journaled; when the scan ends, the index's content id (the seal). A coordinator restarted
/// before the seal rescans and must reach every journaled checkpoint unchanged, and offers no shard of a
/// prefix until its checkpoint is reached again: a dataset changed mid-job stops it with the error instead
/// of mixing two datasets in one store. A journal of version 2 or 3 (a plan fixed at start) is resumed as
/// it was written: index first, leases after.
final class JobPlan {
    let journal: CoordinatorJournal
    /// The plan to start the session with (empty while the scan has published nothing).
    let initialPlan: any ShardSource
    /// The scan the plan grows from; nil once the plan is final.
    private(set) var scan: IndexScan?
    private let shardSize: Int
    /// Checkpoints of an earlier scan this one must reach before their shards are offered again.
    private var expected: [ScanCheckpoint]

    /// Opens the journal at `options.journalPath` and the plan: the reused index of a sealed or unchanged
    /// job, or a scan started now (and the empty plan it grows from). Throws naming the journal or the
    /// dataset when the job cannot continue.
    init(options: CoordinatorOptions, log: (String) -> Void) throws {
        shardSize = options.shardSize
        let selection = options.dataset
        if let version = CoordinatorJournal.existingHeader(at: options.journalPath)?.version, version < 4 {
            let index = try selection.openIndex(at: options.indexPath, hasProgress: true, log: log)
            let plan = IndexShardPlan(index: index, shardSize: options.shardSize)
            journal = try CoordinatorJournal.open(path: options.journalPath, plan: plan)
            initialPlan = plan
            expected = []
            return
        }
        var random = SystemRandomNumberGenerator()
        journal = try CoordinatorJournal.openGrowing(path: options.journalPath, shardSize: options.shardSize,
                                                     newJobID: random.next(upperBound: UInt64.max - 1) + 1)
        expected = journal.checkpoints
        let reuse = IndexReuse.check(indexPath: options.indexPath, selection: selection.indexSelection)
        if let seal = journal.seal {
            // Sealed: the job's plan is that index, and nothing else.
            let index: IndexedDataset
            switch reuse {
            case .reusable(let found) where found.contentID == seal.contentID:
                log("reusing the dataset index \(options.indexPath) (\(found.count) items; the job's plan)")
                index = found
            case let .datasetChanged(_, changes):
                throw selection.changedError(changes.map(\.description))
            default:
                log("the job's dataset index \(options.indexPath) is missing or another; scanning again to the same content")
                index = try IndexScan.run(selection.indexSelection, indexPath: options.indexPath,
                                          options: Self.scanOptions(expecting: journal.checkpoints))
                guard index.contentID == seal.contentID else {
                    throw IndexError("the dataset \(selection.path) changed since this job indexed it (the scan now gives another index); "
                        + Self.startOver)
                }
            }
            initialPlan = IndexShardPlan(index: index, shardSize: shardSize, fingerprint: journal.fingerprint)
            return
        }
        if journal.checkpoints.isEmpty, case .reusable(let index) = reuse {
            // Nothing offered yet, and the dataset is the one indexed: the plan is final at once.
            log("reusing the dataset index \(options.indexPath) (\(index.count) items, \(index.deadLetterCount) rejected; dataset unchanged)")
            try journal.append(CoordinatorJournal.Seal(contentID: index.contentID, entries: UInt64(index.count + index.deadLetterCount)))
            initialPlan = IndexShardPlan(index: index, shardSize: shardSize, fingerprint: journal.fingerprint)
            return
        }
        if !journal.checkpoints.isEmpty {
            log("this job's scan did not finish before the coordinator stopped; scanning again, and checking that the "
                + "\(journal.checkpoints.last!.entries) entries already offered are unchanged before offering them again")
        } else {
            log("scanning the dataset into \(options.indexPath); shards are leased as the scan passes them")
        }
        scan = try IndexScan.start(selection.indexSelection, indexPath: options.indexPath,
                                   options: Self.scanOptions(expecting: journal.checkpoints))
        let nothing = ScanCheckpoint(items: 0, deadLetters: 0, recordsCRC: 0, keysCRC: 0, deadLettersCRC: 0)
        initialPlan = IndexShardPlan(scan: scan!, checkpoint: nothing, complete: false, shardSize: shardSize, fingerprint: journal.fingerprint)
    }

    /// Whether the plan may still grow.
    var isGrowing: Bool { scan != nil }

    /// Grows the session's plan when the scan allows it and the session runs low on pending shards (or the
    /// scan ended): journals the checkpoint or the seal first (`CoordinatorSession.extendPlan`). Returns what
    /// to log, if anything. Throws the scan's failure (a changed dataset, an unreadable index) or the
    /// journal's.
    func grow(_ session: CoordinatorSession) throws -> String? {
        guard let scan else { return nil }
        let progress = scan.progress
        if progress.finished {
            let index = try scan.finished()
            let seal = CoordinatorJournal.Seal(contentID: index.contentID, entries: UInt64(index.count + index.deadLetterCount))
            let plan = IndexShardPlan(index: index, shardSize: shardSize, fingerprint: journal.fingerprint)
            try session.extendPlan(to: plan, seal: seal)
            self.scan = nil
            return String(format: "indexed %d items (%d rejected, %d outside the selection); the plan is final: %d shards",
                          index.count, index.deadLetterCount, index.skippedCount, plan.shardCount)
        }
        guard var checkpoint = progress.checkpoint, session.table.progress.pending < Self.lowWater else { return nil }
        // Below a journaled checkpoint, the scan offers only what it has verified against it (the writer
        // checks each one the moment it reaches its entry count, before it publishes past it).
        var complete = progress.itemsComplete
        if let last = expected.last, checkpoint.entries <= last.entries {
            guard let verified = expected.last(where: { $0.entries <= checkpoint.entries }) else { return nil }
            checkpoint = verified
            complete = complete && verified.entries == progress.checkpoint!.entries
        }
        let plan = IndexShardPlan(scan: scan, checkpoint: checkpoint, complete: complete, shardSize: shardSize,
                                  fingerprint: journal.fingerprint)
        guard plan.shardCount > session.table.progress.total else { return nil }
        let isNew = checkpoint.entries > (journal.checkpoints.last?.entries ?? 0)
        try session.extendPlan(to: plan, checkpoint: isNew ? checkpoint : nil)
        return nil
    }

    /// Pending shards below which the plan is grown: enough to keep many workers busy between two
    /// publications, few enough that checkpoints (one fsync each) stay rare.
    static let lowWater = 256

    private static let startOver = "start a new job (another --out or --journal), or remove the job folder to start over"

    private static func scanOptions(expecting checkpoints: [ScanCheckpoint]) -> ScanOptions {
        var options = ScanOptions()
        options.expectedCheckpoints = checkpoints
        return options
    }
}
