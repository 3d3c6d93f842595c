#!/usr/bin/env bash
# The demo: napari with the synthetic sample patient and both widgets docked.
#   bash scripts/demo.sh                 # the sample
#   bash scripts/demo.sh PATIENT_FOLDER  # a patient folder, one slice, corrections folder or kaggle_3m root
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m napari_lggseg.demo "$@"
