import FeatStreamTestSupport
import Foundation
import XCTest
@testable import HeadExport

func sampleHead(featureDimension d: Int, hidden: Int?, classes: Int, seed: UInt64) -> ExportedHead {
    var generator = SplitMix64(seed: seed)
    var widths = [d]
    if let hidden { widths.append(hidden) }
    widths.append(classes)
    let layers = (0..<(widths.count - 1)).map { index -> DenseLayer in
        let inputs = widths[index], outputs = widths[index + 1]
        let scale = 3 / Float(inputs).squareRoot()
        return DenseLayer(
            weights: randomFloats(outputs * inputs, in: -scale...scale, using: &generator),
            bias: randomFloats(outputs, in: -0.5...0.5, using: &generator), inputs: inputs, outputs: outputs)
    }
    return ExportedHead(
        classNames: (0..<classes).map { "class \"\($0)\" ✓" },
        mean: randomFloats(d, in: -1...1, using: &generator), std: randomFloats(d, in: 0.5...2, using: &generator),
        layers: layers, backbone: "test-backbone", featureNode: "features", normalization: "mean=[127,127,127] std=[128,128,128]")
}

final class ExportedHeadTests: XCTestCase {
    func testValidateRejectsHeadsThatDoNotChain() {
        var head = sampleHead(featureDimension: 4, hidden: 3, classes: 2, seed: 1)
        XCTAssertNoThrow(try head.validate())
        head.classNames.append("extra")
        XCTAssertThrowsError(try head.validate()) { XCTAssertTrue("\($0)".contains("class names")) }
        head = sampleHead(featureDimension: 4, hidden: 3, classes: 2, seed: 1)
        head.std[2] = 0
        XCTAssertThrowsError(try head.validate()) { XCTAssertTrue("\($0)".contains("std[2]")) }
        head = sampleHead(featureDimension: 4, hidden: 3, classes: 2, seed: 1)
        head.layers[1].inputs = 4
        XCTAssertThrowsError(try head.validate())
    }

    func testProbabilitiesMatchAHandComputedHead() throws {
        // Numbers small enough to follow by hand: standardised x = [1, 0], so both logits are 1.
        let head = ExportedHead(
            classNames: ["a", "b"], mean: [1, 0], std: [2, 1],
            layers: [DenseLayer(weights: [1, 0, 0, 1], bias: [0, 1], inputs: 2, outputs: 2)],
            backbone: "", featureNode: "", normalization: "")
        XCTAssertEqual(try head.logits(for: [3, 0], rows: 1), [1, 1])
        XCTAssertEqual(try head.probabilities(for: [3, 0], rows: 1), [0.5, 0.5])
        let relu = ExportedHead(
            classNames: ["a"], mean: [0], std: [1],
            layers: [DenseLayer(weights: [1], bias: [-5], inputs: 1, outputs: 1), DenseLayer(weights: [2], bias: [1], inputs: 1, outputs: 1)],
            backbone: "", featureNode: "", normalization: "")
        XCTAssertEqual(try relu.logits(for: [3], rows: 1), [1], "the hidden ReLU clamps 3-5 to 0")
    }
}

final class SafetensorsTests: XCTestCase {
    func testRoundTripsSoftmaxRegressionAndMLP() throws {
        let scratch = try makeScratchDirectory(self)
        for hidden in [nil, 7] as [Int?] {
            let head = sampleHead(featureDimension: 12, hidden: hidden, classes: 5, seed: 42)
            let url = scratch.appendingPathComponent("head-\(hidden ?? 0).safetensors")
            try SafetensorsWriter.write(head, to: url)
            let file = try SafetensorsFile.read(url)
            XCTAssertEqual(file.tensors["mean"]?.shape, [12])
            XCTAssertEqual(file.tensors["layer0.weight"]?.shape, [hidden ?? 5, 12])
            XCTAssertEqual(file.metadata["format"], SafetensorsWriter.formatName)
            XCTAssertEqual(file.metadata["backbone"], "test-backbone")
            XCTAssertEqual(try SafetensorsFile.readHead(url), head)
        }
    }

    /// Checks the bytes against the format description rather than against our own reader.
    func testLayoutFollowsTheSafetensorsSpecification() throws {
        let head = sampleHead(featureDimension: 3, hidden: nil, classes: 2, seed: 7)
        let bytes = [UInt8](try SafetensorsWriter.encode(head))
        let headerLength = Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) })
        XCTAssertEqual(headerLength % 8, 0, "header padded to 8 bytes")
        XCTAssertEqual(bytes[8], UInt8(ascii: "{"))
        let headerText = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        XCTAssertEqual(headerText.trimmingCharacters(in: .whitespaces).last, "}", "padding is trailing spaces only")
        let header = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(headerText.utf8)) as? [String: Any])
        XCTAssertEqual(Set(header.keys), ["__metadata__", "mean", "std", "layer0.weight", "layer0.bias"])
        let metadata = try XCTUnwrap(header["__metadata__"] as? [String: String])
        XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(metadata["classNames"]!.utf8)) as? [String], head.classNames)
        XCTAssertEqual(metadata["featureNode"], "features")
        XCTAssertEqual(metadata["normalization"], head.normalization)
        let weight = try XCTUnwrap(header["layer0.weight"] as? [String: Any])
        XCTAssertEqual(weight["dtype"] as? String, "F32")
        XCTAssertEqual(weight["shape"] as? [Int], [2, 3])
        let offsets = try XCTUnwrap(weight["data_offsets"] as? [Int])
        let start = 8 + headerLength + offsets[0]
        XCTAssertEqual(offsets[1] - offsets[0], 24)
        let firstWeight = Float(bitPattern: UInt32(bytes[start]) | UInt32(bytes[start + 1]) << 8 | UInt32(bytes[start + 2]) << 16 | UInt32(bytes[start + 3]) << 24)
        XCTAssertEqual(firstWeight, head.layers[0].weights[0])
        let totalData = [("mean", 12), ("std", 12), ("layer0.weight", 24), ("layer0.bias", 8)].map(\.1).reduce(0, +)
        XCTAssertEqual(bytes.count, 8 + headerLength + totalData)
    }

    /// Parses the file the way the reference `safetensors` loader does (u64 length, JSON header,
    /// numpy views at data_offsets), since the package itself is not installed here.
    func testPythonReadsTheFileLikeTheReferenceLoader() throws {
        let scratch = try makeScratchDirectory(self)
        try requirePython(["numpy"], scratch: scratch)
        let head = sampleHead(featureDimension: 6, hidden: 4, classes: 3, seed: 9)
        let url = scratch.appendingPathComponent("head.safetensors")
        try SafetensorsWriter.write(head, to: url)
        let expected = scratch.appendingPathComponent("expected.json")
        let expectedJSON: [String: Any] = [
            "mean": head.mean.map(Double.init), "std": head.std.map(Double.init),
            "layer0.weight": head.layers[0].weights.map(Double.init), "layer1.bias": head.layers[1].bias.map(Double.init),
            "classNames": head.classNames,
        ]
        try JSONSerialization.data(withJSONObject: expectedJSON).write(to: expected)
        let script = """
        import json, struct, sys, numpy as np
        raw = open(sys.argv[1], 'rb').read()
        (n,) = struct.unpack('<Q', raw[:8])
        assert n % 8 == 0, n
        header = json.loads(raw[8:8 + n])
        data = raw[8 + n:]
        meta = header.pop('__metadata__')
        assert all(isinstance(v, str) for v in meta.values())
        spans = sorted(tuple(t['data_offsets']) for t in header.values())
        assert spans[0][0] == 0 and spans[-1][1] == len(data), spans
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), spans
        t = {k: np.frombuffer(data[v['data_offsets'][0]:v['data_offsets'][1]], dtype='<f4').reshape(v['shape']) for k, v in header.items()}
        assert all(v['dtype'] == 'F32' for v in header.values())
        e = json.load(open(sys.argv[2]))
        assert t['layer0.weight'].shape == (4, 6) and t['layer1.weight'].shape == (3, 4), {k: v.shape for k, v in t.items()}
        for k in ('mean', 'std', 'layer0.weight', 'layer1.bias'):
            assert np.array_equal(t[k].ravel(), np.array(e[k], dtype=np.float32)), k
        assert json.loads(meta['classNames']) == e['classNames']
        print('ok', sorted(t))
        """
        let result = try runProgram(["python3", "-c", script, url.path, expected.path], in: scratch)
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.hasPrefix("ok"), result.stdout)
    }

    func testRejectsTruncatedAndForeignFiles() throws {
        let good = try SafetensorsWriter.encode(sampleHead(featureDimension: 3, hidden: nil, classes: 2, seed: 3))
        XCTAssertThrowsError(try SafetensorsFile.parse(good.dropLast(4))) { XCTAssertTrue("\($0)".contains("outside"), "\($0)") }
        XCTAssertThrowsError(try SafetensorsFile.parse(good + Data([0, 0, 0, 0]))) { XCTAssertTrue("\($0)".contains("cover"), "\($0)") }
        XCTAssertThrowsError(try SafetensorsFile.parse(Data([0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0]) + Data("{}".utf8)))
        XCTAssertThrowsError(try SafetensorsFile.parse(Data(good.prefix(5))))
        let f16 = #"{"x":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#
        var foreign = Data()
        withUnsafeBytes(of: UInt64(f16.utf8.count).littleEndian) { foreign.append(contentsOf: $0) }
        foreign.append(Data(f16.utf8) + Data([0, 0]))
        XCTAssertThrowsError(try SafetensorsFile.parse(foreign)) { XCTAssertTrue("\($0)".contains("F16")) }
        // A valid safetensors file without head tensors is readable but is not a head.
        let plain = try SafetensorsWriter.encode(tensors: [("x", [2], [1, 2])], metadata: [:])
        XCTAssertEqual(try SafetensorsFile.parse(plain).tensors["x"]?.values, [1, 2])
        XCTAssertThrowsError(try SafetensorsFile.parse(plain).head())
    }
}
