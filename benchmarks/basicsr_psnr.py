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
        --dataset data/photos --root /tmp/basicsr_run --iterations 12000
"""

from __future__ import annotations

import argparse
import functools
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


def keep_schedule_on_resume(scheduler_class: type) -> None:
    """Make BasicSR's cosine scheduler keep the options' periods when it resumes.

    BasicSR stores the whole scheduler (periods and restart weights included) in its training
    states, and loading one overwrites the schedule built from the options. A recipe that was
    extended by more cycles (srkit resumes such a run with the new schedule) would then run out
    of periods at the old end. The stored periods and weights must be the first ones of the
    options' (the steps already taken then had the same learning rates either way); anything
    else stops the run with one line.
    """
    load_state_dict = scheduler_class.load_state_dict

    def load_keeping_schedule(scheduler, state: dict) -> None:
        periods, weights = list(scheduler.periods), list(scheduler.restart_weights)
        old_periods, old_weights = list(state["periods"]), list(state["restart_weights"])
        count = len(old_periods)
        if periods[:count] != old_periods or weights[:count] != old_weights:
            raise SystemExit(
                f"BasicSR state has cosine periods {old_periods} (weights {old_weights}); "
                f"the recipe's {periods} (weights {weights}) do not start with them"
            )
        load_state_dict(scheduler, state)
        scheduler.periods, scheduler.restart_weights = periods, weights
        scheduler.cumulative_period = [sum(periods[: i + 1]) for i in range(len(periods))]

    scheduler_class.load_state_dict = load_keeping_schedule


def load_resume_state_on_cpu(basicsr_train, opt: dict) -> dict | None:
    """BasicSR's ``load_resume_state`` for ``--auto_resume`` on a machine without CUDA.

    BasicSR 1.4.2 maps a training state onto the current CUDA device and fails without one.
    This loads the newest state in the run's ``training_states`` onto the CPU instead, and
    otherwise does what BasicSR does (records the path, points the network at its weights).
    """
    import torch

    state_dir = Path("experiments") / opt["name"] / "training_states"
    states = sorted(state_dir.glob("*.state"), key=lambda path: int(path.stem))
    if not (opt["auto_resume"] and states):
        return None
    opt["path"]["resume_state"] = str(states[-1])
    # BasicSR's own pickled training state (optimizer and scheduler objects' dicts).
    state = torch.load(states[-1], map_location="cpu", weights_only=False)
    basicsr_train.check_resume(opt, state["iter"])
    return state


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
    from basicsr import train as basicsr_train
    from basicsr.models import lr_scheduler

    keep_schedule_on_resume(lr_scheduler.CosineAnnealingRestartLR)
    basicsr_train.load_resume_state = functools.partial(load_resume_state_on_cpu, basicsr_train)

    # train_pipeline reads its options file from the command line; --auto_resume continues an
    # interrupted run (or one whose recipe gained cycles) from BasicSR's own training states.
    sys.argv = [sys.argv[0], "-opt", str(option_file), "--auto_resume"]
    os.chdir(args.root)
    basicsr_train.train_pipeline(str(args.root))


if __name__ == "__main__":
    main()
