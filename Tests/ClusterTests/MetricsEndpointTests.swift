import Foundation
import Prometheus
import RoleMetrics
import XCTest

/// The metrics endpoint over real TCP: loopback by default, concurrent scrapes, and clients that hold a
/// connection open without sending (slowloris) do not delay anyone else.
final class MetricsEndpointTests: XCTestCase {
    func connect(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        XCTAssertTrue(ok, "connect errno \(errno)")
        return fd
    }

    func testLoopbackByDefaultAndSlowClientsDoNotDelayScrapes() throws {
        let registry = PrometheusCollectorRegistry()
        registry.makeCounter(descriptor: .named("featstream_test_total")).increment(by: Int64(3))
        let endpoint = try MetricsEndpoint(registry: registry, port: 0)
        XCTAssertEqual(endpoint.host, "127.0.0.1")
        // Ten clients that connect and send nothing, and ten that send half a request head.
        var idle: [Int32] = (0..<10).map { _ in connect(endpoint.port) }
        for _ in 0..<10 {
            let fd = connect(endpoint.port)
            _ = "GET /metrics HTTP/1.1\r\nHost: x".withCString { write(fd, $0, strlen($0)) }
            idle.append(fd)
        }
        defer { idle.forEach { close($0) } }
        var worst = 0.0
        for _ in 0..<5 {
            let start = Date()
            let text = try fetchMetrics("http://127.0.0.1:\(endpoint.port)", timeoutSeconds: 2)
            worst = max(worst, Date().timeIntervalSince(start))
            XCTAssertEqual(MetricSample.parse(text).first { $0.name == "featstream_test_total" }?.value, 3)
        }
        XCTAssertLessThan(worst, 0.1, "a scrape waited \(Int(worst * 1000)) ms behind idle connections")
        // The idle connections are closed at their deadline, freeing their slots.
        let deadline = Date().addingTimeInterval(MetricsEndpoint.connectionDeadline + 3)
        while endpoint.activeConnections > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertEqual(endpoint.activeConnections, 0)
    }

    func testSeriesLimitEvictsTheLeastRecentlyUsed() {
        let registry = PrometheusCollectorRegistry()
        let limit = SeriesLimit(registry: registry, maxSeriesPerMetric: 3)
        for name in ["a", "b", "c"] { limit.gauge("g", [("worker", name)]).set(Double(1)) }
        limit.gauge("g", [("worker", "a")]).set(Double(2))  // a is now the most recent
        limit.gauge("g", [("worker", "d")]).set(Double(1))  // evicts b, the least recently used
        let workers = Set(MetricSample.parse(String(decoding: registry.emitToBuffer(), as: UTF8.self)).compactMap { $0.labels["worker"] })
        XCTAssertEqual(workers, ["a", "c", "d"])
        XCTAssertEqual(limit.count("g"), 3)
        for index in 0..<1000 { limit.counter("c", [("worker", "w\(index)")]).increment() }
        XCTAssertEqual(limit.count("c"), 3)
        XCTAssertEqual(limit.evicted, 1 + 997)
        // A worker that is gone leaves the scrape with every series that names it.
        limit.remove(where: ("worker", "a"))
        let after = MetricSample.parse(String(decoding: registry.emitToBuffer(), as: UTF8.self))
        XCTAssertEqual(Set(after.filter { $0.name == "g" }.compactMap { $0.labels["worker"] }), ["c", "d"])
        XCTAssertEqual(limit.count("g"), 2)
    }
}
