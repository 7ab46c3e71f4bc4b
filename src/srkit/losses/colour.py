"""The ``colour`` loss term: keeps the low frequencies of SR's colour where the input has them.

GAN fine-tuning is known to shift colours (a tint over the image, hue drifting in flat
regions) within tens of steps: the adversarial and perceptual terms barely see a slow colour
change, and the pixel term, weighted low in GAN recipes, resists it weakly. This term compares
what drift changes and texture does not: the image brought down to (a fraction of) the LR
size, in YCbCr chroma.

* **Against LR** by default: LR is what the generator was given, is present in every data mode
  (disjoint training included, where HR is not a target), and holds exactly the low
  frequencies SR must keep. SR is box-averaged to the target's size, then both by ``pool``
  (default 2: for x4, SR compared at 1/8 of its size), so that LR's own aliasing and the
  resampling kernel that made it do not matter. ``target: hr`` compares with HR instead.
* **In chroma** (Cb, Cr of BT.601 YCbCr) by default: colour drift is a hue/tint complaint, and
  leaving luma to the pixel/perceptual terms keeps the term from fighting brightness detail.
  ``channels: ycbcr`` constrains luma too (brightness drift), ``rgb`` compares plain RGB.
  YCbCr rather than L*a*b*: it is linear in RGB, so its gradient is well behaved everywhere
  (L*a*b*'s cube root is steep near black); validation reports drift in L*a*b* ΔE
  (:mod:`srkit.metrics.colour`), where the units mean something to a reader.

The loss is the mean absolute difference, so it is 0 for identical colours and grows with a
global tint linearly.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from srkit.errors import ConfigError
from srkit.losses.base import BuildContext, LossTerm, LossTermConfig, register_loss
from srkit.losses.tensors import StepTensors
from srkit.metrics.colour import box_downscale, rgb_to_ycbcr


class ColourLossConfig(LossTermConfig):
    """L1 between the low-frequency colour of a prediction and of a (smaller) reference."""

    type: Literal["colour"] = "colour"
    input: str = Field("sr", description="Tensor expression of the prediction (an RGB image).")
    target: str = Field(
        "lr",
        description="Tensor expression of the reference RGB image; the prediction is "
        "box-averaged to its size (exactly when its sides divide the prediction's).",
    )
    pool: int = Field(
        2,
        ge=1,
        description="Both are then box-averaged over pool x pool blocks (1: compare at the "
        "reference's size), so only low-frequency colour is compared.",
    )
    channels: Literal["chroma", "ycbcr", "rgb"] = Field(
        "chroma",
        description="What is compared: chroma (Cb and Cr of BT.601 YCbCr), ycbcr (luma too) "
        "or rgb.",
    )


def low_frequency_colour(
    image: torch.Tensor, size: tuple[int, int], pool: int, channels: str
) -> torch.Tensor:
    """``image`` box-averaged to ``size``, then over ``pool`` blocks, in ``channels``."""
    image = image.float()
    if tuple(image.shape[-2:]) != tuple(size):
        image = F.adaptive_avg_pool2d(image, size)
    image = box_downscale(image, pool)
    if channels == "rgb":
        return image
    converted = rgb_to_ycbcr(image)
    return converted[:, 1:] if channels == "chroma" else converted


class ColourLoss(LossTerm):
    def __init__(self, config: ColourLossConfig) -> None:
        super().__init__(config)
        self.input = config.input
        self.target = config.target
        self.pool = config.pool
        self.channels = config.channels

    def expressions(self) -> list[str]:
        return [self.input, self.target]

    def anchors_colour(self) -> bool:
        return True

    def generator_loss(self, tensors: StepTensors) -> torch.Tensor:
        target = tensors[self.target]
        if self.channels != "rgb":
            for expression, tensor in ((self.input, tensors[self.input]), (self.target, target)):
                if tensor.shape[1] != 3:
                    raise ConfigError(
                        f"colour term '{self.name}': '{expression}' has {tensor.shape[1]} "
                        f"channel(s); channels: {self.channels} compares RGB images "
                        "(use channels: rgb)"
                    )
        size = tuple(target.shape[-2:])
        prediction = low_frequency_colour(tensors[self.input], size, self.pool, self.channels)
        reference = low_frequency_colour(target, size, self.pool, self.channels)
        return (prediction - reference).abs().mean()


@register_loss(ColourLossConfig)
def build_colour(config: ColourLossConfig, context: BuildContext) -> LossTerm:
    return ColourLoss(config)
