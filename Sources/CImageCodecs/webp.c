// libwebp decodes from memory and can scale while decoding; animations go through the demuxer.
#include "codecs.h"
#include "common.h"

#include <string.h>
#include <webp/decode.h>
#include <webp/demux.h>

static const char *vp8_status_text(VP8StatusCode code) {
    switch (code) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "decoding suspended";
    case VP8_STATUS_USER_ABORT: return "decoding aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "unexpected end of data";
    default: return "unknown error";
    }
}

static int vp8_failure(VP8StatusCode code, char *message, size_t capacity) {
    codec_message(message, capacity, "%s", vp8_status_text(code));
    if (code == VP8_STATUS_NOT_ENOUGH_DATA) return CODEC_TRUNCATED;
    if (code == VP8_STATUS_OUT_OF_MEMORY) return CODEC_OUT_OF_MEMORY;
    if (code == VP8_STATUS_UNSUPPORTED_FEATURE) return CODEC_UNSUPPORTED;
    return CODEC_CORRUPT;
}

int webpshim_info(const void *data, size_t size, uint32_t *width, uint32_t *height,
                  int *has_alpha, int *animated, char *message, size_t message_capacity) {
    codec_message(message, message_capacity, "");
    WebPBitstreamFeatures features;
    VP8StatusCode status = WebPGetFeatures((const uint8_t *)data, size, &features);
    if (status != VP8_STATUS_OK) return vp8_failure(status, message, message_capacity);
    *width = (uint32_t)features.width;
    *height = (uint32_t)features.height;
    *has_alpha = features.has_alpha;
    *animated = features.has_animation;
    return CODEC_OK;
}

int webpshim_decode(const void *data, size_t size, uint8_t *dst, size_t dst_capacity,
                    uint32_t out_width, uint32_t out_height, char *message, size_t message_capacity) {
    codec_message(message, message_capacity, "");
    if ((uint64_t)out_width * out_height * 4 > dst_capacity || out_width == 0 || out_height == 0) {
        codec_message(message, message_capacity, "destination buffer too small");
        return CODEC_BAD_REQUEST;
    }
    const uint8_t *bytes = (const uint8_t *)data;
    size_t length = size;
    WebPDemuxer *demux = NULL;
    WebPIterator frame;
    int have_frame = 0;
    uint32_t canvas_width = 0, canvas_height = 0;
    WebPBitstreamFeatures features;
    VP8StatusCode status = WebPGetFeatures(bytes, length, &features);
    if (status != VP8_STATUS_OK) return vp8_failure(status, message, message_capacity);
    canvas_width = (uint32_t)features.width;
    canvas_height = (uint32_t)features.height;
    if (features.has_animation) {
        // The first frame only; a frame smaller than the canvas is centred on white, like GIF.
        WebPData whole = { bytes, length };
        demux = WebPDemux(&whole);
        if (!demux) { codec_message(message, message_capacity, "cannot parse the animation"); return CODEC_CORRUPT; }
        if (!WebPDemuxGetFrame(demux, 1, &frame)) {
            WebPDemuxDelete(demux);
            codec_message(message, message_capacity, "animation has no frame");
            return CODEC_CORRUPT;
        }
        have_frame = 1;
        if (frame.x_offset != 0 || frame.y_offset != 0 || (uint32_t)frame.width != canvas_width ||
            (uint32_t)frame.height != canvas_height) {
            WebPDemuxReleaseIterator(&frame);
            WebPDemuxDelete(demux);
            codec_message(message, message_capacity, "first animation frame does not cover the canvas");
            return CODEC_UNSUPPORTED;
        }
        bytes = frame.fragment.bytes;
        length = frame.fragment.size;
    }
    WebPDecoderConfig config;
    if (!WebPInitDecoderConfig(&config)) {
        if (have_frame) { WebPDemuxReleaseIterator(&frame); WebPDemuxDelete(demux); }
        codec_message(message, message_capacity, "libwebp version mismatch");
        return CODEC_CORRUPT;
    }
    if (out_width != canvas_width || out_height != canvas_height) {
        config.options.use_scaling = 1;
        config.options.scaled_width = (int)out_width;
        config.options.scaled_height = (int)out_height;
    }
    config.output.colorspace = MODE_RGBA;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = dst;
    config.output.u.RGBA.stride = (int)(out_width * 4);
    config.output.u.RGBA.size = (size_t)out_width * out_height * 4;
    status = WebPDecode(bytes, length, &config);
    WebPFreeDecBuffer(&config.output);
    if (have_frame) { WebPDemuxReleaseIterator(&frame); WebPDemuxDelete(demux); }
    if (status != VP8_STATUS_OK) return vp8_failure(status, message, message_capacity);
    // RGBA to RGB in place: each write lands at or before the bytes it reads.
    size_t pixels = (size_t)out_width * out_height;
    for (size_t i = 0; i < pixels; i++) {
        uint8_t a = dst[4 * i + 3];
        uint8_t r = dst[4 * i], g = dst[4 * i + 1], b = dst[4 * i + 2];
        dst[3 * i] = codec_over_white(r, a);
        dst[3 * i + 1] = codec_over_white(g, a);
        dst[3 * i + 2] = codec_over_white(b, a);
    }
    return CODEC_OK;
}
