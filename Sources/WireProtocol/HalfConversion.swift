import CSIMDKernels

/// Bulk Float32 ↔ IEEE binary16 conversion on bit patterns.
///
/// Swift's `Float16(x)` / `Float(h)` compile to a libcall per element (`__truncsfhf2`,
/// `__extendhfsf2`) for the baseline x86-64 target. These branch-free formulations (after
/// F. Giesen, "half_to_float_fast5" / "float_to_half_fast3_rtne") compile to SSE2 ops that LLVM
/// vectorizes, and give bit-identical results to `Float16` for every non-NaN value (NaNs stay
/// NaN; payload bits are not guaranteed). Half-to-float, the decode hot path, additionally uses
/// F16C kernels from CSIMDKernels when the CPU has them, with the same results.
public enum HalfConversion {
    /// The binary16 bits nearest to `x`, ties to even; overflow gives ±infinity, NaN gives a quiet NaN.
    @inline(__always)
    public static func halfBits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let sign = bits & 0x8000_0000
        let a = bits ^ sign
        // Values below 2^-14 become subnormal halves: adding 0.5 (exponent 126) aligns the 10
        // mantissa bits at the bottom so the FPU's own round-to-nearest-even does the rounding.
        let denormMagic: UInt32 = 126 << 23
        let subnormal = (Float(bitPattern: a) + Float(bitPattern: denormMagic)).bitPattern &- denormMagic
        // Normal halves: rebias the exponent (-112) and round by adding 0xfff plus the lowest kept bit.
        let mantissaOdd = (a >> 13) & 1
        let normal = (a &+ 0xC800_0FFF &+ mantissaOdd) >> 13
        let infOrNaN: UInt32 = a > 0x7F80_0000 ? 0x7E00 : 0x7C00
        var o = a < (113 << 23) ? subnormal : normal
        o = a >= (143 << 23) ? infOrNaN : o
        return UInt16(truncatingIfNeeded: o | (sign >> 16))
    }

    /// The Float32 value of binary16 bits `h` (exact: every half is representable).
    @inline(__always)
    public static func float(fromHalfBits h: UInt16) -> Float {
        let h32 = UInt32(h)
        // Placing exponent+mantissa 13 bits up gives a float 2^-112 times too small; one multiply
        // rebiases it and also normalizes half subnormals.
        let scaled = Float(bitPattern: (h32 & 0x7FFF) << 13) * Float(bitPattern: (254 - 15) << 23)
        var o = scaled.bitPattern
        // Half exponent 31 (Inf/NaN) lands at 2^16 or above; force the f32 exponent to all ones.
        o = scaled >= Float(bitPattern: (127 + 16) << 23) ? o | (255 << 23) : o
        return Float(bitPattern: o | ((h32 & 0x8000) << 16))
    }

    /// Converts `count` floats to little-endian binary16 values at `destination` (any alignment,
    /// `2 * count` bytes).
    public static func toHalf(_ source: UnsafePointer<Float>, into destination: UnsafeMutableRawPointer,
                              count: Int) {
        for i in 0..<count {
            destination.storeBytes(of: halfBits(source[i]).littleEndian, toByteOffset: 2 &* i, as: UInt16.self)
        }
    }

    /// Converts `count` floats to binary16 and writes them byte-shuffled: low bytes in the first
    /// `count` bytes of `destination`, high bytes in the next `count`.
    ///
    /// Fusing the shuffle into the conversion saves a pass over the data on the encode path.
    public static func toShuffledHalf(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<UInt8>,
                                      count: Int) {
        let lo = destination, hi = destination + count
        for i in 0..<count {
            let h = halfBits(source[i])
            lo[i] = UInt8(truncatingIfNeeded: h)
            hi[i] = UInt8(truncatingIfNeeded: h >> 8)
        }
    }

    /// Whether the F16C kernels in CSIMDKernels may run; cpuid is asked once because it is slow
    /// (a VM exit under most hypervisors).
    static let hasF16C: Bool = {
        #if arch(x86_64)
        return fs_cpu_has_f16c() != 0
        #else
        return false
        #endif
    }()

    /// Converts `count` little-endian binary16 values at `source` (any alignment) to floats.
    public static func toFloat(_ source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>,
                               count: Int) {
        #if arch(x86_64)
        if hasF16C {
            return fs_half_to_float_f16c(source.assumingMemoryBound(to: UInt8.self), destination, count)
        }
        #endif
        portableToFloat(source, into: destination, count: count)
    }

    /// Converts `count` byte-shuffled binary16 values (low-byte plane, then high-byte plane) to floats.
    ///
    /// Fusing the unshuffle into the conversion saves a pass over the data on the decode path.
    public static func shuffledToFloat(_ source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>,
                                       count: Int) {
        #if arch(x86_64)
        if hasF16C {
            return fs_shuffled_half_to_float_f16c(source.assumingMemoryBound(to: UInt8.self), destination, count)
        }
        #endif
        portableShuffledToFloat(source, into: destination, count: count)
    }

    // Scalar on purpose: LLVM vectorizes these loops (4 lanes of SSE2, ~2.5 G values/s); hand-written
    // SIMD16 code was 15x slower because generic SIMD conversions are not lowered to vector ops.
    static func portableToFloat(_ source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>,
                                count: Int) {
        let s = source.assumingMemoryBound(to: UInt8.self)
        for i in 0..<count {
            destination[i] = float(fromHalfBits: UInt16(s[2 &* i]) | UInt16(s[2 &* i &+ 1]) << 8)
        }
    }

    static func portableShuffledToFloat(_ source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>,
                                        count: Int) {
        let lo = source.assumingMemoryBound(to: UInt8.self)
        let hi = lo + count
        for i in 0..<count {
            destination[i] = float(fromHalfBits: UInt16(lo[i]) | UInt16(hi[i]) << 8)
        }
    }
}
