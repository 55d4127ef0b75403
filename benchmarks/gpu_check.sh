#!/usr/bin/env bash
# Every GPU check in one go, on a machine with one CUDA GPU and no internet:
#   the default job on CUDA, recipes/cifar10-gpu.yaml (bf16, channels_last; then fp16 with grad
#   scaling, then torch.compile), recipes/shakespeare-char-gpu.yaml, and the accuracy / loss
#   curves of the CPU recipes computed on the GPU (see benchmarks/gpu_check.py for the list);
#   then issue 16's insight checks on the GPU against the CPU (benchmarks/probe_gpu.py,
#   explain_gpu.py, attack_gpu.py, and gpu.py's energy part: NVML against the library's meter),
#   each skipped with its reason when its data or Captum is missing.
# Runs from the repository root without installing (PYTHONPATH=src): the device image has torch,
# numpy, pyyaml, safetensors, rich, scikit-learn, pillow and matplotlib.
#   bash benchmarks/gpu_check.sh [DATA_ROOT]
# DATA_ROOT (default .gpu-data, git-ignored) holds cifar10/, tinyshakespeare/, housing/ and
# movie-reviews/; make it with
#   mkdir -p .gpu-data && cp -r <data>/{cifar10,tinyshakespeare,housing,movie-reviews} .gpu-data/
# and carry it to the GPU machine (64 MB of the 64 MiB a checkout may carry). The insight checks
# want mnist/ instead (and cifar10/ for the CIFAR-10 probe) and Captum, which the device lacks:
#   mkdir -p .gpu-insight && cp -r <data>/mnist .gpu-insight/
#   pip download --no-deps -d .gpu-insight/wheels captum==0.9.0
#   bash benchmarks/gpu_check.sh .gpu-insight insight      # carry .gpu-insight (13 MB)
# `insight` (or `deploy`: issue 19's report check, benchmarks/report_gpu.py; `step`: issue 14's
# check that a classification step's metric sums do not sync, benchmarks/stats_sync_gpu.py) as the
# only names run just those groups; no names run everything.
set -uo pipefail
DATA=${1:-.gpu-data}
export OUT=${OUT:-/tmp/layerwise-gpu}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# after DATA: job names of gpu_check.py (gpu_check.py --list), or the groups `insight`, `deploy`, `step`
JOBS=() SETS=()
for a in "${@:2}"; do
  case "$a" in insight|deploy|step) SETS+=("$a") ;; *) JOBS+=("$a") ;; esac
done
ALL=$(( $# <= 1 ))
: >"$OUT/stderr.txt"; : >"$OUT/stdout.txt"
if [ "$ALL" = 1 ] || [ "${#JOBS[@]}" -gt 0 ]; then
  python3 benchmarks/gpu_check.py --data-root "$DATA" ${JOBS[@]+--only "${JOBS[@]}"} 2>>"$OUT/stderr.txt" | tee -a "$OUT/stdout.txt"
fi
if [ "$ALL" = 1 ] || [[ " ${SETS[*]-} " == *" insight "* ]]; then
  if ! python3 -c "import captum" 2>/dev/null && ls "$DATA"/wheels/captum-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-deps --target "$OUT/pkgs" "$DATA"/wheels/captum-*.whl \
      && export PYTHONPATH=$PYTHONPATH:$OUT/pkgs
  fi
  python3 benchmarks/gpu.py --only energy --out "$OUT/gpu_energy.json" 2>>"$OUT/stderr.txt" | tee -a "$OUT/stdout.txt"
  python3 benchmarks/probe_gpu.py --data-root "$DATA" --out "$OUT/probe_gpu.jsonl" 2>>"$OUT/stderr.txt" | tee -a "$OUT/stdout.txt"
  if python3 -c "import captum" 2>/dev/null; then
    python3 benchmarks/explain_gpu.py --data-root "$DATA" --out "$OUT/explain_gpu.json" 2>>"$OUT/stderr.txt" | tee -a "$OUT/stdout.txt"
  else
    echo '{"check": "explain_gpu", "skipped": "Captum is not installed and no wheels/captum-*.whl under the data root"}' | tee -a "$OUT/stdout.txt"
  fi
  python3 benchmarks/attack_gpu.py --data-root "$DATA" --out "$OUT/attack_gpu.json" 2>>"$OUT/stderr.txt" | tee -a "$OUT/stdout.txt"
fi
# issue 14: the classification step's metric sums make no host sync on CUDA and equal the CPU's
if [ "$ALL" = 1 ] || [[ " ${SETS[*]-} " == *" step "* ]]; then
  python3 benchmarks/stats_sync_gpu.py --out "$OUT/stats_sync_gpu.json" 2>>"$OUT/stderr.txt" | tee -a "$OUT/stdout.txt"
fi
# issue 19: the end-of-run report of a CUDA run against the same report written on the CPU
if [ "$ALL" = 1 ] || [[ " ${SETS[*]-} " == *" deploy "* ]]; then
  python3 benchmarks/report_gpu.py --out "$OUT/report_gpu.json" 2>>"$OUT/stderr.txt" | tee -a "$OUT/stdout.txt"
fi
