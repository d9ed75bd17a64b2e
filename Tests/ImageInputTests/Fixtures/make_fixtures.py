"""Regenerates the ImageInput test fixtures and their Pillow-produced expectations.

Run once with Pillow available: python3 make_fixtures.py
Tests never run this; they read the committed outputs. Expected pixels are raw RGB
(`<fixture>.rgb`) as produced by Pillow's convert('RGB') (alpha composited over white
with paste(mask=alpha)), except 16-bit grey where Pillow clips instead of scaling, so the
high byte is written directly.
"""
import io
import json
import math
import struct
import zlib

from PIL import Image

W, H = 40, 30
expected = {}


def pattern(w, h, seed=0):
    """Smooth gradients plus hard edges: compresses well, still exercises filters."""
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            r = int(255 * x / max(w - 1, 1))
            g = int(255 * y / max(h - 1, 1))
            b = 220 if ((x // 7 + y // 5 + seed) % 2) else 30
            if (x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2:
                r, g = 255 - r, (g + 128) % 256
            px[x, y] = (r, g, b)
    return im


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png(path, w, h, color_type, bit_depth, rows, interlace=False):
    """Minimal PNG encoder for what Pillow cannot write (16-bit RGB, Adam7)."""
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[color_type] * bit_depth // 8
    raw = b""
    if not interlace:
        for row in rows:
            raw += b"\x00" + row
    else:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        for x0, y0, dx, dy in passes:
            for y in range(y0, h, dy):
                cols = range(x0, w, dx)
                if not cols:
                    continue
                raw += b"\x00" + b"".join(rows[y][x * bpp:(x + 1) * bpp] for x in cols)
    data = sig + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)


def over_white(im):
    rgba = im.convert("RGBA")
    bg = Image.new("RGB", im.size, (255, 255, 255))
    bg.paste(rgba.convert("RGB"), mask=rgba.split()[3])
    return bg


def record(name, rgb):
    open(name + ".rgb", "wb").write(rgb.tobytes())
    expected[name] = list(rgb.size)


base = pattern(W, H)

base.save("rgb8.png")
record("rgb8.png", Image.open("rgb8.png").convert("RGB"))

# 16-bit RGB: each sample's high byte is the 8-bit pattern, low byte noise-like.
rows16 = []
for y in range(H):
    row = b""
    for x in range(W):
        for v in base.getpixel((x, y)):
            row += struct.pack(">H", v * 256 + (x * 37 + y * 11) % 256)
    rows16.append(row)
write_png("rgb16.png", W, H, 2, 16, rows16)
record("rgb16.png", Image.open("rgb16.png").convert("RGB"))

grey = base.convert("L")
rows_g16 = [b"".join(struct.pack(">H", grey.getpixel((x, y)) * 257) for x in range(W)) for y in range(H)]
write_png("grey16.png", W, H, 0, 16, rows_g16)
record("grey16.png", grey.convert("RGB"))  # high byte; Pillow would clip I;16 to 255

base.quantize(colors=16).save("palette.png")
record("palette.png", Image.open("palette.png").convert("RGB"))

grey.save("grey.png")
record("grey.png", Image.open("grey.png").convert("RGB"))

alpha = Image.linear_gradient("L").resize((W, H)).rotate(90)
la = Image.merge("LA", (grey, alpha))
la.save("grey_alpha.png")
record("grey_alpha.png", over_white(Image.open("grey_alpha.png")))

rgba = base.copy()
rgba.putalpha(alpha)
rgba.save("rgba.png")
record("rgba.png", over_white(Image.open("rgba.png")))

rows8 = [base.tobytes()[y * W * 3:(y + 1) * W * 3] for y in range(H)]
write_png("interlaced.png", W, H, 2, 8, rows8, interlace=True)
record("interlaced.png", Image.open("interlaced.png").convert("RGB"))

base.save("baseline.jpg", quality=90)
record("baseline.jpg", Image.open("baseline.jpg").convert("RGB"))
base.save("progressive.jpg", quality=90, progressive=True)
record("progressive.jpg", Image.open("progressive.jpg").convert("RGB"))
grey.save("grey.jpg", quality=90)
record("grey.jpg", Image.open("grey.jpg").convert("RGB"))
base.convert("CMYK").save("cmyk.jpg", quality=95)
record("cmyk.jpg", Image.open("cmyk.jpg").convert("RGB"))

# --- Formats beyond JPEG and PNG: WebP, GIF, BMP, TIFF ---

base.save("lossless.webp", lossless=True)
record("lossless.webp", Image.open("lossless.webp").convert("RGB"))
rgba.save("alpha.webp", lossless=True)
record("alpha.webp", over_white(Image.open("alpha.webp")))
base.save("lossy.webp", quality=90)
record("lossy.webp", Image.open("lossy.webp").convert("RGB"))
other = pattern(W, H, seed=1).transpose(Image.FLIP_LEFT_RIGHT)
base.save("animated.webp", save_all=True, append_images=[other], duration=100, lossless=True)
record("animated.webp", Image.open("animated.webp").convert("RGB"))

# Pillow interlaces GIFs of 16+ rows by default, so these also cover interlaced line order.
pal = base.quantize(colors=32)
pal.save("palette.gif")
record("palette.gif", Image.open("palette.gif").convert("RGB"))
pal.save("transparent.gif", transparency=3)
record("transparent.gif", over_white(Image.open("transparent.gif")))
pal.save("animated.gif", save_all=True, append_images=[other.quantize(colors=32)], duration=100, loop=0)
record("animated.gif", Image.open("animated.gif").convert("RGB"))

base.save("rgb24.bmp")
record("rgb24.bmp", Image.open("rgb24.bmp").convert("RGB"))
base.quantize(colors=16).save("palette8.bmp")
record("palette8.bmp", Image.open("palette8.bmp").convert("RGB"))
grey.point(lambda v: 255 if v > 100 else 0).convert("1").save("mono1.bmp")
record("mono1.bmp", Image.open("mono1.bmp").convert("RGB"))


def write_tiff(path, w, h, samples, bits, pixel_bytes, tile=None, rows_per_strip=None):
    """Minimal little-endian uncompressed TIFF writer, for what Pillow cannot write (16-bit RGB, tiles)."""
    bpp = samples * bits // 8
    chunks = []
    if tile:
        tw, th = tile
        for ty in range(0, h, th):
            for tx in range(0, w, tw):
                data = b""
                for y in range(ty, ty + th):
                    for x in range(tx, tx + tw):
                        data += pixel_bytes(x, y) if x < w and y < h else b"\0" * bpp
                chunks.append(data)
    else:
        rps = rows_per_strip or h
        for y0 in range(0, h, rps):
            chunks.append(b"".join(pixel_bytes(x, y) for y in range(y0, min(h, y0 + rps)) for x in range(w)))
    entries = []
    extra = b""
    header = 8
    data_offset = header
    offsets = []
    for c in chunks:
        offsets.append(data_offset)
        data_offset += len(c)
    ifd_at = data_offset
    n_entries = 11 if tile else 10
    extra_at = ifd_at + 2 + n_entries * 12 + 4

    def put_array(fmt, values):
        nonlocal extra
        at = extra_at + len(extra)
        extra += struct.pack("<" + fmt * len(values), *values)
        return at

    bits_value = [bits] * samples
    bits_field = (3, samples, bits if samples == 1 else put_array("H", bits_value))
    entries.append((256, 4, 1, w))
    entries.append((257, 4, 1, h))
    entries.append((258,) + bits_field)
    entries.append((259, 3, 1, 1))
    entries.append((262, 3, 1, 2 if samples >= 3 else 1))
    count = len(chunks)
    off_field = offsets[0] if count == 1 else put_array("I", offsets)
    len_field = len(chunks[0]) if count == 1 else put_array("I", [len(c) for c in chunks])
    entries.append((277, 3, 1, samples))
    entries.append((284, 3, 1, 1))
    if tile:
        entries.append((322, 4, 1, tile[0]))
        entries.append((323, 4, 1, tile[1]))
        entries.append((324, 4, count, off_field))
        entries.append((325, 4, count, len_field))
    else:
        entries.append((273, 4, count, off_field))
        entries.append((278, 4, 1, rows_per_strip or h))
        entries.append((279, 4, count, len_field))
    entries.sort()
    assert len(entries) == n_entries
    ifd = struct.pack("<H", n_entries)
    for tag, typ, cnt, value in entries:
        packed = struct.pack("<HH", value, 0) if typ == 3 and cnt == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, cnt) + packed
    ifd += struct.pack("<I", 0)
    out = b"II*\0" + struct.pack("<I", ifd_at) + b"".join(chunks) + ifd + extra
    open(path, "wb").write(out)


def rgb16_pixel(x, y):
    return b"".join(struct.pack("<H", v * 256 + (x * 37 + y * 11) % 256) for v in base.getpixel((x, y)))


write_tiff("rgb16_strips.tif", W, H, 3, 16, rgb16_pixel, rows_per_strip=7)
record("rgb16_strips.tif", Image.open("rgb16_strips.tif").convert("RGB"))
write_tiff("rgb8_tiles.tif", W, H, 3, 8, lambda x, y: bytes(base.getpixel((x, y))), tile=(16, 16))
record("rgb8_tiles.tif", Image.open("rgb8_tiles.tif").convert("RGB"))
write_tiff("rgb16_tiles.tif", W, H, 3, 16, rgb16_pixel, tile=(16, 16))
record("rgb16_tiles.tif", Image.open("rgb16_tiles.tif").convert("RGB"))
base.save("rgb8_lzw.tif", compression="tiff_lzw")
record("rgb8_lzw.tif", Image.open("rgb8_lzw.tif").convert("RGB"))
base.save("multipage.tif", save_all=True, append_images=[other, other.transpose(Image.FLIP_TOP_BOTTOM)])
record("multipage.tif", Image.open("multipage.tif").convert("RGB"))
base.quantize(colors=16).save("palette.tif")
record("palette.tif", Image.open("palette.tif").convert("RGB"))
rgba.save("rgba.tif")
record("rgba.tif", over_white(Image.open("rgba.tif")))
Image.open("grey16.png").save("grey16.tif")
record("grey16.tif", grey.convert("RGB"))  # high byte; Pillow would clip I;16 to 255

# EXIF orientation: the same JPEG with Orientation 6 (rotate 90° clockwise to view); expected = Pillow's exif_transpose.
from PIL import ImageOps
exif = Image.Exif()
exif[0x0112] = 6
base.save("orientation6.jpg", quality=90, exif=exif.tobytes())
record("orientation6.jpg", ImageOps.exif_transpose(Image.open("orientation6.jpg")).convert("RGB"))

# DCT-scaling fixture: 1024x768, smooth so it stays tiny.
Image.linear_gradient("L").resize((1024, 768)).convert("RGB").save("large_1024x768.jpg", quality=30)

# Resize goldens, computed the torchvision way on a PNG (decode is exact, so only resampling is compared).
src = pattern(320, 240, seed=1)
src.save("golden_source.png")


def torchvision_resize_crop(im, size, crop, resample):
    w, h = im.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    out = im.resize((nw, nh), resample)
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return out.crop((left, top, left + crop, top + crop))


goldens = {
    "golden_bilinear_256_224.png": (256, 224, Image.BILINEAR),
    "golden_bilinear_64_56.png": (64, 56, Image.BILINEAR),
    "golden_bicubic_100_96.png": (100, 96, Image.BICUBIC),
}
for name, (size, crop, resample) in goldens.items():
    torchvision_resize_crop(src, size, crop, resample).save(name, optimize=True)

json.dump(expected, open("expected.json", "w"), indent=1, sort_keys=True)
