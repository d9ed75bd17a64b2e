#!/usr/bin/env python3
"""Writes the FeatureStream wire-protocol test vectors (Protocols/vectors/*.hex).

An encoder independent of the Swift FrameCodec, written from PROTOCOL.md, so the vectors check
the spec rather than echo the implementation. Standard library only. Run from anywhere:

    python3 Protocols/vectors/generate.py          # rewrite the vectors
    python3 Protocols/vectors/generate.py --check  # exit 1 if a committed vector differs

Every vector is deterministic: re-running must leave `git diff` empty.
"""
import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MAJOR, MINOR = 3, 1

T = dict(hello=0x01, shardRequest=0x02, shardDone=0x03, shardFailed=0x04,
         welcome=0x10, assignment=0x11, noWork=0x12, shutdown=0x13, probe=0x14,
         heartbeat=0x20, headHello=0x30, shardCommitted=0x31,
         featureBatch=0x40, credit=0x41)

# --- CRC-32C (Castagnoli, reflected 0x82F63B78) --------------------------------------------
_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283

# --- primitive encoders ---------------------------------------------------------------------
u8 = lambda v: struct.pack("<B", v)
u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
i32 = lambda v: struct.pack("<i", v)
u64 = lambda v: struct.pack("<Q", v)


def s(text):
    b = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return u16(len(b)) + b


def smap(d):
    items = sorted(((k.encode(), v) for k, v in d.items()), key=lambda kv: kv[0])
    return u16(len(items)) + b"".join(s(k) + s(v) for k, v in items)


def frame(type_byte, body, major=MAJOR, minor=MINOR, flags=0, length=None, crc=None):
    header = b"FS" + u8(major) + u8(minor) + u8(type_byte) + u8(flags) + u32(len(body) if length is None else length)
    return header + body + u32(crc32c(header + body) if crc is None else crc)


# --- LZ4 block format (greedy, literal-safe end rules) and byte shuffle ---------------------
def _lz4_len(n):
    out = bytearray()
    while n >= 255:
        out.append(255)
        n -= 255
    out.append(n)
    return bytes(out)


def lz4_block(src):
    n, out, anchor, i, table = len(src), bytearray(), 0, 0, {}

    def emit(lits, offset=None, mlen=0):
        ll = len(lits)
        token = (min(ll, 15) << 4) | (min(mlen - 4, 15) if offset is not None else 0)
        out.append(token)
        if ll >= 15:
            out.extend(_lz4_len(ll - 15))
        out.extend(lits)
        if offset is not None:
            out.extend(u16(offset))
            if mlen - 4 >= 15:
                out.extend(_lz4_len(mlen - 4 - 15))

    while i < n - 12:  # the last match must start 12+ bytes before the end
        key = src[i:i + 4]
        cand = table.get(key)
        table[key] = i
        if cand is not None and i - cand <= 0xFFFF:
            ml = 4
            while i + ml < n - 5 and src[cand + ml] == src[i + ml]:  # the last 5 bytes stay literals
                ml += 1
            emit(src[anchor:i], i - cand, ml)
            i += ml
            anchor = i
        else:
            i += 1
    emit(src[anchor:])
    return bytes(out)


def lz4_unblock(src):
    out, i = bytearray(), 0
    while True:
        token = src[i]; i += 1
        ll = token >> 4
        if ll == 15:
            while True:
                b = src[i]; i += 1; ll += b
                if b != 255: break
        out.extend(src[i:i + ll]); i += ll
        if i == len(src):
            return bytes(out)
        off = src[i] | (src[i + 1] << 8); i += 2
        ml = (token & 15) + 4
        if token & 15 == 15:
            while True:
                b = src[i]; i += 1; ml += b
                if b != 255: break
        for _ in range(ml):
            out.append(out[-off])


def shuffle(raw, width):
    count = len(raw) // width
    return bytes(raw[j * width + k] for k in range(width) for j in range(count))


def feature_values(rows, dim):
    """Values the Swift tests recompute: v(r, c) = ((r*dim + c) % 7 - 3) / 4."""
    return [((r * dim + c) % 7 - 3) / 4 for r in range(rows) for c in range(dim)]


def raw_values(vals, dtype):
    return b"".join(struct.pack("<e" if dtype == 2 else "<f", v) for v in vals)


def feature_batch(shard, attempt, item_count, dtype, codec, dim, offsets, indexes, labels, keys,
                  dead, raw_len=None, payload=None, counts=None):
    width = 2 if dtype == 2 else 4
    rows = len(offsets)
    raw = raw_values(feature_values(rows, dim), dtype)
    if payload is None:
        payload = {0: raw, 1: lz4_block(raw) if raw else b"", 2: lz4_block(shuffle(raw, width)) if raw else b""}[codec]
        if codec and raw:
            assert lz4_unblock(payload) == (raw if codec == 1 else shuffle(raw, width))
    counts = counts or {}
    body = u32(shard) + u32(attempt) + u32(item_count) + u8(dtype) + u8(codec) + u32(dim)
    body += u32(rows * dim * width if raw_len is None else raw_len)
    body += u32(counts.get("offsets", rows)) + b"".join(u32(o) for o in offsets)
    body += u32(counts.get("indexes", len(indexes))) + b"".join(u64(x) for x in indexes)
    body += u32(counts.get("labels", len(labels))) + b"".join(i32(x) for x in labels)
    body += u32(counts.get("keys", len(keys))) + b"".join(s(k) for k in keys)
    body += u32(len(dead)) + b"".join(u32(o) + s(k) + s(r) for o, k, r in dead)
    body += u32(len(payload)) + payload
    return body


# --- the vectors ----------------------------------------------------------------------------
HELLO_BODY = s("worker-a1") + s("gpu-node-03") + u32(4242) + smap(
    {"backbone": "resnet50", "dtype": "f16", "threads": "8"})
HEARTBEAT_BODY = u64(0x0123456789ABCDEF) + u64(42)
# (index, key, label, locator): locator kind 0 file (path), 1 tar member (path, offset, size), 2 rejected (reason)
ASSIGN_ITEMS = [
    (0, "train/cat/0001.jpg", 3, (0, "/data/train/cat/0001.jpg")),
    (1, "train/dog/0002.jpg", 5, (0, "/data/train/dog/0002.jpg")),
    (1_000_000_007, "shard-0007.tar:ü-ключ", -1, (1, "/data/shard-0007.tar", 1536, 70_000)),
    ((1 << 63) + 2, "labels.csv:17", -1, (2, "manifest line 17: no path")),
]


def locator(loc):
    if loc[0] == 1:
        return u8(1) + s(loc[1]) + u64(loc[2]) + u32(loc[3])
    return u8(loc[0]) + s(loc[1])


ASSIGN_BODY = u32(7) + u32(2) + u32(30_000) + u32(len(ASSIGN_ITEMS)) + b"".join(
    u64(i) + i32(l) + s(k) + locator(loc) for i, k, l, loc in ASSIGN_ITEMS)

BATCH_KEYS = ["a/0.jpg", "a/1.jpg", "a/3.jpg"]

VALID = {
    # name: (comment, frame bytes)
    "hello": ("hello(workerID: \"worker-a1\", host: \"gpu-node-03\", pid: 4242, capabilities: "
              "[backbone: resnet50, dtype: f16, threads: 8])", frame(T["hello"], HELLO_BODY)),
    "hello_no_capabilities": ("hello(workerID: \"w\", host: \"\", pid: 0, capabilities: [:])",
                              frame(T["hello"], s("w") + s("") + u32(0) + smap({}))),
    "shard_request": ("shardRequest(workerID: \"worker-a1\")", frame(T["shardRequest"], s("worker-a1"))),
    "shard_done": ("shardDone(shardID: 7, attempt: 2, items: 1000, deadLetters: 3)",
                   frame(T["shardDone"], u32(7) + u32(2) + u32(1000) + u32(3))),
    "shard_failed": ("shardFailed(shardID: 7, attempt: 2, reason: \"draining: SIGTERM\")",
                     frame(T["shardFailed"], u32(7) + u32(2) + s("draining: SIGTERM"))),
    "welcome": ("welcome(epoch: 0xFEDCBA9876543210, headAddress: \"tcp://head:5556\", heartbeatIntervalMs: 1000, "
                "deadAfterBeats: 5, plan: 0x0011223344556677)",
                frame(T["welcome"], u64(0xFEDCBA9876543210) + s("tcp://head:5556") + u32(1000) + u32(5)
                      + u64(0x0011223344556677))),
    "assignment": ("assignment(shardID: 7, attempt: 2, leaseMs: 30000, items: [(0, train/cat/0001.jpg, 3, "
                   "file /data/train/cat/0001.jpg), (1, train/dog/0002.jpg, 5, file /data/train/dog/0002.jpg), "
                   "(1000000007, shard-0007.tar:ü-ключ, -1, tar /data/shard-0007.tar @1536 +70000), "
                   "(2^63+2, labels.csv:17, -1, rejected \"manifest line 17: no path\")])",
                   frame(T["assignment"], ASSIGN_BODY)),
    "probe": ("probe(shardID: 7, attempt: 9, leaseMs: 30000, items: [(1, train/dog/0002.jpg, 5, file /data/train/dog/0002.jpg)])",
              frame(T["probe"], u32(7) + u32(9) + u32(30_000) + u32(1) + u64(1) + i32(5) + s("train/dog/0002.jpg")
                    + locator((0, "/data/train/dog/0002.jpg")))),
    "assignment_empty": ("assignment(shardID: 0, attempt: 0, leaseMs: 0, items: [])",
                         frame(T["assignment"], u32(0) * 3 + u32(0))),
    "no_work": ("noWork(retryAfterMs: 500)", frame(T["noWork"], u32(500))),
    "shutdown": ("shutdown(reason: \"job complete\")", frame(T["shutdown"], s("job complete"))),
    "heartbeat": ("heartbeat(epoch: 0x0123456789ABCDEF, sequence: 42)", frame(T["heartbeat"], HEARTBEAT_BODY)),
    "head_hello": ("headHello(epoch: 99, committed: [0, 1, 2, 5, 4294967295], plan: 0x0011223344556677)",
                   frame(T["headHello"], u64(99) + u32(5) + b"".join(u32(x) for x in [0, 1, 2, 5, 0xFFFFFFFF])
                         + u64(0x0011223344556677))),
    "head_hello_empty": ("headHello(epoch: 1, committed: [], plan: 0)", frame(T["headHello"], u64(1) + u32(0) + u64(0))),
    "shard_committed": ("shardCommitted(shardID: 7, attempt: 2, items: 997, deadLetters: 3)",
                        frame(T["shardCommitted"], u32(7) + u32(2) + u32(997) + u32(3))),
    "credit": ("credit(epoch: 0xFEDCBA9876543210, limit: 8)", frame(T["credit"], u64(0xFEDCBA9876543210) + u32(8))),
    "feature_batch_raw_f32": (
        "featureBatch(shard 7 attempt 2 of 4 items; 2 rows x 4 f32, raw; rows at offsets 0,1; values v(r,c))",
        frame(T["featureBatch"], feature_batch(7, 2, 4, 1, 0, 4, [0, 1], [100, 101], [3, -1], ["a/0.jpg", "a/1.jpg"], []))),
    "feature_batch_lz4": (
        "featureBatch(shard 7 attempt 2 of 16 items; 3 rows x 16 f16, lz4; offsets 0,1,3; 1 dead letter at 2)",
        frame(T["featureBatch"], feature_batch(7, 2, 16, 2, 1, 16, [0, 1, 3], [100, 101, 103], [3, 5, 0], BATCH_KEYS,
                                               [(2, "a/2.jpg", "decode: truncated JPEG")]))),
    "feature_batch_shuffle_lz4": (
        "featureBatch(shard 7 attempt 2 of 16 items; 3 rows x 16 f16, shuffle+lz4; offsets 0,1,3; 1 dead letter at 2)",
        frame(T["featureBatch"], feature_batch(7, 2, 16, 2, 2, 16, [0, 1, 3], [100, 101, 103], [3, 5, 0], BATCH_KEYS,
                                               [(2, "a/2.jpg", "decode: truncated JPEG")]))),
    "feature_batch_dead_letters_only": (
        "featureBatch(shard 9 attempt 1 of 2 items; 0 rows x 1280 f16, shuffle+lz4; 2 dead letters, empty payload)",
        frame(T["featureBatch"], feature_batch(9, 1, 2, 2, 2, 1280, [], [], [], [],
                                               [(0, "x.png", "unsupported: CMYK"), (1, "y.png", "io: ENOENT")]))),
}

# Frames from a newer minor: accepted, extras ignored, re-encoded as the canonical v1.0 frame named.
COMPAT = {
    "compat_minor_newer": ("heartbeat from a v1.3 peer: flags 0x01 and 5 unknown trailing body bytes; "
                           "decodes like heartbeat.hex and re-encodes to exactly it",
                           frame(T["heartbeat"], HEARTBEAT_BODY + b"\x01\x02\x03\x04\x05", minor=3, flags=0x01)),
    "compat_minor_older_head_hello": ("headHello from a 3.0 head: no plan field (3.1 appended it); decodes with plan 0, "
                                      "like head_hello_empty.hex, and re-encodes to exactly it",
                                      frame(T["headHello"], u64(1) + u32(0), minor=0)),
}

GOOD_BATCH = dict(shard=7, attempt=2, item_count=16, dtype=2, codec=0, dim=4, offsets=[0, 1], indexes=[100, 101],
                  labels=[3, 5], keys=["k0", "k1"], dead=[])


def bad_batch(**over):
    args = dict(GOOD_BATCH)
    args.update(over)
    return frame(T["featureBatch"], feature_batch(**args))


_hb = frame(T["heartbeat"], HEARTBEAT_BODY)
INVALID = {
    # name: (expected FrameError, comment, bytes)
    "invalid_empty": ("tooShort(0)", "zero bytes", b""),
    "invalid_short": ("tooShort(5)", "first 5 bytes of heartbeat.hex", _hb[:5]),
    "invalid_bad_magic": ("badMagic", "heartbeat.hex with magic \"FX\" (CRC recomputed)",
                          b"FX" + frame(T["heartbeat"], HEARTBEAT_BODY)[2:-4] + u32(crc32c(b"FX" + _hb[2:-4]))),
    "invalid_bad_version": ("unsupportedVersion(major: 2, minor: 0)", "heartbeat with major version 2 (before assignments carried locators, 3.0)",
                            frame(T["heartbeat"], HEARTBEAT_BODY, major=2, minor=0)),
    "invalid_locator_kind": ("malformed", "assignment whose one item has locator kind 3",
                             frame(T["assignment"], u32(1) + u32(1) + u32(1) + u32(1) + u64(0) + i32(-1) + s("a.jpg") + u8(3) + s("x"))),
    "invalid_unknown_type": ("unknownType(0x7f)", "type 0x7F, valid CRC, 4-byte body", frame(0x7F, u32(1))),
    "invalid_bad_checksum": ("checksumMismatch", "heartbeat.hex with bit 0 of the last body byte flipped",
                             _hb[:-5] + bytes([_hb[-5] ^ 1]) + _hb[-4:]),
    "invalid_oversized_length": ("exceedsLimit", "header declares a 0xFFFFFFF0-byte body; 14 bytes present",
                                 frame(T["featureBatch"], b"", length=0xFFFFFFF0)),
    "invalid_length_mismatch": ("lengthMismatch(declared: 30, actual: 32)",
                                "heartbeat body 16 bytes, 2 extra bytes after the trailer",
                                _hb + b"\x00\x00"),
    "invalid_count_mismatch": ("malformed", "featureBatch with 2 offsets but an indexes count of 3",
                               bad_batch(counts={"indexes": 3})),
    "invalid_raw_length": ("malformed", "featureBatch whose rawLength is 15, not 2 x 4 x 2 = 16", bad_batch(raw_len=15)),
    "invalid_unknown_codec": ("malformed", "featureBatch with codec id 9", bad_batch(codec=9, payload=b"\x00" * 16)),
    "invalid_offset_out_of_range": ("malformed", "featureBatch row offset 16 in a 16-item shard",
                                    bad_batch(offsets=[0, 16])),
    "invalid_rows_exceed_limit": ("exceedsLimit", "featureBatch offsets count 0x00100000 (> maxRows 65536)",
                                  bad_batch(counts={"offsets": 0x00100000})),
    "invalid_raw_payload_size": ("malformed", "raw featureBatch whose payload is 1 byte short of rawLength",
                                 bad_batch(payload=b"\x00" * 15, raw_len=16)),
    "invalid_lz4_payload_bound": ("malformed", "lz4 featureBatch payload larger than LZ4_compressBound(16) = 32",
                                  bad_batch(codec=1, payload=b"\x00" * 33)),
    "invalid_truncated_string": ("malformed", "shardRequest whose string says 200 bytes; 9 present",
                                 frame(T["shardRequest"], u16(200) + b"worker-a1")),
    "invalid_bad_utf8": ("malformed", "shutdown reason bytes C3 28 (invalid UTF-8)",
                         frame(T["shutdown"], u16(2) + b"\xc3\x28")),
    "invalid_string_too_long": ("exceedsLimit", "shutdown reason of 4097 bytes (> maxString 4096)",
                                frame(T["shutdown"], s("x" * 4097))),
    "invalid_trailing_bytes": ("malformed", "v1.0 noWork with 1 byte after its body", frame(T["noWork"], u32(5) + b"\x00")),
    "invalid_reserved_flags": ("malformed", "v1.0 heartbeat with flags 0x80", frame(T["heartbeat"], HEARTBEAT_BODY, flags=0x80)),
    "invalid_unsorted_capabilities": ("malformed", "hello whose capability keys are \"b\", \"a\"",
                                      frame(T["hello"], s("w") + s("h") + u32(1) + u16(2) + s("b") + s("1") + s("a") + s("2"))),
    "invalid_items_count_huge": ("exceedsLimit", "assignment declaring 0xFFFFFFFF items in a 16-byte body",
                                 frame(T["assignment"], u32(1) + u32(1) + u32(1) + u32(0xFFFFFFFF))),
    "invalid_committed_count_huge": ("malformed", "headHello declaring 0x10000000 shards with none present",
                                     frame(T["headHello"], u64(1) + u32(0x10000000))),
    "invalid_dimension_zero": ("malformed", "featureBatch with 0 rows and dimension 0", bad_batch(dim=0, offsets=[], indexes=[], labels=[], keys=[])),
}


def to_hex(comment_lines, data):
    lines = ["# " + c for c in comment_lines]
    lines.append(f"# {len(data)} bytes")
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        lines.append(" ".join(f"{b:02x}" for b in chunk))
    return "\n".join(lines) + "\n"


README_HEAD = """# FSWP test vectors

Byte-exact frames of the FeatureStream wire protocol (`Protocols/PROTOCOL.md`), version 1.0.
Format: hex byte pairs; whitespace is ignored; `#` starts a comment to the end of the line.

*Generated by `generate.py` (standard-library Python, an encoder independent of the Swift codec);
do not edit by hand. `python3 generate.py --check` verifies that the committed files are current.*

Rules for an implementation (checked by `Tests/WireProtocolTests/VectorTests.swift`):

* **valid**: decodes to the value described and re-encodes to exactly the same bytes.
* **compat**: a frame from a newer minor version; decodes to the value described, and re-encodes to
  the canonical v1.0 frame (which drops the unknown flags and trailing bytes).
* **invalid**: decoding fails with the error given. For `exceedsLimit` and `malformed` only the case
  is normative, not the message text. The order of checks in PROTOCOL.md §3 decides which error a
  frame with several faults gets.

Feature values in the batch vectors are v(r, c) = ((r·dimension + c) mod 7 − 3) / 4, row-major;
lz4 payloads are LZ4 *blocks* of those values (shuffle+lz4: of their byte-shuffle), so they also serve
as test input for a payload decompressor.

| file | bytes | kind | contents | expected decode result |
|---|---|---|---|---|
"""


def readme():
    rows = []
    for name, (comment, data) in VALID.items():
        rows.append(f"| `{name}.hex` | {len(data)} | valid | {comment} | the value, re-encodes identically |")
    for name, (comment, data) in COMPAT.items():
        rows.append(f"| `{name}.hex` | {len(data)} | compat | {comment} | the value; re-encodes to `heartbeat.hex` |")
    for name, (expect, comment, data) in INVALID.items():
        rows.append(f"| `{name}.hex` | {len(data)} | invalid | {comment} | `{expect}` |")
    return README_HEAD + "\n".join(rows) + "\n"


def main():
    check = "--check" in sys.argv
    files = {}
    for name, (comment, data) in VALID.items():
        files[name + ".hex"] = to_hex(["valid: " + comment], data)
    for name, (comment, data) in COMPAT.items():
        files[name + ".hex"] = to_hex(["valid (compat): " + comment], data)
    for name, (expect, comment, data) in INVALID.items():
        files[name + ".hex"] = to_hex([f"expect: {expect}", comment], data)
    files["README.md"] = readme()
    write_or_check(HERE, files, check)


def write_or_check(directory, files, check):
    """Writes {file name: text} into directory, or with check exits 1 naming the files that differ."""
    stale = []
    for name, text in files.items():
        path = os.path.join(directory, name)
        if check:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
    if check and stale:
        print("stale vectors:", ", ".join(stale))
        sys.exit(1)
    print(f"{'checked' if check else 'wrote'} {len(files)} files in {os.path.relpath(directory)}")


if __name__ == "__main__":
    main()
