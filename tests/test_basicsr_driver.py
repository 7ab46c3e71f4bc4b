"""benchmarks/basicsr_psnr.py's resume fixes, without BasicSR installed: an extended recipe keeps
its new cosine periods when BasicSR resumes, and training states load onto the CPU."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest
import torch

from repo_scripts import load_script


def _load_driver():
    return load_script("benchmarks/basicsr_psnr.py", "basicsr_psnr")


class CosineRestarts(torch.optim.lr_scheduler.LRScheduler):
    """BasicSR 1.4.2's CosineAnnealingRestartLR in what matters here: the schedule lives in the
    scheduler's attributes, so torch's load_state_dict (a __dict__ update) replaces it."""

    def __init__(self, optimizer, periods, restart_weights, eta_min=0.0):
        self.periods, self.restart_weights, self.eta_min = periods, restart_weights, eta_min
        self.cumulative_period = [sum(periods[: i + 1]) for i in range(len(periods))]
        super().__init__(optimizer)

    def get_lr(self):
        index = next(i for i, end in enumerate(self.cumulative_period) if self.last_epoch <= end)
        start = self.cumulative_period[index - 1] if index else 0
        phase = math.pi * (self.last_epoch - start) / self.periods[index]
        weight = self.restart_weights[index]
        return [
            self.eta_min + weight * 0.5 * (lr - self.eta_min) * (1 + math.cos(phase))
            for lr in self.base_lrs
        ]


def _scheduler(periods, weights):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    return CosineRestarts(optimizer, periods, weights)


def _state_at_end(periods, weights) -> dict:
    scheduler = _scheduler(periods, weights)
    for _ in range(sum(periods)):
        scheduler.optimizer.step()
        scheduler.step()
    return scheduler.state_dict()


def test_an_extended_recipe_keeps_its_new_cycle_after_resume():
    driver = _load_driver()
    state = _state_at_end([4, 4], [1.0, 0.5])
    # Unpatched, the resumed scheduler forgets the added cycle (what broke BasicSR's resume).
    plain = _scheduler([4, 4, 6], [1.0, 0.5, 0.5])
    plain.load_state_dict(state)
    assert plain.periods == [4, 4]

    class Patched(CosineRestarts):
        pass

    driver.keep_schedule_on_resume(Patched)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    resumed = Patched(optimizer, [4, 4, 6], [1.0, 0.5, 0.5])
    resumed.load_state_dict(state)
    assert resumed.periods == [4, 4, 6] and resumed.cumulative_period == [4, 8, 14]
    assert resumed.last_epoch == 8  # the step counter does come from the state
    optimizer.step()
    resumed.step()  # first step of the new cycle: back near 0.5 x the base rate
    assert resumed.get_last_lr()[0] == pytest.approx(0.5e-3 * 0.5 * (1 + math.cos(math.pi / 6)))
    # A schedule that does not start with the stored one is refused, not silently mixed.
    changed = Patched(optimizer, [4, 6, 6], [1.0, 0.5, 0.5])
    with pytest.raises(SystemExit, match=r"periods \[4, 4\]"):
        changed.load_state_dict(state)


def test_the_newest_training_state_loads_onto_the_cpu(tmp_path, monkeypatch):
    driver = _load_driver()
    states = tmp_path / "experiments/run/training_states"
    states.mkdir(parents=True)
    for step in (1500, 3000, 10500):  # numeric, not text order: 10500 is the newest
        torch.save({"iter": step, "optimizers": [], "schedulers": []}, states / f"{step}.state")
    checked = []
    fake_train = types.SimpleNamespace(check_resume=lambda opt, step: checked.append(step))
    monkeypatch.chdir(tmp_path)
    options = {"name": "run", "auto_resume": True, "path": {"resume_state": None}}
    state = driver.load_resume_state_on_cpu(fake_train, options)
    assert state["iter"] == 10500 and checked == [10500]
    assert options["path"]["resume_state"] == str(
        Path("experiments/run/training_states/10500.state")
    )
    # No states yet (or no --auto_resume): a fresh run.
    assert driver.load_resume_state_on_cpu(fake_train, {**options, "name": "other"}) is None
    assert driver.load_resume_state_on_cpu(fake_train, {**options, "auto_resume": False}) is None
    assert "basicsr" not in sys.modules  # the driver's helpers need no BasicSR
