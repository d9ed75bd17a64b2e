#include <lz4.h>

// F16C half->float kernels for FeatureCodec's decode path.
//
// They live here because Swift cannot enable CPU features per function and the package builds for
// baseline x86-64, where the best Swift loop converts ~2.5 G values/s (SSE2) and halves the speed
// of decoding f16 payloads; vcvtph2ps does ~8 G values/s. `static inline` keeps this header-only
// (clang compiles it into the importing Swift module), and `target(...)` confines AVX/F16C
// instructions to these functions, which Swift calls only after fc_cpu_has_f16c() says yes.
// Conversions are exact, as in Swift's Float(Float16) (signalling NaNs come back quiet).
#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

/// 1 when the CPU has F16C and the OS saves YMM state (so VEX instructions are usable).
static inline int fc_cpu_has_f16c(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & bit_F16C) || !(c & bit_AVX) || !(c & bit_OSXSAVE)) return 0;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6) == 6;
}

/// Converts n little-endian halves at src (any alignment) to floats.
__attribute__((target("avx,f16c")))
static inline void fc_half_to_float_f16c(const uint8_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    }
    for (; i < n; i++) dst[i] = _cvtsh_ss((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
}

/// Converts n byte-shuffled halves (n low bytes, then n high bytes) at src to floats.
__attribute__((target("avx,f16c")))
static inline void fc_shuffled_half_to_float_f16c(const uint8_t *src, float *dst, size_t n) {
    const uint8_t *lo = src, *hi = src + n;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i l = _mm_loadu_si128((const __m128i *)(lo + i));
        __m128i h = _mm_loadu_si128((const __m128i *)(hi + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_unpacklo_epi8(l, h)));
        _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(_mm_unpackhi_epi8(l, h)));
    }
    for (; i < n; i++) dst[i] = _cvtsh_ss((uint16_t)(lo[i] | hi[i] << 8));
}
#endif
