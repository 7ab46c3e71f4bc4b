"""Spectral normalisation of a network's layers, and its removal from saved weights.

:func:`apply_spectral_norm` wraps every convolution and linear layer of a module with
``torch.nn.utils.parametrizations.spectral_norm`` (Miyato et al. 2018): the layer's effective
weight is ``W / sigma(W)``, ``sigma`` the largest singular value of ``W`` reshaped to
``(out_channels, -1)``, estimated by power iteration (one per forward pass in training mode;
eval mode reuses the stored vectors). It bounds each layer's Lipschitz constant by 1, which
keeps a discriminator's gradients from growing without bound.

A wrapped layer's state dict holds ``<layer>.parametrizations.weight.original`` and the power
iteration's vectors ``..._u`` / ``..._v`` instead of ``<layer>.weight``; checkpoints keep that
form so a resumed run continues the power iteration exactly. :func:`fold_spectral_norm` turns
such a state dict into the plain one of the same network without the wrapping, with the
effective weights ``original / (u . W v)`` (exactly what the wrapped layer computes in eval
mode), so the weights load into an unwrapped network and architecture detection sees the
usual keys.

Transposed convolutions are left alone (their normalised dimension differs and no srkit
discriminator has one). This module needs torch only.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

WRAPPED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

_ORIGINAL = ".parametrizations.weight.original"
_U = ".parametrizations.weight.0._u"
_V = ".parametrizations.weight.0._v"


def apply_spectral_norm(module: nn.Module, power_iterations: int = 1) -> int:
    """Wrap every convolution and linear layer of ``module`` in place; returns how many.

    Layers already wrapped are left as they are, so applying twice changes nothing.
    """
    count = 0
    for layer in module.modules():
        if not isinstance(layer, WRAPPED_LAYERS) or getattr(layer, "weight", None) is None:
            continue
        if parametrize.is_parametrized(layer, "weight"):
            continue
        parametrizations.spectral_norm(layer, n_power_iterations=power_iterations)
        count += 1
    return count


def has_spectral_norm(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict holds spectrally normalised layers."""
    return any(key.endswith(_ORIGINAL) for key in state)


def spectral_layers(module: nn.Module) -> set[str]:
    """Names of the layers of ``module`` whose weight is spectrally normalised."""
    return {
        name
        for name, layer in module.named_modules()
        if isinstance(layer, WRAPPED_LAYERS) and parametrize.is_parametrized(layer, "weight")
    }


def fold_spectral_norm(
    state: Mapping[str, torch.Tensor], keep: Container[str] = ()
) -> dict[str, torch.Tensor]:
    """The plain state dict of a spectrally normalised one: ``<layer>.weight`` = effective weight.

    Layers named in ``keep`` stay wrapped (for loading into a network that normalises some of
    its layers itself, e.g. a discriminator with ``norm: spectral``); keys of layers without
    spectral norm pass through unchanged.
    """
    folded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        layer = _layer_of(key)
        if layer is None or layer in keep:
            folded[key] = value
        elif key.endswith(_ORIGINAL):
            u = state[layer + _U].float()
            v = state[layer + _V].float()
            original = value.float()
            sigma = torch.vdot(u, original.flatten(1) @ v)
            folded[layer + ".weight"] = (original / sigma).to(value.dtype)
    return folded


def _layer_of(key: str) -> str | None:
    """The layer name of a spectral-norm key (``original``, ``_u``, ``_v``), else None."""
    for suffix in (_ORIGINAL, _U, _V):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return None
