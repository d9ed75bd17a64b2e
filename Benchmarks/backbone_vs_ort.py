#!/usr/bin/env python3
"""Backbone-only throughput of FeatureStream's oneDNN engine against onnxruntime, as ratios from one run.

The machines are shared and noisy, so the two sides alternate: each round runs onnxruntime, then
`featstream bench backbone`, each in its own process for the same number of seconds, with the same
model, batch size, thread count and a constant input. The reported figure per side is the median
over rounds, and the ratio is swift/onnxruntime.

Usage:
  python3 Benchmarks/backbone_vs_ort.py --featstream .build/release/featstream \
      [--models open-nsfw efficientnet-lite0] [--zoo] [--int8] [--batches 16 1] [--threads 2] [--seconds 4] [--rounds 3] \
      [--baseline OTHER_BUILD/featstream]

--ort-int8 adds onnxruntime int8: the model quantised by onnxruntime.quantization.quantize_static
(QDQ, per-channel s8 weights, u8 activations, min/max calibration on the same --calibration-images
images of --calibration-data, preprocessed as the model config says), written under --work-dir.

--baseline adds a third side to every round: another build of featstream (an older commit, built in
a scratch worktree), fp32, so that a speed regression shows as a ratio from the same run.

--zoo adds every model of $FEATSTREAM_HOME/zoo (Ops/models/make_zoo.py). A model name is looked up in
$FEATSTREAM_HOME/models, then in $FEATSTREAM_HOME/zoo. The ratio column is the median of the per-round
ratios (each round runs both sides back to back), which is steadier than a ratio of medians on a
shared machine; both medians are shown too.
"""
import argparse
import json
import os
import shutil
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


def first_images(data, count):
    """The first `count` image files of an ImageFolder dataset, by path."""
    root = os.path.join(data, "imagefolder") if os.path.isdir(os.path.join(data, "imagefolder")) else data
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                  if f.lower().endswith((".jpg", ".jpeg", ".png")))[:count]


def preprocessed_images(model_dir, files):
    """(input name, 1×… tensor) for each image file, preprocessed as the model config says (Pillow)."""
    import numpy as np
    from PIL import Image
    config = json.load(open(os.path.join(model_dir, "model.json")))
    pre = config["preprocess"]
    for path in files:
        image = Image.open(path).convert("RGB")
        scale = pre["resizeShorterSide"] / min(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.BILINEAR)
        left, top = (image.size[0] - pre["crop"]) // 2, (image.size[1] - pre["crop"]) // 2
        x = np.asarray(image.crop((left, top, left + pre["crop"], top + pre["crop"])), np.float32)
        if pre.get("colorOrder", "RGB") == "BGR":
            x = x[:, :, ::-1]
        x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
        if config["input"].get("layout", "NCHW") == "NCHW":
            x = x.transpose(2, 0, 1)
        yield config["input"]["name"], np.ascontiguousarray(x[None])


def ort_int8_model(model_dir, calibration_files, work_dir):
    """onnxruntime's own static int8 quantisation of the model (QDQ, per-channel s8 weights, u8 activations,
    min/max calibration on `calibration_files`), made once per model and work_dir."""
    from onnxruntime import quantization as q
    name = os.path.basename(os.path.normpath(model_dir))
    target = os.path.join(work_dir, name, "model.int8.onnx")
    if os.path.isfile(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    config = json.load(open(os.path.join(model_dir, "model.json")))
    source = os.path.join(model_dir, config["onnx"])
    prepared = os.path.join(work_dir, name, "model.prepared.onnx")
    import onnx
    from onnx import version_converter
    model = onnx.load(source)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        # Per-channel QuantizeLinear/DequantizeLinear (an axis attribute) need opset 13.
        source = os.path.join(work_dir, name, "model.opset13.onnx")
        onnx.save(version_converter.convert_version(model, 13), source)
    q.quant_pre_process(source, prepared, skip_symbolic_shape=True)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(preprocessed_images(model_dir, calibration_files))

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {item[0]: item[1]}

    q.quantize_static(prepared, target, Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod.MinMax)
    shutil.copy(os.path.join(model_dir, "model.json"), os.path.join(work_dir, name, "model.json"))
    config["onnx"] = "model.int8.onnx"
    json.dump(config, open(os.path.join(work_dir, name, "model.json"), "w"))
    return target


def swift_rate(featstream, model_dir, batch, threads, seconds, precision="fp32"):
    # Older builds have no --precision; fp32 is everyone's default.
    extra = [] if precision == "fp32" else ["--precision", precision]
    out = subprocess.run([featstream, "bench", "backbone", "--model", model_dir, "--batch", str(batch),
                          "--threads", str(threads), "--seconds", str(seconds)] + extra,
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
    parser.add_argument("--baseline", help="another featstream build to run fp32 in the same rounds")
    parser.add_argument("--ort-int8", action="store_true", help="also onnxruntime's static int8 (QDQ) quantisation")
    parser.add_argument("--work-dir", default="/tmp/featstream-ort-int8", help="where --ort-int8 writes quantised models")
    args = parser.parse_args()

    models = list(args.models)
    zoo = os.path.join(HOME, "zoo")
    if args.zoo:
        models += sorted(m for m in os.listdir(zoo) if os.path.isfile(os.path.join(zoo, m, "model.json")))

    header = ["model", "batch", "onnxruntime fp32 img/s", "featstream fp32 img/s", "fp32 / ort fp32"]
    if args.baseline:
        header += ["baseline fp32 img/s", "baseline / ort fp32", "featstream / baseline"]
    if args.int8:
        header += ["featstream int8 img/s", "int8 / ort fp32"]
    if args.ort_int8:
        header += ["onnxruntime int8 img/s", "featstream int8 / ort int8" if args.int8 else "ort int8 / ort fp32"]
    header += ["load average (1 min)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model in models:
        model_dir = os.path.join(HOME, "models", model)
        if not os.path.isdir(model_dir):
            model_dir = os.path.join(zoo, model)
        if args.int8 and not os.path.isfile(os.path.join(model_dir, "calibration.json")):
            subprocess.run([args.featstream, "calibrate", "--model", model_dir, "--data", args.calibration_data,
                            "--images", str(args.calibration_images)], check=True, capture_output=True)
        for batch in args.batches:
            ort, swift, base, int8, ort8 = [], [], [], [], []
            if args.ort_int8:
                ort8_dir = os.path.dirname(ort_int8_model(model_dir, first_images(args.calibration_data, args.calibration_images), args.work_dir))
            for _ in range(args.rounds):
                ort.append(ort_rate(model_dir, batch, args.threads, args.seconds))
                swift.append(swift_rate(args.featstream, model_dir, batch, args.threads, args.seconds))
                if args.baseline:
                    base.append(swift_rate(args.baseline, model_dir, batch, args.threads, args.seconds))
                if args.int8:
                    int8.append(swift_rate(args.featstream, model_dir, batch, args.threads, args.seconds, "int8"))
                if args.ort_int8:
                    ort8.append(ort_rate(ort8_dir, batch, args.threads, args.seconds))

            def ratio(numerator, denominator):
                return statistics.median(n / d for n, d in zip(numerator, denominator))
            row = [model, str(batch), f"{statistics.median(ort):.1f}", f"{statistics.median(swift):.1f}", f"{ratio(swift, ort):.2f}x"]
            if args.baseline:
                row += [f"{statistics.median(base):.1f}", f"{ratio(base, ort):.2f}x", f"{ratio(swift, base):.2f}x"]
            if args.int8:
                row += [f"{statistics.median(int8):.1f}", f"{ratio(int8, ort):.2f}x"]
            if args.ort_int8:
                row += [f"{statistics.median(ort8):.1f}", f"{ratio(int8, ort8):.2f}x" if args.int8 else f"{ratio(ort8, ort):.2f}x"]
            row += [f"{os.getloadavg()[0]:.1f}"]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
