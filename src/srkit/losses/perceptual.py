"""Perceptual ("feature") loss: distance between frozen VGG features of SR and HR.

``PerceptualLoss`` computes ``sum_l w_l * dist(VGG_l(sr), VGG_l(hr))`` over named VGG layers
(default VGG19 ``conv5_4`` before ReLU, weight 1, L1 — ESRGAN's choice). ``PerceptualLoss`` is
a pure module; the ``perceptual`` loss term at the end of this file wires it into configs.

Three properties matter to the trainer:

- The VGG is frozen and pinned in eval mode, and it is deliberately *not* a registered
  submodule: it never appears in ``state_dict()`` (so ~80 MB of fixed ImageNet weights never land
  in checkpoints), nor in ``parameters()`` (so no optimizer can pick it up). ``.to(device)``
  still moves it.
- It always runs in float32, even under autocast. Deep VGG activations reach magnitudes in
  the hundreds to thousands, and the loss is a small difference between two such large feature
  maps: with bf16's 8-bit mantissa that difference drowns in rounding error (and fp16 can
  overflow in the deep layers), making both the loss value and the gradient sent back to the
  generator noisy. The VGG forward is a small share of a GAN step, so fp32 costs little.
- Every reduction is a mean over all elements, so equal-size chunks of a batch average to the
  whole-batch value (megabatch invariance).

The HR side is a fixed target: its features are computed without gradient.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from srkit.errors import ConfigError, unknown_name
from srkit.losses.base import BuildContext, LossTerm, LossTermConfig, register_loss
from srkit.losses.tensors import StepTensors
from srkit.nets.vgg import VGGArch, VGGFeatureExtractor, pretrained_vgg

Criterion = Literal["l1", "l2", "charbonnier"]
CRITERIA: tuple[str, ...] = ("l1", "l2", "charbonnier")


def feature_distance(criterion: str, eps: float = 1e-3) -> Callable[..., torch.Tensor]:
    """Elementwise-mean distance function for ``criterion`` (l1, l2 = MSE, charbonnier)."""
    if criterion == "l1":
        return lambda a, b: (a - b).abs().mean()
    if criterion == "l2":
        return lambda a, b: (a - b).square().mean()
    if criterion == "charbonnier":
        return lambda a, b: torch.sqrt((a - b).square() + eps * eps).mean()
    raise unknown_name("criterion", criterion, CRITERIA)


class PerceptualLoss(nn.Module):
    """Weighted sum over VGG layers of the distance between features of ``sr`` and ``hr``.

    ``layers`` maps layer names (``conv5_4`` = before ReLU, ``relu5_4`` = after; see
    :func:`srkit.nets.vgg.vgg_layer_names`) to weights; default ``{"conv5_4": 1.0}`` for VGG19
    and ``{"conv5_3": 1.0}`` for VGG16 (which has no conv5_4). ``criterion``: l1, l2 (mean
    squared error) or charbonnier (``sqrt(d^2 + eps^2)``, eps = ``charbonnier_eps``).

    ``weights`` is the path of torchvision's ImageNet VGG file (None: the torch hub cache; see
    :func:`srkit.nets.vgg.load_vgg_weights`). ``extractor`` lets callers pass an already built
    frozen extractor instead (to share one VGG between terms, or in tests); it must provide every
    requested layer.
    """

    def __init__(
        self,
        arch: VGGArch = "vgg19",
        layers: Mapping[str, float] | None = None,
        criterion: Criterion = "l1",
        weights: str | os.PathLike | None = None,
        download: bool = False,
        normalize_input: bool = True,
        charbonnier_eps: float = 1e-3,
        extractor: VGGFeatureExtractor | None = None,
    ) -> None:
        super().__init__()
        if layers is None:
            layers = {"conv5_4": 1.0} if arch == "vgg19" else {"conv5_3": 1.0}
        if not layers:
            raise ConfigError("perceptual loss needs at least one layer in 'layers'")
        self.layer_weights: dict[str, float] = {name: float(w) for name, w in layers.items()}
        self.criterion = criterion
        self.distance = feature_distance(criterion, charbonnier_eps)
        if extractor is None:
            extractor = pretrained_vgg(
                arch, tuple(self.layer_weights), weights, download, normalize_input
            )
        else:
            missing = [name for name in self.layer_weights if name not in extractor.layers]
            if missing:
                raise ValueError(f"the given VGG extractor does not provide layers {missing}")
            extractor.requires_grad_(False).eval()
        # object.__setattr__ bypasses nn.Module registration: not a submodule, so the VGG is
        # absent from state_dict(), parameters(), modules() and never reaches a checkpoint.
        object.__setattr__(self, "_extractor", extractor.float())

    @property
    def extractor(self) -> VGGFeatureExtractor:
        return self._extractor

    def _apply(self, fn, recurse: bool = True):
        # Forward device moves (.to/.cuda/.cpu) to the hidden VGG, but keep it float32 even
        # when the loss module is cast with .half()/.bfloat16() (see the module docstring).
        super()._apply(fn, recurse)
        self._extractor._apply(fn)
        self._extractor.float()
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        extractor = self._extractor
        if extractor.mean.device != sr.device:
            extractor.to(sr.device)
        # Autocast off: the VGG forward and the distances run in float32 (see module docstring).
        with torch.autocast(device_type=sr.device.type, enabled=False):
            sr_features = extractor(sr.float())
            with torch.no_grad():
                hr_features = extractor(hr.float())
            total = sr.new_zeros((), dtype=torch.float32)
            for name, weight in self.layer_weights.items():
                if weight:
                    total = total + weight * self.distance(sr_features[name], hr_features[name])
        return total

    def extra_repr(self) -> str:
        return (
            f"arch={self._extractor.arch}, layers={self.layer_weights}, criterion={self.criterion}"
        )


# -- the `perceptual` loss term ------------------------------------------------------------------


class PerceptualTermConfig(LossTermConfig):
    """Distance between frozen ImageNet-VGG features of the prediction and the target."""

    type: Literal["perceptual"] = "perceptual"
    network: VGGArch = Field("vgg19", description="vgg19 (ESRGAN's choice) or vgg16.")
    layers: dict[str, float] | None = Field(
        None,
        description="{layer: weight}; `convX_Y` is before the ReLU, `reluX_Y` after. "
        "null = conv5_4 (vgg19) or conv5_3 (vgg16) with weight 1.",
    )
    criterion: Criterion = Field("l1", description="l1, l2 (MSE) or charbonnier.")
    weights: Path | None = Field(
        None,
        description="torchvision's ImageNet file (vgg19-dcbb9e9d.pth / vgg16-397923af.pth); "
        "null = look in the torch hub cache ($TORCH_HOME/hub/checkpoints).",
    )
    download: bool = Field(False, description="Download the weights if no file is found.")
    input: str = Field("sr", description="Tensor expression for the prediction.")
    target: str = Field("hr", description="Tensor expression for the target.")


class PerceptualTerm(LossTerm):
    def __init__(self, config: PerceptualTermConfig) -> None:
        super().__init__(config)
        self.input = config.input
        self.target = config.target
        self.loss = PerceptualLoss(
            arch=config.network,
            layers=config.layers,
            criterion=config.criterion,
            weights=config.weights,
            download=config.download,
        )

    def expressions(self) -> list[str]:
        return [self.input, self.target]

    def generator_loss(self, tensors: StepTensors) -> torch.Tensor:
        return self.loss(tensors[self.input], tensors[self.target])


@register_loss(PerceptualTermConfig)
def build_perceptual(config: PerceptualTermConfig, context: BuildContext) -> LossTerm:
    return PerceptualTerm(config)
