import Foundation

/// NumPy `.npy` encoding of little-endian C-order arrays: the one writer of the format in this package.
///
/// Headers are version 1.0, or 2.0 when the header dict would pass 64 KiB (1.0 stores its length in
/// two bytes), padded with spaces so the data starts on a 64-byte boundary as NumPy writes them.
public enum NumpyEncoding {
    /// The magic, version, header length and header dict for an array of dtype `descr` (for example
    /// `<f4`, `<f2`, `<i8`) and `shape`. With `minimumLength`, the dict is padded so the whole header is
    /// at least that long, which lets a writer rewrite it in place once the row count is known.
    public static func header(descr: String, shape: [Int], minimumLength: Int = 0) -> Data {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dictionary = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        // Padding adds at most 64 bytes (plus what minimumLength asks for); version 1.0 stores the length in two bytes.
        let isVersion1 = dictionary.utf8.count + 64 + max(0, minimumLength) <= 65535
        let prefixLength = isVersion1 ? 10 : 12
        var unpadded = prefixLength + dictionary.utf8.count + 1
        if unpadded < minimumLength {
            dictionary += String(repeating: " ", count: minimumLength - unpadded)
            unpadded = minimumLength
        }
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

    /// The values' little-endian IEEE bits.
    public static func littleEndianBytes(_ values: [Float]) -> Data {
        values.map(\.bitPattern.littleEndian).withUnsafeBytes { Data($0) }
    }
}

/// A `.npy` file of `[rows, width]` written row batch by row batch, whose row count is known only at
/// the end. It is written as `NAME.partial` and renamed over `url` by `finish()`, so a failed or
/// interrupted write never leaves a plausible-looking but short file under the real name.
public final class NumpyStreamWriter {
    private let url: URL
    private let partial: URL
    private let handle: FileHandle
    private let descr: String
    private let width: Int
    private var finished = false
    /// Rows appended so far.
    public private(set) var rows = 0
    /// Room for any row count: the header is rewritten in place at the end, so its length must not change.
    private static let headerLength = 128

    /// Starts `url.partial` with a header for zero rows of `width` values of dtype `descr`.
    public init(url: URL, descr: String, width: Int) throws {
        self.url = url
        partial = url.appendingPathExtension("partial")
        self.descr = descr
        self.width = width
        FileManager.default.createFile(atPath: partial.path, contents: nil)
        handle = try FileHandle(forWritingTo: partial)
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: NumpyEncoding.header(descr: descr, shape: [0, width], minimumLength: Self.headerLength))
    }

    /// Appends `rows` rows whose little-endian bytes are `bytes`.
    public func append(_ bytes: UnsafeRawBufferPointer, rows count: Int) throws {
        guard count > 0 else { return }
        try handle.write(contentsOf: Data(bytes))
        rows += count
    }

    /// Appends whole rows of `<f4` values.
    public func append(_ values: [Float]) throws {
        try values.withUnsafeBufferPointer { try append($0) }
    }

    /// Appends whole rows of `<f4` values.
    public func append(_ values: UnsafeBufferPointer<Float>) throws {
        precondition(values.count % width == 0, "\(values.count) values are not whole rows of \(width)")
        #if _endian(little)
        try append(UnsafeRawBufferPointer(values), rows: values.count / width)
        #else
        try values.map(\.bitPattern.littleEndian).withUnsafeBytes { try append($0, rows: values.count / width) }
        #endif
    }

    /// Writes the final header, syncs and renames the file into place.
    public func finish() throws {
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: NumpyEncoding.header(descr: descr, shape: [rows, width], minimumLength: Self.headerLength))
        try handle.synchronize()
        try handle.close()
        finished = true
        if FileManager.default.fileExists(atPath: url.path) { try FileManager.default.removeItem(at: url) }
        try FileManager.default.moveItem(at: partial, to: url)
    }

    /// Closes and deletes the partial file (after an error).
    public func discard() {
        guard !finished else { return }
        finished = true
        try? handle.close()
        try? FileManager.default.removeItem(at: partial)
    }
}
