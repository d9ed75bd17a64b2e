import FeatureStore
import Foundation

/// The simulated disk under the head's real store: syncs complete after a delay or fail, and a crash keeps
/// what was synced plus any prefix of what was not.
extension ClusterSimulator {
    func startSyncIfDue() throws {
        guard var head, let store = head.store, !head.syncInFlight, !store.pendingShards.isEmpty else { return }
        let ticket = store.prepareSync()
        let segment = try lastSegment()
        head.nextTicket += 1
        head.syncs[head.nextTicket] = (ticket, segment, segment.map(fileLength) ?? 0)
        head.syncInFlight = true
        self.head = head
        schedule(.syncDone(generation: headGeneration, ticket: head.nextTicket), after: UInt64.random(in: 1...40, using: &rng))
    }

    func completeSync(_ number: Int) throws {
        guard var head, let sync = head.syncs.removeValue(forKey: number) else { return }
        head.syncInFlight = false
        self.head = head
        if faulty && chance(schedule.diskFaultRate) {
            // fsync failed: what reached the disk is unknown, so the head must stop rather than acknowledge.
            outcome.faults["fsync failure", default: 0] += 1
            try crash(.head)
            return
        }
        try sync.ticket.perform()
        let durable = head.store!.completeSync(sync.ticket)
        if let segment = sync.segment { durableLength[segment] = max(durableLength[segment] ?? 0, sync.length) }
        try perform(self.head!.session.synced(durable.map(\.shardID), now: now), at: .head)
        try startSyncIfDue()
    }

    func lastSegment() throws -> URL? {
        let segments = storeURL.appendingPathComponent("segments")
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: segments.path) else { return nil }
        return names.filter { $0.hasSuffix(".seg") }.sorted().last.map { segments.appendingPathComponent($0) }
    }

    func fileLength(_ url: URL) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: url.path)[.size]) as? NSNumber)?.intValue ?? 0
    }

    /// A crash keeps what was synced and any prefix of what was not (the page cache is lost).
    func tearLastSegment() throws {
        guard let last = try lastSegment() else { return }
        let length = fileLength(last)
        let durable = durableLength[last] ?? 0
        guard length > durable else { return }
        let kept = durable + Int.random(in: 0...(length - durable), using: &rng)
        guard truncate(last.path, off_t(kept)) == 0 else { throw violation("cannot truncate \(last.path)") }
        outcome.faults["torn store tail", default: 0] += 1
    }
}
