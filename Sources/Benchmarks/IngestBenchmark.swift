import ClusterRoles
import ClusterSessions
import FeatureCodec
import FeatureStore
import Foundation
import WireProtocol

/// What `benchmarkIngest` measured (`featstream bench ingest`'s JSON line).
public struct IngestBenchmark: Codable, Sendable {
    /// Vectors ingested.
    public var vectors: Int
    /// Wall seconds from the first frame until every shard was durable.
    public var seconds: Double
    /// `vectors / seconds`.
    public var vectorsPerSecond: Double
    /// CPU time (user + system, every thread of the process) over the same span.
    ///
    /// The wall rate also waits for the disk: every shard is fdatasync'd before it counts, and on a
    /// shared virtual disk that wait swings several-fold between runs. CPU time is the head's own
    /// cost, what one core can ingest when the disk keeps up.
    public var cpuSeconds: Double
    /// Vectors per CPU-second: `vectors / cpuSeconds`.
    public var vectorsPerCPUSecond: Double
    /// Frame bytes per vector, all headers and metadata included.
    public var wireBytesPerVector: Double
    /// Raw f32 bytes per vector over frame bytes per vector.
    public var ratioVersusRawF32: Double
}

/// Head ingest, sockets aside: frame decode, CRC, payload decode, deduplication and atomic shard
/// appends into a fresh store under `directory`, timed until every shard is durable (fdatasync'd by
/// the head's sync thread, as in the real head).
///
/// Frames are built beforehand (`featureBatchFrames`), so only the head's own work is timed.
public func benchmarkIngest(features: [Float], dimension: Int, vectors: Int, rowsPerBatch: Int = 16,
                            shardSize: Int = 1024, dtype: FeatureDType = .f16, codec: CodecID = .shuffleLZ4,
                            directory: URL) throws -> IngestBenchmark {
    precondition(rowsPerBatch > 0 && shardSize % rowsPerBatch == 0)
    let frames = featureBatchFrames(features: features, dimension: dimension, vectors: vectors, rowsPerBatch: rowsPerBatch,
                                    shardSize: shardSize, dtype: dtype, codec: codec)
    let wireBytes = frames.reduce(0) { $0 + $1.count }
    // The real head path: session rules and the store with its sync thread. One in-memory sender with a
    // window wide enough that credits never hold it back (the sockets are not what is measured).
    let store = try HeadStore(url: directory, dtype: dtype)
    var settings = HeadSessionSettings()
    settings.creditWindow = UInt32.max / 2
    var session = HeadSession(epoch: 1, dtype: dtype, dimension: nil, committed: [], plan: 1, settings: settings)
    var committed = 0
    func perform(_ outputs: [HeadOutput]) throws {
        for output in outputs {
            switch output {
            case .effect(.createStore(let dimension)): try store.create(dimension: dimension)
            case let .effect(.append(shardID, attempt, contents)):
                try perform(session.appended(shardID: shardID, stored: try store.append(contents, shardID: shardID, attempt: attempt), now: 0))
            case .effect(.committed): committed += 1
            default: break
            }
        }
    }
    let sender: [UInt8] = [1]
    try perform(session.workerHello(from: sender, name: "bench", batchesSent: nil, plan: 1, now: 0))
    let start = Date()
    let cpuStart = processCPUSeconds()
    for frame in frames {
        guard case .featureBatch(let batch) = try FrameCodec.decode(frame) else { fatalError("not a feature batch") }
        let decoded = Result { try DecodedBatch(decoding: batch, as: dtype) }
        precondition(session.admitBatch(from: sender, now: 0))
        try perform(session.receiveBatch(from: sender, batch: batch, decoded: decoded, now: 0))
        try perform(session.synced(try store.collectDurable(), now: 0))
    }
    try perform(session.synced(try store.collectDurable(wait: true), now: 0))
    let seconds = Date().timeIntervalSince(start)
    let cpuSeconds = processCPUSeconds() - cpuStart
    precondition(committed == (vectors + shardSize - 1) / shardSize, "every shard must commit")
    let perVector = Double(wireBytes) / Double(vectors)
    return IngestBenchmark(vectors: vectors, seconds: seconds, vectorsPerSecond: Double(vectors) / seconds, cpuSeconds: cpuSeconds,
                           vectorsPerCPUSecond: Double(vectors) / cpuSeconds, wireBytesPerVector: perVector,
                           ratioVersusRawF32: Double(dimension * 4) / perVector)
}

/// The feature-batch frames of a job of `vectors` vectors, as workers send them: `rowsPerBatch` rows a
/// batch, `shardSize` items a shard (shard `n` holds vectors `n * shardSize ..<`), rows cycled from
/// `features` (real vectors, `dimension` wide). The vectors cycle, so each distinct batch is compressed
/// once (the workers' HC search is slow), and only the head's own work is left to time.
public func featureBatchFrames(features: [Float], dimension: Int, vectors: Int, rowsPerBatch: Int, shardSize: Int,
                               dtype: FeatureDType, codec: CodecID = .shuffleLZ4) -> [[UInt8]] {
    let available = features.count / dimension
    precondition(available > 0 && rowsPerBatch > 0 && shardSize > 0)
    var frames: [[UInt8]] = []
    var produced = 0
    var payloads: [Int: (payload: [UInt8], rawLength: Int)] = [:]
    while produced < vectors {
        let rows = min(rowsPerBatch, vectors - produced)
        let first = produced % available
        let key = first * (rowsPerBatch + 1) + rows
        if payloads[key] == nil {
            var values = [Float]()
            values.reserveCapacity(rows * dimension)
            for row in 0..<rows {
                let source = (first + row) % available
                values.append(contentsOf: features[(source * dimension)..<((source + 1) * dimension)])
            }
            payloads[key] = values.withUnsafeBufferPointer { FeatureCodec.encode($0, dtype: dtype, codec: codec) }
        }
        let (payload, rawLength) = payloads[key]!
        let shard = produced / shardSize
        let batch = FeatureBatch(
            shardID: UInt32(shard), attempt: 1, shardItemCount: UInt32(min(shardSize, vectors - shard * shardSize)),
            offsets: (0..<rows).map { UInt32((produced + $0) % shardSize) }, indexes: (0..<rows).map { UInt64(produced + $0) },
            labels: (0..<rows).map { Int32(($0 + produced) % 10) },
            keys: (0..<rows).map { "train/\(($0 + produced) % 10)/\(String(format: "%05d", produced + $0)).png" },
            deadLetters: [], dtype: dtype, dimension: UInt32(dimension), codec: codec, rawLength: UInt32(rawLength),
            payload: payload)
        frames.append(FrameCodec.encode(.featureBatch(batch)))
        produced += rows
    }
    return frames
}

/// User plus system CPU seconds of every thread of this process so far.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
