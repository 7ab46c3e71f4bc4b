"""PSNR / SSIM agree with scikit-image's reference implementations under SR conventions.

Comparing like with like:

* srkit crops ``crop_border`` pixels, converts to BT.601 Y on [0, 255], and evaluates. The
  reference gets exactly the same cropped Y (or RGB x 255) arrays.
* skimage's SSIM filters the whole image (with reflected borders) and then averages only over
  the interior, dropping (win_size - 1) / 2 = 5 pixels on each side; those interior values
  use no padding, so they are exactly srkit's "valid" window positions. Its Gaussian with
  sigma 1.5 and the default truncate 3.5 is 11 taps wide, the same window.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from srkit.metrics import psnr, rgb_to_y, ssim

RNG = np.random.default_rng(7)


def _pair(height: int = 48, width: int = 40) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width]
    hr = np.stack([np.sin(x / 5.0), np.cos(y / 7.0), np.sin((x + y) / 9.0)], axis=-1) * 0.4 + 0.5
    sr = np.clip(hr + RNG.normal(0.0, 0.03, hr.shape), 0.0, 1.0)
    # Papers evaluate 8-bit images; quantise as the trainer does.
    return np.round(sr * 255) / 255, np.round(hr * 255) / 255


def _reference_ssim(first: np.ndarray, second: np.ndarray, channel_axis=None) -> float:
    return structural_similarity(
        first,
        second,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=channel_axis,
    )


@pytest.mark.parametrize("crop_border", [0, 2, 4])
def test_y_channel_metrics_match_skimage(crop_border):
    sr, hr = _pair()
    c = crop_border
    sr_y = rgb_to_y(sr)[c : sr.shape[0] - c, c : sr.shape[1] - c]
    hr_y = rgb_to_y(hr)[c : hr.shape[0] - c, c : hr.shape[1] - c]
    assert psnr(sr, hr, crop_border) == pytest.approx(
        peak_signal_noise_ratio(hr_y, sr_y, data_range=255), abs=1e-4
    )
    assert ssim(sr, hr, crop_border) == pytest.approx(_reference_ssim(sr_y, hr_y), abs=1e-4)


def test_rgb_metrics_match_skimage():
    sr, hr = _pair()
    sr_rgb, hr_rgb = sr[4:-4, 4:-4] * 255, hr[4:-4, 4:-4] * 255
    assert psnr(sr, hr, 4, y_channel=False) == pytest.approx(
        peak_signal_noise_ratio(hr_rgb, sr_rgb, data_range=255), abs=1e-4
    )
    # skimage averages the per-channel SSIMs, as the SR convention does.
    assert ssim(sr, hr, 4, y_channel=False) == pytest.approx(
        _reference_ssim(sr_rgb, hr_rgb, channel_axis=2), abs=1e-4
    )


def test_torch_tensors_give_the_same_numbers():
    sr, hr = _pair()
    sr_t = torch.from_numpy(sr).permute(2, 0, 1).float()
    hr_t = torch.from_numpy(hr).permute(2, 0, 1).float()[None]
    assert psnr(sr_t, hr_t, 4) == pytest.approx(psnr(sr, hr, 4), abs=1e-4)
    assert ssim(sr_t, hr_t, 4) == pytest.approx(ssim(sr, hr, 4), abs=1e-5)


def test_identical_images():
    _, hr = _pair()
    assert psnr(hr, hr, 4) == math.inf
    assert ssim(hr, hr, 4) == pytest.approx(1.0, abs=1e-12)


def test_rgb_to_y_values():
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.ones((1, 1, 3)))[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(np.array([[[1.0, 0.0, 0.0]]]))[0, 0] == pytest.approx(16 + 65.481)
    image = RNG.random((5, 6, 3))
    tensor_y = rgb_to_y(torch.from_numpy(image).permute(2, 0, 1)[None])
    assert tensor_y.shape == (1, 5, 6)
    np.testing.assert_allclose(tensor_y[0].numpy(), rgb_to_y(image), atol=1e-10)


def test_invalid_inputs():
    sr, hr = _pair()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(sr[:-1], hr, 0)
    with pytest.raises(ValueError, match="y_channel"):
        psnr(sr[:, :, :1], hr[:, :, :1], 0)
    with pytest.raises(ValueError, match="11x11"):
        ssim(sr[:14, :14], hr[:14, :14], 2)
