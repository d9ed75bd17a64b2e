import Foundation
import NumpyFormat
import XCTest
@testable import HeadExport

final class FeatureExportTests: XCTestCase {
    func testNumpyReadsShapesDtypesAndValues() throws {
        let scratch = try makeScratchDirectory(self)
        try requirePython(["numpy"], scratch: scratch)
        let rows = 5, dimension = 3
        let features = (0..<(rows * dimension)).map { Float($0) * 0.5 - 2.25 }
        let labels: [Int32] = [0, 2, 1, 2, -1]
        let indexes: [UInt64] = [0, 7, 1 << 40, 3, UInt64(Int64.max)]
        let keys = ["a/1.jpg", "b/2.png", "ü/3.jpg", "shard-0001/x", "k\"5"]
        let out = scratch.appendingPathComponent("export")
        try FeatureExport.exportNumpy(
            features: features, rows: rows, dimension: dimension, labels: labels, indexes: indexes, keys: keys,
            classNames: ["cat", "dog", "eel"],
            backbone: BackboneDescription(name: "efficientnet-lite0", featureNode: "features", normalization: "(x-127)/128"), to: out)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("features.npy.partial").path))

        let script = """
        import json, sys, numpy as np
        d = sys.argv[1]
        f = np.load(d + '/features.npy'); l = np.load(d + '/labels.npy'); i = np.load(d + '/indexes.npy')
        m = json.load(open(d + '/metadata.json'))
        assert f.dtype == np.float32 and f.shape == (5, 3), (f.dtype, f.shape)
        assert np.array_equal(f.ravel(), np.arange(15, dtype=np.float32) * 0.5 - 2.25)
        assert l.dtype == np.int64 and l.tolist() == [0, 2, 1, 2, -1], (l.dtype, l)
        assert i.dtype == np.int64 and i.tolist() == [0, 7, 1 << 40, 3, 2**63 - 1], (i.dtype, i)
        assert m['rows'] == 5 and m['dimension'] == 3 and m['format'] == 'featurestream-features'
        assert m['keys'] == ['a/1.jpg', 'b/2.png', 'ü/3.jpg', 'shard-0001/x', 'k"5'], m['keys']
        assert m['classNames'] == ['cat', 'dog', 'eel'] and m['backbone']['featureNode'] == 'features'
        for name in ('features', 'labels', 'indexes'):
            raw = open(d + '/' + name + '.npy', 'rb').read(12)
            assert raw[6] == 1 and (10 + int.from_bytes(raw[8:10], 'little')) % 64 == 0, name
        print('ok')
        """
        let result = try runProgram(["python3", "-c", script, out.path], in: scratch)
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stdout, "ok\n")
    }

    func testStreamingChunksWriteTheSameFileAsOneArray() throws {
        let scratch = try makeScratchDirectory(self)
        let features = (0..<24).map(Float.init)
        let common = (labels: [Int32](repeating: 1, count: 6), indexes: (0..<6).map(UInt64.init), keys: (0..<6).map { "k\($0)" })
        let whole = scratch.appendingPathComponent("whole"), streamed = scratch.appendingPathComponent("streamed")
        try FeatureExport.exportNumpy(features: features, rows: 6, dimension: 4, labels: common.labels, indexes: common.indexes, keys: common.keys, classNames: ["x"], to: whole)
        let chunks = [Array(features[0..<8]), [], Array(features[8..<24])]
        try FeatureExport.exportNumpy(featureChunks: chunks, rows: 6, dimension: 4, labels: common.labels, indexes: common.indexes, keys: common.keys, classNames: ["x"], to: streamed)
        for name in ["features.npy", "labels.npy", "indexes.npy", "metadata.json"] {
            XCTAssertEqual(try Data(contentsOf: whole.appendingPathComponent(name)), try Data(contentsOf: streamed.appendingPathComponent(name)), name)
        }
    }

    func testShortStreamsAndMismatchedCountsLeaveNoFeatureFile() throws {
        let scratch = try makeScratchDirectory(self)
        let out = scratch.appendingPathComponent("short")
        XCTAssertThrowsError(try FeatureExport.exportNumpy(
            featureChunks: [[1, 2, 3, 4]], rows: 2, dimension: 4, labels: [0, 0], indexes: [0, 1], keys: ["a", "b"], classNames: ["x"], to: out)) {
            XCTAssertTrue("\($0)".contains("hold 1 rows"), "\($0)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), [])
        XCTAssertThrowsError(try FeatureExport.exportNumpy(
            features: [1, 2], rows: 2, dimension: 1, labels: [0], indexes: [0, 1], keys: ["a", "b"], classNames: ["x"], to: out))
        XCTAssertThrowsError(try FeatureExport.exportNumpy(
            features: [1], rows: 1, dimension: 1, labels: [0], indexes: [UInt64.max], keys: ["a"], classNames: ["x"], to: out))
    }

    func testNumpyHeadersAreAlignedVersion1Headers() {
        let header = NumpyEncoding.header(descr: "<i8", shape: [3])
        XCTAssertEqual(header.count % 64, 0, "data starts on a 64-byte boundary, as NumPy aligns it")
        XCTAssertEqual(Array(header.prefix(8)), [0x93] + Array("NUMPY".utf8) + [1, 0])
        XCTAssertEqual(Int(header[8]) | Int(header[9]) << 8, header.count - 10)
        let text = String(decoding: header.dropFirst(10), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"), text)
        XCTAssertTrue(text.hasSuffix(" \n"))
        XCTAssertTrue(String(decoding: NumpyEncoding.header(descr: "<f4", shape: [2, 5]), as: UTF8.self).contains("'shape': (2, 5)"))
    }
}
