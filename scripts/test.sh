#!/usr/bin/env bash
# The test command: bash scripts/test.sh [pytest arguments]
# Tests under tests/_qt open real napari viewers under Xvfb (pytest-xvfb); tests that need the
# real data read ../shared/lgg/kaggle_3m and skip when it is absent.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m pytest "$@"
