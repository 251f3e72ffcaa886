#!/usr/bin/env bash
# Retakes the README's screenshots of the web console (search, detail, busy lamp field) with the
# built-in demo company, in headless Chromium, through the browser test `screenshots`.
# Needs Debian's chromium and chromium-driver (./test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
SCREENSHOT_DIR="$PWD/docs/screenshots" cargo test --locked --test integration browser::screenshots -- --nocapture
