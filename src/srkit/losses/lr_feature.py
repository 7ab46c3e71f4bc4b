"""The ``lr_feature`` loss term: VGG(SR) against a trained feature net's FeatureNet(up(LR)).

SPEC section 6, the seed's "disjoint" feature loss: a feature net trained beforehand
(:class:`srkit.nets.featurenet.FeatureNet`, ``configs/featurenet_x4.yml``) predicts from the
upsampled LR image the features the ImageNet VGG computes from the HR image. This term pulls the
VGG features of the generator's output toward that prediction, so it needs no HR image: LR and HR
sets can be unpaired (``data.train.disjoint``), the HR set then only feeding the discriminator.

Both networks are frozen and, like the perceptual loss's VGG, hidden from ``state_dict()`` and
``parameters()`` (fixed weights never land in checkpoints or optimizers) and run in float32
under autocast. The feature net's output is a target: computed without gradient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from srkit.errors import ConfigError
from srkit.losses.base import BuildContext, LossTerm, LossTermConfig, register_loss
from srkit.losses.perceptual import Criterion, feature_distance
from srkit.losses.tensors import StepTensors
from srkit.nets.vgg import VGGArch, pretrained_vgg, vgg_layer_names


class LRFeatureConfig(LossTermConfig):
    """Distance between VGG features of the prediction and a feature net's estimate of the HR
    features from the LR image; reads no HR image."""

    type: Literal["lr_feature"] = "lr_feature"
    feature_net: Path = Field(
        description="The trained feature net: a checkpoint folder of a featurenet run (its "
        "generator, EMA weights preferred) or a weights file."
    )
    weights: Path | None = Field(
        None,
        description="torchvision's ImageNet file of the VGG the feature net imitates "
        "(vgg16-397923af.pth / vgg19-dcbb9e9d.pth); null = the torch hub cache.",
    )
    network: VGGArch | None = Field(
        None, description="VGG applied to the prediction; null = the feature net's `arch`."
    )
    layer: str | None = Field(
        None, description="VGG layer compared; null = the layer the feature net predicts."
    )
    criterion: Criterion = Field(
        "l2", description="l1, l2 (MSE, what the feature net was trained with) or charbonnier."
    )
    input: str = Field("sr", description="Tensor expression for the prediction.")
    source: str = Field(
        "up(lr)",
        description="Tensor expression fed to the feature net: what it was trained on (its "
        "run's `train.generator_input`).",
    )


def _hide(owner: nn.Module, name: str, module: nn.Module) -> None:
    # Not a submodule: absent from state_dict() and parameters(); moved by owner._apply.
    module.requires_grad_(False).eval().float()
    object.__setattr__(owner, name, module)


class LRFeatureTerm(LossTerm):
    def __init__(self, config: LRFeatureConfig) -> None:
        super().__init__(config)
        from srkit.weights import load_network

        feature_net = load_network(config.feature_net)
        arch = config.network or getattr(feature_net, "arch", None)
        layer = config.layer or getattr(feature_net, "layer", None)
        if arch is None or layer is None:
            raise ConfigError(
                f"cannot tell which VGG layer '{config.feature_net}' predicts; set `network` "
                "and `layer`"
            )
        if layer not in vgg_layer_names(arch):
            raise ConfigError(f"layer: {arch} has no layer '{layer}'")
        self.input = config.input
        self.source = config.source
        self.layer = layer
        self.distance = feature_distance(config.criterion)
        _hide(self, "_feature_net", feature_net)
        _hide(self, "_vgg", pretrained_vgg(arch, (layer,), config.weights))

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for module in (self._feature_net, self._vgg):
            module._apply(fn)
            module.float()
        return self

    def expressions(self) -> list[str]:
        return [self.input, self.source]

    def generator_loss(self, tensors: StepTensors) -> torch.Tensor:
        prediction, source = tensors[self.input], tensors[self.source]
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            features = self._vgg(prediction.float())[self.layer]
            with torch.no_grad():
                target = self._feature_net(source.float())
            if features.shape != target.shape:
                raise ConfigError(
                    f"lr_feature: VGG {self.layer} features of '{self.input}' have shape "
                    f"{tuple(features.shape)}, the feature net's output for '{self.source}' "
                    f"{tuple(target.shape)}; feed the feature net an input of the prediction's size"
                )
            return self.distance(features, target)


@register_loss(LRFeatureConfig)
def build_lr_feature(config: LRFeatureConfig, context: BuildContext) -> LossTerm:
    return LRFeatureTerm(config)
