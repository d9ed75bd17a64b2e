// giflib reads from memory through a callback; only the first image record is decoded.
#include "codecs.h"
#include "common.h"

#include <gif_lib.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t offset;
    int ran_out;
} gif_source;

static int gif_read(GifFileType *gif, GifByteType *out, int length) {
    gif_source *src = (gif_source *)gif->UserData;
    size_t left = src->size - src->offset;
    size_t n = (size_t)length <= left ? (size_t)length : left;
    if (n < (size_t)length) src->ran_out = 1;
    memcpy(out, src->data + src->offset, n);
    src->offset += n;
    return (int)n;
}

static int gif_failure(GifFileType *gif, gif_source *src, int fallback_error, char *message, size_t capacity) {
    int code = gif ? gif->Error : fallback_error;
    const char *text = GifErrorString(code);
    codec_message(message, capacity, "%s", text ? text : "unreadable GIF");
    if (gif) DGifCloseFile(gif, NULL);
    return src->ran_out ? CODEC_TRUNCATED : CODEC_CORRUPT;
}

int gifshim_info(const void *data, size_t size, uint32_t *width, uint32_t *height,
                 char *message, size_t message_capacity) {
    codec_message(message, message_capacity, "");
    const uint8_t *p = (const uint8_t *)data;
    if (size < 10) {
        codec_message(message, message_capacity, "file ends inside the GIF header");
        return CODEC_TRUNCATED;
    }
    *width = (uint32_t)p[6] | ((uint32_t)p[7] << 8);
    *height = (uint32_t)p[8] | ((uint32_t)p[9] << 8);
    if (*width == 0 || *height == 0) {
        codec_message(message, message_capacity, "zero-sized logical screen");
        return CODEC_CORRUPT;
    }
    return CODEC_OK;
}

int gifshim_decode_first_frame(const void *data, size_t size, uint64_t max_pixels,
                               uint8_t *dst, size_t dst_capacity, uint32_t width, uint32_t height,
                               char *message, size_t message_capacity) {
    codec_message(message, message_capacity, "");
    int check = codec_check_frame(width, height, max_pixels, dst_capacity, message, message_capacity);
    if (check != CODEC_OK) return check;
    gif_source src = { (const uint8_t *)data, size, 0, 0 };
    int error = 0;
    GifFileType *gif = DGifOpen(&src, gif_read, &error);
    if (!gif) return gif_failure(NULL, &src, error, message, message_capacity);
    if ((uint32_t)gif->SWidth != width || (uint32_t)gif->SHeight != height) {
        codec_message(message, message_capacity, "logical screen size changed between reads");
        DGifCloseFile(gif, NULL);
        return CODEC_BAD_REQUEST;
    }
    // Screen outside the first frame and transparent pixels are white, as if composited like a PNG's alpha.
    memset(dst, 255, (size_t)width * height * 3);
    int transparent = NO_TRANSPARENT_COLOR;
    for (;;) {
        GifRecordType type;
        if (DGifGetRecordType(gif, &type) == GIF_ERROR) return gif_failure(gif, &src, 0, message, message_capacity);
        if (type == TERMINATE_RECORD_TYPE) {
            codec_message(message, message_capacity, "GIF has no image");
            DGifCloseFile(gif, NULL);
            return CODEC_CORRUPT;
        }
        if (type == EXTENSION_RECORD_TYPE) {
            int code = 0;
            GifByteType *block = NULL;
            if (DGifGetExtension(gif, &code, &block) == GIF_ERROR) return gif_failure(gif, &src, 0, message, message_capacity);
            if (code == GRAPHICS_EXT_FUNC_CODE && block && block[0] >= 4) {
                GraphicsControlBlock gcb;
                if (DGifExtensionToGCB(block[0], block + 1, &gcb) == GIF_OK) transparent = gcb.TransparentColor;
            }
            while (block) {
                if (DGifGetExtensionNext(gif, &block) == GIF_ERROR) return gif_failure(gif, &src, 0, message, message_capacity);
            }
            continue;
        }
        if (type != IMAGE_DESC_RECORD_TYPE) continue;
        if (DGifGetImageDesc(gif) == GIF_ERROR) return gif_failure(gif, &src, 0, message, message_capacity);
        GifImageDesc *desc = &gif->Image;
        ColorMapObject *map = desc->ColorMap ? desc->ColorMap : gif->SColorMap;
        if (!map) {
            codec_message(message, message_capacity, "GIF frame has no colour table");
            DGifCloseFile(gif, NULL);
            return CODEC_CORRUPT;
        }
        if (desc->Width <= 0 || desc->Height <= 0) {
            codec_message(message, message_capacity, "zero-sized frame");
            DGifCloseFile(gif, NULL);
            return CODEC_CORRUPT;
        }
        GifByteType *line = (GifByteType *)malloc((size_t)desc->Width);
        if (!line) { DGifCloseFile(gif, NULL); codec_message(message, message_capacity, "out of memory"); return CODEC_OUT_OF_MEMORY; }
        // Interlaced frames arrive in four passes; each line still lands on its own row.
        static const int starts[] = { 0, 4, 2, 1 }, steps[] = { 8, 8, 4, 2 };
        int passes = desc->Interlace ? 4 : 1;
        for (int pass = 0; pass < passes; pass++) {
            int start = desc->Interlace ? starts[pass] : 0, step = desc->Interlace ? steps[pass] : 1;
            for (int y = start; y < desc->Height; y += step) {
                if (DGifGetLine(gif, line, desc->Width) == GIF_ERROR) {
                    free(line);
                    return gif_failure(gif, &src, 0, message, message_capacity);
                }
                long screen_y = (long)desc->Top + y;
                if (screen_y < 0 || screen_y >= (long)height) continue;
                uint8_t *row = dst + (size_t)screen_y * width * 3;
                for (int x = 0; x < desc->Width; x++) {
                    long screen_x = (long)desc->Left + x;
                    if (screen_x < 0 || screen_x >= (long)width) continue;
                    int index = line[x];
                    if (index == transparent) continue;
                    // An index past the table reads as black, as in Pillow's zero-padded palette.
                    GifColorType c = index < map->ColorCount ? map->Colors[index] : (GifColorType){ 0, 0, 0 };
                    row[3 * screen_x] = c.Red;
                    row[3 * screen_x + 1] = c.Green;
                    row[3 * screen_x + 2] = c.Blue;
                }
            }
        }
        free(line);
        DGifCloseFile(gif, NULL);
        return CODEC_OK;
    }
}
