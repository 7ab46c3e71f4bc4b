"""Picture sheets for people to look at: LR | SR | HR side by side, rows of maps."""

from __future__ import annotations

import numpy as np
import torch


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """(C,H,W) or (1,C,H,W) tensor in [0,1] -> HWC float32 numpy, 3 channels."""
    if image.dim() == 4:
        image = image[0]
    image = image.detach().float().clamp(0, 1).cpu()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image.permute(1, 2, 0).numpy()


def nearest_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
    cols = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
    return image[rows][:, cols]


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Place HWC images in a row (all brought to the tallest height by nearest resizing)."""
    height = max(i.shape[0] for i in images)
    resized = [
        nearest_resize(i, height, round(i.shape[1] * height / i.shape[0]))
        if i.shape[0] != height
        else i
        for i in images
    ]
    spacer = np.ones((height, gap, 3), dtype=np.float32)
    parts = []
    for index, image in enumerate(resized):
        if index:
            parts.append(spacer)
        parts.append(image.astype(np.float32))
    return np.concatenate(parts, axis=1)


def stack_rows(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Stack HWC rows vertically, padding narrower rows with white."""
    width = max(r.shape[1] for r in rows)
    padded = []
    for index, row in enumerate(rows):
        if index:
            padded.append(np.ones((gap, width, 3), dtype=np.float32))
        if row.shape[1] < width:
            row = np.concatenate(
                [row, np.ones((row.shape[0], width - row.shape[1], 3), np.float32)], 1
            )
        padded.append(row)
    return np.concatenate(padded, axis=0)


def lr_sr_hr_sheet(triples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """One row per image: LR (nearest-upscaled to HR size) | SR | HR."""
    rows = []
    for lr, sr, hr in triples:
        sr_image, hr_image = to_hwc(sr), to_hwc(hr)
        lr_image = nearest_resize(to_hwc(lr), hr_image.shape[0], hr_image.shape[1])
        rows.append(side_by_side([lr_image, sr_image, hr_image]))
    return stack_rows(rows)


#: Percentile of a row's values drawn as white by ``tensor_row(..., scale="shared")``.
SHARED_SCALE_PERCENTILE = 99.5


def tensor_row(tensors: list[torch.Tensor], scale: str = "clamp") -> np.ndarray:
    """The first sample of each (N,C,H,W) tensor, side by side, as one HWC picture in [0, 1].

    1-channel maps are grey; tensors with other than 1 or 3 channels show their channel mean.
    ``scale="clamp"`` draws values as they are (clipped to [0, 1]); ``"shared"`` divides the
    whole row by the 99.5th percentile of its absolute values, so maps of small values (image
    gradient magnitudes) become visible while staying comparable with each other. The
    percentile leaves out the outermost ring of pixels of each map (when the map is larger than
    4x4): zero padding makes it an outlier (a gradient map's frame is as bright as the image
    itself there) that would otherwise set the scale and leave the inside black.
    """
    images = []
    for tensor in tensors:
        image = tensor[0].detach().float().cpu()
        if image.shape[0] not in (1, 3):
            image = image.mean(dim=0, keepdim=True)
        images.append(image)
    if scale == "shared":
        inner = [i[:, 1:-1, 1:-1] if min(i.shape[-2:]) > 4 else i for i in images]
        values = torch.cat([image.abs().flatten() for image in inner]).numpy()
        top = float(np.percentile(values, SHARED_SCALE_PERCENTILE))
        images = [image / max(top, 1e-12) for image in images]
    elif scale != "clamp":
        raise ValueError(f"unknown picture scale {scale!r}; use 'clamp' or 'shared'")
    return side_by_side([to_hwc(image) for image in images])
