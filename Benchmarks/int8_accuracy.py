#!/usr/bin/env python3
"""What int8 costs in accuracy: featstream --precision int8 against fp32 on Fashion-MNIST, per bundled model.

For each model and each --clip-percentiles value: `featstream calibrate --clip-percentile P` on the first
--calibration-images train images (a calibration file of its own, in a scratch copy of the model folder;
P = 100 is plain min/max), then `featstream extract` of class-balanced train and test subsets in int8 (and
once in fp32), then:
  - feature cosine int8 vs fp32 per test image (median and 1st percentile);
  - head top-1 on the test subset for each, with `featstream bench train` (same L2, same data), and the
    difference with a 95% interval paired on the test images (from the images one head gets right and
    the other wrong).

Usage: python3 Benchmarks/int8_accuracy.py --featstream .build/release/featstream
         [--train-per-class 300] [--test-per-class 100] [--calibration-images 512] [--l2 1e-3]
         [--clip-percentiles 100 99.99]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from accuracy import HOME, balanced_manifest, private_model_copy, run_json  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--featstream", required=True)
    parser.add_argument("--models", nargs="+", default=["open-nsfw", "efficientnet-lite0"])
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--l2", default="1e-3")
    parser.add_argument("--clip-percentiles", nargs="+", type=float, default=[100.0],
                        help="calibration clip percentiles to compare (100: min/max)")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="featstream-int8-")
    train_rows = balanced_manifest("train", args.train_per_class, os.path.join(scratch, "train.csv"))
    test_rows = balanced_manifest("val", args.test_per_class, os.path.join(scratch, "test.csv"))
    print(f"Fashion-MNIST: {len(train_rows)} train / {len(test_rows)} test images; calibration on the first "
          f"{args.calibration_images} train-manifest images; softmax regression, l2 = {args.l2}")
    print("| model | calibration | cosine int8 vs fp32, median | 1st percentile | fp32 top-1 | int8 top-1 | difference (pp, ± 95% paired interval) |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        folder = private_model_copy(model, os.path.join(scratch, model))

        def extract(precision, tag):
            dirs = {}
            for split in ["train", "test"]:
                out = os.path.join(scratch, f"{model}-{tag}-{split}")
                subprocess.run([args.featstream, "extract", "--model", folder, "--precision", precision,
                                "--data", os.path.join(scratch, f"{split}.csv"), "--out", out], check=True, capture_output=True)
                dirs[split] = out
            predictions = os.path.join(scratch, f"{model}-{tag}-predictions.npy")
            top1 = run_json([args.featstream, "bench", "train", "--train", dirs["train"], "--test", dirs["test"],
                             "--l2", args.l2, "--repeats", "1", "--predictions", predictions])["accuracy"]
            return dirs, top1, np.load(predictions)

        fp32, fp32_top1, fp32_predicted = extract("fp32", "fp32")
        with open(os.path.join(fp32["test"], "metadata.csv"), newline="") as metadata:
            rows = list(csv.DictReader(metadata))
        labels = np.empty(len(rows), dtype=np.int64)
        for row in rows:
            labels[int(row["row"])] = int(row["label"])
        a = np.load(os.path.join(fp32["test"], "features.npy")).astype(np.float64)
        for percentile in args.clip_percentiles:
            subprocess.run([args.featstream, "calibrate", "--model", folder, "--data", os.path.join(scratch, "train.csv"),
                            "--images", str(args.calibration_images), "--clip-percentile", str(percentile)],
                           check=True, capture_output=True)
            int8, int8_top1, int8_predicted = extract("int8", f"int8-{percentile}")
            b = np.load(os.path.join(int8["test"], "features.npy")).astype(np.float64)
            cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            method = "min/max" if percentile >= 100 else f"{percentile:g}th percentile"
            # Paired on the same test images: only the images one head gets right and the other wrong move
            # the difference, so its standard error comes from those (McNemar), not from two binomials.
            gained = np.mean((int8_predicted == labels) & (fp32_predicted != labels))
            lost = np.mean((int8_predicted != labels) & (fp32_predicted == labels))
            error = np.sqrt((gained + lost - (gained - lost) ** 2) / len(labels))
            print(f"| {model} | {method} | {np.median(cosine):.5f} | {np.percentile(cosine, 1):.5f} | {100 * fp32_top1:.2f}% | "
                  f"{100 * int8_top1:.2f}% | {100 * (int8_top1 - fp32_top1):+.2f} ± {196 * error:.2f} |", flush=True)


if __name__ == "__main__":
    main()
