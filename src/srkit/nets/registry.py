"""Network registry: one name -> one constructor, plus architecture detection.

Every network srkit can build is registered here under a short name (``rrdb``, ``spsr``,
``srg2``, ``vgg``, ``pixdisc``, ...) with its role. The config system derives each network's
typed config section from the constructor's signature and docstring (see ``srkit.config``), so
a constructor's keyword arguments *are* the network's config keys: give every argument a type
annotation, a default and a line in the docstring's ``Args:`` section.

Detection: a registered network may supply ``detect(state_dict) -> kwargs | None`` that
recognises its own state dicts and recovers the constructor arguments, so a bare weights file is
enough to rebuild the model (as the ecosystem's model loaders do).

This module needs torch only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from srkit.errors import CheckpointError, unknown_name

Role = Literal["generator", "discriminator", "feature"]
StateDict = Mapping[str, torch.Tensor]
Detector = Callable[[StateDict], "dict[str, Any] | None"]


@dataclass(frozen=True)
class NetworkEntry:
    """What the registry knows about one network type."""

    name: str
    constructor: Callable[..., nn.Module]
    role: Role
    detect: Detector | None

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.constructor) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


_REGISTRY: dict[str, NetworkEntry] = {}


def register_network(name: str, role: Role, detect: Detector | None = None):
    """Class/function decorator adding a network constructor to the registry."""

    def decorator(constructor):
        if name in _REGISTRY and _REGISTRY[name].constructor is not constructor:
            raise ValueError(f"network name '{name}' registered twice")
        _REGISTRY[name] = NetworkEntry(name, constructor, role, detect)
        return constructor

    return decorator


def network_names(role: Role | None = None) -> list[str]:
    """Registered network names, optionally only those of one role."""
    return sorted(n for n, e in _REGISTRY.items() if role is None or e.role == role)


def get_network_entry(name: str) -> NetworkEntry:
    if name not in _REGISTRY:
        raise unknown_name("network", name, _REGISTRY)
    return _REGISTRY[name]


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network and remember how it was built.

    The module gets an ``srkit_arch`` attribute ``{"type": name, **kwargs}`` that checkpoints
    store as metadata, so the exact network can be rebuilt without a config.
    """
    entry = get_network_entry(name)
    module = entry.constructor(**kwargs)
    module.srkit_arch = {"type": name, **kwargs}
    return module


def detect_network(state_dict: StateDict) -> tuple[str, dict[str, Any]]:
    """Recognise the architecture of a bare state dict: (network name, constructor kwargs).

    Raises CheckpointError naming the tried architectures when none recognises the keys.
    """
    for entry in _REGISTRY.values():
        if entry.detect is None:
            continue
        kwargs = entry.detect(state_dict)
        if kwargs is not None:
            return entry.name, kwargs
    tried = ", ".join(sorted(e.name for e in _REGISTRY.values() if e.detect))
    sample = ", ".join(list(state_dict)[:3])
    raise CheckpointError(
        f"weights do not match any known architecture (tried {tried}); first keys: {sample}"
    )
