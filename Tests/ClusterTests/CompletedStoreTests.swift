import FeatStreamTestSupport
import Coordination
import FeatureStore
import Foundation
import XCTest

/// A store whose job is complete (`<store>/job-complete`), reused: the head checks the coordinator's shard
/// plan before anything else. Another job's coordinator, or the same job's with its journal (and so its job
/// id) lost, is refused as for an unfinished store; with no coordinator at all the head goes on after its
/// wait. Real processes; every wait has a deadline and every check reads the
/// store, the plan binding or an exit status.
final class CompletedStoreTests: XCTestCase {
    var cluster: ClusterHarness!

    override func setUpWithError() throws { cluster = try ClusterHarness(items: 48, shardSize: 8) }
    override func tearDown() { cluster.shutdown() }

    struct JobDidNotFinish: Error {}

    func storedShards() -> [UInt32] { ((try? FeatureStore.open(at: cluster.storeURL).shards) ?? []).map(\.shardID).sorted() }

    /// Runs a whole job with one worker, then stops every process: the store is complete and bound.
    func completeAJob() throws -> (plan: UInt64, shards: [UInt32], ingest: Data) {
        try cluster.startCoordinator()
        try cluster.startHead()
        try cluster.startWorker("w0")
        cluster.waitForCompletion()
        guard cluster.waitUntil("the head ended with the job", { cluster.head?.isRunning == false }) else { throw JobDidNotFinish() }
        XCTAssertEqual(cluster.head?.terminationStatus, 0, cluster.logTails())
        for process in [cluster.coordinator, cluster.head] + Array(cluster.workers.values) { cluster.kill(process) }
        XCTAssertTrue(HeadJobMarker.exists(cluster.storeURL), "the head did not record the finished job")
        let plan = try XCTUnwrap(JobPlanBinding.read(root: cluster.storeURL), "the store is not bound")
        XCTAssertEqual(plan, try cluster.jobPlan().fingerprint)
        let shards = storedShards()
        XCTAssertEqual(shards.count, try cluster.jobPlan().shardCount, "the job is not whole in its store")
        return (plan, shards, try Data(contentsOf: cluster.storeURL.appendingPathComponent("ingest.json")))
    }

    func testACompletedStoreGoesOnAloneAndRefusesACoordinatorThatLostTheJobsJournal() throws {
        let job = try completeAJob()

        // No coordinator at all (a head restarted after its job, say to train): it goes on after its wait,
        // adding nothing and keeping the first run's statistics.
        try cluster.startHead()
        guard cluster.waitUntil("the head went on without a coordinator", timeout: 60, { cluster.head?.isRunning == false }) else { return }
        XCTAssertEqual(cluster.head?.terminationStatus, 0, cluster.logTails())
        XCTAssertEqual(storedShards(), job.shards)
        XCTAssertEqual(try Data(contentsOf: cluster.storeURL.appendingPathComponent("ingest.json")), job.ingest)

        // The same job's coordinator with its journal lost: the journal holds the job's id (JOURNAL.md
        // version 4; the plan grew while the dataset was scanned, so no content fingerprint named it at
        // start), so this is another job, and the store refuses it rather than trust that the dataset is
        // the one its shards came from.
        try FileManager.default.removeItem(at: cluster.directory.appendingPathComponent("journal"))
        try cluster.startCoordinator()
        try cluster.startHead()
        guard cluster.waitUntil("the head refused the journal-less coordinator", timeout: 60, { cluster.head?.isRunning == false }) else { return }
        XCTAssertNotEqual(cluster.head?.terminationStatus, 0, cluster.logTails())
        XCTAssertNotEqual(CoordinatorJournal.existingHeader(at: cluster.journalPath)?.fingerprint, job.plan)
        XCTAssertEqual(try JobPlanBinding.read(root: cluster.storeURL), job.plan)
        XCTAssertEqual(storedShards(), job.shards)
        XCTAssertTrue(HeadJobMarker.exists(cluster.storeURL))
        try cluster.assertExactlyOnce()
    }

    func testACompletedStoreRefusesAnotherJobsCoordinator() throws {
        let job = try completeAJob()
        // Another job on the same store: the WebDataset shard, with a new journal and index.
        cluster.webdataset = true
        for name in ["journal", "dataset.index"] { try FileManager.default.removeItem(at: cluster.directory.appendingPathComponent(name)) }
        try cluster.startCoordinator()
        try cluster.startHead()
        try cluster.startWorker("w0")
        guard cluster.waitUntil("the head refused the store", timeout: 60, { cluster.head?.isRunning == false }) else { return }
        XCTAssertNotEqual(cluster.head?.terminationStatus, 0, cluster.logTails())
        XCTAssertNotEqual(try cluster.jobPlan().fingerprint, job.plan)
        // The head's introduction named its store's plan, so the other job's coordinator did not take the
        // shard ids in it as its own commits (PROTOCOL §8.1 *One job per store*, 3.1).
        let status = try XCTUnwrap(cluster.status(), cluster.logTails())
        XCTAssertEqual(status.shards.committed, 0, "the other job's coordinator took a foreign store's shards\n\(cluster.logTails())")
        XCTAssertEqual(try JobPlanBinding.read(root: cluster.storeURL), job.plan)
        XCTAssertEqual(storedShards(), job.shards, "nothing of the other job reached the store")
        XCTAssertTrue(HeadJobMarker.exists(cluster.storeURL))
    }
}
