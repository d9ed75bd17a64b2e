// Helpers shared by the codec shims; not part of the module's interface.
#ifndef FEATSTREAM_CODECS_COMMON_H
#define FEATSTREAM_CODECS_COMMON_H

#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>

#include "codecs.h"

static inline void codec_message(char *message, size_t capacity, const char *format, ...) {
    if (!message || capacity == 0) return;
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, capacity, format, ap);
    va_end(ap);
}

/// The checks a whole-frame decoder makes before writing `width` x `height` RGB pixels into `dst`: the
/// pixel limit (CODEC_TOO_LARGE) and the buffer size (CODEC_BAD_REQUEST); CODEC_OK when both hold.
static inline int codec_check_frame(uint32_t width, uint32_t height, uint64_t max_pixels, size_t dst_capacity,
                                    char *message, size_t message_capacity) {
    if ((uint64_t)width * height > max_pixels) {
        codec_message(message, message_capacity, "image %ux%u exceeds pixel limit %llu",
                      (unsigned)width, (unsigned)height, (unsigned long long)max_pixels);
        return CODEC_TOO_LARGE;
    }
    if ((uint64_t)width * height * 3 > dst_capacity) {
        codec_message(message, message_capacity, "destination buffer too small");
        return CODEC_BAD_REQUEST;
    }
    return CODEC_OK;
}

/// Pillow's paste-with-mask blend of a colour over white (rounded 8-bit arithmetic), as the PNG shim does.
static inline uint8_t codec_over_white(uint8_t c, uint8_t a) {
    unsigned int t = 255u * (255u - a) + (unsigned int)c * a + 128u;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

#endif
