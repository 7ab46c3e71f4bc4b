"""Switched SPSR and SPSR3: SPSR's two paths built from switches, the seed's last generators.

Switched SPSR (``spsr_switched``) keeps SPSR's plan (a feature path, a gradient path that predicts
the HR gradient map, and a join) but builds each part from residual switches
(:class:`srkit.nets.switch.Switch`: several transforms mixed per pixel by a u-net multiplexer's
softmax attention). Everything runs at LR resolution until the upsamplers::

    feature   conv_first -> feature_switches.0 (= f1) -> feature_switches.1 -> feature_conv = fea
    gradient  grad(LR) -> grad_conv_first = g0
              -> grad_switch(g0; its multiplexer reads cat(g0, f1), without GroupNorm)
              -> grad_conv = g
              -> grad_upsampler -> grad_conv_hr + LReLU -> grad_conv_out (1x1) = grad_branch
    join      join_switch(transforms read cat(g, fea); identity and multiplexer read fea)
              -> per x2: nearest up + conv_up{i} + LReLU -> conv_hr + LReLU -> conv_last = sr

It returns ``{"sr", "grad_branch", "attention"}``, the attention maps in the order feature 0,
feature 1, gradient, join (each (N, h, w, n); the gradient switch has ``grad_transforms``).

SPSR3 (``spsr3``) is switched SPSR that also sees the whole image: ``forward(lr, ref,
ref_center)`` with ``ref`` (N, C + 1, S, S) the full image resized to ``ref_size`` plus a last
channel marking where ``lr`` lies in it, and ``ref_center`` (N, 2) the patch centre as (x, y) in
[-1, 1] (``grid_sample``'s convention, ``align_corners=False``). A small encoder turns ``ref`` into
a map; the map read (bilinearly) at the patch centre, next to its global mean, is one context
vector per image. It joins the network *only inside branches*: a linear map of it is added after
the first conv of every transform and of every multiplexer, and every switch's identity is the
clean mainline tensor. So with every ``switch_scale`` at zero the output does not depend on the
reference at all (``tests/test_design_lessons.py``). The reference is built by
:mod:`srkit.data.reference` (the data pipeline for training, inference for whole images and
tiles), never by the network; the network declares what it needs with ``extra_inputs`` and
``reference_size``.

Following the seed's lessons: every conv has a bias; no normalisation layer touches a path fed by
image gradients (the gradient switch's multiplexer never has one); the reference stays off the
mainline. By default no multiplexer has GroupNorm (``mux_norm: false``; the seed's had it): a
per-image statistic makes a pixel's output depend on the whole input, so tiles normalised with
their own statistics choose other transforms than the whole image does. A trained SPSR3 with
GroupNorm multiplexers differed by up to 42/255 between tiled and untiled upscaling; see
``benchmarks/RESULTS.md``, "Switched SPSR and SPSR3".

SPSR3's state dict is switched SPSR's plus the encoder and the context maps, with the same shapes,
so SPSR3 can start from a switched SPSR checkpoint (``init_strict: false``).

This module needs torch only.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from torch import nn

from srkit.errors import ConfigError
from srkit.nets.blocks import (
    NearestUpsampler,
    conv1x1,
    conv3x3,
    lrelu,
    upsample_conv,
    upsample_stage_count,
)
from srkit.nets.constraints import AtLeast, MultipleOf, NonNegative, Positive
from srkit.nets.convert import count_indexed, state_dict_fits, upsample_stages
from srkit.nets.gradient import ImageGradient
from srkit.nets.registry import register_network
from srkit.nets.switch import Switch

#: Batch tensors SPSR3 takes besides the LR image (``forward(lr, ref=..., ref_center=...)``).
REFERENCE_INPUTS = ("ref", "ref_center")


class _SwitchedSPSRBase(nn.Module):
    """The switched SPSR layout; ``context_channels > 0`` adds SPSR3's context joins."""

    def __init__(
        self,
        *,
        scale: int,
        in_channels: int,
        out_channels: int,
        nf: int,
        transforms: int,
        grad_transforms: int,
        trans_layers: int,
        mux_filters: int,
        reductions: int,
        processing_layers: int,
        mux_norm: bool,
        temperature: float,
        temperature_final_step: int,
        attention_norm: bool,
        attention_history: int,
        noise: bool,
        context_channels: int,
        name: str,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.upsample_stages = upsample_stage_count(scale, name)
        # Tiles must start on the multiplexers' stride-2 grid (srkit.infer.tiling).
        self.input_alignment = 2**reductions
        self.gradient = ImageGradient()

        def switch(width: int, count: int, prefix: str, **options: Any) -> Switch:
            options.setdefault("mux_norm", mux_norm)
            made = Switch(
                width,
                count,
                trans_layers,
                mux_filters=mux_filters,
                reductions=reductions,
                processing_layers=processing_layers,
                temperature=temperature,
                temperature_final_step=temperature_final_step,
                attention_norm=attention_norm,
                attention_history=attention_history,
                noise=noise,
                context_channels=context_channels,
                **options,
            )
            made.stats_prefix = prefix
            return made

        # Feature path.
        self.conv_first = conv3x3(in_channels, nf)
        self.feature_switches = nn.ModuleList(
            switch(nf, transforms, f"feature_switch{i}") for i in range(2)
        )
        self.feature_conv = conv3x3(nf, nf)

        # Gradient path: its multiplexer reads image-gradient features, so no GroupNorm there.
        self.grad_conv_first = conv3x3(in_channels, nf)
        self.grad_switch = switch(
            nf, grad_transforms, "grad_switch", mux_channels=2 * nf, mux_norm=False
        )
        self.grad_conv = conv3x3(nf, nf)
        self.grad_upsampler = NearestUpsampler(nf, scale)
        self.grad_conv_hr = conv3x3(nf, nf)
        self.grad_conv_out = conv1x1(nf, out_channels)

        # Join: transforms mix cat(gradient, feature); the feature path is the mainline.
        self.join_switch = switch(
            2 * nf,
            transforms,
            "join_switch",
            out_channels=nf,
            identity_channels=nf,
            mux_channels=nf,
        )
        for i in range(self.upsample_stages):
            setattr(self, f"conv_up{i + 1}", conv3x3(nf, nf))
        self.conv_hr = conv3x3(nf, nf)
        self.conv_last = conv3x3(nf, out_channels)

    def training_stats(self) -> dict[str, float]:
        """The (shared) switch temperature; per-switch statistics come from the switches."""
        return {"temperature": float(self.join_switch.temperature)}

    def _forward(self, x: torch.Tensor, context: torch.Tensor | None) -> dict[str, Any]:
        grad_lr = self.gradient(x)

        f1, a_f1 = self.feature_switches[0](self.conv_first(x), context=context)
        f2, a_f2 = self.feature_switches[1](f1, context=context)
        fea = self.feature_conv(f2)

        g0 = self.grad_conv_first(grad_lr)
        g, a_grad = self.grad_switch(g0, mux_input=torch.cat((g0, f1), 1), context=context)
        g = self.grad_conv(g)
        branch = self.grad_upsampler(g)
        grad_branch = self.grad_conv_out(lrelu(self.grad_conv_hr(branch)))

        joined, a_join = self.join_switch(
            torch.cat((g, fea), 1), identity=fea, mux_input=fea, context=context
        )
        for i in range(self.upsample_stages):
            joined = upsample_conv(joined, getattr(self, f"conv_up{i + 1}"))
        sr = self.conv_last(lrelu(self.conv_hr(joined)))
        return {"sr": sr, "grad_branch": grad_branch, "attention": [a_f1, a_f2, a_grad, a_join]}


def _switched_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The switched SPSR constructor arguments among a constructor's ``locals()`` (SPSR3's
    constructor takes them all, and its own)."""
    names = inspect.signature(SwitchedSPSRNet.__init__).parameters
    return {name: arguments[name] for name in names if name != "self"}


def _detect_switched(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Switched SPSR kwargs shared by both generators (keys and shapes only), else None."""
    required = (
        "conv_first.weight",
        "feature_switches.0.pre_transform.weight",
        "feature_switches.0.multiplexer.conv_in.conv.weight",
        "feature_switches.0.transforms.0.convs.0.weight",
        "grad_switch.pre_transform.weight",
        "join_switch.pre_transform.weight",
        "grad_conv_out.weight",
        "conv_last.weight",
    )
    if not all(k in state_dict for k in required):
        return None
    first = state_dict["conv_first.weight"]
    stages = upsample_stages(state_dict)
    switch = "feature_switches.0."
    kwargs: dict[str, Any] = {
        "scale": 2**stages,
        "in_channels": int(first.shape[1]),
        "out_channels": int(state_dict["conv_last.weight"].shape[0]),
        "nf": int(first.shape[0]),
        "transforms": count_indexed(state_dict, switch + "transforms."),
        "grad_transforms": count_indexed(state_dict, "grad_switch.transforms."),
        "trans_layers": count_indexed(state_dict, switch + "transforms.0.convs."),
        "mux_filters": int(state_dict[switch + "multiplexer.conv_in.conv.weight"].shape[0]),
        "reductions": count_indexed(state_dict, switch + "multiplexer.down."),
        "processing_layers": count_indexed(state_dict, switch + "multiplexer.bottom."),
        "mux_norm": switch + "multiplexer.conv_in.norm.weight" in state_dict,
        "attention_norm": switch + "usage_history" in state_dict,
        "noise": switch + "noise_scale" in state_dict,
    }
    if kwargs["attention_norm"]:
        kwargs["attention_history"] = int(state_dict[switch + "usage_history"].shape[0])
    return kwargs


def detect_spsr_switched(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """SwitchedSPSRNet kwargs if ``state_dict`` is one, else None.

    The temperature schedule is not in the weights and keeps its defaults; the current and final
    temperatures are buffers and load with the weights.
    """
    kwargs = _detect_switched(state_dict)
    if kwargs is None:
        return None
    return kwargs if state_dict_fits(SwitchedSPSRNet, kwargs, state_dict) else None


@register_network("spsr_switched", role="generator", detect=detect_spsr_switched)
class SwitchedSPSRNet(_SwitchedSPSRBase):
    """Switched SPSR: SPSR's feature and gradient paths and their join built from switches.

    At nf 64, 8 transforms (4 in the gradient switch), 3 layers per transform, mux_filters 32,
    2 reductions, 1 processing layer, x4 it has 12,632,874 parameters (asserted in the tests):

    * each feature switch 2,304,162: 8 transforms of 193,792 (64 -> 96 -> 96 -> 64 convs), a
      multiplexer of 679,968, pre- and post-convs of 36,928 each, two scales;
    * the gradient switch 1,547,134: 4 transforms, a multiplexer of 698,108 (it reads 128
      channels, cat(gradient features, feature switch 0); no GroupNorm), pre/post convs;
    * the join switch 6,176,482: 8 transforms of 664,000 (128 -> 192 -> 192 -> 64 convs), a
      147,584 pre-conv on the 128 concatenated channels, a multiplexer of 679,968, a post-conv;
    * the plain convs 300,934 (first convs, the gradient path's conv, upsamplers and heads).

    The seed's switched SPSR came to about 112 M because of its multiplexers: 64 filters, 3
    reductions and 2 processing layers (13.3 M each here; that sizing,
    ``mux_filters=64, reductions=3, processing_layers=2``, gives 63,129,194), the gradient one
    at twice the filters (about 4 x that again). srkit's default multiplexer is SRG2's.

    Args:
        scale: Upscaling factor: 1, 2, 4 or 8 (one nearest x2 + conv stage per factor of two).
        in_channels: Channels of the input image.
        out_channels: Channels of the output image and of the predicted gradient map.
        nf: Feature width of both paths (the join's transforms read 2nf).
        transforms: Alternative transforms of the feature and join switches.
        grad_transforms: Alternative transforms of the gradient switch.
        trans_layers: 3x3 convs per transform (C -> 1.5C -> ... -> nf).
        mux_filters: Filters of the first stage of each multiplexer (a multiple of 4).
        reductions: Halving stages of each multiplexer's u-net (its depth).
        processing_layers: Convs at the bottom of each multiplexer's u-net.
        mux_norm: GroupNorm in the feature and join multiplexers (never in the gradient one).
            Off by default: GroupNorm's per-image statistics make the output depend on how much
            of the image the network sees, so tiled upscaling would not match untiled.
        temperature: Switch softmax temperature at step 0.
        temperature_final_step: Step at which the temperature reaches 1.
        attention_norm: Normalise training attention by each switch's recent per-transform usage.
        attention_history: Training forwards remembered by the attention normalisation.
        noise: Add learned-scale Gaussian noise to each switch's branch input in training.
    """

    def __init__(
        self,
        *,
        scale: Literal[1, 2, 4, 8] = 4,
        in_channels: Annotated[int, Positive] = 3,
        out_channels: Annotated[int, Positive] = 3,
        nf: Annotated[int, Positive] = 64,
        transforms: Annotated[int, Positive] = 8,
        grad_transforms: Annotated[int, Positive] = 4,
        trans_layers: Annotated[int, Positive] = 3,
        mux_filters: Annotated[int, AtLeast(4), MultipleOf(4)] = 32,
        reductions: Annotated[int, NonNegative] = 2,
        processing_layers: Annotated[int, NonNegative] = 1,
        mux_norm: bool = False,
        temperature: Annotated[float, AtLeast(1)] = 10.0,
        temperature_final_step: Annotated[int, NonNegative] = 20000,
        attention_norm: bool = True,
        attention_history: Annotated[int, Positive] = 64,
        noise: bool = False,
    ) -> None:
        super().__init__(**_switched_arguments(locals()), context_channels=0, name="spsr_switched")

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return self._forward(x, None)


class ReferenceEncoder(nn.Module):
    """(N, C + 1, S, S) reference + (N, 2) centre -> (N, 2 * nf) context vector.

    conv C + 1 -> nf + LReLU, ``reductions`` stride-2 convs + LReLU, a last conv; the resulting map
    is read bilinearly at the centre (border values beyond the edge) and its global mean is
    appended, so the vector says both what is around the patch and what the whole image is.
    The bilinear read is written as two separable weightings (no ``grid_sample``), which is
    deterministic on every device and exports to ONNX.
    """

    def __init__(self, channels: int, nf: int, reductions: int) -> None:
        super().__init__()
        if reductions < 0:
            raise ConfigError(f"spsr3: ref_reductions must be >= 0, got {reductions}")
        self.conv_first = conv3x3(channels, nf)
        self.down = nn.ModuleList(conv3x3(nf, nf, stride=2) for _ in range(reductions))
        self.conv_last = conv3x3(nf, nf)

    def forward(self, ref: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        x = lrelu(self.conv_first(ref))
        for conv in self.down:
            x = lrelu(conv(x))
        x = self.conv_last(x)
        at_centre = torch.einsum(
            "nchw,nh,nw->nc",
            x,
            _tent_weights(center[:, 1], x.shape[-2]).to(x.dtype),
            _tent_weights(center[:, 0], x.shape[-1]).to(x.dtype),
        )
        return torch.cat((at_centre, x.mean(dim=(2, 3))), 1)


def _tent_weights(position: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) bilinear weights of the points ``position`` (N,) in [-1, 1] along one axis
    (``align_corners=False``: -1 and 1 are the outer edges of the first and last pixels)."""
    pixel = ((position.float() + 1) * size - 1) / 2
    pixel = pixel.clamp(0, size - 1)
    grid = torch.arange(size, device=position.device, dtype=torch.float32)
    return (1 - (pixel[:, None] - grid[None, :]).abs()).clamp_min(0)


def detect_spsr3(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """SPSR3Net kwargs if ``state_dict`` is one, else None (``ref_size`` is a buffer)."""
    if "reference_encoder.conv_first.weight" not in state_dict or "ref_size" not in state_dict:
        return None
    kwargs = _detect_switched(state_dict)
    if kwargs is None:
        return None
    kwargs["ref_size"] = int(state_dict["ref_size"])
    kwargs["ref_nf"] = int(state_dict["reference_encoder.conv_first.weight"].shape[0])
    kwargs["ref_reductions"] = count_indexed(state_dict, "reference_encoder.down.")
    return kwargs if state_dict_fits(SPSR3Net, kwargs, state_dict) else None


def check_spsr3(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The reference must survive the encoder's halvings: ``ref_size >= 2**ref_reductions``."""
    size, reductions = arguments.get("ref_size", 64), arguments.get("ref_reductions", 3)
    if size < 2**reductions:
        return [("ref_size", f"{size} is smaller than 2**ref_reductions = {2**reductions}")]
    return []


@register_network("spsr3", role="generator", detect=detect_spsr3, check=check_spsr3)
class SPSR3Net(_SwitchedSPSRBase):
    """SPSR3: switched SPSR that also sees the whole image, through its branches only.

    ``forward(lr, ref, ref_center)``; ``ref`` and ``ref_center`` come from
    :mod:`srkit.data.reference` (see the module docstring). At the switched SPSR defaults with
    ref_nf 64 and 3 ref_reductions, x4, it has 13,245,290 parameters: switched SPSR's
    12,632,874, the reference encoder's 150,080 (five 3x3 convs, 4 -> 64 and 64 -> 64) and
    462,336 in the context maps (a 128 -> C linear map in each of the 28 transforms and 4
    multiplexers, C the width of that first conv: 96, 192 or 32).

    Args:
        scale: Upscaling factor: 1, 2, 4 or 8 (one nearest x2 + conv stage per factor of two).
        in_channels: Channels of the input image.
        out_channels: Channels of the output image and of the predicted gradient map.
        nf: Feature width of both paths (the join's transforms read 2nf).
        transforms: Alternative transforms of the feature and join switches.
        grad_transforms: Alternative transforms of the gradient switch.
        trans_layers: 3x3 convs per transform (C -> 1.5C -> ... -> nf).
        mux_filters: Filters of the first stage of each multiplexer (a multiple of 4).
        reductions: Halving stages of each multiplexer's u-net (its depth).
        processing_layers: Convs at the bottom of each multiplexer's u-net.
        mux_norm: GroupNorm in the feature and join multiplexers (never in the gradient one).
            Off by default: GroupNorm's per-image statistics make the output depend on how much
            of the image the network sees, so tiled upscaling would not match untiled.
        temperature: Switch softmax temperature at step 0.
        temperature_final_step: Step at which the temperature reaches 1.
        attention_norm: Normalise training attention by each switch's recent per-transform usage.
        attention_history: Training forwards remembered by the attention normalisation.
        noise: Add learned-scale Gaussian noise to each switch's branch input in training.
        ref_size: Side of the square whole-image reference (the image is resized to it).
        ref_nf: Width of the reference encoder (the context vector has 2 x ref_nf values).
        ref_reductions: Stride-2 stages of the reference encoder.
    """

    extra_inputs = REFERENCE_INPUTS

    def __init__(
        self,
        *,
        scale: Literal[1, 2, 4, 8] = 4,
        in_channels: Annotated[int, Positive] = 3,
        out_channels: Annotated[int, Positive] = 3,
        nf: Annotated[int, Positive] = 64,
        transforms: Annotated[int, Positive] = 8,
        grad_transforms: Annotated[int, Positive] = 4,
        trans_layers: Annotated[int, Positive] = 3,
        mux_filters: Annotated[int, AtLeast(4), MultipleOf(4)] = 32,
        reductions: Annotated[int, NonNegative] = 2,
        processing_layers: Annotated[int, NonNegative] = 1,
        mux_norm: bool = False,
        temperature: Annotated[float, AtLeast(1)] = 10.0,
        temperature_final_step: Annotated[int, NonNegative] = 20000,
        attention_norm: bool = True,
        attention_history: Annotated[int, Positive] = 64,
        noise: bool = False,
        ref_size: Annotated[int, Positive] = 64,
        ref_nf: Annotated[int, Positive] = 64,
        ref_reductions: Annotated[int, NonNegative] = 3,
    ) -> None:
        if ref_size < 2**ref_reductions:
            raise ConfigError(
                f"spsr3: ref_size {ref_size} is smaller than the encoder's 2**ref_reductions "
                f"= {2**ref_reductions}"
            )
        super().__init__(**_switched_arguments(locals()), context_channels=2 * ref_nf, name="spsr3")
        self.reference_encoder = ReferenceEncoder(in_channels + 1, ref_nf, ref_reductions)
        # A buffer, so that a bare weights file says which reference size the model wants.
        self.register_buffer("ref_size", torch.tensor(ref_size))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``reference``: the encoder and the context maps, the parts a switched SPSR
        checkpoint lacks (``train_only`` can let them adapt first); ``switched``: the rest."""
        groups: dict[str, list[nn.Parameter]] = {"reference": [], "switched": []}
        for name, parameter in self.named_parameters():
            new = name.startswith("reference_encoder.") or ".context." in name
            groups["reference" if new else "switched"].append(parameter)
        return groups

    @property
    def reference_size(self) -> int:
        """Side of the reference the data pipeline and inference must build."""
        return int(self.ref_size)

    def forward(
        self, x: torch.Tensor, ref: torch.Tensor, ref_center: torch.Tensor
    ) -> dict[str, Any]:
        return self._forward(x, self.reference_encoder(ref, ref_center))
