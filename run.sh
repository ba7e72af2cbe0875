#!/usr/bin/env bash
# Run the system. With no arguments: a virtual site on simulated hardware (the emulated ID-card reader and
# QR scanner on ptys, driven by the real drivers). With --config FILE: watch the real peripherals that the
# device configuration names. Other arguments go to the command (see ./run.sh --help).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$repo/scripts/bootstrap.sh"
for arg in "$@"; do
  if [ "$arg" = "--config" ]; then exec "$repo/.venv/bin/linli" watch "$@"; fi
done
exec "$repo/.venv/bin/linli" sim demo "$@"
