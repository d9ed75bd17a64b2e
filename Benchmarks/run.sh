#!/usr/bin/env bash
# Every single-host benchmark from one run, printed as tables of ratios against the peers:
# backbone-only img/s vs onnxruntime (2 threads, batch 16 and 1), decode+preprocess vs Pillow.
# Usage: bash Benchmarks/run.sh   (after Ops/setup.sh; builds featstream in release mode)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product featstream >/dev/null
bin=.build/release/featstream
echo "## Backbone only: featstream (oneDNN) vs onnxruntime"
python3 Benchmarks/backbone_vs_ort.py --featstream "$bin" "$@"
echo
echo "## Decode + resize 256 + crop 224, one thread: featstream vs Pillow"
echo "### 20 ImageNet JPEGs (foolbox samples)"
python3 Benchmarks/decode_vs_pillow.py --swift "$bin bench decode" .featstream/data/imagenet-samples/*.jpg
echo "### Per format: the ImageNet JPEGs re-encoded as PNG, WebP, GIF, BMP and TIFF; exact and fast"
python3 Benchmarks/decode_vs_pillow.py --formats --swift "$bin bench decode"
echo "### 200 Fashion-MNIST PNGs"
python3 Benchmarks/decode_vs_pillow.py --swift "$bin bench decode" $(ls .featstream/data/fashion-mnist-demo/imagefolder/val/*/*.png | head -200)
echo
echo "## The cluster: worker end-to-end, head ingest, codecs, wire bytes"
python3 Benchmarks/cluster_bench.py --featstream "$bin"
