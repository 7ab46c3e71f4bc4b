"""``srkit upscale``: run a trained generator over image files and folders."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from srkit.errors import SrkitError

log = logging.getLogger("srkit.infer")


def add_upscale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="weights file or checkpoint folder")
    parser.add_argument("inputs", type=Path, nargs="+", help="image files or folders")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--cpu", action="store_true", help="run on the CPU even if a GPU is present"
    )


@torch.no_grad()
def upscale_array(
    model: nn.Module, image: np.ndarray, device: torch.device, precision: str = "fp32"
) -> np.ndarray:
    """Upscale an HWC float RGB array in [0,1]; returns HWC float32 in [0,1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    context = (
        torch.autocast(device.type, dtype=dtype)
        if dtype
        else torch.autocast(device.type, enabled=False)
    )
    with context:
        output = model(tensor)
    sr = output if isinstance(output, torch.Tensor) else output["sr"]
    return sr[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def collect_inputs(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every image named or inside a folder."""
    from srkit.data.datasets import find_images

    found = []
    for item in inputs:
        if item.is_dir():
            found.extend((file, file.relative_to(item)) for file in find_images(item))
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            raise SrkitError(f"input '{item}' does not exist")
    return found


def upscale_command(args: argparse.Namespace) -> int:
    from srkit.data.io import read_rgb, write_image
    from srkit.weights import load_network

    if args.output.exists() and not args.output.is_dir():
        raise SrkitError(f"output '{args.output}' is a file, not a folder")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model = load_network(args.model).to(device)
    files = collect_inputs(args.inputs)
    failures = 0
    for file, relative in files:
        target = args.output / relative.with_suffix(".png")
        if target.exists() and not args.overwrite:
            log.info("skipping %s (exists; --overwrite replaces it)", target)
            continue
        try:
            image = read_rgb(file)
            result = upscale_array(model, image, device, args.precision)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, result)
            print(f"{file} -> {target}")
        except SrkitError as error:
            failures += 1
            print(f"srkit: error: {error}")
    return 1 if failures else 0
