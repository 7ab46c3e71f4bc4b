"""Whole-image references: the extra inputs of generators that see more than their patch (SPSR3).

A generator that needs more than the LR image says so with two attributes (never by its type):
``extra_inputs``, the names of the batch tensors it takes as keyword arguments, and
``reference_size``, the side of the reference it wants. The names this module can build:

* ``ref`` (N, C + 1, S, S): the *whole* image resized to S x S (bilinear with antialiasing, so
  the same function gives the same reference for training and inference), plus a last channel
  marking where the patch lies: each reference pixel holds the fraction of its area that the
  patch covers (1 inside, 0 outside, fractional on the border);
* ``ref_center`` (N, 2): the patch centre as (x, y) in [-1, 1], ``grid_sample``'s convention
  with ``align_corners=False`` (-1 and 1 are the outer edges of the image).

Who builds them: the training datasets (:mod:`srkit.data.datasets`, ``reference_size``) from the
whole image and the crop, turned with the patch when it is flipped or rotated; validation from
the whole validation image (the patch is the image); inference from the whole input once, with
each tile's own mask and centre (:class:`WholeImageReference`). Everything is a deterministic
function of the image and the crop, so resumed training sees the same references.

Training on HR-only folders (LR made on the fly) builds the reference from the whole HR image:
resized to S it differs from the whole LR image's by the bicubic downscaling's rounding only.

This module needs torch only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from srkit.errors import ConfigError

#: The extra inputs this module builds.
REFERENCE_INPUTS = ("ref", "ref_center")

#: (top, left, height, width) of a patch in pixels of the whole image.
Box = tuple[int, int, int, int]


def extra_inputs(network: nn.Module) -> tuple[str, ...]:
    """Names of the batch tensors ``network`` takes besides its image input (often none)."""
    names = tuple(getattr(network, "extra_inputs", ()) or ())
    unknown = [name for name in names if name not in REFERENCE_INPUTS]
    if unknown:
        raise ConfigError(
            f"the generator asks for input(s) {', '.join(map(repr, unknown))}, which srkit "
            f"cannot build (it builds {', '.join(REFERENCE_INPUTS)})"
        )
    return names


def reference_size(network: nn.Module) -> int | None:
    """Side of the whole-image reference ``network`` takes, or None when it takes none."""
    if not extra_inputs(network):
        return None
    return int(network.reference_size)


def resize_whole(image: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) image -> (N, C, size, size): the reference's picture of the whole image."""
    return F.interpolate(
        image.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def _coverage(start: int, length: int, full: int, size: int) -> torch.Tensor:
    """Fraction of each of ``size`` equal cells over ``full`` pixels covered by [start,
    start + length)."""
    edges = torch.arange(size + 1, dtype=torch.float64) * (full / size)
    low = edges[:-1].clamp(min=start)
    high = edges[1:].clamp(max=start + length)
    return ((high - low).clamp_min(0) / (full / size)).float()


def patch_mask(height: int, width: int, box: Box, size: int) -> torch.Tensor:
    """(size, size) mask of ``box`` in a ``height`` x ``width`` image resized to size x size."""
    top, left, box_height, box_width = box
    rows = _coverage(top, box_height, height, size)
    cols = _coverage(left, box_width, width, size)
    return rows[:, None] * cols[None, :]


def patch_center(height: int, width: int, box: Box) -> torch.Tensor:
    """(2,) centre of ``box`` as (x, y) in [-1, 1] (``align_corners=False``)."""
    top, left, box_height, box_width = box
    return torch.tensor(
        [(left + box_width / 2) / width * 2 - 1, (top + box_height / 2) / height * 2 - 1],
        dtype=torch.float32,
    )


class WholeImageReference:
    """The reference of one whole (N, C, H, W) image, resized once; ``inputs(box)`` adds the
    mask and centre of a patch (``None``: the whole image)."""

    def __init__(self, image: torch.Tensor, size: int) -> None:
        self.height, self.width = int(image.shape[-2]), int(image.shape[-1])
        self.picture = resize_whole(image, size)
        self.size = size

    def inputs(self, box: Box | None = None) -> dict[str, torch.Tensor]:
        box = (0, 0, self.height, self.width) if box is None else box
        batch = self.picture.shape[0]
        device = self.picture.device
        mask = patch_mask(self.height, self.width, box, self.size).to(device)
        centre = patch_center(self.height, self.width, box).to(device)
        return {
            "ref": torch.cat((self.picture, mask.expand(batch, 1, -1, -1)), 1),
            "ref_center": centre.expand(batch, 2).clone(),
        }


def whole_image_inputs(
    network: nn.Module, image: torch.Tensor, box: Box | None = None
) -> dict[str, torch.Tensor]:
    """The extra inputs of ``network`` for a patch ``box`` of the whole (N, C, H, W) ``image``
    (default: the whole image is the patch); ``{}`` for networks that take none."""
    return tile_inputs(network, image)(box)


def tile_inputs(
    network: nn.Module, image: torch.Tensor
) -> Callable[[Box | None], dict[str, torch.Tensor]]:
    """A function ``box -> extra inputs`` for tiles of ``image``: the whole image is resized
    once, each tile gets its own mask and centre. Returns ``{}`` for networks that take none."""
    size = reference_size(network)
    if size is None:
        return lambda box: {}
    reference = WholeImageReference(image, size)
    names = extra_inputs(network)
    return lambda box: {k: v for k, v in reference.inputs(box).items() if k in names}


def orient_reference(
    ref: torch.Tensor,
    centre: torch.Tensor,
    turns: Sequence[bool | int] | None,
    flips: bool,
    rotations: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip/rotate a (C, S, S) reference and its (2,) centre as the datasets turn the patch.

    ``turns`` is the dataset's draw ``(horizontal, vertical, quarter_turns)`` (None: no
    augmentation), applied with the datasets' rules: a horizontal flip, a vertical flip only
    without rotations, then ``quarter_turns`` counter-clockwise turns (``np.rot90``).
    """
    if turns is None:
        return ref, centre
    horizontal, vertical, quarter_turns = turns
    x, y = float(centre[0]), float(centre[1])
    if flips:
        if horizontal:
            ref, x = ref.flip(-1), -x
        if vertical and not rotations:
            ref, y = ref.flip(-2), -y
    if rotations and quarter_turns:
        ref = torch.rot90(ref, int(quarter_turns), dims=(-2, -1))
        for _ in range(int(quarter_turns)):
            x, y = y, -x  # a point (x, y) lands at (y, -x) after one turn
    return ref.contiguous(), torch.tensor([x, y], dtype=torch.float32)


def patch_reference(
    image: torch.Tensor,
    box: Box,
    size: int,
    turns: Sequence[bool | int] | None = None,
    flips: bool = True,
    rotations: bool = True,
) -> dict[str, torch.Tensor]:
    """``ref`` (C + 1, S, S) and ``ref_center`` (2,) of a training patch ``box`` of the (C, H, W)
    ``image``, turned like the patch (see :func:`orient_reference`)."""
    inputs = WholeImageReference(image[None], size).inputs(box)
    ref, centre = orient_reference(
        inputs["ref"][0], inputs["ref_center"][0], turns, flips, rotations
    )
    return {"ref": ref, "ref_center": centre}
