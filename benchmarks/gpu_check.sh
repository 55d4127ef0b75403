#!/usr/bin/env bash
# Every GPU check in one go, on a machine with one CUDA GPU and no internet:
#   the default job on CUDA, recipes/cifar10-gpu.yaml (bf16, channels_last; then fp16 with grad
#   scaling, then torch.compile), recipes/shakespeare-char-gpu.yaml, and the accuracy / loss
#   curves of the CPU recipes computed on the GPU (see benchmarks/gpu_check.py for the list).
# Runs from the repository root without installing (PYTHONPATH=src): the device image has torch,
# numpy, pyyaml, safetensors, rich, scikit-learn, pillow and matplotlib.
#   bash benchmarks/gpu_check.sh [DATA_ROOT]
# DATA_ROOT (default .gpu-data, git-ignored) holds cifar10/, tinyshakespeare/, housing/ and
# movie-reviews/; make it with
#   mkdir -p .gpu-data && cp -r <data>/{cifar10,tinyshakespeare,housing,movie-reviews} .gpu-data/
# and carry it to the GPU machine (64 MB of the 64 MiB a checkout may carry).
set -uo pipefail
DATA=${1:-.gpu-data}
export OUT=${OUT:-/tmp/layerwise-gpu}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 benchmarks/gpu_check.py --data-root "$DATA" "${@:2}" 2>"$OUT/stderr.txt" | tee "$OUT/stdout.txt"
