#!/usr/bin/env python3
"""Writes the store-format test vector (Protocols/vectors/store/*.hex) from Protocols/STORE.md.

Independent of the Swift FeatureStore, standard library only, deterministic:

    python3 Protocols/vectors/store/generate.py          # rewrite
    python3 Protocols/vectors/store/generate.py --check  # exit 1 if the committed file differs
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from generate import crc32c, to_hex, write_or_check  # noqa: E402  (shared with the wire vectors)

DTYPE = {"f32": 1, "f16": 2}


def string(text):
    b = text.encode("utf-8")
    return struct.pack("<I", len(b)) + b


def record(dtype, shard, attempt, dimension, rows, dead_letters):
    """rows: [(index, label, key, [values])]; dead_letters: [(offset, key, reason)]."""
    item_count = len(rows) + len(dead_letters)
    fmt = "<e" if dtype == "f16" else "<f"
    features = b"".join(struct.pack(fmt, v) for _, _, _, values in rows for v in values)
    columns = b"".join(struct.pack("<Q", r[0]) for r in rows)
    columns += b"".join(struct.pack("<i", r[1]) for r in rows)
    columns += b"".join(string(r[2]) for r in rows)
    columns += b"".join(struct.pack("<I", o) + string(k) + string(why) for o, k, why in dead_letters)
    header = b"FSR1" + bytes([DTYPE[dtype], 0, 0, 0])
    header += struct.pack("<IIIIII", shard, attempt, item_count, len(rows), len(dead_letters), dimension)
    header += struct.pack("<QI", len(columns), 0)
    header += struct.pack("<I", crc32c(header))
    body = header + features + columns
    body += struct.pack("<I", crc32c(body))
    return body + bytes(-len(body) % 16)


VECTORS = {
    "record_f16_two_rows_one_dead_letter": (
        "shard 7 attempt 2, f16, dimension 3, 3 items: offset 0 (index 700, label 1, train/cat/0001.png, "
        "[0.5, -1, 2]), offset 1 dead (train/dog/0002.png: decode: truncated PNG), offset 2 (index 702, "
        "label -1, ключ/ü.jpg, [0, 65504, -0.25])",
        record("f16", 7, 2, 3,
               [(700, 1, "train/cat/0001.png", [0.5, -1, 2]), (702, -1, "ключ/ü.jpg", [0, 65504, -0.25])],
               [(1, "train/dog/0002.png", "decode: truncated PNG")])),
}


def main():
    files = {name + ".hex": to_hex(["valid: " + comment], data) for name, (comment, data) in VECTORS.items()}
    write_or_check(HERE, files, "--check" in sys.argv)


if __name__ == "__main__":
    main()
