"""Pixel-space loss terms: ``pixel`` (L1 / L2 / Charbonnier between two tensors).

The same term compares images (``sr`` vs ``hr``), gradient maps (``grad(sr)`` vs ``grad(hr)``)
or features (``vgg(hr)``): only the expressions change.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from srkit.losses.base import BuildContext, LossTerm, LossTermConfig, register_loss
from srkit.losses.tensors import StepTensors, keeps_colour

Criterion = Literal["l1", "l2", "charbonnier"]


def distance(
    a: torch.Tensor, b: torch.Tensor, criterion: Criterion, eps: float = 1e-6
) -> torch.Tensor:
    """Mean element-wise distance; means keep equal-size chunks averaging to the batch value."""
    a, b = a.float(), b.float()
    if criterion == "l1":
        return (a - b).abs().mean()
    if criterion == "l2":
        return (a - b).square().mean()
    return torch.sqrt((a - b).square() + eps * eps).mean()


class PixelLossConfig(LossTermConfig):
    """Distance between two tensors, by default the SR output and the HR target."""

    type: Literal["pixel"] = "pixel"
    criterion: Criterion = Field("l1", description="l1, l2 (MSE) or charbonnier.")
    input: str = Field("sr", description="Tensor expression for the prediction.")
    target: str = Field("hr", description="Tensor expression for the target.")


class PixelLoss(LossTerm):
    def __init__(self, config: PixelLossConfig) -> None:
        super().__init__(config)
        self.criterion = config.criterion
        self.input = config.input
        self.target = config.target

    def expressions(self) -> list[str]:
        return [self.input, self.target]

    def anchors_colour(self) -> bool:
        # Images compared as images anchor colour; gradient maps or network features do not.
        return all(keeps_colour(e) for e in self.expressions())

    def generator_loss(self, tensors: StepTensors) -> torch.Tensor:
        return distance(tensors[self.input], tensors[self.target], self.criterion)


@register_loss(PixelLossConfig)
def build_pixel(config: PixelLossConfig, context: BuildContext) -> LossTerm:
    return PixelLoss(config)
