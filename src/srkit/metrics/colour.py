"""Colour spaces and the colour-drift figures of SR against HR (torch, differentiable).

Two colour spaces, each for what it is good at:

* **YCbCr** (ITU-R BT.601, on the [0, 1] scale with Cb/Cr centred on 0.5): linear in RGB, so
  cheap and with a well-behaved gradient everywhere; the ``colour`` loss term compares in it
  (:mod:`srkit.losses.colour`). Its luma is the Y of PSNR-Y.
* **CIE L*a*b*** (sRGB, D65 white): perceptually uniform enough that a distance has a meaning a
  user knows, ΔE76 ≈ 2.3 being a just noticeable difference; the validation figures report in
  it. The cube root makes it a poor loss (steep near black), which is why the loss uses YCbCr.

Drift figures (:func:`colour_drift`), both in ΔE76 units:

* ``colour_mean_de``: ΔE between the *mean* L*a*b* colours of the SR and the HR image, i.e. a
  global tint or brightness shift.
* ``colour_low_de``: mean per-pixel ΔE between SR and HR after both are box-downscaled by 8
  (``factor``): colour that drifted in regions, with texture (what a GAN is meant to change)
  averaged away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)
_EPSILON = (6 / 29) ** 3

DRIFT_FACTOR = 8  # box-downscaling of the low-frequency figure


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] to BT.601 YCbCr on the same scale (Cb, Cr centred on 0.5)."""
    red, green, blue = rgb.unbind(dim=1)
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    blue_difference = 0.5 + 0.564 * (blue - luma)
    red_difference = 0.5 + 0.713 * (red - luma)
    return torch.stack([luma, blue_difference, red_difference], dim=1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] to CIE L*a*b* (D65): L in [0, 100], a and b about ±100."""
    rgb = rgb.float().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = rgb.new_tensor(_RGB_TO_XYZ)
    xyz = torch.einsum("ij,njhw->nihw", matrix, linear)
    xyz = xyz / rgb.new_tensor(_D65_WHITE).view(1, 3, 1, 1)
    f = torch.where(
        xyz > _EPSILON, xyz.clamp(min=_EPSILON) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29
    )
    fx, fy, fz = f.unbind(dim=1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def box_downscale(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean over ``factor`` x ``factor`` blocks (a partial block at the edge is dropped); the
    factor shrinks to fit an image smaller than it."""
    factor = max(1, min(factor, image.shape[-2], image.shape[-1]))
    return F.avg_pool2d(image, factor) if factor > 1 else image


def colour_drift(sr: torch.Tensor, hr: torch.Tensor, factor: int = DRIFT_FACTOR) -> dict:
    """``colour_mean_de`` and ``colour_low_de`` (see the module docstring) of (N, 3, H, W) SR
    against HR in [0, 1], means over the batch's images, as floats."""
    sr_lab, hr_lab = rgb_to_lab(sr), rgb_to_lab(hr)
    mean_error = (sr_lab.mean(dim=(2, 3)) - hr_lab.mean(dim=(2, 3))).norm(dim=1)
    low_sr = rgb_to_lab(box_downscale(sr.float(), factor))
    low_hr = rgb_to_lab(box_downscale(hr.float(), factor))
    low_error = (low_sr - low_hr).norm(dim=1).mean(dim=(1, 2))
    return {"colour_mean_de": float(mean_error.mean()), "colour_low_de": float(low_error.mean())}
