#!/usr/bin/env bash
# The demo: napari with the synthetic sample patient and both widgets docked.
#   bash scripts/demo.sh                 # the sample
#   bash scripts/demo.sh PATIENT_FOLDER  # a patient folder, one slice, corrections folder or kaggle_3m root
# Without a display (a server, a container) it says what is missing instead of letting Qt abort;
# xvfb-run -a bash scripts/demo.sh runs it on a virtual display.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
if ! problem=$(.venv/bin/python scripts/_display.py 2>&1); then
    echo "demo.sh: napari cannot open its window here: $problem" >&2
    echo "demo.sh: on a machine without a screen, run it on a virtual display:" \
        "xvfb-run -a bash scripts/demo.sh;" \
        "for a screenshot of the window: xvfb-run -a .venv/bin/python scripts/screenshot.py --widgets --out demo.png" >&2
    exit 1
fi
exec .venv/bin/python -m napari_lggseg.demo "$@"
