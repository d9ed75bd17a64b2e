#ifndef FEATSTREAM_CODECS_H
#define FEATSTREAM_CODECS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Outcome of a codec call. Every failure also leaves a human-readable message in the caller's buffer.
/// No call here longjmps out or aborts, whatever the input.
typedef enum {
    CODEC_OK = 0,
    /// width*height exceeds the caller's pixel limit; nothing was allocated for pixels.
    CODEC_TOO_LARGE = 1,
    /// The data ended before the image did.
    CODEC_TRUNCATED = 2,
    /// The library rejected the data.
    CODEC_CORRUPT = 3,
    /// A valid file of a kind the library does not decode (e.g. an unusual TIFF photometric).
    CODEC_UNSUPPORTED = 4,
    /// An allocation failed.
    CODEC_OUT_OF_MEMORY = 5,
    /// The caller's buffer or row request does not fit the image.
    CODEC_BAD_REQUEST = 6
} codec_status;

// MARK: JPEG (libjpeg), decoded a scanline at a time

/// A JPEG being decoded row by row from a caller-owned buffer that must outlive it.
typedef struct jpegshim_reader jpegshim_reader;

/// Opens a JPEG held in memory and reads its header: `width` x `height` is the stored size. The pixel limit is
/// checked here, before anything is decoded. Release with `jpegshim_close`.
int jpegshim_open(const void *data, size_t size, uint64_t max_pixels,
                  jpegshim_reader **reader, uint32_t *width, uint32_t *height, char *message, size_t message_capacity);

/// Starts decoding to 8-bit RGB (grey expands, CMYK/YCCK convert as Pillow does), scaled by `scale_eighths`/8
/// in the DCT domain (8: full size); `width` x `height` is the size the rows come out at. A baseline JPEG then
/// holds a few rows of blocks whatever its size; a progressive one needs its coefficients (about 2 bytes a
/// sample). Call once, after `jpegshim_open`.
int jpegshim_start(jpegshim_reader *reader, uint32_t scale_eighths, uint32_t *width, uint32_t *height,
                   char *message, size_t message_capacity);

/// Decodes the next `count` rows into `dst` (`count * width * 3` bytes). After the last row the rest of the
/// stream is read too, so warnings about its end are seen. After a failure the reader can only be closed.
int jpegshim_read_rows(jpegshim_reader *reader, uint8_t *dst, uint32_t count, char *message, size_t message_capacity);

/// libjpeg's warnings so far, one a line (empty when none): libjpeg pads missing or corrupt data and only
/// warns, so the caller decides which warnings spoil the image.
const char *jpegshim_warnings(const jpegshim_reader *reader);

/// Releases a reader.
void jpegshim_close(jpegshim_reader *reader);

// MARK: TIFF (libtiff), decoded in bands of rows

/// A TIFF being decoded band by band from a caller-owned buffer that must outlive it.
typedef struct tiffshim_reader tiffshim_reader;

/// Opens the first page of a TIFF held in memory. Any layout libtiff's RGBA interface reads (8/16-bit,
/// strips or tiles, palette, grey, CMYK, YCbCr, alpha) comes out as 8-bit RGB with alpha over white.
/// `orientation` is the TIFF Orientation tag (1 when absent). Release with `tiffshim_close`.
int tiffshim_open(const void *data, size_t size, uint64_t max_pixels, tiffshim_reader **reader,
                  uint32_t *width, uint32_t *height, uint16_t *orientation,
                  char *message, size_t message_capacity);

/// Decodes the next `count` rows into `dst` (`count * width * 3` bytes), top row first. Only one band
/// of RGBA rows (a strip or a row of tiles, capped) is held at a time.
int tiffshim_read_rows(tiffshim_reader *reader, uint8_t *dst, uint32_t count,
                       char *message, size_t message_capacity);

/// Releases a reader.
void tiffshim_close(tiffshim_reader *reader);

// MARK: GIF (giflib), first frame

/// The logical screen size of a GIF, read without decoding.
int gifshim_info(const void *data, size_t size, uint32_t *width, uint32_t *height,
                 char *message, size_t message_capacity);

/// Decodes the first frame onto the logical screen as 8-bit RGB (`width * height * 3` bytes at `dst`).
/// Transparent pixels, and screen outside the frame, are white (alpha over white, as for PNG).
int gifshim_decode_first_frame(const void *data, size_t size, uint64_t max_pixels,
                               uint8_t *dst, size_t dst_capacity, uint32_t width, uint32_t height,
                               char *message, size_t message_capacity);

// MARK: WebP (libwebp), optionally scaled while decoding

/// Canvas size, alpha and animation flags of a WebP, read from its headers.
int webpshim_info(const void *data, size_t size, uint32_t *width, uint32_t *height,
                  int *has_alpha, int *animated, char *message, size_t message_capacity);

/// Decodes a WebP (the first frame of an animation) to 8-bit RGB at `out_width` x `out_height`, which may be
/// smaller than the canvas: libwebp then scales while decoding and never holds the full-size picture.
/// `dst` must hold `out_width * out_height * 4` bytes (RGBA scratch, composited over white in place).
int webpshim_decode(const void *data, size_t size, uint8_t *dst, size_t dst_capacity,
                    uint32_t out_width, uint32_t out_height, char *message, size_t message_capacity);

// MARK: BMP (stb_image from Debian's libstb)

/// Size of a BMP from its header.
int bmpshim_info(const void *data, size_t size, uint32_t *width, uint32_t *height,
                 char *message, size_t message_capacity);

/// Decodes a BMP to 8-bit RGB (`width * height * 3` bytes at `dst`), any alpha over white.
int bmpshim_decode(const void *data, size_t size, uint64_t max_pixels, uint8_t *dst, size_t dst_capacity,
                   uint32_t width, uint32_t height, char *message, size_t message_capacity);

#ifdef __cplusplus
}
#endif

#endif
