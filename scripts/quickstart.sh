#!/usr/bin/env bash
# The README's first command: set up srkit in .venv and run the quickstart end to end.
#   1. create .venv (Python >= 3.10) and install torch (CPU build) + srkit with its demo extra
#   2. write the quickstart photos (bundled with scikit-image, no download) to data/quickstart
#   3. train configs/quickstart.yml (a few minutes on 2 CPU cores)
#   4. upscale the held-out photos' LR with the trained model and compare each with bicubic
# Re-running continues an interrupted run (--resume auto) and reuses .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first, pinned to the CPU build: a plain `torch` requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[demo]"

.venv/bin/python -m srkit.demo data/quickstart
.venv/bin/srkit train configs/quickstart.yml --resume auto
.venv/bin/python scripts/quickstart_report.py experiments/quickstart data/quickstart/val out/quickstart
