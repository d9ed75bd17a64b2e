#!/usr/bin/env bash
# Makes the CurveZMQ key folder a cluster file's [keys] dir points at:
#   coordinator.{key,pub}  head.{key,pub}  worker.{key,pub}
#   allow-coordinator/  head.pub worker.pub   (clients the coordinator lets in)
#   allow-head/         worker.pub            (clients the head lets in)
# Secret keys are mode 0600. Copy the folder to the same path on every host (workers need only
# worker.key, worker.pub, coordinator.pub and head.pub).
# Usage: Cluster/make-keys.sh DIR [FEATSTREAM-BINARY]
set -euo pipefail
dir=${1:?usage: make-keys.sh DIR [featstream]}
featstream=${2:-featstream}
if [[ -f "$dir/coordinator.key" ]]; then echo "keys: $dir already has keys; leaving them"; exit 0; fi
mkdir -p "$dir/allow-coordinator" "$dir/allow-head"
chmod 700 "$dir"
for name in coordinator head worker; do
  "$featstream" keygen --out "$dir" --name "$name" >/dev/null
done
cp "$dir/head.pub" "$dir/worker.pub" "$dir/allow-coordinator/"
cp "$dir/worker.pub" "$dir/allow-head/"
echo "keys: wrote $dir"
