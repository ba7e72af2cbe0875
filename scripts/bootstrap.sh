#!/usr/bin/env bash
# Prepare this checkout on Debian 12 / Raspberry Pi OS: Debian packages (when missing, as root or via
# sudo), the virtual environment in .venv, and linli installed into it. Safe to run any number of times:
# each step is skipped when already done.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# What the Python packages need from Debian: compilers and headers (pyscard builds from source with swig
# against libpcsclite, pycups against libcups), pcscd + vpcd (PC/SC, and its simulator), zbar
# (pyzbar), GL/glib (OpenCV), CUPS with the PDF queue (A4 printing and its tests), a CJK font
# (certificates, receipts), poppler (PDF to text/PNG for checks), Mosquitto (the MQTT broker the tests
# start with their own passwords, ACL and TLS), PostgreSQL (the server's production database; tests run a
# private cluster), Chromium (the web pages are tested in a real headless browser driven by Playwright),
# cloud-init (its `cloud-init schema` checks the first-boot user-data provisioning writes).
DEB_PACKAGES=(
  python3 python3-venv python3-dev build-essential pkg-config swig libpcsclite-dev pcscd
  vsmartcard-vpcd libzbar0 libgl1 libglib2.0-0 cups cups-client cups-bsd libcups2-dev
  printer-driver-cups-pdf fonts-wqy-microhei fontconfig poppler-utils mosquitto mosquitto-clients
  postgresql chromium xvfb xauth libgl1-mesa-dri libmtdev1 cloud-init
)

say() { printf '[bootstrap] %s\n' "$*" >&2; }

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then sudo=()
  elif command -v sudo >/dev/null; then sudo=(sudo)
  else
    say "missing Debian packages: ${missing[*]}; run as root or install sudo"; exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  if [[ " ${missing[*]} " == *" cloud-init "* ]]; then
    # Installed here only as the schema checker: it must never configure this machine at boot.
    "${sudo[@]}" mkdir -p /etc/cloud && "${sudo[@]}" touch /etc/cloud/cloud-init.disabled
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  say "creating virtual environment .venv"
  "$python" -m venv .venv
fi

extras="dev"
if grep -qs "Raspberry Pi" /proc/device-tree/model; then extras="dev,pi"; fi

# Reinstall only when the project metadata changed since the last install.
stamp=.venv/.linli-installed
want="$(sha256sum pyproject.toml setup.py | sha256sum | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing linli[$extras] into .venv"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
fi
