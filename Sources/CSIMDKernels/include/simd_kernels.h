// CPU-specific kernels that Swift cannot express: the package builds for baseline x86-64, and Swift
// cannot enable instruction sets per function. Each kernel here is compiled with `target(...)` for
// its instructions only, and Swift calls it only after the matching `fs_cpu_has_*` said yes, so the
// binary still runs on any x86-64. On other architectures the checks answer 0 and the kernels are
// absent; Swift then takes its portable paths.
#ifndef FS_SIMD_KERNELS_H
#define FS_SIMD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// 1 when the CPU has SSE4.2 (the `crc32` instruction).
int fs_cpu_has_sse42(void);

/// 1 when the CPU has F16C and the OS saves YMM state (so VEX instructions are usable).
int fs_cpu_has_f16c(void);

/// Continues a CRC-32C (Castagnoli, reflected) over n bytes: `state` is the running register, i.e.
/// the finished CRC of the bytes before, complemented (~0 for a fresh checksum); returns the new
/// register. Only call after fs_cpu_has_sse42() returned 1.
uint32_t fs_crc32c_sse42(uint32_t state, const uint8_t *bytes, size_t n);

/// Converts n little-endian halves at src (any alignment) to floats. F16C only.
void fs_half_to_float_f16c(const uint8_t *src, float *dst, size_t n);

/// Converts n byte-shuffled halves (n low bytes, then n high bytes) at src to floats. F16C only.
void fs_shuffled_half_to_float_f16c(const uint8_t *src, float *dst, size_t n);

/// 1 when the CPU has AVX2 and FMA and the OS saves YMM state.
int fs_cpu_has_avx2_fma(void);

/// z[r·k + c] = Σⱼ x[r·d + j] · w[c·d + j] for r < rows, c < k: row-major x (rows × d) times the
/// transpose of row-major w (k × d), the logits of a linear layer with few outputs, where a general
/// GEMM spends its time packing. AVX2 + FMA only.
void fs_rows_dot_rows_avx2(const float *x, size_t rows, size_t d, const float *w, size_t k, float *z);

/// g[c·d + j] += Σᵣ dz[r·k + c] · x[r·d + j]: adds the transpose of dz (rows × k) times x (rows × d)
/// to g (k × d), the weight gradient of that layer. The rows are summed first, then added to g.
/// AVX2 + FMA only.
void fs_add_rows_outer_avx2(const float *dz, size_t rows, size_t k, const float *x, size_t d, float *g);

#endif
