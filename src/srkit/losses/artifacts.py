"""The ``ldl`` loss term: artifact-aware locally discriminative learning (Liang et al. 2022).

"Details or Artifacts: A Locally Discriminative Learning Approach to Realistic Image
Super-Resolution" (CVPR 2022). GAN training makes both fine detail and artefacts; LDL tells
them apart per pixel and penalises only the artefacts, with an L1 loss weighted by an
*artifact map*:

1. residuals ``r = sum_c |hr - sr|`` of the model being trained and ``r_ema`` of its
   exponential moving average (the EMA model is more stable: where it does better, the
   current model's error is a fresh, unstable artefact);
2. a pixel-level weight: the variance of ``r`` in a ``window x window`` neighbourhood (unbiased,
   reflect padding at the borders), high where the error is irregular (noise-like artefacts),
   low on smooth regions and on consistent texture errors;
3. a patch-level weight: the variance of ``r`` over the whole image (patch), to the power 1/5,
   which damps images whose error is uniform;
4. the map ``M = patch weight * pixel weight``, set to 0 wherever ``r < r_ema`` (the current
   model is already better than its average there);
5. the loss ``mean |M * sr - M * hr|``, the map computed without gradient.

The paper pairs it with an EMA of decay 0.999 and loss weight 1 next to the usual pixel,
perceptual and GAN terms. In srkit the EMA model is the ``ema`` view of a run with
``train.ema`` (``ema(lr)``: the averaged generator on the generator's input).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from srkit.losses.base import BuildContext, LossTerm, LossTermConfig, register_loss
from srkit.losses.tensors import StepTensors


def local_variance(x: torch.Tensor, window: int) -> torch.Tensor:
    """Unbiased variance of each ``window x window`` neighbourhood of a (N, C, H, W) map, with
    reflect padding so the output has the input's size."""
    pad = window // 2
    padded = F.pad(x, [pad, pad, pad, pad], mode="reflect")
    mean = F.avg_pool2d(padded, window, stride=1)
    mean_square = F.avg_pool2d(padded.square(), window, stride=1)
    count = window * window
    return ((mean_square - mean.square()) * count / (count - 1)).clamp_min(0)


@torch.no_grad()
def artifact_map(
    sr: torch.Tensor, hr: torch.Tensor, reference: torch.Tensor, window: int = 7
) -> torch.Tensor:
    """LDL's (N, 1, H, W) artifact weight of ``sr`` against ``hr``, ``reference`` being the EMA
    model's output (see the module docstring); float32, no gradient."""
    residual = (hr.float() - sr.float()).abs().sum(dim=1, keepdim=True)
    reference_residual = (hr.float() - reference.float()).abs().sum(dim=1, keepdim=True)
    patch_weight = residual.var(dim=(1, 2, 3), keepdim=True) ** 0.2
    weight = patch_weight * local_variance(residual, window)
    return weight.masked_fill(residual < reference_residual, 0.0)


class ArtifactLossConfig(LossTermConfig):
    """LDL (Liang et al. 2022): L1 weighted by an artifact map from the EMA model."""

    type: Literal["ldl"] = "ldl"
    input: str = Field("sr", description="Tensor expression of the prediction.")
    target: str = Field("hr", description="Tensor expression of the target.")
    reference: str = Field(
        "ema(lr)",
        description="Tensor expression of the EMA generator's prediction for the same input: "
        "`ema(<train.generator_input>)`, which needs `train.ema`.",
    )
    window: int = Field(
        7, ge=3, description="Side of the neighbourhood of the local residual variance (odd)."
    )

    @field_validator("window")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 != 1:
            raise ValueError("the window needs a centre pixel: use an odd side")
        return value


class ArtifactLoss(LossTerm):
    def __init__(self, config: ArtifactLossConfig) -> None:
        super().__init__(config)
        self.input = config.input
        self.target = config.target
        self.reference = config.reference
        self.window = config.window

    def expressions(self) -> list[str]:
        return [self.input, self.target, self.reference]

    def generator_loss(self, tensors: StepTensors) -> torch.Tensor:
        sr, hr = tensors[self.input].float(), tensors[self.target].float()
        weight = artifact_map(sr, hr, tensors[self.reference], self.window)
        return (weight * sr - weight * hr).abs().mean()


@register_loss(ArtifactLossConfig)
def build_artifact_loss(config: ArtifactLossConfig, context: BuildContext) -> LossTerm:
    return ArtifactLoss(config)
