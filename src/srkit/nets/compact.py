"""The compact generator: convolutions at LR resolution, one pixel shuffle, a nearest-upsampled skip.

Layout (Real-ESRGAN's SRVGGNetCompact, the family of ``realesr-general-x4v3`` and
``realesr-animevideov3``)::

    conv(in -> F) + act -> num_conv x [conv(F -> F) + act] -> conv(F -> out * s^2)
    -> pixel shuffle(s) -> + nearest-upsampled input

Every convolution is 3x3 and runs at the input's resolution; no layer works on HR features, so
it is several times cheaper per pixel than RRDB and the usual choice for fast (video, real-time)
models. The output is the nearest upscale of the input plus what the network learned, so a
freshly built network already returns a (blocky) upscale.

State-dict keys are the community layout itself: ``body`` is one list of layers in order, so
convolution ``i`` (0 = the first, ``num_conv + 1`` = the last) is ``body.{2i}.weight/bias`` and
its PReLU's per-channel slopes are ``body.{2i+1}.weight``; ReLU and LeakyReLU (slope 0.1) hold no
weights, so their indices are simply absent from the state dict. A Real-ESRGAN ``.pth`` (its
weights under ``params`` or ``params_ema``, unwrapped by :mod:`srkit.nets.convert`) therefore
loads without any renaming, and srkit's files load in spandrel (which detects this
architecture by ``body.0.weight`` + ``body.1.weight``, i.e. PReLU models only).

Detection (:func:`detect_compact`) reads every shape from the keys. Only the PReLU variant is
recognised from bare weights: nothing in a ReLU or LeakyReLU file tells the two apart, so those
load from files srkit wrote (whose metadata records ``act_type``).

This module needs torch only.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from srkit.nets.constraints import NonNegative, Positive
from srkit.nets.convert import state_dict_fits
from srkit.nets.registry import register_network

StateDict = Mapping[str, torch.Tensor]
Activation = Literal["prelu", "relu", "leakyrelu"]

#: The scales :class:`CompactNet` is built for (any integer works with a pixel shuffle; these
#: are the run's top-level choices).
COMPACT_SCALES = (1, 2, 3, 4, 8)


def _activation(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    if kind == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(negative_slope=0.1)


def _conv_indices(state_dict: StateDict) -> list[int]:
    """Indices ``i`` of the ``body.{i}.weight`` tensors that are 4-D (convolutions)."""
    found = []
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        index, _, kind = rest.partition(".")
        if head == "body" and index.isdigit() and kind == "weight" and value.dim() == 4:
            found.append(int(index))
    return sorted(found)


def scale_and_out_channels(
    last_out: int, in_channels: int, scales: Collection[int] | None = COMPACT_SCALES
) -> tuple[int, int] | None:
    """(scale, out_channels) with ``out_channels * scale**2 == last_out``, else None.

    The last convolution's width alone does not decide both; like the model loaders (spandrel),
    prefer as many output channels as input channels, then 3, 4 and 1, and take the first that
    gives a square, and (unless ``scales`` is None) a scale among ``scales``.
    """
    for channels in (in_channels, 3, 4, 1):
        if last_out % channels:
            continue
        scale = math.isqrt(last_out // channels)
        if scale * scale == last_out // channels and (scales is None or scale in scales):
            return scale, channels
    return None


def detect_compact(state_dict: StateDict) -> dict[str, Any] | None:
    """CompactNet kwargs from a PReLU SRVGGNetCompact state dict (keys and shapes), else None."""
    first, slopes = state_dict.get("body.0.weight"), state_dict.get("body.1.weight")
    if first is None or slopes is None or first.dim() != 4 or slopes.dim() != 1:
        return None
    convs = _conv_indices(state_dict)
    if len(convs) < 2:
        return None
    last = state_dict[f"body.{convs[-1]}.weight"]
    found = scale_and_out_channels(int(last.shape[0]), int(first.shape[1]))
    if found is None:
        return None
    scale, out_channels = found
    kwargs: dict[str, Any] = {
        "scale": scale,
        "in_channels": int(first.shape[1]),
        "out_channels": out_channels,
        "num_feat": int(first.shape[0]),
        "num_conv": len(convs) - 2,
        "act_type": "prelu",
    }
    if not state_dict_fits(CompactNet, kwargs, state_dict):
        return None
    return kwargs


def check_compact(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`in_channels` equals `out_channels` or is 1 (the upsampled input is added to the output)."""
    in_channels, out_channels = arguments["in_channels"], arguments["out_channels"]
    if in_channels not in (1, out_channels):
        return [
            (
                "out_channels",
                f"{out_channels} does not match in_channels {in_channels} (the upsampled "
                "input is added to the output; in_channels must equal it or be 1)",
            )
        ]
    return []


@register_network("compact", role="generator", detect=detect_compact, check=check_compact)
class CompactNet(nn.Module):
    """Compact VGG-style generator (SRVGGNetCompact): 3x3 convs at LR resolution, pixel shuffle.

    Parameters with 3 channels in and out, PReLU, num_feat=64, x4: 1,213,296 at num_conv=32
    (the shape of Real-ESRGAN's realesr-general-x4v3) and 621,424 at num_conv=16 (the shape of
    realesr-animevideov3). Keys are the community SRVGGNetCompact layout (``body.N``).

    Args:
        scale: Upscaling factor: 1, 2, 3, 4 or 8 (one pixel shuffle by the factor at the end).
        in_channels: Channels of the input image.
        out_channels: Channels of the output image (equal to in_channels, or in_channels 1).
        num_feat: Feature width of every convolution but the last.
        num_conv: Convolutions between the first and the last one (each followed by the activation).
        act_type: Activation after every convolution but the last: prelu (learned per-channel slope, as the community models), relu, or leakyrelu (slope 0.1).
    """

    def __init__(
        self,
        *,
        scale: Literal[1, 2, 3, 4, 8] = 4,
        in_channels: Annotated[int, Positive] = 3,
        out_channels: Annotated[int, Positive] = 3,
        num_feat: Annotated[int, Positive] = 64,
        num_conv: Annotated[int, NonNegative] = 16,
        act_type: Activation = "prelu",
    ) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_feat, 3, 1, 1)]
        layers.append(_activation(act_type, num_feat))
        for _ in range(num_conv):
            layers.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            layers.append(_activation(act_type, num_feat))
        layers.append(nn.Conv2d(num_feat, out_channels * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        if self.scale > 1:
            out = F.pixel_shuffle(out, self.scale)
            x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return out + x
