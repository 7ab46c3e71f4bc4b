"""The fixed image-gradient operator of SPSR (Ma et al., CVPR 2020).

Per channel, with zero padding 1 (so the output has the input's size)::

    v = conv(x, [[0, -1, 0], [0, 0, 0], [0, 1, 0]])   # x[i+1, j] - x[i-1, j]
    h = conv(x, [[0, 0, 0], [-1, 0, 1], [0, 0, 0]])   # x[i, j+1] - x[i, j-1]
    grad(x) = sqrt(v**2 + h**2 + 1e-6)

("conv" is PyTorch's cross-correlation.) The 1e-6 keeps the square root differentiable where the
image is flat. The SPSR generator uses it on its input, and the SPSR loss terms use it on SR and
HR images.

This module needs torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Added under the square root so the gradient of the magnitude exists on flat regions.
GRADIENT_EPS = 1e-6


def _kernels(dtype: torch.dtype | None = None, device: torch.device | None = None):
    vertical = torch.tensor(
        [[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype, device=device
    )
    horizontal = torch.tensor(
        [[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=dtype, device=device
    )
    # One (2, 1, 3, 3) weight: both kernels applied in a single conv per channel.
    return torch.stack((vertical, horizontal)).unsqueeze(1)


def _apply(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(
            f"image_gradient expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}"
        )
    n, c, h, w = x.shape
    vh = F.conv2d(x.reshape(n * c, 1, h, w), kernels.to(dtype=x.dtype), padding=1)
    vh = vh.reshape(n, c, 2, h, w)
    return torch.sqrt(vh[:, :, 0] ** 2 + vh[:, :, 1] ** 2 + GRADIENT_EPS)


def image_gradient(x: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of each channel of ``x`` (N, C, H, W); same shape as ``x``."""
    return _apply(x, _kernels(x.dtype, x.device))


class ImageGradient(nn.Module):
    """:func:`image_gradient` as a module (fixed kernels; nothing in the state dict).

    The kernels are a non-persistent buffer, so they follow ``.to(device)`` but never appear
    in a state dict and have no parameters to train.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernels", _kernels(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _apply(x, self.kernels)
