"""The switch: n alternative transformations blended per pixel by a learned attention.

This is the building block of the SRG2 generator (``srg2.py``) and of the switched
discriminator. Given features x (N, C, h, w), a :class:`Switch` computes::

    x_b       = x + noise_scale * randn         (optional, training only; branch input only)
    features  = LReLU(pre_transform(x_b))                       (3x3 conv, init Kaiming x0.1)
    t_i       = transform_i(features), i = 1..n                 (trans_layers 3x3 convs each)
    logits    = multiplexer(x)                                  (N, n, h, w); u-net, GroupNorm
    attention = softmax_n(logits / temperature)                 (optionally usage-normalised)
    out       = x + switch_scale * sum_i attention_i * t_i      (residual; no "x +" otherwise)
    out       = out + post_scale * post_conv(out)               (post_scale init 0.1)

and returns ``(out, attention)`` with attention as (N, h, w, n).

``forward(x, identity=..., mux_input=..., context=...)`` generalises this for the switched SPSR
generators: the residual adds ``identity`` instead of ``x`` (the join switch mixes the
concatenated gradient and feature paths but keeps the feature path as its mainline), the
multiplexer reads ``mux_input`` instead of ``x``, and a per-image ``context`` vector (SPSR3's
reference) is added, through learned linear maps, after the first conv of every transform and of
the multiplexer: inside the branches only (:mod:`srkit.nets.branches`; the transforms and the
multiplexer are marked as branches, ``switch_scale`` is their scale). ``mux_norm=False`` builds
the multiplexer without GroupNorm, for multiplexers that read image-gradient features.

Design decisions (the seed's lessons and the defects of its 2020 code):

* The logits are *not* passed through an activation: the multiplexer ends in a plain conv.
* Every branch starts near zero (transforms, pre-transform and post conv Kaiming x0.1), so a
  fresh residual switch is almost the identity and the mainline is left alone.
* Temperature anneals linearly from ``temperature`` to 1 at ``temperature_final_step`` and then,
  optionally, linearly on to ``temperature_min`` at ``temperature_min_step``: continuous and
  monotone (:func:`switch_temperature`). ``set_training_step(step)`` applies it. The current and
  the final temperature are buffers, so checkpoints (and bare weight files) carry both.
* Evaluating at a training temperature: a switch in eval mode whose temperature differs from its
  schedule's final value runs *at its stored temperature* (that is what the weights were trained
  with, and what validation during training must see) and issues one
  :class:`SwitchTemperatureWarning` per switch. It is a warning, not an error, because validating
  mid-anneal is legitimate; the trainer may silence it during validation with
  ``warnings.catch_warnings()``. Tracing/export/compilation skip the check.
* Attention normalisation keeps a rolling, non-trainable record of the per-transform usage of the
  last ``attention_history`` training forwards; once it is full, training-mode attention is
  divided by the relative usage and renormalised, which discourages collapse onto a few
  transforms. Eval mode neither updates nor applies it.

This module needs torch only.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from srkit.errors import ConfigError
from srkit.nets.blocks import LRELU_SLOPE, conv3x3, lrelu, scaled_kaiming_init
from srkit.nets.branches import mark_branch


class SwitchTemperatureWarning(UserWarning):
    """A switch is evaluated at a temperature other than its schedule's final one."""


def switch_temperature(
    step: int,
    start: float,
    final_step: int,
    minimum: float = 1.0,
    min_step: int = 0,
) -> float:
    """The switch temperature at ``step``: linear ``start`` -> 1 by ``final_step``, then 1 ->
    ``minimum`` by ``min_step`` (only when ``minimum < 1`` and ``min_step > final_step``).

    Continuous everywhere and monotone non-increasing for ``start >= 1 >= minimum``.
    """
    if step < final_step:
        return start + (1.0 - start) * step / final_step
    if minimum >= 1.0 or min_step <= final_step:
        return 1.0
    if step >= min_step:
        return minimum
    return 1.0 + (minimum - 1.0) * (step - final_step) / (min_step - final_step)


def final_switch_temperature(minimum: float = 1.0, min_step: int = 0, final_step: int = 0) -> float:
    """The temperature a finished schedule ends at (and inference should run at)."""
    return minimum if minimum < 1.0 and min_step > final_step else 1.0


def _group_count(channels: int, preferred: int = 8) -> int:
    """The largest divisor of ``channels`` that is at most ``preferred`` (GroupNorm groups)."""
    for groups in range(min(preferred, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class ConvGnSilu(nn.Module):
    """3x3 conv (optionally stride 2) + GroupNorm + SiLU: the multiplexer's unit.

    With ``norm=False`` it is conv + LeakyReLU 0.2 with Kaiming-normal weights instead, which
    keeps the signal's scale from layer to layer without statistics of the data. (SiLU halves
    small inputs; through the dozen convs of a u-net without normalisation almost nothing was
    left: a trained switched SPSR's gradient multiplexer had logits of std 0.09, i.e. uniform
    attention. Measured at init on inputs of std 0.26: logits std 0.06 with SiLU and PyTorch's
    default init, 0.20 with this.)
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, norm: bool = True
    ) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels, stride=stride)
        if norm:
            self.norm: nn.Module = nn.GroupNorm(_group_count(out_channels), out_channels)
        else:
            self.norm = nn.Identity()
            if not self.conv.weight.is_meta:
                nn.init.kaiming_normal_(self.conv.weight, a=LRELU_SLOPE)
                nn.init.zeros_(self.conv.bias)
        self.activation = F.silu if norm else lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class _Reduction(nn.Module):
    """Halve the resolution, double the filters: stride-2 ConvGnSilu, then ConvGnSilu."""

    def __init__(self, filters: int, norm: bool = True) -> None:
        super().__init__()
        self.reduce = ConvGnSilu(filters, 2 * filters, stride=2, norm=norm)
        self.process = ConvGnSilu(2 * filters, 2 * filters, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.process(self.reduce(x))


class _Expansion(nn.Module):
    """Nearest x2 to the skip's size, conv to half the filters, fuse with the skip, process."""

    def __init__(self, filters: int, norm: bool = True) -> None:
        super().__init__()
        self.expand = ConvGnSilu(filters, filters // 2, norm=norm)
        self.fuse = ConvGnSilu(filters, filters // 2, norm=norm)
        self.process = ConvGnSilu(filters // 2, filters // 2, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # Interpolating to the skip's size (not x2) handles odd sizes: 13 -> 7 -> 13.
        x = self.expand(F.interpolate(x, size=skip.shape[-2:], mode="nearest"))
        return self.process(self.fuse(torch.cat((x, skip), 1)))


class SwitchMultiplexer(nn.Module):
    """u-net-like network computing the switch logits (N, n, h, w) from features (N, C, h, w).

    conv C->filters; ``reductions`` stride-2 stages doubling the filters (each stage's input is
    kept as a skip); ``processing_layers`` convs at the bottom; as many expansion stages fusing
    the skips; a taper filters -> filters/2 -> filters/4 -> n whose last conv is plain (no norm,
    no activation: the logits go to the softmax untouched). GroupNorm + SiLU everywhere else
    (with ``norm=False``: LeakyReLU and variance-preserving init, see :class:`ConvGnSilu`). With ``context_channels`` a linear map of a per-image
    context vector is added to the first stage's output.
    """

    def __init__(
        self,
        in_channels: int,
        transforms: int,
        filters: int = 32,
        reductions: int = 2,
        processing_layers: int = 1,
        norm: bool = True,
        context_channels: int = 0,
    ) -> None:
        super().__init__()
        if filters < 4 or filters % 4:
            raise ConfigError(
                f"switch multiplexer: mux_filters must be a multiple of 4, got {filters}"
            )
        if reductions < 0 or processing_layers < 0:
            raise ConfigError("switch multiplexer: reductions and processing_layers must be >= 0")
        self.conv_in = ConvGnSilu(in_channels, filters, norm=norm)
        self.context = _context_map(context_channels, filters)
        self.down = nn.ModuleList(_Reduction(filters * 2**i, norm) for i in range(reductions))
        bottom = filters * 2**reductions
        self.bottom = nn.Sequential(
            *(ConvGnSilu(bottom, bottom, norm=norm) for _ in range(processing_layers))
        )
        self.up = nn.ModuleList(
            _Expansion(filters * 2 ** (i + 1), norm) for i in reversed(range(reductions))
        )
        self.taper = nn.Sequential(
            ConvGnSilu(filters, filters // 2, norm=norm),
            ConvGnSilu(filters // 2, filters // 4, norm=norm),
        )
        self.logits = conv3x3(filters // 4, transforms)
        if not norm and not self.logits.weight.is_meta:
            nn.init.kaiming_normal_(self.logits.weight, nonlinearity="linear")
            nn.init.zeros_(self.logits.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = _add_context(self.conv_in(x), self.context, context)
        skips = []
        for stage in self.down:
            skips.append(x)
            x = stage(x)
        x = self.bottom(x)
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.logits(self.taper(x))


def _context_map(context_channels: int, channels: int) -> nn.Linear | None:
    """The linear map that adds a per-image context vector to ``channels`` feature maps."""
    if context_channels < 0:
        raise ConfigError(f"switch: context_channels must be >= 0, got {context_channels}")
    return nn.Linear(context_channels, channels) if context_channels else None


def _add_context(
    x: torch.Tensor, mapping: nn.Linear | None, context: torch.Tensor | None
) -> torch.Tensor:
    if mapping is None:
        return x
    if context is None:
        raise ValueError("this switch was built with context_channels and needs a context")
    return x + mapping(context)[:, :, None, None]


class TransformBlock(nn.Module):
    """One switch alternative: ``layers`` 3x3 convs C -> 1.5C -> ... -> out, LReLU between.

    Every conv has a bias (the last one included); weights are Kaiming x ``init_scale``. With
    ``context_channels`` a linear map of a per-image context vector is added after the first conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layers: int,
        init_scale: float,
        context_channels: int = 0,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ConfigError(f"switch: trans_layers must be at least 1, got {layers}")
        mid = (3 * in_channels) // 2
        widths = [in_channels] + [mid] * (layers - 1) + [out_channels]
        self.convs = nn.ModuleList(conv3x3(a, b) for a, b in itertools.pairwise(widths))
        self.context = _context_map(context_channels, widths[1])
        scaled_kaiming_init(self, init_scale)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = _add_context(conv(x), self.context, context) if i == 0 else conv(lrelu(x))
        return x


def _exporting() -> bool:
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


class Switch(nn.Module):
    """n transforms blended per pixel by a softmax attention; ``forward(x) -> (out, attention)``.

    ``out`` is (N, out_channels, h, w); ``attention`` is (N, h, w, n), summing to 1 over n. See
    the module docstring for the computation. Hooks for the trainer: ``set_training_step(step)``
    (temperature schedule) and ``training_stats()`` (keys ``{stats_prefix}/temperature``,
    ``/specificity`` and ``/usage{i}``; the owner sets ``stats_prefix``, e.g. ``switch0``).

    Args:
        nf: Channels of the input features.
        transforms: Number n of alternative transforms.
        trans_layers: 3x3 convs per transform (nf -> 1.5nf -> ... -> out).
        out_channels: Output channels; None = nf (must be nf when residual).
        residual: Add the blended transforms to the input (True) or output them alone (False).
        mux_filters: Filters of the multiplexer's first stage (a multiple of 4).
        reductions: Halving stages of the multiplexer's u-net.
        processing_layers: Convs at the bottom of the multiplexer's u-net.
        temperature: Softmax temperature at step 0.
        temperature_final_step: Step at which the temperature reaches 1.
        temperature_min: Optional temperature below 1 reached later (1 = stay at 1).
        temperature_min_step: Step at which ``temperature_min`` is reached (> temperature_final_step).
        attention_norm: Normalise training attention by the recent per-transform usage.
        attention_history: Training forwards remembered by the attention normalisation.
        noise: Add learned-scale Gaussian noise to the branch input in training.
        transform_init_scale: Kaiming init factor of pre-transform and transforms; None = 0.1 if residual else 1.
        identity_channels: Channels of the residual's ``identity`` input; None = nf.
        mux_channels: Channels of the multiplexer's ``mux_input``; None = nf.
        mux_norm: GroupNorm in the multiplexer (False where it reads image-gradient features).
        context_channels: Length of the per-image context vector joined inside the branches.
    """

    def __init__(
        self,
        nf: int = 64,
        transforms: int = 8,
        trans_layers: int = 3,
        *,
        out_channels: int | None = None,
        residual: bool = True,
        mux_filters: int = 32,
        reductions: int = 2,
        processing_layers: int = 1,
        temperature: float = 10.0,
        temperature_final_step: int = 20000,
        temperature_min: float = 1.0,
        temperature_min_step: int = 0,
        attention_norm: bool = False,
        attention_history: int = 64,
        noise: bool = False,
        transform_init_scale: float | None = None,
        identity_channels: int | None = None,
        mux_channels: int | None = None,
        mux_norm: bool = True,
        context_channels: int = 0,
    ) -> None:
        super().__init__()
        out_channels = nf if out_channels is None else out_channels
        identity_channels = nf if identity_channels is None else identity_channels
        if residual and out_channels != identity_channels:
            raise ConfigError(
                f"switch: a residual switch keeps its width ({identity_channels}), got "
                f"out_channels={out_channels}"
            )
        if transforms < 1:
            raise ConfigError(f"switch: transforms must be at least 1, got {transforms}")
        _check_schedule(temperature, temperature_final_step, temperature_min, temperature_min_step)
        if attention_norm and attention_history < 1:
            raise ConfigError(
                f"switch: attention_history must be at least 1, got {attention_history}"
            )
        init_scale = (
            (0.1 if residual else 1.0) if transform_init_scale is None else transform_init_scale
        )

        self.residual = residual
        self.transform_count = transforms
        self.schedule = (temperature, temperature_final_step, temperature_min, temperature_min_step)
        self.stats_prefix = "switch"

        self.noise_scale = nn.Parameter(torch.full((), 1e-3)) if noise else None
        self.pre_transform = conv3x3(nf, nf)
        scaled_kaiming_init(self.pre_transform, init_scale)
        self.transforms = nn.ModuleList(
            mark_branch(
                TransformBlock(nf, out_channels, trans_layers, init_scale, context_channels)
            )
            for _ in range(transforms)
        )
        self.multiplexer = mark_branch(
            SwitchMultiplexer(
                nf if mux_channels is None else mux_channels,
                transforms,
                mux_filters,
                reductions,
                processing_layers,
                norm=mux_norm,
                context_channels=context_channels,
            )
        )
        self.switch_scale = nn.Parameter(torch.ones(()))
        self.post_conv = conv3x3(out_channels, out_channels)
        scaled_kaiming_init(self.post_conv, 0.1)
        self.post_scale = nn.Parameter(torch.full((), 0.1))

        self.register_buffer(
            "temperature", torch.tensor(float(switch_temperature(0, *self.schedule)))
        )
        self.register_buffer(
            "temperature_final",
            torch.tensor(
                final_switch_temperature(
                    temperature_min, temperature_min_step, temperature_final_step
                )
            ),
        )
        if attention_norm:
            self.register_buffer("usage_history", torch.zeros(attention_history, transforms))
            self.register_buffer("usage_count", torch.zeros((), dtype=torch.long))
        else:
            self.usage_history = None
            self.usage_count = None

        self._eval_check_pending = True
        self._warned_temperature = False
        self._usage_filled = False
        self._last_specificity: torch.Tensor | None = None
        self._last_usage: torch.Tensor | None = None
        self._last_attention: torch.Tensor | None = None
        self.register_load_state_dict_post_hook(_recheck_after_load)

    # -- trainer hooks -------------------------------------------------------------------------

    @torch.no_grad()
    def set_training_step(self, step: int) -> None:
        """Set the temperature from the schedule for training step ``step``."""
        self.temperature.fill_(switch_temperature(step, *self.schedule))

    def training_stats(self) -> dict[str, float]:
        """Temperature, specificity and argmax usage fractions of the last training forward."""
        prefix = self.stats_prefix
        stats = {f"{prefix}/temperature": float(self.temperature)}
        if self._last_specificity is not None and self._last_usage is not None:
            stats[f"{prefix}/specificity"] = float(self._last_specificity)
            for i, fraction in enumerate(self._last_usage.tolist()):
                stats[f"{prefix}/usage{i}"] = float(fraction)
        return stats

    def branch_scales(self) -> list[nn.Parameter]:
        """The scale of the blended transforms: with it at 0 the branches cannot reach ``out``."""
        return [self.switch_scale]

    def train(self, mode: bool = True) -> Switch:
        if not mode:
            self._eval_check_pending = True
        return super().train(mode)

    # -- forward -------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        identity: torch.Tensor | None = None,
        mux_input: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: the transforms' input; ``identity``: what the residual adds to (default
        ``x``); ``mux_input``: what the multiplexer reads (default ``x``); ``context``: the
        (N, context_channels) vector joined inside the branches."""
        if not self.training and self._eval_check_pending and not _exporting():
            self._check_eval_temperature()

        branch_in = x
        if self.noise_scale is not None and self.training:
            branch_in = x + self.noise_scale * torch.randn_like(x)
        features = lrelu(self.pre_transform(branch_in))

        logits = self.multiplexer(x if mux_input is None else mux_input, context)
        attention = torch.softmax(logits / self.temperature, dim=1)
        if self.usage_history is not None and self.training:
            attention = self._normalise_attention(attention)
        if self.training:
            self._record_stats(attention)

        blended = None
        for i, transform in enumerate(self.transforms):
            term = attention[:, i : i + 1] * transform(features, context)
            blended = term if blended is None else blended + term
        out = self.switch_scale * blended
        if self.residual:
            out = (x if identity is None else identity) + out
        out = out + self.post_scale * self.post_conv(out)
        return out, attention.permute(0, 2, 3, 1)

    def _normalise_attention(self, attention: torch.Tensor) -> torch.Tensor:
        """Record this batch's usage; once the history is full, divide by relative usage."""
        with torch.no_grad():
            history = self.usage_history.shape[0]
            self.usage_history[self.usage_count % history] = attention.mean(dim=(0, 2, 3))
            self.usage_count += 1
        if not self._usage_filled:
            # Reading the counter syncs with the device, so only until the history is full.
            self._usage_filled = int(self.usage_count) >= history
            if not self._usage_filled:
                return attention
        # Relative usage 1 = a transform used exactly 1/n of the time.
        relative = (self.usage_history.mean(0) * self.transform_count).clamp_min(1e-3)
        attention = attention / relative.view(1, -1, 1, 1)
        return attention / attention.sum(dim=1, keepdim=True)

    @torch.no_grad()
    def _record_stats(self, attention: torch.Tensor) -> None:
        n = attention.shape[1]
        top = attention.topk(min(2, n), dim=1).values.sum(1)
        self._last_specificity = top.mean()
        counts = torch.bincount(attention.argmax(1).flatten(), minlength=n)
        self._last_usage = counts.float() / counts.sum()
        self._last_attention = attention[:1]  # first image, for training pictures

    def training_pictures(self) -> dict[str, Any]:
        """Attention of the first image of the last training forward as pictures (HWC uint8):
        the winning transform per pixel in colour (legend below) and the winning weight in grey."""
        if self._last_attention is None:
            return {}
        from srkit.nets.attention import attention_pictures

        pictures = attention_pictures(self._last_attention[0].permute(1, 2, 0))
        prefix = self.stats_prefix
        return {
            f"{prefix}_attention": pictures["argmax"],
            f"{prefix}_max_weight": pictures["max_weight"],
        }

    def _check_eval_temperature(self) -> None:
        self._eval_check_pending = False
        current, final = float(self.temperature), float(self.temperature_final)
        if abs(current - final) > 1e-4 * max(1.0, final) and not self._warned_temperature:
            self._warned_temperature = True
            warnings.warn(
                SwitchTemperatureWarning(
                    f"switch evaluated at temperature {current:g}, but its schedule ends at "
                    f"{final:g}: these weights are mid-anneal (fine for validation during "
                    "training; a finished model should be at its final temperature)"
                ),
                stacklevel=2,
            )


def _recheck_after_load(module: Switch, incompatible_keys) -> None:
    module._eval_check_pending = True
    module._warned_temperature = False
    module._usage_filled = False


def check_switch_schedule(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A `temperature_min` below 1 needs a `temperature_min_step` after
    `temperature_final_step`."""
    minimum = arguments.get("temperature_min", 1.0)
    final_step = arguments.get("temperature_final_step", 0)
    min_step = arguments.get("temperature_min_step", 0)
    if minimum < 1.0 and min_step <= final_step:
        return [
            (
                "temperature_min_step",
                f"{min_step} must come after temperature_final_step ({final_step}) when "
                f"temperature_min is below 1 ({minimum})",
            )
        ]
    return []


def _check_schedule(start: float, final_step: int, minimum: float, min_step: int) -> None:
    if start < 1.0:
        raise ConfigError(f"switch: temperature must be >= 1 (it anneals down to 1), got {start}")
    if final_step < 0 or min_step < 0:
        raise ConfigError("switch: temperature_final_step and temperature_min_step must be >= 0")
    if not 0.0 < minimum <= 1.0:
        raise ConfigError(f"switch: temperature_min must be in (0, 1], got {minimum}")
    if minimum < 1.0 and min_step <= final_step:
        raise ConfigError(
            f"switch: temperature_min_step ({min_step}) must come after temperature_final_step "
            f"({final_step}) when temperature_min < 1"
        )
