#!/usr/bin/env bash
# The test command: installs what the tests need (apt, PyPI, models, data, onnxruntime goldens),
# then runs the whole Swift test suite. CI runs exactly this (.ci/run).
#
#   bash Ops/test.sh          the full suite (CI's default)
#   bash Ops/test.sh --fast   the unit and simulation tiers only, after a build: no setup, a 100-seed
#                             simulator campaign, and none of the suites that run real role processes
#                             (ClusterTests, launches over netns/ssh, Slurm), whole extractions or
#                             trainings through the real backbone (ExtractionTests, TrainingTests),
#                             child-process memory checks (LargeImageTests), onnxruntime round trips
#                             (ONNXClassifierExporterTests) or the model zoo (ZooTests)
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
case "${1:-}" in
  --fast) fast=1 ;;
  "") ;;
  *) echo "usage: bash Ops/test.sh [--fast]" >&2; exit 2 ;;
esac
if [[ $fast == 0 ]]; then bash Ops/setup.sh --goldens; fi
swift build --build-tests
# The cluster simulator's campaign (PROTOCOL.md §8.6): 10,000 seeded fault schedules through the real
# sessions, journal, ledger and store, in a release build (a debug build is ~20x slower). A violation
# prints the line that replays its seed and fails the run.
swift build -c release --product featstream-sim
if [[ $fast == 1 ]]; then seeds=${FEATSTREAM_SIM_SEEDS:-100}; else seeds=${FEATSTREAM_SIM_SEEDS:-10000}; fi
.build/release/featstream-sim --seeds "$seeds"
# The fast tiers leave out the end-to-end suites (see the usage above).
skips=()
if [[ $fast == 1 ]]; then
  for suite in ClusterTests LaunchTests.LaunchClusterTests LaunchTests.LaunchHardeningTests LaunchTests.SlurmSingleNodeTests \
               BackboneTests.ZooTests ExtractionTests TrainingTests ImageInputTests.LargeImageTests \
               HeadExportTests.ONNXClassifierExporterTests; do
    skips+=(--skip "$suite")
  done
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift test --skip-build --disable-swift-testing "${skips[@]}" 2>&1 | tee "$log"
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
