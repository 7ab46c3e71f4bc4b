"""SPSR's gradient terms (Ma et al., CVPR 2020; SPEC section 3) as ordinary loss terms.

Each is an existing term type with other defaults, so nothing downstream (trainer, checkpoints,
logs) needs to know about them:

- ``gradient_pixel``: the ``pixel`` term on ``grad(sr)`` vs ``grad(hr)``, MSE by default.
- ``branch_pixel``: the ``pixel`` term on the generator's ``grad_branch`` output vs ``grad(hr)``,
  L1 by default.
- ``gradient_gan``: the ``gan`` term on a second discriminator (``grad_discriminator``) that
  judges gradient maps: real ``grad(hr)``, fakes ``grad(sr)`` and ``grad_branch``. With two fakes
  the discriminator side is [real->1 + (grad(sr)->0 + grad_branch->0)/2] / 2 (relativistic pairs
  averaged over the fakes for ragan), see :mod:`srkit.losses.gan`. For pixgan the labels are
  plain maps (no region swaps) unless ``pixgan.swap_probability`` is raised.

Every expression stays a config key, so disjoint training can point the same terms at LR scale
(``down(grad(sr))`` vs ``grad(lr)``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from srkit.losses.adversarial import GanTerm, GanTermConfig, PixganOptions
from srkit.losses.base import BuildContext, LossTerm, register_loss
from srkit.losses.pixel import Criterion, PixelLoss, PixelLossConfig


class GradientPixelConfig(PixelLossConfig):
    """SPSR gradient loss: distance between the gradient maps of SR and HR (MSE by default)."""

    type: Literal["gradient_pixel"] = "gradient_pixel"  # type: ignore[assignment]
    criterion: Criterion = Field("l2", description="l1, l2 (MSE, SPSR's choice) or charbonnier.")
    input: str = Field("grad(sr)", description="Tensor expression for the prediction.")
    target: str = Field("grad(hr)", description="Tensor expression for the target.")


class BranchPixelConfig(PixelLossConfig):
    """SPSR branch loss: the generator's predicted gradient map against grad(HR) (L1 default)."""

    type: Literal["branch_pixel"] = "branch_pixel"  # type: ignore[assignment]
    criterion: Criterion = Field("l1", description="l1 (SPSR's choice), l2 (MSE) or charbonnier.")
    input: str = Field(
        "grad_branch", description="Tensor expression for the prediction (a generator output)."
    )
    target: str = Field("grad(hr)", description="Tensor expression for the target.")


class GradientGanConfig(GanTermConfig):
    """SPSR gradient GAN: a second discriminator judges gradient maps of HR, SR and the branch."""

    type: Literal["gradient_gan"] = "gradient_gan"  # type: ignore[assignment]
    discriminator: str = Field(
        "grad_discriminator", description="Name of the network (in `networks`) that judges."
    )
    real: str = Field("grad(hr)", description="Tensor expression of the real samples.")
    fake: list[str] = Field(
        default_factory=lambda: ["grad(sr)", "grad_branch"],
        min_length=1,
        description="Tensor expressions of the fake samples (each pushed toward real).",
    )
    pixgan: PixganOptions = Field(
        default_factory=lambda: PixganOptions(swap_probability=0.0),
        description="pixgan swap options; here swaps are off by default "
        "(`swap_probability: 0`), so pixgan compares plain label maps.",
    )


@register_loss(GradientPixelConfig)
def build_gradient_pixel(config: GradientPixelConfig, context: BuildContext) -> LossTerm:
    return PixelLoss(config)


@register_loss(BranchPixelConfig)
def build_branch_pixel(config: BranchPixelConfig, context: BuildContext) -> LossTerm:
    return PixelLoss(config)


@register_loss(GradientGanConfig)
def build_gradient_gan(config: GradientGanConfig, context: BuildContext) -> LossTerm:
    return GanTerm(config, context)
