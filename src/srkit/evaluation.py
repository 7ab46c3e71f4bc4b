"""Whole-image evaluation of a generator: image metrics, loss terms, and a picture sheet.

Shared by validation during training and by ``srkit validate``, so both report the same numbers.

What is measured depends on what the network produces, never on the method's name:

* **Image metrics** (PSNR/SSIM on Y or RGB, L1, LPIPS when an :class:`srkit.metrics.lpips.LPIPS`
  is given, colour drift when asked) only when the output ``sr`` is an image the size of HR. SR
  outputs are clamped and rounded to 8 bits first, as saved results would be (the SR
  literature's convention); PSNR/SSIM follow ``srkit.metrics.psnr_ssim``.
* **Loss terms** (given by the trainer: every term without a discriminator, weight-0 "monitor"
  terms included) on the named tensors of each image, reported as ``loss/<term name>``. This is
  how a feature-net run reports its feature MSE next to the bicubic-through-VGG baseline: two
  terms, one of weight 0.

Every number is a mean over images.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from srkit.log.pictures import lr_sr_hr_sheet


@dataclass
class EvaluationResult:
    metrics: dict[str, float]  # means over images
    per_image: list[dict[str, float | str]]
    sheet: np.ndarray | None  # LR | SR | HR rows of the first images


def named_outputs(output: torch.Tensor | Mapping[str, Any]) -> dict[str, Any]:
    """A generator's output as named tensors: a plain tensor is the ``sr`` output."""
    if isinstance(output, torch.Tensor):
        return {"sr": output}
    if "sr" not in output:
        raise ValueError("a generator returning a dict must include 'sr'")
    return dict(output)


def sr_output(output: torch.Tensor | dict) -> torch.Tensor:
    return named_outputs(output)["sr"]


def is_image_like(sr: torch.Tensor, hr: torch.Tensor) -> bool:
    """Whether ``sr`` is an image comparable to ``hr`` (same shape), not e.g. a feature map."""
    return sr.dim() == 4 and sr.shape == hr.shape


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
    loss_terms: Sequence[Any] = (),
    views: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    lpips: nn.Module | None = None,
    on_image: Callable[[int, Mapping[str, Any], torch.Tensor], None] | None = None,
    colour_drift: bool = False,
) -> EvaluationResult:
    """Run ``network`` on every dataset item (dicts with ``lr``, ``hr``, ``name``).

    ``colour_drift`` adds ``colour_mean_de`` and ``colour_low_de`` (see
    :mod:`srkit.metrics.colour`), measured like PSNR on the 8-bit SR with the border cropped.

    ``loss_terms`` (objects with ``name`` and ``generator_loss(StepTensors)``) are evaluated on
    ``lr``, ``hr`` and the network's named outputs, with ``views`` as the expression functions.
    ``on_image(index, item, sr)`` receives every image-like SR output as measured (clamped,
    8-bit levels; (1, 3, H, W)), e.g. to save it for the comparison report.
    """
    from srkit.data.reference import whole_image_inputs
    from srkit.losses.tensors import StepTensors
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
            # A generator that sees the whole image (SPSR3) gets its reference from the whole
            # validation image, as at inference.
            extra = whole_image_inputs(network, lr)
            with autocast():
                outputs = named_outputs(network(prepare_input(lr), **extra))
            outputs = {
                key: value.float() if isinstance(value, torch.Tensor) else value
                for key, value in outputs.items()
            }
            values: dict[str, float] = {}
            sr = outputs["sr"]
            if is_image_like(sr, hr):
                sr = sr.clamp(0, 1)
                sr8 = torch.round(sr * 255) / 255
                sr_image = sr8[0].permute(1, 2, 0).cpu().numpy()
                hr_image = hr[0].permute(1, 2, 0).cpu().numpy()
                values["psnr" + suffix] = psnr(
                    sr_image, hr_image, crop_border=crop, y_channel=y_channel
                )
                values["ssim" + suffix] = ssim(
                    sr_image, hr_image, crop_border=crop, y_channel=y_channel
                )
                values["l1"] = float((sr - hr).abs().mean())
                if lpips is not None:
                    values["lpips"] = float(lpips(sr8, hr)[0])
                if colour_drift:
                    values.update(_colour_drift(sr8, hr, crop))
                if index < sheet_images:
                    triples.append((lr[0], sr8[0], hr[0]))
                if on_image is not None:
                    on_image(index, item, sr8)
            if loss_terms:
                tensors = StepTensors({"lr": lr, "hr": hr, **outputs}, views or {})
                with autocast():
                    for term in loss_terms:
                        values[f"loss/{term.name}"] = float(term.generator_loss(tensors))
            for key, value in values.items():
                sums[key] += value
            per_image.append({"name": item.get("name", str(index)), **values})
    finally:
        network.train(was_training)
    metrics = {key: value / max(count, 1) for key, value in sums.items()}
    return EvaluationResult(metrics, per_image, lr_sr_hr_sheet(triples) if triples else None)


def _colour_drift(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> dict[str, float]:
    from srkit.metrics.colour import colour_drift

    if crop > 0 and min(sr.shape[-2:]) > 2 * crop:
        sr, hr = sr[..., crop:-crop, crop:-crop], hr[..., crop:-crop, crop:-crop]
    return colour_drift(sr, hr)


class BicubicUpscaler(nn.Module):
    """The bicubic floor as a "generator": MATLAB-compatible bicubic upscaling of the LR image
    (the inverse direction of how LR is made), so ``srkit validate --bicubic`` reports it with
    exactly the metrics of a trained model."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = int(scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        from srkit.data.imresize import imresize

        return imresize(lr, scale=self.scale)


def evaluate_models(
    models: Sequence[tuple[str, nn.Module]],
    dataset: torch.utils.data.Dataset,
    scale: int,
    device: torch.device,
    crop_border: int | None = None,
    y_channel: bool = True,
    lpips: nn.Module | None = None,
    on_image: Callable[[int, int, Mapping[str, Any], torch.Tensor], None] | None = None,
) -> list[tuple[str, EvaluationResult]]:
    """:func:`evaluate_generator` for each (name, network), one after another (each network is
    moved to ``device`` for its turn only). ``on_image(model_index, image_index, item, sr)``:
    as in :func:`evaluate_generator`."""
    results = []
    for model_index, (name, model) in enumerate(models):
        result = evaluate_generator(
            model.to(device),
            dataset,
            scale=scale,
            device=device,
            crop_border=crop_border,
            y_channel=y_channel,
            lpips=lpips,
            on_image=None if on_image is None else functools.partial(on_image, model_index),
        )
        model.cpu()
        results.append((name, result))
    return results


def quality_table(results: Sequence[tuple[str, EvaluationResult]]) -> str:
    """The text table of ``srkit validate``: one row per model, means over the images."""
    keys = list(results[0][1].metrics)
    width = max(len("model"), *(len(name) for name, _ in results))
    lines = [f"{'model':<{width}}  " + "  ".join(f"{k:>9}" for k in keys)]
    for name, result in results:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{result.metrics[k]:>9.4f}" for k in keys))
    return "\n".join(lines)


def quality_csv(results: Sequence[tuple[str, EvaluationResult]]) -> str:
    """CSV of every image's numbers per model, and a ``mean`` row per model."""
    import csv
    from io import StringIO

    keys = list(results[0][1].metrics)
    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["model", "image", *keys], lineterminator="\n")
    writer.writeheader()
    for name, result in results:
        for row in result.per_image:
            writer.writerow({"model": name, "image": row["name"], **{k: row[k] for k in keys}})
        writer.writerow({"model": name, "image": "mean", **result.metrics})
    return buffer.getvalue()
