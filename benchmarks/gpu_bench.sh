#!/usr/bin/env bash
# srkit on one CUDA GPU, in under 10 minutes: training-step throughput per precision and memory
# layout (train_step.py), the ESRGAN-shaped step against BasicSR 1.4.2 (vs_basicsr.py), then
# `srkit upscale`'s defaults against spandrel's fp32 forward on the same weights (vs_spandrel.py).
#
#   bash benchmarks/gpu_bench.sh [OUT_DIR]          # from the repository root; OUT_DIR: results
#
# Environment (all optional):
#   PYTHON          Python with torch (CUDA build) and srkit's dependencies   (default: python)
#   BASICSR_PYTHON  Python of a BasicSR 1.4.2 environment (see benchmarks/README.md); when it
#                   cannot import basicsr, the comparison runs srkit fp32 vs srkit default only
#   VGG16           torchvision-layout VGG16 weights (../shared/data/get-vgg16.sh); default:
#                   seeded random weights in both frameworks (same FLOPs, same timing)
#   NB, BATCH       RRDB blocks and batch size (default 23 and 16: ESRGAN's generator and batch)
#   SRKIT_SPANDREL_PATH  folder holding spandrel (pip install --no-deps --target DIR spandrel
#                   einops); without it, spandrel must be importable by $PYTHON, else that step
#                   is skipped
#   COMPILE=1       add torch.compile to srkit's defaults ("srkit best"; ~1-2 minutes more)
#   DRY_RUN=1       run the same commands on the CPU with tiny sizes (checks the script)
#
# Every step writes its markdown table to OUT_DIR/*.md and its JSON next to it; each command has
# its own time limit, so one slow part cannot take the whole budget.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_bench_out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python}
BASICSR_PYTHON=${BASICSR_PYTHON:-/tmp/basicsr-venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    DEVICE=cpu NB=${NB:-1} BATCH=${BATCH:-2} STEPS=1 WARMUP=1 ROUNDS=1 LIMIT=900
    NF=16 PSNR_PRECISIONS="fp32" BEST="" UPSCALE=(--nf 16 --nb 1 --lr-size 32 --rounds 2)
else
    DEVICE=cuda NB=${NB:-23} BATCH=${BATCH:-16} STEPS=10 WARMUP=3 ROUNDS=2 LIMIT=200
    NF=64 PSNR_PRECISIONS="fp32 bf16 fp16" UPSCALE=(--rounds 10 --warmup 3)
    BEST=""  # srkit's defaults: precision and channels_last auto (bf16 + channels_last here)
    "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
        echo "no CUDA device visible to $PYTHON (DRY_RUN=1 checks the script on the CPU)" >&2
        exit 2
    }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
[[ "${COMPILE:-0}" == 1 ]] && BEST="train.compile=true"

run() {  # run LIMIT_SECONDS NAME COMMAND...: a time-limited step; its output goes to OUT/NAME.md
    local limit=$1 name=$2; shift 2
    echo "== $name ($(($(date +%s) - started)) s elapsed)" >&2
    if ! timeout "$limit" "$@" > "$OUT/$name.md" 2> "$OUT/$name.log"; then
        echo "   $name failed or timed out after ${limit}s; see $OUT/$name.log" >&2
        tail -5 "$OUT/$name.log" >&2
    fi
    cat "$OUT/$name.md"
}

# 1. srkit's training step (PSNR recipe: RRDB + L1), per precision, then channels_last.
#    Includes the real DataLoader, so the data-wait fraction is measured here.
run "$LIMIT" train_step "$PYTHON" benchmarks/train_step.py --recipe psnr --nf "$NF" --nb "$NB" \
    --batch "$BATCH" --precision $PSNR_PRECISIONS --steps "$STEPS" --warmup "$WARMUP" \
    --peak-seconds 2 --workers 4 --json "$OUT/train_step.json"
run "$LIMIT" train_step_channels_last "$PYTHON" benchmarks/train_step.py --recipe psnr \
    --nf "$NF" --nb "$NB" --batch "$BATCH" --precision $PSNR_PRECISIONS --steps "$STEPS" \
    --warmup "$WARMUP" --peak-seconds 2 --workers 4 --set train.channels_last=true \
    --json "$OUT/train_step_channels_last.json"

# 2. The ESRGAN-shaped step against BasicSR: srkit fp32 and srkit's defaults (auto).
best_args=()
for setting in $BEST; do best_args+=(--best "$setting"); done
compare=("$PYTHON" benchmarks/vs_basicsr.py --device "$DEVICE" --nf "$NF" --nb "$NB"
         --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --rounds "$ROUNDS"
         --srkit-python "$PYTHON" --basicsr-python "$BASICSR_PYTHON" --vgg16 "${VGG16:-random}"
         "${best_args[@]}" --json "$OUT/vs_basicsr.json")
if ! "$BASICSR_PYTHON" -c 'import sys, torchvision.transforms.functional as f; sys.modules["torchvision.transforms.functional_tensor"] = f; import basicsr' 2>/dev/null; then
    echo "   no BasicSR at $BASICSR_PYTHON: comparing srkit fp32 with srkit default only" >&2
    compare+=(--without-basicsr)
fi
# Two rounds of 3 processes; on an H100 each process is ~20-40 s (start-up, cuDNN autotuning).
run $((LIMIT * 2)) vs_basicsr "${compare[@]}"

# 3. srkit upscale (defaults: precision/channels_last/tile/tile batch auto) against spandrel's
#    fp32 forward, RRDB x4 nf64 nb23 at LR 128 (issue 17's 2.5x bar); fails below 45 dB PSNR.
if "$PYTHON" -c 'import sys; sys.path.insert(0, "benchmarks"); from _spandrel import spandrel_available; sys.exit(0 if spandrel_available() else 1)'; then
    run "$LIMIT" vs_spandrel "$PYTHON" benchmarks/vs_spandrel.py --device "$DEVICE" \
        "${UPSCALE[@]}" --json "$OUT/vs_spandrel.json"
else
    echo "   no spandrel for $PYTHON (set SRKIT_SPANDREL_PATH): vs_spandrel skipped" >&2
fi

echo "== done in $(($(date +%s) - started)) s; results in $OUT/" >&2
