"""Learning-rate schedules as pure functions of the step.

Being a pure function of the step, a schedule needs no state of its own in checkpoints:
resuming at step s gives the same rate as an uninterrupted run. Schedules step per iteration;
``step`` is the number of completed optimizer steps.
"""

from __future__ import annotations

import bisect
import math
from typing import Any


def learning_rate(base_lr: float, schedule: Any, step: int) -> float:
    """The learning rate at ``step`` of a network whose base rate is ``base_lr``."""
    warm = 1.0 if step >= schedule.warmup else (step + 1) / schedule.warmup
    if schedule.type == "constant":
        return warm * base_lr
    if schedule.type == "multistep":
        return warm * base_lr * _multistep_factor(schedule, step)
    if schedule.type == "cosine":
        return warm * _cosine_rate(base_lr, schedule, step)
    raise ValueError(f"unknown schedule type {schedule.type!r}")


def _restart_weight(weights: list[float], index: int) -> float:
    return weights[index] if index < len(weights) else 1.0


def _multistep_factor(schedule: Any, step: int) -> float:
    # Restarts cut time into segments; inside one, only milestones after its start count.
    restarts = sorted(schedule.restarts)
    segment = bisect.bisect_right(restarts, step)
    start = restarts[segment - 1] if segment else 0
    weight = _restart_weight(schedule.restart_weights, segment - 1) if segment else 1.0
    passed = sum(1 for milestone in schedule.milestones if start < milestone <= step)
    return weight * schedule.gamma**passed


def _cosine_rate(base_lr: float, schedule: Any, step: int) -> float:
    eta_min = min(schedule.eta_min, base_lr)
    start = 0
    for index, period in enumerate(schedule.periods):
        if step < start + period:
            peak = base_lr * _restart_weight(schedule.restart_weights, index)
            progress = (step - start) / period
            return eta_min + (peak - eta_min) * 0.5 * (1 + math.cos(math.pi * progress))
        start += period
    return eta_min
