#!/usr/bin/env bash
# Run the tests: lint, format check, strict typing, then pytest (with hypothesis). Arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$repo"
scripts/bootstrap.sh
bin=.venv/bin
echo "== ruff check"; "$bin/ruff" check .
echo "== ruff format --check"; "$bin/ruff" format --check .
echo "== mypy --strict"; "$bin/mypy" --strict device hardware_sim linli kiosk_ui locker provisioning sync_server
echo "== pytest"; "$bin/pytest" "$@"
