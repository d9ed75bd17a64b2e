#!/usr/bin/env bash
# Scaling: N workers on N network-namespace hosts, each held to a fixed fraction of a core by a
# cgroup CPU quota, so that linearity can be shown on a 2-core machine. The coordinator and the
# head run on their own namespace hosts without a quota.
#
# Every job is measured in steady state over a fixed window of wall time, not over a fixed number
# of images. A fixed count made each N measure a different length of time (2,000 images took 54 s
# with one worker and 14 s with four, under 30 quota periods), so the partial periods at either end
# and the ragged finish weighed differently on every N. Here the head's Prometheus counter of images
# received is sampled every half second from the moment every worker has delivered a batch; after
# WARM seconds, WINDOW seconds of samples are fitted with a least-squares line, and its slope is the
# aggregate img/s. The job is then stopped: only the rate matters, not the end of the job.
#
# Beside each job runs its peer without a cluster: N `featstream bench extract` processes (what
# `featstream extract` does, decode and backbone, writing nothing) under the same quotas (no
# coordinator, head, network or codec), measured the same way from the image counts they print as
# JSON every half second. The machine's two vCPUs, shared caches and neighbours slow N
# co-located processes whatever they run; "vs the same N without a cluster" is what the cluster
# itself costs. Two diagnostics explain what is left: the CPU milliseconds each image cost the
# quota'd processes, and the share of their quota they used (under 100%, and throttled in fewer
# than all periods: the machine ran out of CPU before they ran out of quota).
#
# The quota's period is 500 ms rather than the kernel's usual 100 ms. CFS bandwidth control hands
# out quota in 5 ms slices per CPU, and with 100 ms periods the slices stranded on the other CPU
# and the throttling boundaries cost co-located quota'd processes measurably: four copies of
# `featstream bench backbone --threads 1` at 0.4 core each ran at 0.92-0.94x the rate of one copy
# with 100 ms periods and at 0.99x with 500 ms or 1 s periods (2026-12-03, this machine), with no
# cluster involved. A longer period makes "0.4 of a core" mean the same for one worker as for four.
#
# Jobs run in ROUNDS, each visiting every N (ascending, then descending in the next round, so that
# slow drift of the machine falls on every N alike); the table gives each N's median and range.
#
# SCALING_COMPARE=plaintext measures what CurveZMQ costs instead: beside each (encrypted, default) job
# runs the same job with every role on --insecure-plaintext --allow-remote-plaintext, the two in
# alternating order from round to round; the table gives each N's CURVE/plaintext ratio (median of the
# per-round ratios). SCALING_NS="1 2 4" picks the worker counts (default 1..MAX_WORKERS).
#
# Usage (root): [FEATSTREAM=BIN] [SCALING_KEEP=DIR] [SCALING_COMPARE=plaintext] [SCALING_NS="1 2 4"] bash Benchmarks/scaling.sh [MAX_WORKERS=4] [QUOTA_CORES=0.4] [ROUNDS=3] [WINDOW=40] [WARM=4] (whole seconds)
# A quick check that the script runs: bash Benchmarks/scaling.sh 1 0.4 1 5 1 (figures not comparable).
# Needs cgroup v1's cpu controller at /sys/fs/cgroup/cpu (cgroup v2: /sys/fs/cgroup with cpu.max).
set -euo pipefail
cd "$(dirname "$0")/.."
max=${1:-4}
quota=${2:-0.4}
rounds=${3:-3}
window=${4:-40}
warm=${5:-4}
# FEATSTREAM=path measures that binary (e.g. an earlier build) instead of building this checkout.
if [[ -n ${FEATSTREAM:-} ]]; then
  bin=$FEATSTREAM
else
  bin=$PWD/.build/release/featstream
  swift build -c release --product featstream >/dev/null
fi
home=${FEATSTREAM_HOME:-$PWD/.featstream}
model=$home/models/efficientnet-lite0
data=$home/data/fashion-mnist/imagefolder
net=Cluster/netns-cluster.sh
period=500000
quota_us=$(awk -v q="$quota" -v p="$period" 'BEGIN { printf "%d", q * p }')
# Enough images that no job runs out inside its window, even at full speed.
images=60000
# SCALING_KEEP=DIR keeps every job's samples, progress lines and logs there.
work=${SCALING_KEEP:-$(mktemp -d)}
mkdir -p "$work"

group_dir() {  # group_dir NAME -> the cgroup directory of NAME (cgroup v1's cpu controller or v2)
  if [[ -d /sys/fs/cgroup/cpu ]]; then echo "/sys/fs/cgroup/cpu/featstream-bench-$1"; else echo "/sys/fs/cgroup/featstream-bench-$1"; fi
}

cpu_group() {  # cpu_group NAME -> the cgroup directory, with the quota applied
  local g
  g=$(group_dir "$1")
  mkdir -p "$g"
  if [[ -e $g/cpu.cfs_quota_us ]]; then
    echo "$period" > "$g/cpu.cfs_period_us"
    echo "$quota_us" > "$g/cpu.cfs_quota_us"
  else
    echo "$quota_us $period" > "$g/cpu.max"
  fi
  echo "$g"
}

cleanup() {
  for p in "${pids[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  bash "$net" down >/dev/null 2>&1 || true
  sleep 0.2
  rmdir /sys/fs/cgroup/cpu/featstream-bench-* /sys/fs/cgroup/featstream-bench-* 2>/dev/null || true
  [[ -n ${SCALING_KEEP:-} ]] || rm -rf "$work"
}
pids=()
trap cleanup EXIT

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)
now() { echo "$EPOCHREALTIME"; }
# Microseconds since the epoch, for comparisons in the sampling loops without spawning a process.
micros() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# Sum of CPU ticks of the given pids.
cpu_ticks() { local s=0 p; for p in "$@"; do s=$((s + $(ticks "$p"))); done; echo "$s"; }

# Periods and throttled periods summed over the groups w1..wN.
throttling() {
  local n=$1 i g periods=0 throttled=0
  for i in $(seq 1 "$n"); do
    g=$(group_dir "w$i")
    read -r p t < <(awk '$1 == "nr_periods" { p = $2 } $1 == "nr_throttled" { t = $2 } END { print p + 0, t + 0 }' "$g/cpu.stat")
    periods=$((periods + p)); throttled=$((throttled + t))
  done
  echo "$periods $throttled"
}

# slope FILE FROM TO: least-squares slope of column 2 against column 1 over FROM <= t <= TO.
slope() {
  awk -v a="$2" -v b="$3" '$1 >= a && $1 <= b { t = $1 - a; n++; st += t; sc += $2; stt += t * t; stc += t * $2 }
    END { d = n * stt - st * st; printf "%.3f\n", (n > 2 && d > 0) ? (n * stc - st * sc) / d : 0 }' "$1"
}

# measure N OUT HEAD PIDS...: waits for readiness, the warm-up and the window, printing
# "img/s cpu-ms-per-image throttled-percent head-cpu-percent quota-used-percent" (head share only
# for jobs). The quota used comes from CPU time alone, so it checks the rate: a job that used its
# whole quota at an unchanged CPU cost per image cannot have been faster or slower.
# $ready and $rate_of are set by the caller (functions of OUT).
measure() {
  local n=$1 out=$2 head=$3; shift 3
  local deadline=$(( ${EPOCHSECONDS} + 120 ))
  until $ready "$out" "$n"; do
    ((EPOCHSECONDS < deadline)) || { echo "scaling: $n processes not all producing after 120 s; logs in $out" >&2; exit 1; }
    sleep 0.5
  done
  local t0 t1
  t0=$(( $(micros) + warm * 1000000 ))
  t1=$(( t0 + window * 1000000 ))
  while (( $(micros) < t0 )); do sleep 0.5; done
  local c0 h0 thr0 s0 c1 h1 thr1 s1
  c0=$(cpu_ticks "$@"); h0=$(cpu_ticks $head); thr0=$(throttling "$n"); s0=$(now)
  while (( $(micros) < t1 )); do sleep 0.5; done
  c1=$(cpu_ticks "$@"); h1=$(cpu_ticks $head); thr1=$(throttling "$n"); s1=$(now)
  echo "window $s0 $s1 ticks $c0 $c1" >"$out/window"
  local rate
  rate=$($rate_of "$out" "${t0:0:-6}.${t0: -6}" "${t1:0:-6}.${t1: -6}")
  awk -v r="$rate" -v c="$((c1 - c0))" -v h="$((h1 - h0))" -v hz="$hz" -v s="$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')" \
      -v p="$(( ${thr1% *} - ${thr0% *} ))" -v t="$(( ${thr1#* } - ${thr0#* } ))" \
      -v q="$(awk -v n="$n" -v q="$quota" 'BEGIN { print n * q }')" \
      'BEGIN { printf "%.2f %.2f %.1f %.2f %.1f\n", r, 1000 * c / hz / (r * s), p ? 100 * t / p : 0, 100 * h / hz / s, 100 * c / hz / s / q }'
}

# The job's committed images and its workers, from `featstream status --json --every 0.5` (one
# long-lived process in the coordinator's namespace, one JSON line per refresh), appended to
# OUT/samples as "time images workers". (An `ip netns exec` per sample cost 15 ms of CPU, 3% of a
# core at two samples a second, taken from the quota'd workers when their quotas fill the machine.)
# The job's kill takes the status process itself: with its coordinator gone it prints nothing more, so
# it would never meet a closed pipe and the job's `wait` would never end.
start_sampler() {
  ip netns exec fs-h1 "$bin" status http://127.0.0.1:9400 --json --every 0.5 2>/dev/null > >(python3 -u -c '
import json, sys, time
for line in sys.stdin:
    if line.startswith("{"):
        status = json.loads(line)
        print("%.6f %d %d" % (time.time(), status["images"], len(status["workers"])), flush=True)' >>"$1/samples" 2>/dev/null) &
  pids+=($!)
}
job_ready() { [[ -s $1/samples ]] && awk -v n="$2" 'END { exit !($3 >= n) }' "$1/samples"; }
job_rate() { slope "$1/samples" "$2" "$3"; }

# One job with N workers, CurveZMQ unless MODE is plaintext; prints measure's line.
run_job() {
  local n=$1 mode=${2:-curve}
  bash "$net" down >/dev/null 2>&1 || true
  bash "$net" up $((n + 2)) >/dev/null
  local out
  out=$(mktemp -d "$work/n$n-XXXX")
  # Every socket is CurveZMQ (the default): the coordinator's, the head's and one key per worker.
  local sec="--keys $out/keys"
  if [[ $mode == plaintext ]]; then
    sec="--insecure-plaintext --allow-remote-plaintext"
  else
    "$bin" keygen --keys "$out/keys" --workers "$(seq -s, -f 'w%g' 1 "$n")" >/dev/null
  fi
  # shellcheck disable=SC2086
  ip netns exec fs-h1 "$bin" coordinator $sec --bind tcp://10.77.0.11:5555 --head tcp://10.77.0.12:5556 \
      --data "$data" --split train --limit "$images" --journal "$out/journal" --shard-size 32 --metrics-port 9400 \
      >/dev/null 2>"$out/coordinator.log" &
  pids=($!)
  ip netns exec fs-h2 "$bin" head --bind tcp://10.77.0.12:5556 --coordinator tcp://10.77.0.11:5555 \
      --store "$out/store" $sec --metrics-port 9400 --metrics-bind 10.77.0.12 >/dev/null 2>"$out/head.log" &
  local head=$!
  pids+=("$head")
  local workers=()
  for i in $(seq 1 "$n"); do
    local g
    g=$(cpu_group "w$i")
    # Join the cgroup before entering the namespace: `ip netns exec` remounts /sys, hiding the cgroup tree.
    sh -c "echo \$\$ > $g/cgroup.procs; exec ip netns exec fs-h$((i + 2)) $bin worker $sec --coordinator tcp://10.77.0.11:5555 \
        --model $model --threads 1 --batch 16 --name w$i" >/dev/null 2>"$out/w$i.log" &
    workers+=($!)
  done
  pids+=("${workers[@]}")
  start_sampler "$out"
  ready=job_ready rate_of=job_rate measure "$n" "$out" "$head" "${workers[@]}"
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
}

# A peer's progress, `bench extract`'s JSON lines ({"images": DONE, "time": EPOCH}), as "time done".
peer_ready() { local f c=0; for f in "$1"/x*.progress; do [[ -s $f ]] && c=$((c + 1)); done; ((c >= $2)); }
peer_rate() { local f; for f in "$1"/x*.progress; do slope "$f" "$2" "$3"; done | awk '{ s += $1 } END { printf "%.3f\n", s }'; }

# N standalone extractions under the same quotas; prints measure's line.
run_peer() {
  local n=$1 out
  out=$(mktemp -d "$work/peer$n-XXXX")
  local copies=()
  for i in $(seq 1 "$n"); do
    local g
    g=$(cpu_group "w$i")
    sh -c "echo \$\$ > $g/cgroup.procs; exec $bin bench extract --model $model --data $data --split train --limit $images \
        --threads 1 --batch 16 --every 0.5" 2>"$out/x$i.log" \
        > >(python3 -u -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        progress = json.loads(line)
        print("%.6f %d" % (progress["time"], progress["images"]), flush=True)' >"$out/x$i.progress") &
    copies+=($!)
  done
  pids=("${copies[@]}")
  ready=peer_ready rate_of=peer_rate measure "$n" "$out" "" "${copies[@]}"
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The first job warms the page cache and the model files; it is run and not reported.
warm_full=$warm; warm=1; window_full=$window; window=3
run_job 1 >/dev/null
warm=$warm_full; window=$window_full
results=$work/results
: >"$results"
compare=${SCALING_COMPARE:-}
ns=${SCALING_NS:-$(seq 1 "$max")}
for round in $(seq 1 "$rounds"); do
  if ((round % 2)); then order=$ns; else order=$(tr ' ' '\n' <<<"$ns" | sort -rn); fi
  for n in $order; do
    if [[ $compare == plaintext ]]; then
      # The peer is the same job in plaintext; which of the two goes first alternates by round.
      if ((round % 2)); then
        read -r rate cpu throttled share used < <(run_job "$n")
        read -r peer pcpu pthrottled pshare pused < <(run_job "$n" plaintext)
      else
        read -r peer pcpu pthrottled pshare pused < <(run_job "$n" plaintext)
        read -r rate cpu throttled share used < <(run_job "$n")
      fi
      echo "$n $rate $share $peer $cpu $pcpu $throttled $pthrottled $used $pused $pshare" >>"$results"
      echo "round $round: $n worker(s) CURVE $rate img/s (${cpu} ms CPU/img, head $share%)," \
           "plaintext $peer img/s (${pcpu} ms CPU/img, head $pshare%)" >&2
      continue
    fi
    read -r rate cpu throttled share used < <(run_job "$n")
    read -r peer pcpu pthrottled _ pused < <(run_peer "$n")
    echo "$n $rate $share $peer $cpu $pcpu $throttled $pthrottled $used $pused" >>"$results"
    echo "round $round: $n worker(s) $rate img/s (${cpu} ms CPU/img, ${used}% of the quota used, throttled in ${throttled}% of periods)," \
         "head $share%; without a cluster $peer img/s (${pcpu} ms/img, ${pused}%, ${pthrottled}%)" >&2
  done
done

# column N C: column C of every result for N workers (2 rate, 3 head share, 4 peer rate,
# 5 and 6 CPU ms per image with and without a cluster, 7 and 8 throttled percent, 9 and 10 quota used).
column() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$results"; }

if [[ $compare == plaintext ]]; then
  echo "| workers | quota per worker | CURVE img/s, median of $rounds (range) | plaintext img/s (range) | CURVE / plaintext, median of per-round ratios (range) | head CPU share, CURVE / plaintext | CPU ms/img, CURVE / plaintext |"
  echo "|---|---|---|---|---|---|---|"
  for n in $ns; do
    ratios=$(awk -v n="$n" '$1 == n && $4 > 0 { printf "%.3f\n", $2 / $4 }' "$results")
    echo "| $n | $quota core | $(column "$n" 2 | median) ($(column "$n" 2 | sort -g | head -1)-$(column "$n" 2 | sort -g | tail -1)) |" \
         "$(column "$n" 4 | median) ($(column "$n" 4 | sort -g | head -1)-$(column "$n" 4 | sort -g | tail -1)) |" \
         "$(median <<<"$ratios")x ($(sort -g <<<"$ratios" | head -1)-$(sort -g <<<"$ratios" | tail -1)) |" \
         "$(column "$n" 3 | median)% / $(column "$n" 11 | median)% | $(column "$n" 5 | median) / $(column "$n" 6 | median) |"
  done
  exit 0
fi
single=$(column 1 2 | median)
echo "| workers | quota per worker | aggregate img/s, median of $rounds (range) | vs N x one worker | head CPU share | quota used | CPU ms/img | same N without a cluster, img/s | cluster vs without | without: quota used, CPU ms/img |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in $(seq 1 "$max"); do
  rate=$(column "$n" 2 | median)
  low=$(column "$n" 2 | sort -g | head -1)
  high=$(column "$n" 2 | sort -g | tail -1)
  peer=$(column "$n" 4 | median)
  ratio=$(awk -v r="$rate" -v s="$single" -v n="$n" 'BEGIN { printf "%.3f", r / (s * n) }')
  versus=$(awk -v r="$rate" -v p="$peer" 'BEGIN { printf "%.3f", r / p }')
  echo "| $n | $quota core | $rate ($low-$high) | ${ratio}x | $(column "$n" 3 | median)% | $(column "$n" 9 | median)% |" \
       "$(column "$n" 5 | median) | $peer | ${versus}x | $(column "$n" 10 | median)%, $(column "$n" 6 | median) |"
done
