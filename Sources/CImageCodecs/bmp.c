// BMP through stb_image (Debian's libstb): stb allocates the picture in the file's own channel count, which is
// copied out (composited over white when it has alpha) and freed.
#include "codecs.h"
#include "common.h"

#include <stb/stb_image.h>
#include <string.h>

int bmpshim_info(const void *data, size_t size, uint32_t *width, uint32_t *height,
                 char *message, size_t message_capacity) {
    codec_message(message, message_capacity, "");
    int w = 0, h = 0, channels = 0;
    if (size > 0x7fffffff || !stbi_info_from_memory((const stbi_uc *)data, (int)size, &w, &h, &channels)) {
        codec_message(message, message_capacity, "%s", stbi_failure_reason() ? stbi_failure_reason() : "unreadable BMP header");
        return CODEC_CORRUPT;
    }
    *width = (uint32_t)w;
    *height = (uint32_t)h;
    return CODEC_OK;
}

int bmpshim_decode(const void *data, size_t size, uint64_t max_pixels, uint8_t *dst, size_t dst_capacity,
                   uint32_t width, uint32_t height, char *message, size_t message_capacity) {
    codec_message(message, message_capacity, "");
    int check = codec_check_frame(width, height, max_pixels, dst_capacity, message, message_capacity);
    if (check != CODEC_OK) return check;
    int w = 0, h = 0, channels = 0;
    // The file's own channel count (1 to 4): most BMPs are plain RGB and copy straight out.
    stbi_uc *pixels = size > 0x7fffffff ? NULL : stbi_load_from_memory((const stbi_uc *)data, (int)size, &w, &h, &channels, 0);
    if (!pixels) {
        const char *reason = stbi_failure_reason();
        codec_message(message, message_capacity, "%s", reason ? reason : "unreadable BMP");
        return CODEC_CORRUPT;
    }
    if ((uint32_t)w != width || (uint32_t)h != height || channels < 1 || channels > 4) {
        stbi_image_free(pixels);
        codec_message(message, message_capacity, "size or channel count changed between header and data");
        return CODEC_CORRUPT;
    }
    size_t count = (size_t)width * height;
    if (channels == 3) {
        memcpy(dst, pixels, count * 3);
    } else {
        for (size_t i = 0; i < count; i++) {
            const stbi_uc *p = pixels + (size_t)channels * i;
            uint8_t grey = channels <= 2;
            uint8_t r = p[0], g = grey ? p[0] : p[1], b = grey ? p[0] : p[2];
            uint8_t a = channels == 2 ? p[1] : channels == 4 ? p[3] : 255;
            dst[3 * i] = codec_over_white(r, a);
            dst[3 * i + 1] = codec_over_white(g, a);
            dst[3 * i + 2] = codec_over_white(b, a);
        }
    }
    stbi_image_free(pixels);
    return CODEC_OK;
}
