import CSIMDKernels

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the frame trailer and store record checksum.
///
/// Castagnoli rather than the zlib polynomial because it has a better Hamming distance at frame
/// sizes and is what iSCSI, ext4 and most storage formats use, and because x86-64 (SSE4.2 `crc32`)
/// computes it in hardware: the head checks every byte it receives and every byte it stores, and
/// the SSE4.2 kernel (three interleaved streams, in CSIMDKernels) does that ~10x faster than the
/// table loop. Slicing-by-16 in plain Swift is the fallback for CPUs without it.
public enum CRC32C {
    /// The standard check value: `checksum("123456789".utf8) == 0xE306_9283`.
    public static let checkValue: UInt32 = 0xE306_9283

    /// Sixteen 256-entry tables, table k at `k * 256`; table 0 is the classic byte-wise table.
    private static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 16 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[i] = c
        }
        for k in 1..<16 {
            for i in 0..<256 {
                let prev = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (prev >> 8) ^ t[Int(prev & 0xFF)]
            }
        }
        return t
    }()

    /// The CRC-32C of `bytes`, continuing from `seed`, the finished CRC of the bytes before them.
    ///
    /// Promises `checksum(b, seed: checksum(a)) == checksum(a + b)`, so a frame can be checked in pieces.
    @inlinable
    public static func checksum(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, seed: seed) }
    }

    /// Whether the SSE4.2 kernel may run; cpuid is asked once because it is slow (a VM exit under
    /// most hypervisors).
    static let hasSSE42 = fs_cpu_has_sse42() != 0

    /// The CRC-32C of the bytes in `buffer`, continuing from `seed` (0 for a fresh checksum).
    public static func checksum(_ buffer: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return seed }
        if hasSSE42 {
            return ~fs_crc32c_sse42(~seed, base.assumingMemoryBound(to: UInt8.self), buffer.count)
        }
        return portableChecksum(buffer, seed: seed)
    }

    /// The table-driven CRC-32C, for CPUs without SSE4.2 (and to check the kernel against).
    static func portableChecksum(_ buffer: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard var p = buffer.baseAddress, buffer.count > 0 else { return seed }
        var n = buffer.count
        var crc = ~seed
        return tables.withUnsafeBufferPointer { tb -> UInt32 in
            let t = tb.baseAddress!
            // Bring p to 8-byte alignment so the wide loads below are aligned.
            while n > 0 && (UInt(bitPattern: p) & 7) != 0 {
                crc = t[Int((crc ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (crc >> 8)
                p += 1
                n -= 1
            }
            while n >= 16 {
                let w0 = UInt64(littleEndian: p.load(as: UInt64.self))
                let w1 = UInt64(littleEndian: p.load(fromByteOffset: 8, as: UInt64.self))
                let a = UInt32(truncatingIfNeeded: w0) ^ crc
                let b = UInt32(truncatingIfNeeded: w0 >> 32)
                let c = UInt32(truncatingIfNeeded: w1)
                let d = UInt32(truncatingIfNeeded: w1 >> 32)
                crc = t[15 * 256 + Int(a & 0xFF)] ^ t[14 * 256 + Int((a >> 8) & 0xFF)]
                    ^ t[13 * 256 + Int((a >> 16) & 0xFF)] ^ t[12 * 256 + Int(a >> 24)]
                    ^ t[11 * 256 + Int(b & 0xFF)] ^ t[10 * 256 + Int((b >> 8) & 0xFF)]
                    ^ t[9 * 256 + Int((b >> 16) & 0xFF)] ^ t[8 * 256 + Int(b >> 24)]
                    ^ t[7 * 256 + Int(c & 0xFF)] ^ t[6 * 256 + Int((c >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((c >> 16) & 0xFF)] ^ t[4 * 256 + Int(c >> 24)]
                    ^ t[3 * 256 + Int(d & 0xFF)] ^ t[2 * 256 + Int((d >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((d >> 16) & 0xFF)] ^ t[Int(d >> 24)]
                p += 16
                n -= 16
            }
            while n > 0 {
                crc = t[Int((crc ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (crc >> 8)
                p += 1
                n -= 1
            }
            return ~crc
        }
    }
}
