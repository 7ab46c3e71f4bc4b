"""LPIPS (Zhang et al., CVPR 2018), VGG variant with the v0.1 linear layers.

For two images in [0, 1]:

1. LPIPS' input scaling: ``x' = (2x - 1 - shift) / scale`` per channel
   (shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450));
2. ImageNet VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3;
3. each feature vector unit-normalised over its channels (``f / (||f||_2 + 1e-10)``);
4. the squared difference, weighted per channel by the layer's linear 1x1 layer (v0.1
   weights, no bias), averaged over space;
5. summed over the five layers.

Identical images give exactly 0; larger is more different. Two files are needed: the VGG16
ImageNet weights in torchvision's layout and the five linear layers (``lin0.weight`` ...
``lin4.weight`` of shape (1, C, 1, 1); the LPIPS package's ``lin0.model.1.weight`` layout is also
accepted). They are read only when LPIPS is asked for; a missing or foreign file is a one-line
:class:`~srkit.errors.ConfigError` / :class:`~srkit.errors.CheckpointError`.

The network is frozen, runs in float32 whatever autocast says (the normalised differences are
small), and computes one distance per image of a batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from srkit.errors import CheckpointError, ConfigError
from srkit.nets.vgg import VGGFeatureExtractor, load_vgg_weights

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


def _unit_normalise(features: torch.Tensor) -> torch.Tensor:
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """LPIPS(VGG, v0.1) distance between batches of [0, 1] RGB images: a (N,) tensor.

    ``vgg_state``: torchvision-layout VGG16 weights (``features.N.*``); ``lin_state``: the five
    linear layers (see the module docstring); ``source`` names them in error messages.
    """

    def __init__(
        self,
        vgg_state: Mapping[str, torch.Tensor],
        lin_state: Mapping[str, torch.Tensor],
        source: str = "LPIPS weights",
    ) -> None:
        super().__init__()
        self.vgg = VGGFeatureExtractor(
            "vgg16", LPIPS_LAYERS, normalize_input=False, frozen=True, state_dict=vgg_state
        )
        self.lin = nn.ParameterList(
            nn.Parameter(weight, requires_grad=False) for weight in _lin_weights(lin_state, source)
        )
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (N, 3, H, W) batches of equal shape, got "
                f"{tuple(a.shape)} and {tuple(b.shape)}"
            )
        with torch.autocast(device_type=a.device.type, enabled=False):
            features_a = self.vgg(self._scale_input(a.float()))
            features_b = self.vgg(self._scale_input(b.float()))
            total = a.new_zeros(a.shape[0], dtype=torch.float32)
            for layer, weight in zip(LPIPS_LAYERS, self.lin, strict=True):
                difference = (
                    _unit_normalise(features_a[layer]) - _unit_normalise(features_b[layer])
                ).square()
                total = total + F.conv2d(difference, weight).mean(dim=(1, 2, 3))
        return total

    def _scale_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 2 - 1 - self.shift) / self.scale


def _lin_weights(state: Mapping[str, torch.Tensor], source: str) -> list[torch.Tensor]:
    weights = []
    for index, channels in enumerate(LPIPS_CHANNELS):
        candidates = (f"lin{index}.weight", f"lin{index}.model.1.weight")
        key = next((k for k in candidates if k in state), None)
        if key is None:
            raise CheckpointError(
                f"{source} lacks lin{index}.weight: not the LPIPS v0.1 VGG linear layers "
                f"(keys found: {', '.join(list(state)[:5]) or 'none'})"
            )
        weight = state[key].float()
        if tuple(weight.shape) != (1, channels, 1, 1):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(weight.shape)}, expected (1, {channels}, 1, 1) "
                "for LPIPS(VGG)"
            )
        weights.append(weight.clone())
    return weights


def load_lpips(
    lin: str | os.PathLike,
    vgg: str | os.PathLike | None = None,
    download: bool = False,
    key: str = "lpips",
) -> LPIPS:
    """LPIPS(VGG) from its two weight files; ``key`` names the setting in error messages.

    ``lin``: the linear layers; ``vgg``: torchvision's vgg16-397923af.pth (None: the torch hub
    cache, see :func:`srkit.nets.vgg.load_vgg_weights`).
    """
    from srkit.weights import read_weights

    lin_path = Path(lin).expanduser()
    if not lin_path.is_file():
        raise ConfigError(
            f"{key}: LPIPS linear-layer file '{lin_path}' does not exist (the five LPIPS v0.1 "
            "VGG lin layers, lin0.weight ... lin4.weight)"
        )
    lin_state, _ = read_weights(lin_path)
    try:
        vgg_state = load_vgg_weights("vgg16", vgg, download=download)
    except ConfigError as error:
        raise ConfigError(f"{key}: {error}") from None
    return LPIPS(vgg_state, lin_state, source=f"'{lin_path}'")
