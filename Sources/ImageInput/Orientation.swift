/// The EXIF Orientation tag (1…8): how the stored pixels must be turned to show the picture upright.
///
/// Read from a JPEG's APP1 Exif segment, a PNG's eXIf chunk, a WebP's EXIF chunk or a TIFF's first IFD (EXIF
/// data is itself a little TIFF). Applied only when the model config asks (`exifOrientation`), as Pillow's
/// `ImageOps.exif_transpose` does; torchvision's loaders ignore it by default.
public enum ExifOrientation {
    /// The tag's value, or 1 (upright) when the file has none or it cannot be read.
    public static func read(_ bytes: UnsafeRawBufferPointer) -> Int {
        let data = bytes.bindMemory(to: UInt8.self)
        guard let format = ImageFormat.detect(data) else { return 1 }
        let value: Int?
        switch format {
        case .jpeg: value = jpegTIFFOffset(data).flatMap { tiffOrientation(data, at: $0) }
        case .png: value = pngTIFFOffset(data).flatMap { tiffOrientation(data, at: $0) }
        case .webp: value = webpTIFFOffset(data).flatMap { tiffOrientation(data, at: $0) }
        case .tiff: value = tiffOrientation(data, at: 0)
        default: value = nil
        }
        guard let value, (1...8).contains(value) else { return 1 }
        return value
    }

    private static func be16(_ d: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int { Int(d[i]) << 8 | Int(d[i + 1]) }
    private static func be32(_ d: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int { be16(d, i) << 16 | be16(d, i + 2) }
    private static func le32(_ d: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int {
        Int(d[i]) | Int(d[i + 1]) << 8 | Int(d[i + 2]) << 16 | Int(d[i + 3]) << 24
    }

    private static let exifHeader: [UInt8] = Array("Exif".utf8) + [0, 0]

    private static func hasExifHeader(_ d: UnsafeBufferPointer<UInt8>, at i: Int) -> Bool {
        i + 6 <= d.count && Array(d[i..<(i + 6)]) == exifHeader
    }

    /// Walks the JPEG's marker segments up to the first scan, looking for APP1 "Exif\0\0".
    private static func jpegTIFFOffset(_ d: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 2
        while i + 4 <= d.count, d[i] == 0xFF {
            let marker = d[i + 1]
            if marker == 0xDA || marker == 0xD9 { return nil }
            let length = be16(d, i + 2)
            if marker == 0xE1 && hasExifHeader(d, at: i + 4) { return i + 10 }
            i += 2 + length
        }
        return nil
    }

    /// Walks the PNG's chunks up to the first IDAT, looking for eXIf.
    private static func pngTIFFOffset(_ d: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 8
        while i + 8 <= d.count {
            let length = be32(d, i)
            let type = String(decoding: d[(i + 4)..<(i + 8)], as: UTF8.self)
            if type == "eXIf" { return i + 8 }
            if type == "IDAT" || type == "IEND" { return nil }
            i += 12 + length
        }
        return nil
    }

    /// Walks the WebP's RIFF chunks for EXIF (its payload sometimes keeps the JPEG-style "Exif\0\0" prefix).
    private static func webpTIFFOffset(_ d: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 12
        while i + 8 <= d.count {
            let length = le32(d, i + 4)
            if String(decoding: d[i..<(i + 4)], as: UTF8.self) == "EXIF" {
                return hasExifHeader(d, at: i + 8) ? i + 14 : i + 8
            }
            i += 8 + length + (length & 1)
        }
        return nil
    }

    /// Tag 0x0112 of the first IFD of the (classic) TIFF structure starting at `base`.
    private static func tiffOrientation(_ d: UnsafeBufferPointer<UInt8>, at base: Int) -> Int? {
        guard base + 8 <= d.count else { return nil }
        let little: Bool
        switch (d[base], d[base + 1]) {
        case (0x49, 0x49): little = true
        case (0x4D, 0x4D): little = false
        default: return nil
        }
        func u16(_ i: Int) -> Int? {
            guard i >= 0, i + 2 <= d.count else { return nil }
            return little ? Int(d[i]) | Int(d[i + 1]) << 8 : be16(d, i)
        }
        func u32(_ i: Int) -> Int? {
            guard let lo = u16(little ? i : i + 2), let hi = u16(little ? i + 2 : i) else { return nil }
            return hi << 16 | lo
        }
        guard u16(base + 2) == 42, let ifd = u32(base + 4), let count = u16(base + ifd) else { return nil }
        for entry in 0..<min(count, 1000) {
            let at = base + ifd + 2 + entry * 12
            guard let tag = u16(at) else { return nil }
            if tag == 0x0112 { return u16(at + 8) }
        }
        return nil
    }
}

extension RGBImage {
    /// The picture turned upright for EXIF orientation `value` (Pillow's `exif_transpose` transposition for each
    /// value); 1 and unknown values return it unchanged.
    public func oriented(_ value: Int) -> RGBImage {
        guard (2...8).contains(value) else { return self }
        let swaps = value >= 5
        let (outWidth, outHeight) = swaps ? (height, width) : (width, height)
        let w = width, h = height
        // Source pixel for output (x, y), per Pillow's method for each orientation.
        let source: (Int, Int) -> (Int, Int)
        switch value {
        case 2: source = { x, y in (w - 1 - x, y) }                 // FLIP_LEFT_RIGHT
        case 3: source = { x, y in (w - 1 - x, h - 1 - y) }         // ROTATE_180
        case 4: source = { x, y in (x, h - 1 - y) }                 // FLIP_TOP_BOTTOM
        case 5: source = { x, y in (y, x) }                         // TRANSPOSE
        case 6: source = { x, y in (y, h - 1 - x) }                 // ROTATE_270
        case 7: source = { x, y in (w - 1 - y, h - 1 - x) }         // TRANSVERSE
        default: source = { x, y in (w - 1 - y, x) }                // ROTATE_90
        }
        let pixels = [UInt8](unsafeUninitializedCapacity: outWidth * outHeight * 3) { out, count in
            self.pixels.withUnsafeBufferPointer { input in
                for y in 0..<outHeight {
                    for x in 0..<outWidth {
                        let (sx, sy) = source(x, y)
                        let from = (sy * w + sx) * 3, to = (y * outWidth + x) * 3
                        out[to] = input[from]
                        out[to + 1] = input[from + 1]
                        out[to + 2] = input[from + 2]
                    }
                }
            }
            count = outWidth * outHeight * 3
        }
        return RGBImage(width: outWidth, height: outHeight, pixels: pixels)
    }
}
