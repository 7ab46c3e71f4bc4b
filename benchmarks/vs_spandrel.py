"""``srkit upscale`` with its default settings against spandrel's fp32 forward, same weights.

The model: ESRGAN's RRDB x4 (nf 64, nb 23, gc 32), seeded random weights with the last conv
rescaled so the output has an image's range (``benchmarks/upscale.py``'s recipe; the PSNR
between the two sides then means something), or the weights ``--weights`` names. It is written
with srkit's own ``export_safetensors`` (the layout chaiNNer and ComfyUI users get from
``srkit export``) and that one file is loaded by both sides:

* **spandrel** (the model loader behind chaiNNer and ComfyUI): ``ModelLoader().load_from_file``,
  fp32, ``.eval()``, called through its ``ImageModelDescriptor`` as those tools call it (it runs
  the model under ``torch.inference_mode`` and clamps the output to [0, 1]);
* **srkit**: what ``srkit upscale MODEL IMAGE -o OUT`` does with no flags, by the same functions
  the CLI calls: ``load_model``, ``prepare_for_inference(model, "auto")`` (precision and
  channels_last ``auto``: bf16 weights + channels_last where the device runs bf16 natively, else
  fp32/NCHW), then ``upscale_tensor`` with ``tile="auto"``, ``tile_batch="auto"``,
  ``precision="auto"`` and the CLI's default overlap.

Both start from the same float32 (1, 3, LR, LR) image on the CPU and end with the float32 SR
image on the CPU (on a GPU the transfers are timed on both sides; image file I/O on neither).
The variants alternate within one process, order reversed every other round; the median of the
rounds counts. Output megapixels per second and the ratio srkit / spandrel are printed, with the
PSNR of srkit's output against spandrel's, which must be >= 45 dB (else the script fails: a fast
path that changes the picture is no result). On a CPU with ``--threads 1`` the times are process
CPU time (other jobs on a shared machine then disturb them less), else wall clock.

spandrel is not an srkit dependency: see ``benchmarks/_spandrel.py`` (``SRKIT_SPANDREL_PATH``,
``--spandrel-path``).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/vs_spandrel.py --threads 1 --rounds 5   # CPU
    python benchmarks/vs_spandrel.py --device cuda --rounds 10                  # GPU
    python benchmarks/vs_spandrel.py --weights RealESRGAN_x4plus.pth            # real weights
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, synchronize
from _spandrel import spandrel_available, spandrel_search_path

#: srkit's output must stay this close (PSNR, dB) to spandrel's fp32 output (issue 17).
MIN_PSNR_DB = 45.0


def build_weights(args: argparse.Namespace, folder: Path) -> Path:
    """The safetensors file both sides load: ``--weights`` converted by srkit's export, or a
    seeded RRDB with an image-like output range."""
    from upscale import calibrate

    from srkit.infer.api import load_model
    from srkit.infer.export import export_safetensors
    from srkit.nets import build_network

    if args.weights is not None:
        model = load_model(args.weights)
    else:
        torch.manual_seed(0)
        model = build_network("rrdb", scale=4, nf=args.nf, nb=args.nb, gc=32).eval()
        calibrate(model, model.conv_last)
    path = folder / "rrdb_x4.safetensors"
    for problem in export_safetensors(model, path):
        raise SystemExit(f"spandrel cannot load this model: {problem}")
    return path


def load_spandrel(path: Path, device: torch.device, folder: Path, explicit: str | None) -> Any:
    """spandrel's descriptor for ``path``, fp32, eval, on ``device``."""
    if not spandrel_available(explicit):
        raise SystemExit(
            "spandrel is not installed: pip install --no-deps --target DIR spandrel einops, "
            "then pass --spandrel-path DIR (or set SRKIT_SPANDREL_PATH)"
        )
    for entry in reversed(spandrel_search_path(folder / "stub", explicit)):
        sys.path.insert(0, entry)
    import spandrel

    descriptor = spandrel.ModelLoader().load_from_file(str(path))
    if descriptor.architecture.id != "ESRGAN" or descriptor.scale != 4:
        raise SystemExit(
            f"spandrel read the file as {descriptor.architecture.id} x{descriptor.scale}, "
            "not ESRGAN x4"
        )
    descriptor.to(device).eval()
    return descriptor, spandrel.__version__


def load_srkit(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, str]]:
    """The model as ``srkit upscale`` prepares it with no flags, and what ``auto`` chose."""
    from srkit.hardware import resolve_channels_last
    from srkit.infer.api import (
        check_precision,
        load_model,
        prepare_for_inference,
        resolve_precision,
    )

    check_precision("auto", device)
    model = load_model(path, device=device)
    model = prepare_for_inference(model, "auto")  # the CLI's call (no --compile)
    precision = resolve_precision("auto", device)
    layout = resolve_channels_last("auto", device, precision)
    return model, {"precision": precision, "channels_last": str(layout.value)}


def photo_input(side: int) -> torch.Tensor:
    from upscale import photo

    return photo(side, side).contiguous()


def run_rounds(
    variants: dict[str, Any], device: torch.device, rounds: int, cpu_clock: bool
) -> dict[str, list[float]]:
    """Seconds per call of each variant, alternating, order reversed every other round."""
    clock = time.process_time if cpu_clock else time.perf_counter
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    loads: list[tuple[float, float]] = []
    names = list(variants)
    for index in range(rounds):
        load = os.getloadavg()[0]
        for name in names if index % 2 == 0 else names[::-1]:
            synchronize(device)
            started = clock()
            variants[name]()
            synchronize(device)
            seconds[name].append(clock() - started)
        loads.append((load, os.getloadavg()[0]))
        line = ", ".join(f"{name} {values[-1]:.3f} s" for name, values in seconds.items())
        print(f"  round {index + 1}/{rounds}: {line}", file=sys.stderr, flush=True)
    seconds["_loads"] = loads  # type: ignore[assignment]
    return seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--lr-size", type=int, default=128, help="LR side (issue 17: 128)")
    parser.add_argument("--nf", type=int, default=64)
    parser.add_argument("--nb", type=int, default=23)
    parser.add_argument("--weights", type=Path, default=None,
                        help="an ESRGAN x4 weights file (any layout srkit reads; gc 32) instead "
                        "of seeded random weights")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each side first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--clock", choices=["wall", "cpu"], default=None,
                        help="default: cpu on a CPU with --threads 1, else wall")  # fmt: skip
    parser.add_argument("--spandrel-path", default=None,
                        help="folder holding spandrel (default: $SRKIT_SPANDREL_PATH, or the "
                        "environment)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    cpu_clock = args.clock or ("cpu" if device.type == "cpu" and args.threads == 1 else "wall")
    cpu_clock = cpu_clock == "cpu"
    from upscale import psnr  # PSNR (dB, peak 1) of two [0, 1] images

    from srkit.infer.api import DEFAULT_OVERLAP, upscale_tensor
    from srkit.infer.tiling import auto_tile, auto_tile_batch

    with tempfile.TemporaryDirectory(prefix="vs_spandrel_") as temporary:
        folder = Path(temporary)
        path = build_weights(args, folder)
        descriptor, spandrel_version = load_spandrel(path, device, folder, args.spandrel_path)
        model, chosen = load_srkit(path, device)
    image = photo_input(args.lr_size)
    element = 4 if chosen["precision"] == "fp32" else 2
    tile = auto_tile(model, args.lr_size, args.lr_size, device, element)
    chosen["tile"] = str(tile or "whole image")
    chosen["tile_batch"] = str(auto_tile_batch(model, tile, 1, device, element) if tile else 1)

    def run_srkit() -> torch.Tensor:
        # srkit upscale's call, every option at its default
        sr, _ = upscale_tensor(
            model, image, tile="auto", overlap=DEFAULT_OVERLAP, precision="auto",
            tile_batch="auto",
        )  # fmt: skip
        return sr

    def run_spandrel() -> torch.Tensor:
        return descriptor(image.to(device)).float().cpu()

    variants = {"srkit": run_srkit, "spandrel": run_spandrel}
    for _ in range(args.warmup):
        for function in variants.values():
            function()
    quality = psnr(run_srkit(), run_spandrel())
    results = run_rounds(variants, device, args.rounds, cpu_clock)
    loads = results.pop("_loads")
    megapixels = (args.lr_size * 4) ** 2 / 1e6
    median = {name: statistics.median(values) for name, values in results.items()}
    mp_s = {name: megapixels / value for name, value in median.items()}
    ratio = mp_s["srkit"] / mp_s["spandrel"]

    info = machine_info(device)
    info["bf16_cpu"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    command = "python benchmarks/vs_spandrel.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    where = f"{info['cpu']}, {info['cpu_cores']} cores" + (
        f", {info['gpu']}" if "gpu" in info else ""
    )
    source = str(args.weights) if args.weights else "seeded random weights, image-range output"
    print(f"command: {command.strip()}")
    print(
        f"machine: {where}; torch {info['torch']} ({info['torch_threads']} threads); "
        f"CPU bf16 (oneDNN): {info['bf16_cpu']}; device {device}; {info['date_utc']}"
    )
    print(
        f"model: RRDB x4 nf {args.nf} nb {args.nb} gc 32 ({source}), one safetensors file from "
        f"srkit export; input {args.lr_size}x{args.lr_size} -> {args.lr_size * 4}x"
        f"{args.lr_size * 4}; spandrel {spandrel_version} fp32; srkit defaults chose "
        + ", ".join(f"{key} {value}" for key, value in chosen.items())
    )
    print(
        f"timing: {args.warmup} warm-up call(s) each, then {args.rounds} alternating rounds, "
        f"median; {'process CPU time' if cpu_clock else 'wall clock'}; load average "
        f"{min(min(pair) for pair in loads):.2f}-{max(max(pair) for pair in loads):.2f}"
    )
    print()
    print("| side | s per image (median) | output MP/s |")
    print("|---|---|---|")
    for name in variants:
        print(f"| {name} | {median[name]:.4f} | {mp_s[name]:.4f} |")
    print()
    per_round = [s / k for s, k in zip(results["spandrel"], results["srkit"], strict=True)]
    print(f"srkit / spandrel (output MP/s, medians): {ratio:.3f}x; per round: "
          + ", ".join(f"{value:.3f}" for value in per_round))  # fmt: skip
    print(f"PSNR of srkit's output against spandrel's: {quality:.1f} dB (must be >= {MIN_PSNR_DB})")
    if args.json is not None:
        payload = {
            "command": command.strip(),
            "machine": info,
            "chosen": chosen,
            "spandrel": spandrel_version,
            "seconds": results,
            "load_average": loads,
            "mp_per_s": mp_s,
            "ratio": ratio,
            "per_round_ratio": per_round,
            "psnr_db": quality,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if not quality >= MIN_PSNR_DB:
        print(
            f"FAILED: srkit's output is {quality:.1f} dB from spandrel's (< {MIN_PSNR_DB} dB)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
