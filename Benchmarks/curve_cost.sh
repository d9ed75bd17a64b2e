#!/usr/bin/env bash
# What CurveZMQ costs end to end: `featstream run` encrypted (the default) vs --insecure-plaintext, alternating
# on one job (Fashion-MNIST demo train split, 2 workers), ROUNDS pairs. Prints "round mode img/s" per run.
# Usage: FEATSTREAM_HOME=... bash Benchmarks/curve_cost.sh [featstream binary] [rounds]
set -euo pipefail
bin=${1:-.build/release/featstream}; rounds=${2:-3}
for r in $(seq 1 "$rounds"); do
  for mode in curve plaintext; do
    out=$(mktemp -d); flag=(); [ "$mode" = plaintext ] && flag=(--insecure-plaintext)
    line=$("$bin" run --model "$FEATSTREAM_HOME/models/efficientnet-lite0" --data "$FEATSTREAM_HOME/data/fashion-mnist-demo/imagefolder" \
        --split train --workers 2 --shard-size 32 --no-train --out "$out" "${flag[@]}" 2>/dev/null | grep '^run: ')
    echo "$r $mode $(echo "$line" | sed -E 's/.* ([0-9.]+) img\/s.*/\1/')"
    rm -rf "$out"
  done
done
