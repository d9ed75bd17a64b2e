#!/usr/bin/env bash
# The test command: installs what the tests need (apt, PyPI, models, data, onnxruntime goldens),
# then runs the whole Swift test suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash Ops/setup.sh --goldens
swift build --build-tests
# The cluster simulator's campaign (PROTOCOL.md §8.6): 10,000 seeded fault schedules through the real
# sessions, journal, ledger and store, in a release build (a debug build is ~20x slower). A violation
# prints the line that replays its seed and fails the run.
swift build -c release --product featstream-sim
.build/release/featstream-sim --seeds "${FEATSTREAM_SIM_SEEDS:-10000}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift test --skip-build --disable-swift-testing 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# XCTest's last "Executed N tests, with ..." line covers every suite.
summary=$(grep -E "Executed [0-9]+ tests?, with" "$log" | tail -1 || true)
if [[ -n $summary ]]; then
  total=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$summary")
  failed=$(sed -E 's/.* ([0-9]+) failures? .*/\1/' <<<"$summary")
  skipped=0
  grep -qE "[0-9]+ tests? skipped" <<<"$summary" && skipped=$(sed -E 's/.* ([0-9]+) tests? skipped.*/\1/' <<<"$summary")
  echo "$((total - failed - skipped)) passed, $failed failed, $skipped skipped"
fi
exit "$status"
