import Foundation

/// What `featstream run --json` prints once the job is over: one JSON object, the machine-readable form
/// of the run's closing lines. Benchmarks and tests read this, not the text.
public struct RunSummary: Codable, Equatable, Sendable {
    /// Validation accuracy of the trained head.
    public struct Accuracy: Codable, Equatable, Sendable {
        /// Top-1 accuracy, 0...1.
        public var top1: Double
        /// Top-5 accuracy, 0...1.
        public var top5: Double

        /// An accuracy pair.
        public init(top1: Double, top5: Double) {
            self.top1 = top1
            self.top5 = top5
        }
    }

    /// The feature store folder.
    public var store: String
    /// The trained model folder (classifier.onnx, report.html); nil with `--no-train`.
    public var model: String?
    /// Items stored: feature rows plus dead letters.
    public var items: Int
    /// Feature rows stored.
    public var features: Int
    /// Dead letters stored.
    public var deadLetters: Int
    /// Shards committed to the store.
    public var shards: Int
    /// Seconds from starting the roles to the end of extraction (training excluded).
    public var seconds: Double
    /// Items over seconds.
    public var imagesPerSecond: Double
    /// Feature payload bytes the head received, when it recorded them.
    public var wireBytes: Int?
    /// Validation accuracy, when a head was trained and evaluated.
    public var accuracy: Accuracy?
    /// Workers started again after they crashed or stalled (`WorkerRestarts`); poison items cost some.
    public var workerRestarts: Int

    /// A summary with these fields; `imagesPerSecond` is derived.
    public init(store: String, model: String?, features: Int, deadLetters: Int, shards: Int, seconds: Double,
                wireBytes: Int? = nil, accuracy: Accuracy? = nil, workerRestarts: Int = 0) {
        self.store = store
        self.model = model
        self.items = features + deadLetters
        self.features = features
        self.deadLetters = deadLetters
        self.shards = shards
        self.seconds = seconds
        self.imagesPerSecond = seconds > 0 ? Double(items) / seconds : 0
        self.wireBytes = wireBytes
        self.accuracy = accuracy
        self.workerRestarts = workerRestarts
    }

    /// One line of key-sorted JSON, the last line `run --json` prints.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
