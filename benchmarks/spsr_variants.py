"""SPSR, switched SPSR and SPSR3 side by side: parameters and training-step time at the same nf.

* Parameter counts at the paper/seed sizes (nf 64: SPSR nb 23 gc 32; switched SPSR and SPSR3 at
  their defaults, 8 transforms) and at the benchmarked sizes.
* Training-step time of each generator's PSNR step (pixel L1 + branch L1, Adam, no
  discriminator) through the real trainer (``Trainer.train_step``) on one fixed batch, at the
  same nf. The machine may be shared, so the variants are timed in alternation, round after
  round, and each round's ratio to SPSR is taken; the table gives medians over the rounds of
  ms/step (wall), CPU ms/step (this process's CPU time, all its threads) and the ratio, plus
  the load average before and after.

Usage:
    python benchmarks/spsr_variants.py                    # nf 32, batch 4 of 96 px, 5 rounds
    python benchmarks/spsr_variants.py --nf 64 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import machine_info, make_image_folder, markdown_table

from srkit.config import validate_config
from srkit.nets import build_network
from srkit.nets.blocks import count_parameters
from srkit.train.trainer import Trainer

PAPER_SIZES = {
    "spsr": {"nf": 64, "nb": 23, "gc": 32},
    "spsr_switched": {},
    "spsr3": {},
    "spsr_switched (seed's multiplexers)": {
        "type": "spsr_switched",
        "mux_filters": 64,
        "reductions": 3,
        "processing_layers": 2,
    },
}


def benchmarked_sizes(nf: int) -> dict[str, dict[str, Any]]:
    """The configs' shapes at ``nf`` (configs/spsr_psnr_x4.yml, spsr_switched_psnr_x4.yml)."""
    switched = {"nf": nf, "transforms": 8, "grad_transforms": 4, "trans_layers": 2}
    switched["mux_filters"] = max(8, nf // 2)
    return {
        "spsr": {"nf": nf, "nb": 4, "gc": nf // 2},
        "spsr_switched": switched,
        "spsr3": {**switched, "ref_size": 64, "ref_nf": nf},
    }


def parameters(name: str, kwargs: dict[str, Any], scale: int = 4) -> int:
    kwargs = dict(kwargs)
    kind = kwargs.pop("type", name)
    with torch.device("meta"):
        return count_parameters(build_network(kind, scale=scale, **kwargs))


def make_trainer(name: str, kwargs: dict, data: Path, out: Path, args: Any) -> Trainer:
    raw = {
        "name": name,
        "scale": 4,
        "seed": 0,
        "output_dir": str(out),
        "data": {
            "train": {"hr": str(data), "patch_size": args.patch, "batch_size": args.batch},
            "val": None,
        },
        "networks": {"generator": {"type": name, **kwargs}},
        "losses": [
            {"type": "pixel", "weight": 1.0, "criterion": "l1"},
            {"type": "branch_pixel", "weight": 0.5},
        ],
        "train": {"iterations": 1, "optim": {"generator": {"lr": 1e-4}}},
        "logging": {"tensorboard": False, "progress_bar": False},
    }
    return Trainer(validate_config(raw), quiet=True)


def fixed_batch(trainer: Trainer, size: int) -> dict[str, torch.Tensor]:
    items = [trainer.train_dataset[(index, 100 + index)] for index in range(size)]
    keys = [k for k, v in items[0].items() if isinstance(v, torch.Tensor)]
    return {key: torch.stack([item[key] for item in items]) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nf", type=int, default=32)
    parser.add_argument("--patch", type=int, default=96, help="HR patch side (LR = patch / 4)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print("machine:", machine_info(torch.device("cpu")))
    print("\nParameters, x4, at the paper/seed sizes (nf 64):")
    print(
        markdown_table(
            [{"net": n, "params": f"{parameters(n, k):,}"} for n, k in PAPER_SIZES.items()],
            [("net", "generator"), ("params", "parameters")],
        )
    )

    sizes = benchmarked_sizes(args.nf)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_image_folder(Path(tmp) / "images", 8, (256, 256))
        trainers = {n: make_trainer(n, k, data, Path(tmp) / "runs", args) for n, k in sizes.items()}
        batches = {n: fixed_batch(t, args.batch) for n, t in trainers.items()}
        for name, trainer in trainers.items():  # warm-up (allocator, oneDNN kernels)
            trainer.train_step(batches[name], 0)
        load_before = os.getloadavg()
        wall: dict[str, list[float]] = {n: [] for n in sizes}
        cpu: dict[str, list[float]] = {n: [] for n in sizes}
        step = 1
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    trainer.train_step(batches[name], step)
                    step += 1
                wall[name].append((time.perf_counter() - started) / args.steps * 1e3)
                cpu[name].append((time.process_time() - started_cpu) / args.steps * 1e3)
        load_after = os.getloadavg()

    rows = []
    for name, kwargs in sizes.items():
        ratios = [w / s for w, s in zip(wall[name], wall["spsr"], strict=True)]
        rows.append(
            {
                "net": name,
                "params": f"{parameters(name, kwargs):,}",
                "ms": f"{statistics.median(wall[name]):.0f}",
                "cpu": f"{statistics.median(cpu[name]):.0f}",
                "ratio": f"{statistics.median(ratios):.2f}",
            }
        )
    print(
        f"\nPSNR training step at nf {args.nf}, batch {args.batch} x {args.patch} px HR, "
        f"{args.rounds} rounds x {args.steps} steps, {torch.get_num_threads()} threads "
        f"(load average before {load_before[0]:.2f}, after {load_after[0]:.2f}):"
    )
    print(
        markdown_table(
            rows,
            [
                ("net", "generator"),
                ("params", "parameters"),
                ("ms", "ms/step"),
                ("cpu", "CPU ms/step"),
                ("ratio", "time / SPSR's (median of rounds)"),
            ],
        )
    )
    print("\nsizes:", sizes)


if __name__ == "__main__":
    main()
