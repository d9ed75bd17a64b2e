import DurableFile
import Foundation

/// The `fdatasync` that makes appended shards durable, taken out of the store so that another thread
/// can wait for the disk while the store's owner goes on appending.
///
/// Made by `FeatureStore.prepareSync`, performed once (on any thread), then handed back to
/// `FeatureStore.completeSync` on the owner's thread. Holds its own descriptor of the segment, so the
/// store may roll to a new segment meanwhile.
public final class SyncTicket: @unchecked Sendable {
    /// The shards this sync makes durable, in append order.
    public let shardIDs: [UInt32]
    /// The segment to sync (a duplicate descriptor), or why none could be made; nil when nothing is pending.
    private let file: Result<DurableFile, Error>?
    private var performed = false

    init(shardIDs: [UInt32], file: Result<DurableFile, Error>?) {
        self.shardIDs = shardIDs
        self.file = file
    }

    /// Waits until every shard of the ticket is on disk, then lets the page cache drop it. Call once.
    public func perform() throws {
        precondition(!performed, "a SyncTicket is performed once")
        performed = true
        guard let file else { return }
        do {
            try Durability.syncData(try file.get())
        } catch let error as DurableFileError {
            throw FeatureStoreError(error)
        }
    }
}

/// The store's durability steps over `DurableFile`: each returns only once its effect survives power
/// loss, and reports failures as `FeatureStoreError`.
enum Durability {
    /// Makes `data` the whole contents of `destination`, atomically: written to `staging` (which must not
    /// exist), fsync'd, renamed over `destination`, then each of `directories` fsync'd (the destination's
    /// own directory among them), so a crash leaves the old file or the new one, never a half-written one.
    static func publish(_ data: Data, staging: URL, as destination: URL, syncing directories: [URL]) throws {
        do {
            try data.withUnsafeBytes { try DurableFile.createSynced(staging.path, bytes: $0, mode: 0o644) }
            try DurableFile.rename(staging.path, to: destination.path)
            for directory in directories { try DurableFile.syncDirectory(directory.path) }
        } catch let error as DurableFileError {
            throw FeatureStoreError(error)
        }
    }

    /// `fdatasync`s a segment, then asks the kernel to drop its clean cached pages.
    ///
    /// The head writes each feature once and reads it back, if ever, long after, so keeping what is
    /// synced in the page cache only makes every later append take fresh pages. Handing them back
    /// right away lets the next appends reuse them: on this project's VM, appending 1 GB in 2.6 MB
    /// records with a sync every 8 took 0.3 s of kernel time instead of 1.0-1.3 s (README,
    /// "Cluster benchmarks"). The advice is only advice: nothing fails if the kernel ignores it.
    static func syncData(_ file: DurableFile) throws {
        do {
            try file.syncData()
        } catch let error as DurableFileError {
            throw FeatureStoreError(error)
        }
        file.dropCachedPages()
    }

    /// Makes the entries of `directory` durable.
    static func syncDirectory(_ directory: URL) throws {
        do {
            try DurableFile.syncDirectory(directory.path)
        } catch let error as DurableFileError {
            throw FeatureStoreError(error)
        }
    }
}
