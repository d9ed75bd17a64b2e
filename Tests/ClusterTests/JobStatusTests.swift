import RoleMetrics
import XCTest

/// `featstream status --json`'s model: what the coordinator's metrics say, counted the way the fields promise.
final class JobStatusTests: XCTestCase {
    func testStatusFromCoordinatorMetrics() throws {
        let text = """
        # TYPE featstream_shards gauge
        \(MetricName.shardsTotal){role="coordinator"} 13
        \(MetricName.shardsCommitted){role="coordinator"} 2
        \(MetricName.progress){role="coordinator"} 0.3846
        \(MetricName.shardsLeased){role="coordinator"} 7
        \(MetricName.shardsReassigned){role="coordinator"} 1
        \(MetricName.images){role="coordinator"} 32
        \(MetricName.eta){role="coordinator"} -1
        \(MetricName.rejectedFrames){role="coordinator",reason="bad_checksum"} 3
        \(MetricName.rejectedFrames){role="coordinator",reason="curve_denied"} 1
        \(MetricName.heartbeatAge){role="coordinator",worker="w0",host="a"} 0.25
        \(MetricName.workerShard){role="coordinator",worker="w0",host="a"} 6
        \(MetricName.workerImagesPerSecond){role="coordinator",worker="w0",host="a"} 12.5
        \(MetricName.heartbeatAge){role="coordinator",worker="w1",host="b"} 1.5
        \(MetricName.workerShard){role="coordinator",worker="w1",host="b"} -1
        \(MetricName.workerImagesPerSecond){role="coordinator",worker="w1",host="b"} 0
        """
        let store = JobStatus.Store(path: "/s", shards: 5, rows: 78, deadLetters: 2)
        let status = JobStatus(coordinator: "http://c:9100", samples: MetricSample.parse(text), store: store)
        // The progress gauge counts the journal's shards too: 5 of 13 committed, more than this run's counter.
        XCTAssertEqual(status.shards, JobStatus.Shards(total: 13, committed: 5, leased: 1, pending: 7, leasesGranted: 7, reassigned: 1))
        XCTAssertNil(status.etaSeconds)
        XCTAssertEqual(status.images, 32)
        XCTAssertEqual(status.rejectedFrames, ["bad_checksum": 3, "curve_denied": 1])
        XCTAssertEqual(status.workers.map(\.name), ["w0", "w1"])
        XCTAssertEqual(status.workers[0].shard, 6)
        XCTAssertNil(status.workers[1].shard)
        XCTAssertEqual(status.workers[1].heartbeatAgeSeconds, 1.5)
        XCTAssertEqual(status.workers[1].host, "b")
        XCTAssertEqual(status.deadLetters, 2)
        // One line of JSON that decodes to the same value.
        let json = try status.json()
        XCTAssertFalse(json.contains("\n"))
        XCTAssertEqual(try JSONDecoder().decode(JobStatus.self, from: Data(json.utf8)), status)
    }

    func testEmptyMetricsGiveAnEmptyJob() {
        let status = JobStatus(coordinator: "x", samples: [])
        XCTAssertEqual(status.shards, JobStatus.Shards(total: 0, committed: 0, leased: 0, pending: 0, leasesGranted: 0, reassigned: 0))
        XCTAssertEqual(status.workers, [])
    }
}
