"""The recipes on real photos: PSNR pre-training, each GAN recipe from its PSNR start, one table.

The whole pipeline of ``docs/recipes.md``, with the budgets as arguments:

1. ``srkit prepare`` the photos (``../shared/data/get-photos.sh``): JPEGs reduced x2, 480 px
   sub-images every 240 px, x4 LR; every 7th photo by sorted name held out, its centre
   384x384 kept (so evaluating a model costs seconds).
2. PSNR starts: ``rrdb_psnr_x4`` (the PSNR recipe: three cosine cycles), and, since SRG2 and
   SPSR are other architectures, ``srg2_psnr_x4`` (from scratch) and ``spsr_psnr_x4`` (trunk and
   upsampler from the RRDB checkpoint, ``init_strict: false``). Optionally the RRDB recipe
   through BasicSR 1.4.2 (``basicsr_psnr.py``) for comparison, for the same budget; both
   runs' checkpoints at the end of each cosine cycle are evaluated (``<run>@<step>``).
3. GAN recipes from their starts: ``esrgan_x4`` and ``switched_d_x4`` (from RRDB),
   ``srg2_pixgan_x4`` (from SRG2), ``spsr_x4`` (from SPSR).
4. Evaluation of every final checkpoint (EMA weights) and of bicubic on one split of the
   held-out crops (``--split``, see below): PSNR-Y, SSIM-Y (crop 4), L1, LPIPS (VGG, v0.1): the
   code of ``srkit validate``. Also each run's validation L1 at step 0 and at its end
   (``logging.validate_at_start``).
5. A sheet: for the 3 crops of the split with the lowest bicubic PSNR (the most detail), the
   centre 128x128 of bicubic | each PSNR model | each GAN | HR (each model sees the whole crop).

Tuning and report splits: the held-out crops, sorted by file name, alternate between a
**report** split (the 1st, 3rd, 5th, ...) and a **tuning** split (the 2nd, 4th, ...): with
the 55 photos of ``get-photos.sh`` 4 report and 3 tuning crops. Recipes are chosen on the
tuning split only; the report split is measured once a recipe is fixed and never looked at
while choosing. The runs validate during training on the tuning split (their logs and
validation pictures show tuning crops only); ``--split`` (default ``tuning``) chooses the
split of the table, which names it.

Each run is a ``srkit train ... --resume auto`` process with one OpenMP thread; ``--jobs``
processes run at once, in dependency order. A run whose final checkpoint exists is skipped, so
an interrupted pipeline continues where it stopped (and ``srkit prepare`` skips finished work).
The configs are the shipped ones in ``configs/``; this script only overrides paths and budgets.

    python benchmarks/quality.py --photos /tmp/photos --work /tmp/quality \\
        --vgg16 /tmp/vgg16.pth --lpips-lin /tmp/vgg16.pth.lpips-lin.pth \\
        --psnr-steps 12000 --start-steps 600 300 --gan-steps 300 --spsr-gan-steps 200 \\
        --basicsr-python /tmp/basicsr-venv/bin/python --sheet /tmp/quality/sheet.png
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class Run:
    name: str  # run folder name = config name
    steps: int
    needs: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    basicsr: bool = False

    def final(self, work: Path) -> Path:
        if self.basicsr:
            return work / f"basicsr/experiments/{self.name}/models/net_g_{self.steps}.pth"
        return work / f"runs/{self.name}/checkpoints/step_{self.steps:08d}"


def plan(args: argparse.Namespace) -> list[Run]:
    work, dataset = args.work, args.work / "dataset"
    srg2_steps, spsr_steps = args.start_steps

    def checkpoint(name: str, steps: int) -> str:
        return str(work / f"runs/{name}/checkpoints/step_{steps:08d}")

    def cosine(steps: int, warmup: int) -> str:
        return f"train.schedule={{type: cosine, periods: [{steps}], eta_min: 1.0e-6, warmup: {warmup}}}"

    # The PSNR recipe's cosine cycles, scaled to the budget (unchanged at the shipped one).
    cycles = psnr_periods(args.psnr_steps)
    rrdb_schedule = (
        f"train.schedule={{type: cosine, periods: {cycles}, "
        f"restart_weights: {psnr_schedule().restart_weights}, eta_min: 1.0e-6, warmup: 100}}"
    )

    perceptual = [f"losses.1.weights={args.vgg16}"]
    runs = [
        # Checkpoints every 500 steps are all kept: the end of each cycle is compared with
        # BasicSR's checkpoint of the same step.
        Run("rrdb_psnr_x4", args.psnr_steps, sets=[rrdb_schedule, "logging.keep_checkpoints=40"]),
        Run(
            "srg2_psnr_x4",
            srg2_steps,
            sets=[
                cosine(srg2_steps, 50),
                f"networks.generator.temperature_final_step={max(1, srg2_steps * 2 // 3)}",
            ],
        ),
        Run(
            "spsr_psnr_x4",
            spsr_steps,
            needs=["rrdb_psnr_x4"],
            sets=[
                cosine(spsr_steps, 20),
                f"networks.generator.init={checkpoint('rrdb_psnr_x4', args.psnr_steps)}",
                f"train.optim.generator.train_only.steps={max(1, spsr_steps // 3)}",
            ],
        ),
        Run(
            "esrgan_x4",
            args.gan_steps,
            needs=["rrdb_psnr_x4"],
            sets=[
                f"networks.generator.init={checkpoint('rrdb_psnr_x4', args.psnr_steps)}",
                *perceptual,
            ],
        ),
        Run(
            "switched_d_x4",
            args.gan_steps,
            needs=["rrdb_psnr_x4"],
            sets=[
                f"networks.generator.init={checkpoint('rrdb_psnr_x4', args.psnr_steps)}",
                f"networks.discriminator.temperature_final_step={max(1, args.gan_steps * 3 // 4)}",
                *perceptual,
            ],
        ),
        Run(
            "srg2_pixgan_x4",
            args.gan_steps,
            needs=["srg2_psnr_x4"],
            sets=[
                f"networks.generator.init={checkpoint('srg2_psnr_x4', srg2_steps)}",
                f"train.d_noise.until={max(1, args.gan_steps * 3 // 4)}",
                *perceptual,
            ],
        ),
        Run(
            "spsr_x4",
            args.spsr_gan_steps,
            needs=["spsr_psnr_x4"],
            sets=[f"networks.generator.init={checkpoint('spsr_psnr_x4', spsr_steps)}", *perceptual],
        ),
    ]
    common = [
        f"output_dir={work / 'runs'}",
        f"data.train.hr={dataset / 'train/hr'}",
        f"data.train.lr={dataset / 'train/lr_x4'}",
        # Validation while training sees the tuning crops only (see heldout_split).
        f"data.val.hr={dataset / 'heldout_tuning/hr'}",
        f"data.val.lr={dataset / 'heldout_tuning/lr_x4'}",
        "logging.progress_bar=false",
    ]
    for run in runs:
        run.sets = [f"train.iterations={run.steps}", *common, *run.sets]
    if args.basicsr_python:
        steps = args.basicsr_steps or args.psnr_steps
        runs.insert(1, Run("rrdb_psnr_x4_basicsr", steps, basicsr=True))
    return runs


SPLITS = ("tuning", "report")


def split_of(position: int) -> str:
    """The split of the held-out crop at ``position`` (0-based) in name order: the 1st, 3rd,
    5th ... crop is for the report, the 2nd, 4th ... for tuning."""
    return "tuning" if position % 2 else "report"


def heldout_split(work: Path, split: str) -> Path:
    """``dataset/heldout_<split>`` (``hr/`` and ``lr_x4/``): that split's crops, copied afresh
    from ``dataset/heldout`` as ``srkit prepare`` wrote it."""
    source, target = work / "dataset/heldout", work / f"dataset/heldout_{split}"
    names = sorted(path.name for path in (source / "hr").iterdir() if path.is_file())
    chosen = [name for position, name in enumerate(names) if split_of(position) == split]
    shutil.rmtree(target, ignore_errors=True)
    for folder in ("hr", "lr_x4"):
        (target / folder).mkdir(parents=True)
        for name in chosen:
            shutil.copy2(source / folder / name, target / folder / name)
    return target


@functools.cache
def psnr_schedule():
    """The shipped PSNR recipe's schedule (periods, restart weights), read once with srkit's
    own config loader."""
    from srkit.config import load_config

    return load_config(REPO / "configs/rrdb_psnr_x4.yml").train.schedule


def psnr_periods(steps: int) -> list[int]:
    """The recipe's cosine periods scaled to ``steps`` in all (the last one takes the rest)."""
    periods = psnr_schedule().periods
    scaled = [round(p * steps / sum(periods)) for p in periods[:-1]]
    return [*scaled, steps - sum(scaled)]


def cycle_ends(steps: int) -> list[int]:
    """The steps at which the PSNR recipe's cosine cycles end, for a budget of ``steps``."""
    return list(itertools.accumulate(psnr_periods(steps)))


def command(run: Run, args: argparse.Namespace) -> list[str]:
    if run.basicsr:
        return [
            str(args.basicsr_python),
            str(REPO / "benchmarks/basicsr_psnr.py"),
            "--config",
            str(REPO / "configs/rrdb_psnr_x4.yml"),
            "--dataset",
            str(args.work / "dataset"),
            "--root",
            str(args.work / "basicsr"),
            "--iterations",
            str(run.steps),
            "--name",
            run.name,
            "--periods",
            *[str(p) for p in psnr_periods(args.psnr_steps)],
        ]
    config = REPO / "configs" / f"{run.name}.yml"
    sets = [item for value in run.sets for item in ("--set", value)]
    return [sys.executable, "-m", "srkit", "train", str(config), *sets, "--resume", "auto"]


def run_all(runs: list[Run], args: argparse.Namespace) -> None:
    """Start runs as their inputs are ready, at most ``--jobs`` at a time."""
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO / "src")}
    done = {run.name for run in runs if run.final(args.work).exists()}
    for name in sorted(done):
        print(f"[quality] {name}: finished before, skipped", flush=True)
    waiting = [run for run in runs if run.name not in done]
    active: dict[str, tuple[subprocess.Popen, float]] = {}
    while waiting or active:
        for run in list(waiting):
            if len(active) >= args.jobs:
                break
            if all(need in done for need in run.needs):
                log = open(logs / f"{run.name}.log", "a")  # noqa: SIM115 - closed with the process
                process = subprocess.Popen(
                    command(run, args), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
                )
                active[run.name] = (process, time.time())
                waiting.remove(run)
                print(f"[quality] {run.name}: started ({run.steps} steps)", flush=True)
        time.sleep(5)
        for name, (process, started) in list(active.items()):
            if process.poll() is None:
                continue
            del active[name]
            minutes = (time.time() - started) / 60
            if process.returncode != 0:
                for other, _ in active.values():
                    other.terminate()
                raise SystemExit(
                    f"[quality] {name} failed (exit {process.returncode}); see {logs / name}.log"
                )
            done.add(name)
            print(f"[quality] {name}: finished in {minutes:.1f} min", flush=True)


def start_and_end_l1(work: Path, name: str) -> tuple[float | None, float | None, int | None]:
    """(val_ema/l1 at step 0, at the last validation, that step) from a run's metrics."""
    path = work / f"runs/{name}/metrics.jsonl"
    if not path.is_file():
        return None, None, None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "val_ema/l1" in r or "val/l1" in r]
    key = "val_ema/l1" if any("val_ema/l1" in r for r in rows) else "val/l1"
    rows = [r for r in rows if key in r]
    if not rows:
        return None, None, None
    first = next((r[key] for r in rows if r["step"] == 0), None)
    return first, rows[-1][key], rows[-1]["step"]


def evaluate(runs: list[Run], args: argparse.Namespace) -> list[tuple[str, object]]:
    import torch

    from srkit.data.datasets import SRDataset
    from srkit.evaluation import BicubicUpscaler, evaluate_models, quality_csv, quality_table
    from srkit.metrics.lpips import load_lpips
    from srkit.weights import load_network

    split = heldout_split(args.work, args.split)
    dataset = SRDataset(hr_root=split / "hr", lr_root=split / "lr_x4", scale=4, patch_size=None)
    models = [("bicubic", BicubicUpscaler(4))]
    for run in runs:
        if run.basicsr:
            # srkit against BasicSR at the same step, same schedule: at the end of each cosine
            # cycle both runs reached, and at BasicSR's last step if it ran a shorter budget.
            for step in sorted({*cycle_ends(args.psnr_steps), run.steps}):
                ours = args.work / f"runs/rrdb_psnr_x4/checkpoints/step_{step:08d}"
                theirs = run.final(args.work).with_name(f"net_g_{step}.pth")
                if step == args.psnr_steps or not (ours.is_dir() and theirs.is_file()):
                    continue
                models.append((f"rrdb_psnr_x4@{step}", load_network(ours)))
                if step != run.steps:
                    models.append((f"{run.name}@{step}", load_network(theirs)))
        models.append((run.name, load_network(run.final(args.work))))
    lpips = load_lpips(args.lpips_lin, args.vgg16, key="--lpips-lin")
    results = evaluate_models(models, dataset, scale=4, device=torch.device("cpu"), lpips=lpips)
    names = ", ".join(path.stem for path in sorted((split / "hr").iterdir()))
    print(f"split: {args.split} ({len(dataset)} held-out crops: {names})")
    print(quality_table(results))
    table = args.work / f"quality_{args.split}.csv"
    table.write_text(quality_csv(results))
    print(f"(split: {args.split}; per image: {table})")
    print("\nvalidation L1 (EMA weights) at step 0 and at the end of each srkit run:")
    for run in runs:
        if run.basicsr:
            continue
        first, last, step = start_and_end_l1(args.work, run.name)
        if first is not None:
            print(f"  {run.name:<16} step 0: {first:.4f}   step {step}: {last:.4f}")
    if args.sheet:
        # The final models only: the per-cycle comparison rows are in the table.
        finals = [(name, model) for name, model in models if "@" not in name]
        write_sheet(finals, dataset, results, args.sheet)
    return results


def write_sheet(models, dataset, results, path: Path, crop: int = 128) -> None:
    """Centre ``crop`` px of bicubic | each model | HR, for the 3 images with the lowest bicubic
    PSNR-Y; each model upscales the whole held-out crop (no border effects in the sheet)."""
    import numpy as np
    import torch

    from srkit.data.io import write_image

    bicubic = dict(results)["bicubic"].per_image
    chosen = sorted(range(len(bicubic)), key=lambda i: bicubic[i]["psnr_y"])[:3]
    rows = []
    for index in sorted(chosen):
        item = dataset[index]
        tiles = []
        hr = item["hr"]
        crop = min(crop, hr.shape[1], hr.shape[2])
        top, left = (hr.shape[1] - crop) // 2, (hr.shape[2] - crop) // 2
        with torch.no_grad():
            for _, model in models:
                output = model.eval()(item["lr"][None])
                sr = output["sr"] if isinstance(output, dict) else output
                tiles.append(sr[0, :, top : top + crop, left : left + crop].clamp(0, 1))
        tiles.append(hr[:, top : top + crop, left : left + crop])
        gap = torch.ones(3, crop, 4)
        rows.append(torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=2))
        print(f"sheet row: {item['name']}")
    width = rows[0].shape[2]
    sheet = torch.cat([t for row in rows for t in (row, torch.ones(3, 4, width))][:-1], dim=1)
    write_image(path, sheet.permute(1, 2, 0).numpy().astype(np.float32))
    names = " | ".join([name for name, _ in models] + ["HR"])
    print(f"sheet: {path} (columns: {names})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("/tmp/photos"))
    parser.add_argument("--work", type=Path, required=True, help="dataset, runs, logs, table")
    parser.add_argument("--vgg16", type=Path, default=Path("/tmp/vgg16.pth"))
    parser.add_argument(
        "--lpips-lin", type=Path, default=Path("/tmp/vgg16.pth.lpips-lin.pth"), help="LPIPS v0.1"
    )
    parser.add_argument("--psnr-steps", type=int, default=12000, help="RRDB PSNR recipe")
    parser.add_argument(
        "--basicsr-steps",
        type=int,
        help="BasicSR's run of the PSNR recipe (default: --psnr-steps); srkit's and BasicSR's "
        "checkpoints at the end of each cosine cycle are evaluated side by side",
    )
    parser.add_argument(
        "--start-steps",
        type=int,
        nargs=2,
        default=[600, 300],
        metavar=("SRG2", "SPSR"),
        help="the SRG2 and SPSR PSNR starts",
    )
    parser.add_argument("--gan-steps", type=int, default=300, help="ESRGAN, switched D, SRG2")
    parser.add_argument("--spsr-gan-steps", type=int, default=200)
    parser.add_argument(
        "--basicsr-python", type=Path, help="also train the PSNR recipe with BasicSR 1.4.2"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads per run")
    parser.add_argument("--sheet", type=Path, help="write the image sheet here")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="tuning",
        help="held-out crops the table is measured on: tuning (choose recipes on these) or "
        "report (measure a fixed recipe; never tune on it)",
    )
    args = parser.parse_args()
    args.work = args.work.resolve()

    import torch
    from _common import machine_info

    print(json.dumps(machine_info(torch.device("cpu"))))
    runs = plan(args)
    if not args.evaluate_only:
        prepare = [
            sys.executable, "-m", "srkit", "prepare", str(args.photos),
            "-o", str(args.work / "dataset"), "--scales", "4", "--jpeg-downscale", "2",
            "--holdout-every", "7", "--holdout-crop", "384",
        ]  # fmt: skip
        subprocess.run(prepare, check=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        heldout_split(args.work, "tuning")  # what the runs validate on
        run_all(runs, args)
    torch.set_num_threads(max(1, args.threads * args.jobs))
    evaluate(runs, args)


if __name__ == "__main__":
    main()
