import Backbone
import DatasetIndex
import Foundation
import ImageInput

extension ModelConfig {
    /// Measures the activation ranges `--precision int8` needs on the first `images` decodable
    /// images of `dataset`, in dataset order, with the fp32 engine: each tensor's min and max, clipped to
    /// the `clipPercentile`-th percentile of its magnitudes when given (`Calibration.clipped`).
    ///
    /// - Returns: the calibration (listing the images used) and how many undecodable items were skipped.
    /// - Throws: `IndexError` when no item of the dataset decodes.
    public func calibrate(on dataset: IndexedDataset, images: Int = 512, batch: Int = 16, threads: Int? = nil,
                          clipPercentile: Double? = Calibration.defaultClipPercentile) throws -> (calibration: Calibration, skipped: Int) {
        let engine = try BackboneEngine(modelPath: onnxPath, input: input.name, outputs: [featureNode],
                                        maxBatch: batch, threads: threads)
        let preprocessor = try ImagePreprocessor(preprocess)
        let decoder = ImageDecoder()
        var calibration = Calibration()
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: batch * engine.imageElementCount)
        defer { buffer.deallocate() }
        var skipped = 0
        var filled = 0
        func flush() throws {
            guard filled > 0 else { return }
            try engine.observeRanges(UnsafeBufferPointer(buffer), batch: filled, into: &calibration)
            filled = 0
        }
        // Items are read one at a time from the mapped index, and only until enough have decoded.
        for position in 0..<dataset.count where calibration.images.count < images {
            let item = try dataset.item(position)
            do {
                let bytes = try item.locator.bytes()
                try bytes.withUnsafeBytes { raw in
                    try preprocessor.decode(raw, name: item.key, with: decoder, into: buffer.baseAddress!, slot: filled,
                                            layout: input.layout)
                }
            } catch {
                skipped += 1
                continue
            }
            calibration.images.append(item.key)
            filled += 1
            if filled == batch { try flush() }
        }
        try flush()
        guard !calibration.images.isEmpty else {
            throw IndexError("no decodable image in the dataset to calibrate \(name) on")
        }
        return (clipPercentile.map { calibration.clipped(atPercentile: $0) } ?? calibration, skipped)
    }

    /// Writes `calibration` as JSON to `path` (default: `calibrationPath`, where int8 engines read it).
    public func write(_ calibration: Calibration, to path: String? = nil) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(calibration).write(to: URL(fileURLWithPath: path ?? calibrationPath), options: .atomic)
    }
}
