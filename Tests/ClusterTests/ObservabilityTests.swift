import FeatStreamTestSupport
import Foundation
import RoleMetrics
import Transport
import XCTest

/// Every role serves Prometheus metrics, and `featstream status` turns the coordinator's into a live table.
final class ObservabilityTests: XCTestCase {
    var cluster: ClusterHarness!

    // Small shards (100 of them) keep the job running while the test reads it: once the job is done, the
    // workers leave and the coordinator drops their series.
    override func setUpWithError() throws { cluster = try ClusterHarness(items: 200, shardSize: 2) }
    override func tearDown() { cluster.shutdown() }

    func testMetricsEndpointsAndStatusTable() throws {
        let ports = try (0..<3).map { _ in try freeLocalPort() }
        try cluster.startCoordinator(extra: ["--metrics-port", String(ports[0])])
        try cluster.startHead(extra: ["--metrics-port", String(ports[1])])
        try cluster.startWorker("w0", extra: ["--metrics-port", String(ports[2])])
        try cluster.startWorker("w1")
        cluster.waitForCommittedShards(4)
        // w0 (the worker with a metrics port of this test's choosing) may start last on a busy machine.
        // A worker counts a batch's images when extracted and its bytes when sent: wait for both.
        cluster.waitUntil("w0 extracted and sent images") {
            let samples = (try? fetchMetrics("http://127.0.0.1:\(ports[2])")).map(MetricSample.parse) ?? []
            return (samples.first { $0.name == "featstream_images_total" }?.value ?? 0) > 0
                && samples.contains { $0.name == "featstream_wire_bytes_total" && $0.labels["direction"] == "out" }
        }

        // The coordinator publishes its per-worker series on its own clock: wait until both are in the scrape.
        cluster.waitUntil("the coordinator publishes both workers") {
            let samples = (try? fetchMetrics("http://127.0.0.1:\(ports[0])")).map(MetricSample.parse) ?? []
            return ["w0", "w1"].allSatisfy { name in samples.contains { $0.name == "featstream_heartbeat_age_seconds" && $0.labels["worker"] == name } }
        }
        let status = try runFeatstream(["status", "http://127.0.0.1:\(ports[0])"])
        XCTAssertEqual(status.status, 0, status.output)
        XCTAssertTrue(status.output.contains("w0") && status.output.contains("w1"), status.output)
        XCTAssertTrue(status.output.contains("job: "), status.output)

        // The store shows a shard once its record is appended; the coordinator counts it once the head's
        // sync is done and the acknowledgement has arrived, a few milliseconds later.
        var coordinator: [MetricSample] = []
        let deadline = Date().addingTimeInterval(10)
        repeat {
            coordinator = MetricSample.parse(try fetchMetrics("http://127.0.0.1:\(ports[0])"))
            if (coordinator.first { $0.name == "featstream_shards_committed_total" }?.value ?? 0) >= 4 { break }
            Thread.sleep(forTimeInterval: 0.05)
        } while Date() < deadline
        XCTAssertEqual(coordinator.first { $0.name == "featstream_shards" }?.value, Double(cluster.items / cluster.shardSize))
        XCTAssertGreaterThanOrEqual(coordinator.first { $0.name == "featstream_shards_committed_total" }?.value ?? 0, 4)
        XCTAssertGreaterThan(coordinator.first { $0.name == "featstream_shards_leased_total" }?.value ?? 0, 0)
        XCTAssertTrue(coordinator.contains { $0.name == "featstream_heartbeat_age_seconds" && $0.labels["worker"] == "w0" })
        let head = MetricSample.parse(try fetchMetrics("http://127.0.0.1:\(ports[1])"))
        XCTAssertGreaterThan(head.filter { $0.name == "featstream_images_total" }.map(\.value).reduce(0, +), 0)
        XCTAssertGreaterThan(head.first { $0.name == "featstream_compression_ratio" }?.value ?? 0, 2)
        XCTAssertTrue(head.contains { $0.name == "featstream_credits_in_flight" })
        let worker = MetricSample.parse(try fetchMetrics("http://127.0.0.1:\(ports[2])"))
        XCTAssertGreaterThan(worker.first { $0.name == "featstream_images_total" }?.value ?? 0, 0)
        XCTAssertTrue(worker.contains { $0.name == "featstream_wire_bytes_total" && $0.labels["direction"] == "out" })

        cluster.waitForCompletion()
        try cluster.assertExactlyOnce()
    }
}
