// libpng signals errors by longjmp; every setjmp lives in this file so no jump ever crosses Swift frames.
#include "pngshim.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t offset;
    int ran_out;          // distinguishes truncation from corruption in the error path
    char *message;
    size_t message_capacity;
} shim_source;

static void set_message(shim_source *src, const char *text) {
    if (src->message && src->message_capacity > 0) {
        snprintf(src->message, src->message_capacity, "%s", text);
    }
}

static void shim_error(png_structp png, png_const_charp text) {
    shim_source *src = (shim_source *)png_get_error_ptr(png);
    if (!src->ran_out) set_message(src, text);
    png_longjmp(png, 1);
}

static void shim_warning(png_structp png, png_const_charp text) {
    // Ancillary-chunk complaints (bad iCCP, sRGB mismatches) do not affect pixels; Pillow ignores them too.
    (void)png; (void)text;
}

static void shim_read(png_structp png, png_bytep out, size_t length) {
    shim_source *src = (shim_source *)png_get_io_ptr(png);
    if (length > src->size - src->offset) {
        src->ran_out = 1;
        set_message(src, "unexpected end of data");
        png_error(png, "unexpected end of data");
    }
    memcpy(out, src->data + src->offset, length);
    src->offset += length;
}

static int check_signature(shim_source *src) {
    if (src->size < 8 || png_sig_cmp((png_const_bytep)src->data, 0, 8) != 0) {
        set_message(src, "missing PNG signature");
        return PNGSHIM_NOT_PNG;
    }
    return PNGSHIM_OK;
}

/// Bitwise CRC-32 over a few bytes: avoids a direct zlib dependency just to vet IHDR.
static uint32_t ihdr_crc(const uint8_t *bytes, size_t length) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < length; i++) {
        crc ^= bytes[i];
        for (int k = 0; k < 8; k++) crc = (crc & 1u) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
    }
    return ~crc;
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/// Parses IHDR by hand so the size is known without letting libpng read (or allocate) anything further.
static int parse_ihdr(shim_source *src, uint32_t *width, uint32_t *height) {
    int status = check_signature(src);
    if (status != PNGSHIM_OK) return status;
    const uint8_t *p = src->data;
    if (src->size < 33) {
        set_message(src, "file ends inside the IHDR chunk");
        return PNGSHIM_TRUNCATED;
    }
    if (be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0) {
        set_message(src, "first chunk is not a 13-byte IHDR");
        return PNGSHIM_CORRUPT;
    }
    if (ihdr_crc(p + 12, 17) != be32(p + 29)) {
        set_message(src, "IHDR: CRC error");
        return PNGSHIM_CORRUPT;
    }
    *width = be32(p + 16);
    *height = be32(p + 20);
    if (*width == 0 || *height == 0 || *width > 0x7FFFFFFFu || *height > 0x7FFFFFFFu) {
        set_message(src, "IHDR: invalid image size");
        return PNGSHIM_CORRUPT;
    }
    return PNGSHIM_OK;
}

int pngshim_read_header(const void *data, size_t size,
                        uint32_t *width, uint32_t *height,
                        char *message, size_t message_capacity) {
    shim_source src = { (const uint8_t *)data, size, 0, 0, message, message_capacity };
    set_message(&src, "");
    return parse_ihdr(&src, width, height);
}

/// Compositing matches Pillow's paste-with-mask blend (rounded 8-bit arithmetic) so goldens agree.
static inline uint8_t over_white(uint8_t c, uint8_t a) {
    unsigned int t = 255u * (255u - a) + (unsigned int)c * a + 128u;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static void composite_row(const uint8_t *rgba, uint8_t *rgb, uint32_t width) {
    for (uint32_t x = 0; x < width; x++) {
        uint8_t a = rgba[4 * x + 3];
        rgb[3 * x + 0] = over_white(rgba[4 * x + 0], a);
        rgb[3 * x + 1] = over_white(rgba[4 * x + 1], a);
        rgb[3 * x + 2] = over_white(rgba[4 * x + 2], a);
    }
}

struct pngshim_reader {
    shim_source src;
    png_structp png;
    png_infop info;
    uint32_t width, height;
    uint32_t next_row;      // rows handed out so far
    int channels;           // 3, or 4 before compositing
    int passes;             // 1, or 7 for Adam7
    size_t row_bytes;
    uint8_t *scratch;       // one RGBA row, or the whole frame of an interlaced image
};

int pngshim_open(const void *data, size_t size, uint64_t max_pixels, pngshim_reader **reader,
                 uint32_t *width_out, uint32_t *height_out, int *interlaced,
                 char *message, size_t message_capacity) {
    *reader = NULL;
    shim_source header_src = { (const uint8_t *)data, size, 0, 0, message, message_capacity };
    set_message(&header_src, "");
    uint32_t claimed_width = 0, claimed_height = 0;
    int status = parse_ihdr(&header_src, &claimed_width, &claimed_height);
    *width_out = claimed_width;
    *height_out = claimed_height;
    if (status != PNGSHIM_OK) return status;
    // Checked before libpng sees the stream, so a hostile header costs nothing.
    if ((uint64_t)claimed_width * (uint64_t)claimed_height > max_pixels) {
        char text[160];
        snprintf(text, sizeof text, "image %ux%u exceeds pixel limit %llu",
                 (unsigned)claimed_width, (unsigned)claimed_height, (unsigned long long)max_pixels);
        set_message(&header_src, text);
        return PNGSHIM_TOO_LARGE;
    }

    pngshim_reader *r = (pngshim_reader *)calloc(1, sizeof *r);
    if (!r) { set_message(&header_src, "out of memory"); return PNGSHIM_OUT_OF_MEMORY; }
    r->src = header_src;
    r->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r->src, shim_error, shim_warning);
    if (!r->png) { free(r); set_message(&header_src, "out of memory"); return PNGSHIM_OUT_OF_MEMORY; }
    r->info = png_create_info_struct(r->png);
    if (!r->info) { pngshim_close(r); set_message(&header_src, "out of memory"); return PNGSHIM_OUT_OF_MEMORY; }

    if (setjmp(png_jmpbuf(r->png))) {
        int failure = r->src.ran_out ? PNGSHIM_TRUNCATED : PNGSHIM_CORRUPT;
        pngshim_close(r);
        return failure;
    }
    png_set_user_limits(r->png, 0x7fffffff, 0x7fffffff);
    png_set_read_fn(r->png, &r->src, shim_read);
    png_read_info(r->png, r->info);

    r->width = png_get_image_width(r->png, r->info);
    r->height = png_get_image_height(r->png, r->info);
    int color_type = png_get_color_type(r->png, r->info);
    int bit_depth = png_get_bit_depth(r->png, r->info);
    if (bit_depth == 16) png_set_strip_16(r->png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r->png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(r->png);
    if (png_get_valid(r->png, r->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(r->png);
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(r->png);
    r->passes = png_set_interlace_handling(r->png);
    png_read_update_info(r->png, r->info);

    r->channels = png_get_channels(r->png, r->info);
    if (r->channels != 3 && r->channels != 4) png_error(r->png, "unexpected channel count after transforms");
    r->row_bytes = png_get_rowbytes(r->png, r->info);
    if (r->row_bytes != (size_t)r->width * r->channels) png_error(r->png, "unexpected row size after transforms");
    if (r->passes == 1 && r->channels == 4) {
        r->scratch = (uint8_t *)malloc(r->row_bytes);
        if (!r->scratch) png_error(r->png, "out of memory");
    }
    *interlaced = r->passes > 1;
    *reader = r;
    return PNGSHIM_OK;
}

int pngshim_read_rows(pngshim_reader *r, uint8_t *dst, uint32_t count, char *message, size_t message_capacity) {
    r->src.message = message;
    r->src.message_capacity = message_capacity;
    set_message(&r->src, "");
    if (count > r->height - r->next_row) {
        set_message(&r->src, "more rows requested than the image has left");
        return PNGSHIM_BUFFER_TOO_SMALL;
    }
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(r->png))) {
        free(rows);
        return r->src.ran_out ? PNGSHIM_TRUNCATED : PNGSHIM_CORRUPT;
    }
    size_t out_bytes = (size_t)r->width * 3;
    if (r->passes > 1) {
        // Adam7 passes revisit every row, so the whole frame is decoded on the first call.
        if (!r->scratch) {
            r->scratch = (uint8_t *)malloc(r->row_bytes * r->height);
            if (!r->scratch) png_error(r->png, "out of memory");
            rows = (png_bytep *)malloc(sizeof(png_bytep) * r->height);
            if (!rows) png_error(r->png, "out of memory");
            for (png_uint_32 y = 0; y < r->height; y++) rows[y] = r->scratch + (size_t)y * r->row_bytes;
            png_read_image(r->png, rows);
            free(rows);
            rows = NULL;
        }
        for (uint32_t i = 0; i < count; i++) {
            const uint8_t *row = r->scratch + (size_t)(r->next_row + i) * r->row_bytes;
            if (r->channels == 4) composite_row(row, dst + (size_t)i * out_bytes, r->width);
            else memcpy(dst + (size_t)i * out_bytes, row, out_bytes);
        }
    } else if (r->channels == 4) {
        for (uint32_t i = 0; i < count; i++) {
            png_read_row(r->png, r->scratch, NULL);
            composite_row(r->scratch, dst + (size_t)i * out_bytes, r->width);
        }
    } else {
        for (uint32_t i = 0; i < count; i++) png_read_row(r->png, dst + (size_t)i * out_bytes, NULL);
    }
    // IEND is deliberately never read: trailing-chunk damage does not affect pixels (Pillow behaves the same).
    r->next_row += count;
    return PNGSHIM_OK;
}

void pngshim_close(pngshim_reader *r) {
    if (!r) return;
    if (r->png) png_destroy_read_struct(&r->png, r->info ? &r->info : NULL, NULL);
    free(r->scratch);
    free(r);
}
