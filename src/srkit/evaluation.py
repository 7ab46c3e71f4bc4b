"""Whole-image evaluation of a generator: PSNR/SSIM (Y or RGB), L1, and a picture sheet.

Shared by validation during training and by ``srkit validate``, so both report the same numbers.
SR outputs are clamped and rounded to 8 bits before the metrics, as saved results would be (the
SR literature's convention); PSNR/SSIM follow ``srkit.metrics.psnr_ssim``.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from srkit.log.pictures import lr_sr_hr_sheet


@dataclass
class EvaluationResult:
    metrics: dict[str, float]  # means over images
    per_image: list[dict[str, float | str]]
    sheet: np.ndarray | None  # LR | SR | HR rows of the first images


def sr_output(output: torch.Tensor | dict) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output["sr"]


@torch.no_grad()
def evaluate_generator(
    network: nn.Module,
    dataset: torch.utils.data.Dataset,
    scale: int,
    device: torch.device,
    crop_border: int | None = None,
    y_channel: bool = True,
    max_images: int | None = None,
    sheet_images: int = 0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    prepare_input: Callable[[torch.Tensor], torch.Tensor] = lambda lr: lr,
) -> EvaluationResult:
    """Run ``network`` on every dataset item (dicts with ``lr``, ``hr``, ``name``)."""
    from srkit.metrics.psnr_ssim import psnr, ssim

    crop = scale if crop_border is None else crop_border
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    suffix = "_y" if y_channel else "_rgb"
    was_training = network.training
    network.eval()
    sums: dict[str, float] = defaultdict(float)
    per_image = []
    triples = []
    try:
        for index in range(count):
            item = dataset[index]
            lr = item["lr"][None].to(device)
            hr = item["hr"][None].to(device)
            with autocast():
                sr = sr_output(network(prepare_input(lr))).float().clamp(0, 1)
            sr8 = torch.round(sr * 255) / 255
            sr_image = sr8[0].permute(1, 2, 0).cpu().numpy()
            hr_image = hr[0].permute(1, 2, 0).cpu().numpy()
            values = {
                "psnr" + suffix: psnr(sr_image, hr_image, crop_border=crop, y_channel=y_channel),
                "ssim" + suffix: ssim(sr_image, hr_image, crop_border=crop, y_channel=y_channel),
                "l1": float((sr - hr).abs().mean()),
            }
            for key, value in values.items():
                sums[key] += value
            per_image.append({"name": item.get("name", str(index)), **values})
            if index < sheet_images:
                triples.append((lr[0], sr8[0], hr[0]))
    finally:
        network.train(was_training)
    metrics = {key: value / max(count, 1) for key, value in sums.items()}
    return EvaluationResult(metrics, per_image, lr_sr_hr_sheet(triples) if triples else None)
