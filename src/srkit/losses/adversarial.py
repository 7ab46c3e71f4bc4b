"""The ``gan`` loss term: a generator objective and a discriminator step on a named network.

One term type serves every adversarial setup: ESRGAN (``real: hr``, ``fake: [sr]`` on a VGG
discriminator with ragan), SRG2 + pixgan (a map discriminator, region swaps), and SPSR's
gradient discriminator (``real: grad(hr)``, ``fake: [grad(sr), grad_branch]`` on a second
network). The maths lives in :mod:`srkit.losses.gan`; this module only fetches tensors,
calls the discriminator and keeps pictures of what it saw.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from srkit.losses import gan, penalty
from srkit.losses.base import BuildContext, LossTerm, LossTermConfig, StrictModel, register_loss
from srkit.losses.judgement import Judgement, decision_logits
from srkit.losses.tensors import StepTensors

GanType = Literal[gan.GAN_TYPES]  # type: ignore[valid-type]


class PixganOptions(StrictModel):
    """Region swaps of pixgan (SPEC section 5)."""

    swap_probability: float = Field(
        0.5, ge=0, le=1, description="Chance that a chunk's images get any swapped regions."
    )
    max_swaps: int = Field(4, ge=0, description="Rectangles per image drawn from 0..max_swaps.")
    min_size: int = Field(16, ge=1, description="Smallest rectangle side in pixels (largest: H/4).")
    per_image: bool = Field(
        True, description="Draw rectangles per image (false: one set shared by the chunk)."
    )


class PenaltyOptions(StrictModel):
    """Gradient penalties of the discriminator, R1 and R2 (docs/gan-stability.md)."""

    r1_gamma: float = Field(
        0.0,
        ge=0,
        description="R1: gamma / 2 * E||grad_x D(x)||^2 on the real samples, added to the "
        "discriminator's loss (map discriminators: gradient of the map's sum per sample); "
        "0 = off. StyleGAN2 uses 10 for one-logit discriminators.",
    )
    r2_gamma: float = Field(
        0.0, ge=0, description="R2: the same penalty on the fake samples; 0 = off."
    )
    interval: int = Field(
        1,
        ge=1,
        description="Lazy regularisation: compute the penalties only every k-th step and "
        "multiply them by k (StyleGAN2: 16), saving most of their cost.",
    )


class GanTermConfig(LossTermConfig):
    """Adversarial term: the generator side in the objective, plus a discriminator step."""

    type: Literal["gan"] = "gan"
    gan_type: GanType = Field("ragan", description="gan, ragan, lsgan, hinge or pixgan.")
    discriminator: str = Field(
        "discriminator", description="Name of the network (in `networks`) that judges."
    )
    real: str = Field("hr", description="Tensor expression of the real samples.")
    fake: list[str] = Field(
        default_factory=lambda: ["sr"],
        min_length=1,
        description="Tensor expressions of the fake samples (each pushed toward real).",
    )
    pixgan: PixganOptions = Field(default_factory=PixganOptions, description="pixgan swap options.")
    real_label: float = Field(
        1.0,
        gt=0,
        le=1,
        description="One-sided label smoothing: the discriminator's target for real samples "
        "(e.g. 0.9; fake stays 0; pixgan: the real parts of its label maps; ragan: the "
        "target of real-minus-mean-fake). 1 = off; not for hinge, which has no targets.",
    )
    penalty: PenaltyOptions = Field(
        default_factory=PenaltyOptions,
        description="R1/R2 gradient penalties of the discriminator step (computed on the "
        "clean, unswapped samples, in float32).",
    )

    @field_validator("real_label")
    @classmethod
    def _smoothable(cls, value: float, info: ValidationInfo) -> float:
        if value != 1.0 and info.data.get("gan_type") == "hinge":
            raise ValueError("hinge has no real target to smooth; use 1 or another gan_type")
        return value


def _with_noise(x: torch.Tensor, std: float, rng: torch.Generator) -> torch.Tensor:
    """Instance noise shaped like ``x`` itself (not like some other chunk)."""
    if std <= 0:
        return x
    noise = torch.randn(x.shape, generator=rng, device=rng.device, dtype=torch.float32)
    return x + std * noise.to(device=x.device, dtype=x.dtype)


def _map_picture(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """D's verdict for one image as a grey picture: sigmoid of the mean logit, upsampled."""
    probability = torch.sigmoid(logits[:1].float().mean(dim=1, keepdim=True))
    probability = F.interpolate(probability, size=(height, width), mode="nearest")
    return probability[0].expand(3, -1, -1)


def _judged_pictures(real: torch.Tensor, fake: torch.Tensor) -> list[torch.Tensor]:
    """The judged images as pictures: images as they are; signed views (``detail(...)``,
    ``grad(...)``) around mid-grey on one scale for both, so that their amounts compare."""
    real, fake = real.float(), fake.float()
    if min(real.min(), fake.min()) >= 0:
        return [real.clamp(0, 1), fake.clamp(0, 1)]
    scale = torch.maximum(real.abs().max(), fake.abs().max()).clamp(min=1e-8)
    return [(0.5 + 0.5 * x / scale).clamp(0, 1) for x in (real, fake)]


class GanTerm(LossTerm):
    def __init__(self, config: GanTermConfig, context: BuildContext) -> None:
        super().__init__(config)
        self.gan_type = config.gan_type
        self.discriminator = config.discriminator
        self.real = config.real
        self.fake = list(config.fake)
        self.options = config.pixgan
        self.real_label = config.real_label
        # Swapping regions needs real and fake images of the same scene; with swaps switched
        # off pixgan compares plain label maps (real 1, fake 0) and draws nothing.
        self.swapping = (
            config.gan_type == "pixgan"
            and not context.disjoint
            and config.pixgan.swap_probability > 0
            and config.pixgan.max_swaps > 0
        )
        self.needs_map_discriminator = config.gan_type == "pixgan"
        # A plain dict: the discriminator must not become a submodule of the term.
        self._networks = context.networks
        self._latest: tuple[torch.Tensor, ...] = ()
        self._judged: Judgement | None = None  # the latest D step's, for the health figures

    def expressions(self) -> list[str]:
        return [self.real, *self.fake]

    def real_expressions(self) -> list[str]:
        return [self.real]

    def generator_loss(self, tensors: StepTensors) -> torch.Tensor:
        discriminator = self._networks[self.discriminator]
        fake_logits = [discriminator(tensors[expression]) for expression in self.fake]
        real_logits = None
        if self.gan_type == "ragan":
            with torch.no_grad():
                real_logits = discriminator(tensors[self.real])
        return gan.generator_loss(self.gan_type, fake_logits, real_logits)

    def discriminator_loss(
        self,
        tensors: StepTensors,
        discriminator: nn.Module,
        rng: torch.Generator,
        noise_std: float = 0.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = tensors[self.real]
        fakes = [tensors[expression] for expression in self.fake]
        noise_rng = _device_generator(rng, real.device) if noise_std > 0 else rng
        if self.swapping:
            return self._pixgan_loss(real, fakes, discriminator, rng, noise_rng, noise_std)
        real_logits = discriminator(_with_noise(real, noise_std, noise_rng)).float()
        fake_logits = [discriminator(_with_noise(f, noise_std, noise_rng)).float() for f in fakes]
        loss = gan.discriminator_loss(
            self.gan_type, real_logits, fake_logits, real_target=self.real_label
        )
        self._judged = Judgement(*decision_logits(self.gan_type, real_logits, fake_logits))
        return loss, self._logit_stats(real_logits, fake_logits)

    def discriminator_penalty(
        self, tensors: StepTensors, step: int
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        options = self.config.penalty
        sides = {"r1": (options.r1_gamma, [self.real]), "r2": (options.r2_gamma, self.fake)}
        discriminator = self._networks[self.discriminator]
        total: torch.Tensor | None = None
        logged: dict[str, torch.Tensor] = {}
        for key, (gamma, expressions) in sides.items():
            factor = penalty.lazy_weight(gamma, options.interval, step)
            if not factor:
                continue
            value = torch.stack(
                [penalty.gradient_penalty(discriminator, tensors[e]) for e in expressions]
            ).mean()
            total = factor * value if total is None else total + factor * value
            logged[key] = gamma / 2 * value.detach()  # the per-step weight, not the lazy one
        return total, logged

    def _pixgan_loss(
        self,
        real: torch.Tensor,
        fakes: list[torch.Tensor],
        discriminator: nn.Module,
        rng: torch.Generator,
        noise_rng: torch.Generator,
        noise_std: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, _, height, width = real.shape
        options = self.options
        rectangles = gan.draw_swap_rectangles(
            height,
            width,
            batch,
            rng,
            swap_probability=options.swap_probability,
            max_swaps=options.max_swaps,
            min_size=options.min_size,
            per_image=options.per_image,
        )
        losses, real_all, fake_all, real_label_all, fake_label_all = [], [], [], [], []
        self._latest = ()
        for fake in fakes:
            swapped_real, swapped_fake, real_map, fake_map = gan.apply_swaps(real, fake, rectangles)
            real_logits = discriminator(_with_noise(swapped_real, noise_std, noise_rng)).float()
            fake_logits = discriminator(_with_noise(swapped_fake, noise_std, noise_rng)).float()
            size = real_logits.shape[-2:]
            channels = real_logits.shape[1]
            real_labels = gan.labels_to_logit_size(real_map, *size, channels=channels)
            fake_labels = gan.labels_to_logit_size(fake_map, *size, channels=channels)
            losses.append(
                gan.discriminator_loss(
                    "pixgan", real_logits, [fake_logits], real_labels, fake_labels, self.real_label
                )
            )
            real_all.append(real_logits)
            fake_all.append(fake_logits)
            real_label_all.append(real_labels)
            fake_label_all.append(fake_labels)
            if not self._latest:  # the first fake's view; references only, drawn on request
                self._latest = (
                    swapped_real[:1],
                    swapped_fake[:1],
                    real_logits[:1],
                    fake_logits[:1],
                    real_map[:1],
                )
        # (Every fake was judged against the same real image, swapped its own way.)
        self._judged = Judgement(
            *decision_logits(self.gan_type, torch.cat(real_all), fake_all),
            torch.cat(real_label_all),
            torch.cat(fake_label_all),
        )
        return torch.stack(losses).mean(), self._logit_stats(torch.cat(real_all), fake_all)

    def judgement(self) -> Judgement | None:
        return self._judged

    def pictures(self) -> dict[str, torch.Tensor]:
        """pixgan, latest D step: swapped real | swapped fake | real-label map | D(real') | D(fake').

        D's maps are sigmoid probabilities on the same 0..1 grey scale (white = judged real).
        Signed inputs (a D that judges ``detail(hr)``) are drawn around mid-grey.
        """
        if not self._latest:
            return {}
        real, fake, real_logits, fake_logits, real_map = self._latest
        height, width = real.shape[-2:]
        row = [
            *_judged_pictures(real[0], fake[0]),
            real_map[0].float().expand(3, -1, -1),
            _map_picture(real_logits, height, width),
            _map_picture(fake_logits, height, width),
        ]
        return {"swaps": torch.cat(row, dim=2).detach().cpu()}

    @staticmethod
    def _logit_stats(
        real_logits: torch.Tensor, fake_logits: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        real_mean = real_logits.detach().mean()
        fake_mean = torch.stack([f.detach().mean() for f in fake_logits]).mean()
        return {
            "real_logit": real_mean,
            "fake_logit": fake_mean,
            "logit_gap": real_mean - fake_mean,
        }


def _device_generator(rng: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from the step's CPU generator (for noise tensors)."""
    if device.type == "cpu":
        return rng
    seeded = torch.Generator(device=device)
    seeded.manual_seed(int(torch.randint(0, 2**62, (1,), generator=rng).item()))
    return seeded


@register_loss(GanTermConfig)
def build_gan(config: GanTermConfig, context: BuildContext) -> LossTerm:
    return GanTerm(config, context)
