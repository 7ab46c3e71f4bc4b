"""Getting a plain state dict out of whatever a checkpoint file holds.

Training toolboxes wrap weights in different ways: BasicSR saves ``{"params": sd}`` or
``{"params_ema": sd, "params": sd}``, Lightning-style files hold ``{"state_dict": sd}``, a model
saved from inside DistributedDataParallel has every key prefixed ``module.``, and one saved from
``torch.compile`` has ``_orig_mod.``. :func:`unwrap_state_dict` undoes all of that so that
architecture detection sees the network's own key names.

This module needs torch only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from srkit.errors import CheckpointError, SrkitError

#: Wrapper keys tried in order; the EMA weights win over the raw ones, as BasicSR's loaders do.
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net_g")

#: Key prefixes added by wrappers around a module (DistributedDataParallel, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def strip_prefixes(
    state_dict: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = WRAPPER_PREFIXES
) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (``module.``, ``_orig_mod.``) shared by *every* key, repeatedly."""
    out = dict(state_dict)
    changed = True
    while changed and out:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                changed = True
    return out


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The network state dict inside a loaded checkpoint object.

    Accepts a plain state dict or a mapping holding one under ``params_ema`` (preferred),
    ``params``, ``state_dict``, ``model_state_dict``, ``model`` or ``net_g`` (nested wrappers
    are unwrapped too), and strips ``module.`` / ``_orig_mod.`` prefixes shared by all keys.
    Non-tensor entries next to the weights (e.g. an ``epoch`` counter) are an error only when no
    wrapper key is found.

    Raises CheckpointError when no state dict can be found.
    """
    seen = 0
    while not _is_state_dict(obj):
        seen += 1
        if not isinstance(obj, Mapping) or seen > 8:
            raise CheckpointError(
                f"checkpoint holds no network weights (got {type(obj).__name__}); expected a "
                f"state dict or a mapping with one of the keys {', '.join(WRAPPER_KEYS)}"
            )
        inner = next(
            (obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None
        )
        if inner is None:
            keys = ", ".join(map(str, list(obj)[:5]))
            raise CheckpointError(
                f"checkpoint holds no network weights (top-level keys: {keys}); expected a "
                f"state dict or a mapping with one of the keys {', '.join(WRAPPER_KEYS)}"
            )
        obj = inner
    return strip_prefixes(obj)


def state_dict_fits(
    constructor: Any, kwargs: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> bool:
    """Whether ``constructor(**kwargs)`` has exactly the keys and shapes of ``state_dict``.

    The network is built on the ``meta`` device, so no memory is allocated and no weights are
    initialised: this costs about as much as reading the keys. Detectors use it as their last
    check, which guarantees that a detected architecture loads with ``strict=True``.
    """
    try:
        with torch.device("meta"):
            expected = constructor(**kwargs).state_dict()
    except (SrkitError, ValueError, TypeError):
        return False
    if set(expected) != set(state_dict):
        return False
    return all(tuple(expected[k].shape) == tuple(state_dict[k].shape) for k in expected)


def upsample_stages(state_dict: Mapping[str, torch.Tensor]) -> int:
    """How many ``conv_up1``, ``conv_up2``, ... x2 stages the keys hold (scale = 2 ** that for
    the generators built from nearest x2 + conv stages)."""
    stages = 0
    while f"conv_up{stages + 1}.weight" in state_dict:
        stages += 1
    return stages


def count_indexed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many consecutive ``prefix{i}.`` entries (i = 0, 1, ...) the keys hold."""
    indices = set()
    for key in state_dict:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                indices.add(int(head))
    count = 0
    while count in indices:
        count += 1
    return count
