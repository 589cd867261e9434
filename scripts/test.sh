#!/usr/bin/env bash
# Run the test suite (arguments go to pytest). The integration tier needs root (Mininet, OVS);
# under CI=true a skipped integration test is a failure. Re-runs itself with sudo when not root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
  exec sudo --preserve-env=CI bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
