#!/usr/bin/env python3
"""Feature agreement between `--resize fast` and `--resize exact` on the same JPEGs.

Runs `featstream extract` twice over a manifest of the files (default: the 20 ImageNet samples), once per mode,
and prints the cosine similarity of each image's two feature vectors (min, median, mean) and top-1 agreement of
the model's own logits.

Usage: python3 Benchmarks/resize_fast_vs_exact.py --featstream .build/release/featstream [--model PATH] [FILES...]
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np

HOME = os.environ.get("FEATSTREAM_HOME", os.path.join(os.path.dirname(__file__), "..", ".featstream"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*")
    parser.add_argument("--featstream", required=True)
    parser.add_argument("--model", default=os.path.join(HOME, "models", "efficientnet-lite0"))
    args = parser.parse_args()
    files = [os.path.abspath(f) for f in (args.files or sorted(glob.glob(os.path.join(HOME, "data", "imagenet-samples", "*.jpg"))))]
    if not files:
        sys.exit("no input files")
    with tempfile.TemporaryDirectory() as folder:
        manifest = os.path.join(folder, "files.csv")
        with open(manifest, "w") as out:
            out.write("path,label\n" + "".join(f"{f},0\n" for f in files))
        features, logits = {}, {}
        for mode in ["fast", "exact"]:
            target = os.path.join(folder, mode)
            subprocess.run([args.featstream, "extract", "--model", args.model, "--data", manifest, "--out", target,
                            "--resize", mode, "--logits"], check=True, capture_output=True)
            features[mode] = np.load(os.path.join(target, "features.npy")).astype(np.float64)
            logits[mode] = np.load(os.path.join(target, "logits.npy"))
    a, b = features["fast"], features["exact"]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    agree = (logits["fast"].argmax(1) == logits["exact"].argmax(1)).mean()
    # The foolbox samples are named imagenet_<n>_<class>.jpg: score the model's own top-1 in each mode.
    labels = [os.path.splitext(os.path.basename(f))[0].rsplit("_", 1)[-1] for f in files]
    if all(label.isdigit() for label in labels):
        truth = np.array([int(label) for label in labels])
        for mode in ["fast", "exact"]:
            print(f"{mode}: the model's own top-1 is right on {(logits[mode].argmax(1) == truth).sum()}/{len(files)}")
    print(f"{len(files)} images, {os.path.basename(os.path.normpath(args.model))}: feature cosine fast vs exact "
          f"min {cosine.min():.4f}, median {np.median(cosine):.4f}, mean {cosine.mean():.4f}; "
          f"top-1 of the model's logits agrees on {agree * 100:.0f}%")


if __name__ == "__main__":
    main()
