// Helpers shared by the codec shims; not part of the module's interface.
#ifndef FEATSTREAM_CODECS_COMMON_H
#define FEATSTREAM_CODECS_COMMON_H

#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>

static inline void codec_message(char *message, size_t capacity, const char *format, ...) {
    if (!message || capacity == 0) return;
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, capacity, format, ap);
    va_end(ap);
}

/// Pillow's paste-with-mask blend of a colour over white (rounded 8-bit arithmetic), as the PNG shim does.
static inline uint8_t codec_over_white(uint8_t c, uint8_t a) {
    unsigned int t = 255u * (255u - a) + (unsigned int)c * a + 128u;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

#endif
