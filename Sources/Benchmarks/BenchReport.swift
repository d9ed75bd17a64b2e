import Backbone
import Extraction
import Foundation
import WireProtocol

/// Benchmark code lives here, out of the product modules; `featstream bench` parses its flags and
/// calls these functions, and every result prints as one line of JSON through `Codable`
/// (`benchJSON`), which the scripts in Benchmarks/ read.

/// One line of key-sorted JSON for a benchmark result: the last line every `featstream bench` prints.
public func benchJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// What `benchmarkBackbone` measured.
public struct BackboneBenchmark: Codable, Sendable {
    /// The model config's name.
    public var model: String
    /// fp32 or int8.
    public var precision: String
    /// Images per engine run.
    public var batch: Int
    /// oneDNN threads.
    public var threads: Int
    /// Images run in the timed span.
    public var images: Int
    /// The timed span, after warm-up.
    public var seconds: Double
    /// `images / seconds`.
    public var imagesPerSecond: Double
}

/// Backbone-only images/s on a fixed input for about `seconds`, after three untimed warm-up runs (the
/// first runs are 1.3-2x slower: JIT, page faults). `warn` is told about slow reference kernels.
public func benchmarkBackbone(config: ModelConfig, batch: Int, threads: Int, seconds: Double, allowReferenceKernels: Bool,
                              warn: (String) -> Void) throws -> BackboneBenchmark {
    let engine = try BackboneEngine(modelPath: config.onnxPath, input: config.input.name,
                                    outputs: [config.featureNode], maxBatch: batch, threads: threads,
                                    allowReferenceKernels: allowReferenceKernels, calibration: try config.int8Calibration())
    if !engine.referenceKernels.isEmpty { warn("reference kernels in use: \(engine.referenceKernels.joined(separator: "; "))") }
    // Real pixel statistics do not matter for speed, but denormals would; use a plain value.
    let input = [Float](repeating: 0.5, count: batch * engine.imageElementCount)
    for _ in 0..<3 { _ = try input.withUnsafeBufferPointer { try engine.run($0, batch: batch) } }
    var images = 0
    let start = Date()
    while Date().timeIntervalSince(start) < seconds {
        _ = try input.withUnsafeBufferPointer { try engine.run($0, batch: batch) }
        images += batch
    }
    let elapsed = Date().timeIntervalSince(start)
    return BackboneBenchmark(model: config.name, precision: config.precisionName, batch: batch, threads: threads, images: images,
                             seconds: elapsed, imagesPerSecond: Double(images) / elapsed)
}

/// What `featstream bench train` prints: the head's accuracy and training time, with the names
/// Benchmarks/head_vs_sklearn.py, accuracy.py and int8_accuracy.py read.
public struct TrainingBenchmarkReport: Codable, Sendable {
    /// `featstream` (fixed L2) or `featstream-default` (L2 chosen on a held-out tenth, refit).
    public var impl: String
    /// Top-1 on the test set.
    public var accuracy: Double
    /// Training seconds (the fastest of the repeats).
    public var seconds: Double
    /// The L2 strength used or chosen.
    public var l2: Double
    /// scikit-learn's C for the same objective, `1 / (l2 * train rows)` (fixed L2 only).
    public var c: Double?
    /// L-BFGS iterations of the chosen fit (default head only).
    public var iterations: Int?
    /// Top-1 on the held-out tenth that chose L2 (default head only).
    public var validationTop1: Double?
    /// Training rows.
    public var trainRows: Int
    /// Test rows.
    public var testRows: Int

    enum CodingKeys: String, CodingKey {
        case impl, accuracy, seconds, l2, c = "C", iterations, validationTop1 = "validation_top1", trainRows = "train_rows", testRows = "test_rows"
    }

    /// A report with these fields.
    public init(impl: String, accuracy: Double, seconds: Double, l2: Double, c: Double? = nil, iterations: Int? = nil,
                validationTop1: Double? = nil, trainRows: Int, testRows: Int) {
        self.impl = impl
        self.accuracy = accuracy
        self.seconds = seconds
        self.l2 = l2
        self.c = c
        self.iterations = iterations
        self.validationTop1 = validationTop1
        self.trainRows = trainRows
        self.testRows = testRows
    }
}

/// What `featstream bench train --online-shard-rows` prints: top-1 of the online pass without and with
/// its replay reservoir (`benchmarkOnlinePass`).
public struct OnlinePassBenchmarkReport: Codable, Sendable {
    /// Always `featstream-online`.
    public var impl = "featstream-online"
    /// Rows a shard of the pass.
    public var shardRows: Int
    /// Top-1 on the test set, without replay.
    public var accuracyWithoutReplay: Double
    /// Top-1 on the test set, with the replay reservoir.
    public var accuracyWithReplay: Double
    /// Training rows.
    public var trainRows: Int
    /// Test rows.
    public var testRows: Int

    enum CodingKeys: String, CodingKey {
        case impl, shardRows = "shard_rows", accuracyWithoutReplay = "accuracy_without_replay", accuracyWithReplay = "accuracy_with_replay"
        case trainRows = "train_rows", testRows = "test_rows"
    }
}

extension CodecReport: Encodable {
    enum CodingKeys: String, CodingKey {
        case dtype, codec, compressedBytes, rawF32Bytes, rawBytes, ratio, maxAbsError, encodeGBps, decodeGBps
    }

    /// Every field; dtype and codec by name (`f16`, `shuffleLZ4`).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode("\(dtype)", forKey: .dtype)
        try container.encode("\(codec)", forKey: .codec)
        try container.encode(compressedBytes, forKey: .compressedBytes)
        try container.encode(rawF32Bytes, forKey: .rawF32Bytes)
        try container.encode(rawBytes, forKey: .rawBytes)
        try container.encode(ratio, forKey: .ratio)
        try container.encode(maxAbsError, forKey: .maxAbsError)
        try container.encode(encodeGBps, forKey: .encodeGBps)
        try container.encode(decodeGBps, forKey: .decodeGBps)
    }
}
