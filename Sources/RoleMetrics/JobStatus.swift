import Foundation

/// What `featstream status --json` prints: a job's state as the coordinator's metrics (and, when given,
/// the head's store) show it. The one machine-readable status; tests, Slurm scripts and benchmarks read
/// this instead of log lines. Fields are stable names; an absent optional means "not known here".
public struct JobStatus: Codable, Equatable, Sendable {
    /// Shard counts. `committed + leased + pending == total`.
    public struct Shards: Codable, Equatable, Sendable {
        /// Shards in the job's plan.
        public var total: Int
        /// Shards committed, those in the journal before a restart included.
        public var committed: Int
        /// Shards some worker holds a lease on now (distinct shards, backups counted once).
        public var leased: Int
        /// Shards neither committed nor leased.
        public var pending: Int
        /// Leases granted by this coordinator run (re-leases and backups included).
        public var leasesGranted: Int
        /// Leases revoked and put back in the queue by this coordinator run.
        public var reassigned: Int

        /// Shard counts as given.
        public init(total: Int, committed: Int, leased: Int, pending: Int, leasesGranted: Int, reassigned: Int) {
            self.total = total
            self.committed = committed
            self.leased = leased
            self.pending = pending
            self.leasesGranted = leasesGranted
            self.reassigned = reassigned
        }
    }

    /// One worker the coordinator tracks now (a worker it declared dead is no longer listed).
    public struct Worker: Codable, Equatable, Sendable {
        /// The worker's name (`--name`).
        public var name: String
        /// The host it said hello from.
        public var host: String
        /// Seconds since the coordinator last heard from it, as of the coordinator's last metrics update.
        public var heartbeatAgeSeconds: Double?
        /// The shard it holds a lease on, nil for none.
        public var shard: Int?
        /// Committed images per second since it joined.
        public var imagesPerSecond: Double
    }

    /// The head's store, read-only, when `--store` was given.
    public struct Store: Codable, Equatable, Sendable {
        /// The store folder.
        public var path: String
        /// Shards committed to the store.
        public var shards: Int
        /// Feature rows stored.
        public var rows: Int
        /// Dead letters stored.
        public var deadLetters: Int
        /// Problems met while reading it (an unreadable shard, say); empty when it is whole.
        public var problems: [String]

        /// A store summary with these counts.
        public init(path: String, shards: Int, rows: Int, deadLetters: Int, problems: [String] = []) {
            self.path = path
            self.shards = shards
            self.rows = rows
            self.deadLetters = deadLetters
            self.problems = problems
        }

        /// One line of key-sorted JSON: what `store inspect --json` prints.
        public func json() throws -> String { try JobStatus.encode(self) }
    }

    /// The coordinator's metrics address that was read.
    public var coordinator: String
    /// Shard counts.
    public var shards: Shards
    /// Committed shards over all shards, 0...1.
    public var progress: Double
    /// Seconds to completion at the current rate; nil when unknown.
    public var etaSeconds: Double?
    /// Whether the coordinator still scans the dataset: the total is the shards offered so far.
    public var scanning: Bool
    /// Items in shards committed by this coordinator run.
    public var images: Int
    /// Frames the coordinator refused, by reason (empty when none).
    public var rejectedFrames: [String: Int]
    /// The workers, by name.
    public var workers: [Worker]
    /// The head's store, when read.
    public var store: Store?
    /// Dead letters in the store, when the store was read (the coordinator does not see them).
    public var deadLetters: Int? { store?.deadLetters }

    /// The status the coordinator's metric samples describe (`MetricSample.parse` of its `/metrics`).
    public init(coordinator: String, samples: [MetricSample], store: Store? = nil) {
        func value(_ name: String) -> Double? { samples.first { $0.name == name && $0.labels["worker"] == nil }?.value }
        func count(_ name: String) -> Int { Int(value(name) ?? 0) }
        var workers: [String: Worker] = [:]
        for sample in samples {
            guard let name = sample.labels["worker"],
                  [MetricName.heartbeatAge, MetricName.workerShard, MetricName.workerImagesPerSecond].contains(sample.name) else { continue }
            var worker = workers[name] ?? Worker(name: name, host: sample.labels["host"] ?? "", heartbeatAgeSeconds: nil, shard: nil,
                                                 imagesPerSecond: 0)
            switch sample.name {
            case MetricName.heartbeatAge: worker.heartbeatAgeSeconds = sample.value
            case MetricName.workerShard: worker.shard = sample.value < 0 ? nil : Int(sample.value)
            default: worker.imagesPerSecond = sample.value
            }
            workers[name] = worker
        }
        let total = count(MetricName.shardsTotal)
        progress = value(MetricName.progress) ?? 0
        // The progress gauge counts the journal's shards but is refreshed once a heartbeat; the counter is live.
        let committed = min(total, max(count(MetricName.shardsCommitted), Int((progress * Double(total)).rounded())))
        let leased = min(total - committed, Set(workers.values.compactMap(\.shard)).count)
        shards = Shards(total: total, committed: committed, leased: leased, pending: total - committed - leased,
                        leasesGranted: count(MetricName.shardsLeased), reassigned: count(MetricName.shardsReassigned))
        self.coordinator = coordinator
        etaSeconds = value(MetricName.eta).flatMap { $0 < 0 ? nil : $0 }
        scanning = (value(MetricName.scanning) ?? 0) > 0
        images = count(MetricName.images)
        rejectedFrames = Dictionary(samples.filter { $0.name == MetricName.rejectedFrames }
            .map { ($0.labels["reason"] ?? "unknown", Int($0.value)) }, uniquingKeysWith: +)
        self.workers = workers.values.sorted { $0.name < $1.name }
        self.store = store
    }

    /// One line of key-sorted JSON: what `status --json` prints (with `--every`, one line per refresh).
    public func json() throws -> String { try Self.encode(self) }

    static func encode(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
