import ArgumentParser
import Foundation
import RoleMetrics

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A live table of a job: per worker host, img/s, current shard and last heartbeat; progress and ETA.",
        discussion: "ADDR is the coordinator's metrics address, e.g. http://coordhost:9100 (see --metrics-port).")

    @Argument(help: "The coordinator's metrics address, http://host:port.") var address: String
    @Option(help: "Refresh every this many seconds; 0 prints once.") var every = 0.0

    func run() throws {
        try runRole("status") {
            repeat {
                let samples = MetricSample.parse(try fetchMetrics(address))
                print(render(samples))
                if every > 0 { Thread.sleep(forTimeInterval: every) }
            } while every > 0
        }
    }

    func render(_ samples: [MetricSample]) -> String {
        func value(_ name: String) -> Double? { samples.first { $0.name == name }?.value }
        var workers: [String: (host: String, rate: Double, shard: Double, age: Double)] = [:]
        for sample in samples {
            guard let worker = sample.labels["worker"] else { continue }
            var row = workers[worker] ?? (sample.labels["host"] ?? "?", 0, -1, 0)
            switch sample.name {
            case "featstream_worker_images_per_second": row.rate = sample.value
            case "featstream_worker_current_shard": row.shard = sample.value
            case "featstream_heartbeat_age_seconds": row.age = sample.value
            default: break
            }
            workers[worker] = row
        }
        var lines = [String(format: "%-16@ %-20@ %9@ %7@ %10@", "worker" as NSString, "host" as NSString,
                            "img/s" as NSString, "shard" as NSString, "heartbeat" as NSString)]
        for (worker, row) in workers.sorted(by: { $0.key < $1.key }) {
            lines.append(String(format: "%-16@ %-20@ %9.1f %7@ %8.1fs ago", worker as NSString, row.host as NSString, row.rate,
                                (row.shard < 0 ? "-" : String(Int(row.shard))) as NSString, row.age))
        }
        let progress = value("featstream_progress_ratio") ?? 0
        let eta = value("featstream_eta_seconds") ?? -1
        let committed = Int(value("featstream_shards_committed_total") ?? 0)
        let shards = Int(value("featstream_shards") ?? 0)
        lines.append(String(format: "job: %d/%d shards (%.1f%%), %d images, ETA %@", committed, shards, 100 * progress,
                            Int(value("featstream_images_total") ?? 0), (eta < 0 ? "unknown" : String(format: "%.0f s", eta)) as NSString))
        return lines.joined(separator: "\n")
    }
}
