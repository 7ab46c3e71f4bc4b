#!/bin/bash
# Issue 18: why GAN fine-tuning drifted colours, and the recipes after the fix (perceptual 0.01).
#
#   bash benchmarks/loss_balance.sh diagnose   # tuning split: L1 + VGG variants from the 600-step start
#   bash benchmarks/loss_balance.sh recipe     # tuning split: esrgan_x4 from the 1500-step start
#   bash benchmarks/loss_balance.sh report     # REPORT split: the PSNR start and the GAN checkpoints
#
# Needs W/dataset from `srkit prepare` with its tuning and report splits (see the header of
# benchmarks/stability_tuning.sh), W/runs/rrdb_psnr_x4/checkpoints/step_00000600 from that
# script, and the VGG16 / LPIPS files of ../shared/data/get-vgg16.sh (VGG16=..., LPIPS_LIN=...).
# One thread, niced; each run writes W/balance/<name> (metrics.jsonl has every validation).
set -euo pipefail
W=${W:-/tmp/q18b}
VGG16=${VGG16:-/work/cache/vgg16.pth}
LPIPS_LIN=${LPIPS_LIN:-$VGG16.lpips-lin.pth}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src
PY="nice -n 10 ${PYTHON:-python}"
LAYERS="{conv1_2: 0.1, conv2_2: 0.1, conv3_3: 1.0, conv4_3: 1.0, conv5_3: 1.0}"
COMMON=(--set output_dir=$W/balance --set logging.progress_bar=false --set data.train.workers=0
        --set data.train.hr=$W/dataset/train/hr --set data.train.lr=$W/dataset/train/lr_x4
        --set data.val.hr=$W/dataset/heldout_tuning/hr --set data.val.lr=$W/dataset/heldout_tuning/lr_x4
        --set "data.val.lpips={lin: $LPIPS_LIN, vgg: $VGG16}" --set logging.print_every=10
        --set logging.validate_at_start=true --set logging.image_every=1000)

# train NAME STEPS VAL_EVERY START CONFIG [--set ...]: one run of a shipped config
train() {
    local name=$1 steps=$2 every=$3 start=$4 config=$5; shift 5
    $PY -m srkit train "configs/$config.yml" "${COMMON[@]}" --set name="$name" \
        --set networks.generator.init="$start" --set train.iterations="$steps" \
        --set logging.val_every="$every" --set logging.checkpoint_every="$steps" "$@" --resume auto
}

# l1_vgg NAME PIXEL_WEIGHT LR [LAYERS]: the generator alone under L1 + perceptual (no GAN term)
l1_vgg() {
    train "$1" 40 20 "$W/runs/rrdb_psnr_x4/checkpoints/step_00000600" esrgan_x4 \
        --set "train.optim={generator: {lr: $3, betas: [0.9, 0.99]}}" \
        --set "losses=[{type: pixel, weight: $2, criterion: l1}, {type: perceptual, weight: 1.0, network: vgg16, layers: ${4:-$LAYERS}, criterion: l1, weights: $VGG16}]"
}

case "${1:-}" in
diagnose)
    train l1_only 60 20 "$W/runs/rrdb_psnr_x4/checkpoints/step_00000600" rrdb_psnr_x4 \
        --set train.optim.generator.lr=1.0e-4 --set "train.schedule={type: constant}" \
        --set "train.ema={decay: 0.99, warmup_steps: 50}"
    l1_vgg vgg_w1 1.0 1.0e-4
    l1_vgg vgg_w1_lr1e5 1.0 1.0e-5
    l1_vgg vgg_w1_shallow 1.0 1.0e-4 "{conv1_2: 0.1, conv2_2: 0.1, conv3_3: 1.0}"
    l1_vgg vgg_pixel10 10.0 1.0e-4
    l1_vgg vgg_pixel100 100.0 1.0e-4
    # The shipped esrgan_x4 (perceptual 0.01) and the same with a 4x adversarial weight.
    train esrgan_short 100 25 "$W/runs/rrdb_psnr_x4/checkpoints/step_00000600" esrgan_x4 \
        --set losses.1.weights="$VGG16"
    train esrgan_short_gan2e2 100 50 "$W/runs/rrdb_psnr_x4/checkpoints/step_00000600" esrgan_x4 \
        --set losses.1.weights="$VGG16" --set losses.2.weight=2.0e-2
    ;;
recipe)
    # The PSNR start: rrdb_psnr_x4 as shipped, to the end of its first cosine cycle.
    $PY -m srkit train configs/rrdb_psnr_x4.yml "${COMMON[@]}" --set name=psnr_start \
        --set train.iterations=1500 --set logging.val_every=1500 --set logging.checkpoint_every=1500 \
        --set data.train.workers=1 --resume auto
    START=$W/balance/psnr_start/checkpoints/step_00001500
    train esrgan_x4 300 50 "$START" esrgan_x4 --set losses.1.weights="$VGG16"
    # ... continued to 900 steps (srkit's resume is exact; the schedule is constant).
    train esrgan_x4 900 100 "$START" esrgan_x4 --set losses.1.weights="$VGG16" \
        --set logging.keep_checkpoints=3 --set logging.checkpoint_every=300
    ;;
report)
    $PY -m srkit validate "$W/balance/psnr_start/checkpoints/step_00001500" \
        "$W/balance/esrgan_x4/checkpoints/step_00000300" "$W/balance/esrgan_x4/checkpoints/step_00000900" \
        --hr "$W/dataset/heldout_report/hr" --lr "$W/dataset/heldout_report/lr_x4" \
        --lpips "$LPIPS_LIN" --lpips-vgg "$VGG16" --bicubic --cpu --per-image
    ;;
*)
    echo "usage: bash benchmarks/loss_balance.sh diagnose|recipe|report" >&2
    exit 2
    ;;
esac
