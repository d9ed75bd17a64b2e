#!/usr/bin/env python3
"""Backbone-only throughput of FeatureStream's oneDNN engine against onnxruntime, as ratios from one run.

The machines are shared and noisy, so the two sides alternate: each round runs onnxruntime, then
`featstream bench backbone`, each in its own process for the same number of seconds, with the same
model, batch size, thread count and a constant input. The reported figure per side is the median
over rounds, and the ratio is swift/onnxruntime.

Usage:
  python3 Benchmarks/backbone_vs_ort.py --featstream .build/release/featstream \
      [--models open-nsfw efficientnet-lite0] [--zoo] [--int8] [--batches 16 1] [--threads 2] [--seconds 4] [--rounds 3]

--zoo adds every model of $FEATSTREAM_HOME/zoo (Ops/models/make_zoo.py). A model name is looked up in
$FEATSTREAM_HOME/models, then in $FEATSTREAM_HOME/zoo. The ratio column is the median of the per-round
ratios (each round runs both sides back to back), which is steadier than a ratio of medians on a
shared machine; both medians are shown too.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HOME = os.environ.get("FEATSTREAM_HOME") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".featstream")

ORT_SNIPPET = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
path, name, batch, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
shape = [batch] + list(session.get_inputs()[0].shape[1:])
x = np.full(shape, 0.5, np.float32)
for _ in range(3):
    session.run(None, {name: x})
images, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    session.run(None, {name: x})
    images += batch
print(json.dumps({"imagesPerSecond": images / (time.perf_counter() - start)}))
"""


def ort_rate(model_dir, batch, threads, seconds):
    config = json.load(open(os.path.join(model_dir, "model.json")))
    out = subprocess.run([sys.executable, "-c", ORT_SNIPPET, os.path.join(model_dir, config["onnx"]),
                          config["input"]["name"], str(batch), str(threads), str(seconds)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["imagesPerSecond"]


def swift_rate(featstream, model_dir, batch, threads, seconds, precision="fp32"):
    out = subprocess.run([featstream, "bench", "backbone", "--model", model_dir, "--batch", str(batch),
                          "--threads", str(threads), "--seconds", str(seconds), "--precision", precision],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["imagesPerSecond"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--featstream", required=True, help="path to a release build of featstream")
    parser.add_argument("--models", nargs="*", default=["open-nsfw", "efficientnet-lite0"])
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--zoo", action="store_true", help="also every model in $FEATSTREAM_HOME/zoo")
    parser.add_argument("--int8", action="store_true",
                        help="also featstream --precision int8 (calibrating first, on --calibration-data, where a model has no calibration.json)")
    parser.add_argument("--calibration-data", default=os.path.join(HOME, "data", "fashion-mnist-demo"))
    parser.add_argument("--calibration-images", type=int, default=64)
    args = parser.parse_args()

    models = list(args.models)
    zoo = os.path.join(HOME, "zoo")
    if args.zoo:
        models += sorted(m for m in os.listdir(zoo) if os.path.isfile(os.path.join(zoo, m, "model.json")))

    if args.int8:
        print(f"| model | batch | onnxruntime fp32 img/s | featstream fp32 img/s | ratio | featstream int8 img/s | int8 / ort fp32 |")
        print(f"|---|---|---|---|---|---|---|")
    else:
        print(f"| model | batch | onnxruntime img/s | featstream img/s | ratio (median of rounds) |")
        print(f"|---|---|---|---|---|")
    for model in models:
        model_dir = os.path.join(HOME, "models", model)
        if not os.path.isdir(model_dir):
            model_dir = os.path.join(zoo, model)
        if args.int8 and not os.path.isfile(os.path.join(model_dir, "calibration.json")):
            subprocess.run([args.featstream, "calibrate", "--model", model_dir, "--data", args.calibration_data,
                            "--images", str(args.calibration_images)], check=True, capture_output=True)
        for batch in args.batches:
            ort, swift, int8 = [], [], []
            for _ in range(args.rounds):
                ort.append(ort_rate(model_dir, batch, args.threads, args.seconds))
                swift.append(swift_rate(args.featstream, model_dir, batch, args.threads, args.seconds))
                if args.int8:
                    int8.append(swift_rate(args.featstream, model_dir, batch, args.threads, args.seconds, "int8"))
            o, s = statistics.median(ort), statistics.median(swift)
            ratio = statistics.median(b / a for a, b in zip(ort, swift))
            if args.int8:
                q = statistics.median(int8)
                ratio8 = statistics.median(b / a for a, b in zip(ort, int8))
                print(f"| {model} | {batch} | {o:.1f} | {s:.1f} | {ratio:.2f}x | {q:.1f} | {ratio8:.2f}x |", flush=True)
            else:
                print(f"| {model} | {batch} | {o:.1f} | {s:.1f} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
