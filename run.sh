#!/usr/bin/env bash
# Run the system. With no arguments: a whole virtual site on simulated hardware (Mosquitto, the sync
# server, a kiosk and two lockers, each its own process, playing a resident's and a grid worker's day;
# docs/virtual-site.md). With --config FILE: watch the real peripherals that the device configuration
# names. Other arguments go to `linli sim site` (see ./run.sh --help), e.g. --kiosks 2 --lockers 3.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$repo/scripts/bootstrap.sh"
for arg in "$@"; do
  if [ "$arg" = "--config" ]; then exec "$repo/.venv/bin/linli" watch "$@"; fi
done
exec "$repo/.venv/bin/linli" sim site "$@"
