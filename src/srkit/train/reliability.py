"""Keeping a training run's work safe: signals, non-finite losses, failed writes, test hooks.

The training loop calls into this module at a few fixed points and otherwise knows nothing of
it; every policy lives here.

* :class:`StopSignals`: the first SIGINT / SIGTERM asks the loop to stop after the step in
  progress and write a checkpoint at that step; a second one exits at once. Exiting at once
  cannot corrupt anything, because every checkpoint is staged in ``step_N.tmp`` and renamed
  whole (see :mod:`srkit.train.checkpoint`), and every other file is written atomically.
* :class:`DivergedError`: what stops a run whose losses turned NaN/Inf (the policy itself,
  ``train.nan_policy``, is in :mod:`srkit.train.nonfinite`).
* :func:`describe_write_failure`: the one line for a failed write, naming the path and the free
  space there.
* :class:`TestHooks`: fault injection for the test suite, read once from environment variables
  (``SRKIT_TEST_HOOK_*``) at start-up; nothing here runs on the hot path unless set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from srkit.errors import SrkitError

log = logging.getLogger("srkit.train")

#: Exit status of a run stopped by a write failure (disk full, unwritable folder); resuming
#: after fixing the cause continues the run.
EXIT_WRITE_FAILED = 4
#: Exit status of a run stopped because a loss became NaN/Inf.
EXIT_DIVERGED = 3


class DivergedError(SrkitError):
    """A loss (or gradient) became NaN or infinite and the policy says stop."""

    exit_code = EXIT_DIVERGED


class CheckpointWriteError(SrkitError):
    """A checkpoint could not be written (disk full, unwritable folder, I/O error)."""

    exit_code = EXIT_WRITE_FAILED

    def __init__(self, message: str, path: Path | None = None, errno_value: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno_value


# --------------------------------------------------------------------------- write failures


def _format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def free_space(path: Path) -> str:
    """'<free> free of <total>' on the disk holding ``path`` (or its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return "free space unknown"
    return f"{_format_bytes(usage.free)} free of {_format_bytes(usage.total)}"


_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)")


def error_number(error: BaseException) -> int | None:
    """The errno behind ``error``: an OSError's own, or the ``(os error N)`` that safetensors'
    Rust writer puts in its message."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno
    match = _OS_ERROR_IN_TEXT.search(str(error))
    return int(match.group(1)) if match else None


def describe_write_failure(path: Path, error: BaseException) -> str:
    """One line: which path could not be written, why, and the free space there."""
    number = error_number(error)
    if number is not None:
        reason = os.strerror(number)
    else:
        text = str(error).strip().splitlines()
        reason = text[0][:200] if text else type(error).__name__
    return f"cannot write '{path}': {reason} ({free_space(path)})"


def check_output_folder(run_dir: Path) -> None:
    """Fail early, before anything is built or written, if ``run_dir`` cannot be created."""
    from srkit.errors import ConfigError

    probe = Path(run_dir)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"output_dir: '{probe}' is a file, not a folder, so the run folder '{run_dir}' "
            "cannot be made there; set output_dir (or name) to a folder path"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output_dir: cannot create the run folder '{run_dir}': '{probe}' is not writable; "
            "set output_dir to a folder you can write to"
        )


# --------------------------------------------------------------------------- signals


class StopSignals:
    """SIGINT/SIGTERM handling for the training loop (a context manager).

    First signal: remember it; the loop finishes the step in progress, writes a checkpoint and
    returns. Second signal: exit at once with status 128 + signal number.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, console: bool = True) -> None:
        self.received: int | None = None
        self.console = console
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        try:
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread (e.g. a notebook worker): leave signals alone
            self._restore()
            log.debug("signal handlers not installed (not in the main thread)")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _say(self, text: str) -> None:
        # os.write: safe to call from a signal handler, unlike logging or tqdm.
        if self.console:
            with contextlib.suppress(OSError, ValueError):
                os.write(sys.stderr.fileno(), (text + "\n").encode())

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = signum
            self._say(
                f"srkit: {name} received: finishing the current step, then saving a "
                f"checkpoint and stopping (send {name} again to stop at once)"
            )
            return
        self._say(
            f"srkit: second {name}: stopping now without a checkpoint; the last complete "
            "checkpoint is intact (continue with --resume auto)"
        )
        exit_now(128 + signum)

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name


def exit_now(status: int) -> None:
    """Leave the process immediately (no cleanup that could block or half-write files)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for handler in logging.getLogger("srkit").handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(status)


def ignore_interrupts_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group, but workers must
    keep serving batches while the main process finishes its step and saves; they exit with the
    main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------- test hooks

NAN_HOOK = "SRKIT_TEST_HOOK_NAN"
KILL_HOOK = "SRKIT_TEST_HOOK_KILL_IN_CHECKPOINT"


class TestHooks:
    """Fault injection for the test suite, configured by environment variables.

    ``SRKIT_TEST_HOOK_NAN="g/pixel@7"`` makes loss term ``g/pixel`` NaN in step 7 (1-based, as
    checkpoints count); ``"d/gan@7-"`` from step 7 on. ``SRKIT_TEST_HOOK_KILL_IN_CHECKPOINT=
    "6:2"`` makes the process SIGKILL itself while writing the checkpoint of step 6, after 2 of
    its files (the last file is the manifest; one more than the number of files means "after the
    rename, before old checkpoints are pruned").
    """

    __test__ = False  # not a pytest test class

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = dict(os.environ if environ is None else environ)
        self.nan: tuple[str, int, bool] | None = None
        self.kill: tuple[int, int] | None = None
        self._step = 0
        if environ.get(NAN_HOOK):
            match = re.fullmatch(r"([gd]/[\w.-]+)@(\d+)(-?)", environ[NAN_HOOK].strip())
            if not match:
                raise ValueError(
                    f"{NAN_HOOK}: expected '<g or d>/<loss term>@<step>[-]', got {environ[NAN_HOOK]}"
                )
            self.nan = (match.group(1), int(match.group(2)), bool(match.group(3)))
        if environ.get(KILL_HOOK):
            step, files = environ[KILL_HOOK].split(":")
            self.kill = (int(step), int(files))

    def __bool__(self) -> bool:
        return self.nan is not None or self.kill is not None

    def set_training_step(self, step: int) -> None:
        self._step = step + 1

    def _nan_now(self) -> bool:
        assert self.nan is not None
        _, at, onwards = self.nan
        return self._step >= at if onwards else self._step == at

    def install_nan(self, terms: list[Any]) -> None:
        """Wrap the named loss term so it returns NaN at the chosen step(s)."""
        if self.nan is None:
            return
        key = self.nan[0]
        side, name = key.split("/", 1)
        matching = [t for t in terms if t.name == name]
        if not matching or (side == "d" and matching[0].discriminator is None):
            raise ValueError(f"{NAN_HOOK}: no loss term {key}")
        term = matching[0]
        hooks = self
        if side == "g":
            original_g = term.generator_loss

            def generator_loss(tensors: Any) -> torch.Tensor:
                loss = original_g(tensors)
                return loss * float("nan") if hooks._nan_now() else loss

            term.generator_loss = generator_loss
        else:
            original_d = term.discriminator_loss

            def discriminator_loss(*args: Any, **kwargs: Any) -> Any:
                loss, scalars = original_d(*args, **kwargs)
                return (loss * float("nan") if hooks._nan_now() else loss), scalars

            term.discriminator_loss = discriminator_loss

    def checkpoint_file_hook(self) -> Callable[[int, int], None] | None:
        """``after_file(step, files_done)`` for the checkpoint writer, when the kill hook is on."""
        if self.kill is None:
            return None
        kill_step, kill_files = self.kill

        def after_file(step: int, files_done: int) -> None:
            if step == kill_step and files_done == kill_files:
                os.kill(os.getpid(), signal.SIGKILL)

        return after_file
