"""Train srkit's PSNR recipe (``configs/rrdb_psnr_x4.yml``) with BasicSR 1.4.2 instead.

Run with BasicSR's Python (see ``vs_basicsr.py`` for that environment); ``quality.py`` calls it.
It writes BasicSR's own options file and runs BasicSR's ``train_pipeline`` (its ``SRModel``,
``PairedImageDataset``, ``RRDBNet``), set up as the srkit recipe: the same prepared folders
(paired HR/LR PNGs), the same HR patch, flips and rotations, batch, network shape (nf, nb, gc),
L1 loss, Adam betas, learning rate with the same linear warm-up and cosine decay to the same
minimum, EMA decay, and number of iterations. What differs, by construction: BasicSR's EMA has
no warm-up (srkit's ramps its decay over the first steps; after a few thousand steps at decay
0.995 the start is forgotten either way), the random streams (crops, initial weights), and
BasicSR's data pipeline (cv2 reads, its own crop code).

The weights land in ``<root>/experiments/<name>/models/net_g_<iterations>.pth`` (``params`` and
``params_ema``); srkit reads that file directly (``srkit validate`` prefers ``params_ema``).

    /tmp/basicsr-venv/bin/python benchmarks/basicsr_psnr.py --config configs/rrdb_psnr_x4.yml \\
        --dataset data/photos --root /tmp/basicsr_run --iterations 7500
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml


def basicsr_options(recipe: dict, dataset: Path, iterations: int, name: str) -> dict:
    """BasicSR's options for the srkit PSNR ``recipe`` (a loaded YAML dict), run for
    ``iterations`` steps of the recipe's schedule (it may stop before the schedule ends)."""
    train, net = recipe["data"]["train"], recipe["networks"]["generator"]
    optim = recipe["train"]["optim"]["generator"]
    schedule = recipe["train"]["schedule"]
    if net["type"] != "rrdb" or schedule["type"] != "cosine":
        raise SystemExit("this driver knows the RRDB recipe with a cosine schedule only")
    return {
        "name": name,
        "model_type": "SRModel",
        "scale": recipe["scale"],
        "num_gpu": 0,
        "manual_seed": recipe.get("seed", 0),
        "datasets": {
            "train": {
                "name": "prepared",
                "type": "PairedImageDataset",
                "dataroot_gt": str(dataset / "train/hr"),
                "dataroot_lq": str(dataset / f"train/lr_x{recipe['scale']}"),
                "filename_tmpl": "{}",
                "io_backend": {"type": "disk"},
                "gt_size": train["patch_size"],
                "use_hflip": True,
                "use_rot": True,
                "num_worker_per_gpu": train.get("workers", 1),
                "batch_size_per_gpu": train["batch_size"],
                "dataset_enlarge_ratio": 1,
                "prefetch_mode": None,
                "phase": "train",
                "scale": recipe["scale"],
            }
        },
        "network_g": {
            "type": "RRDBNet",
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": net["nf"],
            "num_block": net["nb"],
            "num_grow_ch": net["gc"],
        },
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": recipe["train"]["ema"]["decay"],
            "optim_g": {
                "type": "Adam",
                "lr": optim["lr"],
                "weight_decay": 0,
                "betas": optim.get("betas", [0.9, 0.99]),
            },
            # Same periods and per-period peak weights as srkit's cosine schedule.
            "scheduler": {
                "type": "CosineAnnealingRestartLR",
                "periods": schedule["periods"],
                "restart_weights": schedule.get("restart_weights")
                or [1] * len(schedule["periods"]),
                "eta_min": schedule.get("eta_min", 0),
            },
            "total_iter": iterations,
            "warmup_iter": schedule.get("warmup", -1) or -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        },
        "logger": {
            "print_freq": 50,
            # The end of the first cosine cycle and every as many steps after it: with the
            # recipe's periods these are its cycle ends, compared with srkit's checkpoints.
            "save_checkpoint_freq": min(schedule["periods"][0], iterations),
            "use_tb_logger": False,
            "wandb": {"project": None, "resume_id": None},
        },
        "dist_params": {"backend": "gloo", "port": 29500},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/rrdb_psnr_x4.yml"))
    parser.add_argument("--dataset", type=Path, required=True, help="`srkit prepare` output")
    parser.add_argument("--root", type=Path, required=True, help="BasicSR's root folder")
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--name", default="rrdb_psnr_x4_basicsr")
    parser.add_argument(
        "--periods", type=int, nargs="+", help="cosine periods (default: the recipe's)"
    )
    args = parser.parse_args()
    recipe = yaml.safe_load(args.config.read_text())
    if args.periods:
        recipe["train"]["schedule"]["periods"] = args.periods
    options = basicsr_options(recipe, args.dataset.resolve(), args.iterations, args.name)
    args.root.mkdir(parents=True, exist_ok=True)
    option_file = args.root / f"{args.name}.yml"
    option_file.write_text(yaml.safe_dump(options, sort_keys=False))

    import torchvision.transforms.functional as functional

    # BasicSR 1.4.2 imports rgb_to_grayscale from a module torchvision 0.17 removed.
    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)
    from basicsr.train import train_pipeline

    # train_pipeline reads its options file from the command line; --auto_resume continues an
    # interrupted run from BasicSR's own training states.
    sys.argv = [sys.argv[0], "-opt", str(option_file), "--auto_resume"]
    os.chdir(args.root)
    train_pipeline(str(args.root))


if __name__ == "__main__":
    main()
