import Foundation

/// Float arrays stored as base64 of their little-endian bits: exact, and about 4× smaller than decimal JSON.
struct PackedFloats: Codable, Equatable {
    var values: [Float]

    init(_ values: [Float]) { self.values = values }

    init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let data = Data(base64Encoded: text), data.count % 4 == 0 else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not base64 float32 data"))
        }
        values = data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    func encode(to encoder: Encoder) throws {
        var data = Data(capacity: values.count * 4)
        for value in values { withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        var container = encoder.singleValueContainer()
        try container.encode(data.base64EncodedString())
    }
}

/// What must match for a checkpoint to continue a run: data shape and everything that changes the trajectory.
struct RunFingerprint: Codable, Equatable {
    var rows: Int
    var dimension: Int
    var classCount: Int
    var kind: HeadModel.Kind
    var hiddenUnits: Int
    var l2: Float
    var optimizer: TrainingConfig.Optimizer
    var batchSize: Int
    var learningRate: Float
    var classWeights: TrainingConfig.ClassWeighting
    var seed: UInt64
    var lbfgsHistory: Int
    /// Sum of labels × position, a cheap guard against resuming on a different training set of the same shape.
    var labelChecksum: Int

    func difference(from other: RunFingerprint) -> String? {
        let mine = Mirror(reflecting: self).children, theirs = Mirror(reflecting: other).children
        for (a, b) in zip(mine, theirs) where "\(a.value)" != "\(b.value)" {
            return "\(a.label ?? "?") is \(b.value) in the checkpoint but \(a.value) now"
        }
        return nil
    }
}

/// Everything `fit` needs to continue exactly where an interrupted run stopped.
struct TrainingCheckpoint: Codable {
    static let currentVersion = 1

    var version = TrainingCheckpoint.currentVersion
    var fingerprint: RunFingerprint
    /// Epochs (L-BFGS: iterations) completed.
    var completedEpochs: Int
    /// Training ended (converged, early-stopped or out of epochs); `fit` returns the stored model.
    var finished: Bool
    var parameters: PackedFloats
    var standardizerMean: PackedFloats
    var standardizerStd: PackedFloats
    var bestParameters: PackedFloats?
    var bestValidationLoss: Double?
    /// The epoch `bestParameters` come from.
    var bestEpoch: Int?
    var epochsSinceImprovement: Int
    var adamFirstMoment: PackedFloats?
    var adamSecondMoment: PackedFloats?
    var adamStep: Int
    var rng: SplitMix64
    var lbfgsS: [PackedFloats]
    var lbfgsY: [PackedFloats]
    var history: [EpochMetrics]

    /// Writes to a sibling temporary file and renames it over `url`, so a kill mid-write leaves the previous checkpoint intact.
    func write(to url: URL) throws {
        do {
            let data = try JSONEncoder().encode(self)
            try data.write(to: url, options: .atomic)
        } catch {
            throw TrainingError.checkpointUnreadable(path: url.path, reason: "cannot write: \(error)")
        }
    }

    /// The checkpoint at `url`, or `nil` when there is none.
    static func read(from url: URL) throws -> TrainingCheckpoint? {
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let checkpoint: TrainingCheckpoint
        do {
            checkpoint = try JSONDecoder().decode(TrainingCheckpoint.self, from: Data(contentsOf: url))
        } catch {
            throw TrainingError.checkpointUnreadable(path: url.path, reason: "cannot decode: \(error)")
        }
        guard checkpoint.version == currentVersion else {
            throw TrainingError.checkpointUnreadable(path: url.path, reason: "version \(checkpoint.version), expected \(currentVersion)")
        }
        return checkpoint
    }
}
