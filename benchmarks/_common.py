"""Helpers shared by the benchmark scripts: test images, machine facts, the conv3x3 reference.

Not part of the ``srkit`` package; the scripts import it from their own folder.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn


def write_photo_like(path: Path, size: tuple[int, int], seed: int) -> None:
    """A smooth random image with hard edges (same recipe as ``tests/conftest.py``)."""
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.28)
        channels.append(0.5 + 0.4 * np.sin(fx * 6.28 * x + phase) * np.cos(fy * 6.28 * y))
    image = np.stack(channels, axis=-1)
    image[(x * 7 + y * 3) % 1 < 0.15] *= 0.5  # some hard edges
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.clip(0, 1) * 255).round().astype(np.uint8)).save(path)


def make_image_folder(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """``count`` photo-like PNGs of ``size`` (height, width) in ``folder``."""
    for index in range(count):
        write_photo_like(folder / f"img{index:03d}.png", size, seed=index)
    return folder


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` reports it (falls back to /proc/cpuinfo, platform)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    """Facts that belong next to every benchmark figure."""
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_repeated(
    function: Callable[[], Any],
    device: torch.device,
    warmup: int = 2,
    min_repeats: int = 5,
    min_seconds: float = 3.0,
) -> list[float]:
    """Seconds per call of ``function``: ``warmup`` untimed calls, then at least
    ``min_repeats`` timed calls and at least ``min_seconds`` in total."""
    for _ in range(warmup):
        function()
    synchronize(device)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - begin)
    return times


def conv3x3_forward_flops(batch: int, channels: int, height: int, width: int) -> int:
    """FLOPs of one conv3x3 ``channels -> channels`` forward at stride 1, padding 1:
    2 (multiply + add) * Cin * Cout * 9 * H * W per image (bias ignored)."""
    return 2 * channels * channels * 9 * height * width * batch


def conv3x3_reference(
    batch: int,
    channels: int = 64,
    size: int = 32,
    layers: int = 8,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    min_seconds: float = 3.0,
) -> dict[str, float]:
    """Measured forward+backward GFLOP/s of a stack of conv3x3 ``channels -> channels`` layers
    on (batch, channels, size, size) feature maps.

    FLOPs counted: 3x the forward FLOPs of every layer (the backward computes the gradients of
    both the input and the weights, each as costly as the forward). The input requires grad,
    so the first layer's input gradient is computed too and the 3x holds for every layer.
    ``dtype`` None = float32; ``torch.bfloat16`` runs the stack under bf16 autocast, as the
    trainer does. Returns the median and best GFLOP/s over the timed repeats.
    """
    device = device or torch.device("cpu")
    stack = nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(layers)]).to(
        device
    )
    features = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype)
        if dtype is not None and dtype != torch.float32
        else torch.autocast(device_type=device.type, enabled=False)
    )

    def forward_backward() -> None:
        stack.zero_grad(set_to_none=True)
        features.grad = None
        with autocast:
            output = stack(features)
        output.float().sum().backward()

    times = time_repeated(forward_backward, device, min_seconds=min_seconds)
    flops = 3 * layers * conv3x3_forward_flops(batch, channels, size, size)
    return {
        "gflops_median": flops / statistics.median(times) / 1e9,
        "gflops_best": flops / min(times) / 1e9,
        "flops_per_call": float(flops),
        "repeats": float(len(times)),
    }


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub markdown table of ``rows``; ``columns`` = (key, header) pairs."""
    lines = [
        "| " + " | ".join(header for _, header in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")) for key, _ in columns) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def counting_flops(enabled: bool):
    """Yield a callable returning the FLOPs counted inside the block (0 when disabled); it
    stays valid after the block."""
    if not enabled:
        yield lambda: 0
        return
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        yield counter.get_total_flops
