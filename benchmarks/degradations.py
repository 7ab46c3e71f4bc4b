"""Cost of the real-world degradations: in the data workers (per patch) vs batched in the step.

Measures, on HR patches cut from real photos (or synthetic ones without ``--photos``):

* **worker**: what a data worker does per item, one patch at a time, one thread (DataLoader
  workers run with one): ``pipeline.target`` (USM) + ``pipeline(patch, rng)`` with its own
  draws. Reported as ms per patch, with the share of each stage.
* **batched**: the whole batch through the pipeline in one call, one set of draws for the batch
  (what a step-side, batched implementation would do at best on this device: one kernel, one
  resize, one noise call per batch; JPEG stays per image). Reported as ms per patch, at one
  thread and at ``--threads``.

The stage shares come from timing each stage's ``__call__`` (patched on the class for the
measurement only).

    python benchmarks/degradations.py --photos /work/cache/photos --patch 128 --batch 8
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import machine_info

from srkit.data import degrade
from srkit.data.degrade import PRESETS, DegradationPipeline


def patches(photos: Path | None, count: int, size: int, seed: int) -> list[torch.Tensor]:
    """``count`` random ``size`` HR patches (1, 3, size, size) from the photos."""
    rng = np.random.default_rng(seed)
    if photos is None:
        return [
            torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(i))
            for i in range(count)
        ]
    from srkit.data.io import read_rgb

    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    images = [
        read_rgb(files[int(i)])
        for i in rng.choice(len(files), size=min(8, len(files)), replace=False)
    ]
    result = []
    for index in range(count):
        image = images[index % len(images)]
        top = int(rng.integers(0, image.shape[0] - size + 1))
        left = int(rng.integers(0, image.shape[1] - size + 1))
        crop = np.ascontiguousarray(image[top : top + size, left : left + size].transpose(2, 0, 1))
        result.append(torch.from_numpy(crop)[None])
    return result


@contextlib.contextmanager
def stage_timers(totals: dict[str, float]):
    """Time every stage class's ``__call__`` into ``totals`` (seconds) while inside."""
    classes = [
        degrade.Blur,
        degrade.Resize,
        degrade.Noise,
        degrade.Jpeg,
        degrade.FinalStep,
        degrade.Sharpen,
    ]
    originals = {kind: kind.__call__ for kind in classes}

    def timed(kind, original):
        @functools.wraps(original)
        def call(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                totals[kind.__name__] += time.perf_counter() - start

        return call

    for kind, original in originals.items():
        kind.__call__ = timed(kind, original)
    try:
        yield
    finally:
        for kind, original in originals.items():
            kind.__call__ = original


def worker_cost(
    pipeline: DegradationPipeline, hr: list[torch.Tensor]
) -> tuple[float, dict[str, float]]:
    torch.set_num_threads(1)
    for index in range(3):  # warm-up
        pipeline(pipeline.target(hr[index]), np.random.default_rng(index))
    totals: dict[str, float] = defaultdict(float)
    with stage_timers(totals):
        start = time.perf_counter()
        for index, patch in enumerate(hr):
            pipeline(pipeline.target(patch), np.random.default_rng(1000 + index))
        elapsed = time.perf_counter() - start
    return elapsed / len(hr) * 1000, {name: value / elapsed for name, value in totals.items()}


def batched_cost(
    pipeline: DegradationPipeline, hr: list[torch.Tensor], batch: int, threads: int
) -> float:
    torch.set_num_threads(threads)
    batches = [torch.cat(hr[i : i + batch]) for i in range(0, len(hr) - batch + 1, batch)]
    pipeline(pipeline.target(batches[0]), np.random.default_rng(0))  # warm-up
    start = time.perf_counter()
    for index, images in enumerate(batches):
        pipeline(pipeline.target(images), np.random.default_rng(2000 + index))
    return (time.perf_counter() - start) / (len(batches) * batch) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, help="folder of photos (default: synthetic patches)")
    parser.add_argument("--patch", type=int, default=128, help="HR patch side (128)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--count", type=int, default=160, help="patches timed (160)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="threads of the second batched run")
    args = parser.parse_args()

    pipeline = DegradationPipeline.from_settings(PRESETS["realesrgan"], args.scale)
    hr = patches(args.photos, args.count, args.patch, seed=0)
    per_patch, shares = worker_cost(pipeline, hr)
    result = {
        "machine": machine_info(torch.device("cpu")),
        "patch": args.patch,
        "scale": args.scale,
        "worker_ms_per_patch_1_thread": round(per_patch, 2),
        "worker_stage_shares": {name: round(share, 3) for name, share in sorted(shares.items())},
        "batched_ms_per_patch_1_thread": round(batched_cost(pipeline, hr, args.batch, 1), 2),
        f"batched_ms_per_patch_{args.threads}_threads": round(
            batched_cost(pipeline, hr, args.batch, args.threads), 2
        ),
        "batch": args.batch,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
