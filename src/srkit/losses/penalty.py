"""Gradient penalties of a discriminator: R1 on real samples, R2 on fake ones.

R1 (Mescheder et al. 2018, "Which training methods for GANs do actually converge?") penalises
the discriminator's gradient with respect to its input on real data, R2 the same on generated
data:

    R(x) = gamma / 2 * E_x || grad_x D(x) ||^2

Both push D to be flat around the data, so it cannot answer the generator with ever steeper
slopes (the oscillation that makes GAN training diverge). Lazy regularisation (StyleGAN2,
Karras et al. 2020): the penalty is computed only every ``interval``-th step and then
multiplied by ``interval``, so on average it weighs what it would weigh every step, at a
fraction of the cost (one extra forward and a double backward through D).

Map discriminators (pixgan, u-net: one logit per pixel or patch) are differentiated through
the *sum* of their map per sample, ``grad_x sum_ij D(x)_ij`` (for a one-logit discriminator
that is its plain gradient). A map of many logits therefore has a larger gradient than a
single logit, so its useful gamma is smaller.

The penalty is computed in float32 with autocast off, whatever the run's precision: its
double backward through bf16/fp16 activations would lose most of its digits. Samples are
independent in the formula; a discriminator with batch normalisation couples them (the
penalty is then that of the batch as D sees it in training mode), and its forward pass for
the penalty updates BN's running statistics and spectral norm's power iteration once more.
"""

from __future__ import annotations

import torch
from torch import nn


def gradient_penalty(discriminator: nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """``E_x || grad_x sum D(x) ||^2`` over the samples of a batch, in float32.

    Differentiable with respect to the discriminator's parameters (the graph of the input
    gradient is kept), so adding ``gamma / 2 *`` this to D's loss trains D to be flatter.
    """
    with torch.autocast(device_type=samples.device.type, enabled=False):
        inputs = samples.detach().float().requires_grad_(True)
        logits = discriminator(inputs).float()
        (gradient,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return gradient.square().flatten(1).sum(dim=1).mean()


def lazy_weight(gamma: float, interval: int, step: int) -> float:
    """The factor of ``E||grad D||^2`` in D's loss at ``step``: ``gamma / 2 * interval`` on
    every ``interval``-th step (steps 0, k, 2k, ...), 0 in between (and when gamma is 0)."""
    if gamma <= 0 or step % interval:
        return 0.0
    return gamma / 2 * interval
