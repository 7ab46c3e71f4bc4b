"""Crash-safe file writing shared by every part of srkit that writes files.

A file is written under a hidden temporary name in its destination folder (so a crash leaves no
half-written file under the real name, and image listings skip it), flushed and fsynced, given
the permissions a normal ``open()`` would give, then renamed over the destination; the folder is
fsynced so the rename survives a power cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _default_mode() -> int:
    # mkstemp creates files 0600; give them what open() would (0666 minus the umask).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], None], suffix: str = ".tmp"
) -> None:
    """Create ``path`` by calling ``write(temporary_path)`` and renaming the result into place.

    ``suffix`` ends the temporary name: writers that pick the file format from the name (a
    video muxer) need the real extension there, e.g. ``".tmp.mp4"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix
    )
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        write(temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, _default_mode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda temporary: temporary.write_bytes(payload))


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Make renames inside ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (checkpoint and dataset manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
