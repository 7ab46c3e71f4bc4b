"""Benchmark ``srkit upscale`` on the CPU: tiled vs untiled, fp32 vs bf16, and memory per pixel.

    python benchmarks/upscale.py                      # speed + precision, RRDB x4 nf64 nb23
    python benchmarks/upscale.py --memory             # peak RSS per pixel vs the --tile auto estimate
    python benchmarks/upscale.py --tiling-diff d.png  # amplified |tiled - untiled| picture

The model is ESRGAN's RRDB x4 (nf=64, nb=23, gc=32) with random weights, its last conv rescaled
so the output has an image's range (mean ~0.5, std ~0.2; same compute, meaningful PSNR). The
input is the scikit-image astronaut (or a synthetic pattern without scikit-image), bicubic
downscaled to the LR size. Throughput is megapixels of *output* per second; each variant runs
``--repeats`` times, interleaved, and the median is reported, because this benchmark is meant
for shared 2-core machines whose load changes while it runs (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from srkit.infer.api import upscale_tensor
from srkit.infer.tiling import PEAK_TO_LARGEST_MAP, plan_tiles
from srkit.nets import build_network


def photo(height: int, width: int) -> torch.Tensor:
    """A photo (1, 3, height, width) in [0, 1]: the astronaut, area-downscaled."""
    try:
        from skimage import data

        pixels = data.astronaut().astype(np.float32) / 255.0
    except ImportError:
        y, x = np.mgrid[0:512, 0:512] / 512.0
        pixels = np.stack(
            [0.5 + 0.4 * np.sin(f * 6.28 * x) * np.cos(f * 6.28 * y) for f in (2, 3, 5)], axis=-1
        ).astype(np.float32)
    tensor = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]
    return F.interpolate(tensor, size=(height, width), mode="area").clamp(0, 1)


def calibrate(model: torch.nn.Module, last: torch.nn.Conv2d) -> torch.nn.Module:
    """Rescale the last conv so the output has mean 0.5 and std 0.2 on random input."""
    probe = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = model(probe)
        output = output if isinstance(output, torch.Tensor) else output["sr"]
        last.weight.mul_(0.2 / output.std())
        output = model(probe)
        output = output if isinstance(output, torch.Tensor) else output["sr"]
        last.bias.add_(0.5 - output.mean())
    return model


def esrgan() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_network("rrdb", scale=4, nf=64, nb=23, gc=32).eval()
    return calibrate(model, model.conv_last)


def timed(function) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def machine() -> dict[str, str]:
    model_name = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model_name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu": model_name,
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def speed(args: argparse.Namespace) -> dict:
    model = esrgan()
    image = photo(args.lr_size, args.lr_size)
    plan = plan_tiles(args.lr_size, args.lr_size, args.tile, args.overlap)
    megapixels = (args.lr_size * 4) ** 2 / 1e6
    upscale_tensor(model, image[:, :, :16, :16], tile=0)  # warm-up (allocator, kernels)
    untiled, tiled, one_by_one = [], [], []
    reference = result = None
    for _ in range(args.repeats):
        seconds, reference = timed(lambda: upscale_tensor(model, image, tile=0)[0])
        untiled.append(seconds)
        # tile_batch "auto" (the default): tiles of one size share a forward pass.
        seconds, result = timed(
            lambda: upscale_tensor(model, image, tile=args.tile, overlap=args.overlap)[0]
        )
        tiled.append(seconds)
        seconds, _ = timed(
            lambda: upscale_tensor(
                model, image, tile=args.tile, overlap=args.overlap, tile_batch=1
            )[0]
        )
        one_by_one.append(seconds)
        print(
            f"  untiled {untiled[-1]:.2f} s, tiled {tiled[-1]:.2f} s, "
            f"tiled one tile per pass {one_by_one[-1]:.2f} s",
            flush=True,
        )
    t_untiled, t_tiled = statistics.median(untiled), statistics.median(tiled)
    report = {
        "lr_size": args.lr_size,
        "tile": args.tile,
        "overlap": args.overlap,
        "tiles": plan.count,
        "computed_fraction": round(plan.computed_fraction, 4),
        "untiled_s": untiled,
        "tiled_s": tiled,
        "untiled_mp_s": megapixels / t_untiled,
        "tiled_mp_s": megapixels / t_tiled,
        "tiling_overhead": t_tiled / t_untiled - 1,
        "overhead_beyond_recomputed_pixels": t_tiled / (t_untiled * plan.computed_fraction) - 1,
        "tiled_vs_untiled_max_abs": float((reference - result).abs().max()),
        "tiled_one_per_pass_s": one_by_one,
        "tile_batch_speedup": statistics.median(one_by_one) / t_tiled,
    }

    small = photo(args.bf16_size, args.bf16_size)
    small_mp = (args.bf16_size * 4) ** 2 / 1e6
    fp32_s, fp32 = timed(lambda: upscale_tensor(model, small, tile=0)[0])
    bf16_s, bf16 = timed(lambda: upscale_tensor(model, small, tile=0, precision="bf16")[0])
    report.update(
        bf16_size=args.bf16_size,
        fp32_mp_s=small_mp / fp32_s,
        bf16_mp_s=small_mp / bf16_s,
        bf16_psnr_db=psnr(fp32, bf16),
        bf16_max_abs=float((fp32 - bf16).abs().max()),
        cpu_has_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    )
    return report


_MEMORY_CHILD = """
import json, resource, sys, torch
sys.path.insert(0, {here!r})
from upscale import calibrate
from srkit.infer.tiling import activation_bytes_per_pixel, split_output
from srkit.nets import build_network
kind, size = sys.argv[1], int(sys.argv[2])
options = {{"rrdb": dict(nf=64, nb=23), "spsr": dict(nf=64, nb=23),
           "srg2": dict(nf=64, depth=4, transforms=8, temperature=1.0)}}[kind]
model = build_network(kind, scale=4, **options).eval()
estimate = activation_bytes_per_pixel(model, torch.device("cpu"), 4)
with torch.no_grad():
    model(torch.rand(1, 3, 8, 8))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out, _ = split_output(model(torch.rand(1, 3, size, size)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"kind": kind, "size": size, "peak_bytes_per_px": (peak - before) / size**2,
                  "estimate_bytes_per_px": estimate}}))
"""


def memory(args: argparse.Namespace) -> list[dict]:
    """Peak RSS growth per input pixel in a fresh process, against the --tile auto estimate."""
    here = str(Path(__file__).resolve().parent)
    script = _MEMORY_CHILD.format(here=here)
    rows = []
    for kind in ("rrdb", "spsr", "srg2"):
        result = subprocess.run(
            [sys.executable, "-c", script, kind, str(args.memory_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        # The estimate is PEAK_TO_LARGEST_MAP x the largest tensor; report the measured multiple.
        largest = row["estimate_bytes_per_px"] / PEAK_TO_LARGEST_MAP
        row["peak_over_largest_map"] = row["peak_bytes_per_px"] / largest
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def tiling_difference(path: Path) -> dict:
    """|tiled - untiled| of the test-suite RRDB on the 512x384 photo, amplified, as a PNG.

    Three panels side by side: overlap 16 (the tested setting), overlap 8, and overlap 0 (plain
    cutting, for comparison), each showing ``min(1, 64 * 255 * |difference|)`` so that a
    difference of 1/64 of one 8-bit level is white.
    """
    from srkit.data.io import write_image

    torch.manual_seed(0)
    model = build_network("rrdb", scale=2, nf=16, nb=2, gc=8).eval()
    calibrate(model, model.conv_last)
    try:  # the crop the test suite uses
        from skimage import data

        pixels = data.astronaut()[:384, :512].astype(np.float32) / 255.0
        image = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]
    except ImportError:
        image = photo(384, 512)
    reference, _ = upscale_tensor(model, image, tile=0)
    panels, stats = [], {}
    for overlap in (16, 8, 0):
        tiled, _ = upscale_tensor(model, image, tile=96, overlap=overlap)
        difference = (tiled - reference).abs().amax(dim=1)[0]
        stats[f"overlap_{overlap}_max_levels"] = float(difference.max() * 255)
        stats[f"overlap_{overlap}_mean_levels"] = float(difference.mean() * 255)
        panels.append((difference * 255 * 64).clamp(0, 1))
        panels.append(torch.full((difference.shape[0], 8), 0.5))
    write_image(path, torch.cat(panels[:-1], dim=1).numpy())
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-size", type=int, default=64, help="LR side for tiled vs untiled")
    parser.add_argument("--tile", type=int, default=48)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--bf16-size", type=int, default=16, help="LR side for fp32 vs bf16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="measure peak memory per pixel")
    parser.add_argument("--memory-size", type=int, default=64)
    parser.add_argument("--tiling-diff", type=Path, help="write the tiling difference picture")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's choice, one per core)"
    )
    args = parser.parse_args()
    if args.threads:
        # On a loaded machine, OpenMP threads spin-wait for each other at every operation;
        # one thread measures the work itself.
        torch.set_num_threads(args.threads)

    results: dict = {"machine": machine(), "load_before": os.getloadavg()}
    print(json.dumps(results["machine"]))
    if args.tiling_diff:
        results["tiling_difference"] = tiling_difference(args.tiling_diff)
        print(json.dumps(results["tiling_difference"], indent=1))
    elif args.memory:
        results["memory"] = memory(args)
    else:
        results["speed"] = speed(args)
        print(json.dumps(results["speed"], indent=1))
    results["load_after"] = os.getloadavg()
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
