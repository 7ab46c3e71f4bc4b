"""Last step of the quickstart: upscale the held-out photos and compare with bicubic.

For every photo in the held-out folder: makes its LR (MATLAB bicubic, x4), upscales it with the
trained model through the same path `srkit upscale` uses, writes LR, bicubic, SR and HR images
to the output folder, and measures PSNR-Y / SSIM-Y (crop = scale) of SR and of bicubic against
HR. Prints one row per photo and the means. Exits with 1 if the model's mean PSNR-Y over the
photos is not above bicubic's, so CI notices a quickstart that stopped working.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srkit.data.datasets import find_images
from srkit.data.imresize import imresize
from srkit.data.io import read_rgb, write_image
from srkit.infer.api import upscale
from srkit.metrics.psnr_ssim import psnr, ssim
from srkit.train.checkpoint import find_resumable
from srkit.weights import load_network, resolve_weights_file


@dataclass
class PhotoScores:
    name: str
    bicubic_psnr: float
    bicubic_ssim: float
    sr_psnr: float
    sr_ssim: float

    @property
    def gain(self) -> float:
        return self.sr_psnr - self.bicubic_psnr


def compare_with_bicubic(model, held_out: Path, out_dir: Path) -> list[PhotoScores]:
    """Scores of ``model`` and of bicubic on every photo in ``held_out``; images to ``out_dir``."""
    scale = model.scale
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for photo in find_images(held_out):
        hr = read_rgb(photo)
        height, width = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
        hr = hr[:height, :width]
        lr = np.round(np.clip(imresize(hr, 1 / scale), 0, 1) * 255) / 255
        sr = upscale(model, lr.astype(np.float32))
        bicubic = np.clip(imresize(lr, scale), 0, 1)
        for name, image in (("lr", lr), ("bicubic", bicubic), ("sr", sr), ("hr", hr)):
            write_image(out_dir / f"{photo.stem}_{name}.png", image)
        # Scored as saved: rounded to 8 bits (the SR literature's convention).
        sr8, bicubic8 = (np.round(image * 255) / 255 for image in (sr, bicubic))
        rows.append(
            PhotoScores(
                name=photo.stem,
                bicubic_psnr=psnr(bicubic8, hr, crop_border=scale),
                bicubic_ssim=ssim(bicubic8, hr, crop_border=scale),
                sr_psnr=psnr(sr8, hr, crop_border=scale),
                sr_ssim=ssim(sr8, hr, crop_border=scale),
            )
        )
    return rows


def mean_gain(rows: list[PhotoScores]) -> float:
    """Mean over photos of model PSNR-Y minus bicubic PSNR-Y (dB)."""
    return float(np.mean([row.gain for row in rows]))


def format_table(rows: list[PhotoScores]) -> str:
    width = max(len("mean"), *(len(row.name) for row in rows))
    lines = [
        f"{'photo':{width}s}  {'bicubic PSNR-Y':>14s} {'SSIM-Y':>6s}  "
        f"{'model PSNR-Y':>12s} {'SSIM-Y':>6s}  {'gain':>8s}"
    ]

    def line(name, bicubic_psnr, bicubic_ssim, sr_psnr, sr_ssim):
        gain = sr_psnr - bicubic_psnr
        return (
            f"{name:{width}s}  {bicubic_psnr:11.2f} dB {bicubic_ssim:6.4f}  "
            f"{sr_psnr:9.2f} dB {sr_ssim:6.4f}  {gain:+5.2f} dB"
        )

    for row in rows:
        lines.append(line(row.name, row.bicubic_psnr, row.bicubic_ssim, row.sr_psnr, row.sr_ssim))
    means = [
        float(np.mean([getattr(row, key) for row in rows]))
        for key in ("bicubic_psnr", "bicubic_ssim", "sr_psnr", "sr_ssim")
    ]
    lines.append(line("mean", *means))
    return "\n".join(lines)


def report(run_dir: Path, held_out: Path, out_dir: Path) -> tuple[int, list[PhotoScores]]:
    """Print the comparison of the run's newest checkpoint with bicubic; (exit status, rows)."""
    checkpoint = find_resumable(run_dir / "checkpoints")
    if checkpoint is None:
        print(f"no checkpoint in {run_dir}/checkpoints; did training finish?", file=sys.stderr)
        return 2, []
    weights = resolve_weights_file(checkpoint)  # the EMA generator when the run has one
    model = load_network(weights)
    rows = compare_with_bicubic(model, held_out, out_dir)
    if not rows:
        print(f"no images in {held_out}", file=sys.stderr)
        return 2, []
    print(
        f"{len(rows)} held-out photos, x{model.scale}, model {checkpoint.name}/{weights.name}; "
        f"PSNR-Y / SSIM-Y with crop {model.scale}:"
    )
    print(format_table(rows))
    gain = mean_gain(rows)
    print(f"mean gain over bicubic: {gain:+.2f} dB PSNR-Y; images in {out_dir}/")
    if gain <= 0:
        print("the trained model did not beat bicubic on the held-out photos", file=sys.stderr)
        return 1, rows
    return 0, rows


def main(run_dir: Path, held_out: Path, out_dir: Path) -> int:
    return report(run_dir, held_out, out_dir)[0]


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: quickstart_report.py RUN_DIR HELD_OUT_DIR OUT_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
