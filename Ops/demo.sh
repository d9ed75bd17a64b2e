#!/usr/bin/env bash
# The demo command: installs everything, builds featstream in release mode, and runs a whole local
# cluster (coordinator, head, 2 workers) over the Fashion-MNIST demo subset (1000 train + 200 val
# images) with EfficientNet-Lite0. Pass --full for all 70,000 images. Output: .featstream/demo-run/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Ops/setup.sh
swift build -c release --product featstream
data=.featstream/data/fashion-mnist-demo/imagefolder
out=.featstream/demo-run
if [[ "${1:-}" == "--full" ]]; then
  data=.featstream/data/fashion-mnist/imagefolder
  out=.featstream/demo-run-full
fi
.build/release/featstream run --model .featstream/models/efficientnet-lite0 --data "$data" --workers 2 --out "$out"
.build/release/featstream store inspect "$out/store"
