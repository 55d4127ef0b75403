#!/usr/bin/env bash
# Every GPU check of the foundation in one short script (for the lent device machine):
#   the default job on CUDA, then short fp16 + grad scaling, bf16 and compile runs on MNIST.
# Usage (from the repository root): bash benchmarks/gpu_check.sh [DATA_ROOT]
# DATA_ROOT must hold mnist/mnist_{train,test}.npz (copy them to .gpu-data/ and carry that folder).
set -euo pipefail
DATA=${1:-.gpu-data}
OUT=${OUT:-/tmp/layerwise-gpu}
mkdir -p "$OUT"
pip install -q --no-deps -e . >/dev/null 2>&1 || pip install -q -e .
python - <<'PY'
import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
common="--run.root=$OUT/runs --run.plots=false --quiet"
run() { echo "== $*"; /usr/bin/time -f "wall %es" layerwise train "$@" $common | tail -n +1; }
run                                                   # default job, device auto -> cuda
run recipes/mnist-mlp.yaml --data.root=$DATA --train.precision=fp16 --train.epochs=2
run recipes/mnist-mlp.yaml --data.root=$DATA --train.precision=bf16 --train.epochs=2
run recipes/mnist-mlp.yaml --data.root=$DATA --train.precision=bf16 --train.compile=true --train.epochs=2
run --model.name=resnet20 --data.name=mnist --data.root=$DATA --train.precision=bf16 \
    --train.channels_last=true --train.epochs=1 --data.batch_size=512 --optim.lr=0.4
python -m pytest -q tests/unit 2>&1 | tail -3
