"""SRG2, the switched residual generator of the seed.

Layout::

    conv_first (in -> nf) -> depth x Switch (residual, at LR resolution)
    -> per x2: nearest up + conv_up{i} + LReLU -> conv_hr + LReLU -> conv_last (nf -> out)

All switches share one flat set of hyper-parameters (the seed: "one set of configuration
variables instead of a list"). ``forward`` returns ``{"sr": (N, out, h*s, w*s), "attention":
[per switch (N, h, w, transforms)]}``. Switch ``i`` reports its statistics under ``switch{i}/``
and the network adds one ``temperature`` entry (see :class:`srkit.nets.switch.Switch`).

Because a fresh switch is almost the identity, a freshly built SRG2 behaves like the plain
conv/upsampling trunk around it, as the seed's design rules ask.

This module needs torch only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from torch import nn

from srkit.nets.blocks import conv3x3, lrelu, upsample_conv, upsample_stage_count
from srkit.nets.constraints import Above, AtLeast, AtMost, MultipleOf, NonNegative, Positive
from srkit.nets.convert import count_indexed, state_dict_fits, upsample_stages
from srkit.nets.registry import register_network
from srkit.nets.switch import Switch, check_switch_schedule


def detect_srg2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """SRG2Net kwargs recovered from keys and shapes, else None.

    The temperature schedule cannot be recovered (it is not in the weights) and keeps its
    defaults; the current and final temperatures themselves are buffers and load with the
    weights, so inference runs at the temperature the model was saved at.
    """
    required = (
        "conv_first.weight",
        "switches.0.pre_transform.weight",
        "switches.0.multiplexer.conv_in.conv.weight",
        "switches.0.transforms.0.convs.0.weight",
        "conv_hr.weight",
        "conv_last.weight",
    )
    if not all(k in state_dict for k in required):
        return None
    first = state_dict["conv_first.weight"]
    stages = upsample_stages(state_dict)
    kwargs: dict[str, Any] = {
        "scale": 2**stages,
        "in_channels": int(first.shape[1]),
        "out_channels": int(state_dict["conv_last.weight"].shape[0]),
        "nf": int(first.shape[0]),
        "depth": count_indexed(state_dict, "switches."),
        "transforms": count_indexed(state_dict, "switches.0.transforms."),
        "trans_layers": count_indexed(state_dict, "switches.0.transforms.0.convs."),
        "mux_filters": int(state_dict["switches.0.multiplexer.conv_in.conv.weight"].shape[0]),
        "reductions": count_indexed(state_dict, "switches.0.multiplexer.down."),
        "processing_layers": count_indexed(state_dict, "switches.0.multiplexer.bottom."),
        "attention_norm": "switches.0.usage_history" in state_dict,
        "noise": "switches.0.noise_scale" in state_dict,
    }
    if kwargs["attention_norm"]:
        kwargs["attention_history"] = int(state_dict["switches.0.usage_history"].shape[0])
    return kwargs if state_dict_fits(SRG2Net, kwargs, state_dict) else None


@register_network("srg2", role="generator", detect=detect_srg2, check=check_switch_schedule)
class SRG2Net(nn.Module):
    """Switched residual generator: ``depth`` switches of ``transforms`` blended convolutions.

    Args:
        scale: Upscaling factor: 1, 2, 4 or 8 (one nearest x2 + conv stage per factor of two).
        in_channels: Channels of the input image.
        out_channels: Channels of the output image.
        nf: Feature width.
        depth: Number of switches in series at LR resolution.
        transforms: Alternative transforms per switch.
        trans_layers: 3x3 convs per transform (nf -> 1.5nf -> ... -> nf).
        mux_filters: Filters of the first stage of each switch's multiplexer (a multiple of 4).
        reductions: Halving stages of the multiplexer's u-net.
        processing_layers: Convs at the bottom of the multiplexer's u-net.
        temperature: Switch softmax temperature at step 0.
        temperature_final_step: Step at which the temperature reaches 1.
        temperature_min: Optional temperature below 1 reached later (1 = stay at 1).
        temperature_min_step: Step at which ``temperature_min`` is reached (after temperature_final_step).
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
        depth: Annotated[int, Positive] = 4,
        transforms: Annotated[int, Positive] = 8,
        trans_layers: Annotated[int, Positive] = 3,
        mux_filters: Annotated[int, AtLeast(4), MultipleOf(4)] = 32,
        reductions: Annotated[int, NonNegative] = 2,
        processing_layers: Annotated[int, NonNegative] = 1,
        temperature: Annotated[float, AtLeast(1)] = 10.0,
        temperature_final_step: Annotated[int, NonNegative] = 20000,
        temperature_min: Annotated[float, Above(0), AtMost(1)] = 1.0,
        temperature_min_step: Annotated[int, NonNegative] = 0,
        attention_norm: bool = False,
        attention_history: Annotated[int, Positive] = 64,
        noise: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.upsample_stages = upsample_stage_count(scale, "srg2")
        self.conv_first = conv3x3(in_channels, nf)
        self.switches = nn.ModuleList(
            Switch(
                nf,
                transforms,
                trans_layers,
                mux_filters=mux_filters,
                reductions=reductions,
                processing_layers=processing_layers,
                temperature=temperature,
                temperature_final_step=temperature_final_step,
                temperature_min=temperature_min,
                temperature_min_step=temperature_min_step,
                attention_norm=attention_norm,
                attention_history=attention_history,
                noise=noise,
            )
            for _ in range(depth)
        )
        for i, switch in enumerate(self.switches):
            switch.stats_prefix = f"switch{i}"
        for i in range(self.upsample_stages):
            setattr(self, f"conv_up{i + 1}", conv3x3(nf, nf))
        self.conv_hr = conv3x3(nf, nf)
        self.conv_last = conv3x3(nf, out_channels)

    def training_stats(self) -> dict[str, float]:
        """The (shared) switch temperature; per-switch statistics come from the switches."""
        if len(self.switches) == 0:
            return {}
        return {"temperature": float(self.switches[0].temperature)}

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        feat = self.conv_first(x)
        attention = []
        for switch in self.switches:
            feat, weights = switch(feat)
            attention.append(weights)
        for i in range(self.upsample_stages):
            feat = upsample_conv(feat, getattr(self, f"conv_up{i + 1}"))
        sr = self.conv_last(lrelu(self.conv_hr(feat)))
        return {"sr": sr, "attention": attention}
