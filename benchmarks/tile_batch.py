"""Batched tiles against one tile per forward pass: CPU time of ``upscale_tensor``.

    python benchmarks/tile_batch.py [--rounds 4] [--tile-batch 8]

RRDB x4 (nf 64, nb 4, gc 32, random weights), a 128x128 LR input, tile 48, overlap 8 (9 tiles of
one size), one thread; the two variants alternate, and the median *CPU* time of each is
reported, so that other jobs on a shared machine disturb the ratio less than wall time.
"""

import argparse
import statistics
import time

import torch

from srkit.infer.api import upscale_tensor
from srkit.nets import build_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tile-batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_network("rrdb", nf=64, nb=4, gc=32, scale=4).eval()
    image = torch.rand(1, 3, 128, 128)
    seconds: dict[int, list[float]] = {1: [], args.tile_batch: []}
    for _ in range(args.rounds):
        for batch, times in seconds.items():
            started = time.process_time()
            upscale_tensor(net, image, tile=48, overlap=8, tile_batch=batch)
            times.append(time.process_time() - started)
        print({batch: round(times[-1], 2) for batch, times in seconds.items()}, flush=True)
    median = {batch: statistics.median(times) for batch, times in seconds.items()}
    print(
        f"median CPU s {median}; one-per-pass / batched = {median[1] / median[args.tile_batch]:.3f}"
    )


if __name__ == "__main__":
    main()
