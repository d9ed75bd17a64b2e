import ClusterLaunch
import Foundation
import XCTest

/// When `run` and `launch` start a dead worker again (PROTOCOL.md §8.3.7 needs workers to come back).
final class WorkerRestartsTests: XCTestCase {
    func testOnlyCrashesAndStallsComeBackLocally() {
        XCTAssertTrue(WorkerRestarts.restartable(reason: .uncaughtSignal, status: SIGKILL))
        XCTAssertTrue(WorkerRestarts.restartable(reason: .exit, status: WorkerRestarts.stalledExitStatus))
        XCTAssertFalse(WorkerRestarts.restartable(reason: .exit, status: 0), "done")
        XCTAssertFalse(WorkerRestarts.restartable(reason: .exit, status: 1), "a bad flag or model fails again")
    }

    func testBackoffDoublesToEightSecondsAndStartsAgainAfterAMinuteOfLife() {
        let start = Date(timeIntervalSince1970: 1_000)
        var restarts = WorkerRestarts(count: 2, now: start)
        var now = start
        var waits: [Double] = []
        for _ in 0..<7 {
            let died = now
            while !restarts.due(0, restartable: true, now: now) { now += 0.125 }  // exact in binary
            waits.append((now.timeIntervalSince(died) * 100).rounded() / 100)
            restarts.started(0, now: now)
        }
        XCTAssertEqual(waits, [0.25, 0.5, 1, 2, 4, 8, 8])
        XCTAssertFalse(restarts.due(1, restartable: false, now: now + 100), "a worker that must not come back never does")
        // A process that lived a minute dies: the backoff starts over.
        now += 61
        XCTAssertFalse(restarts.due(0, restartable: true, now: now))
        XCTAssertTrue(restarts.due(0, restartable: true, now: now + 0.25))
        XCTAssertEqual(restarts.restarts, 7)
    }

    /// The give-up clock counts only time in one stretch with no worker running: stretches with restarts
    /// between them never add up (a run once killed its coordinator while it was ending a finished job,
    /// because two moments of both workers dead, 16 s apart, counted as one).
    func testEveryWorkerGoneCountsOnlyOneUnbrokenStretch() {
        var restarts = WorkerRestarts(count: 2)
        let start = Date(timeIntervalSince1970: 1_000)
        XCTAssertFalse(restarts.everyWorkerGone(noneRunning: true, now: start))
        XCTAssertFalse(restarts.everyWorkerGone(noneRunning: false, now: start + 1))
        XCTAssertFalse(restarts.everyWorkerGone(noneRunning: true, now: start + 16), "a new stretch starts here")
        XCTAssertFalse(restarts.everyWorkerGone(noneRunning: true, now: start + 16 + WorkerRestarts.allGoneSeconds))
        XCTAssertTrue(restarts.everyWorkerGone(noneRunning: true, now: start + 16.5 + WorkerRestarts.allGoneSeconds))
    }
}
