import ClusterSessions
import FeatureCodec
import Foundation
import Transport
import WireProtocol

/// What `benchmarkHeadIngest` measured (`featstream bench head-ingest`'s JSON line; Benchmarks/curve_cost.sh
/// reads `vectorsPerSecond` and `wireBytesPerVector`).
public struct HeadIngestBenchmark: Codable, Sendable {
    /// `curve` or `plaintext`: the data socket's security.
    public var mode: String
    /// Vectors sent.
    public var vectors: Int
    /// Feature batches sent.
    public var batches: Int
    /// From the head's first credit to the credit that shows every shard durable.
    public var seconds: Double
    /// `vectors / seconds`.
    public var vectorsPerSecond: Double
    /// Frame bytes per vector, all headers and metadata included.
    public var wireBytesPerVector: Double
    /// The head's credit window (its first credit).
    public var window: Int
}

/// A worker's data plane without the backbone: the frames of `featureBatchFrames`, built beforehand, sent
/// over a real dealer socket (`security`, worker name `workerName`) to the head at `head` as fast as its
/// credits allow, so that the head's own ingest rate over its socket is what is measured. Timed from the
/// head's first credit until its credits show every shard durable.
public func benchmarkHeadIngest(head: String, security: ZMQSecurity, workerName: String, features: [Float], dimension: Int,
                                vectors: Int, rowsPerBatch: Int, shardSize: Int, dtype: FeatureDType, plan: UInt64) throws -> HeadIngestBenchmark {
    let frames = featureBatchFrames(features: features, dimension: dimension, vectors: vectors, rowsPerBatch: rowsPerBatch,
                                    shardSize: shardSize, dtype: dtype)
    let wireBytes = frames.reduce(0) { $0 + $1.count }
    let context = ZMQContext()
    let socket = try ZMQSocket(context, .dealer, highWaterMark: 1000, security: security)
    try socket.connect(head)
    let hello = FrameCodec.encode(.hello(workerID: workerName, host: "bench", pid: UInt32(getpid()),
                                         capabilities: DataHello.capabilities(sent: 0, plan: plan)))
    let helloDeadline = Date().addingTimeInterval(30)
    while try !socket.send([hello]) {
        guard Date() < helloDeadline else { throw BenchmarkError("the head at \(head) did not accept a connection in 30 s") }
        usleep(10_000)
    }
    // Credits: the head's limit is accepted - withheld + window; the first one is the window. When every
    // shard is durable nothing is withheld, so the limit reaches frames + window: that is the end.
    var window: UInt64?
    var limit: UInt64 = 0
    var sent = 0
    var start: Date?
    let deadline = Date().addingTimeInterval(600)
    while window == nil || limit < UInt64(frames.count) + window! {
        guard Date() < deadline else { throw BenchmarkError("the head at \(head) stopped crediting after \(sent) batches") }
        _ = try waitForInput([socket], timeoutMs: sent < frames.count && UInt64(sent) < limit ? 0 : 20)
        while let received = try socket.receive() {
            guard case .credit(_, let granted)? = try? FrameCodec.decode(received[0]) else { continue }
            if window == nil { window = UInt64(granted) }
            limit = max(limit, UInt64(granted))
        }
        if start == nil && window != nil { start = Date() }
        while sent < frames.count && UInt64(sent) < limit, try socket.send([frames[sent]]) { sent += 1 }
    }
    let seconds = Date().timeIntervalSince(start!)
    return HeadIngestBenchmark(mode: security.isCurve ? "curve" : "plaintext", vectors: vectors, batches: frames.count, seconds: seconds,
                               vectorsPerSecond: Double(vectors) / seconds, wireBytesPerVector: Double(wireBytes) / Double(vectors),
                               window: Int(window ?? 0))
}

/// A benchmark that could not run, in one sentence.
public struct BenchmarkError: Error, CustomStringConvertible {
    /// The sentence.
    public let description: String

    /// An error saying `description`.
    public init(_ description: String) { self.description = description }
}
