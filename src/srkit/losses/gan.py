"""GAN objectives as pure functions: discriminator and generator losses, and pixgan's swaps.

Nothing here knows about configs, networks or the trainer; the GAN loss term in
``srkit.losses.base`` calls these functions with the logits it got from a discriminator.

GAN types (SPEC sections 1 and 5), for real logits ``r`` and fake logits ``f``:

- ``gan``: BCE-with-logits. D: [BCE(r, 1) + BCE(f, 0)] / 2; G: BCE(f, 1).
- ``ragan``: relativistic average GAN (ESRGAN). D: [BCE(r - mean f, 1) + BCE(f - mean r, 0)] / 2;
  G: the mirror image, [BCE(r - mean f, 0) + BCE(f - mean r, 1)] / 2, with ``r`` detached.
- ``lsgan``: least squares. D: [mean (r - 1)^2 + mean f^2] / 2; G: mean (f - 1)^2.
- ``hinge``: D: mean relu(1 - r) + mean relu(1 + f); G: -mean f (the standard forms).
- ``pixgan``: BCE against label *maps* (see below). D: [BCE(r', real_map) + BCE(f', fake_map)]
  / 2 where r', f' are the discriminator's logits on the swapped images; G: BCE(f, 1) over every
  logit, no swapping.

Several fakes: SPSR's gradient discriminator judges two fakes (the SR image's gradient map and
the gradient branch output). The D loss is then [real term + mean over fakes of the fake term]
/ 2 for gan/lsgan/pixgan (hinge: real term + mean fake term; ragan: mean over fakes of the
relativistic pair), and the G loss is the mean over fakes of the fake->real loss.

Map discriminators: every logit is a prediction; labels may be maps of the logits' shape.

Reductions are means over all elements, so for ``gan``, ``lsgan``, ``hinge`` and ``pixgan`` the
loss of a batch equals the average of the losses of equal-size chunks of it (megabatch
invariance). ``ragan`` is *not* chunk-invariant: the relativistic mean is taken over the chunk,
which differs from chunk to chunk; this is accepted (ESRGAN trains that way too).

All losses are computed in float32 even if the logits come out of an autocast region.

pixgan label maps: :func:`draw_swap_rectangles` draws the rectangles (from an explicit
``torch.Generator``, so the draw is reproducible and resumable), :func:`apply_swaps` exchanges the
pixels and builds full-resolution label maps, :func:`labels_to_logit_size` brings the maps to the
discriminator's output size by area averaging, giving soft labels on rectangle borders.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from srkit.errors import unknown_name

GAN_TYPES: tuple[str, ...] = ("gan", "ragan", "lsgan", "hinge", "pixgan")

# GAN types whose D targets are labels (hence accept label maps / soft labels).
_LABELLED_TYPES = ("gan", "lsgan", "pixgan")

Rectangle = tuple[int, int, int, int]  # (top, left, height, width), in pixels


def _check_gan_type(gan_type: str) -> None:
    if gan_type not in GAN_TYPES:
        raise unknown_name("GAN type", gan_type, GAN_TYPES)


def _as_list(logits: torch.Tensor | Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    items = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if not items:
        raise ValueError(f"{what} must hold at least one tensor")
    return [item.float() for item in items]


def _label_like(logits: torch.Tensor, label: torch.Tensor | float) -> torch.Tensor:
    if isinstance(label, torch.Tensor):
        label = label.to(device=logits.device, dtype=torch.float32)
        if label.shape != logits.shape:
            label = label.expand_as(logits)  # e.g. (N,1,h,w) labels for (N,C,h,w) logits
        return label
    return torch.full_like(logits, float(label))


def _fit(gan_type: str, logits: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Mean loss pushing ``logits`` toward ``target`` (a label or label map) for gan/lsgan/pixgan."""
    target = _label_like(logits, target)
    if gan_type == "lsgan":
        return (logits - target).square().mean()
    return F.binary_cross_entropy_with_logits(logits, target)


def _per_fake_labels(
    fake_labels: torch.Tensor | Sequence[torch.Tensor] | None, count: int
) -> list[torch.Tensor | float]:
    if fake_labels is None:
        return [0.0] * count
    if isinstance(fake_labels, torch.Tensor):
        return [fake_labels] * count
    labels = list(fake_labels)
    if len(labels) != count:
        raise ValueError(f"got {len(labels)} fake label maps for {count} fake logit tensors")
    return labels


def discriminator_loss(
    gan_type: str,
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor | Sequence[torch.Tensor],
    real_labels: torch.Tensor | None = None,
    fake_labels: torch.Tensor | Sequence[torch.Tensor] | None = None,
    real_target: float = 1.0,
) -> torch.Tensor:
    """The discriminator's loss for one real batch and one or more fake batches.

    ``real_labels``/``fake_labels`` (label maps broadcastable to the logits, one fake map shared
    by all fakes or one per fake) default to 1 for real and 0 for fake; they are what pixgan
    passes after swapping, and are accepted for ``gan`` and ``lsgan`` too (soft labels).
    ``hinge`` and ``ragan`` have no labels.

    ``real_target`` < 1 is one-sided label smoothing (Salimans et al. 2016): D's target for
    real becomes ``real_target`` instead of 1, fake stays 0. Label maps are multiplied by it
    (their real 1s become ``real_target``); for ``ragan`` it is the target of the
    real-minus-mean-fake logit. ``hinge`` has no target to smooth.
    """
    _check_gan_type(gan_type)
    real = real_logits.float()
    fakes = _as_list(fake_logits, "fake_logits")
    if gan_type not in _LABELLED_TYPES and (real_labels is not None or fake_labels is not None):
        raise ValueError(f"GAN type {gan_type!r} takes no label maps")
    if gan_type == "hinge" and real_target != 1.0:
        raise ValueError("hinge has no real target to smooth")

    if gan_type in _LABELLED_TYPES:
        real_term = _fit(
            gan_type, real, real_target if real_labels is None else real_labels * real_target
        )
        labels = [lab * real_target for lab in _per_fake_labels(fake_labels, len(fakes))]
        fake_term = torch.stack(
            [_fit(gan_type, f, lab) for f, lab in zip(fakes, labels, strict=True)]
        ).mean()
        return (real_term + fake_term) / 2
    if gan_type == "hinge":
        fake_term = torch.stack([F.relu(1.0 + f).mean() for f in fakes]).mean()
        return F.relu(1.0 - real).mean() + fake_term
    # ragan: for each fake batch, real should look more real than the average fake and the fake
    # less real than the average real.
    real_mean = real.mean()
    pair_losses = [
        (
            F.binary_cross_entropy_with_logits(real - f.mean(), torch.full_like(real, real_target))
            + F.binary_cross_entropy_with_logits(f - real_mean, torch.zeros_like(f))
        )
        / 2
        for f in fakes
    ]
    return torch.stack(pair_losses).mean()


def generator_loss(
    gan_type: str,
    fake_logits: torch.Tensor | Sequence[torch.Tensor],
    real_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """The generator's adversarial loss: the mean over fakes of "fake judged real".

    ``ragan`` needs ``real_logits`` (the discriminator on the real batch); they are detached
    here, so no gradient reaches the discriminator through the generator's loss.
    """
    _check_gan_type(gan_type)
    fakes = _as_list(fake_logits, "fake_logits")
    if gan_type in _LABELLED_TYPES:
        # pixgan's generator side is plain BCE(f, 1) over every logit: no swapping.
        return torch.stack([_fit(gan_type, f, 1.0) for f in fakes]).mean()
    if gan_type == "hinge":
        return torch.stack([-f.mean() for f in fakes]).mean()
    if real_logits is None:
        raise ValueError("ragan's generator loss needs the discriminator's real logits")
    real = real_logits.detach().float()
    real_mean = real.mean()
    pair_losses = [
        (
            F.binary_cross_entropy_with_logits(real - f.mean(), torch.zeros_like(real))
            + F.binary_cross_entropy_with_logits(f - real_mean, torch.ones_like(f))
        )
        / 2
        for f in fakes
    ]
    return torch.stack(pair_losses).mean()


# -- pixgan --------------------------------------------------------------------------------------


def _side_range(size: int, min_size: int) -> tuple[int, int]:
    """Inclusive range of a rectangle side: [min_size, size // 4], clamped to fit the image.

    When a quarter of the image is smaller than ``min_size`` (small patches), ``min_size`` wins
    so that rectangles stay visible at the discriminator's coarse output resolution, but a side
    never exceeds the image itself.
    """
    low = min(min_size, size)
    high = max(low, size // 4)
    return low, high


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive) from ``generator``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator, device=generator.device))


def draw_swap_rectangles(
    height: int,
    width: int,
    batch: int,
    generator: torch.Generator,
    swap_probability: float = 0.5,
    max_swaps: int = 4,
    min_size: int = 16,
    per_image: bool = True,
) -> list[list[Rectangle]]:
    """Random pixgan swap rectangles ``(top, left, height, width)`` for each image of a batch.

    Per draw: with probability ``swap_probability`` swap at all; then k ~ U{0..max_swaps}
    rectangles, each side uniform in [min_size, side/4] (see :func:`_side_range`), position
    uniform among those that keep the rectangle inside the image. ``per_image=False`` makes one
    draw and shares it across the batch (the original behaviour). All randomness comes from
    ``generator`` (best a CPU one: a handful of scalar draws), so the draw is reproducible and
    resumes exactly when the generator's state is restored.
    """
    if not 0.0 <= swap_probability <= 1.0:
        raise ValueError(f"swap_probability must be in [0, 1], got {swap_probability}")
    if max_swaps < 0 or min_size < 1 or height < 1 or width < 1:
        raise ValueError("max_swaps must be >= 0, and min_size, height, width >= 1")
    h_low, h_high = _side_range(height, min_size)
    w_low, w_high = _side_range(width, min_size)

    def draw_one() -> list[Rectangle]:
        if torch.rand((), generator=generator, device=generator.device).item() >= swap_probability:
            return []
        rectangles = []
        for _ in range(_randint(0, max_swaps, generator)):
            rect_h = _randint(h_low, h_high, generator)
            rect_w = _randint(w_low, w_high, generator)
            top = _randint(0, height - rect_h, generator)
            left = _randint(0, width - rect_w, generator)
            rectangles.append((top, left, rect_h, rect_w))
        return rectangles

    if per_image:
        return [draw_one() for _ in range(batch)]
    shared = draw_one()
    return [list(shared) for _ in range(batch)]


def swap_mask(
    rectangles: Sequence[Sequence[Rectangle]],
    height: int,
    width: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (N, 1, H, W) mask, True inside the union of each image's rectangles."""
    mask = torch.zeros(len(rectangles), 1, height, width, dtype=torch.bool, device=device)
    for index, image_rectangles in enumerate(rectangles):
        for top, left, rect_h, rect_w in image_rectangles:
            mask[index, :, top : top + rect_h, left : left + rect_w] = True
    return mask


def apply_swaps(
    real: torch.Tensor, fake: torch.Tensor, rectangles: Sequence[Sequence[Rectangle]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exchange pixels between ``real`` and ``fake`` inside the rectangles.

    Returns ``(real', fake', real_map, fake_map)``: the swapped batches and full-resolution
    (N, 1, H, W) label maps saying where each pixel came from (1 = real, 0 = fake): the real map
    is 0 and the fake map 1 inside the rectangles. Overlapping rectangles swap their union once
    (swapping twice would silently undo the swap while the labels claim otherwise).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    if len(rectangles) != real.shape[0]:
        raise ValueError(f"got rectangles for {len(rectangles)} images, batch is {real.shape[0]}")
    height, width = real.shape[-2:]
    mask = swap_mask(rectangles, height, width, device=real.device)
    swapped_real = torch.where(mask, fake, real)
    swapped_fake = torch.where(mask, real, fake)
    label_dtype = real.dtype if real.is_floating_point() else torch.float32
    fake_map = mask.to(label_dtype)
    real_map = 1.0 - fake_map
    return swapped_real, swapped_fake, real_map, fake_map


def labels_to_logit_size(
    label_map: torch.Tensor, out_h: int, out_w: int, channels: int = 1
) -> torch.Tensor:
    """Bring a full-resolution (N, 1, H, W) label map to the logits' (N, channels, h, w).

    Area interpolation: each output cell gets the mean label over the input pixels it covers,
    i.e. exactly the covered-area fraction when H/h and W/w are integers (soft labels along
    rectangle borders). Area averaging instead of bilinear sampling keeps the labels faithful for
    large reductions (1/8, 1/32), where bilinear would just sample a few pixels.
    """
    if label_map.dim() != 4:
        raise ValueError(f"label_map must be (N, C, H, W), got shape {tuple(label_map.shape)}")
    labels = label_map.float()
    if labels.shape[-2:] != (out_h, out_w):
        labels = F.interpolate(labels, size=(out_h, out_w), mode="area")
    if labels.shape[1] != channels:
        if labels.shape[1] != 1:
            raise ValueError(f"cannot expand a {labels.shape[1]}-channel map to {channels}")
        labels = labels.expand(-1, channels, -1, -1)
    return labels.contiguous()
