#!/usr/bin/env bash
# The test command: bash scripts/test.sh [pytest arguments]
# 1. Where it may (root, or sudo without a password) it installs the Debian packages a napari
#    window needs under Xvfb (scripts/debian-packages.txt) when some are missing.
# 2. .venv with torch and the plugin (scripts/_venv.sh).
# 3. pytest. Whether the viewer tests (tests/_qt/) run is decided by scripts/_display.py from
#    whether a window really opens (Xvfb on PATH, started by pytest-xvfb, or a usable DISPLAY),
#    never from step 1: without one they are reported as skipped, with one line saying what to
#    install, and the exit status is pytest's. Tests needing ../shared/lgg/kaggle_3m skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."

install_debian_packages() {
    command -v dpkg-query >/dev/null && command -v apt-get >/dev/null || return 0
    [ "${LGGSEG_NO_APT:-0}" = 1 ] && return 0
    local missing=() pkg sudo=()
    for pkg in $(cat scripts/debian-packages.txt); do
        dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        sudo -n true 2>/dev/null || { echo "test.sh: missing Debian packages (no root, no passwordless sudo): ${missing[*]}"; return 0; }
        sudo=(sudo -n)
    fi
    echo "test.sh: installing Debian packages for the viewer tests: ${missing[*]}"
    { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
        echo "test.sh: apt-get failed; carrying on (the viewer tests run only if a display opens)"
}

install_debian_packages
source scripts/_venv.sh
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m pytest -p _display "$@"
