"""The loss-term contract and registry.

A loss term is one weighted entry of the config's ``losses`` list. Each term type is a pydantic
config class (its ``type`` literal is the name users write) plus a builder that turns a config
into a :class:`LossTerm`. The trainer knows nothing about specific terms: it sums
``weight * generator_loss(tensors)`` over all terms, and runs one discriminator step per
discriminator that some term names, summing ``discriminator_loss`` of the terms that use it.

Terms read their inputs by *expression* from :class:`srkit.losses.tensors.StepTensors`
(``sr``, ``hr``, ``grad(sr)``, ``featurenet(up(lr))`` ...), so the same term type serves plain,
SPSR and disjoint training with different expressions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

if TYPE_CHECKING:
    from srkit.losses.judgement import Judgement
    from srkit.losses.tensors import StepTensors


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class LossTermConfig(StrictModel):
    """Fields shared by every loss term."""

    type: str
    weight: float = Field(1.0, ge=0, description="Multiplier of this term in the generator loss.")
    name: str | None = Field(
        None,
        description="Name used in logs (`g/<name>`); defaults to the term's type. Must be "
        "unique when two terms share a type.",
    )

    @property
    def log_name(self) -> str:
        return self.name or self.type


@dataclass
class BuildContext:
    """What a loss-term builder may use: run-wide settings and the built networks."""

    scale: int
    device: torch.device
    networks: dict[str, nn.Module]
    # True when LR and HR images of a batch are unrelated (unpaired / disjoint data).
    disjoint: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class LossTerm(nn.Module):
    """One weighted term of the training objective.

    Subclasses implement :meth:`generator_loss`. GAN terms set :attr:`discriminator` to the
    network name they train and implement :meth:`discriminator_loss`. A term is an
    ``nn.Module`` only so that helper modules it owns (a frozen VGG) follow ``.to(device)``;
    terms own no trainable parameters and nothing of theirs is checkpointed.
    """

    discriminator: str | None = None

    def __init__(self, config: LossTermConfig) -> None:
        super().__init__()
        self.config = config
        self.name = config.log_name
        self.weight = float(config.weight)

    def expressions(self) -> list[str]:
        """Tensor expressions this term reads (checked against the data mode at start-up)."""
        return []

    def anchors_colour(self) -> bool:
        """Whether this term pins the generator's output to the target's colours: a distance
        between images (not between their gradients or deep features). The health figures warn
        when such terms hold too small a share of the generator's gradient (colours then drift)."""
        return False

    def real_expressions(self) -> list[str]:
        """Those of :meth:`expressions` read only as samples of real images for a discriminator
        (not as targets paired with the input): the only ones that may read ``hr`` when LR and
        HR images are unpaired (``BuildContext.disjoint``)."""
        return []

    def generator_loss(self, tensors: StepTensors) -> torch.Tensor:
        raise NotImplementedError

    def discriminator_loss(
        self,
        tensors: StepTensors,
        discriminator: nn.Module,
        rng: torch.Generator,
        noise_std: float = 0.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of the discriminator step and detached scalars to log (GAN terms only).

        ``rng`` is a generator on the training device, seeded per step, for every random draw
        of the step (pixgan rectangles, instance noise) so resumed runs repeat exactly;
        ``noise_std`` is the instance-noise deviation to add to both inputs.
        """
        raise NotImplementedError(f"loss term '{self.name}' has no discriminator side")

    def discriminator_penalty(
        self, tensors: StepTensors, step: int
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """A regulariser added to the discriminator's loss at ``step`` (e.g. a gradient
        penalty), with detached scalars to log; ``(None, {})`` when there is none this step.

        Called outside autocast, once per chunk, after :meth:`discriminator_loss`."""
        return None, {}

    def pictures(self) -> dict[str, torch.Tensor]:
        """Images (3,H,W in [0,1]) from the last discriminator step worth logging; optional."""
        return {}

    def judgement(self) -> Judgement | None:
        """What the discriminator judged in this term's latest discriminator step (GAN terms;
        read by the run's health figures, see :mod:`srkit.losses.judgement`)."""
        return None


Builder = Callable[[Any, BuildContext], LossTerm]


@dataclass(frozen=True)
class LossEntry:
    config_class: type[LossTermConfig]
    build: Builder


_LOSSES: dict[str, LossEntry] = {}


def register_loss(config_class: type[LossTermConfig]):
    """Decorator for a builder ``(config, context) -> LossTerm`` of the given config class."""
    type_name = config_class.model_fields["type"].default
    if not isinstance(type_name, str):
        raise TypeError(f"{config_class.__name__}.type needs a Literal default naming the term")

    def decorator(builder: Builder) -> Builder:
        _LOSSES[type_name] = LossEntry(config_class, builder)
        return builder

    return decorator


def loss_entries() -> dict[str, LossEntry]:
    # Importing the package registers every built-in term.
    import srkit.losses  # noqa: F401

    return dict(_LOSSES)
