"""Compact generator vs RRDB: training ms/step and upscale MP/s at the same input, x4.

Networks (random weights, x4): compact at num_feat 64 with 16 body convs (realesr-animevideov3's
shape) and 32 (realesr-general-x4v3's), and RRDB nf64 nb23 gc32 (ESRGAN / RealESRGAN_x4plus).

* Training: one step = forward of a batch of LR patches, L1 against a random HR batch, backward,
  Adam step; median over the timed steps after one warm-up step.
* Upscaling: one forward of a ``--size`` x ``--size`` LR image (no gradients, fp32, no tiling);
  MP/s counts output pixels (``(4 * size)^2``) per second. FLOPs of that forward are counted
  with ``FlopCounterMode``.

    python benchmarks/compact_vs_rrdb.py --threads 1 --clock cpu

``--clock cpu`` measures this process's CPU time (the work done, not the wait for a core on a
shared machine); use it with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from generators import forward_flops, time_forward

from srkit.nets import build_network

NETWORKS = {
    "compact nf64 nc16": ("compact", {"num_feat": 64, "num_conv": 16}),
    "compact nf64 nc32": ("compact", {"num_feat": 64, "num_conv": 32}),
    "rrdb nf64 nb23 gc32": ("rrdb", {"nf": 64, "nb": 23, "gc": 32}),
}


def time_train_step(
    model: torch.nn.Module, batch: int, patch: int, scale: int, repeats: int, clock: str
) -> float:
    """Median ms of one training step (forward, L1, backward, Adam) after one warm-up step."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    generator = torch.Generator().manual_seed(0)
    lr = torch.rand(batch, 3, patch, patch, generator=generator)
    hr = torch.rand(batch, 3, patch * scale, patch * scale, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for index in range(repeats + 1):
        started = now()
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(model(lr), hr).backward()
        optimizer.step()
        if index:
            times.append((now() - started) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="training batch")
    parser.add_argument("--patch", type=int, default=32, help="LR training patch side")
    parser.add_argument("--size", type=int, default=128, help="LR side of the upscaled image")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps/forwards")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = 4
    print(
        f"| generator | parameters | train ms/step (batch {args.batch}, {args.patch} px LR) "
        f"| GFLOP/forward @ {args.size}x{args.size} LR | upscale ms | upscale MP/s |"
    )
    print("|---" * 6 + "|")
    for label in args.networks:
        kind, options = NETWORKS[label]
        torch.manual_seed(0)
        model = build_network(kind, scale=scale, **options)
        parameters = sum(p.numel() for p in model.parameters())
        step = time_train_step(model, args.batch, args.patch, scale, args.repeats, args.clock)
        model.eval()
        x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
        flops = forward_flops(model, x)
        forward = time_forward(model, x, "fp32", args.repeats, args.clock)
        megapixels = (args.size * scale) ** 2 / 1e6
        print(
            f"| {label} | {parameters:,} | {step:.0f} | {flops / 1e9:.1f} | {forward:.0f} "
            f"| {megapixels / (forward / 1e3):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
