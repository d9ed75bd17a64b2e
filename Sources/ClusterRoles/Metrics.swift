import Foundation
import Prometheus
import RoleMetrics

/// The names live in RoleMetrics (their one public home); this alias keeps the role files' spelling.
typealias MetricName = RoleMetrics.MetricName

/// A role's Prometheus registry and, when a port is given, the HTTP endpoint serving it.
public final class RoleMetricsRegistry: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    let role: String
    /// The endpoint, when metrics are served.
    public private(set) var endpoint: MetricsEndpoint?

    /// A registry for `role`; serves it on `port` when one is given (0 picks a free port).
    public init(role: String, port: Int?) throws {
        self.role = role
        if let port { endpoint = try MetricsEndpoint(registry: registry, port: port) }
    }

    /// Bounds the series peers can create through label values (worker names, hosts, reasons).
    public private(set) lazy var limit = SeriesLimit(registry: registry)

    func counter(_ name: String, _ labels: [(String, String)] = []) -> Counter {
        labels.isEmpty ? registry.makeCounter(descriptor: .named(name), labels: [("role", role)]) : limit.counter(name, [("role", role)] + labels)
    }

    func gauge(_ name: String, _ labels: [(String, String)] = []) -> Gauge {
        labels.isEmpty ? registry.makeGauge(descriptor: .named(name), labels: [("role", role)]) : limit.gauge(name, [("role", role)] + labels)
    }

    /// Counts a rejected frame under its reason.
    func rejected(_ reason: String) {
        counter(MetricName.rejectedFrames, [("reason", reason)]).increment()
    }
}
