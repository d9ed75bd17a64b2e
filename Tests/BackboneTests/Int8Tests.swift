import Backbone
import Foundation
import NumpyFormat
import XCTest

/// int8 convolutions (per-output-channel s8 weights, per-tensor activation scales from min/max
/// calibration) against the fp32 engine on the same input: a test that fails on a gross regression,
/// not an accuracy benchmark (it calibrates and evaluates on the same 4 golden images).
final class Int8Tests: XCTestCase {
    static let home = featureStreamHome(anchor: #filePath)

    /// Cosine similarity of int8 and fp32 features per image: (median, minimum).
    func int8Agreement(model: String, input inputName: String, feature: String,
                       file: StaticString = #filePath, line: UInt = #line) throws -> (median: Float, minimum: Float) {
        let modelPath = Self.home.appendingPathComponent("models/\(model)/model.onnx").path
        let input = try NumpyArray(contentsOf: Self.home.appendingPathComponent("goldens/models/\(model)/input.npy"))
        let batch = input.shape[0]
        let fp32 = try BackboneEngine(modelPath: modelPath, input: inputName, outputs: [feature], maxBatch: batch, threads: 2)
        var calibration = Calibration(images: (0..<batch).map { "goldens/models/\(model)/input.npy[\($0)]" })
        try input.values.withUnsafeBufferPointer { try fp32.observeRanges($0, batch: batch, into: &calibration) }
        XCTAssertGreaterThan(calibration.ranges.count, 10, "one range per convolution input", file: file, line: line)
        let reference = try input.values.withUnsafeBufferPointer { try fp32.run($0, batch: batch) }[0]

        let int8 = try BackboneEngine(modelPath: modelPath, input: inputName, outputs: [feature], maxBatch: batch, threads: 2,
                                      calibration: calibration)
        XCTAssertEqual(int8.referenceKernels, [], file: file, line: line)
        let convolutions = int8.implementations.filter { $0.step.hasPrefix("Conv") }.count
        XCTAssertGreaterThanOrEqual(int8.int8Convolutions.count, convolutions - 1,
                                    "every convolution but the first runs in int8", file: file, line: line)
        XCTAssertGreaterThan(int8.int8Tensors.count, 0, "some convolution outputs stay int8 for the next convolution", file: file, line: line)
        // Activations stay u8/s8 from convolution to convolution: the reorders per run (2 for both
        // models) quantise after the first f32 step and dequantise before global pooling, nothing between.
        let reorders = int8.implementations.filter { $0.step.hasPrefix("reorder") }.map(\.step)
        XCTAssertLessThanOrEqual(reorders.count, 4, "reorders between int8 steps: \(reorders)", file: file, line: line)
        let quantized = try input.values.withUnsafeBufferPointer { try int8.run($0, batch: batch) }[0]
        let width = int8.outputWidths[0]
        let cosines = (0..<batch).map { i -> Float in
            let a = reference[(i * width)..<((i + 1) * width)], b = quantized[(i * width)..<((i + 1) * width)]
            let dot = zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
            let norms = (a.reduce(0) { $0 + $1 * $1 } * b.reduce(0) { $0 + $1 * $1 }).squareRoot()
            return dot / norms
        }.sorted()
        print("int8 \(model): \(int8.int8Convolutions.count)/\(convolutions) convolutions in int8, \(int8.int8Tensors.count) tensors kept int8, \(reorders.count) reorders per run, feature cosine vs fp32 median \(cosines[batch / 2]) min \(cosines[0])")
        return (cosines[batch / 2], cosines[0])
    }

    func testOpenNSFWInt8FeaturesStayCloseToFP32() throws {
        let (median, minimum) = try int8Agreement(model: "open-nsfw", input: "input:0", feature: "pool/AvgPool:0")
        XCTAssertGreaterThan(median, 0.99)
        XCTAssertGreaterThan(minimum, 0.98)
    }

    func testLite0Int8FeaturesStayCloseToFP32() throws {
        let (median, minimum) = try int8Agreement(model: "efficientnet-lite0", input: "input", feature: "features")
        XCTAssertGreaterThan(median, 0.98)
        XCTAssertGreaterThan(minimum, 0.95)
    }
}
