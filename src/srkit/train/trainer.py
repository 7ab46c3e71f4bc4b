"""The one training loop of srkit: build a run from its config, then step until done.

Where things are (see ``docs/architecture.md`` for the picture):

* :mod:`srkit.train.build` turns the config into networks, loss terms and data;
  :mod:`srkit.train.optim` into optimizers, learning rates and ``train_only``;
* :mod:`srkit.train.step` is one optimisation step of every trained network (megabatch chunks,
  precision, generator and discriminator passes, clipping, the finiteness check);
* this module owns the loop: data, schedules before each step, the EMA and the NaN policy
  after it, signals, and the run folder;
* :mod:`srkit.train.services` act around the steps: scalars and the progress bar, training
  pictures, validation, checkpoints (and resume).

Nothing in here knows a method or a network by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from srkit import __version__
from srkit.config import dump_config, trained_network_names
from srkit.errors import ConfigError, DataError, SrkitError
from srkit.fsutil import atomic_write
from srkit.log.console import attach_log_file, setup_logging
from srkit.log.scalars import RunLogger
from srkit.losses.base import BuildContext
from srkit.train import checkpoint as ckpt
from srkit.train import nonfinite, reliability
from srkit.train.build import (
    build_loss_terms,
    build_lpips,
    build_networks,
    build_train_dataset,
    ema_view,
    find_hooks,
    may_leave_parameters_unused,
    resolve_auto_settings,
    seed_everything,
    select_device,
    tensor_views,
)
from srkit.train.distributed import (
    ProcessGroup,
    any_process,
    check_batch_layout,
    init_distributed,
    shutdown,
    wrap_for_training,
)
from srkit.train.ema import ModelEMA
from srkit.train.optim import TrainOnly, learning_rate_at, make_optimizer, optimizer_settings
from srkit.train.reliability import DivergedError
from srkit.train.services import SERVICES, Service
from srkit.train.services.base import GuardedWrites, Services, StepDone
from srkit.train.services.checkpoints import resume_folder
from srkit.train.services.validation import Validation
from srkit.train.step import StepResult, TrainStep

log = logging.getLogger("srkit.train")


__all__ = ["DivergedError", "Trainer", "select_device"]


class Trainer:
    """Builds a run from a config and trains it; ``run()`` is the entry point.

    ``services`` are the classes of the run's services (default: every registered one,
    ``srkit.train.services.SERVICES``).
    """

    def __init__(
        self,
        config: Any,
        resume: str | None = None,
        quiet: bool = False,
        services: list[type[Service]] | None = None,
    ) -> None:
        self.quiet = quiet
        self.device = select_device(config.train.device)
        self.group: ProcessGroup = init_distributed(self.device.type)
        if self.group.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)
        # From here on the config says what runs: no "auto" left in it.
        config, self.auto_choices = resolve_auto_settings(config, self.device)
        self.config = config
        self.local_batch_size = check_batch_layout(
            config.data.train.batch_size, self.group.world_size, config.train.megabatch
        )
        self.run_dir = Path(config.output_dir) / config.name
        self.checkpoint_root = self.run_dir / "checkpoints"
        # Console logging now; the log file joins once everything is known to be valid, so a
        # bad config or data folder leaves nothing behind on disk.
        setup_logging(quiet=quiet or not self.group.is_main)
        self._check_precision()
        if self.group.is_main:
            reliability.check_output_folder(self.run_dir)
        self.resume_from = resume_folder(resume, self.checkpoint_root, self.run_dir)
        seed_everything(config.seed, config.train.deterministic)
        self._build_parts()
        self.step = 0
        self.logger: RunLogger | None = None
        self.stopped_by: str | None = None  # the signal's name when a signal stopped run()
        self.guarded_write = GuardedWrites(self.run_dir)
        # The services check what they need now (and the checkpoint service loads the state
        # to resume), before the run folder is opened.
        self.services = Services(self, SERVICES if services is None else services)
        if self.group.is_main:
            self._open_run_folder(fresh=self.resume_from is None)

    # ------------------------------------------------------------------ construction

    def _build_parts(self) -> None:
        """Networks, loss terms, optimizers, EMA, data and the step that ties them."""
        config = self.config
        self.networks = build_networks(config, self.device)
        self.trained = trained_network_names(config)  # the generator first
        self.generator = self.networks["generator"]
        self.views = tensor_views(config, self.networks)
        context = BuildContext(
            scale=config.scale,
            device=self.device,
            networks=self.networks,
            disjoint=config.data.train.disjoint,
        )
        self.terms = build_loss_terms(config, context)
        self.lpips = build_lpips(config, self.device)  # for validation; None if not configured
        if config.train.channels_last:
            # Every network the step runs, frozen helpers and the loss terms' own networks
            # (e.g. the perceptual VGG) too: a conv whose weights and input disagree in layout
            # pays a reorder of both on every call.
            for module in [*self.networks.values(), *self.terms]:
                module.to(memory_format=torch.channels_last)
        self.train_only = TrainOnly(config, self.networks, self.trained)
        self.optimizers = {
            # Every parameter that ever trains, including those train_only holds back for now:
            # a parameter without a gradient is skipped by the optimizer's step.
            name: make_optimizer(
                self.train_only.trainable[name], optimizer_settings(config, name), self.device
            )
            for name in self.trained
        }
        ema = config.train.ema
        self.ema = ModelEMA(self.generator, ema.decay, ema.warmup_steps) if ema else None
        if self.ema is not None:  # loss terms may compare with the average (`ema(lr)`)
            self.views["ema"] = ema_view(self.ema.module)
        scaler = (
            torch.amp.GradScaler(self.device.type) if config.train.precision == "fp16" else None
        )
        wrapped = {name: self._wrap(name) for name in self.trained}
        self.train_dataset = self._train_dataset()
        self.nonfinite = nonfinite.NonFiniteGuard(
            config.train.nan_policy, config.train.nan_skip_limit
        )
        self.optimise = TrainStep(
            train_cfg=config.train,
            seed=config.seed,
            device=self.device,
            group=self.group,
            wrapped=wrapped,
            networks=self.networks,
            optimizers=self.optimizers,
            terms=self.terms,
            views=self.views,
            train_only=self.train_only,
            nonfinite=self.nonfinite,
            scaler=scaler,
        )
        self._step_hooks = self._network_step_hooks()

    def _wrap(self, name: str) -> torch.nn.Module:
        """Network ``name`` as the step calls it (DDP, torch.compile; see distributed.py)."""
        find_unused = self.group.distributed and may_leave_parameters_unused(
            self.config,
            name,
            self.networks[name],
            self.terms,
            bool(self.train_only.holding(0).get(name)),
            self.device,
        )
        return wrap_for_training(
            self.networks[name], self.group, self.device, self.config.train.compile, find_unused
        )

    def _check_precision(self) -> None:
        if self.config.train.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision: fp16 needs a CUDA GPU; use bf16 on CPU")

    def _network_step_hooks(self) -> list[Any]:
        """``set_training_step`` of every trained network (switch temperatures) and of the EMA
        copy, so that it is validated and saved at the temperature of its step; and the NaN
        fault-injection hook of the test suite when it is set."""
        hooked = [self.networks[name] for name in self.trained]
        if self.ema is not None:
            hooked.append(self.ema.module)
        hooks = [hook for net in hooked for hook in find_hooks(net, "set_training_step")]
        self.hooks = reliability.TestHooks()
        if self.hooks.nan is not None:
            self.hooks.install_nan(self.terms)
            hooks.append(self.hooks.set_training_step)
        return hooks

    def _train_dataset(self) -> Any:
        try:
            return build_train_dataset(self.config, self.generator)
        except DataError as error:
            raise DataError(f"data.train: {error}") from None

    def _open_run_folder(self, fresh: bool) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            attach_log_file(self.run_dir / "train.log")
            self.logger = RunLogger(self.run_dir, self.config.logging.tensorboard)
            # Steps logged after the point this run starts from are redone (or were never
            # covered by a checkpoint): drop them.
            self.logger.truncate_after(self.step)
            if fresh:
                text = dump_config(self.config)
                atomic_write(self.run_dir / "config.yml", lambda tmp: tmp.write_text(text, "utf-8"))
        except OSError as error:
            raise ConfigError(
                f"output_dir: cannot create the run folder: "
                f"{reliability.describe_write_failure(Path(error.filename or self.run_dir), error)}"
                "; set output_dir to a writable folder with free space"
            ) from error

    # ------------------------------------------------------------------ parts the step owns

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The fp16 gradient scaler (None in fp32/bf16)."""
        return self.optimise.scaler

    @scaler.setter
    def scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        self.optimise.scaler = scaler

    # ------------------------------------------------------------------ the data

    def data_loader(self) -> Iterator[dict[str, Any]]:
        """Training batches from the current step on (the same stream a resumed run sees)."""
        from srkit.data.sampler import TrainSampler

        data = self.config.data.train
        sampler = TrainSampler(
            len(self.train_dataset),
            data.batch_size,
            seed=self.config.seed,
            rank=self.group.rank,
            world_size=self.group.world_size,
            start_step=self.step,
        )
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            num_workers=data.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=data.workers > 0,
            worker_init_fn=reliability.ignore_interrupts_in_worker if data.workers > 0 else None,
            multiprocessing_context="spawn" if data.workers > 0 else None,
        )
        return iter(loader)

    # ------------------------------------------------------------------ one step

    def train_step(
        self, batch: dict[str, Any], step: int, with_norms: bool = False
    ) -> dict[str, torch.Tensor]:
        """Step ``step`` (0-based) of every trained network; returns detached scalars to log
        (the gradient norms too with ``with_norms``; nothing for a step the NaN policy
        dropped). Behaves as the loop's step does, so tests and benchmarks call it directly."""
        self._follow_schedules(step)
        result = self.optimise(batch, step, with_norms)
        self.services.call("observe_step", self, result)
        if result.verdict != "ok":
            self._act_on_nonfinite(result, batch)
            return {}
        if self.ema is not None and result.generator_trained:
            self.ema.update(self.generator, step + 1)
        return result.scalars

    def _follow_schedules(self, step: int) -> None:
        """Everything that is a function of the step number alone, set before the step:
        learning rates, the parameters ``train_only`` trains, network hooks (temperatures)."""
        for set_step in self._step_hooks:
            set_step(step)
        for name in self.trained:
            for group in self.optimizers[name].param_groups:
                group["lr"] = learning_rate_at(self.config, name, step)
            self.train_only.apply(name, step)
        for name in self.train_only.released_at(step):
            log.info("step %d: every parameter of '%s' trains from now on", step + 1, name)

    def _act_on_nonfinite(self, result: StepResult, batch: dict[str, Any]) -> None:
        """A step with a NaN/Inf loss or gradient (nothing was updated): warn and go on
        (``train.nan_policy: skip``), or write a debug bundle and stop."""
        if result.verdict == "skip":
            nonfinite.warn_skipped(self.nonfinite, result.nonfinite, result.step)
            return
        bundle = None
        if self.group.is_main:
            rates = {n: self.optimizers[n].param_groups[0]["lr"] for n in self.trained}
            bundle = nonfinite.write_debug_bundle(
                self.run_dir / "debug" / f"step_{result.step + 1:08d}",
                result.step + 1,
                batch,
                {k: float(v) for k, v in result.scalars.items() if v.numel() == 1},
                result.nonfinite,
                dump_config(self.config),
                {
                    "learning_rates": rates,
                    "nan_policy": self.nonfinite.policy,
                    "skipped_steps": self.nonfinite.skipped_total,
                },
            )
        saved = ckpt.list_checkpoints(self.checkpoint_root)
        last = saved[-1][1] if saved else None
        raise nonfinite.stop_diverged(self.nonfinite, result.nonfinite, result.step, last, bundle)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Train until ``train.iterations``, the services validating, logging and
        checkpointing on the way.

        SIGINT/SIGTERM stop it after the step in progress with a checkpoint at that step
        (``self.stopped_by`` names the signal); a second signal exits at once.
        """
        try:
            with reliability.StopSignals(console=self.group.is_main and not self.quiet) as signals:
                self._loop(signals)
        except SrkitError as error:
            # Into the run's log file; the CLI prints the same line on the console.
            log.error("%s", error, extra={"file_only": True})
            raise
        finally:
            if self.logger is not None:
                self.logger.close()
            shutdown(self.group)

    def _loop(self, signals: reliability.StopSignals) -> None:
        total = self.config.train.iterations
        if self.group.is_main:
            self._log_start()
        self.services.call("start", self)
        batches = self.data_loader()
        while self.step < total:
            # Every process must stop after the same step.
            if any_process(signals.received is not None, self.group, self.device):
                self.stopped_by = signals.name or "a signal on another process"
                break
            started = time.perf_counter()
            try:
                batch = next(batches)
            except Exception:
                if signals.received is not None:  # Ctrl-C also reached the data workers
                    continue
                raise
            loaded = time.perf_counter()
            # (Gradient norms cost nothing more: the step computes them for its NaN check.)
            scalars = self.train_step(batch, self.step, with_norms=True)
            self.step += 1
            done = StepDone(
                scalars=scalars,
                data_seconds=loaded - started,
                seconds=time.perf_counter() - started,
                images=len(batch["lr"]) * self.group.world_size,
            )
            self.services.call("after_step", self, done)
        self.services.call("stop", self)
        if self.stopped_by is None and self.group.is_main:
            log.info("finished %d steps; run folder: %s", total, self.run_dir)

    def validate(self) -> dict[str, float]:
        """Validate the generator (and its EMA) now; rank 0 only (the others wait)."""
        metrics = self.services.get(Validation).validate(self)
        self.services.call("after_validation", self, metrics)
        return metrics

    def evaluate(self, network: torch.nn.Module) -> tuple[dict[str, float], Any]:
        """Validation metrics of ``network`` and its LR | SR | HR sheet (writes nothing)."""
        return self.services.get(Validation).evaluate(self, network)

    def _log_start(self) -> None:
        described = ", ".join(
            f"{name}={self.config.networks[name].type} "
            f"({sum(p.numel() for p in self.networks[name].parameters()) / 1e6:.2f} M params)"
            for name in self.trained
        )
        log.info(
            "srkit %s: run '%s' on %s, %d process(es); %s",
            __version__,
            self.config.name,
            self.device,
            self.group.world_size,
            described,
        )
        log.info("loss terms: %s", ", ".join(f"{t.name}×{t.weight:g}" for t in self.terms))
        if self.auto_choices:
            log.info("settings: %s", "; ".join(self.auto_choices))
        for name, (groups, until, count) in self.train_only.holding(self.step).items():
            log.info(
                "%s: only parameter group(s) %s train until step %d (%d tensors held back)",
                name,
                ", ".join(groups),
                until,
                count,
            )
