import FeatureStore
import Foundation
import FeatStreamTestSupport
import NumpyFormat
import XCTest

/// `featstream run --precision int8` end to end: the run calibrates on the dataset when the model has
/// no calibration, its workers extract in int8, and the stored features are the int8 engine's
/// (close to fp32, not equal to it).
final class Int8RunTests: XCTestCase {
    static let home = featureStreamHome(anchor: #filePath)

    func testRunCalibratesAndWorkersExtractInInt8() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-int8-run-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        // A private copy of the model folder, so the calibration lands there and nowhere shared.
        let model = scratch.appendingPathComponent("lite0")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        let shared = Self.home.appendingPathComponent("models/efficientnet-lite0")
        for file in ["model.json", "model.onnx", "classes.txt"] {
            try FileManager.default.createSymbolicLink(at: model.appendingPathComponent(file),
                                                       withDestinationURL: shared.appendingPathComponent(file))
        }
        let data = Self.home.appendingPathComponent("data/fashion-mnist-demo/imagefolder").path
        let out = scratch.appendingPathComponent("run")
        let run = try runFeatstream(["run", "--model", model.path, "--data", data, "--split", "val", "--limit", "48",
                                     "--shard-size", "16", "--workers", "1", "--batch", "8", "--dtype", "f32", "--no-train",
                                     "--precision", "int8", "--calibration-images", "32", "--out", out.path])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("run: calibrated int8 on the dataset's first 32 images"), run.output)
        let calibration = try JSONSerialization.jsonObject(
            with: Data(contentsOf: model.appendingPathComponent("calibration.json"))) as! [String: Any]
        XCTAssertEqual((calibration["images"] as! [String]).count, 32)

        let store = try FeatureStore.open(at: out.appendingPathComponent("store"))
        let rows = try store.rows()
        XCTAssertEqual(rows.count, 48)

        // The same images in fp32, through `extract`: int8 features are close but not identical.
        let fp32 = scratch.appendingPathComponent("fp32")
        let extract = try runFeatstream(["extract", "--model", shared.path, "--data", data, "--split", "val", "--limit", "48",
                                         "--out", fp32.path, "--precision", "fp32"])
        XCTAssertEqual(extract.status, 0, extract.output)
        let reference = try NumpyArray(contentsOf: fp32.appendingPathComponent("features.npy"))
        let keys = try String(contentsOf: fp32.appendingPathComponent("metadata.csv"), encoding: .utf8)
            .split(separator: "\n").dropFirst().map { String($0.split(separator: ",")[2]) }
        let width = reference.shape[1]
        var cosines: [Float] = []
        for position in rows.indices {
            let row = try XCTUnwrap(keys.firstIndex(of: rows.keys[position]), "store key \(rows.keys[position]) not in the fp32 output")
            let a = reference.values[(row * width)..<((row + 1) * width)], b = rows.features(ofRow: position)
            let dot = zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
            cosines.append(dot / (a.reduce(0) { $0 + $1 * $1 } * b.reduce(0) { $0 + $1 * $1 }).squareRoot())
        }
        cosines.sort()
        XCTAssertGreaterThan(cosines[cosines.count / 2], 0.95, "int8 features drifted from fp32: \(cosines)")
        XCTAssertLessThan(cosines[0], 0.99999, "the workers' features equal fp32: int8 was not used")
    }
}
