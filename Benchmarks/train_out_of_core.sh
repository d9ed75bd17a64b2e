#!/usr/bin/env bash
# `featstream train` on a store at least 3x larger than its memory limit, against the same training
# in memory, with the time per pass over the store against the disk's read rate (issue 15, section 6).
#
#   bash Benchmarks/train_out_of_core.sh [FEATSTREAM] [SCRATCH]
#
# 1. Writes (once, reused from SCRATCH) a synthetic store of ROWS (default 150,000) 1280-d f16 rows,
#    10 Gaussian classes (~384 MB; Tests/TrainingTests/SyntheticStore.swift, run through `swift test`,
#    so build the tests first). Extracting a real corpus that size takes longer than this machine allows.
# 2. Trains the default head in memory (no limit), 10% of rows held out for validation.
# 3. Trains it again in a memory cgroup limited to a third of the store's bytes (cgroup v1
#    memory.limit_in_bytes, or v2 memory.max; systemd-run is not available on every host). The
#    default --memory-budget (half the cgroup's limit) is far below the features, so every L-BFGS
#    pass streams the store from its memory-mapped segments.
# 4. Measures the store's read rate from disk (dd with O_DIRECT, so the page cache does not help).
# Prints one JSON object; the figures in README come from it. Needs root for the cgroup.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${1:-$HERE/../.build/release/featstream}"
SCRATCH="${2:-/tmp/featstream-out-of-core}"
HOME_DIR="${FEATSTREAM_HOME:-$HERE/../.featstream}"
MODEL="$HOME_DIR/models/efficientnet-lite0"
DATA="$HOME_DIR/data/fashion-mnist/imagefolder"
STORE="$SCRATCH/store"
ROWS="${ROWS:-150000}"
# Extra `featstream train` arguments for both runs, e.g. TRAIN_ARGS="--l2 1e-2,1e-3,1e-4" for a shorter walk.
TRAIN_ARGS="${TRAIN_ARGS:-}"
mkdir -p "$SCRATCH"

if [[ ! -f "$STORE/store.json" ]]; then
  # The synthetic store's generator is a skipped-by-default test case (it needs FeatureStore's writer).
  (cd "$HERE/.." && FEATSTREAM_SYNTHETIC_STORE="$STORE" FEATSTREAM_SYNTHETIC_ROWS="$ROWS" \
    swift test --skip-build --filter SyntheticStoreGenerator >&2)
fi
store_bytes=$(du -sb "$STORE" | cut -f1)
limit=$((store_bytes / 3))

timed() {  # timed OUT_JSON command... -> runs it, writes {"seconds": wall} to OUT_JSON
  local out=$1; shift
  local start end
  start=$(date +%s.%N)
  "$@" >&2
  end=$(date +%s.%N)
  python3 -c "import json,sys; json.dump({'seconds': float(sys.argv[2]) - float(sys.argv[1])}, open(sys.argv[3], 'w'))" "$start" "$end" "$out"
}

rm -rf "$SCRATCH/in-memory" "$SCRATCH/out-of-core"
timed "$SCRATCH/in-memory.time" "$BIN" train --store "$STORE" --model "$MODEL" --out "$SCRATCH/in-memory" $TRAIN_ARGS

# A memory cgroup for the out-of-core run.
if [[ -d /sys/fs/cgroup/memory ]]; then
  group=/sys/fs/cgroup/memory/featstream-bench-train
  mkdir -p "$group"
  echo "$limit" > "$group/memory.limit_in_bytes"
  peak_file="$group/memory.max_usage_in_bytes"
  echo 0 > "$peak_file" 2>/dev/null || true
else
  group=/sys/fs/cgroup/featstream-bench-train
  mkdir -p "$group"
  echo "$limit" > "$group/memory.max"
  peak_file="$group/memory.peak"
fi
trap 'rmdir "$group" 2>/dev/null || true' EXIT
timed "$SCRATCH/out-of-core.time" sh -c "echo \$\$ > $group/cgroup.procs; exec $BIN train --store $STORE --model $MODEL --out $SCRATCH/out-of-core $TRAIN_ARGS"
peak=$(cat "$peak_file" 2>/dev/null || echo 0)
events=$( (grep -h oom_kill "$group/memory.oom_control" "$group/memory.events" 2>/dev/null || true) | tr '\n' ' ')

# The store's read rate from disk, bypassing the page cache.
read_start=$(date +%s.%N)
for segment in "$STORE"/segments/* "$STORE"/*.seg; do
  [[ -f "$segment" ]] && dd if="$segment" of=/dev/null bs=4M iflag=direct status=none
done
read_end=$(date +%s.%N)

python3 - "$SCRATCH" "$store_bytes" "$limit" "$peak" "$read_start" "$read_end" "$events" <<'EOF'
import json, sys
scratch, store_bytes, limit, peak, read_start, read_end, events = sys.argv[1:8]
store_bytes, limit, peak = int(store_bytes), int(limit), int(peak)
read_seconds = float(read_end) - float(read_start)
result = {"store_bytes": store_bytes, "memory_limit_bytes": limit, "store_over_limit": round(store_bytes / limit, 2),
          "out_of_core_peak_bytes": peak, "oom": events.strip(), "disk_read_seconds": round(read_seconds, 3),
          "disk_read_mb_per_s": round(store_bytes / read_seconds / 1e6, 1)}
for name in ["in-memory", "out-of-core"]:
    report = json.load(open(f"{scratch}/{name}/report.json"))
    fit = report.get("fit") or {}
    wall = json.load(open(f"{scratch}/{name}.time"))["seconds"]
    entry = {"top1": report["evaluation"]["top1"], "chosen_l2": report.get("chosenL2"), "streamed": fit.get("streamed"),
             "fit_seconds": round(fit.get("seconds", 0), 2), "passes": fit.get("passes"), "command_seconds": round(wall, 2),
             "memory_budget": fit.get("memoryBudget")}
    if fit.get("passes"):
        entry["seconds_per_pass"] = round(fit["seconds"] / fit["passes"], 3)
        entry["pass_over_disk_read"] = round(entry["seconds_per_pass"] / read_seconds, 2)
    result[name] = entry
result["top1_difference_pp"] = round(100 * (result["out-of-core"]["top1"] - result["in-memory"]["top1"]), 3)
print(json.dumps(result, indent=1))
EOF
