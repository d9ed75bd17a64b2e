import Foundation

/// The backbone facts recorded in `metadata.json` beside exported features, so a consumer can
/// tell which model and preprocessing produced the vectors.
public struct BackboneDescription: Codable, Sendable, Equatable {
    /// The model's name, for example `efficientnet-lite0`.
    public var name: String
    /// The tensor the features were read from, for example `features`.
    public var featureNode: String
    /// How input pixels were normalised, in whatever words the model config uses.
    public var normalization: String

    /// Gathers the description.
    public init(name: String, featureNode: String, normalization: String) {
        self.name = name
        self.featureNode = featureNode
        self.normalization = normalization
    }
}

/// The `featstream export-features` backend: writes extracted features in plain NumPy files.
///
/// A directory holds `features.npy` (`float32 [rows, dimension]`), `labels.npy` (`int64 [rows]`),
/// `indexes.npy` (`int64 [rows]`) and `metadata.json` (`rows`, `dimension`, `keys`,
/// `classNames`, `backbone`, `format`), loadable with `numpy.load` and `json.load`.
public enum FeatureExport {
    /// The `format` value in `metadata.json`.
    public static let formatName = "featurestream-features"

    /// The contents of `metadata.json`.
    public struct Metadata: Codable, Sendable, Equatable {
        /// Always `FeatureExport.formatName`.
        public var format: String
        /// Number of feature rows.
        public var rows: Int
        /// Length of every feature row.
        public var dimension: Int
        /// One key per row (the image's dataset key), in row order.
        public var keys: [String]
        /// Names of the label values: label `i` is `classNames[i]`.
        public var classNames: [String]
        /// Which backbone produced the features, when known.
        public var backbone: BackboneDescription?
    }

    /// Writes all four files for features held in memory (`rows × dimension`, row-major).
    /// Throws `HeadExportError.invalidArguments` when counts disagree or an index exceeds `Int64.max`.
    public static func exportNumpy(
        features: [Float], rows: Int, dimension: Int, labels: [Int32], indexes: [UInt64], keys: [String],
        classNames: [String], backbone: BackboneDescription? = nil, to directory: URL
    ) throws {
        guard features.count == rows * dimension else {
            throw HeadExportError.invalidArguments("\(features.count) feature values do not make \(rows) rows of \(dimension)")
        }
        try exportNumpy(
            featureChunks: CollectionOfOne(features), rows: rows, dimension: dimension, labels: labels,
            indexes: indexes, keys: keys, classNames: classNames, backbone: backbone, to: directory)
    }

    /// Writes all four files, streaming features from `featureChunks` so a corpus larger than
    /// memory exports in constant space. Each chunk holds whole rows, row-major; together they must
    /// hold exactly `rows` rows. Files are written under temporary names and renamed at the end, so
    /// a failed export never leaves a plausible-looking but short `features.npy`.
    public static func exportNumpy<Chunks: Sequence>(
        featureChunks: Chunks, rows: Int, dimension: Int, labels: [Int32], indexes: [UInt64], keys: [String],
        classNames: [String], backbone: BackboneDescription? = nil, to directory: URL
    ) throws where Chunks.Element == [Float] {
        func fail(_ reason: String) -> HeadExportError { .invalidArguments(reason) }
        guard rows >= 0, dimension > 0 else { throw fail("rows must be ≥ 0 and dimension > 0") }
        guard labels.count == rows, indexes.count == rows, keys.count == rows else {
            throw fail("\(rows) rows but \(labels.count) labels, \(indexes.count) indexes and \(keys.count) keys")
        }
        if let bad = indexes.first(where: { $0 > UInt64(Int64.max) }) {
            throw fail("index \(bad) does not fit the int64 that NumPy readers expect")
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)

        let pending = ".partial"
        let featuresURL = directory.appendingPathComponent("features.npy")
        let partialFeatures = directory.appendingPathComponent("features.npy" + pending)
        FileManager.default.createFile(atPath: partialFeatures.path, contents: nil)
        let handle = try FileHandle(forWritingTo: partialFeatures)
        do {
            try handle.write(contentsOf: NumpyEncoding.header(descr: "<f4", shape: [rows, dimension]))
            var written = 0
            for chunk in featureChunks {
                guard chunk.count % dimension == 0 else {
                    throw fail("a feature chunk of \(chunk.count) values is not a whole number of \(dimension)-wide rows")
                }
                written += chunk.count / dimension
                guard written <= rows else { throw fail("feature chunks hold more than \(rows) rows") }
                try handle.write(contentsOf: NumpyEncoding.littleEndianBytes(chunk))
            }
            guard written == rows else { throw fail("feature chunks hold \(written) rows, expected \(rows)") }
            try handle.close()
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(at: partialFeatures)
            throw error
        }

        let metadata = Metadata(
            format: formatName, rows: rows, dimension: dimension, keys: keys, classNames: classNames, backbone: backbone)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let smallFiles: [(String, Data)] = [
            ("labels.npy", NumpyEncoding.int64Array(labels.map(Int64.init))),
            ("indexes.npy", NumpyEncoding.int64Array(indexes.map { Int64($0) })),
            ("metadata.json", try encoder.encode(metadata)),
        ]
        for (name, bytes) in smallFiles {
            try bytes.write(to: directory.appendingPathComponent(name), options: .atomic)
        }
        if FileManager.default.fileExists(atPath: featuresURL.path) {
            try FileManager.default.removeItem(at: featuresURL)
        }
        try FileManager.default.moveItem(at: partialFeatures, to: featuresURL)
    }
}

/// NumPy `.npy` (format 1.0, or 2.0 for headers over 64 KiB) encoding of little-endian arrays.
public enum NumpyEncoding {
    /// The magic, version, header length and header dict for a C-order array of dtype `descr`
    /// (for example `<f4`, `<i8`) and `shape`, padded so the data starts on a 64-byte boundary
    /// as NumPy itself writes it.
    public static func header(descr: String, shape: [Int]) -> Data {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dictionary = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        // Padding adds at most 64 bytes; version 1.0 stores the length in two bytes.
        let isVersion1 = dictionary.utf8.count + 64 <= 65535
        let prefixLength = isVersion1 ? 10 : 12
        let unpadded = prefixLength + dictionary.utf8.count + 1
        dictionary += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [isVersion1 ? 1 : 2, 0])
        let length = dictionary.utf8.count
        if isVersion1 {
            data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        } else {
            withUnsafeBytes(of: UInt32(length).littleEndian) { data.append(contentsOf: $0) }
        }
        data.append(contentsOf: Array(dictionary.utf8))
        return data
    }

    /// A complete `.npy` file of dtype `<f4` with the given shape.
    public static func float32Array(_ values: [Float], shape: [Int]) -> Data {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        return header(descr: "<f4", shape: shape) + littleEndianBytes(values)
    }

    /// A complete one-dimensional `.npy` file of dtype `<i8`.
    public static func int64Array(_ values: [Int64]) -> Data {
        header(descr: "<i8", shape: [values.count]) + values.map(\.littleEndian).withUnsafeBytes { Data($0) }
    }

    static func littleEndianBytes(_ values: [Float]) -> Data {
        values.map(\.bitPattern.littleEndian).withUnsafeBytes { Data($0) }
    }
}
