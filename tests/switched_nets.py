"""Tiny switched SPSR / SPSR3 settings and helpers shared by their tests."""

from __future__ import annotations

import torch
from torch import nn

from srkit.nets import build_network

#: A switched SPSR small enough for the default suite (one multiplexer reduction).
TINY = {
    "nf": 8,
    "transforms": 3,
    "grad_transforms": 2,
    "trans_layers": 2,
    "mux_filters": 8,
    "reductions": 1,
}
#: SPSR3's reference encoder at a matching size.
TINY_REF = {"ref_size": 16, "ref_nf": 8, "ref_reductions": 2}


def finished(net: nn.Module) -> nn.Module:
    """Eval mode at the end of the temperature schedules (no mid-anneal warning)."""
    for module in net.modules():
        if hasattr(module, "set_training_step"):
            module.set_training_step(10**9)
    return net.eval()


def tiny(name: str, **kwargs) -> nn.Module:
    """A tiny ``spsr_switched`` or ``spsr3`` (seed 0); ``kwargs`` override the sizes."""
    torch.manual_seed(0)
    extra = TINY_REF if name == "spsr3" else {}
    return build_network(name, **{**TINY, **extra, **kwargs})
