#!/usr/bin/env bash
# Builds the FrameFuzz libFuzzer harness (libFuzzer + AddressSanitizer) and fuzzes
# FrameCodec.decode for a bounded time, seeded with the valid vectors in Protocols/vectors.
#
#   Protocols/fuzz.sh                 # 60 s
#   Protocols/fuzz.sh 600             # 10 min
#   Protocols/fuzz.sh 60 -jobs=2      # extra arguments go to libFuzzer
#   PACKAGE_PATH=/elsewhere Protocols/fuzz.sh   # a package that declares the FrameFuzz target
#
# Exit status is libFuzzer's: 0 when no input crashed; otherwise the crashing input is in
# $BUILD/fuzz-artifacts/ and replays without sanitizers via `swift run FrameFuzz FILE`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
package="${PACKAGE_PATH:-$(dirname "$here")}"
build="${FUZZ_BUILD_PATH:-$package/.build-fuzz}"
seconds="${1:-60}"
shift || true

# -DFUZZING makes main.swift hand control to LLVMFuzzerRunDriver (SwiftPM on Linux links `main`
# to the target's own entry point, so libFuzzer's main cannot be used directly).
swift build --package-path "$package" --build-path "$build" -c debug --product FrameFuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING

corpus="$build/fuzz-corpus"
seeds="$build/fuzz-seeds"
artifacts="$build/fuzz-artifacts"
mkdir -p "$corpus" "$seeds" "$artifacts"
# Seeds: every vector, valid and invalid, as binary (the invalid ones reach the error paths).
python3 - "$here/vectors" "$seeds" <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    if name.endswith(".hex"):
        text = "".join(line.split("#", 1)[0] for line in open(os.path.join(src, name)))
        with open(os.path.join(dst, name[:-4] + ".bin"), "wb") as f:
            f.write(bytes.fromhex(re.sub(r"\s+", "", text)))
PY

exec "$build/debug/FrameFuzz" "$corpus" "$seeds" \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$@"
