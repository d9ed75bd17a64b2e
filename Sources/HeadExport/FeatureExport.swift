import Foundation
import NumpyFormat

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
        try exportNumpy(rows: rows, dimension: dimension, labels: labels, indexes: indexes, keys: keys, classNames: classNames,
                        backbone: backbone, to: directory) { emit in
            for chunk in featureChunks { try chunk.withUnsafeBufferPointer { try emit($0) } }
        }
    }

    /// Writes all four files; `features` calls its argument with consecutive blocks of whole rows
    /// (row-major), which go to `features.npy` as they come, so the export holds one block at a time.
    public static func exportNumpy(
        rows: Int, dimension: Int, labels: [Int32], indexes: [UInt64], keys: [String],
        classNames: [String], backbone: BackboneDescription? = nil, to directory: URL,
        features: (_ emit: (UnsafeBufferPointer<Float>) throws -> Void) throws -> Void
    ) throws {
        func fail(_ reason: String) -> HeadExportError { .invalidArguments(reason) }
        guard rows >= 0, dimension > 0 else { throw fail("rows must be ≥ 0 and dimension > 0") }
        guard labels.count == rows, indexes.count == rows, keys.count == rows else {
            throw fail("\(rows) rows but \(labels.count) labels, \(indexes.count) indexes and \(keys.count) keys")
        }
        if let bad = indexes.first(where: { $0 > UInt64(Int64.max) }) {
            throw fail("index \(bad) does not fit the int64 that NumPy readers expect")
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)

        let writer = try NumpyStreamWriter(url: directory.appendingPathComponent("features.npy"), descr: "<f4", width: dimension)
        do {
            try features { chunk in
                guard chunk.count % dimension == 0 else {
                    throw fail("a feature chunk of \(chunk.count) values is not a whole number of \(dimension)-wide rows")
                }
                guard writer.rows + chunk.count / dimension <= rows else { throw fail("feature chunks hold more than \(rows) rows") }
                try writer.append(chunk)
            }
            guard writer.rows == rows else { throw fail("feature chunks hold \(writer.rows) rows, expected \(rows)") }
        } catch {
            writer.discard()
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
        do {
            for (name, bytes) in smallFiles {
                try bytes.write(to: directory.appendingPathComponent(name), options: .atomic)
            }
            try writer.finish()
        } catch {
            writer.discard()
            throw error
        }
    }
}
