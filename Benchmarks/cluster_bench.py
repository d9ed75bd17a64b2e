#!/usr/bin/env python3
"""The cluster's benchmarks from one run: worker end-to-end vs backbone-only, head ingest, codecs, wire bytes.

- Worker end-to-end: `featstream run --workers 1 --json` on the first 4,000 images of Fashion-MNIST's first
  train shard (WebDataset; about 20 s: a shorter job leaves too few whole seconds to measure); its rate is the head's count
  of the worker's rows per second (the store's ingest.json) over the whole seconds between the first rows
  and the last (start-up and the partial seconds at either end left out), alternated with
  `featstream bench backbone` at the same batch and threads; the ratio is end-to-end / backbone-only
  within each round, median of the rounds. `--baseline BIN` measures the other build's pair in the same
  rounds.
- Head ingest: `featstream bench ingest` pinned to one core (frame decode, CRC, LZ4, dedup, fsync'd commits),
  600k vectors (1.5 GB of f16 rows, so that the page cache and the disk are in steady state), median of the
  rounds; `--baseline BIN` alternates each round with another build for a same-run ratio.
- Codecs: `featstream bench codec` on real Lite0 features of the demo subset.
- Wire bytes per vector: from the head's ingest.json of the end-to-end run (frame bytes / rows).

Usage: python3 Benchmarks/cluster_bench.py --featstream .build/release/featstream [--rounds 5] [--baseline OTHER-BUILD]
       [--limit N]  (a quick check that the script runs: N images per extraction, 100 x N head-ingest vectors)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HOME = os.environ.get("FEATSTREAM_HOME") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".featstream")
MODEL = os.path.join(HOME, "models", "efficientnet-lite0")
DATA = os.path.join(HOME, "data", "fashion-mnist-demo", "imagefolder")
# The first WebDataset shard of the full set: official order, so the first images hold every class.
FULL_DATA = os.path.join(HOME, "data", "fashion-mnist", "webdataset", "train-000000.tar")
END_TO_END_IMAGES = 4000


def backbone(featstream, threads):
    out = subprocess.run([featstream, "bench", "backbone", "--model", MODEL, "--batch", "16", "--threads", str(threads),
                          "--seconds", "4"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["imagesPerSecond"]


def steady_rate(per_second):
    """Rows/s from the head's per-second counts ({"second": rows}): the whole seconds between the first
    and the last, which are partial (all of them when the run is too short to have whole seconds)."""
    seconds = sorted(int(s) for s in per_second)
    first, last = seconds[0], seconds[-1]
    if last - first < 2:
        return sum(per_second.values()) / (last - first + 1)
    return sum(per_second.get(str(s), 0) for s in range(first + 1, last)) / (last - first - 1)


def end_to_end(featstream, scratch, limit):
    out_dir = os.path.join(scratch, "run")
    shutil.rmtree(out_dir, ignore_errors=True)
    run = subprocess.run([featstream, "run", "--model", MODEL, "--data", FULL_DATA, "--workers", "1",
                          "--batch", "16", "--shard-size", "128", "--out", out_dir, "--json"] + limit,
                         check=True, capture_output=True, text=True)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    ingest = json.load(open(os.path.join(summary["store"], "ingest.json")))
    if len(ingest["rowsPerSecond"]) != 1:
        sys.exit(f"expected rows from one worker, the head counted rows from {sorted(ingest['rowsPerSecond'])}")
    (per_second,) = ingest["rowsPerSecond"].values()
    return steady_rate(per_second), ingest["wireBytes"] / max(ingest["rows"], 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--featstream", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="another featstream build whose end-to-end pair and head ingest are measured alternately")
    parser.add_argument("--limit", type=int, help="a quick check that the script runs: at most LIMIT images per "
                        "extraction and 100 x LIMIT head-ingest vectors (figures not comparable)")
    args = parser.parse_args()
    limit = ["--limit", str(args.limit)] if args.limit else []
    e2e_limit = ["--limit", str(args.limit or END_TO_END_IMAGES)]
    vectors = min(600000, 100 * args.limit) if args.limit else 600000
    threads = os.cpu_count() or 2
    scratch = tempfile.mkdtemp(prefix="featstream-bench-")
    try:
        builds = [args.featstream] + ([args.baseline] if args.baseline else [])
        e2e, bb, wire = {b: [] for b in builds}, {b: [] for b in builds}, []
        for _ in range(args.rounds):
            for build in builds:
                bb[build].append(backbone(build, threads))
                rate, per_vector = end_to_end(build, scratch, e2e_limit)
                e2e[build].append(rate)
                if build == args.featstream:
                    wire.append(per_vector)
        # Each round measures both back to back; the machine's speed swings by 20% between rounds, so
        # the ratio is taken within each round and its median reported.
        paired = {b: statistics.median(x / y for x, y in zip(e2e[b], bb[b])) for b in builds}
        print("| what | measured | goal |")
        print("|---|---|---|")
        for build in builds:
            name = "" if build == args.featstream else " (baseline build)"
            print(f"| worker end-to-end{name}, Lite0, batch 16, {threads} threads | **{paired[build]:.2f}x** backbone-only, median of "
                  f"{args.rounds} rounds' ratios (medians: {statistics.median(e2e[build]):.1f} vs {statistics.median(bb[build]):.1f} img/s) | >= 0.9x |")
        if args.baseline:
            versus = statistics.median(x / y for x, y in zip(e2e[args.featstream], e2e[args.baseline]))
            print(f"| worker end-to-end, this build / baseline, same rounds | {versus:.2f}x | reported |")
        print(f"| wire bytes per 1280-d vector (f16 + shuffle + LZ4, frames included) | {statistics.median(wire):.0f} B (raw f32: 5120 B) | reported |")

        features = os.path.join(scratch, "features")
        subprocess.run([args.featstream, "extract", "--model", MODEL, "--data", DATA, "--out", features] + limit,
                       check=True, capture_output=True)
        npy = os.path.join(features, "features.npy")
        def ingest(featstream):
            out = subprocess.run(["taskset", "-c", "0", featstream, "bench", "ingest", "--features", npy,
                                  "--vectors", str(vectors)], check=True, capture_output=True, text=True).stdout
            return json.loads(out.strip().splitlines()[-1])

        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(ingest(args.featstream))
            if args.baseline:
                theirs.append(ingest(args.baseline))
        wall = statistics.median(r["vectorsPerSecond"] for r in ours)
        cpu = statistics.median(r["vectorsPerCPUSecond"] for r in ours if "vectorsPerCPUSecond" in r)
        versus = ""
        if theirs:
            base = statistics.median(r["vectorsPerSecond"] for r in theirs)
            versus = f"; baseline alternated in the same run: {base:.0f}/s, so {wall / base:.2f}x"
        print(f"| head ingest, 1280-d f16 + shuffle + LZ4, one core, fsync'd 1024-item shards | "
              f"{wall:.0f} vectors/s ({cpu:.0f} per CPU-second), median of {args.rounds}{versus} | >= 200k/s |")
        print()
        codecs = json.loads(subprocess.run([args.featstream, "bench", "codec", "--features", npy], check=True,
                                           capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print("| dtype+codec | compressed bytes | ratio vs raw f32 | encode GB/s | decode GB/s | max abs error |")
        print("|---|---|---|---|---|---|")
        for c in codecs:
            print(f"| {c['dtype']}+{c['codec']} | {c['compressedBytes']} | {c['ratio']:.3f} | {c['encodeGBps']:.2f} | "
                  f"{c['decodeGBps']:.2f} | {c['maxAbsError']:g} |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
