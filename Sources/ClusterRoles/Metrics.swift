import Foundation
import Prometheus
import RoleMetrics

/// The metric names every role exports; `Ops/metrics/grafana-dashboard.json` is built on them.
enum MetricName {
    static let images = "featstream_images_total"
    static let deadLetters = "featstream_dead_letters_total"
    static let shardsTotal = "featstream_shards"
    static let shardsLeased = "featstream_shards_leased_total"
    static let shardsCommitted = "featstream_shards_committed_total"
    static let shardsReassigned = "featstream_shards_reassigned_total"
    static let progress = "featstream_progress_ratio"
    static let eta = "featstream_eta_seconds"
    static let creditsInFlight = "featstream_credits_in_flight"
    static let creditsAvailable = "featstream_credits_available"
    static let wireBytes = "featstream_wire_bytes_total"
    static let compressionRatio = "featstream_compression_ratio"
    static let queueDepth = "featstream_queue_depth"
    static let rejectedFrames = "featstream_rejected_frames_total"
    static let creditViolations = "featstream_credit_violations_total"
    static let trainingLoss = "featstream_training_loss"
    static let heartbeatAge = "featstream_heartbeat_age_seconds"
    static let workerImagesPerSecond = "featstream_worker_images_per_second"
    static let workerShard = "featstream_worker_current_shard"
}

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
        labels.isEmpty ? registry.makeCounter(name: name, labels: [("role", role)]) : limit.counter(name, [("role", role)] + labels)
    }

    func gauge(_ name: String, _ labels: [(String, String)] = []) -> Gauge {
        labels.isEmpty ? registry.makeGauge(name: name, labels: [("role", role)]) : limit.gauge(name, [("role", role)] + labels)
    }

    /// Counts a rejected frame under its reason.
    func rejected(_ reason: String) {
        counter(MetricName.rejectedFrames, [("reason", reason)]).increment()
    }
}
