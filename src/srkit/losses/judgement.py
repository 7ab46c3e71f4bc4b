"""What a discriminator judged in its step, and the health figures computed from it.

A GAN term keeps a :class:`Judgement` of its latest discriminator step: D's *decision logits*
on the real and the fake samples (positive = judged real) and, for map discriminators trained
on region swaps, the label maps it was trained against. The health service of a run
(``srkit.train.services.health``) turns judgements into figures with :func:`judgement_figures`
and the generator's per-term gradients into shares with :func:`gradient_shares`; both are pure
functions of tensors so that their known answers are tested directly.

Decision logits (:func:`decision_logits`) put every GAN type on one scale, sigmoid = D's
probability that a sample is real: BCE types (gan, pixgan) and hinge use D's output as it is;
ragan decides relatively, so its decision logits are ``r - mean(f)`` and ``f - mean(r)`` (what
its loss feeds to the sigmoid); lsgan's output is itself a probability estimate (targets 1 and
0), so its decision logit is ``logit(clamp(D, 1e-4, 1 - 1e-4))``.

The figures (every mean is over logit cells; "truly real" cells are those whose label is
>= 0.5, so a label map's soft border cells count with the side they mostly belong to):

- ``p_real`` / ``p_fake``: mean sigmoid(decision logit) over the truly real / fake cells.
- ``acc_real`` / ``acc_fake``: the fraction of truly real cells judged real (logit > 0) / of
  truly fake cells judged fake (logit <= 0); ``accuracy`` is their mean (0.5 = chance).
- ``logit_gap``: mean decision logit over truly real cells minus that over truly fake cells
  (0 = D no longer separates them).
- With label maps (swaps), per image the *swapped region* is the set of cells whose label is
  opposite to the image's own side (the side of the batch it stands in), and D *points at* a
  cell when it judges it opposite to the image's side:

  - ``swap_iou``: over the images with a swapped region, IoU of the cells D points at with the
    swapped region (intersections and unions summed over images; 1 = D marks exactly the
    swapped rectangles).
  - ``swap_gap``: over the same images, the mean over images of (mean decision logit of the
    truly real cells minus that of the truly fake cells): whether D tells the swapped-in region
    from the rest *within* an image (0 = no better than chance).
  - ``unswapped_iou``: over the images without a swapped region (whose swapped region is empty,
    so its IoU is undefined), the IoU of the complement: the fraction of cells D judges on the
    image's own side (1 = no false swap marked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Judgement:
    """D's decision logits in one step (detached), and the labels it was trained against."""

    real: torch.Tensor  # (N, ...) decision logits on the real samples
    fake: torch.Tensor  # (M, ...) on the fake samples (several fakes: concatenated along dim 0)
    real_labels: torch.Tensor | None = None  # label maps shaped like ``real`` (1 = real); None: 1
    fake_labels: torch.Tensor | None = None  # shaped like ``fake``; None: 0 everywhere


def decision_logits(
    gan_type: str, real: torch.Tensor, fakes: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """D's outputs on ``real`` and on each fake as decision logits (see the module docstring),
    the fakes concatenated along dim 0; detached, float32."""
    real = real.detach().float()
    fake = torch.cat([f.detach().float() for f in fakes])
    if gan_type == "ragan":
        return real - fake.mean(), fake - real.mean()
    if gan_type == "lsgan":
        return torch.logit(real.clamp(1e-4, 1 - 1e-4)), torch.logit(fake.clamp(1e-4, 1 - 1e-4))
    return real, fake


def _flat(values: torch.Tensor) -> torch.Tensor:
    return values.float().reshape(values.shape[0], -1)


def _side(judged: torch.Tensor, labels: torch.Tensor | None, own: float) -> tuple:
    """(decision logits, truly-real mask) per image, flattened to (N, cells)."""
    logits = _flat(judged)
    truth = torch.full_like(logits, own) if labels is None else _flat(labels.expand_as(judged))
    return logits, truth >= 0.5


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def judgement_figures(judgements: Sequence[Judgement]) -> dict[str, torch.Tensor]:
    """The health figures of one discriminator (see the module docstring), pooled over
    ``judgements`` (its terms and chunks of one step); 0-dim tensors, nothing synced."""
    sides = []
    for judgement in judgements:
        sides.append((*_side(judgement.real, judgement.real_labels, 1.0), True))
        sides.append((*_side(judgement.fake, judgement.fake_labels, 0.0), False))
    logits = torch.cat([s[0].reshape(-1) for s in sides])
    truly_real = torch.cat([s[1].reshape(-1) for s in sides])
    probability = torch.sigmoid(logits)
    judged_real = logits > 0
    acc_real = _masked_mean(judged_real.float(), truly_real)
    acc_fake = _masked_mean((~judged_real).float(), ~truly_real)
    figures = {
        "p_real": _masked_mean(probability, truly_real),
        "p_fake": _masked_mean(probability, ~truly_real),
        "acc_real": acc_real,
        "acc_fake": acc_fake,
        "accuracy": (acc_real + acc_fake) / 2,
        "logit_gap": _masked_mean(logits, truly_real) - _masked_mean(logits, ~truly_real),
    }
    if any(j.real_labels is not None or j.fake_labels is not None for j in judgements):
        figures.update(_swap_figures(sides))
    return figures


def _swap_figures(sides: list) -> dict[str, torch.Tensor]:
    """``swap_iou``, ``swap_gap`` and ``unswapped_iou`` over every image of ``sides``; a figure
    with no image to measure it on is left out."""
    intersection = union = gap_sum = swapped_images = own_cells = unswapped_cells = 0
    for logits, truly_real, real_side in sides:
        swapped = truly_real != real_side  # (N, cells): label opposite to the image's side
        pointed = (logits > 0) != real_side  # D judges the cell opposite to the image's side
        has_swap = swapped.any(dim=1)
        weight = has_swap.float()
        intersection = intersection + ((pointed & swapped).sum(dim=1) * weight).sum()
        union = union + ((pointed | swapped).sum(dim=1) * weight).sum()
        real_mean = (logits * truly_real).sum(dim=1) / truly_real.sum(dim=1).clamp(min=1)
        fake_mean = (logits * ~truly_real).sum(dim=1) / (~truly_real).sum(dim=1).clamp(min=1)
        gap_sum = gap_sum + ((real_mean - fake_mean) * weight).sum()
        swapped_images = swapped_images + weight.sum()
        own_cells = own_cells + ((~pointed).sum(dim=1) * (1 - weight)).sum()
        unswapped_cells = unswapped_cells + (1 - weight).sum() * logits.shape[1]
    figures = {}
    if float(swapped_images) > 0:
        figures["swap_iou"] = intersection / union.clamp(min=1)
        figures["swap_gap"] = gap_sum / swapped_images
    if float(unswapped_cells) > 0:
        figures["unswapped_iou"] = own_cells / unswapped_cells
    return figures


def output_gradient_norms(
    weighted_losses: Mapping[str, torch.Tensor], outputs: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``||d(weighted loss)/d(outputs)||`` per term: the L2 norm over every output tensor of
    the generator together (a term that does not reach an output: 0). Each term costs one
    backward pass from its loss to the outputs (not through the generator); the graph is kept
    for the step's own backward."""
    norms = {}
    for name, loss in weighted_losses.items():
        if not loss.requires_grad:
            norms[name] = torch.zeros((), device=loss.device)
            continue
        grads = torch.autograd.grad(loss, list(outputs), retain_graph=True, allow_unused=True)
        squares = [g.detach().float().square().sum() for g in grads if g is not None]
        norms[name] = torch.stack(squares).sum().sqrt() if squares else loss.new_zeros(())
    return norms


def gradient_shares(norms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each term's share of the gradient at the generator's output:
    ``share_t = ||g_t|| / sum_u ||g_u||`` with ``g_t = d(weight_t * loss_t)/d(output)``.

    The shares are non-negative and sum to 1 (all 0 when no term has a gradient). They compare
    magnitudes: terms whose gradients point against each other still each get their share.
    """
    if not norms:
        return {}
    total = torch.stack([n.float() for n in norms.values()]).sum()
    if float(total) == 0:
        return {name: torch.zeros(()) for name in norms}
    return {name: norm.float() / total for name, norm in norms.items()}
