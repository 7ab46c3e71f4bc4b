"""The one training loop of srkit.

Every method (PSNR pre-training, GAN training with one or several discriminators, feature-net
training) is a configuration of this loop: a generator whose named outputs feed a list of
weighted loss terms, and one discriminator step per discriminator that a term names. Nothing in
here knows a method or a network by name; see ``docs/architecture.md`` for the contracts.

A step (SPEC section 1):

1. generator step (unless ``step < d_init_iters`` or ``step % d_update_ratio``): the batch is
   split into ``megabatch`` equal chunks; per chunk, G runs, every term's generator loss is
   computed, and ``sum(weight * loss) / megabatch`` is back-propagated; discriminators are
   frozen; then one optimizer step.
2. one discriminator step per discriminator in use (unless ``step < g_warmup``), on the detached
   outputs of the same generator pass.
3. EMA update; learning rates and network hooks (temperatures) follow the step count.

``train.optim.<network>.train_only`` holds back every parameter of a network outside some named
parameter groups (the network's ``parameter_groups()``) for its first steps: those parameters
stop requiring gradients, so they get none, and the optimizer (which skips parameters without a
gradient) changes neither them nor their moments. What trains is a pure function of the step,
so resumed runs repeat it exactly; DDP wrappers are built while everything requires gradients
and see held-back parameters as unused (``find_unused_parameters=True``).

Logged losses are means over chunks of the undivided per-chunk losses, so they do not depend on
``megabatch``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srkit import __version__
from srkit.config import dump_config, trained_network_names
from srkit.errors import CheckpointError, ConfigError, DataError, SrkitError
from srkit.evaluation import evaluate_generator
from srkit.fsutil import atomic_write
from srkit.log.console import attach_log_file, format_scalars, progress_bar, setup_logging
from srkit.log.scalars import RunLogger
from srkit.losses.base import BuildContext, LossTerm
from srkit.losses.tensors import StepTensors
from srkit.nets.switch import SwitchTemperatureWarning
from srkit.train import checkpoint as ckpt
from srkit.train import reliability
from srkit.train.build import (
    build_loss_terms,
    build_networks,
    build_train_dataset,
    tensor_views,
)
from srkit.train.distributed import (
    ProcessGroup,
    average_across_processes,
    barrier,
    check_batch_layout,
    init_distributed,
    shutdown,
)
from srkit.train.ema import ModelEMA
from srkit.train.reliability import DivergedError
from srkit.train.schedules import learning_rate
from srkit.weights import load_state, read_weights

log = logging.getLogger("srkit.train")


__all__ = ["DivergedError", "Trainer"]


def adam_implementation(parameters: list[nn.Parameter], device: torch.device) -> dict[str, bool]:
    """Keyword arguments choosing Adam's kernel: ``fused`` (one kernel over all parameters) on
    CPU and CUDA, where PyTorch has it; else ``foreach``. On CPU the default per-parameter loop
    costs about 3x the fused kernel (benchmarks/RESULTS.md)."""
    floating = all(p.is_floating_point() for p in parameters)
    if floating and device.type in ("cpu", "cuda"):
        return {"fused": True}
    return {"foreach": True}


def select_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def step_rng(seed: int, step: int, *where: int) -> torch.Generator:
    """A CPU generator for random draws within one step (pixgan swaps, D noise): a pure function
    of (seed, step, *where), so a resumed run draws exactly what the uninterrupted run drew.

    The trainer passes (discriminator index, global chunk index), the chunk counted over all
    processes (rank x megabatch + chunk): a run with P processes and megabatch M then draws what
    one process with megabatch P x M draws, so resuming with another process count continues
    the same random stream too."""
    generator = torch.Generator()
    words = [seed % 2**32, step, *where]
    mixed = np.random.SeedSequence(words).generate_state(2, np.uint32)
    generator.manual_seed(int(mixed[0]) << 32 | int(mixed[1]))
    return generator


def split_batch(batch: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
    """Split every tensor (and list) of a batch into ``chunks`` equal parts along dim 0."""
    if chunks == 1:
        return [batch]
    parts: list[dict[str, Any]] = [{} for _ in range(chunks)]
    for key, value in batch.items():
        size = len(value) // chunks
        for index in range(chunks):
            parts[index][key] = value[index * size : (index + 1) * size]
    return parts


def named_outputs(output: torch.Tensor | dict[str, Any]) -> dict[str, Any]:
    """A generator's output as named tensors: a plain tensor is the ``sr`` image."""
    if isinstance(output, torch.Tensor):
        return {"sr": output}
    if "sr" not in output:
        raise ValueError("a generator returning a dict must include 'sr'")
    return dict(output)


def _as_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def find_hooks(module: nn.Module, hook: str) -> list[Any]:
    """Bound ``hook`` methods of every submodule that defines one (the generic network hooks:
    ``set_training_step(step)`` and ``training_stats() -> dict``, see docs/architecture.md)."""
    found = []
    for submodule in module.modules():
        function = getattr(submodule, hook, None)
        if callable(function):
            found.append(function)
    return found


class Trainer:
    """Builds a run from a config and trains it; ``run()`` is the entry point."""

    def __init__(self, config: Any, resume: str | None = None, quiet: bool = False) -> None:
        self.config = config
        self.train_cfg = config.train
        self.device = select_device(config.train.device)
        self.group: ProcessGroup = init_distributed(self.device.type)
        if self.group.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)
        self.local_batch_size = check_batch_layout(
            config.data.train.batch_size, self.group.world_size, config.train.megabatch
        )
        self.run_dir = Path(config.output_dir) / config.name
        self.checkpoint_root = self.run_dir / "checkpoints"
        self.quiet = quiet
        # Console logging now; the log file joins once everything is known to be valid, so a
        # bad config or data folder leaves nothing behind on disk.
        setup_logging(quiet=quiet or not self.group.is_main)
        self._check_precision()
        if self.group.is_main:
            reliability.check_output_folder(self.run_dir)
        resume_from = self._resume_folder(resume)
        seed_everything(config.seed, config.train.deterministic)
        self.networks = build_networks(config, self.device)
        self.trained = trained_network_names(config)
        self.generator = self.networks["generator"]
        self.discriminator_names = self.trained[1:]
        self.views = tensor_views(config, self.networks)
        context = BuildContext(
            scale=config.scale,
            device=self.device,
            networks=self.networks,
            disjoint=config.data.train.disjoint,
        )
        self.terms: list[LossTerm] = build_loss_terms(config, context)
        self.lpips = self._lpips()
        self.terms_of = {
            d: [t for t in self.terms if t.discriminator == d] for d in self.discriminator_names
        }
        if config.train.channels_last:
            # Every network the step runs, frozen helpers and the loss terms' own networks
            # (e.g. the perceptual VGG) too: a conv whose weights and input disagree in layout
            # pays a reorder of both on every call.
            for module in [*self.networks.values(), *self.terms]:
                module.to(memory_format=torch.channels_last)
        # Parameters each network trains at all, and those train_only holds back for a while.
        self._trainable = {
            name: [p for p in self.networks[name].parameters() if p.requires_grad]
            for name in self.trained
        }
        self._held_back = {name: self._parameters_held_back(name) for name in self.trained}
        self.optimizers = {name: self._make_optimizer(name) for name in self.trained}
        self.ema = (
            ModelEMA(self.generator, config.train.ema.decay, config.train.ema.warmup_steps)
            if config.train.ema
            else None
        )
        self.scaler = (
            torch.amp.GradScaler(self.device.type) if config.train.precision == "fp16" else None
        )
        self.wrapped = {name: self._wrap(self.networks[name]) for name in self.trained}
        self.train_dataset = self._train_dataset()
        # Schedules inside networks (switch temperatures) follow the step; the EMA copy too, so
        # it is validated and saved at the temperature of the step it belongs to.
        hooked = [self.networks[name] for name in self.trained]
        if self.ema is not None:
            hooked.append(self.ema.module)
        self._step_hooks = [hook for net in hooked for hook in find_hooks(net, "set_training_step")]
        if config.data.val is not None and self.group.is_main:
            self._validation_set()  # a bad validation folder is found now, not mid-run
        self.nonfinite = reliability.NonFiniteGuard(
            config.train.nan_policy, config.train.nan_skip_limit
        )
        self.hooks = reliability.TestHooks()
        if self.hooks.nan is not None:
            self.hooks.install_nan(self.terms)
            self._step_hooks.append(self.hooks.set_training_step)
        self.step = 0
        self.logger = None
        self.stopped_by: str | None = None  # the signal's name when a signal stopped run()
        self._saved_step: int | None = None
        self._write_warnings: set[str] = set()
        if resume_from is not None:
            # Loaded (and checked against the config) before anything is written, so a
            # checkpoint that does not fit leaves no run folder behind.
            self._load_checkpoint(resume_from)
            self._saved_step = self.step
        if self.group.is_main:
            self._open_run_folder(fresh=resume_from is None)
        self._pending: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._timing = {"data": 0.0, "total": 0.0, "images": 0}
        self._picture_source: StepTensors | None = None
        self._pictures_checked = False

    # ------------------------------------------------------------------ construction helpers

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

    def _check_precision(self) -> None:
        if self.train_cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision: fp16 needs a CUDA GPU; use bf16 on CPU")

    def _resume_folder(self, resume: str | None) -> Path | None:
        if resume is None:
            if ckpt.list_checkpoints(self.checkpoint_root):
                raise ConfigError(
                    f"run folder '{self.run_dir}' already has checkpoints; continue it with "
                    "--resume auto, or start a new run under another name (--set name=...)"
                )
            return None
        if resume == "auto":
            folder = ckpt.find_resumable(self.checkpoint_root)
            if folder is None:
                log.info(
                    "no checkpoint to resume in %s; starting from step 0", self.checkpoint_root
                )
            return folder
        folder = Path(resume)
        if not folder.exists():
            problem = "no such folder"
        elif not folder.is_dir():
            problem = "not a folder"
        else:
            problem = ckpt.checkpoint_problem(folder)
        if problem:
            raise CheckpointError(
                f"cannot resume from '{folder}': {problem}; pass a checkpoint folder "
                "(<output_dir>/<name>/checkpoints/step_N) or use --resume auto"
            )
        return folder

    def _optimizer_config(self, name: str) -> Any:
        from srkit.config import OptimizerConfig

        return self.train_cfg.optim.get(name) or OptimizerConfig()

    def _parameters_held_back(self, name: str) -> tuple[set[int], int]:
        """(ids of the parameters that train_only holds back, until which step); empty if none."""
        train_only = self._optimizer_config(name).train_only
        if train_only is None:
            return set(), 0
        where = f"train.optim.{name}.train_only.groups"
        network = self.networks[name]
        describe = getattr(network, "parameter_groups", None)
        if not callable(describe):
            raise ConfigError(
                f"{where}: network '{name}' ({self.config.networks[name].type}) has no named "
                "parameter groups (no parameter_groups() method), so it cannot train a subset"
            )
        groups = describe()
        kept: set[int] = set()
        for group in train_only.groups:
            if group not in groups:
                raise ConfigError(
                    f"{where}: network '{name}' ({self.config.networks[name].type}) has no "
                    f"parameter group '{group}'; its groups: {', '.join(groups)}"
                )
            kept.update(id(p) for p in groups[group])
        held = {id(p) for p in self._trainable[name] if id(p) not in kept}
        return held, train_only.steps

    def _set_trainable(self, name: str, step: int) -> None:
        """Make the parameters of ``name`` that train at ``step`` require gradients (only)."""
        held, until = self._held_back[name]
        holding = step < until
        for parameter in self._trainable[name]:
            parameter.requires_grad_(not (holding and id(parameter) in held))

    def _make_optimizer(self, name: str) -> torch.optim.Optimizer:
        settings = self._optimizer_config(name)
        # Every parameter that ever trains, including those train_only holds back for now: a
        # parameter without a gradient is skipped by the optimizer's step.
        parameters = self._trainable[name]
        kind = torch.optim.AdamW if settings.weight_decay > 0 else torch.optim.Adam
        return kind(
            parameters,
            lr=settings.lr,
            betas=tuple(settings.betas),
            eps=settings.eps,
            weight_decay=settings.weight_decay,
            **adam_implementation(parameters, self.device),
        )

    def _wrap(self, module: nn.Module) -> nn.Module:
        """The trained network as the step calls it: DDP around it when distributed, then
        torch.compile around that (the order PyTorch recommends: the compiler sees DDP's bucket
        boundaries and can overlap gradient communication with the backward)."""
        wrapped = module
        if self.group.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # find_unused_parameters: a network may have parameters a config does not use
            # (e.g. an output branch without a loss term); DDP must not wait for their grads.
            # gradient_as_bucket_view: gradients live in the communication buckets, no copy.
            wrapped = DistributedDataParallel(
                wrapped,
                device_ids=ids,
                find_unused_parameters=True,
                gradient_as_bucket_view=True,
            )
        if self.train_cfg.compile:
            wrapped = torch.compile(wrapped)
        return wrapped

    def _autocast(self) -> contextlib.AbstractContextManager:
        precision = self.train_cfg.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ------------------------------------------------------------------ data

    def _train_dataset(self) -> Any:
        try:
            return build_train_dataset(self.config)
        except DataError as error:
            raise DataError(f"data.train: {error}") from None

    def data_loader(self) -> Iterator[dict[str, Any]]:
        """Training batches from the current step on (the same stream a resumed run sees)."""
        from srkit.data.sampler import TrainSampler

        data = self.config.data.train
        dataset = self.train_dataset
        sampler = TrainSampler(
            len(dataset),
            data.batch_size,
            seed=self.config.seed,
            rank=self.group.rank,
            world_size=self.group.world_size,
            start_step=self.step,
        )
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=data.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=data.workers > 0,
            worker_init_fn=reliability.ignore_interrupts_in_worker if data.workers > 0 else None,
            multiprocessing_context="spawn" if data.workers > 0 else None,
        )
        return iter(loader)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                if self.train_cfg.channels_last and value.dim() == 4:
                    value = value.contiguous(memory_format=torch.channels_last)
            moved[key] = value
        return moved

    # ------------------------------------------------------------------ the step

    def _generator_active(self, step: int) -> bool:
        if not self.discriminator_names:
            return True
        return step >= self.train_cfg.d_init_iters and step % self.train_cfg.d_update_ratio == 0

    def _discriminators_active(self, step: int) -> bool:
        return bool(self.discriminator_names) and step >= self.train_cfg.g_warmup

    def _noise_std(self, step: int) -> float:
        noise = self.train_cfg.d_noise
        if noise is None:
            return 0.0
        progress = min(1.0, step / noise.until)
        return noise.start + (noise.floor - noise.start) * progress

    def _chunk_tensors(self, chunk: dict[str, Any], grad: bool) -> StepTensors:
        """Run the generator on one chunk and expose batch + outputs as named tensors."""
        base = {k: v for k, v in chunk.items() if isinstance(v, torch.Tensor)}
        inputs = StepTensors(base, self.views)
        generator_input = inputs[self.train_cfg.generator_input]
        with torch.set_grad_enabled(grad), self._autocast():
            output = self.wrapped["generator"](generator_input)
        outputs = {k: _as_float(v) for k, v in named_outputs(output).items()}
        return StepTensors({**base, **outputs}, self.views)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _prepare_update(self, name: str) -> torch.Tensor:
        """Unscale (fp16) and clip ``name``'s gradients; their norm before clipping.

        The norm is computed every step (one cheap pass over the gradients) so that a NaN/Inf
        gradient behind finite losses is caught too.
        """
        optimizer = self.optimizers[name]
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        parameters = [p for p in self.networks[name].parameters() if p.grad is not None]
        clip = self.train_cfg.grad_clip
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        elif hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
            norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        else:
            norm = torch.nn.utils.clip_grad_norm_(parameters, math.inf)
        return norm.detach()

    def _apply_update(self, name: str) -> None:
        optimizer = self.optimizers[name]
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def _step_is_finite(self, checked: dict[str, torch.Tensor]) -> bool:
        """Whether every checked scalar of this step (on every process) is finite: one
        device sync per step instead of one per loss term and chunk."""
        if not checked:
            return True
        finite = torch.stack([v.detach().float().reshape(()) for v in checked.values()])
        finite = torch.isfinite(finite).all()
        if self.group.distributed:
            # Gradients are averaged across processes, so a NaN on one process reaches all.
            import torch.distributed as dist

            flag = finite.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.bool()
        return bool(finite)

    def _no_sync(self, name: str, last: bool) -> contextlib.AbstractContextManager:
        wrapped = self.wrapped[name]
        if not last and hasattr(wrapped, "no_sync"):
            return wrapped.no_sync()
        return contextlib.nullcontext()

    def train_step(
        self, batch: dict[str, Any], step: int, with_norms: bool = False
    ) -> dict[str, torch.Tensor]:
        """Step ``step`` (0-based) of every trained network; returns detached scalars to log.

        Network schedules (switch temperatures) are set for ``step`` first, so calling this
        directly (tests, benchmarks) behaves as the loop does.

        Every network's backward pass runs before any optimizer updates (the discriminators
        see the detached outputs of the generator pass of this step, so the order of updates
        does not change any number): when a loss term or gradient turns out NaN/Inf, the step
        can be dropped whole (``train.nan_policy: skip``) or stopped with every network still
        at its last good state (``abort``).
        """
        for set_step in self._step_hooks:
            set_step(step)
        megabatch = self.train_cfg.megabatch
        chunks = split_batch(self._to_device(batch), megabatch)
        logs: dict[str, torch.Tensor] = {}
        train_generator = self._generator_active(step)
        train_discriminators = self._discriminators_active(step)
        for name in self.trained:
            for group in self.optimizers[name].param_groups:
                group["lr"] = self._learning_rate(name, step)
            self._set_trainable(name, step)
            if step == self._held_back[name][1] and self._held_back[name][0]:
                log.info("step %d: every parameter of '%s' trains from now on", step + 1, name)

        updated: list[str] = []  # networks whose gradients this step computed
        network_of: dict[str, str] = {}  # logged loss key -> network, for messages
        detached: list[StepTensors] = []
        if train_generator:
            for name in self.discriminator_names:
                self.networks[name].requires_grad_(False)
            self.optimizers["generator"].zero_grad(set_to_none=True)
            totals: dict[str, torch.Tensor] = defaultdict(
                lambda: torch.zeros((), device=self.device)
            )
            for index, chunk in enumerate(chunks):
                with self._no_sync("generator", index == megabatch - 1):
                    tensors = self._chunk_tensors(chunk, grad=True)
                    with self._autocast():
                        losses = {
                            f"g/{t.name}": t.generator_loss(tensors).float()
                            for t in self.terms
                            if t.weight
                        }
                    weighted = sum(t.weight * losses[f"g/{t.name}"] for t in self.terms if t.weight)
                    if isinstance(weighted, torch.Tensor) and weighted.requires_grad:
                        # (No graph when no term reaches a parameter that trains at this step.)
                        self._backward(weighted / megabatch)
                for key, value in losses.items():
                    totals[key] = totals[key] + value.detach() / megabatch
                totals["g/total"] = totals["g/total"] + weighted.detach() / megabatch
                if train_discriminators:
                    detached.append(tensors.detached())
            network_of.update(dict.fromkeys(totals, "generator"))
            updated.append("generator")
            logs.update(totals)
            for name in self.discriminator_names:
                self._set_trainable(name, step)
            last_chunk = tensors
        elif train_discriminators:
            detached = [self._chunk_tensors(chunk, grad=False) for chunk in chunks]
            last_chunk = detached[-1]
        else:
            last_chunk = None  # nothing trains at this step
        if self.config.logging.pictures and last_chunk is not None:
            self._keep_picture_source(last_chunk, step)

        if train_discriminators:
            noise_std = self._noise_std(step)
            for name in self.discriminator_names:
                totals = self._discriminator_step(name, detached, noise_std, step)
                network_of.update(dict.fromkeys(totals, name))
                updated.append(name)
                logs.update(totals)

        norms = {f"grad_norm/{name}": self._prepare_update(name) for name in updated}
        network_of.update({key: key.split("/", 1)[1] for key in norms})
        # Every loss term, and the gradient norms except under fp16, whose scaler handles
        # overflowing gradients itself (it skips those steps).
        checked = {k: v for k, v in logs.items() if k.count("/") == 1}
        if self.scaler is None:
            checked.update(norms)
        if with_norms:
            logs.update(norms)
        if not self._step_is_finite(checked):
            return self._nonfinite_step(step, batch, logs, checked, network_of, updated)
        self.nonfinite.step_ok()
        for name in updated:
            self._apply_update(name)
        if self.scaler is not None:
            self.scaler.update()
        if self.ema is not None and train_generator:
            self.ema.update(self.generator, step + 1)
        return logs

    def _nonfinite_step(
        self,
        step: int,
        batch: dict[str, Any],
        logs: dict[str, torch.Tensor],
        checked: dict[str, torch.Tensor],
        network_of: dict[str, str],
        updated: list[str],
    ) -> dict[str, torch.Tensor]:
        """A step with a NaN/Inf loss or gradient: no network is updated; abort or skip."""
        for name in updated:
            self.optimizers[name].zero_grad(set_to_none=True)
        if self.scaler is not None and updated:
            self.scaler.update()  # the scaler was unscaled for this step; close it
        bad = reliability.nonfinite_values(checked, network_of)
        what = reliability.describe_nonfinite(bad, step + 1)
        guard = self.nonfinite
        if guard.policy == "skip":
            guard.consecutive += 1
            guard.skipped_total += 1
            if guard.consecutive <= guard.skip_limit:
                log.warning(
                    "%s; step skipped (no network updated): %d in a row, %d in total "
                    "(train.nan_policy: skip, stops after %d in a row)",
                    what,
                    guard.consecutive,
                    guard.skipped_total,
                    guard.skip_limit,
                )
                return {}
            what = f"{what}; {guard.consecutive} skipped steps in a row"
        bundle = None
        if self.group.is_main:
            bundle = reliability.write_debug_bundle(
                self.run_dir / "debug" / f"step_{step + 1:08d}",
                step + 1,
                batch,
                {k: float(v) for k, v in logs.items() if v.numel() == 1},
                bad,
                dump_config(self.config),
                {
                    "learning_rates": {
                        n: self.optimizers[n].param_groups[0]["lr"] for n in self.trained
                    },
                    "nan_policy": guard.policy,
                    "skipped_steps": guard.skipped_total,
                },
            )
        last = ckpt.list_checkpoints(self.checkpoint_root)
        kept = f"last checkpoint '{last[-1][1]}' is intact" if last else "no checkpoint yet"
        bundle_text = f"; debug bundle: '{bundle}'" if bundle else ""
        raise DivergedError(
            f"{what}; stopped, {kept}{bundle_text}; lower the learning rate, set "
            "train.grad_clip, or set train.nan_policy: skip"
        )

    def _discriminator_step(
        self,
        name: str,
        chunks: list[StepTensors],
        noise_std: float,
        step: int,
    ) -> dict[str, torch.Tensor]:
        """Forward and backward of discriminator ``name``; the update comes in train_step."""
        megabatch = len(chunks)
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        which = self.discriminator_names.index(name)
        first_chunk = self.group.rank * megabatch  # this process's first chunk, counted globally
        for index, tensors in enumerate(chunks):
            rng = step_rng(self.config.seed, step, which, first_chunk + index)
            with self._no_sync(name, index == megabatch - 1):
                loss = torch.zeros((), device=self.device)
                for term in self.terms_of[name]:
                    with self._autocast():
                        term_loss, scalars = term.discriminator_loss(
                            tensors, self.wrapped[name], rng, noise_std
                        )
                    term_loss = term_loss.float()
                    loss = loss + term_loss
                    totals[f"d/{term.name}"] = (
                        totals[f"d/{term.name}"] + term_loss.detach() / megabatch
                    )
                    for key, value in scalars.items():
                        totals[f"d/{term.name}/{key}"] = (
                            totals[f"d/{term.name}/{key}"] + value / megabatch
                        )
                self._backward(loss / megabatch)
        return totals

    def _learning_rate(self, name: str, step: int) -> float:
        settings = self._optimizer_config(name)
        schedule = settings.schedule or self.train_cfg.schedule
        return learning_rate(settings.lr, schedule, step)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Train until ``train.iterations``, validating, logging and checkpointing on the way.

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

    def _stop_requested(self, signals: reliability.StopSignals) -> bool:
        requested = signals.received is not None
        if self.group.distributed:  # every process must stop after the same step
            import torch.distributed as dist

            flag = torch.tensor([int(requested)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        return requested

    def _loop(self, signals: reliability.StopSignals) -> None:
        cfg = self.config
        logging_cfg = cfg.logging
        total = cfg.train.iterations
        if self.group.is_main:
            self._log_start()
        if cfg.data.val is not None and logging_cfg.validate_at_start and self.step == 0:
            self.validate()
        batches = self.data_loader()
        bar = progress_bar(
            total, self.step, logging_cfg.progress_bar and self.group.is_main and not self.quiet
        )
        while self.step < total:
            if self._stop_requested(signals):
                bar.close()
                self._stop_for_signal(signals)
                return
            step = self.step
            started = time.perf_counter()
            try:
                batch = next(batches)
            except Exception:
                if signals.received is not None:  # Ctrl-C also reached the data workers
                    continue
                raise
            loaded = time.perf_counter()
            print_now = (step + 1) % logging_cfg.print_every == 0 or step + 1 == total
            logs = self.train_step(batch, step, with_norms=print_now)
            self.step = step + 1
            for key, value in logs.items():
                self._pending[key].append(value)
            finished = time.perf_counter()
            self._timing["data"] += loaded - started
            self._timing["total"] += finished - started
            self._timing["images"] += len(batch["lr"]) * self.group.world_size
            bar.update(1)
            if print_now:
                self._guarded("metrics", self._emit_scalars, bar)
            if self.group.is_main and self.step % logging_cfg.image_every == 0:
                self._guarded("training pictures", self._training_pictures)
            if cfg.data.val is not None and (
                self.step % logging_cfg.val_every == 0 or self.step == total
            ):
                self.validate()
            if self.step % logging_cfg.checkpoint_every == 0 or self.step == total:
                self.save_checkpoint(must_succeed=self.step == total)
        bar.close()
        if self.group.is_main:
            log.info("finished %d steps; run folder: %s", total, self.run_dir)

    def _stop_for_signal(self, signals: reliability.StopSignals) -> None:
        self.stopped_by = signals.name or "a signal on another process"
        if self.step == 0:
            log.warning("stopped by %s before the first step; nothing to save", self.stopped_by)
            return
        if self._saved_step != self.step:
            self.save_checkpoint(must_succeed=True)
        if self.group.is_main:
            log.warning(
                "stopped by %s after step %d; checkpoint '%s' holds it; continue with "
                "--resume auto",
                self.stopped_by,
                self.step,
                ckpt.checkpoint_folder(self.checkpoint_root, self.step),
            )

    def _guarded(self, what: str, function: Any, *args: Any) -> Any:
        """Run a writer of non-essential output (metrics, pictures): a failed write (full
        disk) is reported once and training goes on; checkpoints have their own policy."""
        try:
            return function(*args)
        except OSError as error:
            if what not in self._write_warnings:
                self._write_warnings.add(what)
                path = Path(error.filename) if error.filename else self.run_dir
                log.warning(
                    "%s not written: %s; training goes on (reported once)",
                    what,
                    reliability.describe_write_failure(path, error),
                )
            return None

    def _log_start(self) -> None:
        counts = {
            name: sum(p.numel() for p in self.networks[name].parameters()) for name in self.trained
        }
        described = ", ".join(
            f"{name}={self.config.networks[name].type} ({counts[name] / 1e6:.2f} M params)"
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
        for name in self.trained:
            held, until = self._held_back[name]
            if held and self.step < until:
                groups = self._optimizer_config(name).train_only.groups
                log.info(
                    "%s: only parameter group(s) %s train until step %d (%d tensors held back)",
                    name,
                    ", ".join(groups),
                    until,
                    len(held),
                )

    def _emit_scalars(self, bar: Any) -> None:
        values = {k: float(torch.stack(v).mean()) for k, v in self._pending.items() if v}
        self._pending.clear()
        for name in self.trained:
            values[f"lr/{name}"] = self.optimizers[name].param_groups[0]["lr"]
            for training_stats in find_hooks(self.networks[name], "training_stats"):
                for key, value in training_stats().items():
                    values[f"stats/{name}/{key}"] = float(value)
        if self.nonfinite.skipped_total:
            values["nonfinite/skipped_steps"] = self.nonfinite.skipped_total
        if self._timing["total"] > 0:
            values["speed/images_per_s"] = self._timing["images"] / self._timing["total"]
            values["speed/data_wait_fraction"] = self._timing["data"] / self._timing["total"]
        self._timing = {"data": 0.0, "total": 0.0, "images": 0}
        values = average_across_processes(values, self.group, self.device)
        if not self.group.is_main:
            return
        self.logger.scalars(self.step, values)
        keys = [k for k in values if k.startswith(("g/", "d/")) and k.count("/") == 1]
        bar.set_postfix_str(format_scalars(values, keys[:4]), refresh=False)
        log.info(
            "step %d  %s",
            self.step,
            format_scalars(values, sorted(k for k in values if not k.startswith("stats/"))),
        )

    def _keep_picture_source(self, tensors: StepTensors, step: int) -> None:
        """Keep the first image of a chunk for ``logging.pictures`` when a picture is due.

        At the first step every picture expression is tried once, so a wrong name fails at
        once (naming the key) rather than at the first ``image_every`` step.
        """
        due = (step + 1) % self.config.logging.image_every == 0
        if not due and self._pictures_checked:
            return
        source = tensors.first(1)
        if not self._pictures_checked:
            with torch.no_grad():
                for name, picture in self.config.logging.pictures.items():
                    for index, expression in enumerate(picture.tensors):
                        where = f"logging.pictures.{name}.tensors.{index}"
                        try:
                            value = source[expression]
                        except ConfigError as exc:
                            raise ConfigError(f"{where}: {exc}") from None
                        if not isinstance(value, torch.Tensor) or value.dim() != 4:
                            raise ConfigError(
                                f"{where}: '{expression}' is not an (N, C, H, W) image tensor"
                            )
            self._pictures_checked = True
        if due:
            self._picture_source = source

    def _training_pictures(self) -> None:
        """Pictures from loss terms (pixgan swaps), networks (switch attention) and the
        configured ``logging.pictures`` rows of tensor expressions."""
        from srkit.data.io import write_image
        from srkit.log.pictures import tensor_row

        pictures: dict[str, np.ndarray] = {}
        if self._picture_source is not None:
            with torch.no_grad():
                for name, picture in self.config.logging.pictures.items():
                    row = [self._picture_source[expression] for expression in picture.tensors]
                    pictures[name] = tensor_row(row, picture.scale)
            self._picture_source = None
        for term in self.terms:
            for tag, picture in term.pictures().items():
                pictures[f"{term.name}/{tag}"] = (
                    picture.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                )
        for name in self.trained:
            for training_pictures in find_hooks(self.networks[name], "training_pictures"):
                for tag, picture in training_pictures().items():
                    picture = np.asarray(picture)
                    if picture.dtype == np.uint8:
                        picture = picture.astype(np.float32) / 255
                    if picture.ndim == 2:
                        picture = np.repeat(picture[..., None], 3, axis=2)
                    pictures[f"{name}/{tag}"] = picture
        if not pictures:
            return
        folder = self.run_dir / "images"
        folder.mkdir(exist_ok=True)
        for tag, picture in pictures.items():
            self.logger.image(self.step, f"train/{tag}", picture)
            write_image(folder / f"{tag.replace('/', '_')}_{self.step:08d}.png", picture)

    # ------------------------------------------------------------------ validation

    def _validation_set(self) -> Any:
        if not hasattr(self, "_val_dataset"):
            from srkit.data.datasets import SRDataset

            val = self.config.data.val
            try:
                self._val_dataset = SRDataset(
                    hr_root=val.hr, lr_root=val.lr, scale=self.config.scale, patch_size=None
                )
            except DataError as error:
                raise DataError(f"data.val: {error}") from None
        return self._val_dataset

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Metrics of the generator (and its EMA) on the validation images; rank 0 only."""
        if not self.group.is_main:
            barrier(self.group)
            return {}
        variants = []
        if self.ema is not None:
            variants.append(("val_ema", self.ema.module))
            if self.config.train.ema.validate_raw:
                variants.append(("val", self.generator))
        else:
            variants.append(("val", self.generator))
        results: dict[str, float] = {}
        for prefix, network in variants:
            with warnings.catch_warnings():
                # Validating mid-anneal at the current temperature is intended here.
                warnings.simplefilter("ignore", SwitchTemperatureWarning)
                metrics, sheet = self.evaluate(network)
            results.update({f"{prefix}/{k}": v for k, v in metrics.items()})
            if sheet is not None:
                self._guarded("validation pictures", self._save_sheet, prefix, sheet)
        self._guarded("metrics", self.logger.scalars, self.step, results)
        log.info("validation at step %d: %s", self.step, format_scalars(results))
        barrier(self.group)
        return results

    def _lpips(self) -> nn.Module | None:
        """LPIPS for validation when configured (missing files: an error now, not mid-run)."""
        val = self.config.data.val
        if val is None or val.lpips is None:
            return None
        from srkit.metrics.lpips import load_lpips

        return load_lpips(val.lpips.lin, val.lpips.vgg, key="data.val.lpips").to(self.device)

    def evaluate(self, network: nn.Module) -> tuple[dict[str, float], Any]:
        """Validation metrics of ``network`` and its LR | SR | HR sheet.

        Image metrics when the output is an image the size of HR; every loss term without a
        discriminator (monitors of weight 0 included) when ``data.val.losses``.
        """
        val = self.config.data.val
        terms = [t for t in self.terms if t.discriminator is None] if val.losses else []
        result = evaluate_generator(
            network,
            self._validation_set(),
            scale=self.config.scale,
            device=self.device,
            crop_border=val.crop_border,
            y_channel=val.y_channel,
            max_images=val.max_images,
            sheet_images=val.sheet_images,
            autocast=self._autocast,
            prepare_input=lambda lr: StepTensors({"lr": lr}, self.views)[
                self.train_cfg.generator_input
            ],
            loss_terms=terms,
            views=self.views,
            lpips=self.lpips,
        )
        return result.metrics, result.sheet

    def _save_sheet(self, prefix: str, sheet: np.ndarray) -> None:
        from srkit.data.io import write_image

        folder = self.run_dir / "images"
        folder.mkdir(exist_ok=True)
        write_image(folder / f"{prefix}_{self.step:08d}.png", sheet)
        self.logger.image(self.step, f"{prefix}/lr_sr_hr", sheet)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_networks(self) -> dict[str, nn.Module]:
        networks = {name: self.networks[name] for name in self.trained}
        if self.ema is not None:
            networks["generator_ema"] = self.ema.module
        return networks

    def training_state(self) -> dict[str, Any]:
        numpy_state = np.random.get_state()
        return {
            "srkit_version": __version__,
            "step": self.step,
            "world_size": self.group.world_size,
            "nonfinite": self.nonfinite.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": {
                "python": random.getstate(),
                "numpy": {
                    "key": torch.from_numpy(numpy_state[1].astype(np.int64)),
                    "pos": int(numpy_state[2]),
                    "has_gauss": int(numpy_state[3]),
                    "cached_gaussian": float(numpy_state[4]),
                },
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def save_checkpoint(self, must_succeed: bool = False) -> Path | None:
        """Write the checkpoint of the current step (rank 0). A failed write leaves the
        previous checkpoints untouched; it stops training (CheckpointWriteError) unless
        ``logging.checkpoint_failure: retry`` and a later checkpoint can still be tried."""
        folder = error = None
        if self.group.is_main:
            try:
                folder = ckpt.save_checkpoint(
                    self.checkpoint_root,
                    self.step,
                    self.checkpoint_networks(),
                    self.training_state(),
                    keep=self.config.logging.keep_checkpoints,
                    after_file=self.hooks.checkpoint_file_hook(),
                )
                self._saved_step = self.step
                log.info("checkpoint: %s", folder)
            except reliability.CheckpointWriteError as failure:
                error = failure
        failed = error is not None
        if self.group.distributed:  # also the barrier: every process learns the outcome
            import torch.distributed as dist

            flag = torch.tensor([int(failed)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            failed = bool(flag.item())
        if not failed:
            return folder
        previous = [f for s, f in ckpt.list_checkpoints(self.checkpoint_root) if s != self.step]
        kept = f"'{previous[-1]}' is intact" if previous else "none"
        message = (
            f"checkpoint of step {self.step} not saved: "
            f"{error if error is not None else 'the write failed on the main process'}; "
            f"the previous checkpoint {kept}"
        )
        if self.config.logging.checkpoint_failure == "retry" and not must_succeed:
            log.warning(
                "%s; training goes on and tries again at the next checkpoint "
                "(logging.checkpoint_failure: retry)",
                message,
            )
            return None
        raise reliability.CheckpointWriteError(
            f"{message}; stopped: free space (or fix the folder) and continue with --resume auto"
        )

    def _load_checkpoint(self, folder: Path) -> None:
        state = ckpt.read_training_state(folder)
        for name, module in self.checkpoint_networks().items():
            file = folder / f"{name}.safetensors"
            if not file.is_file():
                raise CheckpointError(
                    f"checkpoint '{folder}' has no {file.name} (the config trains '{name}')"
                )
            weights, metadata = read_weights(file)
            try:
                load_state(module, weights, strict=True, source=str(file))
            except CheckpointError as error:
                difference = ckpt.architecture_difference(metadata, module)
                if difference is None:
                    raise
                raise CheckpointError(
                    f"cannot resume from '{folder}': its {name} {difference}; resume with the "
                    "config the run was trained with (config.yml in its run folder)"
                ) from error
        for name, optimizer in self.optimizers.items():
            if name not in state["optimizers"]:
                raise CheckpointError(f"checkpoint '{folder}' has no optimizer state for '{name}'")
            optimizer.load_state_dict(state["optimizers"][name])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        random.setstate(rng["python"])
        numpy_rng = rng["numpy"]
        np.random.set_state(
            (
                "MT19937",
                numpy_rng["key"].numpy().astype(np.uint32),
                numpy_rng["pos"],
                numpy_rng["has_gauss"],
                numpy_rng["cached_gaussian"],
            )
        )
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(state["step"])
        self.nonfinite.load_state_dict(state.get("nonfinite"))
        saved_processes = int(state.get("world_size", 1))
        if saved_processes != self.group.world_size and self.group.is_main:
            # The data stream is a function of (seed, step) for the global batch, so the new
            # run sees exactly the batches the old one would have; only the per-process random
            # draws (pixgan rectangles, D noise) and BatchNorm's per-process statistics differ.
            log.info(
                "resuming a %d-process run with %d process(es): same global batch of %d, same "
                "data order from step %d",
                saved_processes,
                self.group.world_size,
                self.config.data.train.batch_size,
                self.step,
            )
        log.info("resumed from %s at step %d", folder, self.step)
