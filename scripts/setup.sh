#!/usr/bin/env bash
# Create .venv with helpnet, Snakemake and (with --test) the test tools.
#
# torch is installed first and on its own: without it, pip would resolve a plain `torch`
# requirement to the multi-GB CUDA build. Set HELPNET_TORCH_SPEC to choose another build, e.g.
# HELPNET_TORCH_SPEC="torch --index-url <your CUDA wheel index>" on a GPU workstation.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="workflow"
if [[ "${1:-}" == "--test" ]]; then
    extras="workflow,test"
fi

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
    # shellcheck disable=SC2086
    python -m pip install --quiet ${HELPNET_TORCH_SPEC:-torch==2.13.0}
fi
python -m pip install --quiet -e ".[${extras}]"
python -c "import helpnet, torch; print(f'helpnet {helpnet.__version__}, torch {torch.__version__}')"
