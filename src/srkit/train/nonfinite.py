"""``train.nan_policy``: what happens when a loss term or a gradient of a step is NaN/Inf.

The step (:mod:`srkit.train.step`) checks every loss and gradient norm once per step and, when
anything is non-finite, updates no network and asks :class:`NonFiniteGuard` for a verdict:

* ``abort`` (the default): :func:`stop_diverged` writes a debug bundle (the batch's file names
  and tensor statistics, the losses, the config) and stops the run with the last good
  checkpoint intact;
* ``skip``: the step is dropped whole (no optimizer updates at all) with a warning, and the run
  stops after ``train.nan_skip_limit`` consecutive skipped steps.

The guard's counters are saved with the training state, so a resumed run counts on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from srkit.fsutil import atomic_write
from srkit.train.reliability import DivergedError, describe_write_failure

log = logging.getLogger("srkit.train")


@dataclass
class NonFiniteGuard:
    """``train.nan_policy`` and its counters (saved with the training state)."""

    policy: str = "abort"
    skip_limit: int = 10
    consecutive: int = 0
    skipped_total: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "skipped_total": self.skipped_total}

    def load_state_dict(self, state: dict[str, int] | None) -> None:
        state = state or {}
        self.consecutive = int(state.get("consecutive", 0))
        self.skipped_total = int(state.get("skipped_total", 0))

    def step_ok(self) -> None:
        self.consecutive = 0

    def verdict(self) -> str:
        """Count a non-finite step: "skip" while the policy allows it, else "abort"."""
        if self.policy == "skip":
            self.consecutive += 1
            self.skipped_total += 1
            if self.consecutive <= self.skip_limit:
                return "skip"
        return "abort"


def nonfinite_values(
    values: dict[str, torch.Tensor], networks: dict[str, str]
) -> list[tuple[str, str, float]]:
    """(key, network, value) of every non-finite scalar among ``values`` (slow path only)."""
    found = []
    for key, value in values.items():
        number = float(value.detach().float().reshape(-1)[0]) if value.numel() else 0.0
        if not torch.isfinite(value.detach()).all():
            found.append((key, networks.get(key, "?"), number))
    # Name the cause, not its consequences: a NaN term makes the sum and the gradients NaN.
    losses = [item for item in found if not item[0].startswith("grad_norm/")]
    terms = [item for item in losses if not item[0].endswith("/total")]
    return terms or losses or found


def describe_nonfinite(bad: list[tuple[str, str, float]], step: int) -> str:
    """'loss g/pixel = nan (generator), d/gan = inf (discriminator) at step 7'."""
    parts = [f"{key} = {value} ({network})" for key, network, value in bad]
    kinds = {"gradient" if key.startswith("grad_norm/") else "loss" for key, _, _ in bad}
    what = " and ".join(sorted(kinds, reverse=True))
    return f"non-finite {what} at step {step}: {', '.join(parts)}"


def write_debug_bundle(
    folder: Path,
    step: int,
    batch: dict[str, Any],
    losses: dict[str, float],
    bad: list[tuple[str, str, float]],
    config_text: str,
    extra: dict[str, Any],
) -> Path | None:
    """Write what is needed to investigate a non-finite step: the batch's file names, the
    losses, the config, and statistics of the input tensors. Returns None if it could not be
    written (a full disk must not hide the real problem)."""

    def tensor_stats(value: Any) -> Any:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return None
        value = value.detach().float()
        finite = torch.isfinite(value)
        return {
            "shape": list(value.shape),
            "non_finite": int((~finite).sum()),
            "min": float(value[finite].min()) if finite.any() else None,
            "max": float(value[finite].max()) if finite.any() else None,
        }

    report = {
        "step": step,
        "non_finite": [{"key": k, "network": n, "value": str(v)} for k, n, v in bad],
        "losses": {k: str(v) if v != v or abs(v) == float("inf") else v for k, v in losses.items()},
        "batch_names": list(batch.get("name", [])),
        "batch_tensors": {
            k: s for k, s in ((k, tensor_stats(v)) for k, v in batch.items()) if s is not None
        },
        **extra,
    }
    try:
        atomic_write(
            folder / "report.json",
            lambda tmp: tmp.write_text(json.dumps(report, indent=1), encoding="utf-8"),
        )
        atomic_write(folder / "config.yml", lambda tmp: tmp.write_text(config_text, "utf-8"))
    except OSError as error:
        log.warning("debug bundle not written: %s", describe_write_failure(folder, error))
        return None
    return folder


def warn_skipped(guard: NonFiniteGuard, bad: list[tuple[str, str, float]], step: int) -> None:
    """The warning for a step that ``train.nan_policy: skip`` dropped (``step`` 0-based)."""
    log.warning(
        "%s; step skipped (no network updated): %d in a row, %d in total "
        "(train.nan_policy: skip, stops after %d in a row)",
        describe_nonfinite(bad, step + 1),
        guard.consecutive,
        guard.skipped_total,
        guard.skip_limit,
    )


def stop_diverged(
    guard: NonFiniteGuard,
    bad: list[tuple[str, str, float]],
    step: int,
    last_checkpoint: Path | None,
    bundle: Path | None,
) -> DivergedError:
    """The error that stops a diverged run (``step`` 0-based): what was non-finite, which
    checkpoint is intact, where the debug bundle is, and what usually helps."""
    what = describe_nonfinite(bad, step + 1)
    if guard.policy == "skip":
        what = f"{what}; {guard.consecutive} skipped steps in a row"
    kept = (
        f"last checkpoint '{last_checkpoint}' is intact" if last_checkpoint else "no checkpoint yet"
    )
    bundle_text = f"; debug bundle: '{bundle}'" if bundle else ""
    return DivergedError(
        f"{what}; stopped, {kept}{bundle_text}; lower the learning rate, set "
        "train.grad_clip, or set train.nan_policy: skip"
    )
