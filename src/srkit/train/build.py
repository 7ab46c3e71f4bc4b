"""Turn a validated config into the parts the trainer runs: networks, loss terms, data.

Everything method-specific is decided here by reading the config generically (which networks
exist, which loss terms name which discriminator); the trainer receives plain collections.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import torch
from torch import nn

from srkit.config import constructor_arguments, trained_network_names
from srkit.errors import ConfigError
from srkit.losses.base import BuildContext, LossTerm, loss_entries
from srkit.losses.tensors import View, builtin_views
from srkit.nets.registry import build_network, get_network_entry
from srkit.weights import load_state, read_weights, resolve_weights_file

log = logging.getLogger("srkit.train")

_NETWORK_TAG = 0x4E455457  # "NETW": keeps network seeds apart from the data stream's seeds


def network_arguments(network_config: Any, scale: int) -> dict[str, Any]:
    """Constructor arguments of a network section (its own keys plus injected run values)."""
    entry = get_network_entry(network_config.type)
    accepted = constructor_arguments(entry)
    arguments = {k: v for k, v in network_config if k in accepted}
    if "scale" in accepted:
        arguments["scale"] = scale
    return arguments


def network_seed(seed: int, name: str) -> int:
    """The seed of a network's initialisation: a pure function of the run seed and its name."""
    from srkit.data.sampler import derive_seed

    name_word = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")
    return derive_seed(seed % 2**63, _NETWORK_TAG, name_word)


def build_networks(config: Any, device: torch.device) -> dict[str, nn.Module]:
    """Every network of the config, on ``device``; frozen helpers in eval mode, no grad."""
    trained = set(trained_network_names(config))
    networks: dict[str, nn.Module] = {}
    for name, section in config.networks.items():
        # Each network's initial weights depend on (seed, its name) only, not on how many
        # networks the config declares before it or in which order the YAML lists them.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(network_seed(config.seed, name))
            module = build_network(section.type, **network_arguments(section, config.scale))
        if section.init is not None:
            file = resolve_weights_file(section.init, network=name)
            state, _ = read_weights(file)
            load_state(module, state, strict=section.init_strict, source=str(file))
            log.info("networks.%s: weights from %s", name, file)
        if name not in trained:
            module.requires_grad_(False).eval()
        networks[name] = module.to(device)
    return networks


def tensor_views(config: Any, networks: dict[str, nn.Module]) -> dict[str, View]:
    """Functions usable in tensor expressions: built-ins plus every frozen network."""
    views = builtin_views(config.scale)
    trained = set(trained_network_names(config))
    for name, module in networks.items():
        if name not in trained:
            if name in views:
                raise ConfigError(
                    f"networks.{name}: the name '{name}' is a built-in view; rename it"
                )
            views[name] = module
    return views


def build_loss_terms(config: Any, context: BuildContext) -> list[LossTerm]:
    entries = loss_entries()
    terms = []
    for index, term_config in enumerate(config.losses):
        term = entries[term_config.type].build(term_config, context)
        if term.discriminator is not None:
            check_discriminator_fits(term, context.networks[term.discriminator], index)
        terms.append(term.to(context.device))
    return terms


def check_discriminator_fits(term: LossTerm, discriminator: nn.Module, index: int) -> None:
    """A term needing a map discriminator (e.g. pixgan) must not get a vector one."""
    if (
        getattr(term, "needs_map_discriminator", False)
        and getattr(discriminator, "reduction", None) is None
    ):
        raise ConfigError(
            f"losses.{index}: '{term.name}' needs a discriminator that outputs a logit map "
            f"(pixdisc, unet, switched); '{term.discriminator}' outputs one logit per image"
        )
