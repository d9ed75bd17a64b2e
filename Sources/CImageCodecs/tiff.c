// libtiff reads from memory through client callbacks; its errors arrive through a per-handle handler.
#include "codecs.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t offset;
    int ran_out;
    char *message;
    size_t message_capacity;
    int failed;
} tiff_source;

struct tiffshim_reader {
    tiff_source src;
    TIFF *tif;
    TIFFRGBAImage image;
    int image_ready;
    uint32_t width, height;
    uint32_t next_row;
    uint32_t band_rows;       // rows decoded per libtiff call
    uint32_t band_start;      // first row held in `band`
    uint32_t band_count;      // rows held in `band`
    uint32_t *band;           // band_rows * width ABGR pixels
};

static tmsize_t tiff_read(thandle_t handle, void *buffer, tmsize_t size) {
    tiff_source *src = (tiff_source *)handle;
    size_t left = src->size - src->offset;
    size_t n = (size_t)size <= left ? (size_t)size : left;
    if (n < (size_t)size) src->ran_out = 1;
    memcpy(buffer, src->data + src->offset, n);
    src->offset += n;
    return (tmsize_t)n;
}

static tmsize_t tiff_write(thandle_t handle, void *buffer, tmsize_t size) {
    (void)handle; (void)buffer; (void)size;
    return 0;
}

static toff_t tiff_seek(thandle_t handle, toff_t offset, int whence) {
    tiff_source *src = (tiff_source *)handle;
    uint64_t base = whence == SEEK_CUR ? src->offset : whence == SEEK_END ? src->size : 0;
    uint64_t target = base + offset;
    // Seeking past the end is allowed (the next read comes up short), like a file.
    src->offset = target > src->size ? src->size : (size_t)target;
    if (target > src->size) src->ran_out = 1;
    return (toff_t)target;
}

static int tiff_close(thandle_t handle) { (void)handle; return 0; }

/// The data is in memory already, so "mapping" hands libtiff the buffer itself. Besides saving copies this keeps
/// libtiff 4.5 on its mapped path: unmapped, it rejects uncompressed tiles whose read buffer it rounded up.
static int tiff_map(thandle_t handle, void **base, toff_t *size) {
    tiff_source *src = (tiff_source *)handle;
    *base = (void *)src->data;
    *size = (toff_t)src->size;
    return 1;
}

static void tiff_unmap(thandle_t handle, void *base, toff_t size) { (void)handle; (void)base; (void)size; }
static toff_t tiff_size(thandle_t handle) { return ((tiff_source *)handle)->size; }

static int tiff_error(TIFF *tif, void *user, const char *module, const char *format, va_list ap) {
    (void)tif; (void)module;
    tiff_source *src = (tiff_source *)user;
    if (!src->failed && src->message && src->message_capacity > 0) {
        vsnprintf(src->message, src->message_capacity, format, ap);
    }
    src->failed = 1;
    return 1;
}

static int tiff_warning(TIFF *tif, void *user, const char *module, const char *format, va_list ap) {
    // Unknown tags and similar complaints do not affect pixels; Pillow ignores them too.
    (void)tif; (void)user; (void)module; (void)format; (void)ap;
    return 1;
}

static int failure_status(tiff_source *src) {
    return src->ran_out ? CODEC_TRUNCATED : CODEC_CORRUPT;
}

int tiffshim_open(const void *data, size_t size, uint64_t max_pixels, tiffshim_reader **out,
                  uint32_t *width, uint32_t *height, uint16_t *orientation,
                  char *message, size_t message_capacity) {
    *out = NULL;
    *width = *height = 0;
    *orientation = 1;
    codec_message(message, message_capacity, "");
    tiffshim_reader *r = (tiffshim_reader *)calloc(1, sizeof *r);
    if (!r) { codec_message(message, message_capacity, "out of memory"); return CODEC_OUT_OF_MEMORY; }
    r->src = (tiff_source){ (const uint8_t *)data, size, 0, 0, message, message_capacity, 0 };

    TIFFOpenOptions *options = TIFFOpenOptionsAlloc();
    if (!options) { free(r); codec_message(message, message_capacity, "out of memory"); return CODEC_OUT_OF_MEMORY; }
    TIFFOpenOptionsSetErrorHandlerExtR(options, tiff_error, &r->src);
    TIFFOpenOptionsSetWarningHandlerExtR(options, tiff_warning, &r->src);
    // No single libtiff allocation (a strip, a tile, a tag array) may exceed 256 MB: a hostile header
    // cannot make it reserve gigabytes.
    TIFFOpenOptionsSetMaxSingleMemAlloc(options, (tmsize_t)256 << 20);
    r->tif = TIFFClientOpenExt("input", "r", (thandle_t)&r->src, tiff_read, tiff_write, tiff_seek, tiff_close,
                               tiff_size, tiff_map, tiff_unmap, options);
    TIFFOpenOptionsFree(options);
    if (!r->tif) {
        int status = failure_status(&r->src);
        if (!r->src.failed) codec_message(message, message_capacity, "cannot read the TIFF header");
        free(r);
        return status;
    }
    TIFFGetField(r->tif, TIFFTAG_IMAGEWIDTH, &r->width);
    TIFFGetField(r->tif, TIFFTAG_IMAGELENGTH, &r->height);
    *width = r->width;
    *height = r->height;
    TIFFGetFieldDefaulted(r->tif, TIFFTAG_ORIENTATION, orientation);
    if (r->width == 0 || r->height == 0) {
        codec_message(message, message_capacity, "zero-sized image");
        tiffshim_close(r);
        return CODEC_CORRUPT;
    }
    if ((uint64_t)r->width * r->height > max_pixels) {
        codec_message(message, message_capacity, "image %ux%u exceeds pixel limit %llu",
                      (unsigned)r->width, (unsigned)r->height, (unsigned long long)max_pixels);
        tiffshim_close(r);
        return CODEC_TOO_LARGE;
    }
    char why[1024] = "";
    if (!TIFFRGBAImageOK(r->tif, why)) {
        codec_message(message, message_capacity, "%s", why);
        tiffshim_close(r);
        return CODEC_UNSUPPORTED;
    }
    if (!TIFFRGBAImageBegin(&r->image, r->tif, 0, why)) {
        codec_message(message, message_capacity, "%s", why[0] ? why : "cannot set up the RGBA reader");
        tiffshim_close(r);
        return failure_status(&r->src);
    }
    r->image_ready = 1;
    // Pixels come top row first, as stored; like Pillow, the Orientation tag is left to the caller.
    r->image.req_orientation = r->image.orientation;

    // A band follows the file's own layout (one strip, one row of tiles) so no strip is decoded twice,
    // capped at 16 MB of RGBA; an image stored as one huge strip is then re-read per band, slowly but in
    // bounded memory.
    uint32_t natural = 0;
    if (TIFFIsTiled(r->tif)) TIFFGetField(r->tif, TIFFTAG_TILELENGTH, &natural);
    else TIFFGetFieldDefaulted(r->tif, TIFFTAG_ROWSPERSTRIP, &natural);
    if (natural == 0 || natural > r->height) natural = r->height;
    uint64_t cap = ((uint64_t)16 << 20) / ((uint64_t)r->width * 4);
    if (cap == 0) cap = 1;
    r->band_rows = natural <= cap ? natural : (uint32_t)cap;
    r->band = (uint32_t *)malloc((size_t)r->band_rows * r->width * 4);
    if (!r->band) {
        codec_message(message, message_capacity, "out of memory");
        tiffshim_close(r);
        return CODEC_OUT_OF_MEMORY;
    }
    *out = r;
    return CODEC_OK;
}

int tiffshim_read_rows(tiffshim_reader *r, uint8_t *dst, uint32_t count, char *message, size_t message_capacity) {
    r->src.message = message;
    r->src.message_capacity = message_capacity;
    r->src.failed = 0;
    codec_message(message, message_capacity, "");
    if (count > r->height - r->next_row) {
        codec_message(message, message_capacity, "more rows requested than the image has left");
        return CODEC_BAD_REQUEST;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t row = r->next_row + i;
        if (row < r->band_start || row >= r->band_start + r->band_count || r->band_count == 0) {
            uint32_t rows = r->height - row < r->band_rows ? r->height - row : r->band_rows;
            r->image.row_offset = (int)row;
            r->image.col_offset = 0;
            if (!TIFFRGBAImageGet(&r->image, r->band, r->width, rows) || r->src.failed) {
                if (!r->src.failed || !message[0]) codec_message(message, message_capacity, "cannot decode rows %u to %u",
                                                                 (unsigned)row, (unsigned)(row + rows));
                return failure_status(&r->src);
            }
            r->band_start = row;
            r->band_count = rows;
        }
        const uint32_t *pixel = r->band + (size_t)(row - r->band_start) * r->width;
        uint8_t *out = dst + (size_t)i * r->width * 3;
        // Alpha from libtiff is premultiplied, so over white is colour + (255 - alpha).
        for (uint32_t x = 0; x < r->width; x++) {
            uint32_t p = pixel[x];
            unsigned a = TIFFGetA(p), white = 255u - a;
            unsigned red = TIFFGetR(p) + white, green = TIFFGetG(p) + white, blue = TIFFGetB(p) + white;
            out[3 * x] = (uint8_t)(red > 255 ? 255 : red);
            out[3 * x + 1] = (uint8_t)(green > 255 ? 255 : green);
            out[3 * x + 2] = (uint8_t)(blue > 255 ? 255 : blue);
        }
    }
    r->next_row += count;
    return CODEC_OK;
}

void tiffshim_close(tiffshim_reader *r) {
    if (!r) return;
    if (r->image_ready) TIFFRGBAImageEnd(&r->image);
    if (r->tif) TIFFClose(r->tif);
    free(r->band);
    free(r);
}
