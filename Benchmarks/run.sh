#!/usr/bin/env bash
# Every single-host benchmark from one run, printed as tables of ratios against the peers:
# backbone-only img/s vs onnxruntime (2 threads, batch 16 and 1), decode+preprocess vs Pillow, and the
# cluster (worker end-to-end vs backbone-only, head ingest, codecs).
# Usage: bash Benchmarks/run.sh [--baseline OTHER-BUILD]   (after Ops/setup.sh; builds featstream in release mode)
#   --baseline  another featstream build (e.g. the previous commit's .build/release/featstream, copied aside),
#               measured in the same rounds as this one: backbone and cluster alternate with it, and the
#               decode tables are run for it too, so every figure has a same-run figure of the other build.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=()
case "${1:-}" in
  --baseline) baseline=(--baseline "$2") ;;
  "") ;;
  *) echo "usage: bash Benchmarks/run.sh [--baseline OTHER-BUILD]" >&2; exit 2 ;;
esac
swift build -c release --product featstream >/dev/null
bin=.build/release/featstream
builds=("$bin")
if [[ ${#baseline[@]} -gt 0 ]]; then builds+=("${baseline[1]}"); fi
echo "## Backbone only: featstream (oneDNN) vs onnxruntime"
python3 Benchmarks/backbone_vs_ort.py --featstream "$bin" "${baseline[@]}"
echo
echo "## Decode + resize 256 + crop 224, one thread: featstream vs Pillow"
for build in "${builds[@]}"; do
  echo "### 20 ImageNet JPEGs (foolbox samples): $build"
  python3 Benchmarks/decode_vs_pillow.py --swift "$build bench decode" .featstream/data/imagenet-samples/*.jpg
  echo "### 200 Fashion-MNIST PNGs: $build"
  python3 Benchmarks/decode_vs_pillow.py --swift "$build bench decode" $(ls .featstream/data/fashion-mnist-demo/imagefolder/val/*/*.png | head -200)
done
echo "### Per format: the ImageNet JPEGs re-encoded as PNG, WebP, GIF, BMP and TIFF; exact and fast"
python3 Benchmarks/decode_vs_pillow.py --formats --swift "$bin bench decode"
echo
echo "## The cluster: worker end-to-end, head ingest, codecs, wire bytes"
python3 Benchmarks/cluster_bench.py --featstream "$bin" "${baseline[@]}"
