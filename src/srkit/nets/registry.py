"""Network registry: one name -> one constructor, plus architecture detection.

Every network srkit can build is registered here under a short name (``rrdb``, ``spsr``,
``srg2``, ``vgg``, ``pixdisc``, ...) with its role. The config system derives each network's
typed config section from the constructor's signature and docstring (see ``srkit.config``), so
a constructor's keyword arguments *are* the network's config keys: give every argument a type
annotation, a default and a line in the docstring's ``Args:`` section.

Detection: a registered network may supply ``detect(state_dict) -> kwargs | None`` that
recognises its own state dicts and recovers the constructor arguments, so a bare weights file is
enough to rebuild the model (as the ecosystem's model loaders do).

Ranges and rules: every argument states its meaningful values in its annotation, with the
markers of :mod:`srkit.nets.constraints` (``nf: Annotated[int, Positive] = 64``) or as a
``Literal[...]``; a generator's ``scale`` (injected from the run's top-level ``scale``) is a
``Literal`` of the scales it supports. Rules that tie arguments together go into an optional
``check(arguments) -> [(argument, problem), ...]`` passed to :func:`register_network`. It gets
every constructor argument (defaults filled in, markers already satisfied) and returns what is
wrong; a problem is the text after "<argument>: ", with the value and what is allowed, e.g.
``("nf", "24 is not a multiple of 16 (transforms)")``. Config validation runs both before
anything is built or written, so a bad value is one line naming ``networks.<name>.<argument>``;
:func:`build_network` runs them too. ``tests/test_network_schema.py`` builds every registered
network from its schema defaults and tries a value outside every range.

Initial-weight arguments: a constructor may take arguments that only say where its *initial*
weights come from (``pretrained``, ``weights``: a VGG copies ImageNet weights in its
constructor). Registered as ``weight_source={"pretrained": False, ...}``, they are recorded with
those neutral values in ``srkit_arch``, so rebuilding a saved network from its checkpoint (whose
weights replace the initial ones anyway) never needs the original weights file.

This module needs torch only.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from srkit.errors import CheckpointError, ConfigError, unknown_name
from srkit.nets.constraints import choices_of, value_problem
from srkit.nets.spectral import fold_spectral_norm, has_spectral_norm

Role = Literal["generator", "discriminator", "feature"]
StateDict = Mapping[str, torch.Tensor]
Detector = Callable[[StateDict], "dict[str, Any] | None"]
#: Rules between arguments: all constructor arguments -> [(argument, problem), ...].
Checker = Callable[[Mapping[str, Any]], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class NetworkEntry:
    """What the registry knows about one network type."""

    name: str
    constructor: Callable[..., nn.Module]
    role: Role
    detect: Detector | None
    # Constructor arguments that only choose the initial weights, with the values to rebuild
    # a saved network with (its checkpoint supplies the weights).
    weight_source: Mapping[str, Any] = field(default_factory=dict)
    # Rules that tie arguments together (see the module docstring).
    check: Checker | None = None

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.constructor) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


_REGISTRY: dict[str, NetworkEntry] = {}


def register_network(
    name: str,
    role: Role,
    detect: Detector | None = None,
    weight_source: Mapping[str, Any] | None = None,
    check: Checker | None = None,
):
    """Class/function decorator adding a network constructor to the registry.

    ``weight_source`` maps the constructor arguments that only choose initial weights to the
    values a checkpoint records for them; ``check`` returns the problems of a combination of
    arguments (see the module docstring for both).
    """

    def decorator(constructor):
        if name in _REGISTRY and _REGISTRY[name].constructor is not constructor:
            raise ValueError(f"network name '{name}' registered twice")
        _REGISTRY[name] = NetworkEntry(
            name, constructor, role, detect, dict(weight_source or {}), check
        )
        return constructor

    return decorator


def network_names(role: Role | None = None) -> list[str]:
    """Registered network names, optionally only those of one role."""
    return sorted(n for n, e in _REGISTRY.items() if role is None or e.role == role)


def get_network_entry(name: str) -> NetworkEntry:
    if name not in _REGISTRY:
        raise unknown_name("network", name, _REGISTRY)
    return _REGISTRY[name]


@functools.cache
def signature_of(constructor: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """{argument: (annotation with its markers, default or inspect.Parameter.empty)}."""
    target = constructor.__init__ if inspect.isclass(constructor) else constructor
    hints = typing.get_type_hints(target, include_extras=True)
    return {
        name: (hints.get(name, Any), parameter.default)
        for name, parameter in inspect.signature(target).parameters.items()
        if name != "self"
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }


def supported_scales(entry: NetworkEntry) -> tuple[int, ...] | None:
    """The scales a network supports (its ``scale: Literal[...]``); None if it takes no scale."""
    argument = signature_of(entry.constructor).get("scale")
    return None if argument is None else choices_of(argument[0])


def argument_problems(entry: NetworkEntry, arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with constructor ``arguments`` of ``entry``: [(argument, problem), ...].

    Checks every given value against its markers and ``Literal`` choices, then (only if those
    pass) runs the network's ``check`` on all arguments with the defaults filled in.
    """
    signature = signature_of(entry.constructor)
    problems = []
    for name, value in arguments.items():
        if name in signature:
            problem = value_problem(signature[name][0], value)
            if problem is not None:
                problems.append((name, problem))
    if problems or entry.check is None:
        return problems
    full = {
        name: default
        for name, (_, default) in signature.items()
        if default is not inspect.Parameter.empty
    }
    full.update(arguments)
    return list(entry.check(full))


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network and remember how it was built.

    Raises ConfigError (one line: network, argument, value, what is allowed) when an argument
    is outside its range or breaks the network's rules, before any layer is made.

    The module gets an ``srkit_arch`` attribute ``{"type": name, **kwargs}`` that checkpoints
    store as metadata, so the exact network can be rebuilt without a config; initial-weight
    arguments are recorded with their neutral values (no weights file needed to rebuild).
    """
    entry = get_network_entry(name)
    problems = argument_problems(entry, kwargs)
    if problems:
        argument, problem = problems[0]
        raise ConfigError(f"{name}: {argument}: {problem}")
    module = entry.constructor(**kwargs)
    module.srkit_arch = {"type": name, **kwargs, **entry.weight_source}
    return module


def detect_network(state_dict: StateDict) -> tuple[str, dict[str, Any]]:
    """Recognise the architecture of a bare state dict: (network name, constructor kwargs).

    The kwargs include the network's initial-weight arguments at their neutral values.

    Raises CheckpointError naming the tried architectures when none recognises the keys.
    """
    if has_spectral_norm(state_dict):  # detectors know the plain layer names
        state_dict = fold_spectral_norm(state_dict)
    for entry in _REGISTRY.values():
        if entry.detect is None:
            continue
        kwargs = entry.detect(state_dict)
        if kwargs is not None:
            # The state dict holds the weights: never fetch initial ones to rebuild it.
            return entry.name, {**kwargs, **entry.weight_source}
    tried = ", ".join(sorted(e.name for e in _REGISTRY.values() if e.detect))
    sample = ", ".join(list(state_dict)[:3])
    raise CheckpointError(
        f"weights do not match any known architecture (tried {tried}); first keys: {sample}"
    )
