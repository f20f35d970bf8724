#!/usr/bin/env bash
# The report test drives Debian's chromium with playwright-core (no browser
# download: this machine reaches only the npm and Debian registries).
# Installs it when missing and we may (root with apt-get); else says how.
set -euo pipefail
if [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian chromium for the report test"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "chromium is missing: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH" >&2
  exit 1
fi
