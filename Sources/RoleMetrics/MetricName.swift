/// The metric names every role exports: the one home of these strings. The roles (ClusterRoles),
/// `featstream status`, the tests and `Ops/metrics/grafana-dashboard.json` all use these names.
public enum MetricName {
    /// Counter: images a role handled (the coordinator: items in committed shards; head and workers: per worker).
    public static let images = "featstream_images_total"
    /// Counter: items that ended as dead letters (head: committed; worker: produced).
    public static let deadLetters = "featstream_dead_letters_total"
    /// Gauge: shards in the job's plan (coordinator).
    public static let shardsTotal = "featstream_shards"
    /// Counter: leases granted this run, backups and re-leases included (coordinator).
    public static let shardsLeased = "featstream_shards_leased_total"
    /// Counter: shards committed this run (coordinator); shards committed before a restart are in `progress`.
    public static let shardsCommitted = "featstream_shards_committed_total"
    /// Counter: leases revoked and put back in the queue (coordinator).
    public static let shardsReassigned = "featstream_shards_reassigned_total"
    /// Counter: items found to kill or hang every worker that decodes them, now dead letters (coordinator).
    public static let poisonItems = "featstream_poison_items_total"
    /// Gauge: committed shards over all shards, journal included (coordinator), 0...1.
    public static let progress = "featstream_progress_ratio"
    /// Gauge: seconds to completion at the current rate, -1 when unknown (coordinator; unknown while it scans).
    public static let eta = "featstream_eta_seconds"
    /// Gauge: 1 while the coordinator still scans the dataset (its plan grows: `featstream_shards` counts the
    /// shards offered so far, and progress is over those), else 0 (coordinator).
    public static let scanning = "featstream_scanning"
    /// Gauge: batches a worker has in flight to the head (head, per worker).
    public static let creditsInFlight = "featstream_credits_in_flight"
    /// Gauge: batches a worker may still send before waiting for a credit (worker).
    public static let creditsAvailable = "featstream_credits_available"
    /// Counter: payload bytes of feature batches, by `direction` (in: head, out: worker).
    public static let wireBytes = "featstream_wire_bytes_total"
    /// Gauge: raw f32 bytes over wire bytes of the features received (head).
    public static let compressionRatio = "featstream_compression_ratio"
    /// Gauge: batches queued inside a role.
    public static let queueDepth = "featstream_queue_depth"
    /// Counter: frames refused by a role's socket, by `reason`.
    public static let rejectedFrames = "featstream_rejected_frames_total"
    /// Counter: batches a worker sent beyond its credits (head).
    public static let creditViolations = "featstream_credit_violations_total"
    /// Gauge: the head's training loss, by `split` (train, val).
    public static let trainingLoss = "featstream_training_loss"
    /// Gauge: seconds since the coordinator last heard from a worker (coordinator, per worker and host).
    public static let heartbeatAge = "featstream_heartbeat_age_seconds"
    /// Gauge: a worker's committed images per second since it joined (coordinator, per worker and host).
    public static let workerImagesPerSecond = "featstream_worker_images_per_second"
    /// Gauge: the shard a worker holds a lease on, -1 for none (coordinator, per worker and host).
    public static let workerShard = "featstream_worker_current_shard"
}
