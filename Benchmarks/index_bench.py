#!/usr/bin/env python3
"""Dataset index benchmark (issue 15 §6): throughput, peak RSS and time to the first items.

Generates synthetic corpora under --work (nothing is checked in), builds `featstream-index` in release
mode, and runs `featstream-index build` on each corpus; the tool reports items/s, its own peak RSS
(getrusage), and when the first --first items were final (what a coordinator needs to lease its first
shards). Peer: Python's csv module reading the same manifest (parse only), alternated with our runs, so
the ratio is measured under the same machine load.

    python3 Benchmarks/index_bench.py                                  # 2M and 20M manifest lines, 2M tar members
    python3 Benchmarks/index_bench.py --sizes 100000000 --skip-wds     # the 100M line run (~3 GB manifest, ~6 GB index)
    python3 Benchmarks/index_bench.py --sizes 2000000 --check-files 200000 --skip-wds   # path check on real files
"""
import argparse
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_binary():
    subprocess.run(["swift", "build", "-c", "release", "--product", "featstream-index"], cwd=ROOT, check=True)
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    return os.path.join(out, "featstream-index")


def write_manifest(path, lines, prefix="images"):
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("path,label\n")
        chunk = 100_000
        for start in range(0, lines, chunk):
            f.write("".join(f"{prefix}/{i % 1000:03d}/img-{i:09d}.jpg,{i % 1000}\n" for i in range(start, min(lines, start + chunk))))
    os.rename(tmp, path)


# A valid 1x1 PNG (67 bytes): the "tiny PNGs" of the issue.
TINY_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                         "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def tar_header(name: bytes, size: int) -> bytes:
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"14500000000\0"
    h[148:156] = b"        "
    h[156] = 0x30
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def write_webdataset(folder, members, per_tar=10_000):
    """members/2 samples of (.png, .cls), per_tar members a shard; written with raw ustar headers."""
    if os.path.isdir(folder) and os.listdir(folder):
        return
    os.makedirs(folder, exist_ok=True)
    png_pad = TINY_PNG + b"\0" * (512 - len(TINY_PNG))
    sample = 0
    for shard in range((members + per_tar - 1) // per_tar):
        parts = []
        for _ in range(min(per_tar, members - shard * per_tar) // 2):
            key = b"%09d" % sample
            label = b"%d" % (sample % 1000)
            parts += [tar_header(key + b".png", len(TINY_PNG)), png_pad,
                      tar_header(key + b".cls", len(label)), label + b"\0" * (512 - len(label))]
            sample += 1
        parts.append(b"\0" * 1024)
        with open(os.path.join(folder, "shard-%06d.tar" % shard), "wb") as f:
            f.write(b"".join(parts))


def run_index(binary, dataset, out, first, extra=()):
    if os.path.exists(out):
        os.remove(out)
    start = time.time()
    result = subprocess.run([binary, "build", dataset, "--out", out, "--first", str(first), *extra],
                            check=True, capture_output=True, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["wallSeconds"] = time.time() - start
    return report


def run_peer(manifest):
    """Python's csv module, parse only: the peer for manifest throughput."""
    start = time.time()
    rows = 0
    with open(manifest, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if row:
                rows += 1
    return rows, time.time() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000000,20000000", help="manifest line counts, comma separated")
    ap.add_argument("--wds-members", type=int, default=2_000_000, help="tar members (half .png, half .cls)")
    ap.add_argument("--skip-wds", action="store_true")
    ap.add_argument("--check-files", type=int, default=0, help="also index a manifest of this many existing files with the path check")
    ap.add_argument("--first", type=int, default=4096, help="report when this many items were final")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (ours, peer) per manifest size")
    ap.add_argument("--work", default="/tmp/featstream-index-bench")
    ap.add_argument("--binary", help="featstream-index to use (default: build it in release mode)")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpora")
    args = ap.parse_args()

    binary = args.binary or build_binary()
    os.makedirs(args.work, exist_ok=True)
    results = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        manifest = os.path.join(args.work, f"manifest-{size}.csv")
        write_manifest(manifest, size)
        ours, peer = [], []
        for _ in range(args.rounds):
            ours.append(run_index(binary, manifest, os.path.join(args.work, f"manifest-{size}.fsix"), args.first, ["--no-check-paths"]))
            if size <= 20_000_000:
                peer.append(run_peer(manifest))
        best = min(ours, key=lambda r: r["seconds"])
        row = {"corpus": f"manifest {size:,} lines", "items": best["items"], "itemsPerSecond": round(best["items"] / best["seconds"]),
               "scanItemsPerSecond": round(best["scanItemsPerSecond"]), "itemsPerCPUSecond": round(best["items"] / best["cpuSeconds"]),
               "peakRSSMiB": round(max(r["peakRSSKiB"] for r in ours) / 1024, 1), "firstItemsSeconds": round(best["firstItemsSeconds"], 3),
               "seconds": round(best["seconds"], 2), "indexMiB": round(best["indexBytes"] / 2**20, 1),
               "allSeconds": [round(r["seconds"], 2) for r in ours]}
        if peer:
            peer_best = min(s for _, s in peer)
            row["pythonCsvSeconds"] = round(peer_best, 2)
            row["speedupVsPythonCsv"] = round(peer_best / best["seconds"], 2)
        results.append(row)
        print(json.dumps(row), flush=True)
        os.remove(os.path.join(args.work, f"manifest-{size}.fsix"))

    if args.check_files:
        folder = os.path.join(args.work, f"files-{args.check_files}")
        if not os.path.isdir(folder):
            for d in range(1000):
                os.makedirs(os.path.join(folder, "images", "%03d" % d), exist_ok=True)
            for i in range(args.check_files):
                open(os.path.join(folder, "images", "%03d" % (i % 1000), "img-%09d.jpg" % i), "wb").close()
        manifest = os.path.join(folder, "list.csv")
        write_manifest(manifest, args.check_files)
        for mode, extra in (("with path check", []), ("no path check", ["--no-check-paths"])):
            r = run_index(binary, manifest, os.path.join(args.work, "check.fsix"), args.first, extra)
            row = {"corpus": f"manifest {args.check_files:,} existing files, {mode}", "items": r["items"],
                   "itemsPerSecond": round(r["items"] / r["seconds"]), "scanItemsPerSecond": round(r["scanItemsPerSecond"]),
                   "itemsPerCPUSecond": round(r["items"] / r["cpuSeconds"]), "peakRSSMiB": round(r["peakRSSKiB"] / 1024, 1),
                   "firstItemsSeconds": round(r["firstItemsSeconds"], 3), "seconds": round(r["seconds"], 2)}
            results.append(row)
            print(json.dumps(row), flush=True)

    if not args.skip_wds:
        folder = os.path.join(args.work, f"wds-{args.wds_members}")
        write_webdataset(folder, args.wds_members)
        subprocess.run(["sync"], check=False)
        r = run_index(binary, folder, os.path.join(args.work, "wds.fsix"), args.first)
        row = {"corpus": f"WebDataset {args.wds_members:,} members ({args.wds_members // 2:,} samples of tiny .png + .cls, 10,000 members a tar)",
               "items": r["items"], "membersPerSecond": round(args.wds_members / r["seconds"]), "itemsPerSecond": round(r["items"] / r["seconds"]),
               "scanItemsPerSecond": round(r["scanItemsPerSecond"]), "itemsPerCPUSecond": round(r["items"] / r["cpuSeconds"]),
               "peakRSSMiB": round(r["peakRSSKiB"] / 1024, 1), "firstItemsSeconds": round(r["firstItemsSeconds"], 3),
               "seconds": round(r["seconds"], 2), "deadLetters": r["deadLetters"]}
        results.append(row)
        print(json.dumps(row), flush=True)

    print("\n| corpus | items | items/s, all final | items/s, file synced | items per CPU-second | peak RSS | first %d items final after | total |" % args.first)
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['corpus']} | {r['items']:,} | {r['scanItemsPerSecond']:,} | {r['itemsPerSecond']:,} | {r['itemsPerCPUSecond']:,} | {r['peakRSSMiB']} MiB | {r['firstItemsSeconds']} s | {r['seconds']} s |")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
