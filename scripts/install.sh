#!/usr/bin/env bash
# Set up a virtual environment in .venv with the collection installed (editable).
#   bash scripts/install.sh         # to run bundles
#   bash scripts/install.sh --dev   # plus tests and benchmarks (pytest, fastmri for parity checks)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first, pinned to the CPU build available here: a plain `torch` requirement would pull
# several GB of CUDA packages. On a GPU machine install the matching CUDA build instead.
python -m pip install --quiet "torch==2.13.0"
if [[ "${1:-}" == "--dev" ]]; then
    python -m pip install --quiet -e ".[dev]"
    # fastmri (the peer our metrics and benchmarks compare against) requires torchvision and a
    # newer CUDA torch; we only use its pure-PyTorch modules, so install it without its deps.
    python -m pip install --quiet --no-deps "fastmri==0.3.0"
else
    python -m pip install --quiet -e .
fi
