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

With --ort-int8, onnxruntime too, as issue 16 asks ("faster than onnxruntime int8 at equal or better
head accuracy"): the same images preprocessed by Pillow (Benchmarks/backbone_vs_ort.py), onnxruntime fp32
and onnxruntime's static int8 (QDQ, per-channel s8 weights, u8 activations, min/max calibration on the same
first --calibration-images train images) up to the config's feature node, a head on each with `bench
train`, and a second table: both top-1s and featstream int8 − onnxruntime int8, paired on the test images.

Usage: python3 Benchmarks/int8_accuracy.py --featstream .build/release/featstream
         [--train-per-class 300] [--test-per-class 100] [--calibration-images 512] [--l2 1e-3]
         [--clip-percentiles 100 99.99] [--ort-int8]
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
from accuracy import HOME, balanced_manifest, private_model_copy, run_json, save_features  # noqa: E402
from backbone_vs_ort import ort_int8_model, preprocessed_images  # noqa: E402


def paired_difference(a_predicted, b_predicted, labels):
    """a's top-1 minus b's, in pp, and the half-width of its 95% interval paired on the same test images:
    only the images one head gets right and the other wrong move the difference, so its standard error
    comes from those (McNemar), not from two binomials."""
    gained = np.mean((a_predicted == labels) & (b_predicted != labels))
    lost = np.mean((a_predicted != labels) & (b_predicted == labels))
    return 100 * (gained - lost), 196 * np.sqrt((gained + lost - (gained - lost) ** 2) / len(labels))


def cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def onnxruntime_features(folder, int8_path, splits, classes, scratch, model):
    """Feature folders {fp32, int8: {split: folder}} of onnxruntime for each split's (path, class) rows:
    each image preprocessed once and run through both sessions, batches of 16, every core."""
    import onnx
    import onnxruntime as ort
    config = json.load(open(os.path.join(folder, "model.json")))
    feature = config["featureNode"]

    def session(path):
        graph = onnx.load(path)
        if feature not in [o.name for o in graph.graph.output]:
            graph.graph.output.append(onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count()
        return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sessions = {"fp32": session(os.path.join(folder, config["onnx"])), "int8": session(int8_path)}
    dirs = {"fp32": {}, "int8": {}}
    for split, rows in splits.items():
        features = {"fp32": [], "int8": []}
        pending = []

        def flush(name):
            x = np.concatenate(pending)
            for precision, s in sessions.items():
                features[precision].append(s.run([feature], {name: x})[0].reshape(len(x), -1))
            pending.clear()
        for name, x in preprocessed_images(folder, [path for path, _ in rows]):
            pending.append(x)
            if len(pending) == 16:
                flush(name)
        if pending:
            flush(name)
        for precision in sessions:
            dirs[precision][split] = os.path.join(scratch, f"{model}-ort-{precision}-{split}")
            save_features(np.concatenate(features[precision]), rows, classes, dirs[precision][split])
    return dirs


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
    parser.add_argument("--ort-int8", action="store_true", help="also onnxruntime fp32 and static int8 (QDQ), same images")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="featstream-int8-")
    train_rows = balanced_manifest("train", args.train_per_class, os.path.join(scratch, "train.csv"))
    test_rows = balanced_manifest("val", args.test_per_class, os.path.join(scratch, "test.csv"))
    print(f"Fashion-MNIST: {len(train_rows)} train / {len(test_rows)} test images; calibration on the first "
          f"{args.calibration_images} train-manifest images; softmax regression, l2 = {args.l2}")
    print("| model | calibration | cosine int8 vs fp32, median | 1st percentile | fp32 top-1 | int8 top-1 | difference (pp, ± 95% paired interval) |")
    print("|---|---|---|---|---|---|---|")
    ort_rows = []
    for model in args.models:
        folder = private_model_copy(model, os.path.join(scratch, model))

        def top1(dirs, tag):
            predictions = os.path.join(scratch, f"{model}-{tag}-predictions.npy")
            accuracy = run_json([args.featstream, "bench", "train", "--train", dirs["train"], "--test", dirs["test"],
                                 "--l2", args.l2, "--repeats", "1", "--predictions", predictions])["accuracy"]
            return accuracy, np.load(predictions)

        def extract(precision, tag):
            dirs = {}
            for split in ["train", "test"]:
                out = os.path.join(scratch, f"{model}-{tag}-{split}")
                subprocess.run([args.featstream, "extract", "--model", folder, "--precision", precision,
                                "--data", os.path.join(scratch, f"{split}.csv"), "--out", out], check=True, capture_output=True)
                dirs[split] = out
            return (dirs,) + top1(dirs, tag)

        fp32, fp32_top1, fp32_predicted = extract("fp32", "fp32")
        with open(os.path.join(fp32["test"], "metadata.csv"), newline="") as metadata:
            rows = list(csv.DictReader(metadata))
        labels = np.empty(len(rows), dtype=np.int64)
        for row in rows:
            labels[int(row["row"])] = int(row["label"])
        a = np.load(os.path.join(fp32["test"], "features.npy"))
        for percentile in args.clip_percentiles:
            subprocess.run([args.featstream, "calibrate", "--model", folder, "--data", os.path.join(scratch, "train.csv"),
                            "--images", str(args.calibration_images), "--clip-percentile", str(percentile)],
                           check=True, capture_output=True)
            int8, int8_top1, int8_predicted = extract("int8", f"int8-{percentile}")
            cosine = cosines(a, np.load(os.path.join(int8["test"], "features.npy")))
            method = "min/max" if percentile >= 100 else f"{percentile:g}th percentile"
            difference, interval = paired_difference(int8_predicted, fp32_predicted, labels)
            print(f"| {model} | {method} | {np.median(cosine):.5f} | {np.percentile(cosine, 1):.5f} | {100 * fp32_top1:.2f}% | "
                  f"{100 * int8_top1:.2f}% | {difference:+.2f} ± {interval:.2f} |", flush=True)
            if percentile == args.clip_percentiles[0]:
                ours = (int8_top1, int8_predicted)
        if args.ort_int8:
            classes = list(dict.fromkeys(name for _, name in train_rows))
            int8_path = ort_int8_model(folder, [path for path, _ in train_rows[:args.calibration_images]],
                                       os.path.join(scratch, "ort-int8"))
            dirs = onnxruntime_features(folder, int8_path, {"train": train_rows, "test": test_rows}, classes, scratch, model)
            ort_fp32_top1, ort_fp32_predicted = top1(dirs["fp32"], "ort-fp32")
            ort_int8_top1, ort_int8_predicted = top1(dirs["int8"], "ort-int8")
            ort_cosine = cosines(np.load(os.path.join(dirs["fp32"]["test"], "features.npy")),
                                 np.load(os.path.join(dirs["int8"]["test"], "features.npy")))
            ort_difference, ort_interval = paired_difference(ort_int8_predicted, ort_fp32_predicted, labels)
            versus, versus_interval = paired_difference(ours[1], ort_int8_predicted, labels)
            same_input = np.median(cosines(a, np.load(os.path.join(dirs["fp32"]["test"], "features.npy"))))
            ort_rows.append(f"| {model} | {same_input:.5f} | {np.median(ort_cosine):.5f} | {np.percentile(ort_cosine, 1):.5f} | {100 * ort_fp32_top1:.2f}% | "
                            f"{100 * ort_int8_top1:.2f}% | {ort_difference:+.2f} ± {ort_interval:.2f} | {100 * ours[0]:.2f}% | "
                            f"**{versus:+.2f} ± {versus_interval:.2f}** |")
    if args.ort_int8:
        print(f"\nonnxruntime on the same images (Pillow preprocessing), int8 = quantize_static QDQ on the same "
              f"{args.calibration_images} calibration images; featstream int8 = the first calibration above:")
        print("| model | cosine featstream fp32 vs ort fp32, median | cosine ort int8 vs ort fp32, median | 1st percentile | ort fp32 top-1 | ort int8 top-1 "
              "| ort int8 − ort fp32 (pp, ± 95% paired) | featstream int8 top-1 | featstream int8 − ort int8 (pp, ± 95% paired) |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(ort_rows), flush=True)

if __name__ == "__main__":
    main()
