import ArgumentParser
import FeatureStore
import Foundation
import RoleMetrics

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A job's state: per worker host, img/s, current shard and last heartbeat; shards, progress and ETA.",
        discussion: """
        ADDR is the coordinator's metrics address, e.g. http://coordhost:9100 (see --metrics-port); --run OUT
        reads it from a running `featstream run --out OUT`. --json prints one JSON object (RoleMetrics'
        JobStatus: shards total/committed/leased/pending, images, rejected frames, workers with heartbeat age,
        and with --store the store's rows and dead letters), for scripts and tests.
        """)

    @Argument(help: "The coordinator's metrics address, http://host:port.") var address: String?
    @Option(name: .customLong("run"), help: "The output folder of a running `featstream run`: its run.json names the coordinator's metrics port.")
    var runFolder: String?
    @Option(help: "The head's store folder, read read-only (rows, dead letters).") var store: String?
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    @Option(help: "Refresh every this many seconds; 0 prints once.") var every = 0.0

    func validate() throws {
        guard (address == nil) != (runFolder == nil) else { throw ValidationError("give the coordinator's metrics address or --run OUT, not both") }
    }

    func run() throws {
        try runRole("status") {
            let url = try coordinatorURL()
            let storePath = store ?? runFolder.map { URL(fileURLWithPath: $0).appendingPathComponent("store").path }
            repeat {
                do {
                    let status = JobStatus(coordinator: url, samples: MetricSample.parse(try fetchMetrics(url)),
                                           store: storePath.flatMap(Self.storeStatus))
                    print(json ? try status.json() : render(status))
                    fflush(nil)  // every open output stream: one line per refresh reaches a pipe as it is printed
                } catch where every > 0 {
                    // Refreshing: a coordinator not listening yet (or restarting) is retried, not fatal.
                    FileHandle.standardError.write(Data("status: \(error)\n".utf8))
                }
                if every > 0 { Thread.sleep(forTimeInterval: every) }
            } while every > 0
        }
    }

    private func coordinatorURL() throws -> String {
        if let address { return address }
        let file = URL(fileURLWithPath: runFolder!).appendingPathComponent("run.json")
        guard let data = try? Data(contentsOf: file), let state = try? JSONDecoder().decode(RunState.self, from: data),
              let port = state.metricsPorts["coordinator"] else {
            throw ValidationError("\(file.path): no running `featstream run` there (no readable run.json)")
        }
        return "http://127.0.0.1:\(port)"
    }

    /// The store's counts, or nil before the head has created it.
    static func storeStatus(_ path: String) -> JobStatus.Store? {
        guard let store = try? FeatureStore.open(at: URL(fileURLWithPath: path)) else { return nil }
        let summary = store.inspect()
        return JobStatus.Store(path: path, shards: summary.shards, rows: summary.rows, deadLetters: summary.deadLetters, problems: summary.problems)
    }

    func render(_ status: JobStatus) -> String {
        var lines = [String(format: "%-16@ %-20@ %9@ %7@ %10@", "worker" as NSString, "host" as NSString,
                            "img/s" as NSString, "shard" as NSString, "heartbeat" as NSString)]
        for worker in status.workers {
            lines.append(String(format: "%-16@ %-20@ %9.1f %7@ %8.1fs ago", worker.name as NSString, worker.host as NSString,
                                worker.imagesPerSecond, (worker.shard.map(String.init) ?? "-") as NSString, worker.heartbeatAgeSeconds ?? 0))
        }
        let eta = status.scanning ? "unknown (the dataset is still being scanned)" : status.etaSeconds.map { String(format: "%.0f s", $0) } ?? "unknown"
        lines.append(String(format: "job: %d/%d%@ shards (%.1f%%; %d leased, %d pending), %d images, ETA %@", status.shards.committed,
                            status.shards.total, (status.scanning ? "+" : "") as NSString, 100 * status.progress, status.shards.leased, status.shards.pending, status.images,
                            eta as NSString))
        if let store = status.store {
            lines.append("store: \(store.rows) rows, \(store.deadLetters) dead letters in \(store.shards) shards (\(store.path))")
        }
        return lines.joined(separator: "\n")
    }
}
