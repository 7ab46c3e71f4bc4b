"""What each trained network optimises, and with which settings, at a given step.

* one Adam (AdamW when ``weight_decay > 0``) per trained network, from ``train.optim.<name>``;
* its learning rate at a step (``train.optim.<name>.schedule`` or ``train.schedule``);
* ``train.optim.<name>.train_only``: every parameter outside some named parameter groups (the
  network's ``parameter_groups()``) is held back for the first steps. Held-back parameters stop
  requiring gradients, so they get none, and the optimizer (which skips parameters without a
  gradient) changes neither them nor their moments. What trains is a pure function of the step,
  so a resumed run repeats it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from srkit.config import OptimizerConfig
from srkit.errors import ConfigError
from srkit.train.schedules import learning_rate


def adam_implementation(parameters: list[nn.Parameter], device: torch.device) -> dict[str, bool]:
    """Keyword arguments choosing Adam's kernel: ``fused`` (one kernel over all parameters) on
    CPU and CUDA, where PyTorch has it; else ``foreach``. On CPU the default per-parameter loop
    costs about 3x the fused kernel (benchmarks/RESULTS.md)."""
    floating = all(p.is_floating_point() for p in parameters)
    if floating and device.type in ("cpu", "cuda"):
        return {"fused": True}
    return {"foreach": True}


def optimizer_settings(config: Any, name: str) -> OptimizerConfig:
    """``train.optim.<name>``, or the defaults when the config has no such section."""
    return config.train.optim.get(name) or OptimizerConfig()


def make_optimizer(
    parameters: list[nn.Parameter], settings: OptimizerConfig, device: torch.device
) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if settings.weight_decay > 0 else torch.optim.Adam
    return kind(
        parameters,
        lr=settings.lr,
        betas=tuple(settings.betas),
        eps=settings.eps,
        weight_decay=settings.weight_decay,
        **adam_implementation(parameters, device),
    )


def learning_rate_at(config: Any, name: str, step: int) -> float:
    """Learning rate of network ``name`` at ``step`` (0-based)."""
    settings = optimizer_settings(config, name)
    return learning_rate(settings.lr, settings.schedule or config.train.schedule, step)


class TrainOnly:
    """Which parameters of each trained network train at a step (``train_only``).

    ``trainable[name]`` lists every parameter that ever trains (those that required gradients
    when the network was built); the optimizers are built over these, including the ones held
    back for now.
    """

    def __init__(self, config: Any, networks: dict[str, nn.Module], trained: list[str]) -> None:
        self.trainable = {
            name: [p for p in networks[name].parameters() if p.requires_grad] for name in trained
        }
        self._held: dict[str, tuple[set[int], int]] = {}
        self.groups: dict[str, list[str]] = {}
        for name in trained:
            self._held[name] = self._held_back(config, name, networks[name])

    def _held_back(self, config: Any, name: str, network: nn.Module) -> tuple[set[int], int]:
        """(ids of the parameters held back, until which step); empty if nothing is."""
        train_only = optimizer_settings(config, name).train_only
        if train_only is None:
            return set(), 0
        where = f"train.optim.{name}.train_only.groups"
        kind = config.networks[name].type
        describe = getattr(network, "parameter_groups", None)
        if not callable(describe):
            raise ConfigError(
                f"{where}: network '{name}' ({kind}) has no named parameter groups (no "
                "parameter_groups() method), so it cannot train a subset"
            )
        groups = describe()
        kept: set[int] = set()
        for group in train_only.groups:
            if group not in groups:
                raise ConfigError(
                    f"{where}: network '{name}' ({kind}) has no parameter group '{group}'; "
                    f"its groups: {', '.join(groups)}"
                )
            kept.update(id(p) for p in groups[group])
        self.groups[name] = list(train_only.groups)
        return {id(p) for p in self.trainable[name] if id(p) not in kept}, train_only.steps

    def apply(self, name: str, step: int) -> None:
        """Make the parameters of ``name`` that train at ``step`` require gradients (only)."""
        held, until = self._held[name]
        holding = step < until
        for parameter in self.trainable[name]:
            parameter.requires_grad_(not (holding and id(parameter) in held))

    def released_at(self, step: int) -> list[str]:
        """Networks whose held-back parameters start to train at ``step``."""
        return [name for name, (held, until) in self._held.items() if held and step == until]

    def holding(self, step: int) -> dict[str, tuple[list[str], int, int]]:
        """Networks still holding parameters back at ``step``: (groups that train, until
        which step, how many tensors are held back)."""
        return {
            name: (self.groups[name], until, len(held))
            for name, (held, until) in self._held.items()
            if held and step < until
        }
