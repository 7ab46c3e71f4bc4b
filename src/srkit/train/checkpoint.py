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
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srkit.errors import CheckpointError
from srkit.fsutil import atomic_write, fsync_directory
from srkit.weights import save_weights

log = logging.getLogger("srkit.train")

STATE_FILE = "training_state.pt"
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"^step_(\d{8,})$")


def checkpoint_folder(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    root: Path,
    step: int,
    networks: dict[str, nn.Module],
    training_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write a complete checkpoint for ``step`` and prune all but the newest ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_folder(root, step)
    staging = final.with_name(final.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    files = {}
    for name, module in networks.items():
        save_weights(staging / f"{name}.safetensors", module, {"step": str(step)})
        files[f"{name}.safetensors"] = None
    atomic_write(staging / STATE_FILE, lambda tmp: torch.save(training_state, tmp))
    files[STATE_FILE] = None
    manifest = {
        "step": step,
        "files": {
            name: {"sha256": _sha256(staging / name), "bytes": (staging / name).stat().st_size}
            for name in files
        },
    }
    atomic_write(
        staging / MANIFEST_FILE,
        lambda tmp: tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8"),
    )
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it whole
        old = final.with_name(final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)
    fsync_directory(root)
    prune_checkpoints(root, keep)
    return final


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
    """Why ``folder`` is not a usable checkpoint, or None when it is complete and consistent."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return "no manifest (write did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["files"]
    except (ValueError, KeyError, OSError):
        return "unreadable manifest"
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, manifest says {entry['bytes']}"
        if verify_hashes and _sha256(path) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and leftovers of interrupted writes."""
    for leftover in Path(root).glob("step_*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    checkpoints = list_checkpoints(root)
    for _, folder in checkpoints[:-keep] if keep > 0 else []:
        shutil.rmtree(folder, ignore_errors=True)


def find_resumable(root: Path) -> Path | None:
    """The newest complete, consistent checkpoint under ``root``; logs why others were skipped."""
    for step, folder in reversed(list_checkpoints(root)):
        problem = checkpoint_problem(folder)
        if problem is None:
            log.info("resuming from %s (step %d)", folder, step)
            return folder
        log.warning("skipping checkpoint %s: %s", folder, problem)
    return None


def read_training_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"'{folder}' is not a training checkpoint (no {STATE_FILE})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read it is the same user problem
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read '{path}': {first[:200]}") from None
