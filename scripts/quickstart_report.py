"""Last step of the quickstart: upscale the held-out photo and compare with bicubic.

Makes the held-out photo's LR (MATLAB bicubic, x4), upscales it with the trained model through
the same path `srkit upscale` uses, writes LR, bicubic, SR and HR images to the output folder,
and prints PSNR-Y / SSIM-Y of SR and of bicubic against HR. Exits with 1 if the model does not
beat bicubic, so CI notices a quickstart that stopped working.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from srkit.data.datasets import find_images
from srkit.data.imresize import imresize
from srkit.data.io import read_rgb, write_image
from srkit.infer.api import upscale
from srkit.metrics.psnr_ssim import psnr, ssim
from srkit.train.checkpoint import find_resumable
from srkit.weights import load_network


def main(run_dir: Path, held_out: Path, out_dir: Path) -> int:
    checkpoint = find_resumable(run_dir / "checkpoints")
    if checkpoint is None:
        print(f"no checkpoint in {run_dir}/checkpoints; did training finish?", file=sys.stderr)
        return 2
    model = load_network(checkpoint)
    scale = model.scale
    out_dir.mkdir(parents=True, exist_ok=True)
    beaten = True
    for photo in find_images(held_out):
        hr = read_rgb(photo)
        height, width = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
        hr = hr[:height, :width]
        lr = np.round(np.clip(imresize(hr, 1 / scale), 0, 1) * 255) / 255
        sr = upscale(model, lr.astype(np.float32))
        bicubic = np.clip(imresize(lr, scale), 0, 1)
        quantised = {
            name: np.round(image * 255) / 255 for name, image in (("sr", sr), ("bicubic", bicubic))
        }
        for name, image in (("lr", lr), ("bicubic", bicubic), ("sr", sr), ("hr", hr)):
            write_image(out_dir / f"{photo.stem}_{name}.png", image)
        print(f"{photo.name} (x{scale}, {checkpoint.name}):")
        scores = {}
        for name in ("bicubic", "sr"):
            scores[name] = psnr(quantised[name], hr, crop_border=scale)
            value_ssim = ssim(quantised[name], hr, crop_border=scale)
            print(f"  {name:8s} PSNR-Y {scores[name]:6.2f} dB   SSIM-Y {value_ssim:.4f}")
        print(f"  SR - bicubic: {scores['sr'] - scores['bicubic']:+.2f} dB; images in {out_dir}/")
        beaten = beaten and scores["sr"] > scores["bicubic"]
    if not beaten:
        print("the trained model did not beat bicubic on the held-out photo", file=sys.stderr)
    return 0 if beaten else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: quickstart_report.py RUN_DIR HELD_OUT_DIR OUT_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
