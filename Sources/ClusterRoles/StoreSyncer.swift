import FeatureStore
import Foundation

/// One thread that performs a store's sync tickets, so the head goes on decoding and appending
/// while the disk catches up. At most one ticket is in flight: what is appended meanwhile is
/// covered by the next one (group commit), so the number of fdatasyncs adapts to the disk.
final class StoreSyncer: @unchecked Sendable {
    private let condition = NSCondition()
    private var queued: SyncTicket?
    private var finished: (ticket: SyncTicket, error: Error?)?
    private var stopping = false

    init() {
        // The thread keeps the syncer alive until `stop`.
        let thread = Thread { self.loop() }
        thread.name = "store-sync"
        thread.start()
    }

    /// True while a ticket is queued, being performed, or performed and not yet collected.
    private(set) var busy = false

    /// Hands over a ticket; only when not `busy`.
    func submit(_ ticket: SyncTicket) {
        condition.lock()
        precondition(!busy, "one sync ticket at a time")
        busy = true
        queued = ticket
        condition.signal()
        condition.unlock()
    }

    /// The performed ticket, if the sync finished (rethrowing its error); nil while it runs or when idle.
    /// With `wait`, blocks until a submitted ticket is done.
    func collect(wait: Bool = false) throws -> SyncTicket? {
        condition.lock()
        defer { condition.unlock() }
        while wait && busy && finished == nil { condition.wait() }
        guard let done = finished else { return nil }
        finished = nil
        busy = false
        if let error = done.error { throw error }
        return done.ticket
    }

    /// Ends the thread once the current ticket (if any) is performed.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while queued == nil && !stopping { condition.wait() }
            guard let ticket = queued else {
                condition.unlock()
                return
            }
            queued = nil
            condition.unlock()

            var failure: Error?
            do { try ticket.perform() } catch { failure = error }

            condition.lock()
            finished = (ticket, failure)
            condition.broadcast()
            condition.unlock()
        }
    }
}
