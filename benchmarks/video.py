"""Benchmark video upscaling (``srkit upscale`` on a video, ``srkit.upscale_video``).

    python benchmarks/video.py                              # 854x480, 1 s at 24 frames/s, RRDB x2 nf16 nb2
    python benchmarks/video.py --scale 4 --seconds 0.5 --threads 1

Makes a synthetic 480p clip with PyAV (moving shapes and a sine tone, as the tests do:
``tests/video_clips.py``), upscales it with a small RRDB (random weights, its last conv rescaled
so the output has an image's range: same compute, a picture the encoder has to work on) and
prints frames per second and the share of the wall time spent decoding (demuxing, decoding,
YUV -> RGB), in the network (with the tensor conversions around it) and encoding (RGB -> YUV,
H.264, muxing video and the copied audio). ``--repeats`` runs are made and the fastest is
reported; the load average before and after shows whether the machine was shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import machine_info

from srkit.infer.video import upscale_video
from srkit.nets import build_network
from video_clips import make_clip


def small_rrdb(scale: int, nf: int, nb: int, gc: int) -> torch.nn.Module:
    """RRDB with random weights whose output has an image's range (mean ~0.5, std ~0.2)."""
    torch.manual_seed(0)
    model = build_network("rrdb", scale=scale, nf=nf, nb=nb, gc=gc).eval()
    probe = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.conv_last.weight.mul_(0.2 / model(probe).std())
        model.conv_last.bias.add_(0.5 - model(probe).mean())
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rate", type=int, default=24, help="frames per second of the clip")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--nf", type=int, default=16)
    parser.add_argument("--nb", type=int, default=2)
    parser.add_argument("--gc", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--codec", default="h264")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import av

    model = small_rrdb(args.scale, args.nf, args.nb, args.gc)
    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(prefix="srkit-video-bench-") as folder:
        started = time.perf_counter()
        clip = make_clip(
            Path(folder) / "clip.mp4", args.width, args.height, args.rate, args.seconds
        )
        made = time.perf_counter() - started
        load_before = os.getloadavg()
        runs = []
        for _ in range(args.repeats):
            result = upscale_video(
                model,
                clip.path,
                Path(folder) / "out.mp4",
                batch=args.batch,
                codec=args.codec,
                crf=args.crf,
            )
            runs.append(result)
        load_after = os.getloadavg()
    best = min(runs, key=lambda r: r.seconds)
    shares = best.shares()
    facts = {
        **machine_info(torch.device("cpu")),
        "pyav": av.__version__,
        "ffmpeg": av.ffmpeg_version_info,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }
    row = {
        "input": f"{args.width}x{args.height}, {clip.frames} frames at {args.rate}/s",
        "output": f"{args.width * args.scale}x{args.height * args.scale}",
        "model": f"RRDB x{args.scale} nf{args.nf} nb{args.nb} gc{args.gc} ({parameters:,} params)",
        "batch": args.batch,
        "codec": f"{args.codec} crf {args.crf}",
        "frames_per_second": round(best.frames_per_second, 3),
        "seconds": round(best.seconds, 2),
        "decode_share": round(shares["decode"], 4),
        "network_share": round(shares["network"], 4),
        "encode_share": round(shares["encode"], 4),
        "other_share": round(1 - sum(shares.values()), 4),
        "all_runs_frames_per_second": [round(r.frames_per_second, 3) for r in runs],
        "clip_made_in_seconds": round(made, 2),
    }
    for key, value in facts.items():
        print(f"{key}: {value}")
    print()
    print("| input | output | model | frames/s | decode | network | encode | other |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {row['input']} | {row['output']} | {row['model']} | {row['frames_per_second']} | "
        f"{shares['decode']:.1%} | {shares['network']:.1%} | {shares['encode']:.1%} | "
        f"{row['other_share']:.1%} |"
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": facts, "result": row}, indent=2))


if __name__ == "__main__":
    main()
