"""Colour stays put: the ``colour`` loss term and the colour-drift figures of validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from srkit.config import validate_config
from srkit.errors import ConfigError
from srkit.losses.colour import ColourLoss, ColourLossConfig
from srkit.losses.tensors import StepTensors
from srkit.metrics.colour import colour_drift, rgb_to_lab, rgb_to_ycbcr
from srkit.train.trainer import Trainer


def smooth_image(seed: int = 0, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=generator) * 0.6 + 0.2
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def colour_loss(sr: torch.Tensor, lr: torch.Tensor, **options) -> torch.Tensor:
    term = ColourLoss(ColourLossConfig(**options))
    return term.generator_loss(StepTensors({"sr": sr, "lr": lr, "hr": sr}, {}))


def tinted(image: torch.Tensor, red: float = 0.08) -> torch.Tensor:
    return (image + image.new_tensor([red, 0.0, -red]).view(1, 3, 1, 1)).clamp(0, 1)


def test_the_colour_term_is_zero_for_identical_colours_whatever_the_texture():
    lr = smooth_image(size=16)
    sr = F.interpolate(lr, scale_factor=4, mode="nearest")
    texture = 0.2 * (torch.arange(64).remainder(2).float() - 0.5)  # +-0.1 stripes, mean 0
    textured = sr + texture.view(1, 1, 1, 64)  # texture a GAN adds: same in every channel
    assert float(colour_loss(sr, lr)) == pytest.approx(0.0, abs=1e-7)
    assert float(colour_loss(textured, lr)) == pytest.approx(0.0, abs=1e-6)


def test_the_colour_term_rises_with_a_global_tint():
    lr = smooth_image(size=16)
    sr = F.interpolate(lr, scale_factor=4, mode="nearest")
    weak, strong = colour_loss(tinted(sr, 0.03), lr), colour_loss(tinted(sr, 0.09), lr)
    assert 0 < float(weak) < float(strong)
    # Chroma only by default: a brightness shift is left to the other terms, unless asked.
    brighter = sr + 0.05
    assert float(colour_loss(brighter, lr)) == pytest.approx(0.0, abs=1e-6)
    assert float(colour_loss(brighter, lr, channels="ycbcr")) > 0.01


def test_the_colour_term_passes_its_gradient_to_the_prediction():
    lr = smooth_image(size=16)
    sr = tinted(F.interpolate(lr, scale_factor=4, mode="nearest")).requires_grad_(True)
    colour_loss(sr, lr).backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0


def test_the_colour_term_refuses_non_rgb_images_in_one_line_unless_comparing_rgb():
    grey_sr, grey_lr = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 8, 8)
    with pytest.raises(ConfigError, match="'sr' has 1 channel\\(s\\); channels: chroma"):
        colour_loss(grey_sr, grey_lr)
    assert float(colour_loss(grey_sr, grey_lr, channels="rgb")) >= 0


def test_lab_and_ycbcr_of_known_colours():
    white, red = torch.ones(1, 3, 1, 1), torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert rgb_to_lab(white).flatten().tolist() == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    # sRGB red is L*a*b* (53.24, 80.09, 67.20).
    assert rgb_to_lab(red).flatten().tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.05)
    assert rgb_to_ycbcr(white).flatten().tolist() == pytest.approx([1.0, 0.5, 0.5], abs=1e-6)


def test_the_drift_figures_are_zero_for_the_same_image_and_see_a_tint_and_a_local_shift():
    hr = smooth_image(size=64)
    same = colour_drift(hr, hr)
    assert same == {"colour_mean_de": 0.0, "colour_low_de": 0.0}
    tint = colour_drift(tinted(hr), hr)
    assert tint["colour_mean_de"] > 3 and tint["colour_low_de"] > 3
    # A local shift that cancels over the image: no mean error, yet a low-frequency one.
    local = hr.clone()
    local[..., :32, :] = tinted(hr)[..., :32, :]
    local[..., 32:, :] = tinted(hr, -0.08)[..., 32:, :]
    shifted = colour_drift(local, hr)
    assert shifted["colour_low_de"] > 3 * shifted["colour_mean_de"]
    # Texture (a +-0.1 grey checkerboard, mean 0) is not colour drift at low frequency.
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]).remainder(2) - 0.5
    textured = colour_drift(hr + 0.2 * checker.float(), hr)
    assert textured["colour_low_de"] < 0.5


def test_validation_reports_colour_drift(make_config):
    raw = make_config(train__iterations=2, logging__val_every=2)
    raw["losses"].append({"type": "colour", "weight": 0.5})
    Trainer(validate_config(raw), quiet=True).run()
    rows = (Path(raw["output_dir"]) / raw["name"] / "metrics.jsonl").read_text().splitlines()
    validation = [json.loads(row) for row in rows if "val/psnr_y" in row]
    assert len(validation) == 1
    assert validation[0]["val/colour_mean_de"] >= 0 and validation[0]["val/colour_low_de"] > 0
    assert "val/loss/colour" in validation[0]
    training = [json.loads(row) for row in rows if "g/colour" in row]
    assert len(training) == 2 and all(row["g/colour"] > 0 for row in training)
