"""Gradient maps of SPSR generators on whole images: grad(SR) | grad_branch | grad(HR) rows.

For looking at what the gradient branch and the GAN terms do to a model (the SPSR section of
RESULTS.md): for each checkpoint and each HR image (LR made by MATLAB-bicubic downscaling), one
row drawn with the trainer's own picture code (`tensor_row`, shared scale), and per image
(bicubic upscaling as a reference): PSNR-Y, the mean gradient magnitude of SR relative to HR's (inside a `scale`-pixel border;
< 1 = smoother than the ground truth) and the L1 distance of grad_branch to grad(HR).

    python benchmarks/spsr_gradient_sheet.py CHECKPOINT... --images DIR --out sheet.png [--ema]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from srkit.data.imresize import imresize
from srkit.data.io import is_image_file, read_rgb, write_image
from srkit.log.pictures import stack_rows, tensor_row
from srkit.metrics.psnr_ssim import psnr
from srkit.nets.gradient import image_gradient
from srkit.weights import load_network


def load_pair(path: Path, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR) as (1, 3, h, w) tensors; HR cropped to a multiple of ``scale``."""
    hr_array = read_rgb(path)
    height, width = (s - s % scale for s in hr_array.shape[:2])
    hr = torch.from_numpy(hr_array[:height, :width]).permute(2, 0, 1)[None].float()
    return imresize(hr, scale=1 / scale).clamp(0, 1), hr


def gradient_ratio(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> float:
    inside = (..., slice(scale, -scale), slice(scale, -scale))
    return float(image_gradient(sr)[inside].mean() / image_gradient(hr)[inside].mean())


def print_bicubic_reference(path: Path, scale: int) -> None:
    lr, hr = load_pair(path, scale)
    sr = imresize(lr, scale=scale).clamp(0, 1)
    value = psnr(sr[0], hr[0], crop_border=scale)
    print(f"| bicubic | {path.name} | {value:.2f} | {gradient_ratio(sr, hr, scale):.3f} | - |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of HR images")
    parser.add_argument("--out", type=Path, required=True, help="PNG sheet to write")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights if present")
    args = parser.parse_args()

    images = sorted(p for p in args.images.iterdir() if is_image_file(p))
    rows = []
    print("| checkpoint | image | PSNR-Y dB | mean grad SR / HR | L1(grad_branch, grad HR) |")
    print("|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        generator = load_network(checkpoint, prefer_ema=args.ema)
        scale = generator.scale
        for path in images:
            if checkpoint == args.checkpoints[0]:
                print_bicubic_reference(path, scale)
            lr, hr = load_pair(path, scale)
            with torch.no_grad():
                output = generator(lr)
            sr, branch = output["sr"], output["grad_branch"]
            grad_sr, grad_hr = image_gradient(sr), image_gradient(hr)
            ratio = gradient_ratio(sr, hr, scale)
            inside = (..., slice(scale, -scale), slice(scale, -scale))
            branch_l1 = float((branch - grad_hr)[inside].abs().mean())
            value = psnr(sr[0].clamp(0, 1), hr[0], crop_border=scale)
            print(f"| {checkpoint} | {path.name} | {value:.2f} | {ratio:.3f} | {branch_l1:.4f} |")
            rows.append(tensor_row([grad_sr, branch, grad_hr], scale="shared"))
    write_image(args.out, stack_rows(rows))
    print(f"wrote {args.out}: one row per checkpoint and image, grad(SR) | grad_branch | grad(HR)")


if __name__ == "__main__":
    main()
