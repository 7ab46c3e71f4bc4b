"""Errors a user can cause and fix.

Every problem that comes from the user's side (a config key, a path, an image, a checkpoint) is
raised as a :class:`SrkitError` whose message is one line naming the thing at fault and, where it
helps, what to do. The CLI prints that line and exits with code 2; only ``--debug`` shows a
traceback. Programming errors stay ordinary exceptions so they are never mistaken for user errors.

This module imports nothing so that every part of srkit (``nets/`` included) may use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SrkitError(Exception):
    """A user-fixable problem; ``str(error)`` is a single line shown to the user."""

    #: The CLI's exit status for this error (a few non-input problems have their own).
    exit_code: int = 2

    def __init__(self, message: str) -> None:
        # One line, always: user errors are printed verbatim by the CLI.
        super().__init__(" ".join(str(message).split()))


class ConfigError(SrkitError):
    """A configuration file or ``--set`` override is wrong."""


class DataError(SrkitError):
    """Training or validation data is missing, empty or inconsistent."""


class CheckpointError(SrkitError):
    """A checkpoint or weights file cannot be read, is foreign, or does not fit."""


class UnknownNameError(SrkitError):
    """A name (network, loss term, GAN type, ...) that srkit does not know."""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name`` (for "did you mean" hints), or None."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UnknownNameError:
    """Build the standard error for an unknown ``kind`` called ``name``."""
    valid = sorted(valid)
    hint = closest(name, valid)
    did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
    return UnknownNameError(
        f"unknown {kind} '{name}'{did_you_mean}; valid names: {', '.join(valid)}"
    )
