#!/usr/bin/env bash
# Render a Snakemake HTML report in headless Chromium and save a screenshot of it.
#
# Usage: bash scripts/check_report.sh [report.html] [report.png]
# Needs Debian's chromium package (apt-get install chromium). The flags keep Chromium off the
# network: a report is a self-contained file and needs none.
set -euo pipefail
report=$(realpath "${1:-report.html}")
screenshot=${2:-report.png}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1400,1000 --virtual-time-budget=15000 \
    --screenshot="$screenshot" "file://$report" 2>/dev/null
echo "screenshot of $report written to $screenshot"
