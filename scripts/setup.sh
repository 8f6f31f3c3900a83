#!/usr/bin/env bash
# One-time set-up on a fresh machine: Mosquitto (Debian package) and a virtualenv with
# wardlink and its test tools. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing="$missing mosquitto"   # the broker every test and the demo start privately
fi
if ! command -v fusermount >/dev/null 2>&1; then
    missing="$missing fuse"        # the power-loss tests mount a lazy FUSE file system
fi
if ! command -v dbus-daemon >/dev/null 2>&1; then
    missing="$missing dbus-daemon" # a private bus for the fake BlueZ (python-dbusmock) tests
fi
# python-dbusmock's dbus-python is built from source by pip: it needs these headers.
for pkg in pkg-config libdbus-1-dev libglib2.0-dev; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.wardlink-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
