"""Training checkpoints: complete, atomic, verifiable folders.

Layout of ``<run>/checkpoints/step_00001000/``::

    generator.safetensors          every trained network, architecture in the metadata
    generator_ema.safetensors      when EMA is on
    discriminator.safetensors ...
    training_state.pt              optimizers, scaler, step, RNG states (weights_only loadable)
    manifest.json                  step and sha256 + size of every file above

A checkpoint is written into ``step_00001000.tmp/``, each file fsynced, and the folder renamed
when complete, so a folder without ``.tmp`` and with a manifest whose files all match is a
complete checkpoint. Resume picks the newest such folder and says why it skipped any other.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srkit.errors import CheckpointError
from srkit.fsutil import atomic_write_bytes, file_sha256, fsync_directory
from srkit.nets.registry import detect_network
from srkit.train.reliability import CheckpointWriteError, describe_write_failure, error_number
from srkit.weights import save_weights

log = logging.getLogger("srkit.train")

STATE_FILE = "training_state.pt"
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"^step_(\d{8,})$")


def checkpoint_folder(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def _write_file(path: Path, write: Callable[[Path], None]) -> None:
    """Write one checkpoint file atomically; any failure becomes a CheckpointWriteError.

    (Serialisers report a full disk in their own ways: safetensors as a SafetensorError with
    "os error 28" in the text, torch.save as a RuntimeError without an errno; so the training
    state is serialised in memory first and written with plain file I/O.)
    """
    try:
        write(path)
    except CheckpointWriteError:
        raise
    except Exception as error:
        raise CheckpointWriteError(
            describe_write_failure(path, error), path, error_number(error)
        ) from error


def _serialise(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_checkpoint(
    root: Path,
    step: int,
    networks: dict[str, nn.Module],
    training_state: dict[str, Any],
    keep: int,
    after_file: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a complete checkpoint for ``step`` and prune all but the newest ``keep``.

    The training state records the sha256 of each weight file it belongs to
    (``weights_sha256``); the manifest records the sha256 and size of every file. On any
    failure the staging folder is removed, nothing else is touched (the previous checkpoints
    stay as they were), and :class:`CheckpointWriteError` says which path failed and the free
    space there. ``after_file(step, files_done)`` is a test hook (fault injection).
    """
    root = Path(root)
    final = checkpoint_folder(root, step)
    staging = final.with_name(final.name + ".tmp")
    files_done = 0

    def done() -> None:
        nonlocal files_done
        files_done += 1
        if after_file is not None:
            after_file(step, files_done)

    try:
        _make_staging_folder(root, staging)
        _write_files(staging, step, networks, training_state, done)
        _publish(root, staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    done()
    prune_checkpoints(root, keep)
    return final


def _make_staging_folder(root: Path, staging: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    except OSError as error:
        raise CheckpointWriteError(
            describe_write_failure(staging, error), staging, error_number(error)
        ) from error


def _write_files(
    staging: Path,
    step: int,
    networks: dict[str, nn.Module],
    training_state: dict[str, Any],
    done: Callable[[], None],
) -> None:
    """The weight files, the training state and last the manifest, each fsynced."""
    files: list[str] = []
    weights_sha256 = {}
    for name, module in networks.items():
        file = f"{name}.safetensors"
        _write_file(
            staging / file, lambda path, m=module: save_weights(path, m, {"step": str(step)})
        )
        files.append(file)
        weights_sha256[file] = file_sha256(staging / file)
        done()
    payload = _serialise({**training_state, "weights_sha256": weights_sha256})
    _write_file(staging / STATE_FILE, lambda path: atomic_write_bytes(path, payload))
    files.append(STATE_FILE)
    digests = {**weights_sha256, STATE_FILE: hashlib.sha256(payload).hexdigest()}
    payload = b""  # free it before the manifest and the rename
    done()
    manifest = {
        "step": step,
        "files": {
            name: {"sha256": digests[name], "bytes": (staging / name).stat().st_size}
            for name in files
        },
    }
    text = json.dumps(manifest, indent=1)
    _write_file(staging / MANIFEST_FILE, lambda path: atomic_write_bytes(path, text.encode()))
    done()


def _publish(root: Path, staging: Path, final: Path) -> None:
    """Rename the complete staging folder to its final name (replacing a checkpoint of the
    same step whole, when a resumed run saves a step again)."""
    try:
        if final.exists():
            old = final.with_name(final.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
        fsync_directory(root)
    except OSError as error:
        raise CheckpointWriteError(
            describe_write_failure(final, error), final, error_number(error)
        ) from error


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """All checkpoint folders (complete or not) by step, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def checkpoint_problem(folder: Path, verify_hashes: bool = True) -> str | None:
    """Why ``folder`` is not a usable checkpoint, or None when it is complete and consistent.

    Complete: a manifest listing the training state, every listed file present with its size
    and sha256. Consistent: the weight checksums the training state recorded are those of the
    weight files next to it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return f"no {MANIFEST_FILE}, so not a complete srkit checkpoint"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["files"]
        sizes = {name: int(entry["bytes"]) for name, entry in entries.items()}
        hashes = {name: str(entry["sha256"]) for name, entry in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return f"{MANIFEST_FILE} is unreadable"
    if STATE_FILE not in entries:
        return f"{MANIFEST_FILE} lists no {STATE_FILE}"
    for name in entries:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != sizes[name]:
            return f"{name} has {size} bytes, the manifest says {sizes[name]} (truncated?)"
        if verify_hashes and file_sha256(path) != hashes[name]:
            return f"{name} does not match its checksum (damaged)"
    if verify_hashes:
        try:
            recorded = torch.load(
                folder / STATE_FILE, map_location="cpu", weights_only=True, mmap=True
            ).get("weights_sha256")
        except Exception as error:
            return f"{STATE_FILE} is unreadable ({_first_line(error)})"
        if recorded is not None:
            for name, digest in recorded.items():
                if hashes.get(name) != digest:
                    return f"{name} is not the weight file the training state was saved with"
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and leftovers of interrupted writes.

    A checkpoint is renamed out of the ``step_N`` namespace before its files are deleted, so a
    crash while pruning never leaves a half-deleted folder that looks like a checkpoint.
    """
    root = Path(root)
    for pattern in ("step_*.tmp", "step_*.deleting"):
        for leftover in root.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
    for old in root.glob("step_*.old"):
        if old.with_suffix("").is_dir():
            shutil.rmtree(old, ignore_errors=True)
    checkpoints = list_checkpoints(root)
    for _, folder in checkpoints[:-keep] if keep > 0 else []:
        doomed = folder.with_name(folder.name + ".deleting")
        try:
            os.replace(folder, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)


def _recover_interrupted_replace(root: Path) -> None:
    """A crash between the two renames that replace a re-saved step leaves only
    ``step_N.old``, a complete checkpoint: put it back."""
    for old in Path(root).glob("step_*.old"):
        final = old.with_suffix("")
        if _NAME.match(final.name) and not final.exists():
            try:
                os.replace(old, final)
                log.info("restored %s from an interrupted checkpoint replacement", final.name)
            except OSError:
                pass


def find_resumable(root: Path) -> Path | None:
    """The newest complete, consistent checkpoint under ``root``, or None if there is none.

    Logs which one is used and why each newer one was skipped. Raises CheckpointError when
    checkpoints exist but none is usable: starting again from step 0 would silently throw away
    the run (and later prune its damaged checkpoints).
    """
    root = Path(root)
    if not root.is_dir():
        return None
    _recover_interrupted_replace(root)
    for unfinished in sorted(root.glob("step_*.tmp")):
        log.info(
            "resume: ignoring %s, a checkpoint whose write was interrupted (it is deleted at "
            "the next checkpoint)",
            unfinished.name,
        )
    skipped = []
    for step, folder in reversed(list_checkpoints(root)):
        problem = checkpoint_problem(folder)
        if problem is None:
            newer = f" (newer ones are unusable: {'; '.join(skipped)})" if skipped else ""
            log.info(
                "resume: continuing from %s (step %d), the newest complete checkpoint%s",
                folder,
                step,
                newer,
            )
            return folder
        skipped.append(f"{folder.name}: {problem}")
        log.warning("resume: skipping checkpoint %s: %s", folder, problem)
    if skipped:
        raise CheckpointError(
            f"no usable checkpoint in '{root}' ({'; '.join(skipped[:3])}); resume from a "
            "checkpoint folder you trust with --resume PATH, or start a new run under another "
            "name (--set name=...)"
        )
    return None


def architecture_difference(
    metadata: Mapping[str, str],
    module: nn.Module,
    state: Mapping[str, torch.Tensor] | None = None,
) -> str | None:
    """How the architecture recorded in a weights file's metadata differs from ``module``'s
    (for the message when the weights do not fit), or None if unknown or equal.

    A file without srkit's record (a community model) is described by the architecture
    detected from its weights ``state``, when given and recognised.
    """
    expected = getattr(module, "srkit_arch", None)
    record, verb = metadata.get("srkit_arch"), "was saved with"
    if not record and state is not None:
        try:
            kind, arguments = detect_network(state)
        except CheckpointError:
            return None
        record = json.dumps({"type": kind, **arguments}, default=str)
        verb = f"holds a {kind} network with"
    if not record or expected is None:
        return None
    try:
        saved = json.loads(record)
        expected = json.loads(json.dumps(expected, sort_keys=True, default=str))
    except (ValueError, TypeError):
        return None
    if not isinstance(saved, dict) or saved == expected:
        return None
    if saved.get("type") != expected.get("type"):
        return f"is a '{saved.get('type')}' network, the config builds '{expected.get('type')}'"
    keys = [k for k in sorted(set(saved) | set(expected)) if saved.get(k) != expected.get(k)]
    had = ", ".join(f"{k}={saved.get(k)}" for k in keys)
    has = ", ".join(f"{k}={expected.get(k)}" for k in keys)
    return f"{verb} {had}, the config has {has}"


def read_training_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"'{folder}' is not a training checkpoint (no {STATE_FILE})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read it is the same user problem
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read '{path}': {first[:200]}") from None
