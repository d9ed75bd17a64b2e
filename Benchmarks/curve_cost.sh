#!/usr/bin/env bash
# What CurveZMQ costs, encrypted (the default) vs --insecure-plaintext, alternating in one run.
#
# `run` (default): whole `featstream run` jobs (Fashion-MNIST demo train split, 2 workers), ROUNDS pairs.
#   Prints "round mode img/s" per job.
#   Usage: FEATSTREAM_HOME=... bash Benchmarks/curve_cost.sh [run] [featstream binary] [rounds]
#
# `head`: the head's own ingest rate over its socket on loopback. A real `featstream head` (a fresh store,
#   64 credits) is fed by `featstream bench head-ingest` (real features from FEATURES, a features.npy of
#   `featstream extract`, cycled; 16-row shuffle-LZ4 f16 batches, as workers send) as fast as it grants
#   credits, until every shard is durable. Prints "round mode vectors/s head-CPU-microseconds-per-vector wire-bytes-per-vector" per
#   run, then the CURVE/plaintext ratio of each (median of the per-round ratios). SENDER=BIN sends with
#   another binary (the head's binary need not have `bench head-ingest`).
#   Usage: FEATURES=... [VECTORS=50000] [SENDER=BIN] bash Benchmarks/curve_cost.sh head [featstream binary] [rounds]
set -euo pipefail
mode=run
if [[ ${1:-} == run || ${1:-} == head ]]; then mode=$1; shift; fi
bin=${1:-.build/release/featstream}; rounds=${2:-3}

# field NAME: field NAME of the JSON object on standard input (a `run --json` or `bench` line).
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

if [[ $mode == run ]]; then
  for r in $(seq 1 "$rounds"); do
    for kind in curve plaintext; do
      out=$(mktemp -d); flag=(); [ "$kind" = plaintext ] && flag=(--insecure-plaintext)
      line=$("$bin" run --model "$FEATSTREAM_HOME/models/efficientnet-lite0" --data "$FEATSTREAM_HOME/data/fashion-mnist-demo/imagefolder" \
          --split train --workers 2 --shard-size 32 --no-train --out "$out" --json "${flag[@]}" 2>/dev/null | tail -1)
      echo "$r $kind $(field imagesPerSecond <<<"$line")"
      rm -rf "$out"
    done
  done
  exit 0
fi

features=${FEATURES:?FEATURES=path/to/features.npy}
vectors=${VECTORS:-50000}
sender=${SENDER:-$bin}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
results=$(mktemp)
one() {  # one ROUND KIND: prints "round kind vectors/s cpu-ms-per-1000"
  local dir port mport sec head t0 t1 line
  dir=$(mktemp -d); port=$(free_port); mport=$(free_port)
  if [[ $2 == curve ]]; then
    "$bin" keygen --keys "$dir/keys" --workers w1 >/dev/null 2>&1
    sec=(--keys "$dir/keys")
  else
    sec=(--insecure-plaintext)
  fi
  # No coordinator runs here, and a head grants no credit before it knows its job's shard plan: bind the
  # store to one beforehand, as the coordinator's first welcome would (the store's job-plan file).
  mkdir -p "$dir/store"; echo 00000000000000b1 >"$dir/store/job-plan"
  "$bin" head --bind "tcp://127.0.0.1:$port" --coordinator "tcp://127.0.0.1:$(free_port)" --store "$dir/store" --credits 64 \
      --metrics-port "$mport" "${sec[@]}" >/dev/null 2>"$dir/head.log" &
  head=$!
  # Its start-up (loading, binding) is not ingest: count CPU from when it listens. The head serves its
  # metrics once its data socket is bound.
  for _ in $(seq 1 600); do python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$mport/metrics" 2>/dev/null && break; sleep 0.05; done
  t0=$(ticks "$head")
  line=$("$sender" bench head-ingest --head "tcp://127.0.0.1:$port" --features "$features" --vectors "$vectors" --key-name w1 --plan b1 "${sec[@]}" 2>/dev/null) || line=
  t1=$(ticks "$head")
  kill -9 "$head"; wait "$head" 2>/dev/null || true
  rm -rf "$dir"
  [[ -n $line ]] || { echo "curve_cost: bench head-ingest failed (round $1, $2)" >&2; exit 1; }
  local rate bytes
  rate=$(field vectorsPerSecond <<<"$line")
  bytes=$(field wireBytesPerVector <<<"$line")
  echo "$1 $2 $rate $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$vectors" 'BEGIN { printf "%.2f", 1e6 * t / hz / n }') $bytes"
}
for r in $(seq 1 "$rounds"); do
  if ((r % 2)); then order="curve plaintext"; else order="plaintext curve"; fi
  for kind in $order; do one "$r" "$kind" | tee -a "$results"; done
done
awk '{ rate[$1, $2] = $3; cpu[$1, $2] = $4; if ($1 > n) n = $1 }
  END { for (r = 1; r <= n; r++) { printf "round %d: CURVE/plaintext vectors/s %.3f, head CPU per vector %.3f\n", r, rate[r, "curve"] / rate[r, "plaintext"], cpu[r, "curve"] / cpu[r, "plaintext"] } }' "$results"
rm -f "$results"
