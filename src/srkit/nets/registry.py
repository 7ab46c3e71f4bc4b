"""Network registry: one name -> one constructor, plus architecture detection.

Every network srkit can build is registered here under a short name (``rrdb``, ``spsr``,
``srg2``, ``vgg``, ``pixdisc``, ...) with its role. The config system derives each network's
typed config section from the constructor's signature and docstring (see ``srkit.config``), so
a constructor's keyword arguments *are* the network's config keys: give every argument a type
annotation, a default and a line in the docstring's ``Args:`` section.

Detection: a registered network may supply ``detect(state_dict) -> kwargs | None`` that
recognises its own state dicts and recovers the constructor arguments, so a bare weights file is
enough to rebuild the model (as the ecosystem's model loaders do).

Initial-weight arguments: a constructor may take arguments that only say where its *initial*
weights come from (``pretrained``, ``weights``: a VGG copies ImageNet weights in its
constructor). Registered as ``weight_source={"pretrained": False, ...}``, they are recorded with
those neutral values in ``srkit_arch``, so rebuilding a saved network from its checkpoint (whose
weights replace the initial ones anyway) never needs the original weights file.

This module needs torch only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    # Constructor arguments that only choose the initial weights, with the values to rebuild
    # a saved network with (its checkpoint supplies the weights).
    weight_source: Mapping[str, Any] = field(default_factory=dict)

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
):
    """Class/function decorator adding a network constructor to the registry.

    ``weight_source`` maps the constructor arguments that only choose initial weights to the
    values a checkpoint records for them (see the module docstring).
    """

    def decorator(constructor):
        if name in _REGISTRY and _REGISTRY[name].constructor is not constructor:
            raise ValueError(f"network name '{name}' registered twice")
        _REGISTRY[name] = NetworkEntry(name, constructor, role, detect, dict(weight_source or {}))
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
    store as metadata, so the exact network can be rebuilt without a config; initial-weight
    arguments are recorded with their neutral values (no weights file needed to rebuild).
    """
    entry = get_network_entry(name)
    module = entry.constructor(**kwargs)
    module.srkit_arch = {"type": name, **kwargs, **entry.weight_source}
    return module


def detect_network(state_dict: StateDict) -> tuple[str, dict[str, Any]]:
    """Recognise the architecture of a bare state dict: (network name, constructor kwargs).

    The kwargs include the network's initial-weight arguments at their neutral values.

    Raises CheckpointError naming the tried architectures when none recognises the keys.
    """
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
