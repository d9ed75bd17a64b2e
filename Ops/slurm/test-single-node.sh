#!/usr/bin/env bash
# Tests Ops/slurm/featstream.sbatch on a single-node Slurm cluster started by hand on this host:
# munged, slurmctld and slurmd run in the foreground as children of this script, with a slurm.conf
# made from Ops/slurm/slurm-single-node.conf, and every socket, spool dir, log and pid file in a
# private temp folder (SLURM_CONF points there; /etc/slurm is not touched). Needs root and
# `apt-get install --no-install-recommends slurm-wlm munge` (Ops/setup.sh); PID 1 need not be systemd.
#
#   1. A full job: 2 worker tasks on a small subset; the store must hold every item exactly once.
#   2. (RESUME=1, the default) a job whose batch script gets SIGTERM once a shard is committed
#      (scancel --batch --signal=TERM): it must stop without finishing; the same job submitted again
#      with the same OUT must resume from the journal and end with every item stored exactly once.
#
# Usage: bash Ops/slurm/test-single-node.sh
# Environment: FEATSTREAM (binary; default .build/debug/featstream), FEATSTREAM_HOME, ITEMS (images of
# the full job, default 192), RESUME_ITEMS (of the interrupted job, 384), SHARD_SIZE (16), RESUME=0 (skip
# step 2), JOB_SECONDS (bound on each job, default 150), KEEP_STATE=1 (keep the temp folder).
# Progress is read from `featstream status --json` (the coordinator's metrics on this host) and from
# `featstream store inspect --json`, never from the roles' log wording.
# Prints "slurm-test: PASS" and exits 0, or "slurm-test: FAIL: <reason>" and the daemon and job log
# tails, and exits 1 (the temp folder is then kept for a look).
# Everything it starts (daemons, jobs) is stopped on exit, also on failure or Ctrl-C.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HOME_DIR="${FEATSTREAM_HOME:-$REPO/.featstream}"
FEATSTREAM="${FEATSTREAM:-$REPO/.build/debug/featstream}"
DATA="${DATA:-$HOME_DIR/data/fashion-mnist-demo/imagefolder}"
MODEL="${MODEL:-$HOME_DIR/models/efficientnet-lite0}"
ITEMS="${ITEMS:-192}"                 # first 192 train images: classes 0 and 1 (the head needs two)
RESUME_ITEMS="${RESUME_ITEMS:-384}"   # the interrupted job: long enough to stop it half-way
SHARD_SIZE="${SHARD_SIZE:-16}"
RESUME="${RESUME:-1}"
JOB_SECONDS="${JOB_SECONDS:-150}"
KEEP_STATE="${KEEP_STATE:-0}"
SBATCH_SCRIPT="$REPO/Ops/slurm/featstream.sbatch"

log() { printf 'slurm-test: %s\n' "$*"; }
STATE=""
FAILED=0
fail() {
  printf 'slurm-test: FAIL: %s\n' "$*" >&2
  FAILED=1
  exit 1
}
# A command that fails outside fail() (set -e) still gets a reason printed.
LAST_ERR=""
trap 'LAST_ERR="line $LINENO: $BASH_COMMAND"' ERR

# --- preconditions ----------------------------------------------------------
[ "$(id -u)" -eq 0 ] || fail "needs root (slurmd and slurmctld run as SlurmUser=root)"
for c in munged slurmctld slurmd sbatch squeue scontrol sinfo scancel python3 setpriv; do
  command -v "$c" >/dev/null || fail "$c not found; run Ops/setup.sh (apt-get install slurm-wlm munge)"
done
[ -x "$FEATSTREAM" ] || fail "no featstream binary at $FEATSTREAM (swift build, or set FEATSTREAM)"
FEATSTREAM="$(cd "$(dirname "$FEATSTREAM")" && pwd)/$(basename "$FEATSTREAM")"
[ -d "$DATA" ] || fail "no dataset at $DATA; run Ops/setup.sh"
[ -d "$MODEL" ] || fail "no model at $MODEL; run Ops/setup.sh"
[ -r /etc/munge/munge.key ] || fail "no /etc/munge/munge.key (the munge package's postinst writes it)"

HOST="$(hostname -s)"
CPUS="$(nproc)"
STATE="$(mktemp -d /tmp/featstream-slurm.XXXXXX)"
chmod 755 "$STATE"   # munged runs as user munge and needs to reach its folder
mkdir -p "$STATE"/{ctld,slurmd,log,run,jobs} "$STATE/munge"
chown munge:munge "$STATE/munge"
chmod 755 "$STATE/munge"   # munged: the socket folder must be searchable by all, writable only by munge
export SLURM_CONF="$STATE/slurm.conf"
# Any inherited SLURM_* (from an outer allocation) would confuse the clients.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(SLURM_[A-Z_]*\)=.*/\1/p' | grep -vx SLURM_CONF || true)

free_ports() {  # N distinct free TCP ports on this host
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r CTLD_PORT SLURMD_PORT COORD_PORT HEAD_PORT METRICS_PORT < <(free_ports 5)

# --- teardown ---------------------------------------------------------------
DAEMON_PIDS=()
JOB_IDS=()
# Descendants of pid $1 (children first found, then theirs), from /proc.
descendants() {
  local -a queue=("$1") out=()
  local p c
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}; queue=("${queue[@]:1}")
    for c in $(awk -v p="$p" '$4 == p {print $1}' /proc/[0-9]*/stat 2>/dev/null); do out+=("$c"); queue+=("$c"); done
  done
  echo "${out[@]:-}"
}
# slurmstepd daemonizes away from slurmd, so its processes are found by our job ids.
stepd_pids() {
  local id pid
  for id in "${JOB_IDS[@]:-}"; do
    [ -n "$id" ] || continue
    for pid in /proc/[0-9]*; do
      { tr '\0' ' ' < "$pid/cmdline"; } 2>/dev/null | grep -q "^slurmstepd: \[$id[].]" && echo "${pid#/proc/}"
    done
  done
  return 0
}
wait_gone() {  # wait up to $1 s for the pids that follow to exit
  local limit=$1 p alive; shift
  for _ in $(seq 1 $((limit * 5))); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.2
  done
  return 1
}
print_logs() {
  local f
  for f in "$STATE"/log/*.log "$STATE"/munge/munged.log; do
    [ -s "$f" ] || continue
    echo "----- tail of $f" >&2; tail -n 25 "$f" >&2
  done
  for f in "$STATE"/jobs/*.out "$STATE"/jobs/*/*.log "$STATE"/jobs/*/run*/*.log; do
    [ -s "$f" ] || continue
    echo "----- tail of $f" >&2; tail -n 15 "$f" >&2
  done
}
teardown() {
  local rc=$? id pids
  trap - EXIT INT TERM
  set +e
  if [ "$rc" != 0 ] && [ "$FAILED" = 0 ]; then
    printf 'slurm-test: FAIL: exit status %s after a failed command (%s)\n' "$rc" "${LAST_ERR:-unknown}" >&2
  fi
  [ "$rc" != 0 ] && [ -n "$STATE" ] && print_logs
  if [ ${#DAEMON_PIDS[@]} -gt 0 ]; then
    # Jobs first, while slurmctld and slurmd can still end them cleanly.
    for id in "${JOB_IDS[@]:-}"; do [ -n "$id" ] && scancel "$id" 2>/dev/null; done
    for _ in $(seq 1 60); do [ -z "$(squeue --noheader 2>/dev/null)" ] && break; sleep 0.5; done
    pids=$(stepd_pids)
    if [ -n "$pids" ]; then
      for id in $pids; do kill -KILL $(descendants "$id") "$id" 2>/dev/null; done
      log "killed leftover job processes: $pids"
    fi
    # Then the daemons, each with its own children (slurmd forks per request).
    for id in "${DAEMON_PIDS[@]}"; do kill -TERM "$id" 2>/dev/null; done
    if ! wait_gone 15 "${DAEMON_PIDS[@]}"; then
      for id in "${DAEMON_PIDS[@]}"; do kill -KILL $(descendants "$id") "$id" 2>/dev/null; done
      wait_gone 5 "${DAEMON_PIDS[@]}"
    fi
    wait "${DAEMON_PIDS[@]}" 2>/dev/null
  fi
  if [ "$rc" = 0 ] && [ "$KEEP_STATE" != 1 ]; then rm -rf "$STATE"
  elif [ -n "$STATE" ]; then log "state kept in $STATE"; fi
  exit "$rc"
}
trap teardown EXIT
trap 'fail "interrupted"' INT TERM

# --- daemons ----------------------------------------------------------------
# The sample config with this host, its CPUs and every path moved into $STATE.
sed -e "s/HOST/$HOST/g" -e "s/CPUs=[0-9]*/CPUs=$CPUS/" \
    -e "s|^StateSaveLocation=.*|StateSaveLocation=$STATE/ctld|" \
    -e "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=$STATE/slurmd|" \
    -e "s|^SlurmctldPidFile=.*|SlurmctldPidFile=$STATE/run/slurmctld.pid|" \
    -e "s|^SlurmdPidFile=.*|SlurmdPidFile=$STATE/run/slurmd.pid|" \
    -e "s|^SlurmctldLogFile=.*|SlurmctldLogFile=$STATE/log/slurmctld.log|" \
    -e "s|^SlurmdLogFile=.*|SlurmdLogFile=$STATE/log/slurmd.log|" \
    "$REPO/Ops/slurm/slurm-single-node.conf" > "$SLURM_CONF"
grep -q "^NodeName=$HOST CPUs=$CPUS " "$SLURM_CONF" || fail "could not generate $SLURM_CONF from slurm-single-node.conf"
cat >> "$SLURM_CONF" <<EOF
# Added by test-single-node.sh: a private munge socket and free ports.
AuthInfo=socket=$STATE/munge/munge.socket
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
EOF
log "host $HOST, $CPUS CPUs, state in $STATE (SLURM_CONF=$SLURM_CONF)"

# setpriv execs munged in place (runuser would fork), so $! is munged itself.
setpriv --reuid=munge --regid=munge --init-groups munged --foreground --socket="$STATE/munge/munge.socket" \
  --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
  --seed-file="$STATE/munge/munged.seed" >/dev/null 2>&1 &
DAEMON_PIDS+=($!)
for _ in $(seq 1 50); do [ -S "$STATE/munge/munge.socket" ] && break; sleep 0.2; done
[ -S "$STATE/munge/munge.socket" ] || fail "munged did not create its socket in 10 s"

slurmctld -D -f "$SLURM_CONF" > "$STATE/log/slurmctld.stdout" 2>&1 &
DAEMON_PIDS+=($!)
slurmd -D -f "$SLURM_CONF" > "$STATE/log/slurmd.stdout" 2>&1 &
DAEMON_PIDS+=($!)
t0=$SECONDS
state=""
for _ in $(seq 1 120); do
  state=$(sinfo --noheader --nodes="$HOST" --format=%t 2>/dev/null || true)
  [ "$state" = idle ] && break
  for p in "${DAEMON_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || fail "a daemon exited while starting (pid $p)"; done
  sleep 0.5
done
[ "$state" = idle ] || fail "node $HOST not idle after 60 s (state '${state:-none}')"
log "munged, slurmctld, slurmd up; node $HOST idle after $((SECONDS - t0)) s"

# --- jobs -------------------------------------------------------------------
OUT="$STATE/jobs/out"
# Submits featstream.sbatch for OUT=$1 and the first $2 train images on this one node with 2 worker
# tasks; sets JOB to the job id.
submit() {
  local out=$1 items=$2
  JOB=$(OUT="$out" DATA="$DATA" MODEL="$MODEL" FEATSTREAM="$FEATSTREAM" \
        DATASET_ARGS="--split train --limit $items" COORD_PORT="$COORD_PORT" HEAD_PORT="$HEAD_PORT" \
        WORKERS_PER_NODE=2 THREADS_PER_WORKER=1 COORD_ARGS="--shard-size $SHARD_SIZE --heartbeat-ms 250 --metrics-port $METRICS_PORT" \
        WORKER_ARGS="--batch 8" WAIT_SECONDS=60 DRAIN_SECONDS=60 \
        sbatch --parsable --nodes=1 --ntasks-per-node=2 --time=5 --signal=B:TERM@90 \
          --chdir="$STATE/jobs" --output="$STATE/jobs/slurm-%j.out" "$SBATCH_SCRIPT" 2>&1) \
    || fail "sbatch refused the job: $JOB"
  JOB=${JOB%%;*}
  JOB_IDS+=("$JOB")
}
job_field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
# Field $1 (dotted path, e.g. shards.committed; a list prints its names, one per line) of the JSON object
# on stdin's last line: what `status --json` and `store inspect --json` print.
jget() {
  python3 -c '
import json, sys
lines = [l for l in sys.stdin.read().splitlines() if l.startswith("{")]
if not lines: sys.exit(1)
value = json.loads(lines[-1])
for key in sys.argv[1].split("."): value = value[key]
if isinstance(value, list) and value and isinstance(value[0], dict): print("\n".join(w["name"] for w in value))
elif isinstance(value, (list, dict)): print(json.dumps(value))
else: print(value)' "$1"
}
# The running coordinator's status (with the store of OUT=$1), or nothing while it does not answer.
job_status() { "$FEATSTREAM" status "http://127.0.0.1:$METRICS_PORT" --json --store "$1/store" 2>/dev/null || true; }
# Shards committed to the store of OUT=$1 (0 before it exists).
store_shards() { "$FEATSTREAM" store inspect "$1/store" --json 2>/dev/null | jget shards 2>/dev/null || echo 0; }
# Waits up to JOB_SECONDS for job $1 (OUT=$2) to end; sets JOB_STATE and JOB_CODE (ExitCode, "rc:signal").
# Meanwhile every worker its coordinator's status lists is added to $STATE/workers-$1.
wait_job() {
  local id=$1 out=$2 deadline=$((SECONDS + JOB_SECONDS))
  JOB_STATE=""
  touch "$STATE/workers-$id"
  while [ "$SECONDS" -lt "$deadline" ]; do
    JOB_STATE=$(job_field "$id" JobState)
    case "$JOB_STATE" in PENDING|CONFIGURING|RUNNING|COMPLETING|"") ;; *) break ;; esac
    job_status "$out" | jget workers 2>/dev/null >> "$STATE/workers-$id" || true
    sleep 0.5
  done
  case "$JOB_STATE" in
    PENDING|CONFIGURING|RUNNING|COMPLETING|"") fail "job $id still '${JOB_STATE:-unknown}' after $JOB_SECONDS s" ;;
  esac
  JOB_CODE=$(job_field "$id" ExitCode)
}
# Processes of job $1 still alive on this host (found by the SLURM_JOB_ID in their environment).
job_processes() {
  local pid
  for pid in /proc/[0-9]*; do
    { tr '\0' '\n' < "$pid/environ"; } 2>/dev/null | grep -qx "SLURM_JOB_ID=$1" \
      && echo "${pid#/proc/} $({ tr '\0' ' ' < "$pid/cmdline"; } 2>/dev/null)"
  done
  return 0
}
# Every item of the job ($2 items) is in the store of OUT=$1 exactly once: $2 rows, no dead letters, and the
# exported indexes are exactly 0..$2-1 (ImageFolder indexes follow the sorted keys, so train/ comes
# first and `--split train --limit N` is items 0..N-1), none twice.
check_exactly_once() {
  local out=$1 items=$2 inspect
  inspect=$("$FEATSTREAM" store inspect "$out/store" --json) || fail "store inspect failed: $inspect"
  [ "$(jget rows <<<"$inspect") $(jget deadLetters <<<"$inspect")" = "$items 0" ] \
    || fail "store does not hold $items rows and no dead letters: $inspect"
  [ "$(jget problems <<<"$inspect")" = "[]" ] || fail "store inspect reports problems: $inspect"
  rm -rf "$out/export"
  "$FEATSTREAM" export-features --store "$out/store" --out "$out/export" >/dev/null 2>&1 || fail "export-features failed"
  python3 - "$out/export/indexes.npy" "$items" <<'EOF' || fail "exported indexes are not every item exactly once"
import sys
import numpy as np
indexes = np.load(sys.argv[1]).astype(np.int64).ravel()
want = int(sys.argv[2])
unique, counts = np.unique(indexes, return_counts=True)
dup, missing = unique[counts > 1], sorted(set(range(want)) - set(unique.tolist()))
extra = sorted(set(unique.tolist()) - set(range(want)))
if len(indexes) != want or len(dup) or missing or extra:
    print(f"slurm-test: {len(indexes)} rows; duplicated {dup.tolist()[:10]}; missing {missing[:10]}; unexpected {extra[:10]}", file=sys.stderr)
    sys.exit(1)
EOF
  log "exactly once: $items rows, indexes 0..$((items - 1)) each once, no dead letters"
}

# 1. A full job.
shards=$(( (ITEMS + SHARD_SIZE - 1) / SHARD_SIZE ))
t0=$SECONDS
submit "$OUT" "$ITEMS"; id=$JOB
log "job $id submitted: $ITEMS items in $shards shards, 2 worker tasks"
wait_job "$id" "$OUT"
[ "$JOB_STATE $JOB_CODE" = "COMPLETED 0:0" ] || fail "job $id ended $JOB_STATE with exit code $JOB_CODE (expected COMPLETED 0:0)"
grep -q "coordinator exited with 0" "$STATE/jobs/slurm-$id.out" || fail "job $id: the coordinator did not exit 0"
[ "$(store_shards "$OUT")" = "$shards" ] || fail "job $id: the store holds $(store_shards "$OUT") shards, not all $shards"
for t in 0 1; do
  [ -s "$OUT/workers-$t.log" ] || fail "job $id: no log from worker task $t"
  grep -qx "worker-$t@$HOST" "$STATE/workers-$id" \
    || fail "job $id: worker task $t (worker-$t@$HOST) never appeared in the coordinator's status (saw: $(sort -u "$STATE/workers-$id" | tr '\n' ' '))"
done
[ -f "$OUT/model/head.safetensors" ] || fail "job $id: the head wrote no trained model to $OUT/model"
check_exactly_once "$OUT" "$ITEMS"
log "job $id: complete in $((SECONDS - t0)) s (2 worker tasks joined, head trained)"

if [ "$RESUME" = 1 ]; then
  # 2. SIGTERM to the batch script once a shard is committed, then the same job again.
  OUT2="$STATE/jobs/out-resume"
  shards=$(( (RESUME_ITEMS + SHARD_SIZE - 1) / SHARD_SIZE ))
  t0=$SECONDS
  submit "$OUT2" "$RESUME_ITEMS"; id=$JOB
  log "job $id submitted; SIGTERM to its batch script after the first commit"
  committed=""
  deadline=$((SECONDS + JOB_SECONDS))
  while [ "$SECONDS" -lt "$deadline" ]; do
    committed=$(job_status "$OUT2" | jget shards.committed 2>/dev/null || true)
    [ -n "$committed" ] && [ "$committed" -ge 1 ] && break
    st=$(job_field "$id" JobState)
    case "$st" in PENDING|CONFIGURING|RUNNING|"") ;; *) fail "job $id ended ($st) before its first commit" ;; esac
    sleep 0.1
  done
  [ -n "$committed" ] && [ "$committed" -ge 1 ] || fail "job $id: no shard committed within $JOB_SECONDS s"
  scancel --batch --signal=TERM "$id" || fail "scancel --batch --signal=TERM $id failed"
  wait_job "$id" "$OUT2"
  mkdir -p "$OUT2/run1" && cp "$OUT2"/*.log "$STATE/jobs/slurm-$id.out" "$OUT2/run1/"
  grep -q "SIGTERM/SIGINT, stopping" "$STATE/jobs/slurm-$id.out" || fail "job $id: the batch script did not see SIGTERM"
  # What the interrupted job committed: the store (the journal lists the same shards) holds it.
  before=$(store_shards "$OUT2")
  [ "$before" -lt "$shards" ] \
    || fail "job $id finished all $shards shards before SIGTERM took effect; nothing left to resume (make RESUME_ITEMS larger)"
  [ "$JOB_STATE $JOB_CODE" = "FAILED 143:0" ] \
    || fail "job $id ended $JOB_STATE with exit code $JOB_CODE after SIGTERM (expected FAILED 143:0, the script's exit 143)"
  left=$(job_processes "$id")
  [ -z "$left" ] || fail "processes of job $id left after it ended: $left"
  # The batch script's trap signals the worker step's tasks (not srun), so workers finish their shard.
  drained=$(cat "$OUT2"/workers-*.log 2>/dev/null | grep -c "drained after SIGTERM" || true)
  [ "$drained" -ge 1 ] || fail "job $id: no worker logged 'drained after SIGTERM'"
  log "job $id: stopped by SIGTERM ($JOB_STATE, exit code $JOB_CODE) after $((SECONDS - t0)) s; $drained worker(s) drained"
  submit "$OUT2" "$RESUME_ITEMS"; id=$JOB
  log "job $id submitted with the same OUT"
  wait_job "$id" "$OUT2"
  [ "$JOB_STATE $JOB_CODE" = "COMPLETED 0:0" ] || fail "resumed job $id ended $JOB_STATE with exit code $JOB_CODE (expected COMPLETED 0:0)"
  [ "$before" -ge 1 ] || fail "job $id: its store held no shard after the interrupted run, so nothing was resumed"
  [ "$(store_shards "$OUT2")" = "$shards" ] || fail "resumed job $id: the store holds $(store_shards "$OUT2") shards, not all $shards"
  [ -f "$OUT2/model/head.safetensors" ] || fail "resumed job $id: the head wrote no trained model"
  # Every item once: the shards already stored were not stored again.
  check_exactly_once "$OUT2" "$RESUME_ITEMS"
  log "job $id: resumed with $before/$shards shards already stored and completed; $((SECONDS - t0)) s for both"
fi
log "PASS"
