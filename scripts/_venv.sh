# Sourced by test.sh, demo.sh and screenshot.sh: create or reuse .venv and install the plugin.
# torch comes first and pinned: a bare "torch" from PyPI would be a multi-GB CUDA build on Linux.
# For a GPU, install the CUDA build of this torch into .venv before running (see README).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
    "$VPY" -m pip install "torch==2.13.0"
fi
"$VPY" -m pip install -q -e ".[testing]"
