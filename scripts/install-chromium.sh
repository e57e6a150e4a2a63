#!/usr/bin/env bash
# Installs Debian's chromium package for the dashboard's browser test
# (integration/dashboard_test.go) when no chromium is on PATH. Safe to run
# again: it installs nothing that is there. Prints the browser's path.
set -euo pipefail
find_chromium() {
  command -v chromium || command -v chromium-browser || true
}
bin=$(find_chromium)
if [[ -z $bin ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-chromium: chromium is missing; run as root or install Debian's chromium package" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  bin=$(find_chromium)
  if [[ -z $bin ]]; then
    echo "install-chromium: chromium installed but not on PATH" >&2
    exit 1
  fi
fi
echo "$bin"
