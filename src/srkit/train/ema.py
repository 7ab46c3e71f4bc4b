"""Exponential moving average of a network's weights.

The average lives in a second copy of the network (same class, same buffers) so it can be
validated, saved and loaded like any network. Buffers (e.g. switch temperatures, usage
histories) are copied, not averaged: they are state, not weights.

Decay with warm-up: after ``step`` completed steps the average moves by
``1 - decay * min(1, step / warmup_steps)`` toward the current weights, so early (poor) weights
are forgotten quickly; ``warmup_steps = 0`` uses ``decay`` from the first step.

The update is one fused (``foreach``) ``lerp`` over all floating-point parameters and a copy
of every buffer.
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
        """Move the average toward ``model`` (the network the EMA was made from)."""
        weight = 1.0 - self.decay_at(step)
        # Paired by name on every call (cheap) rather than once, so a parameter or buffer that
        # was replaced since (load_state_dict(assign=True), a reassigned buffer) is still seen.
        averaged = dict(self.module.named_parameters())
        targets, sources = [], []
        for name, parameter in model.named_parameters():
            target = averaged[name]
            if parameter.dtype.is_floating_point:
                targets.append(target)
                sources.append(parameter.detach().to(target.dtype))
            else:
                target.copy_(parameter)
        if targets:
            torch._foreach_lerp_(targets, sources, weight)
        averaged_buffers = dict(self.module.named_buffers())
        for name, buffer in model.named_buffers():
            averaged_buffers[name].copy_(buffer)
