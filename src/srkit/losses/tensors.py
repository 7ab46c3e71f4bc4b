"""Named tensors of one training chunk, addressed by small expressions.

Loss terms say *what* they compare as text: ``sr``, ``hr``, ``grad(sr)``, ``down(sr)``,
``detail(hr)``, ``featurenet(up(lr))``. Base names are the batch entries (``lr``, ``hr``) and the
generator's named outputs (``sr``, ``grad_branch``, ...). A function name is either a built-in
view below or a frozen network declared in the config's ``networks``. Each expression is
evaluated once per chunk and cached, so two terms reading ``grad(hr)`` share one computation.

This indirection is what keeps method names out of the trainer: SPSR's gradient terms are the
pixel and GAN terms pointed at ``grad(...)`` expressions, disjoint training points them at LR
scale, and feature-net training reads ``vgg(hr)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from srkit.errors import ConfigError

View = Callable[[torch.Tensor], torch.Tensor]

_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$")
_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


def parse_expression(expression: str) -> list[str]:
    """Split ``f(g(x))`` into ``["f", "g", "x"]`` (outermost first); raise ConfigError if malformed."""
    parts: list[str] = []
    rest = expression
    while True:
        call = _CALL.match(rest)
        if call:
            parts.append(call.group(1))
            rest = call.group(2)
            continue
        name = _NAME.match(rest)
        if not name:
            raise ConfigError(
                f"malformed tensor expression '{expression}'; write a name such as 'sr' or "
                "nested calls such as 'grad(sr)'"
            )
        parts.append(name.group(1))
        return parts


def builtin_views(scale: int) -> dict[str, View]:
    """Views every run has. ``scale`` is the run's SR factor."""

    def grad(x: torch.Tensor) -> torch.Tensor:
        from srkit.nets.gradient import image_gradient

        return image_gradient(x)

    def up(x: torch.Tensor) -> torch.Tensor:
        # Bicubic to HR size; the same operation at training and inference time.
        return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)

    def down(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // scale, x.shape[-1] // scale
        return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)

    def grey(x: torch.Tensor) -> torch.Tensor:
        # BT.601 luma, repeated to three channels so RGB networks accept it.
        weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True).expand_as(x).contiguous()

    def detail(x: torch.Tensor) -> torch.Tensor:
        # What the LR does not fix: the image minus its bicubic down-and-up round trip. Near
        # zero on flat regions and colours; what a discriminator should judge (a D on the whole
        # image spends its first steps on content and colour, docs/gan-health.md).
        smooth = F.interpolate(down(x), size=x.shape[-2:], mode="bicubic", align_corners=False)
        return x - smooth

    return {
        "grad": grad,
        "up": up,
        "down": down,
        "grey": grey,
        "detail": detail,
        "detach": torch.Tensor.detach,
    }


#: Built-in views that keep an image's colours (resampling, luma, detach): a pixel distance
#: between expressions built only from these compares colours; ``grad`` does not.
COLOUR_KEEPING_VIEWS = frozenset({"up", "down", "grey", "detach"})


def keeps_colour(expression: str) -> bool:
    """Whether ``expression`` is an image whose colours are those of its base tensor."""
    return set(parse_expression(expression)[:-1]) <= COLOUR_KEEPING_VIEWS


def check_expression(expression: str, functions: set[str], where: str) -> None:
    """Raise ConfigError naming ``where`` if the expression is malformed or calls an unknown
    function."""
    try:
        parts = parse_expression(expression)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    for function in parts[:-1]:
        if function not in functions:
            raise ConfigError(
                f"{where}: unknown function '{function}' in '{expression}'; "
                f"available: {', '.join(sorted(functions))}"
            )


class StepTensors:
    """Lazily evaluated, cached tensors of one chunk."""

    def __init__(self, base: Mapping[str, torch.Tensor], views: Mapping[str, View]) -> None:
        self._base = dict(base)
        self._views = views
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._base)

    def has(self, name: str) -> bool:
        return name in self._base

    def __getitem__(self, expression: str) -> torch.Tensor:
        key = expression.replace(" ", "")
        if key in self._cache:
            return self._cache[key]
        parts = parse_expression(key)
        if len(parts) == 1:
            if key not in self._base:
                raise ConfigError(f"unknown tensor '{key}'; this step has: {', '.join(self.names)}")
            return self._base[key]
        inner = key[len(parts[0]) + 1 : -1]
        value = self._views[parts[0]](self[inner])
        self._cache[key] = value
        return value

    def detached(self) -> StepTensors:
        """A copy whose tensors carry no autograd history (for discriminator steps)."""
        copy = StepTensors({k: _detach(v) for k, v in self._base.items()}, self._views)
        copy._cache = {k: _detach(v) for k, v in self._cache.items()}
        return copy

    def first(self, count: int = 1) -> StepTensors:
        """Detached copies of the first ``count`` samples (not views: the chunk can be freed)."""
        copy = StepTensors({k: _head(v, count) for k, v in self._base.items()}, self._views)
        copy._cache = {k: _head(v, count) for k, v in self._cache.items()}
        return copy


def _head(value: Any, count: int) -> Any:
    """Copies of the first ``count`` samples of a tensor (or of each tensor of a list)."""
    if isinstance(value, torch.Tensor):
        return value[:count].detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_head(item, count) for item in value)
    return value


def _detach(value: Any) -> Any:
    """Detach a tensor, or each tensor of a list/tuple (e.g. per-switch attention maps)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(item) for item in value)
    return value
