# Sourced by test.sh and demo.sh: create or reuse .venv, install torch (scripts/install_torch.sh
# chooses the CPU or CUDA build and keeps one already there), then the plugin with its testing
# extra. The install is skipped while pyproject.toml is unchanged since the last one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
VPY=.venv/bin/python
bash scripts/install_torch.sh "$VPY"
stamp=.venv/.lggseg-installed
want="$(sha256sum pyproject.toml | cut -c1-64)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$VPY" -c "import napari_lggseg" 2>/dev/null; then
    "$VPY" -m pip install -q -e ".[testing]"
    echo "$want" >"$stamp"
fi
