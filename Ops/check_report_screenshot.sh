#!/usr/bin/env bash
# Renders an HTML report in headless Chromium and saves a screenshot, so a person (or a test) can
# check that the report draws as intended without a desktop.
#
#   Ops/check_report_screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]   (default 1200x2000)
#
# Exit status: 0 screenshot written, 2 usage error, 3 no Chromium (apt-get install -y chromium),
# 4 Chromium ran but wrote no PNG.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
fi
report="$1"
out="$2"
size="${3:-1200x2000}"
if [ ! -f "$report" ]; then
  echo "$0: no such report: $report" >&2
  exit 2
fi
if ! [[ "$size" =~ ^([0-9]+)x([0-9]+)$ ]]; then
  echo "$0: size must look like 1200x2000, got $size" >&2
  exit 2
fi
width="${BASH_REMATCH[1]}"
height="${BASH_REMATCH[2]}"

browser=""
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then
    browser="$(command -v "$candidate")"
    break
  fi
done
if [ -z "$browser" ]; then
  echo "$0: no Chromium found; install it with: apt-get install -y chromium" >&2
  exit 3
fi

report_url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# A throwaway profile keeps runs independent of each other and of any user profile.
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
rm -f "$out_abs"

# --no-sandbox: Chromium refuses to start as root otherwise, and CI runs as root.
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$profile" --no-first-run --disable-extensions \
  --force-device-scale-factor=1 --window-size="$width,$height" \
  --screenshot="$out_abs" "$report_url" >"$profile/chromium.log" 2>&1 || {
  echo "$0: chromium failed:" >&2
  tail -n 20 "$profile/chromium.log" >&2
  exit 4
}
if [ ! -s "$out_abs" ]; then
  echo "$0: chromium wrote no screenshot to $out_abs" >&2
  tail -n 20 "$profile/chromium.log" >&2
  exit 4
fi
echo "$out_abs"
