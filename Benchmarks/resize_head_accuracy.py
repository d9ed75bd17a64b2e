#!/usr/bin/env python3
"""Head accuracy with `resize: fast` against `resize: exact`, on the same images (issue 17 section 5).

Fast and exact only differ on images big enough for JPEG DCT scaling, so the script writes a JPEG
ImageFolder from Fashion-MNIST: the first --train-per-class / --test-per-class images of each class
of the official train / test split, upscaled (bicubic) to --size pixels square, quality 90. At 1024
pixels `fast` decodes at 1/4 scale (256, the resize target), `exact` decodes whole and resizes.

Then: `featstream extract --resize fast` and `--resize exact` over both splits, the default head
(`featstream bench train`, L2 chosen on a held-out tenth) trained on each mode's training features and
tested on each mode's test features (4 pairs: the diagonal is "trained and deployed alike", the
off-diagonal a head deployed behind the other pipeline), and the cosine between the two modes' features.
Also the extraction rate of each mode (one decode thread, one run, so only indicative).

Usage: python3 Benchmarks/resize_head_accuracy.py --featstream .build/release/featstream [--scratch DIR]
"""
import argparse
import csv
import glob
import json
import os
import subprocess
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
HOME = os.environ.get("FEATSTREAM_HOME") or os.path.join(HERE, "..", ".featstream")
FOLDER = os.path.join(HOME, "data", "fashion-mnist", "imagefolder")


def jpeg_split(split, per_class, size, out):
    """Upscaled JPEGs of the first `per_class` images of every class of `split`; returns the manifest path."""
    rows = []
    for class_dir in sorted(glob.glob(os.path.join(FOLDER, split, "*"))):
        label = os.path.basename(class_dir)
        os.makedirs(os.path.join(out, label), exist_ok=True)
        for image in sorted(glob.glob(os.path.join(class_dir, "*.png")))[:per_class]:
            target = os.path.join(out, label, os.path.splitext(os.path.basename(image))[0] + ".jpg")
            if not os.path.exists(target):
                Image.open(image).convert("RGB").resize((size, size), Image.BICUBIC).save(target, quality=90)
            rows.append((target, label))
    manifest = out + ".csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return manifest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--featstream", required=True)
    parser.add_argument("--model", default=os.path.join(HOME, "models", "efficientnet-lite0"))
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--scratch")
    args = parser.parse_args()
    scratch = args.scratch or tempfile.mkdtemp(prefix="featstream-resize-head-")
    os.makedirs(scratch, exist_ok=True)
    manifests = {split: jpeg_split(folder, per_class, args.size, os.path.join(scratch, f"jpeg-{split}"))
                 for split, folder, per_class in [("train", "train", args.train_per_class), ("test", "val", args.test_per_class)]}
    rates = {}
    for mode in ["fast", "exact"]:
        for split, manifest in manifests.items():
            out = os.path.join(scratch, f"{mode}-{split}")
            if os.path.exists(os.path.join(out, "metadata.csv")):
                continue
            start = time.perf_counter()
            subprocess.run([args.featstream, "extract", "--model", args.model, "--data", manifest, "--out", out,
                            "--resize", mode, "--decode-threads", "1"], check=True, capture_output=True)
            rows = np.load(os.path.join(out, "features.npy"), mmap_mode="r").shape[0]
            rates[f"{mode}-{split}"] = rows / (time.perf_counter() - start)

    a = np.load(os.path.join(scratch, "fast-test", "features.npy")).astype(np.float64)
    b = np.load(os.path.join(scratch, "exact-test", "features.npy")).astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"Fashion-MNIST as {args.size}x{args.size} JPEGs: {args.train_per_class * 10} train / {args.test_per_class * 10} "
          f"test images; EfficientNet-Lite0 features; default head; load average {os.getloadavg()[0]:.1f}")
    print(f"test-feature cosine fast vs exact: min {cosine.min():.4f}, median {np.median(cosine):.4f}, mean {cosine.mean():.4f}")
    if rates:
        print("extraction img/s (1 decode thread, this run): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(rates.items())))
    print("| head trained on | tested on fast | tested on exact | chosen L2 |")
    print("|---|---|---|---|")
    for train_mode in ["fast", "exact"]:
        cells, l2 = [], None
        for test_mode in ["fast", "exact"]:
            out = subprocess.run([args.featstream, "bench", "train", "--train", os.path.join(scratch, f"{train_mode}-train"),
                                  "--test", os.path.join(scratch, f"{test_mode}-test"), "--repeats", "1"],
                                 check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            cells.append(f"{100 * result['accuracy']:.2f}%")
            l2 = result["l2"]
        print(f"| {train_mode} | {cells[0]} | {cells[1]} | {l2:.3g} |", flush=True)


if __name__ == "__main__":
    main()
