import Backbone
import Foundation
import NumpyFormat
import XCTest

/// Per-op goldens: each small ONNX model (made with onnx.helper by Tests/Goldens/make_goldens.py)
/// runs through the engine and must match onnxruntime's output.
final class OpGoldenTests: XCTestCase {
    static let goldens = featureStreamHome(anchor: #filePath).appendingPathComponent("goldens")

    /// Runs one golden case and returns the relative error: max |engine - onnxruntime| / max |onnxruntime|.
    static func relativeError(case name: String, file: StaticString = #filePath, line: UInt = #line) throws -> Float {
        let dir = goldens.appendingPathComponent("ops").appendingPathComponent(name)
        let input = try NumpyArray(contentsOf: dir.appendingPathComponent("input.npy"))
        let expected = try NumpyArray(contentsOf: dir.appendingPathComponent("output.npy"))
        let engine = try BackboneEngine(modelPath: dir.appendingPathComponent("model.onnx").path,
                                        input: "x", outputs: ["y"], maxBatch: input.shape[0], threads: 2)
        XCTAssertEqual(engine.imageShape, Array(input.shape.dropFirst()), "input shape", file: file, line: line)
        let output = try input.values.withUnsafeBufferPointer { try engine.run($0, batch: input.shape[0]) }[0]
        XCTAssertEqual(output.count, expected.values.count, "\(name): output size", file: file, line: line)
        return maxRelativeError(output, expected.values)
    }

    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let error = try Self.relativeError(case: name, file: file, line: line)
        XCTAssertLessThan(error, 1e-5, "\(name): relative error \(error)", file: file, line: line)
    }

    override func setUpWithError() throws {
        guard FileManager.default.fileExists(atPath: Self.goldens.appendingPathComponent("MANIFEST.json").path) else {
            XCTFail("golden files missing at \(Self.goldens.path): run `bash Ops/setup.sh --goldens`")
            throw XCTSkip("no goldens")
        }
    }

    /// Every case the generator wrote (convolutions of each kind, pools, activations, reshapes, Gemm,
    /// Concat, squeeze-excitation, Pad folding, shape arithmetic, affine folding, Swish/GELU/Mish
    /// patterns, LayerNorm, Softmax, Split, Resize, reflect Pad...) must match onnxruntime within
    /// 1e-5 relative error, with no primitive on a oneDNN reference kernel (the engine refuses those).
    func testEveryOpGoldenMatchesOnnxruntime() throws {
        let cases = try FileManager.default.contentsOfDirectory(atPath: Self.goldens.appendingPathComponent("ops").path).sorted()
        XCTAssertGreaterThanOrEqual(cases.count, 64, "fewer golden cases than the generator writes")
        for name in cases {
            do {
                let error = try Self.relativeError(case: name)
                print("op golden \(name): relative error \(error)")
                XCTAssertLessThan(error, 1e-5, "\(name): relative error \(error)")
            } catch {
                XCTFail("\(name): \(error)")
            }
        }
    }

    /// At batch 1 a Concat's inputs are written straight into their slices of its buffer, so the
    /// Concat copies nothing, except where a tensor cannot live in one place: `concat_in_place` has
    /// a prefix Concat sharing its longer sibling's buffer, a pooled input, an input made by a
    /// Reshape (copied into its slice), a 10-channel last input, an input that two Concats want
    /// (the second copies) and a Concat of a Concat (copies). The result must still match onnxruntime.
    func testBatch1ConcatsCopyOnlyWhereATensorCannotLiveInOnePlace() throws {
        let dir = Self.goldens.appendingPathComponent("ops/concat_in_place")
        let input = try NumpyArray(contentsOf: dir.appendingPathComponent("input.npy"))
        XCTAssertEqual(input.shape[0], 1, "the case is batch 1")
        let engine = try BackboneEngine(modelPath: dir.appendingPathComponent("model.onnx").path,
                                        input: "x", outputs: ["y"], maxBatch: 1, threads: 2)
        XCTAssertEqual(engine.referenceKernels, [])
        XCTAssertEqual(engine.inPlaceConcats, ["Concat 'cat_prefix'", "Concat 'cat_root'", "Concat 'cat_tail'"])
        XCTAssertEqual(engine.implementations.map(\.step).filter { $0.hasPrefix("Concat") }, ["Concat 'cat_conflict'", "Concat 'concat_29'"])
        try check("concat_in_place")
    }
}

/// max |a - b| / max |b|: the relative error measure the acceptance bar is stated in.
func maxRelativeError(_ actual: [Float], _ expected: [Float]) -> Float {
    precondition(actual.count == expected.count)
    var maxError: Float = 0, maxValue: Float = 0
    for (a, b) in zip(actual, expected) {
        maxError = max(maxError, abs(a - b))
        maxValue = max(maxValue, abs(b))
    }
    return maxValue == 0 ? maxError : maxError / maxValue
}
