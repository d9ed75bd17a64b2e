#!/usr/bin/env python3
"""Byte-exact vectors of the FeatureStream dataset index (Protocols/INDEX.md), version 1.

An encoder independent of the Swift writer (standard library only). Each case is a list of writer calls
(cases.json); the Swift tests replay the calls through `IndexWriter` and must produce exactly these bytes,
and open each file with `IndexedDataset` and read back the values. Invalid cases must be refused.

    python3 generate.py          # writes *.hex and cases.json next to this script
    python3 generate.py --check  # exits 1 if the committed files differ from what it would write
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def fnv1a64(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


KINDS = {"imagefolder": 1, "manifest": 2, "webdataset": 3}
LABEL_KINDS = {"none": 0, "integers": 1, "names": 2, "folders": 3}
FP_KINDS = {"directory": 1, "manifest": 2, "tar": 3, "sampledFile": 4}
KEY_IS_PATH = 0xFFFFFFFF


def encode(case):
    """Replays the calls the way IndexWriter does and returns the file bytes."""
    records, keys, sources, dead, fingerprint, text = bytearray(), bytearray(), bytearray(), bytearray(), bytearray(), bytearray()
    items = 0
    dead_count = 0
    fp_hash = 0xCBF29CE484222325

    def add_text(s):
        b = s.encode()
        off = len(text)
        text.extend(b)
        return off, len(b)

    for call in case["calls"]:
        op = call["op"]
        if op == "source":
            off, n = add_text(call["path"])
            sources.extend(struct.pack("<QII", off, n, 0))
        elif op == "item":
            key = call["key"].encode()
            records.extend(struct.pack("<QIiQII", len(keys), len(key), call["label"], call.get("offset", 0),
                                       call.get("size", 0), call.get("source", KEY_IS_PATH)))
            keys.extend(key)
            items += 1
        elif op == "dead":
            k = add_text(call["key"])
            r = add_text(call["reason"])
            dead.extend(struct.pack("<QIIQQ", k[0], k[1], r[1], r[0], items))
            dead_count += 1
        elif op == "fingerprint":
            p = add_text(call["path"])
            kind = FP_KINDS[call["kind"]]
            fingerprint.extend(struct.pack("<QIIQqQ", p[0], p[1], kind, call["size"], call["mtimeNs"], call["sampleHash"]))
            word = lambda v: struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)
            fp_hash = fnv1a64(word(p[1]) + call["path"].encode() + word(kind) + word(call["size"]) + word(call["mtimeNs"]) + word(call["sampleHash"]), fp_hash)
        else:
            raise ValueError(op)
    fin = case["finish"]
    classes = bytearray()
    for name in fin["classNames"]:
        off, n = add_text(name)
        classes.extend(struct.pack("<QII", off, n, 0))
    root = add_text(case["root"])
    selection = add_text(case["selection"])

    header = bytearray(256)
    body = bytearray()
    end = 256
    table = []
    for section in (records, keys, sources, classes, dead, fingerprint, text):
        aligned = (end + 7) & ~7
        body.extend(b"\0" * (aligned - end))
        table.append((aligned, len(section), crc32c(bytes(section))))
        body.extend(section)
        end = aligned + len(section)
    header[0:4] = b"FSIX"
    struct.pack_into("<HHBB", header, 4, 1, 256, KINDS[case["kind"]], LABEL_KINDS[fin["labelKind"]])
    struct.pack_into("<I", header, 12, fin["classCount"])
    struct.pack_into("<QQQQQ", header, 16, items, dead_count, fin["skipped"], fp_hash, selection[0])
    for i, (off, n, crc) in enumerate(table):
        struct.pack_into("<QQII", header, 56 + 24 * i, off, n, crc, 0)
    struct.pack_into("<QII", header, 224, root[0], root[1], selection[1])
    struct.pack_into("<Q", header, 240, fnv1a64(bytes(header[0:240])))
    struct.pack_into("<I", header, 252, crc32c(bytes(header[0:252])))
    return bytes(header + body)


def hexdump(data: bytes, comment: str) -> str:
    lines = [f"# {line}" for line in comment.splitlines()]
    for i in range(0, len(data), 32):
        lines.append(" ".join(f"{b:02x}" for b in data[i:i + 32]))
    return "\n".join(lines) + "\n"


MANIFEST = {
    "name": "manifest_names",
    "description": "A CSV manifest: three items with name labels (first-appearance ids), a repeated key kept by position, an absolute non-ASCII path, one dead letter, one item skipped by the split filter.",
    "kind": "manifest",
    "root": "/data/m",
    "selection": "kind=manifest\npath=/data/m/list.csv\nsplit=train\nlimit=\ncheck-paths=1\n",
    "calls": [
        {"op": "fingerprint", "path": "list.csv", "kind": "manifest", "size": 123, "mtimeNs": 1700000000123456789, "sampleHash": 0x0123456789ABCDEF},
        {"op": "item", "key": "cat/0001.jpg", "label": 0},
        {"op": "item", "key": "dog/0002.jpg", "label": 1},
        {"op": "dead", "key": "list.csv:4", "reason": "line 4 has no path"},
        {"op": "item", "key": "/abs/ü-ключ.png", "label": 0},
        {"op": "item", "key": "cat/0001.jpg", "label": -1},
        {"op": "fingerprint", "path": "cat/0001.jpg", "kind": "sampledFile", "size": 5, "mtimeNs": -1, "sampleHash": 42},
    ],
    "finish": {"labelKind": "names", "classNames": ["cat", "dog"], "classCount": 2, "skipped": 1},
    "expect": {
        "items": [
            {"key": "cat/0001.jpg", "label": 0, "file": "/data/m/cat/0001.jpg"},
            {"key": "dog/0002.jpg", "label": 1, "file": "/data/m/dog/0002.jpg"},
            {"key": "/abs/ü-ключ.png", "label": 0, "file": "/abs/ü-ключ.png"},
            {"key": "cat/0001.jpg", "label": -1, "file": "/data/m/cat/0001.jpg"},
        ],
        "deadLetters": [{"key": "list.csv:4", "reason": "line 4 has no path", "position": 2}],
        "classes": ["cat", "dog"],
    },
}

WEBDATASET = {
    "name": "webdataset_integers",
    "description": "Two tar shards: samples located by tar member offset and size, integer labels (classes 0..9 implied), a truncated tail as a dead letter.",
    "kind": "webdataset",
    "root": "/data/w",
    "selection": "kind=webdataset\npath=/data/w\nsplit=\nlimit=\ncheck-paths=0\n",
    "calls": [
        {"op": "fingerprint", "path": ".", "kind": "directory", "size": 4096, "mtimeNs": 1700000001000000000, "sampleHash": 0},
        {"op": "fingerprint", "path": "shard-000.tar", "kind": "tar", "size": 10240, "mtimeNs": 1700000002000000000, "sampleHash": 0xFEDCBA9876543210},
        {"op": "source", "path": "shard-000.tar"},
        {"op": "item", "key": "shard-000.tar:s0", "label": 3, "source": 0, "offset": 512, "size": 100},
        {"op": "item", "key": "shard-000.tar:s1", "label": 9, "source": 0, "offset": 2560, "size": 4000000000},
        {"op": "fingerprint", "path": "shard-001.tar", "kind": "tar", "size": 3000, "mtimeNs": 1700000003000000000, "sampleHash": 7},
        {"op": "source", "path": "shard-001.tar"},
        {"op": "item", "key": "shard-001.tar:k1", "label": -1, "source": 1, "offset": 512, "size": 700},
        {"op": "dead", "key": "shard-001.tar:k2.png", "reason": "shard-001.tar ends mid-header at offset 2560 (300 of 512 bytes; last complete member: k1.cls)"},
    ],
    "finish": {"labelKind": "integers", "classNames": [], "classCount": 10, "skipped": 0},
    "expect": {
        "items": [
            {"key": "shard-000.tar:s0", "label": 3, "tar": "/data/w/shard-000.tar", "offset": 512, "size": 100},
            {"key": "shard-000.tar:s1", "label": 9, "tar": "/data/w/shard-000.tar", "offset": 2560, "size": 4000000000},
            {"key": "shard-001.tar:k1", "label": -1, "tar": "/data/w/shard-001.tar", "offset": 512, "size": 700},
        ],
        "deadLetters": [{"key": "shard-001.tar:k2.png", "reason": "shard-001.tar ends mid-header at offset 2560 (300 of 512 bytes; last complete member: k1.cls)", "position": 3}],
        "classes": [str(i) for i in range(10)],
    },
}

EMPTY = {
    "name": "imagefolder_empty",
    "description": "An image folder with no items and no classes: every section empty except the text.",
    "kind": "imagefolder",
    "root": "/data/empty",
    "selection": "kind=imagefolder\npath=/data/empty\nsplit=\nlimit=\ncheck-paths=0\n",
    "calls": [{"op": "fingerprint", "path": ".", "kind": "directory", "size": 4096, "mtimeNs": 0, "sampleHash": 0}],
    "finish": {"labelKind": "none", "classNames": [], "classCount": 0, "skipped": 0},
    "expect": {"items": [], "deadLetters": [], "classes": []},
}


def invalid_cases(valid: bytes):
    out = []
    bad_magic = bytearray(valid)
    bad_magic[0:4] = b"FSIY"
    out.append(("invalid_bad_magic", "magic is not FSIX", bytes(bad_magic), "bad magic"))
    bad_crc = bytearray(valid)
    bad_crc[16] ^= 1  # item count changed, header CRC not updated
    out.append(("invalid_header_crc", "item count altered without updating the header CRC", bytes(bad_crc), "header checksum mismatch"))
    bounds = bytearray(valid)
    struct.pack_into("<Q", bounds, 56 + 8, len(valid))  # records section length runs past the end
    struct.pack_into("<I", bounds, 252, crc32c(bytes(bounds[0:252])))
    out.append(("invalid_section_bounds", "records section length runs past the end of the file (header CRC valid)", bytes(bounds), "lies outside the file"))
    version = bytearray(valid)
    struct.pack_into("<H", version, 4, 2)
    struct.pack_into("<I", version, 252, crc32c(bytes(version[0:252])))
    out.append(("invalid_version", "format version 2 (header CRC valid)", bytes(version), "format version 2"))
    return out


def main():
    check = "--check" in sys.argv
    files = {}
    cases = []
    for case in (MANIFEST, WEBDATASET, EMPTY):
        data = encode(case)
        files[case["name"] + ".hex"] = hexdump(data, f"{case['name']}: {case['description']}\n{len(data)} bytes; generated by generate.py, do not edit")
        public = {k: v for k, v in case.items() if k != "description"}
        # 64-bit hashes as hex strings: JSON readers differ on integers above 2^63.
        public["calls"] = [c | {"sampleHash": format(c["sampleHash"], "016x")} if "sampleHash" in c else c for c in case["calls"]]
        cases.append(public | {"file": case["name"] + ".hex", "valid": True})
    for name, description, data, error in invalid_cases(encode(MANIFEST)):
        files[name + ".hex"] = hexdump(data, f"{name}: {description}\n{len(data)} bytes; generated by generate.py, do not edit")
        cases.append({"name": name, "file": name + ".hex", "valid": False, "error": error})
    files["cases.json"] = json.dumps(cases, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    stale = []
    for name, content in files.items():
        path = os.path.join(HERE, name)
        if check:
            if not os.path.exists(path) or open(path, encoding="utf-8").read() != content:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
    if stale:
        print("stale vectors: " + ", ".join(stale))
        sys.exit(1)


if __name__ == "__main__":
    main()
