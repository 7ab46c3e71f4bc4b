"""The non-convolution parts of a training step, before and after issue 8's changes.

Times, on the parameters of an RRDB generator (default nf 64 nb 23: 16.7 M parameters in 702
tensors), alternating the variants within one process so that machine load hits them alike:

* Adam's step: the per-parameter loop (PyTorch's CPU default, what srkit used before),
  ``foreach=True``, and ``fused=True`` (what srkit uses now on CPU and CUDA);
* the EMA update: the former ``state_dict()`` + per-tensor ``lerp_`` loop, and the current
  ``torch._foreach_lerp_`` over the parameters.

Usage:
    python benchmarks/step_parts.py [--nb 23] [--repeats 7] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import machine_info, synchronize

from srkit.nets.rrdb import RRDBNet
from srkit.train.ema import ModelEMA


def ema_update_before(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """The EMA update as srkit did it up to issue 8 (kept here as the baseline)."""
    with torch.no_grad():
        averaged = average.state_dict()
        parameter_names = {name for name, _ in model.named_parameters()}
        for name, value in model.state_dict().items():
            target = averaged[name]
            if name in parameter_names and value.dtype.is_floating_point:
                target.lerp_(value.detach().to(target.dtype), 1.0 - decay)
            else:
                target.copy_(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nf", type=int, default=64)
    parser.add_argument("--nb", type=int, default=23)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = RRDBNet(nf=args.nf, nb=args.nb, gc=32, scale=4).to(device)
    parameters = list(model.parameters())
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter) * 1e-3
    adam = {
        "Adam loop (before)": torch.optim.Adam(parameters, lr=1e-4, foreach=False),
        "Adam foreach": torch.optim.Adam(parameters, lr=1e-4, foreach=True),
        "Adam fused (now)": torch.optim.Adam(parameters, lr=1e-4, fused=True),
    }
    ema = ModelEMA(model, 0.999)
    old_average = copy.deepcopy(model)
    variants = {name: optimizer.step for name, optimizer in adam.items()}
    variants["EMA state_dict loop (before)"] = lambda: ema_update_before(old_average, model, 0.999)
    variants["EMA foreach lerp (now)"] = lambda: ema.update(model, 10_000)
    for function in variants.values():  # allocate optimizer state, warm up
        function()
    times: dict[str, list[float]] = {name: [] for name in variants}
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, function in variants.items():
            synchronize(device)
            started = time.perf_counter()
            function()
            synchronize(device)
            times[name].append(time.perf_counter() - started)
    info = machine_info(device)
    print(f"command: python benchmarks/step_parts.py {' '.join(argv or sys.argv[1:])}".strip())
    print(
        f"machine: {info['cpu']}, {info['cpu_cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date_utc']}, load avg {load:.1f} -> "
        f"{os.getloadavg()[0]:.1f}"
    )
    count = sum(p.numel() for p in parameters)
    print(f"RRDB nf {args.nf} nb {args.nb}: {count / 1e6:.2f} M parameters in "
          f"{len(parameters)} tensors; median of {args.repeats} alternating repeats")  # fmt: skip
    print()
    print("| part | ms (median) | ms (min) |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1e3:.1f} | {min(values) * 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
