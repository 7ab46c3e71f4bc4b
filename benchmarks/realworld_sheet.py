"""Side-by-side pictures for the real-world quality check: degraded LR | models | HR.

For each of the first ``--images`` HR images (sorted by name) with an LR of the same name in
``--lr`` (e.g. ``heldout/lr_x4_degraded`` from ``srkit prepare --degrade``), one row: the LR
(nearest-upscaled), each model's output (EMA weights of a checkpoint folder), and the HR, all
cut to the centre ``--crop`` HR pixels (each model sees the whole LR image).

    python benchmarks/realworld_sheet.py BICUBIC_CKPT REALWORLD_CKPT --hr DIR --lr DIR --out sheet.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from srkit.data.datasets import find_images
from srkit.data.io import read_rgb, write_image
from srkit.infer.api import load_model, upscale
from srkit.log.pictures import nearest_resize, side_by_side, stack_rows


def centre(image, size: int):
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--hr", type=Path, required=True)
    parser.add_argument("--lr", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--crop", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = [load_model(path, "cpu") for path in args.models]
    rows = []
    for hr_path in find_images(args.hr)[: args.images]:
        hr = read_rgb(hr_path)
        lr = read_rgb(args.lr / hr_path.name)
        outputs = [upscale(model, lr) for model in models]
        scale = hr.shape[0] // lr.shape[0]
        hr = hr[: lr.shape[0] * scale, : lr.shape[1] * scale]
        tiles = [nearest_resize(lr, *hr.shape[:2]), *outputs, hr]
        rows.append(side_by_side([centre(tile, args.crop) for tile in tiles]))
    write_image(args.out, stack_rows(rows))
    print(
        f"{args.out}: rows = LR (nearest) | {' | '.join(p.parent.parent.name for p in args.models)} | HR"
    )


if __name__ == "__main__":
    main()
