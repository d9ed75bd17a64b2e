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

int fs_cpu_has_avx2_fma(void) {
    if (!fs_cpu_has_f16c()) return 0;  // AVX usable, with the OS saving YMM state
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_FMA)) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & bit_AVX2) != 0;
}

__attribute__((target("avx2,fma")))
static inline float fs_sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// NR rows of x against NC rows of w: every x value loaded once serves NC products, every w value NR,
// and the NR·NC independent accumulators hide the FMA latency. Called with constant NR and NC, so
// the accumulator arrays live in registers.
__attribute__((target("avx2,fma"), always_inline))
static inline void fs_dot_tile(const float *x, size_t d, const float *w, size_t k, float *z, int nr, int nc) {
    __m256 acc[4][2];
    for (int i = 0; i < nr; i++)
        for (int c = 0; c < nc; c++) acc[i][c] = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= d; j += 8) {
        __m256 wv[2];
        for (int c = 0; c < nc; c++) wv[c] = _mm256_loadu_ps(w + c * d + j);
        for (int i = 0; i < nr; i++) {
            __m256 xv = _mm256_loadu_ps(x + i * d + j);
            for (int c = 0; c < nc; c++) acc[i][c] = _mm256_fmadd_ps(xv, wv[c], acc[i][c]);
        }
    }
    for (int i = 0; i < nr; i++) {
        for (int c = 0; c < nc; c++) {
            float s = fs_sum8(acc[i][c]);
            for (size_t t = j; t < d; t++) s += x[i * d + t] * w[c * d + t];
            z[i * k + c] = s;
        }
    }
}

__attribute__((target("avx2,fma")))
void fs_rows_dot_rows_avx2(const float *x, size_t rows, size_t d, const float *w, size_t k, float *z) {
    size_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        size_t c = 0;
        for (; c + 2 <= k; c += 2) fs_dot_tile(x + r * d, d, w + c * d, k, z + r * k + c, 4, 2);
        if (c < k) fs_dot_tile(x + r * d, d, w + c * d, k, z + r * k + c, 4, 1);
    }
    for (; r < rows; r++) {
        size_t c = 0;
        for (; c + 2 <= k; c += 2) fs_dot_tile(x + r * d, d, w + c * d, k, z + r * k + c, 1, 2);
        if (c < k) fs_dot_tile(x + r * d, d, w + c * d, k, z + r * k + c, 1, 1);
    }
}

// NV vectors of 8 columns of g for NC classes. The rows' sum starts from zero and is added to g once,
// so g (a running total over many calls) is not the accumulator of every single row's product.
__attribute__((target("avx2,fma"), always_inline))
static inline void fs_outer_tile(const float *dz, size_t rows, size_t k, const float *x, size_t d, float *g, int nc, int nv) {
    __m256 acc[2][4];
    for (int c = 0; c < nc; c++)
        for (int v = 0; v < nv; v++) acc[c][v] = _mm256_setzero_ps();
    for (size_t r = 0; r < rows; r++) {
        __m256 xv[4];
        for (int v = 0; v < nv; v++) xv[v] = _mm256_loadu_ps(x + r * d + 8 * v);
        for (int c = 0; c < nc; c++) {
            __m256 b = _mm256_broadcast_ss(dz + r * k + c);
            for (int v = 0; v < nv; v++) acc[c][v] = _mm256_fmadd_ps(b, xv[v], acc[c][v]);
        }
    }
    for (int c = 0; c < nc; c++)
        for (int v = 0; v < nv; v++) {
            float *out = g + c * d + 8 * v;
            _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), acc[c][v]));
        }
}

__attribute__((target("avx2,fma")))
void fs_add_rows_outer_avx2(const float *dz, size_t rows, size_t k, const float *x, size_t d, float *g) {
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        size_t c = 0;
        for (; c + 2 <= k; c += 2) fs_outer_tile(dz + c, rows, k, x + j, d, g + c * d + j, 2, 4);
        if (c < k) fs_outer_tile(dz + c, rows, k, x + j, d, g + c * d + j, 1, 4);
    }
    for (; j + 8 <= d; j += 8) {
        size_t c = 0;
        for (; c + 2 <= k; c += 2) fs_outer_tile(dz + c, rows, k, x + j, d, g + c * d + j, 2, 1);
        if (c < k) fs_outer_tile(dz + c, rows, k, x + j, d, g + c * d + j, 1, 1);
    }
    for (; j < d; j++) {
        for (size_t c = 0; c < k; c++) {
            float s = 0;
            for (size_t r = 0; r < rows; r++) s += dz[r * k + c] * x[r * d + j];
            g[c * d + j] += s;
        }
    }
}

#else

// Elsewhere the checks say no and Swift never calls the kernels; these only satisfy the linker.
int fs_cpu_has_sse42(void) { return 0; }
int fs_cpu_has_f16c(void) { return 0; }
uint32_t fs_crc32c_sse42(uint32_t state, const uint8_t *bytes, size_t n) { (void)bytes; (void)n; return state; }
void fs_half_to_float_f16c(const uint8_t *src, float *dst, size_t n) { (void)src; (void)dst; (void)n; }
void fs_shuffled_half_to_float_f16c(const uint8_t *src, float *dst, size_t n) { (void)src; (void)dst; (void)n; }
int fs_cpu_has_avx2_fma(void) { return 0; }
void fs_rows_dot_rows_avx2(const float *x, size_t rows, size_t d, const float *w, size_t k, float *z) {
    (void)x; (void)rows; (void)d; (void)w; (void)k; (void)z;
}
void fs_add_rows_outer_avx2(const float *dz, size_t rows, size_t k, const float *x, size_t d, float *g) {
    (void)dz; (void)rows; (void)k; (void)x; (void)d; (void)g;
}

#endif
