#!/usr/bin/env bash
# Every GPU check of the foundation in one short script, for a machine with a CUDA GPU:
#   1. the default job with the device chosen automatically (-> cuda)
#   2. MNIST MLP with fp16 autocast + gradient scaling, 2 epochs
#   3. the same in bf16
#   4. the same in bf16 with torch.compile
#   5. resnet20 on MNIST, bf16 + channels_last, 1 epoch (conv throughput)
#   6. the loader benchmark on CUDA, then the unit tests
# Runs from the repository root without installing (PYTHONPATH=src), so it works offline where
# torch, numpy, pyyaml, safetensors, rich, scikit-learn, pillow and matplotlib are present.
#   bash benchmarks/gpu_check.sh [DATA_ROOT]   (DATA_ROOT holds mnist/mnist_{train,test}.npz;
#   default .gpu-data, a git-ignored copy made with: mkdir -p .gpu-data && cp -r ../shared/data/mnist .gpu-data/)
set -uo pipefail
DATA=${1:-.gpu-data}
OUT=${OUT:-/tmp/layerwise-gpu}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
common=(--run.root="$OUT/runs" --run.plots=false --quiet)
run() {
  echo "== layerwise train $*"
  local t0=$SECONDS
  python3 -m layerwise train "$@" "${common[@]}" | grep -E "test_accuracy|train_seconds|examples_seen|device|precision"
  echo "rc=${PIPESTATUS[0]} wall $((SECONDS - t0)) s"
}
run
run recipes/mnist-mlp.yaml --data.root="$DATA" --train.precision=fp16 --train.epochs=2
run recipes/mnist-mlp.yaml --data.root="$DATA" --train.precision=bf16 --train.epochs=2
run recipes/mnist-mlp.yaml --data.root="$DATA" --train.precision=bf16 --train.compile=true --train.epochs=2
run --model.name=resnet20 --data.name=mnist --data.root="$DATA" --train.precision=bf16 \
    --train.channels_last=true --train.epochs=1 --data.batch_size=512 --optim.lr=0.004
python3 benchmarks/loader_throughput.py --device cuda
python3 -m pytest -q -p no:cacheprovider tests/unit 2>&1 | tail -3
