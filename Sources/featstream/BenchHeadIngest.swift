import ArgumentParser
import Benchmarks
import Transport

extension Bench {
    /// A worker's data plane without the backbone, against a running head (Benchmarks' `benchmarkHeadIngest`);
    /// Benchmarks/curve_cost.sh runs it against an encrypted and a plaintext head in turn.
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
        @Option(help: "The shard plan (hex) the head's store is bound to: a head credits only workers of its job.") var plan: String
        @OptionGroup var security: SecurityOptions

        func run() throws {
            try runRole("bench head-ingest") {
                let matrix = try loadFeatureMatrix(features)
                let dtype = try parseDType(self.dtype)
                guard let plan = UInt64(plan, radix: 16) else { throw ValidationError("--plan wants hex digits, not \(self.plan)") }
                let (_, data) = try security.resolve(role: "worker", endpoints: [head]).worker(keyName: keyName)
                let result = try benchmarkHeadIngest(head: head, security: data, workerName: keyName, features: matrix.values,
                                                     dimension: matrix.dimension, vectors: vectors, rowsPerBatch: batchRows,
                                                     shardSize: shardSize, dtype: dtype, plan: plan)
                print(try benchJSON(result))
            }
        }
    }
}
