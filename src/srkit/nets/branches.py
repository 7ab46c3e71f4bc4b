"""Branches: the parts of a network that reach its mainline only through a scaled residual.

The seed's lesson: "Don't mess with the mainline of any generative model. As much as possible,
all additions should be done through residual connections. Never pollute the mainline with
reference data, do that in branches." A network states which of its modules are branches by
calling :func:`mark_branch` on them; a module that scales its branches' contribution says so with
a ``branch_scales() -> list[nn.Parameter]`` method (a switch: its ``switch_scale``). With every
branch scale at zero, a branch's output cannot reach the network's output.

Side inputs (SPSR3's whole-image reference) may be joined inside branches only; the tests in
``tests/test_design_lessons.py`` check this for every registered generator with two probes: the
output with every branch scale at zero is bit-identical for two different side inputs, and with
every branch's output cut from autograd the output does not depend on the side inputs at all.

This module needs torch only.
"""

from __future__ import annotations

from torch import nn

#: Attribute set on a module that is a branch.
BRANCH_FLAG = "srkit_branch"


def mark_branch(module: nn.Module) -> nn.Module:
    """Mark ``module`` as a branch (its output reaches the mainline only scaled); returns it."""
    setattr(module, BRANCH_FLAG, True)
    return module


def is_branch(module: nn.Module) -> bool:
    return bool(getattr(module, BRANCH_FLAG, False))


def branch_modules(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module of ``network`` marked as a branch."""
    return [(name, module) for name, module in network.named_modules() if is_branch(module)]


def branch_scales(network: nn.Module) -> list[nn.Parameter]:
    """The output scales of every branch of ``network`` (from its modules' ``branch_scales``)."""
    scales = []
    for module in network.modules():
        method = getattr(module, "branch_scales", None)
        if callable(method):
            scales.extend(method())
    return scales
