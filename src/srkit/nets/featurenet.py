"""The LR feature network of SPEC section 6 (``featurenet``).

The seed pre-trains "a feature net that predicts the features of HR images from LR images", then
uses "the original feature network and this new one in tandem to work only on LR/Gen images":
the ``lr_feature`` loss compares VGG(SR) with FeatureNet(up(LR)), which needs no HR image, so a
GAN can train on LR images that have no HR partner.

:class:`FeatureNet` is a VGG-shaped network (torchvision's ``features`` layout up to one named
layer) fed the bicubic-upsampled LR image. It is trained as the ``generator`` of an ordinary run
(``configs/featurenet_x4.yml``): input ``up(lr)``, target the frozen ImageNet VGG's features of
the HR image at the same layer, MSE. Started from the ImageNet weights (``pretrained``, the
default) it begins exactly at the "bicubic through the plain VGG" baseline and learns what the
upsampling lost; it can also start from random weights.

Saved like any network. Its state dict is torchvision's ``features.N.*`` keys plus a
``layer_index`` buffer (the ``features`` index of the predicted layer), because ``conv4_3``,
``relu4_3`` and ``pool4`` have the same weights but different outputs: :func:`detect_featurenet`
reads the architecture, layer and greyscale option from a bare state dict, and loading weights
trained for another layer is refused instead of silently giving the wrong features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from srkit.errors import unknown_name
from srkit.nets.registry import register_network
from srkit.nets.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG_WEIGHT_SOURCE,
    VGGArch,
    _expected_feature_shapes,
    layer_problem,
    load_vgg_weights,
    make_vgg_features,
    vgg_layer_names,
)

#: BT.601 luma weights (the ``grey`` view of the trainer uses the same).
LUMA = (0.299, 0.587, 0.114)


def _grey_statistics() -> tuple[torch.Tensor, torch.Tensor]:
    """Normalisation of the luma channel: the luma-weighted ImageNet channel statistics."""
    luma = torch.tensor(LUMA)
    return (torch.tensor(IMAGENET_MEAN) * luma).sum(), (torch.tensor(IMAGENET_STD) * luma).sum()


def detect_featurenet(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Constructor arguments of a FeatureNet state dict, or None if it is not one."""
    if "layer_index" not in state:
        return None
    feature_keys = {key for key in state if key.startswith("features.")}
    if set(state) - feature_keys - {"layer_index"}:
        return None
    first = state.get("features.0.weight")
    if first is None or first.dim() != 4 or state["layer_index"].numel() != 1:
        return None
    index = int(state["layer_index"])
    greyscale = first.shape[1] == 1
    for arch in ("vgg16", "vgg19"):
        layer_at = {position: name for name, position in vgg_layer_names(arch).items()}
        if index not in layer_at:
            continue
        expected = {
            key: shape
            for key, shape in _expected_feature_shapes(arch).items()
            if int(key.split(".")[1]) <= index
        }
        if greyscale:
            expected["features.0.weight"] = (expected["features.0.weight"][0], 1, 3, 3)
        if set(expected) == feature_keys and all(
            tuple(state[key].shape) == shape for key, shape in expected.items()
        ):
            # Up to block 2 VGG16 and VGG19 coincide; the first match builds the same network.
            return {"arch": arch, "layer": layer_at[index], "greyscale": greyscale}
    return None


def check_featurenet(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`layer` must be a layer of `arch`: convB_I, reluB_I (B = 1..5) or poolB."""
    problem = layer_problem(arguments["arch"], str(arguments["layer"]))
    return [("layer", problem)] if problem else []


@register_network(
    "featurenet",
    role="feature",
    detect=detect_featurenet,
    weight_source=VGG_WEIGHT_SOURCE,
    check=check_featurenet,
)
class FeatureNet(nn.Module):
    """VGG-shaped net predicting an ImageNet VGG's features of HR images from upsampled LR ones.

    Args:
        arch: VGG layout, the same as the target VGG's: vgg16 or vgg19.
        layer: Layer whose features it predicts: convB_I (before ReLU), reluB_I (after) or poolB.
        pretrained: Start from torchvision's ImageNet weights, i.e. at the bicubic-through-VGG baseline (False: random initialisation).
        weights: Path of torchvision's VGG file (vgg16-397923af.pth / vgg19-dcbb9e9d.pth) for `pretrained`; None: torch hub cache.
        download: Allow downloading the ImageNet weights into the torch hub cache when missing.
        greyscale: See only the BT.601 luma of the input (the first convolution has one input channel).
    """

    def __init__(
        self,
        arch: VGGArch = "vgg16",
        layer: str = "relu3_3",
        pretrained: bool = True,
        weights: str | None = None,
        download: bool = False,
        greyscale: bool = False,
    ) -> None:
        super().__init__()
        names = vgg_layer_names(arch)
        if layer not in names:
            raise unknown_name(f"{arch} layer", layer, names)
        self.arch = arch
        self.layer = layer
        self.greyscale = greyscale
        index = names[layer]
        self.features = make_vgg_features(arch, index + 1)
        if greyscale:
            first = self.features[0]
            self.features[0] = nn.Conv2d(1, first.out_channels, kernel_size=3, padding=1)
        self._initialise()
        if pretrained:
            self._copy_vgg(load_vgg_weights(arch, weights, download=download))
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if greyscale:
            mean, std = (value.view(1) for value in _grey_statistics())
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)
        # Which layer this network predicts; saved so detection and loading can check it.
        self.register_buffer("layer_index", torch.tensor(index, dtype=torch.int64))

    def _initialise(self) -> None:
        # torchvision's VGG initialisation: He-normal (fan_out) weights, zero biases; PyTorch's
        # default conv init trains a deep VGG without normalisation layers much more slowly.
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def _copy_vgg(self, state: Mapping[str, torch.Tensor]) -> None:
        state = {key: state[f"features.{key}"].float() for key in self.features.state_dict()}
        if self.greyscale:
            # The RGB VGG sees a grey image g as (g - mean_c) / std_c in each channel c; this
            # net sees (g - mean_grey) / std_grey. Folding the three input channels of the
            # first convolution into one (and moving the mean into its bias) makes the two agree
            # exactly away from the image border.
            weight, bias = state["0.weight"], state["0.bias"]
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
            mean_grey, std_grey = _grey_statistics()
            per_channel = weight / std.view(1, 3, 1, 1)
            state["0.weight"] = std_grey * per_channel.sum(dim=1, keepdim=True)
            state["0.bias"] = bias + (per_channel * (mean_grey - mean).view(1, 3, 1, 1)).sum(
                dim=(1, 2, 3)
            )
        self.features.load_state_dict(state)

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        saved = state_dict.get(prefix + "layer_index")
        if isinstance(saved, torch.Tensor) and saved.numel() == 1:
            own = int(self.layer_index)
            if int(saved) != own:
                layer_at = {i: n for n, i in vgg_layer_names(self.arch).items()}
                saved_name = layer_at.get(int(saved), f"features index {int(saved)}")
                error_msgs.append(
                    f"the weights predict {saved_name} features, this featurenet {self.layer}"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.greyscale and x.shape[1] == 3:
            x = (x * self.luma.to(x.dtype)).sum(dim=1, keepdim=True)
        elif not self.greyscale and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.features(x)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, layer={self.layer}, greyscale={self.greyscale}"
