"""Exponential moving average of a network's weights.

The average lives in a second copy of the network (same class, same buffers) so it can be
validated, saved and loaded like any network. Buffers (e.g. switch temperatures, usage
histories) are copied, not averaged: they are state, not weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float, warmup_steps: int = 0) -> None:
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """Effective decay after ``step`` completed steps (ramps up during warm-up)."""
        if self.warmup_steps <= 0:
            return self.decay
        return self.decay * min(1.0, step / self.warmup_steps)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = self.decay_at(step)
        averaged = self.module.state_dict()
        parameter_names = {name for name, _ in model.named_parameters()}
        for name, value in model.state_dict().items():
            target = averaged[name]
            if name in parameter_names and value.dtype.is_floating_point:
                target.lerp_(value.detach().to(target.dtype), 1.0 - decay)
            else:
                target.copy_(value)
