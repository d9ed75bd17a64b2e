import Foundation
import Prometheus

/// Caps how many labelled series each metric name may have in a registry, evicting the series used
/// least recently when a new one would exceed the cap.
///
/// Peers choose label values (worker names, hosts), so without a cap a stream of hellos with fresh
/// names would grow the registry, and every scrape, without bound. Series without labels beyond the
/// role are never evicted. Thread-safe.
public final class SeriesLimit: @unchecked Sendable {
    /// Series kept per metric name.
    public let maxSeriesPerMetric: Int
    private let registry: PrometheusCollectorRegistry
    private let lock = NSLock()
    private var clock: UInt64 = 0
    private var series: [String: [[String]: Entry]] = [:]
    /// Series evicted so far.
    public private(set) var evicted = 0

    private enum Metric {
        case counter(Counter)
        case gauge(Gauge)
    }

    private struct Entry {
        var metric: Metric
        var lastUsed: UInt64
    }

    /// A limit over `registry`; `maxSeriesPerMetric` defaults to `FEATSTREAM_MAX_SERIES` or 256.
    public init(registry: PrometheusCollectorRegistry, maxSeriesPerMetric: Int? = nil) {
        self.registry = registry
        let fromEnvironment = ProcessInfo.processInfo.environment["FEATSTREAM_MAX_SERIES"].flatMap(Int.init)
        self.maxSeriesPerMetric = max(1, maxSeriesPerMetric ?? fromEnvironment ?? 256)
    }

    /// The counter `name{labels}`, created (and possibly evicting the least recently used series) if new.
    public func counter(_ name: String, _ labels: [(String, String)]) -> Counter {
        let made = metric(name, labels) { .counter(registry.makeCounter(descriptor: .named(name), labels: labels)) }
        if case .counter(let counter) = made { return counter }
        return registry.makeCounter(descriptor: .named(name), labels: labels)
    }

    /// The gauge `name{labels}`, created (and possibly evicting the least recently used series) if new.
    public func gauge(_ name: String, _ labels: [(String, String)]) -> Gauge {
        let made = metric(name, labels) { .gauge(registry.makeGauge(descriptor: .named(name), labels: labels)) }
        if case .gauge(let gauge) = made { return gauge }
        return registry.makeGauge(descriptor: .named(name), labels: labels)
    }

    /// Series currently kept under `name`.
    public func count(_ name: String) -> Int { lock.withLock { series[name]?.count ?? 0 } }

    /// Drops every series whose labels include `label` (a peer that is gone), so scrapes stop showing its
    /// last values as if it were alive.
    public func remove(where label: (String, String)) {
        lock.withLock {
            for (name, table) in series {
                for (key, entry) in table where stride(from: 0, to: key.count - 1, by: 2).contains(where: { key[$0] == label.0 && key[$0 + 1] == label.1 }) {
                    switch entry.metric {
                    case .counter(let counter): registry.unregisterCounter(counter)
                    case .gauge(let gauge): registry.unregisterGauge(gauge)
                    }
                    series[name]![key] = nil
                }
            }
        }
    }

    private func metric(_ name: String, _ labels: [(String, String)], make: () -> Metric) -> Metric {
        let key = labels.flatMap { [$0.0, $0.1] }
        return lock.withLock {
            clock += 1
            if var entry = series[name]?[key] {
                entry.lastUsed = clock
                series[name]![key] = entry
                return entry.metric
            }
            var table = series[name] ?? [:]
            while table.count >= maxSeriesPerMetric, let oldest = table.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                switch oldest.value.metric {
                case .counter(let counter): registry.unregisterCounter(counter)
                case .gauge(let gauge): registry.unregisterGauge(gauge)
                }
                table[oldest.key] = nil
                evicted += 1
            }
            let made = make()
            table[key] = Entry(metric: made, lastUsed: clock)
            series[name] = table
            return made
        }
    }
}

extension MetricNameDescriptor {
    /// A descriptor whose name is `name` as written (our names are whole, `featstream_…_total`; their meaning
    /// is documented in `MetricName`, not repeated as HELP text).
    public static func named(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: "")
    }
}
