"""RRDBNet, the ESRGAN generator, with the community's key names and old-layout conversion.

Layout (Wang et al., ESRGAN 2018)::

    conv_first -> body (nb x RRDB) -> conv_body -> + (global skip from conv_first)
    -> per x2: nearest up + conv_up{i} + LReLU -> conv_hr + LReLU -> conv_last

State-dict keys follow the "new" ESRGAN naming used across the ecosystem (BasicSR, Real-ESRGAN,
spandrel): ``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``, ``conv_up2``
(``conv_up3`` for x8), ``conv_hr``, ``conv_last``, so a file saved by srkit loads in the common
model loaders. Two older layouts are converted on load:

* the original ESRGAN layout: ``model.0`` (first conv), ``model.1.sub.N.RDB1.conv1.0``,
  ``model.1.sub.{nb}`` (body conv), ``model.3``/``model.6``/... (upsampling convs), then the
  HR conv and the last conv;
* the BSRGAN/RealSR layout: ``RRDB_trunk.N.RDB1.conv1``, ``trunk_conv``, ``upconv1``, ``HRconv``.

``RRDBNet.load_state_dict`` accepts all three (a load pre-hook converts), and :func:`detect_rrdb`
recognises all three, so ``detect_network`` + ``load_state_dict(strict=True)`` just works.

This module needs torch only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from srkit.errors import ConfigError
from srkit.nets.blocks import RRDB, conv3x3, lrelu, upsample_conv, upsample_stage_count
from srkit.nets.constraints import Positive
from srkit.nets.convert import count_indexed, state_dict_fits, upsample_stages
from srkit.nets.registry import register_network

StateDict = Mapping[str, torch.Tensor]


def _detect_rrdb_kwargs(state_dict: StateDict) -> dict[str, Any] | None:
    """Constructor kwargs from a new-layout RRDBNet state dict (keys and shapes only)."""
    required = (
        "conv_first.weight",
        "body.0.rdb1.conv1.weight",
        "conv_body.weight",
        "conv_hr.weight",
        "conv_last.weight",
    )
    if not all(k in state_dict for k in required):
        return None
    first = state_dict["conv_first.weight"]
    nf, raw_in = int(first.shape[0]), int(first.shape[1])
    gc = int(state_dict["body.0.rdb1.conv1.weight"].shape[0])
    nb = count_indexed(state_dict, "body.")
    out_channels = int(state_dict["conv_last.weight"].shape[0])
    stages = upsample_stages(state_dict)
    kwargs: dict[str, Any] = {"nf": nf, "nb": nb, "gc": gc, "out_channels": out_channels}
    if stages == 2 and raw_in in (4 * out_channels, 16 * out_channels):
        # BasicSR / Real-ESRGAN x2 and x1 models: the input is pixel-unshuffled by 2 or 4.
        kwargs.update(
            in_channels=out_channels,
            scale=2 if raw_in == 4 * out_channels else 1,
            pixel_unshuffle=True,
        )
    else:
        kwargs.update(in_channels=raw_in, scale=2**stages)
    return kwargs


def is_old_esrgan(state_dict: StateDict) -> bool:
    """Whether the keys are the original ESRGAN layout (``model.0``, ``model.1.sub...``)."""
    return "model.0.weight" in state_dict and "model.1.sub.0.RDB1.conv1.0.weight" in state_dict


def is_bsrgan_layout(state_dict: StateDict) -> bool:
    """Whether the keys are the BSRGAN/RealSR layout (``RRDB_trunk``, ``trunk_conv``, ...)."""
    return "conv_first.weight" in state_dict and "RRDB_trunk.0.RDB1.conv1.weight" in state_dict


_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)$")
_OLD_BODY_CONV = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)$")


def convert_old_esrgan(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Rename an original-ESRGAN (``model.N``) or BSRGAN-layout state dict to srkit's keys.

    A dict already in the new layout is returned unchanged (as a new dict). Raises ValueError
    for a ``model.N`` dict whose layout does not fit ESRGAN (e.g. pixel-shuffle upsampling).
    """
    if is_bsrgan_layout(state_dict):
        renames = (
            (r"^RRDB_trunk\.(\d+)\.RDB(\d)\.", r"body.\1.rdb\2."),
            (r"^trunk_conv\.", "conv_body."),
            (r"^upconv(\d)\.", r"conv_up\1."),
            (r"^HRconv\.", "conv_hr."),
        )
        out = {}
        for key, value in state_dict.items():
            for pattern, replacement in renames:
                key = re.sub(pattern, replacement, key)
            out[key] = value
        return out
    if not is_old_esrgan(state_dict):
        return dict(state_dict)

    out: dict[str, torch.Tensor] = {}
    top: dict[int, dict[str, torch.Tensor]] = {}
    body_convs: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if m := _OLD_BLOCK.match(key):
            block, rdb, conv, kind = m.groups()
            out[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
        elif m := _OLD_BODY_CONV.match(key):
            body_convs.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif m := _OLD_TOP.match(key):
            top.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            raise ValueError(f"unexpected key '{key}' in an old-layout ESRGAN state dict")
    if len(body_convs) != 1 or 0 not in top:
        raise ValueError("old-layout ESRGAN state dict without exactly one body conv")
    ((_, body_conv),) = body_convs.items()
    # model.0 is the first conv; after the shortcut block (model.1) come the upsampling convs
    # (each a [Upsample, conv, LReLU] triple) and finally the HR conv and the last conv.
    tail = sorted(i for i in top if i >= 2)
    if len(tail) < 2:
        raise ValueError("old-layout ESRGAN state dict without HR and last convs")
    names = [f"conv_up{i + 1}" for i in range(len(tail) - 2)] + ["conv_hr", "conv_last"]
    expected = [3 * (i + 1) for i in range(len(tail) - 2)]
    expected += [3 * (len(tail) - 2) + 2, 3 * (len(tail) - 2) + 4]
    if tail != expected:
        raise ValueError(
            f"old-layout ESRGAN state dict has convs at model.{tail}, expected {expected} "
            "(only nearest-neighbour upsampling is supported)"
        )
    for name, params in [("conv_first", top[0]), ("conv_body", body_conv)] + [
        (name, top[i]) for name, i in zip(names, tail, strict=True)
    ]:
        for kind, value in params.items():
            out[f"{name}.{kind}"] = value
    return out


def to_old_esrgan(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Rename a new-layout RRDBNet state dict to the original ESRGAN ``model.N`` keys."""
    nb = count_indexed(state_dict, "body.")
    stages = upsample_stages(state_dict)
    top = {"conv_first": 0, "conv_hr": 3 * stages + 2, "conv_last": 3 * stages + 4}
    top.update({f"conv_up{i + 1}": 3 * (i + 1) for i in range(stages)})
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name, kind = key.rsplit(".", 1)
        if m := re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)$", name):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{kind}"] = value
        elif name == "conv_body":
            out[f"model.1.sub.{nb}.{kind}"] = value
        elif name in top:
            out[f"model.{top[name]}.{kind}"] = value
        else:
            raise ValueError(f"unexpected key '{key}' in an RRDBNet state dict")
    return out


def detect_rrdb(state_dict: StateDict) -> dict[str, Any] | None:
    """RRDBNet kwargs if ``state_dict`` is an RRDBNet in the new, old or BSRGAN layout."""
    try:
        state_dict = convert_old_esrgan(state_dict)
    except ValueError:
        return None
    kwargs = _detect_rrdb_kwargs(state_dict)
    if kwargs is None or not state_dict_fits(RRDBNet, kwargs, state_dict):
        return None
    return kwargs


def check_rrdb(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`pixel_unshuffle` needs scale 1 or 2."""
    if arguments["pixel_unshuffle"] and arguments["scale"] not in (1, 2):
        return [("pixel_unshuffle", f"true needs scale 1 or 2, not {arguments['scale']}")]
    return []


@register_network("rrdb", role="generator", detect=detect_rrdb, check=check_rrdb)
class RRDBNet(nn.Module):
    """ESRGAN's RRDB generator: 16,697,987 parameters at nf=64, nb=23, gc=32, x4.

    Keys use the ecosystem's "new" ESRGAN names; ``load_state_dict`` also accepts the original
    ESRGAN (``model.N``) and BSRGAN layouts and converts them.

    Args:
        scale: Upscaling factor: 1, 2, 4 or 8 (one nearest x2 + conv stage per factor of two).
        in_channels: Channels of the input image.
        out_channels: Channels of the output image.
        nf: Feature width of the trunk.
        nb: Number of RRDB blocks in the trunk.
        gc: Growth channels of each residual dense block.
        pixel_unshuffle: Scale 1 or 2 only: unshuffle the input by 4/scale and keep two x2 stages (the BasicSR / Real-ESRGAN x2 layout).
    """

    def __init__(
        self,
        *,
        scale: Literal[1, 2, 4, 8] = 4,
        in_channels: Annotated[int, Positive] = 3,
        out_channels: Annotated[int, Positive] = 3,
        nf: Annotated[int, Positive] = 64,
        nb: Annotated[int, Positive] = 23,
        gc: Annotated[int, Positive] = 32,
        pixel_unshuffle: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        if pixel_unshuffle:
            if scale not in (1, 2):
                raise ConfigError(f"rrdb: pixel_unshuffle needs scale 1 or 2, got scale {scale}")
            self.unshuffle_factor = 4 // scale
            stages = 2
        else:
            self.unshuffle_factor = 1
            stages = upsample_stage_count(scale, "rrdb")
        self.upsample_stages = stages
        self.conv_first = conv3x3(in_channels * self.unshuffle_factor**2, nf)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = conv3x3(nf, nf)
        for i in range(stages):
            setattr(self, f"conv_up{i + 1}", conv3x3(nf, nf))
        self.conv_hr = conv3x3(nf, nf)
        self.conv_last = conv3x3(nf, out_channels)
        self.register_load_state_dict_pre_hook(_convert_on_load)

    @staticmethod
    def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
        """Old ESRGAN / BSRGAN keys renamed to this network's (new-layout dicts unchanged)."""
        return convert_old_esrgan(state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.unshuffle_factor > 1:
            factor = self.unshuffle_factor
            # Pad to a multiple of the factor (always, so traced/exported graphs pad too).
            pad_h, pad_w = (-height) % factor, (-width) % factor
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
            x = F.pixel_unshuffle(x, factor)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.upsample_stages):
            feat = upsample_conv(feat, getattr(self, f"conv_up{i + 1}"))
        out = self.conv_last(lrelu(self.conv_hr(feat)))
        if self.unshuffle_factor > 1:
            out = out[..., : height * self.scale, : width * self.scale]
        return out


def _convert_on_load(module, state_dict, prefix, *args) -> None:
    """Load pre-hook: rename old-layout keys under ``prefix`` in place (new keys untouched)."""
    own = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not (is_old_esrgan(own) or is_bsrgan_layout(own)):
        return
    converted = convert_old_esrgan(own)
    for key in own:
        del state_dict[prefix + key]
    for key, value in converted.items():
        state_dict[prefix + key] = value
