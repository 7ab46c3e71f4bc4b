"""SPSR: structure-preserving super-resolution with gradient guidance (Ma et al., CVPR 2020).

Three parts, all at LR resolution until their upsampling stages::

    trunk     conv_first -> body (nb x RRDB, tapped after blocks t1..t4) -> conv_body + skip
              -> per x2: nearest up + conv_up{i} + LReLU -> conv_hr + LReLU -> conv_hr_out
              = HR trunk features
    gradient  grad(LR) -> grad_conv_first -> 4 stages: cat(branch, trunk tap k) -> RRDB(2nf)
              -> conv 2nf->nf; -> grad_conv_body + skip -> upsampler -> grad_conv_hr + LReLU
              -> grad_conv_hr_out = HR gradient features -> grad_conv_out (1x1) = grad_branch
    fusion    cat(HR gradient features, HR trunk features) -> RRDB(2nf) -> fusion_conv
              -> fusion_conv_hr + LReLU -> fusion_conv_last = sr

The taps are after blocks ``(nb // 4) * k`` for k = 1..4 (5, 10, 15, 20 for nb=23). The trunk
keeps RRDBNet's key names (``conv_first``, ``body.N``, ``conv_body``, ``conv_up{i}``,
``conv_hr``), so ESRGAN weights can seed it with ``load_state_dict(..., strict=False)``.

Following the seed's lessons there is no normalisation layer anywhere (image gradients are
mostly zeros, so batch/group statistics are meaningless on them) and every convolution has a
bias.

This module needs torch only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from torch import nn

from srkit.errors import ConfigError
from srkit.nets.blocks import (
    RRDB,
    NearestUpsampler,
    conv1x1,
    conv3x3,
    lrelu,
    upsample_conv,
    upsample_stage_count,
)
from srkit.nets.constraints import AtLeast, Positive
from srkit.nets.convert import count_indexed, state_dict_fits, upsample_stages
from srkit.nets.gradient import ImageGradient
from srkit.nets.registry import register_network

#: Number of gradient-branch stages, each fed by one tap of the trunk.
BRANCH_STAGES = 4


def trunk_taps(nb: int) -> list[int]:
    """Trunk blocks after which the gradient branch taps features: ``(nb // 4) * k``, k=1..4."""
    step = nb // BRANCH_STAGES
    return [step * k for k in range(1, BRANCH_STAGES + 1)]


def detect_spsr(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """SPSRNet kwargs if ``state_dict`` is an srkit SPSR generator, else None."""
    required = (
        "conv_first.weight",
        "body.0.rdb1.conv1.weight",
        "grad_conv_first.weight",
        "grad_conv_out.weight",
        "fusion_conv_last.weight",
    )
    if not all(k in state_dict for k in required):
        return None
    first = state_dict["conv_first.weight"]
    stages = upsample_stages(state_dict)
    kwargs = {
        "scale": 2**stages,
        "in_channels": int(first.shape[1]),
        "out_channels": int(state_dict["fusion_conv_last.weight"].shape[0]),
        "nf": int(first.shape[0]),
        "nb": count_indexed(state_dict, "body."),
        "gc": int(state_dict["body.0.rdb1.conv1.weight"].shape[0]),
    }
    return kwargs if state_dict_fits(SPSRNet, kwargs, state_dict) else None


@register_network("spsr", role="generator", detect=detect_spsr)
class SPSRNet(nn.Module):
    """SPSR generator: RRDB trunk, gradient branch and fusion; returns ``sr`` and ``grad_branch``.

    At nf=64, nb=23, gc=32, x4 it has 24,796,230 parameters (asserted in the tests):

    * trunk 16,733,184: RRDBNet's 16,697,987 minus its last conv (1,731) plus ``conv_hr_out``
      (36,928); 23 RRDB(64) blocks at 719,424 each are 16.5 M of it;
    * gradient branch 6,456,835: four RRDB(128) blocks at 1,493,760 each (5,975,040), four
      2nf->nf convs (295,168), the first/body/upsampling/HR convs (186,432) and the 1x1 output
      conv (195);
    * fusion 1,606,211: one RRDB(128) (1,493,760) and three convs (112,451).

    Args:
        scale: Upscaling factor: 1, 2, 4 or 8 (one nearest x2 + conv stage per factor of two).
        in_channels: Channels of the input image.
        out_channels: Channels of the output image and of the predicted gradient map.
        nf: Feature width of the trunk and the gradient branch (fusion and branch RRDBs use 2nf).
        nb: Number of RRDB blocks in the trunk (at least 4; the branch taps every nb//4 blocks).
        gc: Growth channels of each residual dense block.
    """

    def __init__(
        self,
        *,
        scale: Literal[1, 2, 4, 8] = 4,
        in_channels: Annotated[int, Positive] = 3,
        out_channels: Annotated[int, Positive] = 3,
        nf: Annotated[int, Positive] = 64,
        nb: Annotated[int, AtLeast(BRANCH_STAGES)] = 23,
        gc: Annotated[int, Positive] = 32,
    ) -> None:
        super().__init__()
        if nb < BRANCH_STAGES:
            raise ConfigError(
                f"spsr: nb must be at least {BRANCH_STAGES} (the gradient branch taps the trunk "
                f"after every nb//{BRANCH_STAGES} blocks), got {nb}"
            )
        self.scale = scale
        self.upsample_stages = upsample_stage_count(scale, "spsr")
        self.taps = trunk_taps(nb)
        self.gradient = ImageGradient()

        # Trunk (RRDBNet's names, so ESRGAN weights can seed it).
        self.conv_first = conv3x3(in_channels, nf)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = conv3x3(nf, nf)
        for i in range(self.upsample_stages):
            setattr(self, f"conv_up{i + 1}", conv3x3(nf, nf))
        self.conv_hr = conv3x3(nf, nf)
        self.conv_hr_out = conv3x3(nf, nf)

        # Gradient branch.
        self.grad_conv_first = conv3x3(in_channels, nf)
        self.grad_blocks = nn.ModuleList(RRDB(2 * nf, gc) for _ in range(BRANCH_STAGES))
        self.grad_convs = nn.ModuleList(conv3x3(2 * nf, nf) for _ in range(BRANCH_STAGES))
        self.grad_conv_body = conv3x3(nf, nf)
        self.grad_upsampler = NearestUpsampler(nf, scale)
        self.grad_conv_hr = conv3x3(nf, nf)
        self.grad_conv_hr_out = conv3x3(nf, nf)
        self.grad_conv_out = conv1x1(nf, out_channels)

        # Fusion.
        self.fusion_block = RRDB(2 * nf, gc)
        self.fusion_conv = conv3x3(2 * nf, nf)
        self.fusion_conv_hr = conv3x3(nf, nf)
        self.fusion_conv_last = conv3x3(nf, out_channels)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter subsets: ``fusion`` (trained alone first), ``gradient_branch``, ``trunk``."""
        groups: dict[str, list[nn.Parameter]] = {"fusion": [], "gradient_branch": [], "trunk": []}
        for name, param in self.named_parameters():
            if name.startswith("fusion_"):
                groups["fusion"].append(param)
            elif name.startswith("grad_"):
                groups["gradient_branch"].append(param)
            else:
                groups["trunk"].append(param)
        return groups

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        grad_lr = self.gradient(x)

        # Trunk, remembering the features after the tapped blocks.
        feat = self.conv_first(x)
        trunk = feat
        taps = []
        for index, block in enumerate(self.body, start=1):
            trunk = block(trunk)
            if index in self.taps:
                taps.append(trunk)
        trunk = feat + self.conv_body(trunk)
        for i in range(self.upsample_stages):
            trunk = upsample_conv(trunk, getattr(self, f"conv_up{i + 1}"))
        trunk = self.conv_hr_out(lrelu(self.conv_hr(trunk)))

        # Gradient branch, guided by the trunk taps.
        branch_feat = self.grad_conv_first(grad_lr)
        branch = branch_feat
        for block, conv, tap in zip(self.grad_blocks, self.grad_convs, taps, strict=True):
            branch = conv(block(torch.cat((branch, tap), 1)))
        branch = branch_feat + self.grad_conv_body(branch)
        branch = self.grad_upsampler(branch)
        branch = self.grad_conv_hr_out(lrelu(self.grad_conv_hr(branch)))
        grad_branch = self.grad_conv_out(branch)

        # Fusion of HR gradient features and HR trunk features.
        fused = self.fusion_conv(self.fusion_block(torch.cat((branch, trunk), 1)))
        sr = self.fusion_conv_last(lrelu(self.fusion_conv_hr(fused)))
        return {"sr": sr, "grad_branch": grad_branch}
