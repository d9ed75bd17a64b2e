// libjpeg (libjpeg-turbo's libjpeg API) decodes a scanline at a time, so a JPEG streams into the resampler like
// a PNG instead of being decoded whole (TurboJPEG's API has no row interface). Its errors longjmp, which Swift
// cannot catch, so every libjpeg call that can fail runs here under a setjmp.
#include "codecs.h"
#include "common.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf escape;
    char warnings[1024];
    size_t warnings_length;
} jpeg_errors;

struct jpegshim_reader {
    struct jpeg_decompress_struct cinfo;
    jpeg_errors errors;
    int cmyk;
    uint8_t *cmyk_row;   // one CMYK scanline, converted to RGB into the caller's rows
    uint32_t width, height;
};

static void jpeg_on_error(j_common_ptr cinfo) {
    longjmp(((jpeg_errors *)cinfo->err)->escape, 1);
}

/// Warnings (level -1) are kept, one a line, for the caller to judge: libjpeg pads missing data with grey
/// and only warns, and whether a warning spoils the pixels is decided on the Swift side with TurboJPEG's
/// old rule. Trace messages (level >= 0) are dropped.
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    jpeg_errors *errors = (jpeg_errors *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    errors->base.format_message(cinfo, text);
    errors->base.num_warnings++;
    size_t length = strlen(text);
    if (errors->warnings_length + length + 2 > sizeof errors->warnings) return;
    memcpy(errors->warnings + errors->warnings_length, text, length);
    errors->warnings_length += length;
    errors->warnings[errors->warnings_length++] = '\n';
    errors->warnings[errors->warnings_length] = 0;
}

static void jpeg_error_text(jpegshim_reader *reader, char *message, size_t capacity) {
    char text[JMSG_LENGTH_MAX];
    reader->cinfo.err->format_message((j_common_ptr)&reader->cinfo, text);
    codec_message(message, capacity, "%s", text);
}

static void jpeg_release(jpegshim_reader *reader) {
    jpeg_destroy_decompress(&reader->cinfo);
    free(reader->cmyk_row);
    free(reader);
}

int jpegshim_open(const void *data, size_t size, uint64_t max_pixels,
                  jpegshim_reader **out, uint32_t *width, uint32_t *height, char *message, size_t message_capacity) {
    *out = NULL;
    jpegshim_reader *reader = calloc(1, sizeof *reader);
    if (!reader) {
        codec_message(message, message_capacity, "out of memory");
        return CODEC_OUT_OF_MEMORY;
    }
    reader->cinfo.err = jpeg_std_error(&reader->errors.base);
    reader->errors.base.error_exit = jpeg_on_error;
    reader->errors.base.emit_message = jpeg_on_message;
    if (setjmp(reader->errors.escape)) {
        jpeg_error_text(reader, message, message_capacity);
        jpeg_release(reader);
        return CODEC_CORRUPT;
    }
    jpeg_create_decompress(&reader->cinfo);
    jpeg_mem_src(&reader->cinfo, (const unsigned char *)data, (unsigned long)size);
    jpeg_read_header(&reader->cinfo, TRUE);
    if ((uint64_t)reader->cinfo.image_width * reader->cinfo.image_height > max_pixels) {
        codec_message(message, message_capacity, "image %ux%u exceeds pixel limit %llu", (unsigned)reader->cinfo.image_width,
                      (unsigned)reader->cinfo.image_height, (unsigned long long)max_pixels);
        jpeg_release(reader);
        return CODEC_TOO_LARGE;
    }
    *width = reader->cinfo.image_width;
    *height = reader->cinfo.image_height;
    *out = reader;
    return CODEC_OK;
}

int jpegshim_start(jpegshim_reader *reader, uint32_t scale_eighths, uint32_t *width, uint32_t *height,
                   char *message, size_t message_capacity) {
    if (scale_eighths < 1 || scale_eighths > 8) {
        codec_message(message, message_capacity, "scale %u/8 is not a downscale", (unsigned)scale_eighths);
        return CODEC_BAD_REQUEST;
    }
    if (setjmp(reader->errors.escape)) {
        jpeg_error_text(reader, message, message_capacity);
        return CODEC_CORRUPT;
    }
    reader->cmyk = reader->cinfo.jpeg_color_space == JCS_CMYK || reader->cinfo.jpeg_color_space == JCS_YCCK;
    reader->cinfo.out_color_space = reader->cmyk ? JCS_CMYK : JCS_RGB;
    reader->cinfo.scale_num = scale_eighths;
    reader->cinfo.scale_denom = 8;
    jpeg_start_decompress(&reader->cinfo);
    reader->width = reader->cinfo.output_width;
    reader->height = reader->cinfo.output_height;
    if (reader->cmyk && !(reader->cmyk_row = malloc((size_t)reader->width * 4))) {
        codec_message(message, message_capacity, "out of memory");
        return CODEC_OUT_OF_MEMORY;
    }
    *width = reader->width;
    *height = reader->height;
    return CODEC_OK;
}

int jpegshim_read_rows(jpegshim_reader *reader, uint8_t *dst, uint32_t count, char *message, size_t message_capacity) {
    if ((uint64_t)reader->cinfo.output_scanline + count > reader->height) {
        codec_message(message, message_capacity, "asked for rows past the end of the image");
        return CODEC_BAD_REQUEST;
    }
    if (setjmp(reader->errors.escape)) {
        jpeg_error_text(reader, message, message_capacity);
        return CODEC_CORRUPT;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *rgb = dst + (size_t)i * reader->width * 3;
        JSAMPROW row = reader->cmyk ? reader->cmyk_row : rgb;
        // A memory source never suspends: at the end of the data it feeds a fake EOI and warns.
        if (jpeg_read_scanlines(&reader->cinfo, &row, 1) != 1) {
            codec_message(message, message_capacity, "libjpeg returned no scanline");
            return CODEC_CORRUPT;
        }
        if (reader->cmyk) {
            // Pillow's CMYK->RGB (R = (255-K) - C*(255-K)/255, same rounding); libjpeg hands back Adobe-inverted
            // samples, so each stored value is already 255 - C.
            for (uint32_t x = 0; x < reader->width; x++) {
                const uint8_t *p = reader->cmyk_row + 4 * x;
                uint32_t k = p[3];
                for (int c = 0; c < 3; c++) {
                    uint32_t t = (255u - p[c]) * k + 128u;
                    rgb[3 * x + c] = (uint8_t)(k - (((t >> 8) + t) >> 8));
                }
            }
        }
    }
    // After the last row, read on to the end of the image, as a whole decode does: a missing tail warns here.
    if (reader->cinfo.output_scanline == reader->height) jpeg_finish_decompress(&reader->cinfo);
    return CODEC_OK;
}

const char *jpegshim_warnings(const jpegshim_reader *reader) {
    return reader->errors.warnings;
}

void jpegshim_close(jpegshim_reader *reader) {
    if (reader) jpeg_release(reader);
}
