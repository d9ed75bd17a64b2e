#!/usr/bin/env python3
"""The cluster's benchmarks from one run: worker end-to-end vs backbone-only, head ingest, codecs, wire bytes.

- Worker end-to-end: `featstream run --workers 1 --json` on the Fashion-MNIST demo train split; its rate is
  the head's count of the worker's rows per second (the store's ingest.json) over the whole seconds
  between the first rows and the last (start-up and the partial seconds at either end left out),
  alternated with `featstream bench backbone` at the same batch and threads; the ratio is end-to-end /
  backbone-only within each round, median of the rounds.
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
    run = subprocess.run([featstream, "run", "--model", MODEL, "--data", DATA, "--split", "train", "--workers", "1",
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
    parser.add_argument("--baseline", help="another featstream build whose head ingest is measured alternately")
    parser.add_argument("--limit", type=int, help="a quick check that the script runs: at most LIMIT images per "
                        "extraction and 100 x LIMIT head-ingest vectors (figures not comparable)")
    args = parser.parse_args()
    limit = ["--limit", str(args.limit)] if args.limit else []
    vectors = min(600000, 100 * args.limit) if args.limit else 600000
    threads = os.cpu_count() or 2
    scratch = tempfile.mkdtemp(prefix="featstream-bench-")
    try:
        e2e, bb, wire = [], [], []
        for _ in range(args.rounds):
            bb.append(backbone(args.featstream, threads))
            rate, per_vector = end_to_end(args.featstream, scratch, limit)
            e2e.append(rate)
            wire.append(per_vector)
        b, e = statistics.median(bb), statistics.median(e2e)
        # Each round measures both back to back; the machine's speed swings by 20% between rounds, so
        # the ratio is taken within each round and its median reported.
        paired = statistics.median(x / y for x, y in zip(e2e, bb))
        print("| what | measured | goal |")
        print("|---|---|---|")
        print(f"| worker end-to-end, Lite0, batch 16, {threads} threads | **{paired:.2f}x** backbone-only, median of {args.rounds} "
              f"rounds' ratios (medians: {e:.1f} vs {b:.1f} img/s) | >= 0.9x |")
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
