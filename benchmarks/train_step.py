"""Training-step throughput of srkit's one trainer, against the machine's conv3x3 peak.

Runs the real :class:`srkit.train.trainer.Trainer` (its DataLoader, workers, ``train_step``) on a
folder of images for ``--warmup`` + ``--steps`` steps per precision and reports, over the timed
steps only:

* ms/step and images/s, timed as ``Trainer.run`` times a step: from before ``next(loader)`` to
  after ``train_step`` returns (plus a device synchronize, a no-op on CPU);
* the data-wait fraction: time in ``next(loader)`` / step time, as the trainer logs it
  (``speed/data_wait_fraction``);
* FLOPs per step, counted by ``torch.utils.flop_counter.FlopCounterMode`` around one whole
  ``train_step`` (the first warm-up step): every convolution / matmul forward and backward of
  every network the step runs (generator, loss networks, discriminator steps); element-wise
  work (activations, losses, Adam) is not counted. For the RRDB generator the analytic count
  (:func:`rrdb_training_flops`) is printed next to it as a cross-check;
* achieved GFLOP/s = FLOPs per step / mean step time, and its ratio to the fp32 conv3x3
  64-channel forward+backward GFLOP/s measured in the same run on feature maps shaped like
  RRDB's LR features: (batch, 64, patch/scale, patch/scale) through 8 conv layers, counting 3x
  the forward FLOPs (:func:`_common.conv3x3_reference`). It is measured before the training
  runs (no data workers alive) and again after them; the ratio uses the higher median, and
  the two show how much the machine drifted during the run;
* busy cores (CPU seconds of the training process per wall second; data workers excluded) and
  the load average, so that a run disturbed by other processes shows as such.

Recipes (``--recipe``) say which networks and loss terms the step trains; add one by writing a
function that returns the ``networks`` / ``losses`` (and optional ``train``) sections and
listing it in ``RECIPES``. ``--set KEY=VALUE`` changes any config key, as ``srkit train`` does.

Usage:
    python benchmarks/train_step.py                          # psnr recipe, fp32 + bf16, 5 steps
    python benchmarks/train_step.py --precision fp32 --steps 3 --warmup 1
    python benchmarks/train_step.py --data /tmp/photos --workers 4 --threads 2
    python benchmarks/train_step.py --nb 2 --steps 2 --profile 2  # + where the step's time goes
    python benchmarks/train_step.py --recipe esrgan --vgg16-weights /tmp/vgg16.pth --profile 2
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    conv3x3_reference,
    counting_flops,
    machine_info,
    make_image_folder,
    markdown_table,
    synchronize,
)
from step_profile import format_part_table, profile_trainer_steps

# --------------------------------------------------------------------------- recipes

Recipe = Callable[[argparse.Namespace], dict[str, Any]]


def rrdb_generator(args: argparse.Namespace) -> dict[str, Any]:
    return {"type": "rrdb", "nf": args.nf, "nb": args.nb, "gc": args.gc}


def recipe_psnr(args: argparse.Namespace) -> dict[str, Any]:
    """PSNR pre-training: RRDB generator, L1 pixel loss (ESRGAN stage 1)."""
    return {
        "networks": {"generator": rrdb_generator(args)},
        "losses": [{"type": "pixel", "weight": 1.0, "criterion": "l1"}],
    }


def _perceptual(args: argparse.Namespace) -> list[dict[str, Any]]:
    """ESRGAN's perceptual term: VGG19 conv5_4 (ImageNet weights from the torch hub cache), or
    VGG16 conv5_3 from the file ``--vgg16-weights`` names (no VGG19 file exists offline here)."""
    if args.vgg16_weights is None:
        return [{"type": "perceptual", "weight": 1.0}]
    return [
        {
            "type": "perceptual",
            "weight": 1.0,
            "network": "vgg16",
            "weights": str(args.vgg16_weights),
            "layers": {"conv5_3": 1.0},
        }
    ]


def recipe_esrgan(args: argparse.Namespace) -> dict[str, Any]:
    """ESRGAN stage 2, the step ``vs_basicsr.py`` times (its config sections): RRDB + VGG
    discriminator (BatchNorm), pixel (1e-2) + perceptual (VGG16 conv5_3, 1) + RaGAN (5e-3),
    Adam, EMA. VGG16 from ``--vgg16-weights``, else seeded random weights (same FLOPs)."""
    from vs_basicsr import esrgan_sections

    return esrgan_sections(args.nf, args.nb, args.gc, args.vgg16_weights)


def recipe_srg2_pixgan(args: argparse.Namespace) -> dict[str, Any]:
    """SRG2 generator + pixel discriminator with pixgan [+ perceptual]; ignores --nb/--gc."""
    return {
        "networks": {
            "generator": {"type": "srg2", "nf": args.nf},
            "discriminator": {"type": "pixdisc", "nf": 64},
        },
        "losses": [
            {"type": "pixel", "weight": 1e-2, "criterion": "l1"},
            *_perceptual(args),
            {"type": "gan", "weight": 5e-3, "gan_type": "pixgan"},
        ],
    }


RECIPES: dict[str, Recipe] = {
    "psnr": recipe_psnr,
    "esrgan": recipe_esrgan,
    "srg2_pixgan": recipe_srg2_pixgan,
}


def build_config(
    recipe: dict[str, Any],
    args: argparse.Namespace,
    hr_folder: Path,
    output_dir: Path,
    precision: str,
) -> Any:
    """A validated srkit config for one benchmark run: ``recipe`` supplies the networks and
    loss terms; data, batch, precision and logging come from the command line."""
    from srkit.config import apply_override, validate_config

    raw: dict[str, Any] = {
        "name": f"bench_{args.recipe}_{precision}",
        "scale": args.scale,
        "seed": 0,
        "output_dir": str(output_dir),
        "data": {
            "train": {
                "hr": str(hr_folder),
                "patch_size": args.patch,
                "batch_size": args.batch,
                "workers": args.workers,
            },
            "val": None,
        },
        "networks": recipe["networks"],
        "losses": recipe["losses"],
        "train": {
            "iterations": args.warmup + args.steps + args.profile + 1,
            "precision": precision,
            **recipe.get("train", {}),
        },
        "logging": {"tensorboard": False, "progress_bar": False},
    }
    for override in args.set:
        apply_override(raw, override)
    return validate_config(raw, source=f"benchmark recipe '{args.recipe}'")


# --------------------------------------------------------------------------- FLOPs


def rrdb_forward_flops(
    nf: int, nb: int, gc: int, scale: int, height: int, width: int, channels: int = 3
) -> int:
    """Analytic forward FLOPs of RRDBNet on one (channels, height, width) LR image.

    Every layer is a 3x3 conv costing 2 * 9 * Cin * Cout FLOPs per output pixel:

    * conv_first (channels -> nf) and conv_body (nf -> nf) at LR size h*w;
    * nb RRDBs x 3 residual dense blocks x 5 convs at LR size, conv k (k = 1..4) taking
      nf + (k-1)*gc channels to gc, conv 5 taking nf + 4*gc to nf:
      per pixel 2*9*(sum_k (nf + (k-1)*gc)*gc + (nf + 4*gc)*nf);
    * one conv_up (nf -> nf) per x2 stage at that stage's output size (2h*2w, 4h*4w, ...);
    * conv_hr (nf -> nf) and conv_last (nf -> channels) at HR size.

    Bias adds, LeakyReLU, nearest upsampling and the 0.2 residual scalings are ignored
    (element-wise, < 0.1%). At nf 64, nb 23, gc 32, x4 on a 32x32 LR patch: 36.7 GFLOP.
    """
    lr_pixels = height * width
    per_conv = 2 * 9
    dense = sum((nf + k * gc) * gc for k in range(4)) + (nf + 4 * gc) * nf
    trunk = channels * nf + nb * 3 * dense + nf * nf
    flops = per_conv * trunk * lr_pixels
    stages = int(math.log2(scale)) if scale > 1 else 0
    for stage in range(1, stages + 1):
        flops += per_conv * nf * nf * lr_pixels * 4**stage
    hr_pixels = lr_pixels * scale * scale
    flops += per_conv * (nf * nf + nf * channels) * hr_pixels
    return flops


def rrdb_training_flops(
    nf: int, nb: int, gc: int, scale: int, patch: int, batch: int, channels: int = 3
) -> int:
    """Forward + backward FLOPs of one RRDB training step: 3x the forward (input gradient and
    weight gradient each cost one forward), less conv_first's input gradient, which nothing
    needs (the LR batch does not require grad)."""
    lr = patch // scale
    forward = rrdb_forward_flops(nf, nb, gc, scale, lr, lr, channels)
    first_input_grad = 2 * 9 * channels * nf * lr * lr
    return batch * (3 * forward - first_input_grad)


# --------------------------------------------------------------------------- the run


def bf16_convolutions_fast() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (else aten's slow path)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def run_precision(
    args: argparse.Namespace, hr_folder: Path, output_dir: Path, precision: str
) -> dict[str, Any]:
    """Build a Trainer for ``precision`` and time its steps the way ``Trainer.run`` does."""
    from srkit.train.trainer import Trainer

    recipe = RECIPES[args.recipe](args)
    config = build_config(recipe, args, hr_folder, output_dir, precision)
    trainer = Trainer(config, quiet=True)
    device = trainer.device
    # The trainer's own DataLoader: its sampler, worker count, spawn context, pinning.
    batches = trainer.data_loader()
    counted_step = 0  # the first step is a warm-up step and also counts the FLOPs
    warmup = max(args.warmup, 1)
    data_times: list[float] = []
    step_times: list[float] = []
    cpu_times: list[float] = []
    flops = 0
    first_step_s = 0.0
    load_before = os.getloadavg()[0]
    try:
        for step in range(warmup + args.steps):
            started = time.perf_counter()
            cpu_started = time.process_time()
            batch = next(batches)
            loaded = time.perf_counter()
            with counting_flops(step == counted_step) as total_flops:
                trainer.train_step(batch, step, with_norms=False)
                synchronize(device)
            finished = time.perf_counter()
            cpu_used = time.process_time() - cpu_started
            if step == counted_step:
                flops = total_flops()
                first_step_s = finished - started
            if step >= warmup:
                data_times.append(loaded - started)
                step_times.append(finished - started)
                cpu_times.append(cpu_used)
            if not args.quiet:
                print(
                    f"  {precision} step {step + 1}/{warmup + args.steps}"
                    f"{' (warm-up)' if step < warmup else ''}: "
                    f"{(finished - started) * 1e3:.0f} ms, data {(loaded - started) * 1e3:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
        profile = (
            profile_trainer_steps(
                trainer, functools.partial(next, batches), warmup + args.steps, args.profile
            )
            if args.profile
            else None
        )
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        if trainer.logger is not None:
            trainer.logger.close()

    mean_step = statistics.fmean(step_times)
    achieved = flops / mean_step / 1e9
    row: dict[str, Any] = {
        "recipe": args.recipe,
        "precision": precision,
        "steps": len(step_times),
        "ms_per_step": mean_step * 1e3,
        "ms_per_step_median": statistics.median(step_times) * 1e3,
        "ms_per_step_min": min(step_times) * 1e3,
        "images_per_s": args.batch / mean_step,
        "data_wait_fraction": sum(data_times) / sum(step_times),
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": achieved,
        "first_step_s": first_step_s,
        # Cores this process kept busy during the timed steps (data workers not included); well
        # under the thread count means waiting, or other processes competing for the cores.
        "busy_cores": sum(cpu_times) / sum(step_times),
        "load_average": (load_before, os.getloadavg()[0]),
        "parameters": {
            name: sum(p.numel() for p in trainer.networks[name].parameters())
            for name in trainer.trained
        },
    }
    if config.networks["generator"].type == "rrdb" and len(trainer.trained) == 1:
        generator = config.networks["generator"]
        row["gflop_per_step_analytic"] = (
            rrdb_training_flops(
                generator.nf, generator.nb, generator.gc, config.scale, args.patch, args.batch
            )
            / 1e9
        )
    if profile is not None:
        row["profile"] = profile
    del trainer, batches
    gc.collect()
    return row


COLUMNS = [
    ("recipe", "recipe"),
    ("precision", "precision"),
    ("steps", "timed steps"),
    ("ms", "ms/step (mean)"),
    ("ms_median", "ms/step (median)"),
    ("ips", "images/s"),
    ("wait", "data wait"),
    ("gflop", "GFLOP/step"),
    ("achieved", "achieved GFLOP/s"),
    ("ratio", "of fp32 conv peak"),
    ("busy", "busy cores"),
    ("load", "load avg"),
]


def format_row(row: dict[str, Any], peak: float) -> dict[str, str]:
    return {
        "recipe": row["recipe"],
        "precision": row["precision"],
        "steps": str(row["steps"]),
        "ms": f"{row['ms_per_step']:.0f}",
        "ms_median": f"{row['ms_per_step_median']:.0f}",
        "ips": f"{row['images_per_s']:.2f}",
        "wait": f"{row['data_wait_fraction'] * 100:.1f}%",
        "gflop": f"{row['gflop_per_step']:.1f}",
        "achieved": f"{row['achieved_gflops']:.1f}",
        "ratio": f"{row['achieved_gflops'] / peak * 100:.0f}%",
        "busy": f"{row['busy_cores']:.2f}",
        "load": "{:.1f} → {:.1f}".format(*row["load_average"]),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="psnr")
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "fp16"],
                        default=["fp32", "bf16"])  # fmt: skip
    parser.add_argument("--steps", type=int, default=5, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first (at least 1; the first counts FLOPs)")  # fmt: skip
    parser.add_argument("--nf", type=int, default=64)
    parser.add_argument("--nb", type=int, default=23)
    parser.add_argument("--gc", type=int, default=32)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128, help="HR patch side")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=None,
                        help="HR image folder (default: generated photo-like PNGs)")  # fmt: skip
    parser.add_argument("--images", type=int, default=16,
                        help="generated images when --data is not given")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=480, help="side of generated images")
    parser.add_argument("--peak-layers", type=int, default=8,
                        help="conv3x3 layers in the peak reference stack")  # fmt: skip
    parser.add_argument("--peak-seconds", type=float, default=5.0,
                        help="least timed seconds of the peak reference")  # fmt: skip
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile N more steps per precision: time per part of the step "
                        "(step_profile.py) and the top ops")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. train.channels_last=true")  # fmt: skip
    parser.add_argument("--vgg16-weights", type=Path, default=None,
                        help="GAN recipes: VGG16 file for the perceptual term (default: esrgan "
                        "seeded random VGG16, srg2_pixgan VGG19 from the torch hub "
                        "cache)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--quiet", action="store_true", help="no per-step lines on stderr")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.patch % args.scale:
        parser.error("--patch must be a multiple of --scale")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from srkit.train.trainer import select_device

    with tempfile.TemporaryDirectory(prefix="srkit_bench_") as temporary:
        temporary_root = Path(temporary)
        if args.data is not None:
            hr_folder = args.data
        else:
            size = (args.image_size, args.image_size)
            hr_folder = make_image_folder(temporary_root / "hr", args.images, size)
        if args.recipe == "esrgan" and args.vgg16_weights is None:
            from vs_basicsr import write_random_vgg16

            args.vgg16_weights = write_random_vgg16(temporary_root / "vgg16_random.pth")
        device = select_device("auto")
        for override in args.set:
            if override.startswith("train.device="):
                device = select_device(override.split("=", 1)[1].strip())
        info = machine_info(device)
        lr_side = args.patch // args.scale
        if "bf16" in args.precision and device.type == "cpu" and not bf16_convolutions_fast():
            print(
                "warning: this CPU has no bf16 instructions oneDNN can use (no AVX512-BF16 / "
                "AMX): bf16 autocast convolutions fall back to aten's slow im2col path and a "
                "bf16 step can take 20-80x as long as fp32 (try --nb 1 first)",
                file=sys.stderr,
                flush=True,
            )
        peak_load = os.getloadavg()[0]
        peak = conv3x3_reference(
            args.batch,
            64,
            lr_side,
            args.peak_layers,
            device,
            min_seconds=args.peak_seconds,
        )
        peak["load_average"] = (peak_load, os.getloadavg()[0])
        peaks = {"fp32": peak}
        if "bf16" in args.precision:
            peaks["bf16"] = conv3x3_reference(
                args.batch,
                64,
                lr_side,
                args.peak_layers,
                device,
                torch.bfloat16,
                min_seconds=args.peak_seconds,
            )
        rows = [
            run_precision(args, hr_folder, temporary_root / "runs", precision)
            for precision in args.precision
        ]
        # The fp32 reference again after the training runs: the two show how much the
        # machine's speed drifted (other load, clocks); the ratio uses the higher one.
        after_load = os.getloadavg()[0]
        peaks["fp32 (after)"] = conv3x3_reference(
            args.batch, 64, lr_side, args.peak_layers, device, min_seconds=args.peak_seconds
        )
        peaks["fp32 (after)"]["load_average"] = (after_load, os.getloadavg()[0])

    fp32_peak = max(peak["gflops_median"], peaks["fp32 (after)"]["gflops_median"])
    command = "python benchmarks/train_step.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(f"command: {command.strip()}")
    print(
        f"machine: {info['cpu']}, {info['cpu_cores']} cores"
        + (f", {info['gpu']}" if "gpu" in info else "")
        + f"; torch {info['torch']} ({info['torch_threads']} threads); {info['date_utc']}"
    )
    data_text = str(args.data) if args.data else f"{args.images} generated {args.image_size}px PNGs"
    print(
        f"setup: recipe {args.recipe}, nf {args.nf} nb {args.nb} gc {args.gc} x{args.scale}, "
        f"batch {args.batch}, HR patch {args.patch}, workers {args.workers}, data: {data_text}; "
        f"warm-up {max(args.warmup, 1)} + timed {args.steps} steps per precision"
    )
    for name, result in peaks.items():
        print(
            f"conv3x3 64->64 fwd+bwd reference ({name}, {args.batch}x64x{lr_side}x{lr_side}, "
            f"{args.peak_layers} layers): {result['gflops_median']:.1f} GFLOP/s median, "
            f"{result['gflops_best']:.1f} best of {int(result['repeats'])}"
            + (
                " (load avg {:.1f} → {:.1f})".format(*result["load_average"])
                if "load_average" in result
                else ""
            )
        )
    print(f"fp32 conv3x3 peak used for the ratios: {fp32_peak:.1f} GFLOP/s")
    print()
    print(markdown_table([format_row(row, fp32_peak) for row in rows], COLUMNS))
    print()
    for row in rows:
        analytic = row.get("gflop_per_step_analytic")
        if analytic is not None:
            print(
                f"{row['precision']}: FlopCounterMode {row['gflop_per_step']:.1f} GFLOP/step, "
                f"analytic RRDB {analytic:.1f} GFLOP/step"
            )
        if "profile" in row:
            parts, top = row["profile"]
            print(
                f"\nprofile, {row['precision']}, {args.profile} steps: self CPU time per step "
                f"by part of the step (benchmarks/step_profile.py)\n\n{format_part_table(parts)}"
            )
            print(f"\ntop ops, {row['precision']}, {args.profile} steps:\n{top}")

    if args.json is not None:
        payload = {
            "command": command.strip(),
            "machine": info,
            "conv3x3_reference": peaks,
            "fp32_peak_gflops_used": fp32_peak,
            "results": [{k: v for k, v in row.items() if k != "profile"} for row in rows],
            "profile_parts": {
                row["precision"]: row["profile"][0] for row in rows if "profile" in row
            },
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
