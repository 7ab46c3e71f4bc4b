"""Ranges of network constructor arguments, written into the signature (plain Python).

The constructor signature is the config schema (see :mod:`srkit.nets.registry`). An argument
whose meaningful values are a range says so in its annotation with one or more markers::

    nf: Annotated[int, Positive] = 64                             # > 0
    nb: Annotated[int, AtLeast(4)] = 23                           # >= 4
    mux_filters: Annotated[int, AtLeast(4), MultipleOf(4)] = 32   # 4, 8, 12, ...
    kernel_size: Annotated[int, Positive, Odd] = 3                # 1, 3, 5, ...
    temperature_min: Annotated[float, Above(0), AtMost(1)] = 1.0  # (0, 1]
    hidden: Annotated[int, Positive] | None = None                # > 0 or null

``srkit.config`` turns the markers into pydantic constraints, so a bad value in a config is a
one-line error naming ``networks.<name>.<key>`` before anything is built, and the ranges appear
in ``docs/config.md`` and the JSON schema; :func:`srkit.nets.registry.build_network` checks them
as well, so Python callers get the same one-line error instead of a failure inside torch. A
choice among a few values is a ``Literal[...]``; rules that tie arguments together (a width
that must divide another, a combination a network does not support) are the network's
registered ``check`` (see the registry).

This module imports nothing but the standard library (no torch, no pydantic).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union


class Constraint:
    """A condition on one argument's value: :meth:`allows` and a description for messages."""

    def allows(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """What is allowed, completing "must be ...": ``greater than 0``, ``odd``."""
        raise NotImplementedError


@dataclass(frozen=True)
class AtLeast(Constraint):
    """value >= minimum."""

    minimum: float

    def allows(self, value: Any) -> bool:
        return value >= self.minimum

    def describe(self) -> str:
        return f"greater than or equal to {self.minimum}"


@dataclass(frozen=True)
class Above(Constraint):
    """value > bound."""

    bound: float

    def allows(self, value: Any) -> bool:
        return value > self.bound

    def describe(self) -> str:
        return f"greater than {self.bound}"


@dataclass(frozen=True)
class AtMost(Constraint):
    """value <= maximum."""

    maximum: float

    def allows(self, value: Any) -> bool:
        return value <= self.maximum

    def describe(self) -> str:
        return f"less than or equal to {self.maximum}"


@dataclass(frozen=True)
class MultipleOf(Constraint):
    """value % factor == 0."""

    factor: int

    def allows(self, value: Any) -> bool:
        return value % self.factor == 0

    def describe(self) -> str:
        return f"a multiple of {self.factor}"


@dataclass(frozen=True)
class _Odd(Constraint):
    """value % 2 == 1 (kernel sizes that keep a centre pixel)."""

    def allows(self, value: Any) -> bool:
        return value % 2 == 1

    def describe(self) -> str:
        return "an odd number"


#: > 0: widths, channel counts, block counts that need at least one block.
Positive = Above(0)
#: >= 0: counts where none is meaningful (e.g. optional extra layers), step numbers.
NonNegative = AtLeast(0)
#: odd integers.
Odd = _Odd()


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def constraints_of(annotation: Any) -> list[Constraint]:
    """The markers on ``annotation`` (``Annotated[int, ...]``, also inside ``X | None``)."""
    if typing.get_origin(annotation) is Annotated:
        return [m for m in annotation.__metadata__ if isinstance(m, Constraint)]
    if _is_union(annotation):
        found: list[Constraint] = []
        for member in typing.get_args(annotation):
            found += constraints_of(member)
        return found
    return []


def choices_of(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal[...]`` annotation (also inside Annotated/Optional), else None."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if _is_union(annotation):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return choices_of(members[0])
    return None


def value_problem(annotation: Any, value: Any) -> str | None:
    """Why ``value`` is not allowed by the markers / Literal of ``annotation``, or None.

    The text completes "<argument> ...", e.g. "must be greater than 0, got -4". Values of the
    wrong type are not judged here (None for an Optional argument is fine).
    """
    if value is None:
        return None
    choices = choices_of(annotation)
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) if isinstance(c, str) else str(c) for c in choices)
        return f"must be one of {allowed}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    for constraint in constraints_of(annotation):
        if not constraint.allows(value):
            return f"must be {constraint.describe()}, got {value!r}"
    return None
