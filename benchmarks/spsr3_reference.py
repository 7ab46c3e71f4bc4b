"""How much a trained SPSR3 uses its whole-image reference, and what tiling does to it.

For each image (LR inputs, e.g. a held-out ``lr_x4`` folder) and a model (checkpoint folder or
weights file):

* ``tiled vs untiled``: max |SR tiled - SR whole| in 8-bit levels (``srkit upscale``'s path:
  the whole input's reference, each tile with its own mask and centre);
* ``rest changed``: the image outside the first tile replaced by the same image flipped upside
  down (the tile's own pixels and its overlap margin kept); max and mean |difference| of the
  SR output inside that tile's core, in 8-bit levels. A generator without a reference gives 0;
* ``grey reference``: the whole-image run with the reference picture replaced by mid-grey (mask
  and centre kept): max and mean |difference| in 8-bit levels, i.e. how much the picture of the
  whole image moves the output at all.

Usage:
    python benchmarks/spsr3_reference.py MODEL LR_DIR [--tile 48] [--overlap 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from srkit.data.datasets import find_images
from srkit.data.io import read_rgb
from srkit.data.reference import whole_image_inputs
from srkit.infer.api import load_model, upscale_tensor
from srkit.infer.tiling import plan_tiles, tile_alignment


def levels(difference: torch.Tensor) -> tuple[float, float]:
    difference = difference.abs() * 255
    return float(difference.max()), float(difference.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("lr_dir", type=Path)
    parser.add_argument("--tile", type=int, default=48)
    parser.add_argument("--overlap", type=int, default=16)
    args = parser.parse_args()
    model = load_model(args.model)
    scale = model.scale
    print(
        f"model {args.model}: {model.srkit_arch['type']}, tile {args.tile}, overlap {args.overlap}"
    )
    print(
        "| image | LR size | tiled vs untiled (max) | rest changed: max, mean | grey reference: max, mean |"
    )
    print("|---|---|---|---|---|")
    for path in find_images(args.lr_dir):
        image = torch.from_numpy(read_rgb(path)).permute(2, 0, 1)[None].contiguous()
        height, width = image.shape[-2:]
        whole, _ = upscale_tensor(model, image, tile=0)
        tiled, _ = upscale_tensor(model, image, tile=args.tile, overlap=args.overlap)
        plan = plan_tiles(height, width, args.tile, args.overlap, tile_alignment(model))
        (top, bottom), (left, right) = plan.rows[0], plan.cols[0]
        other = image.flip(-2).clone()
        other[:, :, top:bottom, left:right] = image[:, :, top:bottom, left:right]
        changed, _ = upscale_tensor(model, other, tile=args.tile, overlap=args.overlap)
        core = (
            ...,
            slice(0, (bottom - args.overlap) * scale),
            slice(0, (right - args.overlap) * scale),
        )
        rest = levels(changed[core] - tiled[core])
        extra = whole_image_inputs(model, image)
        grey = {**extra}
        if "ref" in grey:
            grey["ref"] = grey["ref"].clone()
            grey["ref"][:, :-1] = 0.5
        with torch.no_grad():
            plain = model(image, **extra)["sr"].clamp(0, 1)
            greyed = model(image, **grey)["sr"].clamp(0, 1)
        print(
            f"| {path.name} | {width}x{height} | {levels(whole - tiled)[0]:.2f} "
            f"| {rest[0]:.3f}, {rest[1]:.4f} | {levels(greyed - plain)[0]:.3f}, "
            f"{levels(greyed - plain)[1]:.4f} |"
        )


if __name__ == "__main__":
    main()
