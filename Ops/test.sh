#!/usr/bin/env bash
# The test command: installs what the tests need (apt, PyPI, models, data, onnxruntime goldens),
# then runs the whole Swift test suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash Ops/setup.sh --goldens
swift build --build-tests
swift test --skip-build
