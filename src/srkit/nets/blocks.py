"""Building blocks shared by the generators: convolutions, dense blocks, upsamplers, init.

Everything here is a plain ``nn.Module`` or a small function on modules; the generator files
(``rrdb.py``, ``spsr.py``, ``srg2.py``) compose them. The residual dense block and RRDB follow
ESRGAN (Wang et al. 2018): five densely connected 3x3 convolutions with LeakyReLU 0.2, a residual
scaled by 0.2, three such blocks per RRDB with another 0.2-scaled residual.

This module needs torch only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from srkit.errors import ConfigError

#: Negative slope of every LeakyReLU in the generators (ESRGAN's value).
LRELU_SLOPE = 0.2


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 (keeps the spatial size at stride 1)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    """A 1x1 convolution."""
    return nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=bias)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU with the generators' slope (0.2)."""
    return F.leaky_relu(x, LRELU_SLOPE)


@torch.no_grad()
def scaled_kaiming_init(
    modules: nn.Module | Iterable[nn.Module],
    scale: float = 1.0,
    bias_fill: float = 0.0,
    negative_slope: float = 0.0,
) -> None:
    """Kaiming-normal init of every Conv2d/Linear inside ``modules``, weights times ``scale``.

    With ``scale=0.1`` this is ESRGAN's initialisation of its dense blocks: the branch starts
    close to zero, so a residual block begins as (almost) the identity. Biases are filled with
    ``bias_fill``. ``negative_slope`` is that of the LeakyReLU the layers feed (0: ReLU gain).
    """
    if isinstance(modules, nn.Module):
        modules = [modules]
    for root in modules:
        for module in root.modules():
            # Meta tensors (shape-only builds used by architecture detection) need no init.
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not module.weight.is_meta:
                nn.init.kaiming_normal_(module.weight, a=negative_slope)
                module.weight.mul_(scale)
                if module.bias is not None:
                    module.bias.fill_(bias_fill)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (growth ``gc``) with a 0.2-scaled residual (ESRGAN).

    Conv ``k`` sees the block input and the outputs of convs ``1..k-1``; convs 1-4 output ``gc``
    channels followed by LeakyReLU 0.2, conv 5 maps back to ``nf`` without activation. All convs
    are initialised Kaiming x0.1 so the block starts near the identity.
    """

    def __init__(self, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.conv1 = conv3x3(nf, gc)
        self.conv2 = conv3x3(nf + gc, gc)
        self.conv3 = conv3x3(nf + 2 * gc, gc)
        self.conv4 = conv3x3(nf + 3 * gc, gc)
        self.conv5 = conv3x3(nf + 4 * gc, nf)
        scaled_kaiming_init(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = lrelu(self.conv1(x))
        x2 = lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + 0.2 * x5


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and a 0.2-scaled outer residual."""

    def __init__(self, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


def upsample_stage_count(
    scale: int, network: str = "this network", allowed: Iterable[int] = (1, 2, 4, 8)
) -> int:
    """Number of nearest-x2 upsampling stages for ``scale`` (1 -> 0, 2 -> 1, 4 -> 2, 8 -> 3).

    Raises ConfigError naming ``network`` for a scale that is not in ``allowed``.
    """
    allowed = tuple(allowed)
    if scale not in allowed:
        raise ConfigError(
            f"{network}: scale must be one of {', '.join(map(str, allowed))}, got {scale}"
        )
    return int(math.log2(scale))


def upsample_conv(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """One upsampling stage: nearest x2, then ``conv``, then LeakyReLU 0.2."""
    return lrelu(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))


class NearestUpsampler(nn.Module):
    """``log2(scale)`` stages of nearest x2 upsampling + 3x3 conv + LeakyReLU 0.2.

    The convs live in ``self.convs`` (keys ``convs.0``, ``convs.1``, ...). Networks that must keep
    the ESRGAN key names (``conv_up1``, ``conv_up2``, ...) use :func:`upsample_conv` on their own
    attributes instead.
    """

    def __init__(self, nf: int, scale: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            conv3x3(nf, nf) for _ in range(upsample_stage_count(scale, "upsampler"))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = upsample_conv(x, conv)
        return x


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())
