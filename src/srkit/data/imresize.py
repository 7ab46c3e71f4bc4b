"""MATLAB-compatible bicubic ``imresize`` for numpy arrays and torch tensors.

The SR literature makes its low-resolution images with MATLAB's ``imresize(hr, 1/s,
'bicubic')``, and published PSNR/SSIM numbers assume exactly those images. Other "bicubic"
resizers (Pillow, OpenCV, ``torch.nn.functional.interpolate``) differ in the kernel, the
antialiasing or the border handling, which shifts PSNR by tenths of a dB. This module
re-derives MATLAB's algorithm:

* cubic convolution kernel with a = -0.5 (Keys);
* when downscaling with antialiasing, the kernel is stretched by 1/scale (and its height
  scaled by ``scale``), so each output pixel averages over the input pixels it covers;
* output pixel x (1-based) samples the input at u = x / scale + 0.5 * (1 - 1 / scale);
* out-of-range taps are mirrored half-sample symmetrically (index 0 reads pixel 1, index -1
  reads pixel 2, ...), as MATLAB's ``imresize`` does;
* each output pixel's weights are normalised to sum to 1;
* separable: one dimension after the other, the dimension with the smaller scale (larger
  reduction) first; equal scales do rows (height) first.

Differences from MATLAB, on purpose: the output is neither clipped nor rounded (MATLAB rounds
and clips only for integer inputs; callers that want 8-bit LR quantise themselves), and only
float inputs are accepted, so no one has to guess whether integers mean [0, 255].
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import overload

import numpy as np
import torch

__all__ = ["cubic", "imresize", "resize_weights"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's bicubic kernel)."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return inner + outer


@lru_cache(maxsize=256)
def resize_weights(
    in_length: int, out_length: int, scale: float, antialias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Taps for resizing one dimension, as MATLAB's ``contributions`` computes them.

    Returns:
        (indices, weights): int64 and float64 arrays of shape (out_length, taps); output pixel
        i is ``sum_k weights[i, k] * input[indices[i, k]]`` with 0-based, already mirrored
        indices. Cached, so the arrays are read-only.
    """
    kernel_width = 4.0
    stretch = antialias and scale < 1
    if stretch:
        kernel_width /= scale
    out_positions = np.arange(1, out_length + 1, dtype=np.float64)
    # Input coordinate (1-based) that output pixel x samples: pixel centres line up.
    centres = out_positions / scale + 0.5 * (1.0 - 1.0 / scale)
    first = np.floor(centres - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = first[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distances = centres[:, None] - indices
    weights = scale * cubic(scale * distances) if stretch else cubic(distances)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Half-sample symmetric mirroring over [1, in_length]: period 2 * in_length.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    # Columns that are zero for every output pixel only cost time (MATLAB drops them too).
    keep = np.any(weights != 0, axis=0)
    indices, weights = indices[:, keep], weights[:, keep]
    indices.setflags(write=False)
    weights.setflags(write=False)
    return indices, weights


def _plan(
    in_size: tuple[int, int],
    scale: float | None,
    output_size: tuple[int, int] | None,
) -> tuple[tuple[float, float], tuple[int, int]]:
    """Per-dimension (scale, output length) for (height, width)."""
    if (scale is None) == (output_size is None):
        raise ValueError("give exactly one of scale and output_size")
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        # MATLAB: ceil(scale * size). The tiny tolerance keeps e.g. 0.3 * 30 = 9.000000000000002
        # from becoming 10 because of floating-point noise.
        out = tuple(max(1, math.ceil(length * scale - 1e-9)) for length in in_size)
        return (float(scale), float(scale)), (out[0], out[1])
    assert output_size is not None
    out_h, out_w = (int(v) for v in output_size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    return (out_h / in_size[0], out_w / in_size[1]), (out_h, out_w)


@overload
def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray: ...


@overload
def imresize(
    image: torch.Tensor,
    scale: float | None = None,
    output_size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor: ...


def imresize(
    image: np.ndarray | torch.Tensor,
    scale: float | None = None,
    output_size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray | torch.Tensor:
    """Resize like MATLAB's ``imresize(image, scale_or_size, 'bicubic')``.

    Args:
        image: float numpy array (H, W) or (H, W, C), or float torch tensor (C, H, W) or
            (N, C, H, W). Tensors stay on their device and keep autograd.
        scale: resize factor (e.g. 0.25 for x4 downscaling); the output size is
            ``ceil(scale * size)`` per dimension, as in MATLAB.
        output_size: (height, width) instead of ``scale``; each dimension then gets its own
            factor ``out / in``.
        antialias: widen the kernel when downscaling (MATLAB's default).

    Returns:
        The resized image, same type, layout and dtype; values are not clipped or rounded.
    """
    if isinstance(image, torch.Tensor):
        return _imresize_torch(image, scale, output_size, antialias)
    array = np.asarray(image)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"imresize needs a float array, got {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"numpy images must be (H, W) or (H, W, C), got shape {array.shape}")
    work = array.astype(np.float32) if array.dtype == np.float16 else array
    scales, out_size = _plan((array.shape[0], array.shape[1]), scale, output_size)
    for axis in _axis_order(scales):
        if scales[axis] == 1.0 and out_size[axis] == work.shape[axis]:
            continue  # identity: cubic(0) = 1 and cubic(+-1) = cubic(+-2) = 0
        indices, weights = resize_weights(work.shape[axis], out_size[axis], scales[axis], antialias)
        work = _resize_axis_numpy(work, axis, indices, weights)
    return work.astype(array.dtype, copy=False)


def _axis_order(scales: tuple[float, float]) -> list[int]:
    # MATLAB sorts the scales ascending (stable): the larger reduction goes first.
    return sorted((0, 1), key=lambda axis: scales[axis])


def _resize_axis_numpy(
    array: np.ndarray, axis: int, indices: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    shape = [1] * array.ndim
    shape[axis] = indices.shape[0]
    weights = weights.astype(array.dtype)
    # Summing tap by tap needs memory for one output, where gathering every tap at once would
    # need taps x the image (18 x for a x1/4 reduction).
    result = np.take(array, indices[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for tap in range(1, indices.shape[1]):
        result += np.take(array, indices[:, tap], axis=axis) * weights[:, tap].reshape(shape)
    return result


def _imresize_torch(
    tensor: torch.Tensor,
    scale: float | None,
    output_size: tuple[int, int] | None,
    antialias: bool,
) -> torch.Tensor:
    if not tensor.is_floating_point():
        raise TypeError(f"imresize needs a float tensor, got {tensor.dtype}")
    if tensor.ndim not in (3, 4):
        raise ValueError(f"tensors must be (C, H, W) or (N, C, H, W), got {tuple(tensor.shape)}")
    # Half precision would lose the small negative lobes of the kernel; compute in float32.
    work = tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
    height_dim, width_dim = tensor.ndim - 2, tensor.ndim - 1
    scales, out_size = _plan((tensor.shape[-2], tensor.shape[-1]), scale, output_size)
    for axis in _axis_order(scales):
        dim = (height_dim, width_dim)[axis]
        if scales[axis] == 1.0 and out_size[axis] == work.shape[dim]:
            continue
        indices, weights = resize_weights(work.shape[dim], out_size[axis], scales[axis], antialias)
        index_tensor = torch.from_numpy(np.array(indices)).to(work.device)
        weight_tensor = torch.from_numpy(np.array(weights)).to(work.device, work.dtype)
        shape = [1] * work.ndim
        shape[dim] = indices.shape[0]
        result = work.index_select(dim, index_tensor[:, 0]) * weight_tensor[:, 0].view(shape)
        for tap in range(1, indices.shape[1]):
            result = result + work.index_select(dim, index_tensor[:, tap]) * weight_tensor[
                :, tap
            ].view(shape)
        work = result
    return work.to(tensor.dtype)
