"""``srkit doctor``: what this machine offers srkit, a short convolution benchmark, and what the
``auto`` settings pick here and why.

The benchmark times the convolution that dominates ESRGAN-style networks (3x3, 64 channels, on
a 64x64 feature map, forward only) in fp32 and in bf16 for ``--seconds`` in all, half
each, and reports GFLOP/s. ``auto`` itself never runs a benchmark (a run must pick the same
thing every time it starts): it follows the capability probes of :mod:`srkit.hardware`. The
benchmark is there to confirm them on a machine, and the doctor says so when it disagrees.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from srkit import __version__, hardware

CONV_CHANNELS = 64
CONV_SIDE = 64
CONV_BATCH = 1  # small calls, so an emulated bf16 still fits the time it is given


def conv_gflops(device: torch.device, precision: str, seconds: float) -> float:
    """Forward GFLOP/s of a 3x3 64-channel convolution at ``precision`` on ``device``."""
    conv = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, padding=1).to(device)
    x = torch.randn(CONV_BATCH, CONV_CHANNELS, CONV_SIDE, CONV_SIDE, device=device)
    flops = 2 * 9 * CONV_CHANNELS * CONV_CHANNELS * CONV_SIDE * CONV_SIDE * CONV_BATCH
    if precision == "bf16":
        conv = conv.to(torch.bfloat16)
        x = x.to(torch.bfloat16)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        started = time.perf_counter()
        conv(x)  # warm-up: kernel selection, weight reorders (counted in the time budget)
        synchronize()
        seconds -= time.perf_counter() - started
        runs, started = 0, time.perf_counter()
        while True:
            conv(x)
            runs += 1
            synchronize()
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
    return flops * runs / elapsed / 1e9


def report(seconds: float = 20.0, write: Callable[[str], None] | None = None) -> None:
    """Print the machine report (``write`` receives each line; default: stdout)."""
    write = write or (lambda line: print(line, file=sys.stdout, flush=True))
    flags = hardware.cpu_flags()
    threads = hardware.threads()
    write(f"srkit {__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}")
    write(
        f"CPU: {hardware.cpu_model()}, {threads['cpu_count']} logical cores; torch threads: "
        f"{threads['torch_intra_op']} intra-op, {threads['torch_inter_op']} inter-op"
    )
    have = [flag for flag in hardware.RELEVANT_CPU_FLAGS if flag in flags]
    missing = [flag for flag in hardware.RELEVANT_CPU_FLAGS if flag not in flags]
    write(f"  flags: {' '.join(have) or '(none found)'}; missing: {' '.join(missing) or '-'}")
    native = hardware.cpu_has_native_bf16()
    write(f"  oneDNN bf16: {'native' if native else 'emulated (no AVX512-BF16/AMX)'}")
    gpus = hardware.cuda_devices()
    write(f"CUDA: {', '.join(gpus) if gpus else 'no CUDA device'}")
    device = torch.device("cuda" if gpus else "cpu")
    if seconds > 0:
        fp32 = conv_gflops(device, "fp32", seconds / 2)
        bf16 = conv_gflops(device, "bf16", seconds / 2)
        write(
            f"conv 3x3 {CONV_CHANNELS}ch on {device.type}, {seconds:g} s: fp32 {fp32:.1f} "
            f"GFLOP/s, bf16 {bf16:.1f} GFLOP/s (bf16 = {bf16 / fp32:.2f}x fp32)"
        )
    precision = hardware.auto_precision(device)
    layout = hardware.auto_channels_last(device, precision.value)
    write(f"auto picks on {device.type}:")
    write(f"  train.precision / upscale --precision: {precision.value} ({precision.reason})")
    write(f"  train.channels_last: {str(layout.value).lower()} ({layout.reason})")
    if seconds > 0:
        faster = "bf16" if bf16 > fp32 else "fp32"
        if faster != precision.value:
            write(
                f"  note: the benchmark found {faster} faster here; set train.precision: "
                f"{faster} (and --precision {faster}) explicitly if your runs agree"
            )
