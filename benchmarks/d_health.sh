#!/bin/bash
# Issue 18: why the pixel discriminators never learned, the recipes after the fix, and SRG2's
# PSNR start at the wall-clock time of RRDB's (benchmarks/RESULTS.md, "Why the pixel
# discriminators did not learn, and SRG2 at equal time").
#
#   bash benchmarks/d_health.sh probe     # D alone on SR-vs-HR patches (d_probe.py), no GAN
#   bash benchmarks/d_health.sh srg2      # tuning split: srg2_psnr_x4 for RRDB's 1500-step time
#   bash benchmarks/d_health.sh recipes   # tuning split: switched_d_x4, srg2_pixgan_x4, spsr_x4
#   bash benchmarks/d_health.sh report    # REPORT split: every start and GAN checkpoint above
#
# Needs what benchmarks/loss_balance.sh needs, and its `recipe` run's PSNR start
# (W/balance/psnr_start/checkpoints/step_00001500: rrdb_psnr_x4 to the end of its first cycle).
# One thread, niced; each run writes W/dhealth/<name> (metrics.jsonl has every validation).
set -euo pipefail
W=${W:-/tmp/q18b}
VGG16=${VGG16:-/work/cache/vgg16.pth}
LPIPS_LIN=${LPIPS_LIN:-$VGG16.lpips-lin.pth}
START=$W/balance/psnr_start/checkpoints/step_00001500
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src
PY="nice -n 10 ${PYTHON:-python}"
COMMON=(--set output_dir=$W/dhealth --set logging.progress_bar=false --set data.train.workers=0
        --set data.train.hr=$W/dataset/train/hr --set data.train.lr=$W/dataset/train/lr_x4
        --set data.val.hr=$W/dataset/heldout_tuning/hr --set data.val.lr=$W/dataset/heldout_tuning/lr_x4
        --set "data.val.lpips={lin: $LPIPS_LIN, vgg: $VGG16}" --set logging.validate_at_start=true)

# train NAME CONFIG [--set ...]: one run of a shipped config
train() {
    local name=$1 config=$2; shift 2
    $PY -m srkit train "configs/$config.yml" "${COMMON[@]}" --set name="$name" "$@" --resume auto
}

case "${1:-}" in
probe)
    $PY benchmarks/d_probe.py --generator "$START/generator_ema.safetensors" \
        --hr "$W/dataset/train/hr" --lr "$W/dataset/train/lr_x4" \
        pixdisc:group pixdisc:none vgg:batch --input image detail
    ;;
srg2)
    # 1330 steps: SRG2 ran at 0.89x RRDB's speed (40-step timings beside the same other run),
    # and RRDB's first cycle is 1500 steps. The shipped schedule, anneal and EMA scaled to it.
    train srg2_psnr_eq srg2_psnr_x4 --set train.iterations=1330 \
        --set "train.schedule={type: cosine, periods: [1330], eta_min: 1.0e-6, warmup: 50}" \
        --set networks.generator.temperature_final_step=890 \
        --set "train.ema={decay: 0.995, warmup_steps: 100}" \
        --set logging.val_every=333 --set logging.checkpoint_every=665
    # The same budget for a deeper, narrower switch setting (depth 6 of 4 transforms instead of
    # depth 3 of 8: about the same time per step, twice the main path's depth).
    train srg2_psnr_eq_deep srg2_psnr_x4 --set train.iterations=1330 \
        --set "train.schedule={type: cosine, periods: [1330], eta_min: 1.0e-6, warmup: 50}" \
        --set networks.generator.temperature_final_step=890 \
        --set "train.ema={decay: 0.995, warmup_steps: 100}" \
        --set networks.generator.depth=6 --set networks.generator.transforms=4 \
        --set logging.val_every=333 --set logging.checkpoint_every=665
    ;;
recipes)
    EVERY=(--set logging.val_every=100 --set logging.print_every=10)
    train switched_d_x4 switched_d_x4 --set networks.generator.init="$START" \
        --set losses.1.weights="$VGG16" "${EVERY[@]}"
    train srg2_pixgan_x4 srg2_pixgan_x4 \
        --set networks.generator.init="$W/dhealth/srg2_psnr_eq/checkpoints/step_00001330" \
        --set losses.1.weights="$VGG16" "${EVERY[@]}" --set logging.checkpoint_every=100
    train spsr_psnr_x4 spsr_psnr_x4 --set networks.generator.init="$START"
    train spsr_x4 spsr_x4 \
        --set networks.generator.init="$W/dhealth/spsr_psnr_x4/checkpoints/step_00000300" \
        --set losses.1.weights="$VGG16" --set logging.val_every=50 --set logging.print_every=10
    ;;
report)
    R=$W/dhealth
    $PY -m srkit validate "$START" "$R/switched_d_x4/checkpoints/step_00000300" \
        "$R/srg2_psnr_eq/checkpoints/step_00001330" "$R/srg2_psnr_eq_deep/checkpoints/step_00001330" \
        "$R/srg2_pixgan_x4/checkpoints/step_00000300" \
        "$R/spsr_psnr_x4/checkpoints/step_00000300" "$R/spsr_x4/checkpoints/step_00000200" \
        --hr "$W/dataset/heldout_report/hr" --lr "$W/dataset/heldout_report/lr_x4" \
        --lpips "$LPIPS_LIN" --lpips-vgg "$VGG16" --bicubic --cpu --per-image
    ;;
*)
    echo "usage: bash benchmarks/d_health.sh probe|srg2|recipes|report" >&2
    exit 2
    ;;
esac
