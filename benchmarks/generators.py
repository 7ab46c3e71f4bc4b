"""Forward speed, parameters and FLOPs of srkit's generators (RRDB, SPSR, SRG2).

For each generator at its default (paper-sized) hyper-parameters: parameter count, forward
FLOPs at the given LR size (counted by ``torch.utils.flop_counter.FlopCounterMode``), and the
median forward time in ms for each precision (bf16 = autocast), in eval mode without gradients.

    python benchmarks/generators.py --size 64 --precision fp32 bf16 --repeats 3
    python benchmarks/generators.py --threads 1 --clock cpu      # on a shared machine

On CPUs without native bf16 (no AVX512-BF16/AMX; ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``
False) bf16 convolutions take a slow generic path; the script says so.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from srkit.nets import build_network

GENERATORS = {
    "rrdb": {"nf": 64, "nb": 23, "gc": 32},
    "spsr": {"nf": 64, "nb": 23, "gc": 32},
    "srg2": {},
}


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def time_forward(
    model: torch.nn.Module, x: torch.Tensor, precision: str, repeats: int, clock: str = "wall"
) -> float:
    """Median time of one forward in ms (after one warm-up run).

    ``clock="cpu"`` measures this process's CPU time instead of wall time: on a shared machine
    with one thread that is the work the forward did, not the time spent waiting for a core.
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    autocast = (
        torch.autocast(x.device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    times = []
    with torch.no_grad(), autocast:
        for index in range(repeats + 1):
            started = now()
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            if index:
                times.append((now() - started) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="LR side in pixels")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument(
        "--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--networks", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or process CPU time (use with --threads 1 on a shared machine)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and "bf16" in args.precision:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if not native:
            print("note: this CPU has no native bf16 convolutions; bf16 times are the slow path")
    x = torch.rand(1, 3, args.size, args.size, device=device)
    header = f"| generator | parameters | GFLOP/forward @ {args.size}x{args.size} LR |"
    header += "".join(f" {p} ms ({args.clock}) |" for p in args.precision)
    print(header)
    print("|---" * (3 + len(args.precision)) + "|")
    for name in args.networks:
        model = build_network(name, scale=args.scale, **GENERATORS[name]).eval().to(device)
        parameters = sum(p.numel() for p in model.parameters())
        flops = forward_flops(model, x)
        times = [time_forward(model, x, p, args.repeats, args.clock) for p in args.precision]
        row = f"| {name} | {parameters:,} | {flops / 1e9:.1f} |" + "".join(
            f" {t:.0f} |" for t in times
        )
        print(row, flush=True)


if __name__ == "__main__":
    main()
