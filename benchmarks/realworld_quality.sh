#!/bin/bash
# Real-world training vs bicubic training at an equal budget (RESULTS.md, issue 19): two runs of
# configs/realesrnet_x4.yml shrunk to a short CPU budget, one on bicubic LR, one on degradations.
#   bash benchmarks/realworld_quality.sh DATASET WORK     (DATASET from `srkit prepare ... --degrade
#   configs/realesrnet_x4.yml`; then `srkit validate` and benchmarks/realworld_sheet.py, see RESULTS.md)
#   STEPS=3600 bash benchmarks/realworld_quality.sh ...   (the budget of both runs; default 1200)
set -e
data=${1:?dataset folder}; work=${2:?work folder}
repo=$(cd "$(dirname "$0")/.." && pwd)
steps=${STEPS:-1200}
common=(--set "data.train.hr=$data/train/hr" --set data.val=null --set "output_dir=$work/runs"
  --set networks.generator.nb=1 --set data.train.patch_size=64 --set data.train.batch_size=8
  --set train.iterations=$steps --set "train.schedule={type: cosine, periods: [$steps], eta_min: 1.0e-6, warmup: 50}"
  --set logging.validate_at_start=false --set logging.checkpoint_every=$steps --set logging.print_every=100
  --set logging.tensorboard=false --set logging.progress_bar=false)
export OMP_NUM_THREADS=1
nice -n 10 srkit train "$repo/configs/realesrnet_x4.yml" "${common[@]}" --set name=q_bicubic \
  --set data.train.degradation=null --set "data.train.lr=$data/train/lr_x4" --resume auto
nice -n 10 srkit train "$repo/configs/realesrnet_x4.yml" "${common[@]}" --set name=q_realworld --resume auto
