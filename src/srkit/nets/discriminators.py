"""Discriminators: networks that score images as real (high logit) or generated (low logit).

Four registered discriminators, all taking (N, C, H, W) images with H and W multiples of 32
(not only the 128-px patches the 2020 code was limited to):

- ``vgg``: the ESRGAN/SRGAN VGG-style discriminator, one logit per image (N, 1). Global average
  pooling replaces the fixed 4x4 flatten of the original so any input size works.
- ``pixdisc``: the seed's pixel discriminator, a VGG-style encoder to 1/32 with FPN-like heads
  giving three logit maps at 1/8 resolution, (N, 3, H/8, W/8). Built for ``pixgan``.
- ``unet``: the Real-ESRGAN u-net discriminator (peer baseline), logits at full resolution or
  at 1/2 or 1/4; state dicts of Real-ESRGAN's released discriminator load directly.
- ``switched``: the seed's switched discriminator, the pixel discriminator with a ``Switch``
  (see :mod:`srkit.nets.switch`) as an early encoder stage, so that different image regions
  can be judged by different learned transforms.

Contract used by the trainer and pixgan (see docs/architecture.md): map discriminators expose
``logit_channels`` and ``reduction`` (output (N, logit_channels, H/reduction, W/reduction));
vector discriminators have ``reduction = None`` and return (N, 1).

Normalisation is configurable everywhere (``norm``): ``batch``, ``group`` (GroupNorm with 8
groups, the seed's choice), ``spectral`` (spectral normalisation of the weights, no activation
normalisation) or ``none``. Convolutions followed by batch/group norm carry no bias (the norm's
shift makes it redundant); others do, except where a released checkpoint layout says otherwise.
With ``norm: none`` nothing rescales the activations, so the convs and linear layers get the
Kaiming initialisation for LeakyReLU(0.2) (:func:`init_unnormalised`); PyTorch's default init
shrinks the signal by about 1.7x per layer, and through a pixel discriminator's ~20 layers the
gradients start near 1e-3 and the discriminator never gets going (benchmarks/RESULTS.md,
"Why the pixel discriminators did not learn").
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from srkit.nets.blocks import scaled_kaiming_init
from srkit.nets.constraints import AtLeast, MultipleOf, NonNegative, Positive
from srkit.nets.registry import register_network
from srkit.nets.switch import Switch

Norm = Literal["batch", "group", "spectral", "none"]
NORMS: tuple[str, ...] = ("batch", "group", "spectral", "none")

# GroupNorm group count. The seed used GroupNorm(8, C) in its pixel discriminator; gcd() keeps
# it valid for the small widths used in tests.
GROUPNORM_GROUPS = 8
LRELU_SLOPE = 0.2


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def _check_size(x: torch.Tensor, multiple: int, name: str) -> None:
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"{name} discriminator needs height and width that are multiples of {multiple}, "
            f"got {height}x{width}"
        )


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The activation normalisation for ``norm`` (Identity for ``spectral`` and ``none``)."""
    _check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(GROUPNORM_GROUPS, channels), channels)
    return nn.Identity()


def maybe_spectral(module: nn.Module, norm: str) -> nn.Module:
    """Wrap ``module``'s weight in spectral normalisation when ``norm == "spectral"``."""
    return spectral_norm(module) if norm == "spectral" else module


def init_unnormalised(module: nn.Module, norm: str) -> None:
    """Kaiming-normal init for LeakyReLU(0.2) of each conv/linear in ``module`` if ``norm`` is none.

    Keeps the activations' scale from layer to layer where no normalisation does it. Modules
    built afterwards (the switched discriminator's switch, with its own init) are untouched.
    """
    if norm == "none":
        scaled_kaiming_init(module, negative_slope=LRELU_SLOPE)


class ConvNormAct(nn.Sequential):
    """Conv (optionally spectral-normalised) -> batch/group norm -> LeakyReLU(0.2).

    Kernel 4 with stride 2 halves even sizes exactly (padding 1), as in ESRGAN's discriminator.
    ``bias=None`` picks the sensible default: no bias before batch/group norm, a bias otherwise.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: str = "none",
        activation: bool = True,
        bias: bool | None = None,
    ) -> None:
        _check_norm(norm)
        if bias is None:
            bias = norm in ("spectral", "none")
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=bias
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=maybe_spectral(conv, norm))
        if norm in ("batch", "group"):
            layers["norm"] = norm_layer(norm, out_channels)
        if activation:
            layers["act"] = nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        super().__init__(layers)


def _vgg_stage(in_channels: int, out_channels: int, norm: str, first: bool) -> nn.Sequential:
    """One VGG-style stage: 3x3 conv, then 4x4 stride-2 conv (halves the resolution).

    The very first conv of ESRGAN's discriminator sees raw pixels and has no activation
    normalisation (normalising a 3-channel image is meaningless); spectral norm still applies.
    """
    first_norm = ("spectral" if norm == "spectral" else "none") if first else norm
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, 3, 1, first_norm),
        ConvNormAct(out_channels, out_channels, 4, 2, norm),
    )


# -- Real-ESRGAN / old-PyTorch spectral-norm checkpoints ----------------------------------------

# torch.nn.utils.spectral_norm (the old API, used by Real-ESRGAN's released weights) stores
# `<layer>.weight_orig/_u/_v`; the parametrization API used here stores the same tensors under
# `<layer>.parametrizations.weight.original` / `.0._u` / `.0._v`.
_LEGACY_SPECTRAL_KEYS = {
    ".weight_orig": ".parametrizations.weight.original",
    ".weight_u": ".parametrizations.weight.0._u",
    ".weight_v": ".parametrizations.weight.0._v",
}


def _modern_spectral_key(key: str) -> str:
    for old, new in _LEGACY_SPECTRAL_KEYS.items():
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def convert_legacy_spectral_norm_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename old-API spectral-norm keys (``weight_orig``/``_u``/``_v``) to the new layout."""
    return {_modern_spectral_key(key): value for key, value in state_dict.items()}


def _legacy_spectral_pre_hook(module, state_dict, prefix, *args) -> None:
    # Registered on every discriminator so load_state_dict accepts old-API files directly;
    # load_state_dict pre-hooks must edit the dict in place.
    for key in [k for k in state_dict if k.startswith(prefix)]:
        modern = _modern_spectral_key(key)
        if modern != key:
            state_dict[modern] = state_dict.pop(key)


# -- vgg ---------------------------------------------------------------------------------------


@register_network("vgg", role="discriminator")
class VGGDiscriminator(nn.Module):
    """ESRGAN/SRGAN VGG-style discriminator: one real/fake logit per image.

    Five stages (3x3 conv, then 4x4 stride-2 conv) at nf, 2nf, 4nf, 8nf, 8nf channels with
    LeakyReLU(0.2), global average pooling, then two linear layers. Pooling (instead of the
    original flatten of a 4x4 map) makes any input size that is a multiple of 32 work.

    Args:
        in_channels: Channels of the judged images (3 for RGB, 1 for grey/gradient maps).
        nf: Base feature width; the stages use nf, 2nf, 4nf, 8nf and 8nf channels.
        norm: Normalisation of the conv layers: batch, group, spectral (also on the linear layers) or none.
        hidden: Width of the hidden linear layer (100 in ESRGAN).
    """

    logit_channels: int = 1
    reduction: int | None = None

    def __init__(
        self,
        in_channels: Annotated[int, Positive] = 3,
        nf: Annotated[int, Positive] = 64,
        norm: Norm = "batch",
        hidden: Annotated[int, Positive] = 100,
    ) -> None:
        super().__init__()
        _check_norm(norm)
        widths = [nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf]
        stages = []
        previous = in_channels
        for index, width in enumerate(widths):
            stages.append(_vgg_stage(previous, width, norm, first=index == 0))
            previous = width
        self.features = nn.Sequential(*stages)
        self.classifier = nn.Sequential(
            maybe_spectral(nn.Linear(previous, hidden), norm),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            maybe_spectral(nn.Linear(hidden, 1), norm),
        )
        init_unnormalised(self, norm)
        self.register_load_state_dict_pre_hook(_legacy_spectral_pre_hook)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return self.classifier(features.mean(dim=(2, 3)))


# -- pixdisc -----------------------------------------------------------------------------------


class _UpFuse(nn.Module):
    """FPN-like merge: upsample the deeper features x2, fuse them with the shallower skip.

    The deep features first pass a 1x1 lateral conv (as in FPN) so that the fusing 3x3 convs,
    which dominate the cost at 8nf channels, stay narrow.
    """

    def __init__(self, deep: int, skip: int, out: int, norm: str) -> None:
        super().__init__()
        self.reduce = ConvNormAct(deep, out, 1, 1, norm)
        self.fuse = ConvNormAct(out + skip, out, 3, 1, norm)
        self.process = ConvNormAct(out, out, 3, 1, norm)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(deep, size=skip.shape[-2:], mode="nearest")
        return self.process(self.fuse(torch.cat([self.reduce(up), skip], dim=1)))


class _LogitHead(nn.Sequential):
    """3x3 conv block then a plain 1x1 conv to one logit per position (bias, no norm/act)."""

    def __init__(self, channels: int, norm: str) -> None:
        hidden = max(channels // 2, 1)
        super().__init__(
            OrderedDict(
                body=ConvNormAct(channels, hidden, 3, 1, norm),
                logit=nn.Conv2d(hidden, 1, 1),
            )
        )


@register_network("pixdisc", role="discriminator")
class PixelDiscriminator(nn.Module):
    """The seed's pixel discriminator: a real/fake logit map at 1/8 resolution, 3 channels.

    A VGG-style encoder (five 3x3 + stride-2 4x4 stages at nf, 2nf, 4nf, 8nf, 8nf) brings the
    image to 1/32. Three heads judge it at three scales, FPN-like: from the 1/32 features; from
    the 1/32 features upsampled and fused with the 1/16 ones; and from that result upsampled and
    fused with the 1/8 ones (fused levels are 4nf wide). Each head gives one logit map, bilinearly brought to 1/8; the
    output stacks them as channels (0: 1/8 head, 1: 1/16 head, 2: 1/32 head).

    Args:
        in_channels: Channels of the judged images (3 for RGB, 1 for grey/gradient maps).
        nf: Base feature width; encoder stages use nf, 2nf, 4nf, 8nf and 8nf channels.
        norm: Normalisation of the conv layers: group (the seed's choice), batch, spectral or none.
    """

    logit_channels: int = 3
    reduction: int | None = 8

    def __init__(
        self,
        in_channels: Annotated[int, Positive] = 3,
        nf: Annotated[int, Positive] = 64,
        norm: Norm = "group",
    ) -> None:
        super().__init__()
        _check_norm(norm)
        widths = [nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for index, width in enumerate(widths):
            self.encoder.append(_vgg_stage(previous, width, norm, first=index == 0))
            previous = width
        # Hook for an extra early-stage module at 1/2 resolution (the switched discriminator
        # puts its Switch here); Identity has no parameters, so plain pixdisc keys are unchanged.
        self.early: nn.Module = nn.Identity()
        self.head32 = _LogitHead(widths[4], norm)
        # The fused pyramid levels are 4nf wide (FPN keeps one moderate width for all levels).
        self.fuse16 = _UpFuse(widths[4], widths[3], widths[2], norm)
        self.head16 = _LogitHead(widths[2], norm)
        self.fuse8 = _UpFuse(widths[2], widths[2], widths[2], norm)
        self.head8 = _LogitHead(widths[2], norm)
        init_unnormalised(self, norm)
        self.register_load_state_dict_pre_hook(_legacy_spectral_pre_hook)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, 32, "pixdisc")
        skips = []
        for index, stage in enumerate(self.encoder):
            x = stage(x)
            if index == 0:
                x = self.early(x)
            skips.append(x)
        feat8, feat16, feat32 = skips[2], skips[3], skips[4]
        fused16 = self.fuse16(feat32, feat16)
        fused8 = self.fuse8(fused16, feat8)
        size8 = feat8.shape[-2:]
        logits = [
            self.head8(fused8),
            F.interpolate(self.head16(fused16), size=size8, mode="bilinear", align_corners=False),
            F.interpolate(self.head32(feat32), size=size8, mode="bilinear", align_corners=False),
        ]
        return torch.cat(logits, dim=1)


# -- unet --------------------------------------------------------------------------------------


@register_network("unet", role="discriminator")
class UNetDiscriminator(nn.Module):
    """U-net discriminator of Real-ESRGAN: a per-pixel real/fake logit map.

    Encoder: 3x3 conv, then three 4x4 stride-2 convs (2nf, 4nf, 8nf; 1/8 resolution). Decoder:
    bilinear x2 upsampling + 3x3 conv per level with additive skips, then two 3x3 convs and a
    1-channel output conv. ``reduction`` 2 or 4 stops the decoder early for a coarser, cheaper
    map. With the defaults (spectral norm, skips, reduction 1) the parameter names and shapes
    match Real-ESRGAN's released discriminator, whose old-style spectral-norm keys
    (``weight_orig``/``weight_u``/``weight_v``) are converted on load.

    Args:
        in_channels: Channels of the judged images (3 for RGB, 1 for grey/gradient maps).
        nf: Base feature width (64 in Real-ESRGAN).
        norm: Normalisation of the inner conv layers: spectral (Real-ESRGAN), batch, group or none.
        skip_connection: Add the encoder features to the decoder features at each level.
        reduction: Output logits at 1/reduction of the input size (1 = full resolution).
    """

    logit_channels: int = 1

    def __init__(
        self,
        in_channels: Annotated[int, Positive] = 3,
        nf: Annotated[int, Positive] = 64,
        norm: Norm = "spectral",
        skip_connection: bool = True,
        reduction: Literal[1, 2, 4] = 1,
    ) -> None:
        super().__init__()
        _check_norm(norm)
        if reduction not in (1, 2, 4):
            raise ValueError(f"unet reduction must be 1, 2 or 4, got {reduction!r}")
        self.reduction: int | None = reduction
        self.skip_connection = skip_connection
        # Real-ESRGAN's spectral-normalised convs have no bias; without any normalisation a bias
        # is the network's only offset, so keep one there.
        bias = norm == "none"

        def conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Module:
            layer = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=bias)
            return maybe_spectral(layer, norm)

        self.conv0 = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.conv1, self.norm1 = conv(nf, 2 * nf, 4, 2), norm_layer(norm, 2 * nf)
        self.conv2, self.norm2 = conv(2 * nf, 4 * nf, 4, 2), norm_layer(norm, 4 * nf)
        self.conv3, self.norm3 = conv(4 * nf, 8 * nf, 4, 2), norm_layer(norm, 8 * nf)
        # Decoder levels (1/4, 1/2, 1/1), built only down to the requested output resolution.
        self.decoder_levels = {1: 3, 2: 2, 4: 1}[reduction]
        self.conv4, self.norm4 = conv(8 * nf, 4 * nf, 3, 1), norm_layer(norm, 4 * nf)
        if self.decoder_levels >= 2:
            self.conv5, self.norm5 = conv(4 * nf, 2 * nf, 3, 1), norm_layer(norm, 2 * nf)
        if self.decoder_levels >= 3:
            self.conv6, self.norm6 = conv(2 * nf, nf, 3, 1), norm_layer(norm, nf)
        head_in = {1: nf, 2: 2 * nf, 4: 4 * nf}[reduction]
        self.conv7, self.norm7 = conv(head_in, nf, 3, 1), norm_layer(norm, nf)
        self.conv8, self.norm8 = conv(nf, nf, 3, 1), norm_layer(norm, nf)
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)
        init_unnormalised(self, norm)
        self.register_load_state_dict_pre_hook(_legacy_spectral_pre_hook)

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, LRELU_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, 8, "unet")
        x0 = self._act(self.conv0(x))
        x1 = self._act(self.norm1(self.conv1(x0)))
        x2 = self._act(self.norm2(self.conv2(x1)))
        x3 = self._act(self.norm3(self.conv3(x2)))

        decoder = [(self.conv4, self.norm4, x2)]
        if self.decoder_levels >= 2:
            decoder.append((self.conv5, self.norm5, x1))
        if self.decoder_levels >= 3:
            decoder.append((self.conv6, self.norm6, x0))
        out = x3
        for conv, norm, skip in decoder:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
            out = self._act(norm(conv(out)))
            if self.skip_connection:
                out = out + skip

        out = self._act(self.norm7(self.conv7(out)))
        out = self._act(self.norm8(self.conv8(out)))
        return self.conv9(out)


# -- switched ----------------------------------------------------------------------------------


class _SwitchStage(nn.Module):
    """Runs a :class:`Switch` as a plain feature stage, keeping its attention for logging."""

    def __init__(self, switch: Switch) -> None:
        super().__init__()
        self.switch = switch
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, attention = self.switch(x)
        # Detached: the maps are for pictures and statistics, not for a loss.
        self.last_attention = attention.detach()
        return out


@register_network("switched", role="discriminator")
class SwitchedDiscriminator(PixelDiscriminator):
    """The seed's switched discriminator: the pixel discriminator with a Switch in its encoder.

    A generic discriminator may be unable to give a targeted signal for every kind of image
    region ("basically the same argument for the switched generator"), so the features at 1/2
    resolution pass a :class:`~srkit.nets.switch.Switch`: n alternative transforms blended per
    pixel by a learned attention whose softmax temperature anneals linearly to 1 (the trainer
    calls the switch's ``set_training_step``). Everything else, and the output (N, 3, H/8, W/8),
    is the pixel discriminator's, so it works with pixgan. After a forward, ``last_attention``
    holds the attention maps (N, H/2, W/2, n) for logging.

    Args:
        in_channels: Channels of the judged images (3 for RGB, 1 for grey/gradient maps).
        nf: Base feature width; encoder stages use nf, 2nf, 4nf, 8nf and 8nf channels.
        norm: Normalisation of the encoder/head conv layers: group, batch, spectral or none.
        transforms: Number of alternative transforms in the switch.
        trans_layers: 3x3 convs per transform.
        residual: Add the switch's blended transforms to its input (False: replace the features).
        mux_filters: Filters of the switch's attention multiplexer (a multiple of 4).
        temperature: Switch softmax temperature at step 0, annealed linearly to 1.
        temperature_final_step: Training step at which the switch temperature reaches 1.
    """

    def __init__(
        self,
        in_channels: Annotated[int, Positive] = 3,
        nf: Annotated[int, Positive] = 64,
        norm: Norm = "group",
        transforms: Annotated[int, Positive] = 8,
        trans_layers: Annotated[int, Positive] = 2,
        residual: bool = True,
        mux_filters: Annotated[int, AtLeast(4), MultipleOf(4)] = 32,
        temperature: Annotated[float, AtLeast(1)] = 10.0,
        temperature_final_step: Annotated[int, NonNegative] = 10000,
    ) -> None:
        super().__init__(in_channels=in_channels, nf=nf, norm=norm)
        switch = Switch(
            nf,
            transforms,
            trans_layers,
            residual=residual,
            mux_filters=mux_filters,
            temperature=temperature,
            temperature_final_step=temperature_final_step,
        )
        switch.stats_prefix = "switch"
        self.early = _SwitchStage(switch)

    @property
    def switch(self) -> Switch:
        return self.early.switch

    @property
    def last_attention(self) -> torch.Tensor | None:
        """Attention maps (N, H/2, W/2, transforms) of the last forward, detached; None before."""
        return self.early.last_attention
