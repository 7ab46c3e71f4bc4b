"""Scalars of a run: the progress bar, and every ``logging.print_every`` steps the mean losses,
learning rates, network statistics and speed, to the console, TensorBoard and metrics.jsonl."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch

from srkit.log.console import format_scalars, progress_bar
from srkit.train.build import find_hooks
from srkit.train.distributed import average_across_processes
from srkit.train.services.base import Service, StepDone, every

if TYPE_CHECKING:
    from srkit.train.trainer import Trainer

log = logging.getLogger("srkit.train")


class Scalars(Service):
    def __init__(self, run: Trainer) -> None:
        self.pending: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.timing = {"data": 0.0, "total": 0.0, "images": 0}
        self.bar: Any = None

    def start(self, run: Trainer) -> None:
        logging_cfg = run.config.logging
        shown = logging_cfg.progress_bar and run.group.is_main and not run.quiet
        self.bar = progress_bar(run.config.train.iterations, run.step, shown)

    def after_step(self, run: Trainer, done: StepDone) -> None:
        due = every(run, run.config.logging.print_every)
        # Losses are averaged over the steps since the last print; gradient norms are those of
        # the printed step.
        for key, value in done.scalars.items():
            if due or not key.startswith("grad_norm/"):
                self.pending[key].append(value)
        self.timing["data"] += done.data_seconds
        self.timing["total"] += done.seconds
        self.timing["images"] += done.images
        self.bar.update(1)
        if due:
            run.guarded_write("metrics", self.emit, run)

    def stop(self, run: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()

    def emit(self, run: Trainer) -> None:
        values = {k: float(torch.stack(v).mean()) for k, v in self.pending.items() if v}
        self.pending.clear()
        for name in run.trained:
            values[f"lr/{name}"] = run.optimizers[name].param_groups[0]["lr"]
            for training_stats in find_hooks(run.networks[name], "training_stats"):
                for key, value in training_stats().items():
                    values[f"stats/{name}/{key}"] = float(value)
        if run.nonfinite.skipped_total:
            values["nonfinite/skipped_steps"] = run.nonfinite.skipped_total
        if self.timing["total"] > 0:
            values["speed/images_per_s"] = self.timing["images"] / self.timing["total"]
            values["speed/data_wait_fraction"] = self.timing["data"] / self.timing["total"]
        self.timing = {"data": 0.0, "total": 0.0, "images": 0}
        values = average_across_processes(values, run.group, run.device)
        if not run.group.is_main:
            return
        # Other services' figures (e.g. health) join this step's one row; they print their own
        # console lines.
        shown = sorted(k for k in values if not k.startswith("stats/"))
        values.update(run.services.row_scalars(run))
        run.logger.scalars(run.step, values)
        keys = [k for k in values if k.startswith(("g/", "d/")) and k.count("/") == 1]
        self.bar.set_postfix_str(format_scalars(values, keys[:4]), refresh=False)
        log.info("step %d  %s", run.step, format_scalars(values, shown))
