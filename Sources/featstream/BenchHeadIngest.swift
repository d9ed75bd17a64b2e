import ArgumentParser
import FeatureCodec
import Foundation
import NumpyFormat
import Transport
import WireProtocol

extension Bench {
    /// A worker's data plane without the backbone: real feature batches, prepared beforehand, sent to a
    /// running head as fast as its credits allow, so the head's own ingest rate over its socket is what
    /// is measured (Benchmarks/curve_cost.sh runs it against an encrypted and a plaintext head in turn).
    struct HeadIngest: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "head-ingest",
            abstract: "Send real feature batches to a running head as fast as it credits them; one JSON line.")

        @Option(help: "The head's data address.") var head: String
        @Option(help: "features.npy from `featstream extract` ([rows, dimension] float32), cycled.") var features: String
        @Option(help: "Vectors to send.") var vectors = 100_000
        @Option(help: "Rows per feature batch, as workers send them.") var batchRows = 16
        @Option(help: "Items per shard (one fsync'd commit each at the head).") var shardSize = 1024
        @Option(help: "f16 or f32 on the wire.") var dtype = "f16"
        @Option(help: "The worker key to send with (workers/NAME.key in --keys), also the worker's name.") var keyName = "w1"
        @OptionGroup var security: SecurityOptions

        func run() throws {
            try runRole("bench head-ingest") {
                let array = try NumpyArray(contentsOf: URL(fileURLWithPath: features))
                guard array.shape.count == 2 else { throw ValidationError("expected [rows, dimension], got shape \(array.shape)") }
                let frames = makeFrames(array.values, dimension: array.shape[1], dtype: try parseDType(dtype))
                let wireBytes = frames.reduce(0) { $0 + $1.count }
                let (_, data) = try security.resolve(role: "worker", endpoints: [head]).worker(keyName: keyName)
                let context = ZMQContext()
                let socket = try ZMQSocket(context, .dealer, highWaterMark: 1000, security: data)
                try socket.connect(head)
                let hello = FrameCodec.encode(.hello(workerID: keyName, host: "bench", pid: UInt32(getpid()), capabilities: ["sent": "0"]))
                let helloDeadline = Date().addingTimeInterval(30)
                while try !socket.send([hello]) {
                    guard Date() < helloDeadline else { throw ValidationError("the head at \(head) did not accept a connection in 30 s") }
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
                    guard Date() < deadline else { throw ValidationError("the head stopped crediting after \(sent) batches") }
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
                print(String(format: "{\"mode\": \"%@\", \"vectors\": %d, \"batches\": %d, \"seconds\": %.3f, \"vectorsPerSecond\": %.0f, "
                             + "\"wireBytesPerVector\": %.1f, \"window\": %d}",
                             data.isCurve ? "curve" : "plaintext", vectors, frames.count, seconds, Double(vectors) / seconds,
                             Double(wireBytes) / Double(vectors), Int(window ?? 0)))
            }
        }

        /// Every batch's frame, rows cycled from `values`; each distinct payload is compressed once.
        private func makeFrames(_ values: [Float], dimension: Int, dtype: FeatureDTypeCode) -> [[UInt8]] {
            let available = values.count / dimension
            var payloads: [Int: (payload: [UInt8], rawLength: Int)] = [:]
            var frames: [[UInt8]] = []
            var produced = 0
            while produced < vectors {
                let rows = min(batchRows, vectors - produced)
                let first = produced % available
                let key = first * (batchRows + 1) + rows
                if payloads[key] == nil {
                    var batchValues = [Float]()
                    for row in 0..<rows {
                        let source = (first + row) % available
                        batchValues.append(contentsOf: values[(source * dimension)..<((source + 1) * dimension)])
                    }
                    payloads[key] = batchValues.withUnsafeBufferPointer { FeatureCodec.encode($0, dtype: dtype, codec: .shuffleLZ4) }
                }
                let (payload, rawLength) = payloads[key]!
                let shard = produced / shardSize
                let batch = FeatureBatch(
                    shardID: UInt32(shard), attempt: 1, shardItemCount: UInt32(min(shardSize, vectors - shard * shardSize)),
                    offsets: (0..<rows).map { UInt32((produced + $0) % shardSize) }, indexes: (0..<rows).map { UInt64(produced + $0) },
                    labels: (0..<rows).map { Int32(($0 + produced) % 10) },
                    keys: (0..<rows).map { "train/\(($0 + produced) % 10)/\(String(format: "%05d", produced + $0)).png" },
                    deadLetters: [], dtype: dtype, dimension: UInt32(dimension), codec: .shuffleLZ4, rawLength: UInt32(rawLength),
                    payload: payload)
                frames.append(FrameCodec.encode(.featureBatch(batch)))
                produced += rows
            }
            return frames
        }
    }
}
