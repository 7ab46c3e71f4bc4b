"""What this machine offers, and what the ``auto`` settings pick on it.

``train.precision: auto`` (the default) and ``srkit upscale --precision auto``: **bf16** where the
device runs it natively, else **fp32**:

* a CUDA GPU that supports bf16 (compute capability 8.0 or newer: Ampere, Hopper, ...);
* a CPU whose oneDNN reports bf16 support (AVX512-BF16 or AMX). On a CPU without them bf16 is
  emulated and about 25x slower than fp32 (benchmarks/RESULTS.md), so ``auto`` keeps fp32 there.

fp16 is never picked: it needs a gradient scaler and overflows where bf16 (fp32's range) does not.

``train.channels_last: auto``: channels_last with bf16/fp16, where oneDNN's and cuDNN's
reduced-precision convolutions work in NHWC and a NCHW tensor pays a reorder per layer; the
layout the tensors already have (NCHW) in fp32, where channels_last measured 1.5% slower for an
ESRGAN step on an AVX2 CPU (benchmarks/RESULTS.md, docs/scaling.md).

Each choice comes with its reason, which the trainer logs and ``srkit doctor`` prints. Probes
that cannot answer (an old torch, a non-Linux ``/proc``) count as "no", so ``auto`` falls back
to fp32, which runs everywhere.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: CPU flags (as /proc/cpuinfo names them) that decide which kernels oneDNN can use.
RELEVANT_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_tile",
)


@dataclass(frozen=True)
class Choice:
    """A resolved ``auto`` setting and why it was picked."""

    value: Any
    reason: str


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` of /proc/cpuinfo (None where there is none)."""
    for line in _cpuinfo_lines():
        if line.startswith(name):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return set((_cpuinfo_field("flags") or "").split())


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_bf16(device: torch.device) -> bool:
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_capability(index) >= (8, 0)
    except (AssertionError, RuntimeError):
        return False


def auto_precision(device: torch.device) -> Choice:
    """``auto`` precision on ``device``: bf16 where it runs natively, else fp32."""
    if device.type == "cuda":
        if cuda_has_bf16(device):
            return Choice("bf16", "the CUDA GPU runs bf16 natively (compute capability >= 8.0)")
        return Choice("fp32", "the CUDA GPU has no native bf16 (compute capability < 8.0)")
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return Choice("bf16", "the CPU runs bf16 natively (oneDNN: AVX512-BF16/AMX)")
        return Choice(
            "fp32", "the CPU has no bf16 instructions (AVX512-BF16/AMX); bf16 would be emulated"
        )
    return Choice("fp32", f"no bf16 probe for {device.type} devices")


def auto_channels_last(device: torch.device, precision: str) -> Choice:
    """``auto`` memory layout for a run at ``precision`` (already resolved) on ``device``."""
    if precision in ("bf16", "fp16") and device.type in ("cpu", "cuda"):
        return Choice(True, f"{precision} convolutions on {device.type} work in channels_last")
    return Choice(False, f"{precision} on {device.type}: channels_last measured no faster here")


def resolve_precision(choice: str, device: torch.device) -> Choice:
    if choice == "auto":
        return auto_precision(device)
    return Choice(choice, "set in the config")


def resolve_channels_last(choice: bool | str, device: torch.device, precision: str) -> Choice:
    if choice == "auto":
        return auto_channels_last(device, precision)
    return Choice(bool(choice), "set in the config")


def threads() -> dict[str, int]:
    return {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count() or 1,
    }


def cuda_devices() -> list[str]:
    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        major, minor = properties.major, properties.minor
        memory = properties.total_memory / 2**30
        devices.append(f"cuda:{index} {properties.name} (sm {major}.{minor}, {memory:.0f} GiB)")
    return devices


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for bf16/fp16 (weights stay fp32; numerically fragile ops stay fp32); nothing
    for fp32. Training and inference both run their forward passes under it."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
