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
