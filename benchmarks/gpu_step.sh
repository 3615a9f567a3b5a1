#!/usr/bin/env bash
# The GPU rows of the training-step benchmark, as one script for a GPU machine.
#
# Usage, from the repository root on a machine with a CUDA build of torch:
#   bash benchmarks/gpu_step.sh OUTPUT_DIR [extra bench_step.py options]
#
# It records the GPU and torch versions. Then it times the pCE and HELPNet steps of both UNets
# in fp32 and bf16 at batch 4, 16 and 32, 224x224, with TFLOP/s against PEAK_TFLOPS. The
# default, 989, is the dense bf16 peak in NVIDIA's datasheet for the H100 and H200 SXM; set it
# for another card. The tables go to OUTPUT_DIR/step_gpu.md, the progress log to
# OUTPUT_DIR/step_gpu.log and every number to OUTPUT_DIR/step_gpu.json. Extra options are passed to benchmarks/bench_step.py and override
# the defaults below, for example `--batch 4` for a quick try. DEVICE (default cuda) picks the device. The helpnet package is read from src/, so
# only torch, numpy, scipy and tqdm need to be installed.
set -euo pipefail

output=${1:?"give an output folder, for example: bash benchmarks/gpu_step.sh /tmp/gpu_bench"}
shift
mkdir -p "$output"
repository=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repository/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
device=${DEVICE:-cuda}

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    fi
    "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
} | tee "$output/machine.txt"

"$python" "$repository/benchmarks/bench_step.py" --device "$device" \
    --networks unet_upstream unet_light --precisions fp32 bf16 --experiments pce helpnet helpnet_batched \
    --batch 4 16 32 --warmup 3 --repeats 10 --peak-tflops "${PEAK_TFLOPS:-989}" \
    --json "$output/step_gpu.json" "$@" 2> >(tee "$output/step_gpu.log" >&2) | tee "$output/step_gpu.md"
