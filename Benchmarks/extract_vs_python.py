#!/usr/bin/env python3
"""`featstream extract` against the whole job done the Python way, whole process, as ratios from one run.

The Python way is what a Python user writes for the same job (issue 16 §4): read the manifest, decode
and preprocess with Pillow in a `multiprocessing.Pool` of one process per core (JPEGs through
`Image.draft`, Pillow's DCT-domain downscale, then resize of the shorter side, centre crop, colour
order, mean/std and layout as the model config says), batches of --batch through onnxruntime with
every core (intra-op threads = cores) up to the config's feature node, and the features saved as one
`.npy`. It runs as its own `python3` process, so both sides pay their start-up, model load and output.

The featstream side is `featstream extract --model M --data MANIFEST --out DIR` (fp32, and with
--int8 also `--precision int8` after a `featstream calibrate` on the corpus's first 64 images, which
is not timed: it is done once per model).

The corpus: the 20 ImageNet sample JPEGs (512×512) of $FEATSTREAM_HOME/data/imagenet-samples, and the
same images re-encoded by Pillow as PNG, each listed under --images distinct file names (symbolic
links) in a manifest. Every side reads the same files, from the page cache after the first round.

Each round runs every side once per model and format, alternating; the table gives medians of the
wall times in images per second, and the ratio is the median of the per-round ratios (each round's
seconds go to stderr as JSON). A sanity column
gives the median cosine between the Python way's features and featstream fp32's for the same images
(they differ only by resampling: draft + bilinear against featstream's own resize).

Usage: python3 Benchmarks/extract_vs_python.py --featstream .build/release/featstream
         [--models open-nsfw efficientnet-lite0] [--formats jpeg png] [--images 1000] [--rounds 3] [--int8]
         [--resize fast]  (featstream's JPEG scaling while decoding, the analogue of draft; default exact)
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
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import HOME, private_model_copy  # noqa: E402

SAMPLES = os.path.join(HOME, "data", "imagenet-samples", "imagenet_*.jpg")

# The Python user's script, run as `python3 -c PYTHON_WAY MODEL_DIR MANIFEST OUT.npy BATCH`.
PYTHON_WAY = r"""
import csv, json, os, sys
from multiprocessing import Pool
import numpy as np, onnx, onnxruntime as ort
from PIL import Image

model_dir, manifest, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = json.load(open(os.path.join(model_dir, "model.json")))
pre, feature = config["preprocess"], config["featureNode"]
size, crop = pre["resizeShorterSide"], pre["crop"]
mean, std = np.array(pre["mean"], np.float32), np.array(pre["std"], np.float32)
bgr, nchw = pre.get("colorOrder", "RGB") == "BGR", config["input"].get("layout", "NCHW") == "NCHW"

def preprocess(path):
    image = Image.open(path)
    scale = size / min(image.size)
    target = (round(image.size[0] * scale), round(image.size[1] * scale))
    image.draft("RGB", target)
    image = image.convert("RGB").resize(target, Image.BILINEAR)
    left, top = (target[0] - crop) // 2, (target[1] - crop) // 2
    x = np.asarray(image.crop((left, top, left + crop, top + crop)), np.float32)
    if bgr:
        x = x[:, :, ::-1]
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1) if nchw else x)

if __name__ == "__main__":
    paths = [row["path"] for row in csv.DictReader(open(manifest, newline=""))]
    pool = Pool(os.cpu_count())  # forked before onnxruntime starts its threads
    model = onnx.load(os.path.join(model_dir, config["onnx"]))
    if feature not in [o.name for o in model.graph.output]:
        # The feature node is inside the graph: make it an output, as a user would.
        inferred = onnx.shape_inference.infer_shapes(model)
        model.graph.output.append(next(v for v in inferred.graph.value_info if v.name == feature))
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    features, pending = [], []
    for x in pool.imap(preprocess, paths, chunksize=batch):
        pending.append(x)
        if len(pending) == batch:
            features.append(session.run([feature], {name: np.stack(pending)})[0].reshape(batch, -1))
            pending = []
    pool.close()
    if pending:
        features.append(session.run([feature], {name: np.stack(pending)})[0].reshape(len(pending), -1))
    np.save(out, np.concatenate(features))
"""


def corpus(scratch, image_format, count):
    """A manifest of `count` distinct file names over the 20 samples in `image_format`."""
    from PIL import Image
    samples = sorted(glob.glob(SAMPLES))
    if not samples:
        sys.exit(f"no samples at {SAMPLES}: run Ops/setup.sh")
    folder = os.path.join(scratch, image_format)
    os.makedirs(os.path.join(folder, "files"))
    sources = []
    for sample in samples:
        if image_format == "jpeg":
            sources.append(os.path.realpath(sample))
        else:
            target = os.path.join(folder, os.path.basename(sample)[:-4] + ".png")
            Image.open(sample).convert("RGB").save(target)
            sources.append(target)
    manifest = os.path.join(folder, "manifest.csv")
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for i in range(count):
            source = sources[i % len(sources)]
            link = os.path.join(folder, "files", f"img_{i:06d}{os.path.splitext(source)[1]}")
            os.symlink(source, link)
            writer.writerow([link, int(os.path.basename(source).split("_")[2].split(".")[0])])
    return manifest


def timed(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--featstream", required=True)
    parser.add_argument("--models", nargs="+", default=["open-nsfw", "efficientnet-lite0"])
    parser.add_argument("--formats", nargs="+", default=["jpeg", "png"], choices=["jpeg", "png"])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also featstream --precision int8 (calibrated on 64 corpus images)")
    parser.add_argument("--resize", choices=["exact", "fast"],
                        help="featstream's --resize (default: the model config's, exact); fast scales JPEGs while decoding, like draft")
    args = parser.parse_args()
    resize = ["--resize", args.resize] if args.resize else []
    scratch = tempfile.mkdtemp(prefix="featstream-python-way-")
    try:
        manifests = {f: corpus(scratch, f, args.images) for f in args.formats}
        print(f"{args.images} images per run, batch {args.batch}, {os.cpu_count()} cores, median of {args.rounds} rounds "
              f"(whole-process wall time); featstream resize: {args.resize or 'as the model config says'}")
        print("| model | images | Python way img/s | featstream fp32 img/s | fp32 / Python | featstream int8 img/s | "
              "int8 / Python | cosine Python vs fp32 |")
        print("|---|---|---|---|---|---|---|---|")
        for model in args.models:
            folder = private_model_copy(model, os.path.join(scratch, "model-" + model))
            for image_format, manifest in manifests.items():
                if args.int8 and not os.path.exists(os.path.join(folder, "calibration.json")):
                    subprocess.run([args.featstream, "calibrate", "--model", folder, "--data", manifest, "--images", "64"],
                                   check=True, capture_output=True)
                sides = {"python": [], "fp32": [], "int8": []}
                for _ in range(args.rounds):
                    out = os.path.join(scratch, "out")
                    shutil.rmtree(out, ignore_errors=True)
                    os.makedirs(out)
                    sides["python"].append(timed([sys.executable, "-c", PYTHON_WAY, folder, manifest,
                                                  os.path.join(out, "python.npy"), str(args.batch)]))
                    sides["fp32"].append(timed([args.featstream, "extract", "--model", folder, "--data", manifest,
                                                "--batch", str(args.batch), "--out", os.path.join(out, "fp32")] + resize))
                    if args.int8:
                        sides["int8"].append(timed([args.featstream, "extract", "--model", folder, "--data", manifest,
                                                    "--batch", str(args.batch), "--precision", "int8",
                                                    "--out", os.path.join(out, "int8")] + resize))
                print(json.dumps({"model": model, "format": image_format, "seconds": sides}), file=sys.stderr, flush=True)
                python = np.load(os.path.join(out, "python.npy")).astype(np.float64)
                ours = np.load(os.path.join(out, "fp32", "features.npy")).astype(np.float64)
                if python.shape != ours.shape:
                    sys.exit(f"{model} {image_format}: Python way wrote {python.shape}, featstream {ours.shape}")
                cosine = (python * ours).sum(1) / (np.linalg.norm(python, axis=1) * np.linalg.norm(ours, axis=1))
                rate = {k: args.images / statistics.median(v) for k, v in sides.items() if v}
                ratio = {k: statistics.median(p / s for p, s in zip(sides["python"], v)) for k, v in sides.items() if v}
                int8 = f"{rate['int8']:.1f} | **{ratio['int8']:.2f}×**" if args.int8 else "– | –"
                print(f"| {model} | {image_format.upper()} | {rate['python']:.1f} | {rate['fp32']:.1f} | **{ratio['fp32']:.2f}×** | "
                      f"{int8} | {np.median(cosine):.4f} |", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
