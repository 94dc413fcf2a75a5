#!/usr/bin/env bash
# Headless Chromium for the explorer page's browser test (crates/cli/tests/explore.rs),
# from Debian's `chromium` package. apt keeps its downloads in /var/cache/apt between
# CI runs. Failures are reported here, not fatal; the test then fails and says how to
# install it (or UAE_SKIP_BROWSER=1 to skip it on purpose).
set -uo pipefail
for b in chromium chromium-browser google-chrome; do
  command -v "$b" >/dev/null 2>&1 && exit 0
done
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "browser-deps: could not install chromium" >&2
else
  echo "browser-deps: no apt-get; install chromium to run the browser test" >&2
fi
