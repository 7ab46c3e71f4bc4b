"""The interface between the training loop and the run's services.

A service is one concern of a run that acts around the training steps and never inside the
optimisation: the console/TensorBoard scalars, training pictures, validation, checkpoints. The
loop knows none of them by name; it calls every registered service at fixed points, in
registration order (``srkit.train.services.SERVICES``):

=====================  ======================================================================
``__init__(run)``      while the trainer is built, before anything is written: check the
                       config parts the service needs (a bad folder fails now, not mid-run)
``start(run)``         once before the first step of this ``run()`` (after a resume)
``observe_step(...)``  inside ``Trainer.train_step``, every step, whoever drives it (the loop,
                       a test, a benchmark): a look at the step's tensors; writes nothing
``after_step(...)``    the loop, after the step is counted (``run.step`` is the number of
                       steps done), with a :class:`StepDone`: write what is due
``after_validation``   after each validation, with its metrics
``stop(run)``          the loop ended: every step done, or stopped by a signal
                       (``run.stopped_by`` names it)
=====================  ======================================================================

Every method is optional (the base class does nothing). A service runs on every process of a
distributed run and decides itself what only the main process does (``run.group.is_main``);
collective operations (averaging, barriers) must be reached by every process alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from srkit.train.reliability import describe_write_failure

if TYPE_CHECKING:
    from srkit.train.step import StepResult
    from srkit.train.trainer import Trainer

log = logging.getLogger("srkit.train")


@dataclass
class StepDone:
    """What the loop tells the services after each step."""

    # What ``Trainer.train_step`` returned: the step's losses and gradient norms (empty for a
    # step that ``train.nan_policy: skip`` dropped).
    scalars: dict[str, torch.Tensor]
    data_seconds: float  # waiting for the batch
    seconds: float  # the whole step, data included
    images: int  # in the step, over all processes


class Service:
    """Base class of a run's services: override the events the service acts on."""

    def __init__(self, run: Trainer) -> None:
        pass

    def start(self, run: Trainer) -> None:
        pass

    def observe_step(self, run: Trainer, result: StepResult) -> None:
        pass

    def after_step(self, run: Trainer, done: StepDone) -> None:
        pass

    def after_validation(self, run: Trainer, metrics: dict[str, float]) -> None:
        pass

    def row_scalars(self, run: Trainer) -> dict[str, float]:
        """Figures this service adds to the scalars row written every ``logging.print_every``
        steps (one metrics.jsonl line and TensorBoard per step); asked on the main process
        only, when the row is written."""
        return {}

    def stop(self, run: Trainer) -> None:
        pass


def every(run: Trainer, interval: int) -> bool:
    """Whether something done every ``interval`` steps is due now (``run.step`` steps done);
    the last step of the run always counts as due."""
    return run.step % interval == 0 or run.step == run.config.train.iterations


class Services:
    """The services of one run, called in order."""

    def __init__(self, run: Trainer, kinds: list[type[Service]]) -> None:
        self.items = [kind(run) for kind in kinds]

    def get(self, kind: type[Service]) -> Any:
        """The run's service of class ``kind`` (None if it has none)."""
        return next((item for item in self.items if isinstance(item, kind)), None)

    def call(self, event: str, *args: Any) -> None:
        for item in self.items:
            getattr(item, event)(*args)

    def row_scalars(self, run: Trainer) -> dict[str, float]:
        """Every service's :meth:`Service.row_scalars`, merged."""
        merged: dict[str, float] = {}
        for item in self.items:
            merged.update(item.row_scalars(run))
        return merged


class GuardedWrites:
    """Writers of non-essential output (metrics, pictures) share this: a failed write (a full
    disk) is reported once per kind of output and training goes on; checkpoints have their own
    policy (``logging.checkpoint_failure``)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.warned: set[str] = set()

    def __call__(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except OSError as error:
            if what not in self.warned:
                self.warned.add(what)
                path = Path(error.filename) if error.filename else self.run_dir
                log.warning(
                    "%s not written: %s; training goes on (reported once)",
                    what,
                    describe_write_failure(path, error),
                )
            return None
