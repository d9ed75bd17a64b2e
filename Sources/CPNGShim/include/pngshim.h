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
    /// The caller asked for more rows than the image has left.
    PNGSHIM_BUFFER_TOO_SMALL = 5,
    /// A scratch allocation failed.
    PNGSHIM_OUT_OF_MEMORY = 6
} pngshim_status;

/// Reads only the signature and IHDR, so callers can size their buffer before decoding.
/// Never longjmps out and never aborts.
int pngshim_read_header(const void *data, size_t size,
                        uint32_t *width, uint32_t *height,
                        char *message, size_t message_capacity);

/// A PNG being decoded row by row from a caller-owned buffer that must outlive it.
typedef struct pngshim_reader pngshim_reader;

/// Opens a PNG held in memory for row-by-row decoding to 8-bit interleaved RGB.
///
/// 16-bit samples keep their high byte (as Pillow does), palettes and greys expand to RGB, any alpha
/// channel (including tRNS) is composited over white. The pixel limit is checked against IHDR before
/// libpng sees the stream. A non-interlaced image is then decoded one row at a time, so memory stays at
/// a few rows whatever its size; an interlaced (Adam7) one needs the whole frame, allocated on the first
/// read. On success `*reader` must be released with `pngshim_close`. Never longjmps out and never aborts.
int pngshim_open(const void *data, size_t size, uint64_t max_pixels, pngshim_reader **reader,
                 uint32_t *width, uint32_t *height, int *interlaced,
                 char *message, size_t message_capacity);

/// Decodes the next `count` rows into `dst` (`count * width * 3` bytes). After a failure the reader can
/// only be closed.
int pngshim_read_rows(pngshim_reader *reader, uint8_t *dst, uint32_t count,
                      char *message, size_t message_capacity);

/// Releases a reader and everything it allocated.
void pngshim_close(pngshim_reader *reader);

#ifdef __cplusplus
}
#endif

#endif
