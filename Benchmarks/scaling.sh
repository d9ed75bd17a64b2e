#!/usr/bin/env bash
# Scaling: N workers on N network-namespace hosts, each held to a fixed fraction of a core by a
# cgroup CPU quota, so that linearity can be shown on a 2-core machine. The coordinator and the
# head run on their own namespace hosts without a quota. For each N it reports the aggregate
# images/s (the sum of each worker's rate over the time it spent on shards), the ratio to N times
# the one-worker figure, and the head's CPU share over the job.
#
# One job per N is not enough on a shared machine: the one-worker baseline alone moved by 6%
# between back-to-back runs, and every ratio moves with it. So the jobs run in ROUNDS, each round
# visiting every N (ascending, then descending in the next round, so that slow drift of the
# machine falls on every N alike), and the table gives each N's median, its range, and the ratio
# of medians.
#
# The quota's period is 500 ms rather than the kernel's usual 100 ms. CFS bandwidth control hands
# out quota in 5 ms slices per CPU, and with 100 ms periods the slices stranded on the other CPU
# and the throttling boundaries cost co-located quota'd processes measurably: four copies of
# `featstream bench backbone --threads 1` at 0.4 core each ran at 0.92-0.94x the rate of one copy
# with 100 ms periods and at 0.99x with 500 ms or 1 s periods (2026-12-03, this machine), with no
# cluster involved. A longer period makes "0.4 of a core" mean the same for one worker as for four.
# Beside each job runs its peer without a cluster: N plain `featstream extract` processes under the
# same quotas, IMAGES/N images each (decode and backbone only: no coordinator, head, network or
# codec). The machine's two vCPUs, shared caches and neighbours slow N co-located processes
# whatever they run; "vs the same N without a cluster" is what the cluster itself costs.
# Each job extracts IMAGES images of Fashion-MNIST's train split (2000 by default, so that a job
# spans many periods even with 4 workers).
#
# Usage (root): bash Benchmarks/scaling.sh [MAX_WORKERS=4] [QUOTA_CORES=0.45] [ROUNDS=3] [IMAGES=2000]
# Needs cgroup v1's cpu controller at /sys/fs/cgroup/cpu (cgroup v2: /sys/fs/cgroup with cpu.max).
set -euo pipefail
cd "$(dirname "$0")/.."
max=${1:-4}
quota=${2:-0.45}
rounds=${3:-3}
images=${4:-2000}
bin=$PWD/.build/release/featstream
swift build -c release --product featstream >/dev/null
model=$PWD/.featstream/models/efficientnet-lite0
data=$PWD/.featstream/data/fashion-mnist/imagefolder
net=Cluster/netns-cluster.sh
period=500000
quota_us=$(awk -v q="$quota" -v p="$period" 'BEGIN { printf "%d", q * p }')
work=$(mktemp -d)

cpu_group() {  # cpu_group NAME -> path of a cgroup with the quota applied
  local g
  if [[ -d /sys/fs/cgroup/cpu ]]; then
    g=/sys/fs/cgroup/cpu/featstream-bench-$1
    mkdir -p "$g"
    echo "$period" > "$g/cpu.cfs_period_us"
    echo "$quota_us" > "$g/cpu.cfs_quota_us"
    echo "$g/tasks"
  else
    g=/sys/fs/cgroup/featstream-bench-$1
    mkdir -p "$g"
    echo "$quota_us $period" > "$g/cpu.max"
    echo "$g/cgroup.procs"
  fi
}

cleanup() {
  pkill -f "featstream-bench-marker" 2>/dev/null || true
  bash "$net" down >/dev/null 2>&1 || true
  rmdir /sys/fs/cgroup/cpu/featstream-bench-* /sys/fs/cgroup/featstream-bench-* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# One job with N workers; prints "aggregate-img/s head-cpu-share-percent".
run_job() {
  local n=$1
  bash "$net" down >/dev/null 2>&1 || true
  bash "$net" up $((n + 2)) >/dev/null
  local out
  out=$(mktemp -d "$work/n$n-XXXX")
  ip netns exec fs-h1 "$bin" coordinator --bind tcp://10.77.0.11:5555 --head tcp://10.77.0.12:5556 \
      --data "$data" --split train --limit "$images" --journal "$out/journal" --shard-size 32 >/dev/null 2>"$out/coordinator.log" &
  local coordinator=$!
  ip netns exec fs-h2 "$bin" head --bind tcp://10.77.0.12:5556 --coordinator tcp://10.77.0.11:5555 \
      --store "$out/store" >/dev/null 2>"$out/head.log" &
  local head=$!
  local start
  start=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    local tasks
    tasks=$(cpu_group "w$i")
    # Join the cgroup before entering the namespace: `ip netns exec` remounts /sys, hiding the cgroup tree.
    sh -c "echo \$\$ > $tasks; exec ip netns exec fs-h$((i + 2)) $bin worker --coordinator tcp://10.77.0.11:5555 \
        --model $model --data $data --split train --threads 1 --batch 16 --name w$i" >/dev/null 2>"$out/w$i.log" &
  done
  # Sample the head's CPU time while the job runs: bash reaps it as soon as it exits.
  local head_ticks=0
  while kill -0 "$coordinator" 2>/dev/null; do
    head_ticks=$(ticks "$head" 2>/dev/null || echo "$head_ticks")
    sleep 0.2
  done
  local end
  end=$(date +%s.%N)
  wait
  local rate
  rate=$(cat "$out"/w*.log | sed -nE 's/.*on shards: ([0-9.]+) img\/s.*/\1/p' | awk '{ s += $1 } END { printf "%.1f", s }')
  awk -v r="$rate" -v t="$head_ticks" -v hz="$hz" -v a="$start" -v b="$end" 'BEGIN { printf "%s %.2f\n", r, 100 * t / hz / (b - a) }'
}

# N standalone extractions under the same quotas; prints their summed img/s.
run_peer() {
  local n=$1 out
  out=$(mktemp -d "$work/peer$n-XXXX")
  for i in $(seq 1 "$n"); do
    local tasks
    tasks=$(cpu_group "w$i")
    sh -c "echo \$\$ > $tasks; exec $bin extract --model $model --data $data --split train --limit $((images / n)) \
        --threads 1 --batch 16 --out $out/x$i" >"$out/x$i.log" 2>&1 &
  done
  wait
  cat "$out"/x*.log | sed -nE 's/.* ([0-9.]+) img\/s -> .*/\1/p' | awk '{ s += $1 } END { printf "%.1f\n", s }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The first job warms the page cache and the model files; it is run and not reported.
run_job 1 >/dev/null
results=$work/results
: >"$results"
for round in $(seq 1 "$rounds"); do
  if ((round % 2)); then order=$(seq 1 "$max"); else order=$(seq "$max" -1 1); fi
  for n in $order; do
    read -r rate share < <(run_job "$n")
    peer=$(run_peer "$n")
    echo "$n $rate $share $peer" >>"$results"
    echo "round $round: $n worker(s) $rate img/s, head $share%; without a cluster $peer img/s" >&2
  done
done

# column N C: column C (2 rate, 3 head share, 4 peer rate) of every result for N workers.
column() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$results"; }

single=$(column 1 2 | median)
echo "| workers | quota per worker | aggregate img/s, median of $rounds (range) | vs N x one worker | head CPU share (median) | same N without a cluster, img/s | cluster vs without |"
echo "|---|---|---|---|---|---|---|"
for n in $(seq 1 "$max"); do
  rate=$(column "$n" 2 | median)
  low=$(column "$n" 2 | sort -g | head -1)
  high=$(column "$n" 2 | sort -g | tail -1)
  share=$(column "$n" 3 | median)
  peer=$(column "$n" 4 | median)
  ratio=$(awk -v r="$rate" -v s="$single" -v n="$n" 'BEGIN { printf "%.3f", r / (s * n) }')
  versus=$(awk -v r="$rate" -v p="$peer" 'BEGIN { printf "%.3f", r / p }')
  echo "| $n | $quota core | $rate ($low-$high) | ${ratio}x | ${share}% | $peer | ${versus}x |"
done
