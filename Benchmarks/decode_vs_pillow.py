#!/usr/bin/env python3
"""Times Pillow's decode -> resize(shorter side) -> centre crop on the same files as the Swift ImageInput path.

Both sides run single-threaded over files already read into memory, so only decoding and resampling count.
Pillow is timed three ways:
  plain        Image.open + convert('RGB') + resize + crop (what torchvision's Resize/CenterCrop does)
  draft        as plain, plus im.draft('RGB', (size, size)) first: Pillow's DCT-domain downscale,
               the closest analogue of ImageInput's TurboJPEG scaling
  draft+norm   as draft, plus numpy float32 normalisation and HWC->CHW, i.e. the full work ImageInput does

Usage:
  python3 Benchmarks/decode_vs_pillow.py [--iterations N] [--resize 256] [--crop 224] [--filter bilinear]
      [--swift "CMD"] [FILES...]

With --swift, CMD is run with "--iterations N --resize S --crop C [--bicubic] FILES..." appended and must print
one JSON object as its last line with imagesPerSecond and failures (`featstream bench decode`, the Benchmarks
module's DecodeBenchmark); the Swift/Pillow ratios are then printed.

  python3 Benchmarks/decode_vs_pillow.py --formats --swift "featstream bench decode" [--rounds 3] [JPEGS...]

--formats re-encodes the JPEGs (default: the 20 ImageNet samples) with Pillow as PNG, lossy WebP, lossless
WebP, GIF, BMP and LZW TIFF, and for each format times Pillow plain (full decode + resize, torchvision's way)
against the Swift side with --resize-mode exact, alternating the two sides, median of --rounds; JPEG is
also timed with --resize-mode fast against Pillow with draft. It prints a Markdown table.
"""
import statistics
import tempfile
import argparse
import glob
import json
import io
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
from PIL import Image

FOOLBOX = os.path.join(os.path.dirname(__file__), "..", ".featstream", "data", "imagenet-samples", "imagenet_*.jpg")
FASHION = os.path.join(os.path.dirname(__file__), "..", ".featstream", "data", "fashion-mnist-demo", "imagefolder", "val", "*", "*.png")


def geometry(w, h, size, crop):
    """torchvision Resize(int) then CenterCrop."""
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return (nw, nh), (left, top, left + crop, top + crop)


def pillow_pass(blobs, size, crop, resample, draft, normalise):
    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    inv_std = 1 / np.array([58.395, 57.12, 57.375], dtype=np.float32)
    for blob in blobs:
        im = Image.open(io.BytesIO(blob))
        if draft:
            im.draft("RGB", (size, size))
        im = im.convert("RGB")
        new_size, box = geometry(im.width, im.height, size, crop)
        out = im.resize(new_size, resample).crop(box)
        if normalise:
            arr = (np.asarray(out, dtype=np.float32) - mean) * inv_std
            np.ascontiguousarray(arr.transpose(2, 0, 1))
        else:
            out.load()


def time_pillow(blobs, iterations, size, crop, resample, draft, normalise):
    pillow_pass(blobs, size, crop, resample, draft, normalise)  # warm-up, like the Swift side
    start = time.perf_counter()
    for _ in range(iterations):
        pillow_pass(blobs, size, crop, resample, draft, normalise)
    elapsed = time.perf_counter() - start
    return len(blobs) * iterations / elapsed


def swift_rate(command, files, args, extra=()):
    command = shlex.split(command) + ["--iterations", str(args.iterations), "--resize", str(args.resize),
                                      "--crop", str(args.crop)] + list(extra)
    if args.filter == "bicubic":
        command.append("--bicubic")
    result = swift_json(command + files)
    if result["failures"]:
        sys.exit(f"the Swift side failed on {result['failures']} images: {result!r}")
    return float(result["imagesPerSecond"])


def swift_json(command):
    """The JSON object on the last line of the Swift command's output (DecodeBenchmark)."""
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    try:
        return json.loads(output.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.exit(f"could not parse Swift output: {output!r}")


def format_table(args, jpegs):
    """Per-format decode + resize + crop, Swift exact (and fast for JPEG) against Pillow, alternating."""
    resample = Image.BILINEAR if args.filter == "bilinear" else Image.BICUBIC
    sources = [Image.open(f).convert("RGB") for f in jpegs]
    encodings = {
        "JPEG (q≈75-95, as shipped)": None,
        "PNG": dict(format="PNG"),
        "WebP lossy q90": dict(format="WEBP", quality=90),
        "WebP lossless": dict(format="WEBP", lossless=True),
        "GIF (256 colours)": dict(format="GIF"),
        "BMP 24-bit": dict(format="BMP"),
        "TIFF LZW": dict(format="TIFF", compression="tiff_lzw"),
    }
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, options in encodings.items():
            if options is None:
                files = list(jpegs)
            else:
                files = []
                for i, im in enumerate(sources):
                    path = os.path.join(folder, f"{i:02d}.{options['format'].lower()}")
                    kwargs = {k: v for k, v in options.items() if k != "format"}
                    (im.quantize(256) if options["format"] == "GIF" else im).save(path, options["format"], **kwargs)
                    files.append(path)
            blobs = [open(f, "rb").read() for f in files]
            modes = [("exact", False)] + ([("fast", True)] if options is None else [])
            for mode, draft in modes:
                pillow, swift = [], []
                for _ in range(args.rounds):
                    pillow.append(time_pillow(blobs, args.iterations, args.resize, args.crop, resample, draft, False))
                    swift.append(swift_rate(args.swift, files, args, ["--resize-mode", mode]))
                p, s = statistics.median(pillow), statistics.median(swift)
                peer = "Pillow + draft" if draft else "Pillow plain"
                rows.append(f"| {label} | {mode} | {s:.1f} | {peer} {p:.1f} | **{s / p:.2f}×** |")
                print(rows[-1], flush=True)
    print()
    print("| format (20 ImageNet photos re-encoded by Pillow) | featstream resize | featstream img/s | Pillow img/s | ratio |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", action="store_true", help="per-format table (see above)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("files", nargs="*")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--filter", choices=["bilinear", "bicubic"], default="bilinear")
    parser.add_argument("--swift", help="command printing a DecodeBenchmark JSON line for the Swift side")
    args = parser.parse_args()

    if args.formats:
        if not args.swift:
            sys.exit("--formats needs --swift")
        format_table(args, args.files or sorted(glob.glob(FOOLBOX)))
        return
    files = args.files or sorted(glob.glob(FOOLBOX)) + sorted(glob.glob(FASHION))[:200]
    if not files:
        sys.exit("no input files")
    blobs = [open(f, "rb").read() for f in files]
    resample = Image.BILINEAR if args.filter == "bilinear" else Image.BICUBIC
    print(f"{len(files)} files x {args.iterations} iterations, resize {args.resize}, crop {args.crop}, {args.filter}, "
          f"Pillow {Image.__version__}")

    rates = {}
    for label, draft, normalise in [("plain", False, False), ("draft", True, False), ("draft+norm", True, True)]:
        rates[label] = time_pillow(blobs, args.iterations, args.resize, args.crop, resample, draft, normalise)
        print(f"pillow {label:<11} {rates[label]:9.1f} images/s")

    if args.swift:
        command = shlex.split(args.swift) + ["--iterations", str(args.iterations), "--resize", str(args.resize),
                                             "--crop", str(args.crop)]
        if args.filter == "bicubic":
            command.append("--bicubic")
        swift = float(swift_json(command + files)["imagesPerSecond"])
        print(f"swift  imageinput  {swift:9.1f} images/s")
        for label, rate in rates.items():
            print(f"ratio swift/pillow-{label}: {swift / rate:.2f}x")


if __name__ == "__main__":
    main()
