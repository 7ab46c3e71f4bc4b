"""Training and validation data: image files, MATLAB-compatible resizing, datasets, sampling.

* :mod:`srkit.data.io`: the only code that reads or writes image files.
* :mod:`srkit.data.imresize`: MATLAB-compatible bicubic ``imresize`` (numpy and torch).
* :mod:`srkit.data.datasets`: :class:`SRDataset` (paired or HR-only folders) and
  :func:`find_images`.
* :mod:`srkit.data.sampler`: :class:`TrainSampler`, the deterministic, resumable, shardable
  order of training samples.
"""

from __future__ import annotations

from srkit.data.datasets import SRDataset, find_images
from srkit.data.imresize import imresize
from srkit.data.io import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    UnreadableImageError,
    quick_check,
    read_image,
    read_rgb,
    write_image,
)
from srkit.data.sampler import TrainSampler

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "SRDataset",
    "TrainSampler",
    "UnreadableImageError",
    "find_images",
    "imresize",
    "quick_check",
    "read_image",
    "read_rgb",
    "write_image",
]
