#!/bin/bash
# Tuning-split measurement of issue 18's stability tools: esrgan_x4 from a short PSNR start,
# plain, with R1 (gamma 10, lazy every 4 steps) and with spectral norm on the discriminator;
# evaluated on the TUNING split of the held-out crops only (benchmarks/README.md, quality.py).
# Needs W/dataset from `srkit prepare` as quality.py runs it, and its tuning split:
#   python -c "import sys; sys.path.insert(0, 'benchmarks'); import quality, pathlib; \
#              quality.heldout_split(pathlib.Path('/tmp/q18b'), 'tuning')"
# Usage: PSNR=600 GAN=100 bash benchmarks/stability_tuning.sh   (one thread, niced)
set -euo pipefail
W=${W:-/tmp/q18b}
PSNR=${PSNR:-600}
GAN=${GAN:-100}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src
PY="nice -n 10 ${PYTHON:-python}"
DATA=(--set output_dir=$W/runs --set data.train.hr=$W/dataset/train/hr --set data.train.lr=$W/dataset/train/lr_x4
      --set data.val.hr=$W/dataset/heldout_tuning/hr --set data.val.lr=$W/dataset/heldout_tuning/lr_x4
      --set logging.progress_bar=false --set data.train.workers=0)
$PY -m srkit train configs/rrdb_psnr_x4.yml "${DATA[@]}" --set train.iterations=$PSNR \
  --set "train.schedule={type: cosine, periods: [$PSNR], eta_min: 1.0e-6, warmup: 50}" \
  --set logging.checkpoint_every=$PSNR --set logging.val_every=$PSNR --resume auto
START=$W/runs/rrdb_psnr_x4/checkpoints/step_$(printf %08d $PSNR)
GANSET=(--set networks.generator.init=$START --set losses.1.weights=${VGG16:-/work/cache/vgg16.pth}
        --set train.iterations=$GAN --set logging.checkpoint_every=$GAN --set logging.val_every=$GAN)
$PY -m srkit train configs/esrgan_x4.yml "${DATA[@]}" "${GANSET[@]}" --set name=esrgan_plain --resume auto
$PY -m srkit train configs/esrgan_x4.yml "${DATA[@]}" "${GANSET[@]}" --set name=esrgan_r1 \
  --set "losses.2.penalty={r1_gamma: 10, interval: 4}" --resume auto
$PY -m srkit train configs/esrgan_x4.yml "${DATA[@]}" "${GANSET[@]}" --set name=esrgan_sn \
  --set networks.discriminator.spectral_norm=true --resume auto
F=$(printf %08d $GAN)
$PY -m srkit validate $START $W/runs/esrgan_plain/checkpoints/step_$F $W/runs/esrgan_r1/checkpoints/step_$F \
  $W/runs/esrgan_sn/checkpoints/step_$F --hr $W/dataset/heldout_tuning/hr --lr $W/dataset/heldout_tuning/lr_x4 \
  --lpips ${VGG16:-/work/cache/vgg16.pth}.lpips-lin.pth --lpips-vgg ${VGG16:-/work/cache/vgg16.pth} --bicubic --cpu
