"""PSNR and SSIM as the super-resolution literature computes them.

Conventions (those of the MATLAB evaluation scripts of the SR papers and of BasicSR's
``calculate_psnr`` / ``calculate_ssim``), which published numbers depend on:

* ``crop_border`` pixels are removed from each side first (usually ``crop_border = scale``);
* by default only the luma channel is compared: ITU-R BT.601 Y on the [0, 255] scale,
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with RGB in [0, 1] (studio range, 16..235,
  not rounded); with ``y_channel=False`` the RGB channels scaled to [0, 255];
* data range 255;
* SSIM uses an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population
  (not sample) covariances, only "valid" window positions (no padding), and for RGB the mean
  of the per-channel SSIMs.

The functions compare exactly the floats they are given. To get numbers comparable with papers,
quantise SR to 8 bits first (``np.round(sr * 255) / 255``), as saving it to PNG would; the
trainer's validation does this.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["psnr", "rgb_to_y", "ssim"]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_DATA_RANGE = 255.0


def _to_hwc(image: Any) -> np.ndarray:
    """float64 (H, W, C) from a numpy HW/HWC array or a torch CHW / 1CHW tensor."""
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch, without importing it
        tensor = image.detach().cpu()
        if tensor.ndim == 4:
            if tensor.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of shape {tuple(tensor.shape)}")
            tensor = tensor[0]
        if tensor.ndim != 3:
            raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(tensor.shape)}")
        array = tensor.double().numpy().transpose(1, 2, 0)
    else:
        array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {array.shape}")
    return array


def rgb_to_y(image: Any) -> Any:
    """ITU-R BT.601 luma on the [0, 255] scale from RGB in [0, 1].

    Args:
        image: numpy (H, W, 3), or torch (3, H, W) / (N, 3, H, W).

    Returns:
        numpy (H, W) float64 for numpy input; for torch input a tensor of the input's dtype
        with the channel dimension removed ((H, W) or (N, H, W)).
    """
    if hasattr(image, "detach") and hasattr(image, "cpu"):
        if image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise ValueError(f"expected (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
        weights = image.new_tensor(_Y_WEIGHTS.tolist()).view(3, 1, 1)
        return (image * weights).sum(dim=-3) + 16.0
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    return array @ _Y_WEIGHTS + 16.0


def _prepare(sr: Any, hr: Any, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both images cropped and on the [0, 255] scale, as (H, W, C) float64."""
    sr_array, hr_array = _to_hwc(sr), _to_hwc(hr)
    if sr_array.shape != hr_array.shape:
        raise ValueError(f"image shapes differ: SR {sr_array.shape} vs HR {hr_array.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be non-negative, got {crop_border}")
    if crop_border:
        sr_array = sr_array[crop_border:-crop_border, crop_border:-crop_border]
        hr_array = hr_array[crop_border:-crop_border, crop_border:-crop_border]
    if sr_array.shape[0] == 0 or sr_array.shape[1] == 0:
        raise ValueError(f"crop_border {crop_border} leaves no pixels of {hr_array.shape}")
    if y_channel:
        if sr_array.shape[2] != 3:
            raise ValueError(
                f"y_channel needs RGB images, got {sr_array.shape[2]} channel(s); "
                "use y_channel=False"
            )
        return rgb_to_y(sr_array)[:, :, None], rgb_to_y(hr_array)[:, :, None]
    return sr_array * _DATA_RANGE, hr_array * _DATA_RANGE


def psnr(sr: Any, hr: Any, crop_border: int, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (data range 255); ``inf`` for identical images.

    Args:
        sr, hr: float images in [0, 1]: numpy (H, W, C) / (H, W) or torch (C, H, W).
        crop_border: pixels removed from every side before comparing.
        y_channel: compare BT.601 luma only (the SR convention) instead of RGB.
    """
    sr_values, hr_values = _prepare(sr, hr, crop_border, y_channel)
    mse = float(np.mean((sr_values - hr_values) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(_DATA_RANGE**2 / mse)


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2
    window = np.exp(-(offsets**2) / (2 * _SSIM_SIGMA**2))
    return window / window.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with the 1-D window along both axes."""
    size = len(window)
    rows = image.shape[0] - size + 1
    columns = image.shape[1] - size + 1
    vertical = sum(window[k] * image[k : k + rows] for k in range(size))
    return sum(window[k] * vertical[:, k : k + columns] for k in range(size))


def _ssim_single(first: np.ndarray, second: np.ndarray) -> float:
    window = _gaussian_window()
    c1 = (_K1 * _DATA_RANGE) ** 2
    c2 = (_K2 * _DATA_RANGE) ** 2
    mean_first = _filter_valid(first, window)
    mean_second = _filter_valid(second, window)
    var_first = _filter_valid(first * first, window) - mean_first**2
    var_second = _filter_valid(second * second, window) - mean_second**2
    covariance = _filter_valid(first * second, window) - mean_first * mean_second
    numerator = (2 * mean_first * mean_second + c1) * (2 * covariance + c2)
    denominator = (mean_first**2 + mean_second**2 + c1) * (var_first + var_second + c2)
    return float(np.mean(numerator / denominator))


def ssim(sr: Any, hr: Any, crop_border: int, y_channel: bool = True) -> float:
    """Structural similarity (11x11 Gaussian window, sigma 1.5, data range 255).

    Arguments as for :func:`psnr`. RGB (``y_channel=False``) returns the mean over channels.
    Images must be at least 11x11 after cropping.
    """
    sr_values, hr_values = _prepare(sr, hr, crop_border, y_channel)
    if min(sr_values.shape[:2]) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after cropping, "
            f"got {sr_values.shape[1]}x{sr_values.shape[0]}"
        )
    scores = [
        _ssim_single(sr_values[:, :, channel], hr_values[:, :, channel])
        for channel in range(sr_values.shape[2])
    ]
    return float(np.mean(scores))
