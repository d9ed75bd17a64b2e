#include "simd_kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <string.h>

int fs_cpu_has_sse42(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & bit_SSE4_2) != 0;
}

int fs_cpu_has_f16c(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & bit_F16C) || !(c & bit_AVX) || !(c & bit_OSXSAVE)) return 0;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6) == 6;
}

// Three independent streams hide the crc32 instruction's 3-cycle latency; their registers are
// merged by CRC arithmetic: carrying a register over a block of zero bytes is a fixed linear map,
// done here with a 4x256 table. Below 3 blocks the single-stream loop is as fast.
#define FS_CRC_BLOCK 4096

static uint32_t crc_shift_table[4][256];
static pthread_once_t crc_shift_once = PTHREAD_ONCE_INIT;

// The register after feeding `zeros` zero bytes, as a linear function of the register before.
__attribute__((target("sse4.2")))
static uint32_t crc_shift_slow(uint32_t state, size_t zeros) {
    uint64_t s = state;
    for (size_t i = 0; i < zeros / 8; i++) s = _mm_crc32_u64(s, 0);
    return (uint32_t)s;
}

__attribute__((target("sse4.2")))
static void crc_shift_init(void) {
    for (int byte = 0; byte < 4; byte++) {
        for (int v = 0; v < 256; v++) {
            crc_shift_table[byte][v] = crc_shift_slow((uint32_t)v << (8 * byte), FS_CRC_BLOCK);
        }
    }
}

// The register `s` carried over one block of zero bytes.
static inline uint32_t crc_shift(uint32_t s) {
    return crc_shift_table[0][s & 0xff] ^ crc_shift_table[1][(s >> 8) & 0xff]
         ^ crc_shift_table[2][(s >> 16) & 0xff] ^ crc_shift_table[3][s >> 24];
}

__attribute__((target("sse4.2")))
uint32_t fs_crc32c_sse42(uint32_t state, const uint8_t *p, size_t n) {
    uint64_t s = state;
    while (n > 0 && ((uintptr_t)p & 7) != 0) { s = _mm_crc32_u8((uint32_t)s, *p++); n--; }
    if (n >= 3 * FS_CRC_BLOCK) {
        pthread_once(&crc_shift_once, crc_shift_init);
        while (n >= 3 * FS_CRC_BLOCK) {
            uint64_t s0 = s, s1 = 0, s2 = 0;
            const uint8_t *p1 = p + FS_CRC_BLOCK, *p2 = p + 2 * FS_CRC_BLOCK;
            for (size_t i = 0; i < FS_CRC_BLOCK; i += 8) {
                uint64_t w0, w1, w2;
                memcpy(&w0, p + i, 8); memcpy(&w1, p1 + i, 8); memcpy(&w2, p2 + i, 8);
                s0 = _mm_crc32_u64(s0, w0);
                s1 = _mm_crc32_u64(s1, w1);
                s2 = _mm_crc32_u64(s2, w2);
            }
            // With a zero start register, stream k's result is exactly its contribution; the
            // earlier streams' registers are carried over the bytes that follow them.
            s = crc_shift(crc_shift((uint32_t)s0) ^ (uint32_t)s1) ^ (uint32_t)s2;
            p += 3 * FS_CRC_BLOCK;
            n -= 3 * FS_CRC_BLOCK;
        }
    }
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); s = _mm_crc32_u64(s, w); p += 8; n -= 8; }
    while (n > 0) { s = _mm_crc32_u8((uint32_t)s, *p++); n--; }
    return (uint32_t)s;
}

__attribute__((target("avx,f16c")))
void fs_half_to_float_f16c(const uint8_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    }
    for (; i < n; i++) dst[i] = _cvtsh_ss((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
}

__attribute__((target("avx,f16c")))
void fs_shuffled_half_to_float_f16c(const uint8_t *src, float *dst, size_t n) {
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

#else

// Elsewhere the checks say no and Swift never calls the kernels; these only satisfy the linker.
int fs_cpu_has_sse42(void) { return 0; }
int fs_cpu_has_f16c(void) { return 0; }
uint32_t fs_crc32c_sse42(uint32_t state, const uint8_t *bytes, size_t n) { (void)bytes; (void)n; return state; }
void fs_half_to_float_f16c(const uint8_t *src, float *dst, size_t n) { (void)src; (void)dst; (void)n; }
void fs_shuffled_half_to_float_f16c(const uint8_t *src, float *dst, size_t n) { (void)src; (void)dst; (void)n; }

#endif
