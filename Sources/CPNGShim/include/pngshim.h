#ifndef FEATSTREAM_PNGSHIM_H
#define FEATSTREAM_PNGSHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Outcome of a shim call. Every failure also leaves a human-readable message in the caller's buffer.
typedef enum {
    PNGSHIM_OK = 0,
    /// The buffer does not start with the 8-byte PNG signature.
    PNGSHIM_NOT_PNG = 1,
    /// The header is valid but width*height exceeds the caller's pixel limit; nothing was allocated.
    PNGSHIM_TOO_LARGE = 2,
    /// The data ended before the image did.
    PNGSHIM_TRUNCATED = 3,
    /// libpng rejected the stream (bad CRC, bad header, inflate error, ...).
    PNGSHIM_CORRUPT = 4,
    /// The caller's destination buffer is smaller than width*height*3.
    PNGSHIM_BUFFER_TOO_SMALL = 5,
    /// A scratch allocation failed.
    PNGSHIM_OUT_OF_MEMORY = 6
} pngshim_status;

/// Reads only the signature and IHDR, so callers can size their buffer before decoding.
/// Never longjmps out and never aborts.
int pngshim_read_header(const void *data, size_t size,
                        uint32_t *width, uint32_t *height,
                        char *message, size_t message_capacity);

/// Decodes a whole PNG held in memory into 8-bit interleaved RGB at `dst` (tightly packed rows).
///
/// 16-bit samples keep their high byte (as Pillow does), palettes and greys expand to RGB,
/// any alpha channel (including tRNS) is composited over white, and interlaced images are
/// de-interlaced. The pixel limit is checked against IHDR before any allocation.
/// Never longjmps out and never aborts.
int pngshim_decode_rgb8(const void *data, size_t size, uint64_t max_pixels,
                        uint8_t *dst, size_t dst_capacity,
                        uint32_t *width, uint32_t *height,
                        char *message, size_t message_capacity);

#ifdef __cplusplus
}
#endif

#endif
