#!/usr/bin/env bash
# The demo command: installs everything, builds featstream in release mode and extracts
# EfficientNet-Lite0 features from the bundled Fashion-MNIST demo subset (1000 train + 200 val
# images). Pass --full for all 70,000 images. Output: .featstream/demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Ops/setup.sh
swift build -c release --product featstream
data=.featstream/data/fashion-mnist-demo/imagefolder
[[ "${1:-}" == "--full" ]] && data=.featstream/data/fashion-mnist/imagefolder
.build/release/featstream extract --model .featstream/models/efficientnet-lite0 --data "$data" \
  --out .featstream/demo-out --dtype f16
