"""Sanity-check a converted EfficientNet-Lite0 ONNX model on real images.

The converter rebuilds the network by hand, so a wrong padding, stride or
layout would still produce a valid-looking model. This script classifies the
20 ImageNet sample JPEGs shipped with foolbox using the same preprocessing as
Ops/models/efficientnet-lite0.json and fails unless at least 16 are right.

Usage:
    python3 Ops/models/check_lite0_imagenet.py --model DIR/model.onnx [--classes DIR/classes.txt]
"""

import argparse
import glob
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

RESIZE_SHORTER = 256
CROP = 224
# Pixel units (0..255); must match efficientnet-lite0.json.
MEAN = 127.0
STD = 128.0
MIN_CORRECT = 16


def preprocess(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = RESIZE_SHORTER / min(w, h)
    size = (max(RESIZE_SHORTER, round(w * scale)), max(RESIZE_SHORTER, round(h * scale)))
    # PIL's bilinear resize filters over the whole footprint when shrinking
    # (antialiased), which is what the config's "bilinear" means.
    img = img.resize(size, Image.BILINEAR)
    left = (size[0] - CROP) // 2
    top = (size[1] - CROP) // 2
    img = img.crop((left, top, left + CROP, top + CROP))
    x = (np.asarray(img, dtype=np.float32) - MEAN) / STD
    return x.transpose(2, 0, 1)[None]


def sample_images():
    import foolbox
    data = os.path.join(os.path.dirname(foolbox.__file__), "data")
    paths = sorted(glob.glob(os.path.join(data, "imagenet_*.jpg")))
    if len(paths) != 20:
        sys.exit(f"expected 20 foolbox ImageNet samples in {data}, found {len(paths)}")
    # File names are imagenet_<index>_<label>.jpg.
    return [(p, int(os.path.splitext(os.path.basename(p))[0].rsplit("_", 1)[1]))
            for p in paths]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--classes", default=None,
                    help="class names file (default: classes.txt beside the model)")
    args = ap.parse_args(argv)

    classes_path = args.classes or os.path.join(os.path.dirname(args.model), "classes.txt")
    with open(classes_path) as f:
        names = f.read().splitlines()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    samples = sample_images()
    batch = np.concatenate([preprocess(p) for p, _ in samples])
    logits, features = session.run(["logits", "features"], {"input": batch})
    if features.shape != (len(samples), 1280):
        sys.exit(f"unexpected features shape {features.shape}")

    correct = 0
    for (path, label), row in zip(samples, logits):
        pred = int(np.argmax(row))
        ok = pred == label
        correct += ok
        print(f"{'ok  ' if ok else 'MISS'} {os.path.basename(path):22s} "
              f"label={label:4d} ({names[label]}) pred={pred:4d} ({names[pred]})")
    print(f"top-1: {correct}/{len(samples)}")
    return 0 if correct >= MIN_CORRECT else 1


if __name__ == "__main__":
    sys.exit(main())
