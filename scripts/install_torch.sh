#!/usr/bin/env bash
# Install torch into PYTHON's environment unless it already has one (then it is kept):
#   bash scripts/install_torch.sh [PYTHON]
# On Linux a plain "pip install torch" from the public index is the multi-GB CUDA build. So:
#   LGGSEG_TORCH_INDEX=URL   that index (LGGSEG_TORCH_INDEX=default: pip's configured index)
#   nvidia-smi present       pip's configured index (the CUDA build on Linux)
#   no NVIDIA GPU, Linux     PyTorch's CPU index when it answers within 3 s, else pip's index
#   macOS, Windows           pip's configured index (its torch is the CPU/MPS build)
set -euo pipefail
PY=${1:-python3}
TORCH_SPEC="torch==${LGGSEG_TORCH_VERSION:-2.13.0}"
CPU_INDEX=https://download.pytorch.org/whl/cpu

if have=$("$PY" -c "from importlib.metadata import version; print(version('torch'))" 2>/dev/null); then
    echo "torch: $have already installed, kept"
    exit 0
fi

answers() {  # does this index answer within 3 seconds?
    if command -v curl >/dev/null; then
        [ "$(curl -s -m 3 -o /dev/null -w '%{http_code}' "$1")" = 200 ]
    else
        timeout 4 "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)" "$1" 2>/dev/null
    fi
}

index=""
if [ -n "${LGGSEG_TORCH_INDEX:-}" ]; then
    [ "$LGGSEG_TORCH_INDEX" = default ] || index=$LGGSEG_TORCH_INDEX
    why="LGGSEG_TORCH_INDEX=$LGGSEG_TORCH_INDEX"
elif [ "$(uname -s)" != Linux ]; then
    why="$(uname -s): the public index's torch has no CUDA libraries"
elif command -v nvidia-smi >/dev/null; then
    why="nvidia-smi found: the CUDA build"
elif answers "$CPU_INDEX/torch/"; then
    index=$CPU_INDEX
    why="no NVIDIA GPU: the CPU build"
else
    why="no NVIDIA GPU, but $CPU_INDEX did not answer within 3 s; on Linux the public index may give the large CUDA build (set LGGSEG_TORCH_INDEX to choose)"
fi
default_index="pip's configured index"
echo "torch: installing $TORCH_SPEC from ${index:-$default_index} ($why)"
if [ -n "$index" ]; then
    "$PY" -m pip install "$TORCH_SPEC" --index-url "$index"
else
    "$PY" -m pip install "$TORCH_SPEC"
fi
