import Foundation

/// When a supervisor starts a worker again after its process died: a poison item kills (or hangs) the worker
/// that decodes it, and the coordinator can only isolate the item (PROTOCOL.md §8.3.7) if workers come back.
///
/// Locally (`featstream run`), a worker that died by a signal (a crash, the OOM killer) or exited with
/// `stalledExitStatus` (its extraction hung on an input) is started again; one that exited by itself with
/// any other status (done, a bad flag, a model it cannot load) is not, since a fresh process would fail the
/// same way. Over SSH (`featstream launch`) a signal death reaches the launcher only as a failure status,
/// so any failure after the start-up window counts (failures within it stop the launch). Restarts back
/// off from 0.25 s, doubling to 8 s, so a crash loop cannot spin; a process that lived a minute starts the
/// backoff again.
///
/// The coordinator waits for workers for ever, so a supervisor gives the job up once no worker process has
/// run for `allGoneSeconds` in a row (`everyWorkerGone`).
public struct WorkerRestarts: Sendable {
    /// The status a worker exits with when its extraction stalled (`EX_TEMPFAIL`).
    public static let stalledExitStatus: Int32 = 75

    private var startedAt: [Date]
    private var deaths: [Int]
    private var diedAt: [Date?]
    private var allGoneSince: Date?
    /// Restarts so far, for the run's summary.
    public private(set) var restarts = 0

    /// Tracks `count` workers, all started at `now`.
    public init(count: Int, now: Date = Date()) {
        startedAt = Array(repeating: now, count: count)
        deaths = Array(repeating: 0, count: count)
        diedAt = Array(repeating: nil, count: count)
    }

    /// Whether a local process that ended this way should be started again.
    public static func restartable(reason: Process.TerminationReason, status: Int32) -> Bool {
        reason == .uncaughtSignal || status == stalledExitStatus
    }

    /// Call while worker `slot`'s local process is not running: true when it should be started again now
    /// (then call `started`). False while backing off, and always for a process that must not come back.
    public mutating func due(_ slot: Int, reason: Process.TerminationReason, status: Int32, now: Date = Date()) -> Bool {
        due(slot, restartable: Self.restartable(reason: reason, status: status), now: now)
    }

    /// Call while worker `slot` is not running: true when it should be started again now (then call
    /// `started`); `restartable` says whether the way it ended allows that at all.
    public mutating func due(_ slot: Int, restartable: Bool, now: Date = Date()) -> Bool {
        guard restartable else { return false }
        if diedAt[slot] == nil {
            diedAt[slot] = now
            deaths[slot] = now.timeIntervalSince(startedAt[slot]) >= 60 ? 1 : deaths[slot] + 1
        }
        let backoff = min(8, 0.25 * pow(2, Double(deaths[slot] - 1)))
        return now.timeIntervalSince(diedAt[slot]!) >= backoff
    }

    /// How long no worker may run before a supervisor gives the job up: longer than the longest backoff,
    /// so workers that are only waiting to be started again never trip it.
    public static let allGoneSeconds: Double = 15

    /// Call on every supervision tick with whether no worker process runs now: true once none has run for
    /// `allGoneSeconds` in a row. Any worker running resets the clock, so moments when every worker happened
    /// to be dead at once, with restarts in between, never add up (they once did: a run whose workers a poison
    /// item killed twice together had its coordinator killed while it was ending the finished job).
    public mutating func everyWorkerGone(noneRunning: Bool, now: Date = Date()) -> Bool {
        guard noneRunning else { allGoneSince = nil; return false }
        allGoneSince = allGoneSince ?? now
        return now.timeIntervalSince(allGoneSince!) > Self.allGoneSeconds
    }

    /// Worker `slot` was started again at `now`.
    public mutating func started(_ slot: Int, now: Date = Date()) {
        startedAt[slot] = now
        diedAt[slot] = nil
        restarts += 1
    }
}
