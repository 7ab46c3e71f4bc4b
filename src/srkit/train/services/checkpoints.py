"""Checkpoints of a run: resume from one, save one every ``logging.checkpoint_every`` steps, at
the last step and when a signal stops the run. A checkpoint holds every trained network (and
the EMA copy), the optimizers, the fp16 scaler, the NaN-policy counters and every random
generator's state, so a resumed run continues bit-identically (the file format and its atomic
writing are in :mod:`srkit.train.checkpoint`)."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from srkit import __version__
from srkit.errors import CheckpointError, ConfigError
from srkit.train import checkpoint as ckpt
from srkit.train.distributed import any_process
from srkit.train.reliability import CheckpointWriteError
from srkit.train.services.base import Service, StepDone, every
from srkit.weights import load_state, read_weights

if TYPE_CHECKING:
    from srkit.train.trainer import Trainer

log = logging.getLogger("srkit.train")


def resume_folder(resume: str | None, checkpoint_root: Path, run_dir: Path) -> Path | None:
    """The checkpoint folder ``--resume`` names (``auto``: the newest usable one), or None to
    start at step 0. Checked before anything is built or written."""
    if resume is None:
        if ckpt.list_checkpoints(checkpoint_root):
            raise ConfigError(
                f"run folder '{run_dir}' already has checkpoints; continue it with "
                "--resume auto, or start a new run under another name (--set name=...)"
            )
        return None
    if resume == "auto":
        folder = ckpt.find_resumable(checkpoint_root)
        if folder is None:
            log.info("no checkpoint to resume in %s; starting from step 0", checkpoint_root)
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


class Checkpoints(Service):
    def __init__(self, run: Trainer) -> None:
        self.saved_step: int | None = None
        if run.resume_from is not None:
            # Loaded (and checked against the config) before anything is written, so a
            # checkpoint that does not fit leaves no run folder behind.
            load_checkpoint(run, run.resume_from)
            self.saved_step = run.step

    def after_step(self, run: Trainer, done: StepDone) -> None:
        if every(run, run.config.logging.checkpoint_every):
            self.save(run, must_succeed=run.step == run.config.train.iterations)

    def stop(self, run: Trainer) -> None:
        if run.stopped_by is None:
            return
        if run.step == 0:
            log.warning("stopped by %s before the first step; nothing to save", run.stopped_by)
            return
        if self.saved_step != run.step:
            self.save(run, must_succeed=True)
        if run.group.is_main:
            log.warning(
                "stopped by %s after step %d; checkpoint '%s' holds it; continue with "
                "--resume auto",
                run.stopped_by,
                run.step,
                ckpt.checkpoint_folder(run.checkpoint_root, run.step),
            )

    def save(self, run: Trainer, must_succeed: bool = False) -> Path | None:
        """Write the checkpoint of the current step (rank 0). A failed write leaves the
        previous checkpoints untouched; it stops training (CheckpointWriteError) unless
        ``logging.checkpoint_failure: retry`` and a later checkpoint can still be tried."""
        folder = error = None
        if run.group.is_main:
            try:
                folder = ckpt.save_checkpoint(
                    run.checkpoint_root,
                    run.step,
                    checkpoint_networks(run),
                    training_state(run),
                    keep=run.config.logging.keep_checkpoints,
                    after_file=run.hooks.checkpoint_file_hook(),
                )
                self.saved_step = run.step
                log.info("checkpoint: %s", folder)
            except CheckpointWriteError as failure:
                error = failure
        # (Also the barrier: every process learns the outcome.)
        if not any_process(error is not None, run.group, run.device):
            return folder
        previous = [f for s, f in ckpt.list_checkpoints(run.checkpoint_root) if s != run.step]
        kept = f"'{previous[-1]}' is intact" if previous else "none"
        message = (
            f"checkpoint of step {run.step} not saved: "
            f"{error if error is not None else 'the write failed on the main process'}; "
            f"the previous checkpoint {kept}"
        )
        if run.config.logging.checkpoint_failure == "retry" and not must_succeed:
            log.warning(
                "%s; training goes on and tries again at the next checkpoint "
                "(logging.checkpoint_failure: retry)",
                message,
            )
            return None
        raise CheckpointWriteError(
            f"{message}; stopped: free space (or fix the folder) and continue with --resume auto"
        )


def checkpoint_networks(run: Trainer) -> dict[str, nn.Module]:
    networks = {name: run.networks[name] for name in run.trained}
    if run.ema is not None:
        networks["generator_ema"] = run.ema.module
    return networks


def training_state(run: Trainer) -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "srkit_version": __version__,
        "step": run.step,
        "world_size": run.group.world_size,
        "nonfinite": run.nonfinite.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in run.optimizers.items()},
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
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


def load_checkpoint(run: Trainer, folder: Path) -> None:
    """Every network, optimizer, counter and random state of ``folder`` into ``run``."""
    state = ckpt.read_training_state(folder)
    for name, module in checkpoint_networks(run).items():
        load_network(folder, name, module)
    for name, optimizer in run.optimizers.items():
        if name not in state["optimizers"]:
            raise CheckpointError(f"checkpoint '{folder}' has no optimizer state for '{name}'")
        optimizer.load_state_dict(state["optimizers"][name])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    restore_random_state(state["rng"])
    run.step = int(state["step"])
    run.nonfinite.load_state_dict(state.get("nonfinite"))
    saved_processes = int(state.get("world_size", 1))
    if saved_processes != run.group.world_size and run.group.is_main:
        # The data stream is a function of (seed, step) for the global batch, so the new
        # run sees exactly the batches the old one would have; only the per-process random
        # draws (pixgan rectangles, D noise) and BatchNorm's per-process statistics differ.
        log.info(
            "resuming a %d-process run with %d process(es): same global batch of %d, same "
            "data order from step %d",
            saved_processes,
            run.group.world_size,
            run.config.data.train.batch_size,
            run.step,
        )
    log.info("resumed from %s at step %d", folder, run.step)


def load_network(folder: Path, name: str, module: nn.Module) -> None:
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


def restore_random_state(rng: dict[str, Any]) -> None:
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
