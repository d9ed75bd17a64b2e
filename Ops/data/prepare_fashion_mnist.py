#!/usr/bin/env python3
"""Turn the Debian Fashion-MNIST IDX files into the on-disk datasets FeatureStream reads.

FeatureStream's readers consume two formats, an ImageFolder tree and WebDataset tar
shards, and the tests and demos need a small deterministic subset of each. This script
produces all of them from the gzip IDX files shipped by the Debian package
``dataset-fashion-mnist``, so nothing has to be downloaded.

Run:

    python3 Ops/data/prepare_fashion_mnist.py \
        --src /usr/share/datasets/fashion-mnist --out .featstream/data \
        [--demo-train 1000 --demo-val 200] [--force]

Writes, under ``--out``:

    fashion-mnist/imagefolder/{train,val}/<class>/<index:05d>.png
    fashion-mnist/webdataset/{train,val}-NNNNNN.tar     (5000 samples per shard)
    fashion-mnist-demo/imagefolder/...                  (class-balanced subset)
    fashion-mnist-demo/webdataset/...                   (500 samples per shard)

Official "train" becomes train/, official "t10k" becomes val/. ``<index>`` is the
sample's position in the official file, also in the demo subset, so a demo sample can
be traced back. Each tar member pair is ``<split>-<index:05d>.png`` and
``<split>-<index:05d>.cls`` (label index, ASCII decimal).

Each of the two dataset directories is built in a temporary sibling and renamed into
place, so an existing directory is always complete and an interrupted run is redone.
An existing directory is left untouched unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import sys
import tarfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

# Index prefix makes lexicographic folder order equal the official label order, which
# is what ImageFolder-style readers use to assign label indices.
CLASS_DIRS = [
    "0-tshirt-top",
    "1-trouser",
    "2-pullover",
    "3-dress",
    "4-coat",
    "5-sandal",
    "6-shirt",
    "7-sneaker",
    "8-bag",
    "9-ankle-boot",
]
OFFICIAL_CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# (split name on disk, official file prefix, expected sample count)
SPLITS = [("train", "train", 60000), ("val", "t10k", 10000)]

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

FULL_SHARD_SIZE = 5000
DEMO_SHARD_SIZE = 500

# Fixed so that re-running produces byte-identical tars (2020-01-01T00:00:00Z).
TAR_MTIME = 1577836800


class PrepareError(Exception):
    pass


def read_idx(path: Path, magic: int, count: int, item_shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise PrepareError(
            f"{path} not found; install the Debian package 'dataset-fashion-mnist' "
            "or point --src at a directory holding the four *-ubyte.gz files"
        )
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise PrepareError(f"{path}: not a readable gzip file ({exc})") from exc
    ndim = len(item_shape) + 1
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise PrepareError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise PrepareError(
            f"{path}: IDX magic 0x{int(header[0]):08x}, expected 0x{magic:08x}"
        )
    dims = tuple(int(d) for d in header[1:])
    expected = (count, *item_shape)
    if dims != expected:
        raise PrepareError(f"{path}: IDX dimensions {dims}, expected {expected}")
    payload = len(raw) - header_len
    if payload != int(np.prod(expected)):
        raise PrepareError(
            f"{path}: {payload} payload bytes, expected {int(np.prod(expected))}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(expected)


def load_split(src: Path, prefix: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(src / f"{prefix}-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC, count, (28, 28))
    labels = read_idx(src / f"{prefix}-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, count, ())
    if labels.max() >= len(CLASS_DIRS):
        raise PrepareError(f"{src}/{prefix}: label {int(labels.max())} out of range 0-9")
    return images, labels


def encode_pngs(images: np.ndarray) -> list[bytes]:
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def encode_all(images: np.ndarray, pool: Pool | None) -> list[bytes]:
    if pool is None:
        return encode_pngs(images)
    chunks = np.array_split(images, 16)
    return [png for chunk in pool.map(encode_pngs, chunks) for png in chunk]


def write_imagefolder(root: Path, split: str, indices, labels, pngs) -> None:
    for d in CLASS_DIRS:
        (root / split / d).mkdir(parents=True, exist_ok=True)
    for i in indices:
        (root / split / CLASS_DIRS[labels[i]] / f"{i:05d}.png").write_bytes(pngs[i])


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(root: Path, split: str, indices, labels, pngs, shard_size: int) -> int:
    root.mkdir(parents=True, exist_ok=True)
    indices = sorted(indices)
    shards = 0
    for start in range(0, len(indices), shard_size):
        path = root / f"{split}-{shards:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in indices[start:start + shard_size]:
                key = f"{split}-{i:05d}"
                # Sorted member order (.cls < .png) keeps each sample's files adjacent.
                _tar_add(tar, f"{key}.cls", str(int(labels[i])).encode("ascii"))
                _tar_add(tar, f"{key}.png", pngs[i])
        shards += 1
    return shards


def balanced_subset(labels: np.ndarray, total: int) -> list[int]:
    """First ``total / 10`` samples of every class in official order: deterministic,
    balanced, and stable if the subset size changes."""
    n_classes = len(CLASS_DIRS)
    if total % n_classes:
        raise PrepareError(f"demo size {total} is not a multiple of {n_classes} classes")
    per_class = total // n_classes
    picked: list[int] = []
    for c in range(n_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise PrepareError(f"class {c} has only {len(members)} samples, need {per_class}")
        picked.extend(int(i) for i in members[:per_class])
    return sorted(picked)


def build_dataset(final: Path, splits: dict, shard_size: int, description: str) -> None:
    """``splits`` maps split name to (indices, labels, pngs)."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = {
        "description": description,
        "classes": CLASS_DIRS,
        "officialClassNames": OFFICIAL_CLASS_NAMES,
        "imageShape": [28, 28],
        "imageMode": "L",
        "webdatasetShardSize": shard_size,
        "splits": {},
    }
    for split, (indices, labels, pngs) in splits.items():
        write_imagefolder(tmp / "imagefolder", split, indices, labels, pngs)
        n_shards = write_webdataset(tmp / "webdataset", split, indices, labels, pngs, shard_size)
        counts = np.bincount(labels[list(indices)], minlength=len(CLASS_DIRS))
        manifest["splits"][split] = {
            "samples": len(indices),
            "shards": n_shards,
            "perClass": [int(c) for c in counts],
        }
    (tmp / "classes.txt").write_text("\n".join(CLASS_DIRS) + "\n")
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", type=Path, required=True, help="data directory (parent of fashion-mnist/)")
    ap.add_argument("--demo-train", type=int, default=1000)
    ap.add_argument("--demo-val", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2, help="PNG encoder processes (1 = no pool)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the output exists")
    args = ap.parse_args(argv)

    full_dir = args.out / "fashion-mnist"
    demo_dir = args.out / "fashion-mnist-demo"
    args.out.mkdir(parents=True, exist_ok=True)
    # Leftovers of interrupted runs are never renamed into place, only cleaned up.
    for stale in args.out.glob(".fashion-mnist*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)

    todo_full = args.force or not full_dir.is_dir()
    todo_demo = args.force or not demo_dir.is_dir()
    if not (todo_full or todo_demo):
        print(f"fashion-mnist: already prepared in {args.out}")
        return 0

    t0 = time.monotonic()
    try:
        loaded = {split: load_split(args.src, prefix, n) for split, prefix, n in SPLITS}
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    pool = Pool(args.jobs) if args.jobs > 1 else None
    try:
        encoded = {}
        for split, (images, labels) in loaded.items():
            demo_n = args.demo_train if split == "train" else args.demo_val
            try:
                demo_idx = balanced_subset(labels, demo_n)
            except PrepareError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            # Only encode what will be written: the demo alone needs a tiny subset.
            if todo_full:
                pngs = encode_all(images, pool)
            else:
                sub = encode_all(images[demo_idx], pool)
                pngs = dict(zip(demo_idx, sub))
            encoded[split] = (labels, pngs, demo_idx)
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    if todo_full:
        build_dataset(
            full_dir,
            {s: (range(len(lab)), lab, pngs) for s, (lab, pngs, _) in encoded.items()},
            FULL_SHARD_SIZE,
            "Fashion-MNIST (official train -> train, t10k -> val)",
        )
        print(f"fashion-mnist: wrote {full_dir}")
    if todo_demo:
        build_dataset(
            demo_dir,
            {s: (idx, lab, pngs) for s, (lab, pngs, idx) in encoded.items()},
            DEMO_SHARD_SIZE,
            f"Fashion-MNIST class-balanced subset: first {args.demo_train // 10} train and "
            f"{args.demo_val // 10} val samples of each class, official indices kept",
        )
        print(f"fashion-mnist-demo: wrote {demo_dir}")
    print(f"fashion-mnist: done in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
