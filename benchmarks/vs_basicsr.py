"""srkit against BasicSR 1.4.2: the same ESRGAN-shaped training step, timed alternately.

The step (both frameworks, identical shapes): RRDB generator (nf, nb, gc, x4), VGG-style
discriminator (nf 64, BatchNorm, 128x128 input), generator loss = 1e-2 x L1 pixel + 1 x perceptual
(frozen ImageNet VGG features, L1) + 5e-3 x relativistic GAN, discriminator step with the
relativistic GAN loss, Adam (lr 1e-4, betas 0.9/0.99) for both networks, EMA of the generator
(0.999). Every process gets the same pre-made batches (HR patches and their x4 box-downscaled
LR), so data loading is excluded on both sides (srkit's loader is measured by train_step.py).
BasicSR runs its own ``ESRGANModel`` (``feed_data``, ``optimize_parameters``,
``update_learning_rate``); srkit runs its ``Trainer.train_step``.

Differences that remain, by construction of each framework (both are ESRGAN as its authors
ship it): BasicSR's discriminator step runs the discriminator three times (fake for the
relativistic mean, real, fake again with separate backwards), srkit's twice; BasicSR's
discriminator flattens its last 4x4x512 map into the first linear layer, srkit's averages it
(identical convolutions, the linear layer is < 0.1% of the FLOPs). The FLOPs each process
actually ran are counted (FlopCounterMode around one step) and printed.

Perceptual loss network: real ImageNet VGG16 (conv5_3, before ReLU) in both, from one local
file in torchvision's key layout (``bash ../shared/data/get-vgg16.sh /tmp/vgg16.pth``; the
convolutions only). ESRGAN uses VGG19 conv5_4; no VGG19 weights exist offline here, so both
sides use the same VGG16 file. BasicSR asks torchvision for ``vgg16(pretrained=True)`` (a
download, or the full ImageNet file with its classifier in the torch hub cache); the worker
replaces that one constructor by one that loads the convolutions from the local file.

Each measurement is its own process (warm-up steps, then timed steps; the median counts);
the driver runs the variants alternately, round after round (order reversed every other
round), and reports per-round ratios srkit / BasicSR of the median step times, so slow drifts
of a shared machine hit both sides of a ratio alike.

BasicSR environment (torch 2.14.1 + torchvision 0.29.1; BasicSR 1.4.2 does not run on newer
torchvision without a shim)::

    python3 -m venv /tmp/basicsr-venv
    /tmp/basicsr-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 basicsr==1.4.2
    /tmp/basicsr-venv/bin/pip install pydantic safetensors   # srkit's extra needs, see below

BasicSR 1.4.2 imports ``torchvision.transforms.functional_tensor``, which torchvision removed
(0.17); the worker installs a three-line shim before importing BasicSR (the module's name
pointing at ``torchvision.transforms.functional``, which has the one function it uses).
By default srkit runs with the *same* Python (``--srkit-python`` = ``--basicsr-python``, srkit
imported from this source tree), so both sides use one torch build; pass
``--srkit-python $(which python)`` to time srkit on its own environment instead.

Usage (from the repository root)::

    python benchmarks/vs_basicsr.py --nb 2 --rounds 3                    # CPU: a few minutes
    python benchmarks/vs_basicsr.py --best train.channels_last=true --best train.compile=true
    python benchmarks/vs_basicsr.py --device cuda --nb 23 --batch 16      # see gpu_bench.sh
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "src"

# --------------------------------------------------------------------------- shared by workers


def make_batches(args: argparse.Namespace, count: int) -> list[dict[str, Any]]:
    """``count`` (LR, HR) batches, identical in every process: smooth random HR patches (a
    low-resolution noise field upsampled, plus fine noise) and their box-downscaled LR."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(1234)
    batches = []
    for _ in range(count):
        coarse = torch.rand(args.batch, 3, args.patch // 8, args.patch // 8, generator=generator)
        hr = F.interpolate(coarse, scale_factor=8, mode="bilinear", align_corners=False)
        hr = (hr + 0.05 * torch.randn(hr.shape, generator=generator)).clamp(0, 1)
        lr = F.avg_pool2d(hr, args.scale)
        batches.append({"lr": lr.contiguous(), "hr": hr.contiguous()})
    return batches


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_steps(step_function, batches: list[dict[str, Any]], args: argparse.Namespace) -> dict:
    """Run ``step_function(batch, index)`` over the batches; the first counts FLOPs, the first
    ``--warmup`` are not timed. Returns wall and process-CPU step times and FLOPs."""
    from _common import counting_flops

    times, cpu_times, flops = [], [], 0
    for index, batch in enumerate(batches):
        synchronize(args.device)
        started, cpu_started = time.perf_counter(), time.process_time()
        with counting_flops(index == 0) as total:
            step_function(batch, index)
            synchronize(args.device)
        elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
        if index == 0:
            flops = total()
        if index >= args.warmup:
            times.append(elapsed)
            cpu_times.append(cpu_elapsed)
        print(f"  step {index + 1}/{len(batches)}: {elapsed * 1e3:.0f} ms", file=sys.stderr)
    return {"times": times, "cpu_times": cpu_times, "flops": flops}


def conv_peak(args: argparse.Namespace, repeats: int = 8) -> dict[str, float]:
    """fp32 conv3x3 64->64 forward+backward GFLOP/s (8 layers on (batch, 64, patch/scale,
    patch/scale), 3x the forward FLOPs; as ``_common.conv3x3_reference``), by wall clock and by
    process CPU time, medians after 2 untimed repeats."""
    import torch
    from _common import conv3x3_forward_flops
    from torch import nn

    device = torch.device(args.device)
    side = args.patch // args.scale
    stack = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1) for _ in range(8)]).to(device)
    features = torch.randn(args.batch, 64, side, side, device=device, requires_grad=True)
    flops = 3 * 8 * conv3x3_forward_flops(args.batch, 64, side, side)
    walls, cpus = [], []
    for repeat in range(repeats + 2):
        stack.zero_grad(set_to_none=True)
        features.grad = None
        synchronize(args.device)
        started, cpu_started = time.perf_counter(), time.process_time()
        stack(features).sum().backward()
        synchronize(args.device)
        if repeat >= 2:
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu_started)
    return {
        "wall": flops / statistics.median(walls) / 1e9,
        "cpu": flops / statistics.median(cpus) / 1e9,
    }


def worker_basicsr(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torchvision.transforms.functional as functional

    # BasicSR 1.4.2 imports rgb_to_grayscale from a module torchvision 0.17 removed.
    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)
    import basicsr
    import torchvision.models.vgg as torchvision_vgg
    from basicsr.models import build_model

    # BasicSR builds its perceptual VGG with torchvision's vgg16(pretrained=True), which wants
    # the whole ImageNet file (classifier included) in the hub cache. The local file holds the
    # convolutions only, all a feature extractor uses: build the VGG and load those.
    def vgg16_from_local_file(*_: Any, **__: Any) -> torch.nn.Module:
        network = torchvision_vgg.VGG(torchvision_vgg.make_layers(torchvision_vgg.cfgs["D"]))
        state = torch.load(args.vgg16, map_location="cpu", weights_only=True)
        features = {k.removeprefix("features."): v for k, v in state.items() if "features." in k}
        network.features.load_state_dict(features)
        return network

    torchvision_vgg.vgg16 = vgg16_from_local_file
    torch.manual_seed(0)
    options = {
        "name": "vs_srkit",
        "model_type": "ESRGANModel",
        "scale": args.scale,
        "num_gpu": 1 if args.device == "cuda" else 0,
        "is_train": True,
        "dist": False,
        "rank": 0,
        "world_size": 1,
        "path": {},
        "network_g": {
            "type": "RRDBNet",
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": args.nf,
            "num_block": args.nb,
            "num_grow_ch": args.gc,
            "scale": args.scale,
        },
        "network_d": {"type": "VGGStyleDiscriminator", "num_in_ch": 3, "num_feat": 64},
        "train": {
            "ema_decay": 0.999,
            "optim_g": {"type": "Adam", "lr": 1e-4, "weight_decay": 0, "betas": [0.9, 0.99]},
            "optim_d": {"type": "Adam", "lr": 1e-4, "weight_decay": 0, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [50000], "gamma": 0.5},
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1e-2, "reduction": "mean"},
            "perceptual_opt": {
                "type": "PerceptualLoss",
                "layer_weights": {"conv5_3": 1.0},
                "vgg_type": "vgg16",
                "use_input_norm": True,
                "range_norm": False,
                "perceptual_weight": 1.0,
                "style_weight": 0,
                "criterion": "l1",
            },
            "gan_opt": {
                "type": "GANLoss",
                "gan_type": "vanilla",
                "real_label_val": 1.0,
                "fake_label_val": 0.0,
                "loss_weight": 5e-3,
            },
            "net_d_iters": 1,
            "net_d_init_iters": 0,
        },
    }
    model = build_model(options)
    batches = make_batches(args, args.warmup + args.steps)

    def step(batch: dict[str, Any], index: int) -> None:
        iteration = index + 1
        model.update_learning_rate(iteration, warmup_iter=-1)
        model.feed_data({"lq": batch["lr"], "gt": batch["hr"]})
        model.optimize_parameters(iteration)

    result = time_steps(step, batches, args)
    result.update(framework=f"BasicSR {basicsr.__version__}", torch=torch.__version__)
    return result


def esrgan_sections(nf: int, nb: int, gc: int, vgg16: str | Path) -> dict[str, Any]:
    """srkit's config sections of the ESRGAN-shaped step timed here (``networks``, ``losses``,
    and the ``train`` keys that shape a step: Adam, schedule, EMA); ``train_step.py --recipe
    esrgan`` profiles the same step from these."""
    return {
        "networks": {
            "generator": {"type": "rrdb", "nf": nf, "nb": nb, "gc": gc},
            "discriminator": {"type": "vgg", "nf": 64, "norm": "batch"},
        },
        "losses": [
            {"type": "pixel", "weight": 1e-2, "criterion": "l1"},
            {
                "type": "perceptual",
                "weight": 1.0,
                "network": "vgg16",
                "layers": {"conv5_3": 1.0},
                "criterion": "l1",
                "weights": str(vgg16),
            },
            {"type": "gan", "weight": 5e-3, "gan_type": "ragan", "discriminator": "discriminator"},
        ],
        "train": {
            "optim": {
                "generator": {"lr": 1e-4, "betas": [0.9, 0.99]},
                "discriminator": {"lr": 1e-4, "betas": [0.9, 0.99]},
            },
            "schedule": {"type": "multistep", "milestones": [50000], "gamma": 0.5},
            "ema": {"decay": 0.999},
        },
    }


def srkit_config(args: argparse.Namespace, folder: Path) -> Any:
    from srkit.config import apply_override, validate_config

    sections = esrgan_sections(args.nf, args.nb, args.gc, args.vgg16)
    raw: dict[str, Any] = {
        "name": "vs_basicsr",
        "scale": args.scale,
        "seed": 0,
        "output_dir": str(folder / "runs"),
        "data": {
            "train": {
                "hr": str(folder / "hr"),
                "patch_size": args.patch,
                "batch_size": args.batch,
                "workers": 0,
            },
            "val": None,
        },
        "networks": sections["networks"],
        "losses": sections["losses"],
        "train": {"iterations": 1000, "device": args.device, **sections["train"]},
        "logging": {"tensorboard": False, "progress_bar": False},
    }
    for override in args.set:
        apply_override(raw, override)
    return validate_config(raw, source="vs_basicsr")


def worker_srkit(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(HERE))
    from _common import make_image_folder

    import srkit
    from srkit.train.trainer import Trainer

    folder = Path(tempfile.mkdtemp(prefix="srkit_vs_"))
    # The trainer scans a data folder at start-up; the timed steps use the pre-made batches.
    make_image_folder(folder / "hr", 2, (args.patch, args.patch))
    trainer = Trainer(srkit_config(args, folder), quiet=True)
    batches = make_batches(args, args.warmup + args.steps)

    def step(batch: dict[str, Any], index: int) -> None:
        trainer.train_step(batch, index)

    result = time_steps(step, batches, args)
    if args.peak:
        result["conv_peak_gflops"] = conv_peak(args)
    result.update(framework=f"srkit {srkit.__version__}", torch=torch.__version__)
    return result


# --------------------------------------------------------------------------- driver


def run_worker(
    python: str, framework: str, settings: list[str], args: argparse.Namespace, home: Path
) -> dict[str, Any]:
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        framework,
        "--device",
        args.device,
        "--nf",
        str(args.nf),
        "--nb",
        str(args.nb),
        "--gc",
        str(args.gc),
        "--batch",
        str(args.batch),
        "--patch",
        str(args.patch),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--vgg16",
        str(args.vgg16),
    ]
    for override in settings:
        command += ["--set", override]
    if not args.peak:
        command.append("--no-peak")
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SOURCE), environment.get("PYTHONPATH")) if p
    )
    environment["TORCH_HOME"] = str(home)  # nothing may come from a real hub cache
    if args.threads:
        environment["OMP_NUM_THREADS"] = str(args.threads)
    load = os.getloadavg()[0]
    # cwd: an empty folder, so BasicSR's fixed 'experiments/pretrained_models/vgg19...' path
    # does not exist and it takes the (replaced) torchvision constructor.
    completed = subprocess.run(
        command, cwd=home, env=environment, capture_output=True, text=True, check=False
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise SystemExit(
            f"{framework} worker failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}"
        )
    result = json.loads(lines[-1][len("RESULT ") :])
    result["load_average"] = (load, os.getloadavg()[0])
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", choices=["basicsr", "srkit"], help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--nf", type=int, default=64)
    parser.add_argument("--nb", type=int, default=None, help="RRDB blocks (default: 23 on "
                        "CUDA, 2 on CPU)")  # fmt: skip
    parser.add_argument("--gc", type=int, default=32)
    parser.add_argument("--scale", type=int, default=4, choices=[4])
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CUDA, 4 on CPU")
    parser.add_argument("--patch", type=int, default=128, choices=[128],
                        help="HR patch (BasicSR's VGG discriminator takes 128)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per process")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--best", action="append", default=None, metavar="KEY=VALUE",
                        help="srkit config override of the 'srkit best' variant (repeatable; none: "
                        "'srkit default', srkit's defaults)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--vgg16", type=Path, default=Path("/tmp/vgg16.pth"),
                        help="torchvision-layout ImageNet VGG16 weights (get-vgg16.sh), or "
                        "'random' for seeded random weights in both")  # fmt: skip
    parser.add_argument("--without-basicsr", action="store_true",
                        help="time srkit fp32 and srkit best only (no BasicSR environment)")  # fmt: skip
    parser.add_argument("--basicsr-python", default="/tmp/basicsr-venv/bin/python")
    parser.add_argument("--srkit-python", default=None,
                        help="Python for srkit (default: --basicsr-python, same torch)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of workers")
    parser.add_argument("--clock", choices=["wall", "cpu"], default=None,
                        help="time steps by wall clock or process CPU time (default: cpu on "
                        "a CPU with --threads 1, else wall)")  # fmt: skip
    parser.add_argument("--no-peak", dest="peak", action="store_false",
                        help="skip the conv3x3 peak measurement in the srkit workers")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.nb is None:
        args.nb = 23 if args.device == "cuda" else 2
    if args.batch is None:
        args.batch = 16 if args.device == "cuda" else 4
    if args.best is None:
        args.best = []  # srkit's defaults (precision and channels_last: auto)
    return args


def write_random_vgg16(path: Path) -> Path:
    """Seeded random VGG16 convolutions in torchvision's key layout (``features.N.*``), for
    machines without the ImageNet file: the timing does not depend on the weights' values."""
    import torch

    sys.path.insert(0, str(SOURCE))
    from srkit.nets.vgg import VGGFeatureExtractor

    torch.manual_seed(0)
    extractor = VGGFeatureExtractor("vgg16", ("conv5_3",), frozen=True)
    torch.save(extractor.state_dict(), path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        if args.device == "cuda":
            import torch

            torch.backends.cudnn.benchmark = True  # both sides alike (BasicSR's train.py does)
        worker = worker_basicsr if args.worker == "basicsr" else worker_srkit
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    sys.path.insert(0, str(HERE))
    from _common import cpu_model

    srkit_python = args.srkit_python or args.basicsr_python
    # On a CPU with one thread per process, process CPU time is the work a step did, whatever
    # else competes for the cores; wall time counts the waiting too. Several threads spin and
    # wait inside OpenMP, so there (and on GPUs) only wall time means anything.
    clock = args.clock or ("cpu" if args.device == "cpu" and args.threads == 1 else "wall")
    time_key = "cpu_times" if clock == "cpu" else "times"
    # "srkit default" is what a user gets without setting anything (precision and
    # channels_last auto); --best adds overrides to it and names it "srkit best".
    tuned = "srkit best" if args.best else "srkit default"
    variants = ["srkit fp32", tuned]
    if not args.without_basicsr:
        variants.insert(0, "basicsr")
    baseline = variants[0]
    fp32 = ["train.precision=fp32", "train.channels_last=false"]
    settings = {"basicsr": [], "srkit fp32": fp32, tuned: list(args.best)}
    pythons = {"basicsr": args.basicsr_python, "srkit fp32": srkit_python}
    pythons[tuned] = srkit_python
    rounds: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="vs_basicsr_") as temporary:
        home = Path(temporary)
        if str(args.vgg16) == "random":
            args.vgg16 = write_random_vgg16(home / "vgg16_random.pth")
            vgg_text = "VGG16 with random weights (seeded), the same file in every process"
        elif not args.vgg16.is_file():
            raise SystemExit(
                f"no VGG16 weights at {args.vgg16}: run ../shared/data/get-vgg16.sh, "
                "or pass --vgg16 random"
            )
        else:
            vgg_text = f"ImageNet VGG16 from {args.vgg16}"
        for index in range(args.rounds):
            order = variants if index % 2 == 0 else variants[::-1]
            results = {}
            for variant in order:
                framework = "basicsr" if variant == "basicsr" else "srkit"
                print(f"round {index + 1}/{args.rounds}: {variant}", file=sys.stderr, flush=True)
                results[variant] = run_worker(
                    pythons[variant], framework, settings[variant], args, home
                )
            rounds.append(results)
            line = ", ".join(
                f"{v} {statistics.median(results[v][time_key]) * 1e3:.0f} ms" for v in variants
            )
            print(f"round {index + 1}: {line}", file=sys.stderr, flush=True)

    def median_s(result: dict) -> float:
        return statistics.median(result[time_key])

    command = "python benchmarks/vs_basicsr.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    first = rounds[0]
    print(f"command: {command.strip()}")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; device {args.device}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print("versions: " + "; ".join(f"{v}: {first[v]['framework']} on torch {first[v]['torch']}"
                                   for v in variants))  # fmt: skip
    print(
        f"step: RRDB nf {args.nf} nb {args.nb} gc {args.gc} x{args.scale}, VGG-style D nf 64, "
        f"batch {args.batch}, HR patch {args.patch}; pixel + perceptual (VGG16 conv5_3: "
        f"{vgg_text}) + RaGAN, Adam, EMA; {args.warmup} warm-up + {args.steps} timed steps "
        f"per process, {args.rounds} rounds; {tuned} = {' '.join(args.best) or 'no overrides'}; "
        f"times: {'process CPU time (1 thread)' if clock == 'cpu' else 'wall clock'}"
    )
    print()
    others = variants[1:]
    header = ["round", *(f"{v} ms" for v in variants), *(f"{v} / {baseline}" for v in others)]
    print("| " + " | ".join([*header, "load avg"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    ratios: dict[str, list[float]] = {v: [] for v in others}
    for index, r in enumerate(rounds):
        cells = [str(index + 1)] + [f"{median_s(r[v]) * 1e3:.0f}" for v in variants]
        for v in others:
            ratios[v].append(median_s(r[v]) / median_s(r[baseline]))
            cells.append(f"{ratios[v][-1]:.3f}")
        loads = [value for v in variants for value in r[v]["load_average"]]
        cells.append(f"{min(loads):.1f}-{max(loads):.1f}")
        print("| " + " | ".join(cells) + " |")
    print()
    for v in others:
        median = statistics.median(ratios[v])
        print(
            f"{v} / {baseline} step time: median {median:.3f} over {len(ratios[v])} rounds "
            f"(range {min(ratios[v]):.3f}-{max(ratios[v]):.3f}; {1 / median:.2f}x as fast)"
        )
    if clock == "cpu":
        for v in others:
            wall = [statistics.median(r[v]["times"]) / statistics.median(r[baseline]["times"])
                    for r in rounds]  # fmt: skip
            print(f"{v} / {baseline} by wall clock (disturbed by other load): median "
                  f"{statistics.median(wall):.3f}, range {min(wall):.3f}-{max(wall):.3f}")  # fmt: skip
    print(
        "GFLOP per step (FlopCounterMode, first step): "
        + ", ".join(f"{v} {first[v]['flops'] / 1e9:.1f}" for v in variants)
    )
    peaks = [
        r[v]["conv_peak_gflops"][clock]
        for r in rounds
        for v in variants
        if "conv_peak_gflops" in r[v]
    ]
    if peaks:
        peak = statistics.median(peaks)
        for v in variants:
            achieved = statistics.median(r[v]["flops"] / median_s(r[v]) / 1e9 for r in rounds)
            print(
                f"{v}: achieved {achieved:.1f} GFLOP/s = {achieved / peak * 100:.0f}% of the "
                f"fp32 conv3x3 reference ({peak:.1f} GFLOP/s, median of the srkit processes')"
            )
    if args.json is not None:
        payload = {"command": command.strip(), "args": vars(args), "rounds": rounds}
        payload["ratios"] = ratios
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
