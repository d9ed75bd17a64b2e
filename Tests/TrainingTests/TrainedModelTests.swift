import Extraction
import FeatureStore
import Foundation
import FeatStreamTestSupport
import ImageInput
import NumpyFormat
import WireProtocol
import XCTest

/// The trained head end to end, through the real binary: run → model folder → predict, the ONNX
/// classifier in onnxruntime, resumable training, and bad input.
final class TrainedModelTests: XCTestCase {
    static let home = featureStreamHome(anchor: #filePath)
    static var lite0: String { home.appendingPathComponent("models/efficientnet-lite0").path }
    static var valShard: String { home.appendingPathComponent("data/fashion-mnist-demo/webdataset/val-000000.tar").path }
    static var valImages: URL { home.appendingPathComponent("data/fashion-mnist-demo/imagefolder/val") }

    /// One small job shared by the tests: 200 images through a 1-worker cluster, head trained at the end.
    static let job: (directory: URL, output: String) = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-trained-\(UUID().uuidString)")
        let run = try! runFeatstream(["run", "--model", lite0, "--data", valShard, "--workers", "1", "--out", directory.path,
                                      "--shard-size", "50", "--l2", "0.1", "--resize", "fast"])
        return (directory, run.output + "\nexit \(run.status)")
    }()

    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-train-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: scratch) }

    func testRunEndsWithATrainedModelAndReports() throws {
        let (directory, output) = Self.job
        XCTAssertTrue(output.hasSuffix("exit 0"), output)
        let accuracyLine = output.split(separator: "\n").first { $0.hasPrefix("run: validation accuracy") }
        XCTAssertNotNil(accuracyLine, output)
        for file in ["head.safetensors", "classifier.onnx", "predictor.json", "report.json", "report.html"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory.appendingPathComponent("model/\(file)").path), file)
        }
        XCTAssertTrue(output.contains("online pass"), "no online training while shards arrived\n\(output)")
        // `run --resize fast` reached the roles through a config copy, and the model folder keeps the choice for predict.
        for config in ["backbone-config.json", "model/backbone.json"] {
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent(config))) as! [String: Any]
            XCTAssertEqual((object["preprocess"] as? [String: Any])?["resize"] as? String, "fast", config)
        }
        let html = try String(contentsOf: directory.appendingPathComponent("model/report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("<svg"), "the report has no plots")
    }

    /// `featstream predict` and the exported ONNX classifier in onnxruntime agree on every test image's top-1.
    func testONNXClassifierAgreesWithPredict() throws {
        let model = Self.job.directory.appendingPathComponent("model")
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.valImages.path).sorted().flatMap { folder in
            try FileManager.default.contentsOfDirectory(atPath: Self.valImages.appendingPathComponent(folder).path).sorted().prefix(2)
                .map { Self.valImages.appendingPathComponent("\(folder)/\($0)").path }
        }
        XCTAssertEqual(files.count, 20)
        // PNGs decode the same in both modes: --resize exact overrides the folder's fast and changes nothing here.
        let predicted = try runFeatstream(["predict", "--model", model.path, "--json", "--top-k", "1", "--resize", "exact"] + files)
        XCTAssertEqual(predicted.status, 0, predicted.output)
        let swiftTop1: [Int] = try predicted.output.split(separator: "\n").filter { $0.hasPrefix("{") }.map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return ((object["top"] as! [[String: Any]])[0]["index"] as! NSNumber).intValue
        }
        XCTAssertEqual(swiftTop1.count, files.count)

        // The same preprocessed tensors go to onnxruntime.
        let config = try ModelConfig.load(Self.lite0)
        let preprocessor = try ImagePreprocessor(config.preprocess)
        let decoder = ImageDecoder()
        let perImage = 3 * config.preprocess.crop * config.preprocess.crop
        var input = [Float](repeating: 0, count: files.count * perImage)
        try input.withUnsafeMutableBufferPointer { buffer in
            for (slot, file) in files.enumerated() {
                try Data(contentsOf: URL(fileURLWithPath: file)).withUnsafeBytes { raw in
                    try preprocessor.decode(raw, name: file, with: decoder, into: buffer.baseAddress!, slot: slot, layout: .nchw)
                }
            }
        }
        let npy = scratch.appendingPathComponent("input.npy")
        try NumpyArray(shape: [files.count, 3, config.preprocess.crop, config.preprocess.crop], values: input).write(to: npy)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Tools/onnx_top1.py")
        let python = try runProcess(URL(fileURLWithPath: "/usr/bin/env"),
                                    ["python3", script.path, model.appendingPathComponent("classifier.onnx").path, npy.path])
        XCTAssertEqual(python.status, 0, python.output)
        let onnxTop1 = try JSONDecoder().decode([Int].self, from: Data(python.output.split(separator: "\n").last!.utf8))
        XCTAssertEqual(onnxTop1, swiftTop1, "onnxruntime and featstream predict disagree")
    }

    /// Killing training mid-way and running it again resumes from the checkpoint.
    func testTrainingResumesAfterKill() throws {
        let store = Self.job.directory.appendingPathComponent("store").path
        let out = scratch.appendingPathComponent("mlp")
        let arguments = ["train", "--store", store, "--model", Self.lite0, "--out", out.path, "--mlp", "--hidden", "16",
                         "--max-epochs", "300", "--validation-fraction", "0.2", "--l2", "0.001"]
        let process = Process()
        process.executableURL = productsDirectory.appendingPathComponent("featstream")
        process.arguments = arguments
        let log = scratch.appendingPathComponent("first.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = process.standardError
        try process.run()
        // Wait for a few epochs' checkpoints, then kill -9.
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, process.isRunning,
              (try? String(contentsOf: log, encoding: .utf8))?.components(separatedBy: "epoch ").count ?? 0 < 4 {
            Thread.sleep(forTimeInterval: 0.02)
        }
        XCTAssertTrue(process.isRunning, "training ended before it could be killed; make it longer\n\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("checkpoint.json").path))

        let second = try runFeatstream(arguments)
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertTrue(second.output.contains("resuming from"), second.output)
        let firstEpoch = second.output.split(separator: "\n").first { $0.contains(": epoch ") }
            .flatMap { Int($0.split(separator: " ").drop { $0 != "epoch" }.dropFirst().first?.dropLast() ?? "") }
        XCTAssertNotNil(firstEpoch, second.output)
        XCTAssertGreaterThan(firstEpoch ?? 0, 1, "training started over instead of resuming\n\(second.output)")
    }

    /// The default head chooses L2 on validation and reports the sweep; its model folder holds everything
    /// `predict` needs: moved elsewhere, with the backbone it was trained from deleted, it predicts the same.
    func testDefaultHeadChoosesL2AndItsMovedFolderPredictsIdentically() throws {
        let backbone = scratch.appendingPathComponent("backbone")
        try FileManager.default.copyItem(atPath: Self.lite0, toPath: backbone.path)
        let trained = scratch.appendingPathComponent("trained")
        let train = try runFeatstream(["train", "--store", Self.job.directory.appendingPathComponent("store").path,
                                       "--model", backbone.path, "--out", trained.path, "--validation-fraction", "0.3"])
        XCTAssertEqual(train.status, 0, train.output)

        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: trained.appendingPathComponent("report.json"))) as! [String: Any]
        let sweep = try XCTUnwrap(report["l2Sweep"] as? [[String: Any]], "no sweep in the report")
        XCTAssertGreaterThanOrEqual(sweep.count, 3)
        let chosen = try XCTUnwrap(report["chosenL2"] as? Double)
        func score(_ point: [String: Any]) -> (Double, Double) {
            ((point["validationAccuracy"] as! Double), -(point["validationLoss"] as! Double))
        }
        let best = sweep.max { score($0) < score($1) }!
        XCTAssertEqual(best["l2"] as! Double, chosen, accuracy: chosen * 1e-6)
        let evaluation = report["evaluation"] as! [String: Any]
        XCTAssertEqual(evaluation["top1"] as! Double, best["validationAccuracy"] as! Double, accuracy: 1e-9)

        let files = try FileManager.default.contentsOfDirectory(atPath: Self.valImages.path).sorted().map { folder in
            Self.valImages.appendingPathComponent(folder).appendingPathComponent(
                try FileManager.default.contentsOfDirectory(atPath: Self.valImages.appendingPathComponent(folder).path).sorted()[0]).path
        }
        let before = try runFeatstream(["predict", "--model", trained.path, "--json", "--top-k", "3"] + files)
        XCTAssertEqual(before.status, 0, before.output)
        let moved = scratch.appendingPathComponent("elsewhere/model")
        try FileManager.default.createDirectory(at: moved.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.moveItem(at: trained, to: moved)
        try FileManager.default.removeItem(at: backbone)
        let after = try runFeatstream(["predict", "--model", moved.path, "--json", "--top-k", "3"] + files)
        XCTAssertEqual(after.status, 0, after.output)
        func predictions(_ output: String) -> [String] { output.split(separator: "\n").filter { $0.hasPrefix("{") }.map(String.init) }
        XCTAssertEqual(predictions(before.output).count, files.count, before.output)
        XCTAssertEqual(predictions(after.output), predictions(before.output))
        let manifest = try String(contentsOf: moved.appendingPathComponent("predictor.json"), encoding: .utf8)
        XCTAssertFalse(manifest.contains(scratch.path), "the manifest names a path outside the folder: \(manifest)")
    }

    /// A job extracted in int8 trains its head on int8 features, so its model folder makes `predict` extract in
    /// int8 too (calibration inside, the folder still movable) and says that classifier.onnx computes fp32.
    func testAnInt8JobsModelFolderPredictsInInt8() throws {
        let backbone = scratch.appendingPathComponent("backbone")
        try FileManager.default.copyItem(atPath: Self.lite0, toPath: backbone.path)   // run writes its calibration beside it
        let job = scratch.appendingPathComponent("job")
        let run = try runFeatstream(["run", "--model", backbone.path, "--data", Self.valShard, "--workers", "1", "--out", job.path,
                                     "--shard-size", "50", "--l2", "0.1", "--precision", "int8", "--calibration-images", "32"])
        XCTAssertEqual(run.status, 0, run.output)
        // The store records the precision, so training it again with an fp32 config is refused, naming both
        // (the fp32 job's store says fp32: `Self.job`).
        let store = job.appendingPathComponent("store")
        XCTAssertEqual(try FeatureStore.open(at: store).metadata.precision, "int8")
        XCTAssertEqual(try FeatureStore.open(at: Self.job.directory.appendingPathComponent("store")).metadata.precision, "fp32")
        let retrain = try runFeatstream(["train", "--store", store.path, "--model", Self.lite0, "--out", scratch.appendingPathComponent("retrained").path])
        XCTAssertNotEqual(retrain.status, 0, retrain.output)
        XCTAssertTrue(retrain.output.contains("extracted at int8") && retrain.output.contains("says fp32"), retrain.output)
        let model = job.appendingPathComponent("model")
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: model.appendingPathComponent("report.json"))) as! [String: Any]
        let backboneLine = (report["summary"] as? [[String: String]])?.first { $0["label"] == "Backbone" }?["value"] ?? ""
        XCTAssertTrue(backboneLine.contains("classifier.onnx computes the backbone in fp32"), backboneLine)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: model.appendingPathComponent("backbone.json"))) as! [String: Any]
        XCTAssertEqual(config["precision"] as? String, "int8")
        XCTAssertEqual(config["calibration"] as? String, "calibration.json")
        XCTAssertEqual(try Data(contentsOf: model.appendingPathComponent("calibration.json")),
                       try Data(contentsOf: backbone.appendingPathComponent("calibration.json")))

        let files = try FileManager.default.contentsOfDirectory(atPath: Self.valImages.path).sorted().map { folder in
            Self.valImages.appendingPathComponent(folder).appendingPathComponent(
                try FileManager.default.contentsOfDirectory(atPath: Self.valImages.appendingPathComponent(folder).path).sorted()[0]).path
        }
        func predictions(_ folder: URL) throws -> [String] {
            let result = try runFeatstream(["predict", "--model", folder.path, "--json", "--top-k", "3"] + files)
            XCTAssertEqual(result.status, 0, result.output)
            return result.output.split(separator: "\n").filter { $0.hasPrefix("{") }.map(String.init)
        }
        let int8 = try predictions(model)
        XCTAssertEqual(int8.count, files.count)
        let moved = scratch.appendingPathComponent("elsewhere/model")
        try FileManager.default.createDirectory(at: moved.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.moveItem(at: model, to: moved)
        try FileManager.default.removeItem(at: backbone)
        XCTAssertEqual(try predictions(moved), int8, "the moved int8 folder predicts differently")
        // The same folder told to run fp32 gives other probabilities: predict did run the int8 backbone.
        var fp32Config = config
        fp32Config["precision"] = nil
        try JSONSerialization.data(withJSONObject: fp32Config).write(to: moved.appendingPathComponent("backbone.json"))
        XCTAssertNotEqual(try predictions(moved), int8)
    }

    /// With a memory budget far below the store's size, training streams the store on every pass and
    /// chooses the same L2 with the same validation results as in memory.
    func testOutOfCoreTrainingMatchesInMemoryTraining() throws {
        let store = Self.job.directory.appendingPathComponent("store").path
        var reports: [[String: Any]] = []
        for budget in [nil, "1K"] as [String?] {
            let out = scratch.appendingPathComponent("budget-\(budget ?? "none")")
            let result = try runFeatstream(["train", "--store", store, "--model", Self.lite0, "--out", out.path,
                                            "--validation-fraction", "0.3"] + (budget.map { ["--memory-budget", $0] } ?? []))
            XCTAssertEqual(result.status, 0, result.output)
            reports.append(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as! [String: Any])
        }
        XCTAssertEqual(reports[0]["chosenL2"] as? Double, reports[1]["chosenL2"] as? Double)
        let sweeps = reports.map { ($0["l2Sweep"] as! [[String: Any]]) }
        XCTAssertEqual(sweeps[0].map { $0["l2"] as! Double }, sweeps[1].map { $0["l2"] as! Double })
        for (a, b) in zip(sweeps[0], sweeps[1]) {
            XCTAssertEqual(a["validationAccuracy"] as! Double, b["validationAccuracy"] as! Double, accuracy: 0.011)
            XCTAssertEqual(a["validationLoss"] as! Double, b["validationLoss"] as! Double, accuracy: 1e-2)
        }
        let top1 = reports.map { ($0["evaluation"] as! [String: Any])["top1"] as! Double }
        XCTAssertEqual(top1[0], top1[1], accuracy: 0.011)
    }

    /// An MLP beyond the memory budget streams its Adam epochs through a shuffle buffer: with the same
    /// seed it reaches about the accuracy of the in-memory fit, and keeps its best epoch.
    func testStreamedMLPMatchesInMemoryMLP() throws {
        let store = Self.job.directory.appendingPathComponent("store").path
        var reports: [[String: Any]] = []
        var outputs: [String] = []
        for budget in [nil, "40K"] as [String?] {
            let out = scratch.appendingPathComponent("mlp-budget-\(budget ?? "none")")
            let result = try runFeatstream(["train", "--store", store, "--model", Self.lite0, "--out", out.path, "--mlp", "--hidden", "32",
                                            "--max-epochs", "40", "--validation-fraction", "0.3"] + (budget.map { ["--memory-budget", $0] } ?? []))
            XCTAssertEqual(result.status, 0, result.output)
            outputs.append(result.output)
            reports.append(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as! [String: Any])
        }
        XCTAssertFalse(outputs[0].contains("shuffle buffer"), outputs[0])
        XCTAssertTrue(outputs[1].contains("shuffle buffer of"), outputs[1])
        XCTAssertEqual((reports[1]["fit"] as? [String: Any])?["streamed"] as? Bool, true)
        let top1 = reports.map { ($0["evaluation"] as! [String: Any])["top1"] as! Double }
        XCTAssertGreaterThan(top1[1], 0.5, outputs[1])
        XCTAssertEqual(top1[0], top1[1], accuracy: 0.07, "in memory \(top1[0]), streamed \(top1[1])")
        XCTAssertNotNil(reports[1]["keptEpoch"] as? Int)
    }

    func testPredictReportsACorruptImageAndGoesOn() throws {
        let model = Self.job.directory.appendingPathComponent("model")
        let good = Self.valImages.appendingPathComponent("1-trouser").path
        let goodFile = try FileManager.default.contentsOfDirectory(atPath: good).sorted().first!
        let bad = scratch.appendingPathComponent("broken.png")
        try Data("not a png at all".utf8).write(to: bad)
        let result = try runFeatstream(["predict", "--model", model.path, bad.path, "\(good)/\(goodFile)"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("broken.png"), result.output)
        XCTAssertTrue(result.output.contains(goodFile), result.output)

        // A folder: a CSV with one line per image, the corrupt one with its error.
        let folder = scratch.appendingPathComponent("folder")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(good)/\(goodFile)", toPath: folder.appendingPathComponent("a.png").path)
        try FileManager.default.copyItem(at: bad, to: folder.appendingPathComponent("b.png"))
        let csvRun = try runFeatstream(["predict", "--model", model.path, folder.path])
        XCTAssertEqual(csvRun.status, 0, csvRun.output)
        let csv = try String(contentsOf: folder.appendingPathComponent("predictions.csv"), encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 3, csv)
        XCTAssertTrue(csv.contains("a.png,"), csv + "\n" + csvRun.output)
        XCTAssertTrue(csv.split(separator: "\n").first { $0.contains("b.png") }!.hasSuffix(",,,not an image (unknown signature)"), csv)
    }

    func testExportFeaturesWritesNumpyFiles() throws {
        let out = scratch.appendingPathComponent("npy")
        let result = try runFeatstream(["export-features", "--store", Self.job.directory.appendingPathComponent("store").path, "--out", out.path])
        XCTAssertEqual(result.status, 0, result.output)
        let features = try NumpyArray(contentsOf: out.appendingPathComponent("features.npy"))
        XCTAssertEqual(features.shape, [200, 1280])
        XCTAssertEqual(try NumpyArray(contentsOf: out.appendingPathComponent("labels.npy")).shape, [200])
    }

    // MARK: bad input

    func makeStore(rows: Int, labels: (Int) -> Int32, value: (Int, Int) -> Float) throws -> URL {
        let url = scratch.appendingPathComponent("store-\(UUID().uuidString)")
        let store = try FeatureStore.create(at: url, dtype: .f32, dimension: 8)
        if rows > 0 {
            let contents = ShardContents(
                shardItemCount: UInt32(rows), dimension: 8, offsets: (0..<rows).map(UInt32.init),
                indexes: (0..<rows).map(UInt64.init), labels: (0..<rows).map(labels), keys: (0..<rows).map { "k\($0)" },
                features: (0..<(rows * 8)).map { value($0 / 8, $0 % 8) }, deadLetters: [])
            _ = try store.commit(contents, shardID: 0, attempt: 1)
        }
        return url
    }

    func train(_ store: URL) throws -> (status: Int32, output: String) {
        try runFeatstream(["train", "--store", store.path, "--model", Self.lite0, "--out", scratch.appendingPathComponent("m").path])
    }

    func testEmptyStoreSingleClassAndNonFiniteFeaturesAreClearErrors() throws {
        let empty = try train(try makeStore(rows: 0, labels: { _ in 0 }, value: { _, _ in 0 }))
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertTrue(empty.output.lowercased().contains("empty"), empty.output)

        let single = try train(try makeStore(rows: 40, labels: { _ in 3 }, value: { r, c in Float(r * c) }))
        XCTAssertNotEqual(single.status, 0)
        XCTAssertTrue(single.output.lowercased().contains("class"), single.output)

        let nan = try train(try makeStore(rows: 40, labels: { Int32($0 % 2) }, value: { r, c in r == 7 && c == 2 ? .nan : Float(r + c) }))
        XCTAssertNotEqual(nan.status, 0)
        XCTAssertTrue(nan.output.lowercased().contains("nan") || nan.output.lowercased().contains("finite"), nan.output)
    }

    /// A model folder whose head was trained on another backbone is refused with a clear message.
    func testModelFolderFromADifferentBackboneIsRefused() throws {
        let model = Self.job.directory.appendingPathComponent("model")
        let copy = scratch.appendingPathComponent("mixed")
        try FileManager.default.copyItem(at: model, to: copy)
        var manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: copy.appendingPathComponent("predictor.json"))) as! [String: Any]
        manifest["backboneConfig"] = Self.home.appendingPathComponent("models/open-nsfw/model.json").path
        try JSONSerialization.data(withJSONObject: manifest).write(to: copy.appendingPathComponent("predictor.json"))
        let result = try runFeatstream(["predict", "--model", copy.path, Self.valShard])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("efficientnet-lite0") && result.output.contains("open-nsfw"), result.output)
    }
}
