#!/usr/bin/env python3
"""Head accuracy on Fashion-MNIST against scikit-learn, on the same features, in one run.

Train on a class-balanced subset of the official train set (--train-per-class, default 600 a
class = 6,000 images, to keep the run in minutes on 2 cores) and test on a class-balanced subset
of the official test set (--test-per-class, default 200 = 2,000). For each feature set, both
backbones and raw pixels (the baseline), it runs `featstream bench train` (L-BFGS softmax
regression on OpenBLAS) and `Benchmarks/head_vs_sklearn.py` (LogisticRegression(lbfgs), the same
L2 as C = 1/(l2 * n_train), the same standardization and tolerance), and prints one table.

Two tables: the default head (no --l2: L2 chosen on a held-out tenth of the training rows by the
warm-started walk, refit on all of them) against LogisticRegressionCV (its defaults: 10 Cs, 5-fold
cross-validation, refit), run alternately --repeats times so the time ratio is paired; and one fixed
L2 against LogisticRegression at the same C.

Usage: python3 Benchmarks/accuracy.py --featstream .build/release/featstream [--l2 1e-3] [--scratch DIR]
"""
import argparse
import csv
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
HOME = os.environ.get("FEATSTREAM_HOME") or os.path.join(HERE, "..", ".featstream")
FOLDER = os.path.join(HOME, "data", "fashion-mnist", "imagefolder")


def balanced_manifest(split, per_class, path):
    """A CSV manifest with the first `per_class` images of every class folder of `split`."""
    rows = []
    for class_dir in sorted(glob.glob(os.path.join(FOLDER, split, "*"))):
        for image in sorted(glob.glob(os.path.join(class_dir, "*.png")))[:per_class]:
            rows.append((os.path.abspath(image), os.path.basename(class_dir)))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return rows


def raw_pixels(rows, classes, out):
    """The baseline: the 784 pixel values / 255 as features, in the layout `featstream extract` writes."""
    save_features(np.stack([np.asarray(Image.open(p), dtype=np.float32).reshape(-1) / 255 for p, _ in rows]),
                  rows, classes, out)


def save_features(features, rows, classes, out):
    """Features of `rows` (path, class name) in the layout `featstream extract` writes, for `bench train`."""
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "features.npy"), features)
    with open(os.path.join(out, "metadata.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "index", "key", "label", "label_name", "split"])
        for i, (p, name) in enumerate(rows):
            writer.writerow([i, i, p, classes.index(name), name, ""])


def private_model_copy(model, folder):
    """A copy of $FEATSTREAM_HOME/models/MODEL at `folder` (links to its files, its own model.json, no
    calibration.json), so that `featstream calibrate` writes there and not into the shared models."""
    source = os.path.join(HOME, "models", model)
    os.makedirs(folder)
    for name in os.listdir(source):
        if name not in ("calibration.json", "model.json"):
            os.symlink(os.path.realpath(os.path.join(source, name)), os.path.join(folder, name))
    shutil.copy(os.path.join(source, "model.json"), os.path.join(folder, "model.json"))
    return folder


def run_json(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--featstream", required=True)
    parser.add_argument("--l2", default="1e-3")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="efficientnet-lite0,open-nsfw")
    parser.add_argument("--tables", default="default,fixed", help="which tables: default, fixed or both")
    parser.add_argument("--skip-pixels", action="store_true", help="leave out the raw-pixel baseline")
    parser.add_argument("--sklearn-threads", type=int, default=None,
                        help="BLAS threads for scikit-learn (default: its own, all cores); featstream uses one")
    parser.add_argument("--scratch", help="folder for the extracted features; reused when it already holds them")
    args = parser.parse_args()
    scratch = args.scratch or tempfile.mkdtemp(prefix="featstream-accuracy-")
    os.makedirs(scratch, exist_ok=True)
    train_rows = balanced_manifest("train", args.train_per_class, os.path.join(scratch, "train.csv"))
    test_rows = balanced_manifest("val", args.test_per_class, os.path.join(scratch, "test.csv"))
    classes = sorted({name for _, name in train_rows})
    sets = {}
    if not os.path.exists(os.path.join(scratch, "pixels-test", "metadata.csv")):
        raw_pixels(train_rows, classes, os.path.join(scratch, "pixels-train"))
        raw_pixels(test_rows, classes, os.path.join(scratch, "pixels-test"))
    if not args.skip_pixels:
        sets["raw pixels (784)"] = (os.path.join(scratch, "pixels-train"), os.path.join(scratch, "pixels-test"))
    for model in [m for m in args.models.split(",") if m]:
        dirs = []
        for split in ["train", "test"]:
            out = os.path.join(scratch, f"{model}-{split}")
            dirs.append(out)
            if os.path.exists(os.path.join(out, "metadata.csv")):
                continue
            subprocess.run([args.featstream, "extract", "--model", os.path.join(HOME, "models", model),
                            "--data", os.path.join(scratch, f"{split}.csv"), "--out", out, "--decode-threads", "1"],
                           check=True, capture_output=True)
        width = np.load(os.path.join(dirs[0], "features.npy"), mmap_mode="r").shape[1]
        sets[f"{model} ({width})"] = tuple(dirs)

    header = (f"Fashion-MNIST: {len(train_rows)} train / {len(test_rows)} test images (class-balanced subsets of the "
              f"official split), softmax regression, best of {args.repeats} runs")
    if "default" in args.tables:
        # Paired: ours and LogisticRegressionCV alternate, one run each per round, so both see the same
        # load; the time ratio is reported per round (median) as well as on the fastest runs.
        print(header.replace(f"best of {args.repeats} runs", f"{args.repeats} alternating rounds")
              + f"; default head (L2 chosen on validation) vs LogisticRegressionCV; load average at start "
              f"{os.getloadavg()[0]:.1f}")
        print("| features | featstream top-1 | chosen L2 | L-BFGS iterations | sklearn CV top-1 | CV's L2 | difference (pp) "
              "| featstream s (min) | sklearn CV s (min) | featstream / sklearn time (median of rounds) | load average |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, (train, test) in sets.items():
            ours_runs, theirs_runs, ratios = [], [], []
            for _ in range(args.repeats):
                ours = run_json([args.featstream, "bench", "train", "--train", train, "--test", test, "--repeats", "1"])
                theirs = run_json([sys.executable, os.path.join(HERE, "head_vs_sklearn.py"), "--train", train, "--test", test,
                                   "--cv", "--repeats", "1"] + (["--threads", str(args.sklearn_threads)] if args.sklearn_threads else []))
                ours_runs.append(ours)
                theirs_runs.append(theirs)
                ratios.append(ours["seconds"] / theirs["seconds_min"])
            ours, theirs = ours_runs[-1], theirs_runs[-1]
            print(f"| {name} | {100 * ours['accuracy']:.2f}% | {ours['l2']:.3g} | {ours['iterations']} | "
                  f"{100 * theirs['accuracy']:.2f}% | {theirs['l2']:.3g} | {100 * (ours['accuracy'] - theirs['accuracy']):+.2f} | "
                  f"{min(r['seconds'] for r in ours_runs):.3f} | {min(r['seconds_min'] for r in theirs_runs):.3f} | "
                  f"{statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)}) | {os.getloadavg()[0]:.1f} |",
                  flush=True)
    if "fixed" in args.tables:
        print(header + f"; l2 = {args.l2}")
        print("| features | featstream top-1 | sklearn top-1 | difference (pp) | featstream s | sklearn s | sklearn / featstream time |")
        print("|---|---|---|---|---|---|---|")
        for name, (train, test) in sets.items():
            ours = run_json([args.featstream, "bench", "train", "--train", train, "--test", test, "--l2", args.l2,
                             "--repeats", str(args.repeats)])
            theirs = run_json([sys.executable, os.path.join(HERE, "head_vs_sklearn.py"), "--train", train, "--test", test,
                               "--l2", args.l2, "--repeats", str(args.repeats)])
            print(f"| {name} | {100 * ours['accuracy']:.2f}% | {100 * theirs['accuracy']:.2f}% | "
                  f"{100 * (ours['accuracy'] - theirs['accuracy']):+.2f} | {ours['seconds']:.3f} | {theirs['seconds_min']:.3f} | "
                  f"{theirs['seconds_min'] / ours['seconds']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
