"""The Python inference API: ``srkit.load_model`` and ``srkit.upscale``.

>>> import srkit
>>> model = srkit.load_model("runs/esrgan/checkpoints/step_00100000")   # or any .pth/.safetensors
>>> big = srkit.upscale(model, numpy_or_pil_or_tensor)                  # same kind out as in

:func:`upscale` takes numpy arrays (HW or HWC; uint8, uint16 or float in [0, 1]), PIL images
and torch tensors (CHW or NCHW, float in [0, 1]) and returns the same kind, dtype and layout.
Channels are handled the way a person expects of an image tool:

* RGB goes through the model.
* Greyscale is replicated to RGB, upscaled, and the mean of the three output channels is
  returned as greyscale (an RGB model fed grey mostly answers grey; the mean removes the small
  colour casts a GAN can add).
* Alpha (RGBA) is upscaled separately from the colour. ``alpha="model"`` (the default) runs the
  alpha channel, replicated to RGB, through the model and keeps the mean: its edges come out as
  sharp as the colour edges they belong to, where bicubic alpha would leave a soft halo around
  every sharpened object. ``alpha="bicubic"`` is cheaper (no second pass). A fully opaque
  alpha is not run at all.
* A model with one input channel runs each channel of an RGB image on its own.

The SR result is clamped to [0, 1]. Precision: ``fp32``; ``bf16`` (autocast; fast on GPUs and on
CPUs with AVX512-BF16/AMX, much *slower* than fp32 elsewhere); ``fp16`` (autocast, CUDA only);
``auto``: bf16 where the device runs it natively, else fp32 (:mod:`srkit.hardware`).

The fast path for many images (what ``srkit upscale`` does): :func:`prepare_for_inference` puts
the weights themselves in bf16/fp16 (no per-call casts under autocast), switches to
channels_last where that is faster, and can ``torch.compile`` the model; the forward passes run
under ``torch.inference_mode``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srkit.errors import SrkitError
from srkit.hardware import precision_context
from srkit.infer.tiling import (
    auto_tile,
    auto_tile_batch,
    split_output,
    tile_alignment,
    tiled_forward,
)

log = logging.getLogger("srkit.infer")

Precision = Literal["auto", "fp32", "bf16", "fp16"]
AlphaMode = Literal["model", "bicubic"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Default overlap between tiles, in input pixels.
DEFAULT_OVERLAP = 16


class PrecisionError(SrkitError):
    """A precision the device cannot run."""


def load_model(path: str | Path, device: str | torch.device | None = None) -> nn.Module:
    """Load a generator from a checkpoint folder or weights file, ready for :func:`upscale`.

    Accepts srkit checkpoint folders (the EMA generator is preferred), ``.safetensors``,
    ``.pth``/``.pt``/``.ckpt`` files with a bare state dict or a BasicSR-style
    ``{"params": ..., "params_ema": ...}`` wrapper, in srkit's, the original ESRGAN (``model.N``)
    or the BSRGAN key layout; the architecture comes from srkit's metadata or is detected from
    the keys. Pickle files are opened with ``torch.load(weights_only=True)``, so loading never
    runs code from the file.

    Returns the module in eval mode on ``device`` (default CPU) with attributes ``scale``,
    ``srkit_arch`` (``{"type": ..., constructor arguments}``) and ``srkit_metadata`` (the file's
    metadata plus ``source``, the file read).

    Raises:
        CheckpointError: missing, unreadable, unsafe or unrecognised file (one-line message).
    """
    from srkit.weights import load_network

    model = load_network(path)
    if not hasattr(model, "scale"):
        raise SrkitError(f"'{path}' holds a {type(model).__name__}, not an SR generator")
    return model.to(torch.device(device) if device is not None else torch.device("cpu"))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def model_channels(model: nn.Module) -> tuple[int, int]:
    """(input channels, output channels) of a generator, from its architecture record."""
    arch = getattr(model, "srkit_arch", None) or {}
    return int(arch.get("in_channels", 3)), int(arch.get("out_channels", 3))


_warned_slow_bf16 = False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` with ``auto`` replaced by what the device runs fastest (bf16 or fp32)."""
    if precision == "auto":
        from srkit.hardware import auto_precision

        return auto_precision(device).value
    return precision


def check_precision(precision: str, device: torch.device) -> None:
    """Raise PrecisionError for a precision ``device`` cannot run; warn about slow ones."""
    global _warned_slow_bf16
    from srkit.hardware import cpu_has_native_bf16

    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise PrecisionError(
            f"--precision fp16 needs a CUDA GPU (running on {device.type}); "
            "use fp32, or bf16 on CPUs that support it"
        )
    if (
        precision == "bf16"
        and device.type == "cpu"
        and not _warned_slow_bf16
        and not cpu_has_native_bf16()
    ):
        _warned_slow_bf16 = True
        log.warning(
            "this CPU has no bf16 instructions (AVX512-BF16/AMX): bf16 runs emulated and "
            "is much slower than fp32 here"
        )


def prepare_for_inference(
    model: nn.Module,
    precision: str = "auto",
    channels_last: bool | str = "auto",
    compile: bool = False,
) -> nn.Module:
    """Make ``model`` fast for upscaling many images; returns it (changed in place).

    bf16/fp16 puts the weights themselves in that precision (autocast would cast every
    weight on every call); channels_last (``auto``: with bf16/fp16) stores weights the way
    the reduced-precision convolution kernels read them; ``compile`` wraps the model in
    ``torch.compile`` (the first images pay the compilation). The result stays usable with
    :func:`upscale` and :func:`upscale_tensor`, which follow its weights' precision.
    """
    from srkit.hardware import resolve_channels_last

    device = model_device(model)
    precision = resolve_precision(precision, device)
    check_precision(precision, device)
    model.eval().requires_grad_(False)
    if precision in _LOW_PRECISION:
        model.to(_LOW_PRECISION[precision])
    if resolve_channels_last(channels_last, device, precision).value:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point dtype of the model's weights (float32 for a model without any)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def model_is_channels_last(model: nn.Module) -> bool:
    for parameter in model.parameters():
        if parameter.dim() == 4:
            return parameter.is_contiguous(memory_format=torch.channels_last) and not (
                parameter.is_contiguous()
            )
    return False


def element_bytes(precision: str) -> int:
    """Bytes per activation value at ``precision``."""
    return 4 if precision == "fp32" else 2


def make_forward(
    model: nn.Module, precision: str, device: torch.device
) -> Callable[[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor] | None]]:
    """The per-tile forward used by :func:`tiled_forward`: precision, then (sr, attention);
    keyword tensors (a tile's extra inputs) go to the model too."""

    dtype = model_dtype(model)
    # Weights already in bf16/fp16 (prepare_for_inference): feed that dtype, no autocast.
    context = precision if dtype == torch.float32 else "fp32"
    layout = torch.channels_last if model_is_channels_last(model) else torch.contiguous_format

    def forward(tile: torch.Tensor, **extra: torch.Tensor) -> tuple[torch.Tensor, Any]:
        tile = tile.to(device, dtype).contiguous(memory_format=layout)
        extra = {
            name: value.to(device, dtype) if value.is_floating_point() else value.to(device)
            for name, value in extra.items()
        }
        with torch.inference_mode(), precision_context(context, device):
            sr, attention = split_output(model(tile, **extra))
        # Plain tensors from here on (an inference tensor cannot be changed in place outside
        # inference mode, and the caller clamps the result in place).
        return sr.clone(), [a.clone() for a in attention] if attention else attention

    return forward


@torch.no_grad()
def upscale_tensor(
    model: nn.Module,
    image: torch.Tensor,
    tile: int | str | None = "auto",
    overlap: int = DEFAULT_OVERLAP,
    precision: str = "fp32",
    alpha: str = "model",
    attention: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
    tile_batch: int | str = "auto",
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Upscale a float (N, C, H, W) image in [0, 1] with C in 1, 3, 4: (SR on the CPU, attention).

    The core of :func:`upscale` and ``srkit upscale``; see the module docstring for how grey,
    RGB and RGBA are handled. ``tile``: ``"auto"`` (from the free memory), an int (0 = whole
    image) or None (= 0). The result is float32 on the CPU, clamped to [0, 1]. ``attention``:
    also return the stitched attention maps of the colour pass (SRG2), else None.
    ``tile_batch``: tiles per forward pass, ``"auto"`` (on a GPU as many as fit in memory, up
    to 8; one on the CPU) or an int >= 1.
    """
    if image.ndim != 4 or image.shape[1] not in (1, 3, 4):
        raise SrkitError(
            f"expected an (N, C, H, W) image with C in 1, 3, 4; got {tuple(image.shape)}"
        )
    if alpha not in ("model", "bicubic"):
        raise SrkitError(f"unknown alpha mode '{alpha}'; use 'model' or 'bicubic'")
    device = model_device(model)
    precision = resolve_precision(precision, device)
    check_precision(precision, device)
    scale = int(model.scale)
    in_channels, _ = model_channels(model)
    _, channels, height, width = image.shape
    image = image.float()
    if tile == "auto":
        tile = auto_tile(model, height, width, device, element_bytes(precision))
        if tile:
            # A memory-bound tile wins over the requested overlap, which must stay below half.
            overlap = min(overlap, (tile - 1) // 2)
    tile = int(tile or 0)
    if tile_batch == "auto":
        tile_batch = auto_tile_batch(model, tile, image.shape[0], device, element_bytes(precision))
    forward = make_forward(model, precision, device)
    alignment = tile_alignment(model)

    def run(planes: torch.Tensor, want_attention: bool) -> tuple[torch.Tensor, Any]:
        """Run (N, c, H, W) planes whose channel count may differ from the model's."""
        count = planes.shape[1]
        if count == in_channels:
            batch = planes
        elif in_channels == 3 and count == 1:
            batch = planes.expand(-1, 3, -1, -1)
        elif in_channels == 1:
            batch = planes.reshape(-1, 1, height, width)
        else:
            raise SrkitError(
                f"the model takes {in_channels}-channel images; cannot feed it {count} channels"
            )
        from srkit.data.reference import tile_inputs

        batch = batch.to(device)
        sr, maps = tiled_forward(
            forward,
            batch,
            scale,
            tile,
            overlap,
            alignment,
            want_attention,
            on_tile,
            # A generator that sees the whole image (SPSR3): the reference of the whole input,
            # each tile with its own mask and centre.
            tile_inputs(model, batch),
            int(tile_batch),
        )
        if in_channels == 1 and count != 1:
            sr = sr.reshape(planes.shape[0], count, height * scale, width * scale)
        elif sr.shape[1] != count:
            sr = sr.mean(dim=1, keepdim=True) if count == 1 else sr[:, :count]
        return sr, maps

    colour = image[:, :3] if channels == 4 else image
    sr, maps = run(colour, attention)
    if channels == 4:
        alpha_plane = image[:, 3:]
        if bool((alpha_plane >= 1.0).all()):
            alpha_sr = torch.ones(sr.shape[0], 1, *sr.shape[-2:])
        elif alpha == "bicubic":
            alpha_sr = F.interpolate(
                alpha_plane.cpu(), scale_factor=scale, mode="bicubic", align_corners=False
            )
        else:
            alpha_sr, _ = run(alpha_plane, False)
        sr = torch.cat((sr, alpha_sr), dim=1)
    return sr.clamp_(0.0, 1.0), maps


# --------------------------------------------------------------------------------------------
# numpy / PIL / tensor front end
# --------------------------------------------------------------------------------------------


def upscale(
    model: nn.Module,
    image: Any,
    tile: int | str | None = "auto",
    overlap: int = DEFAULT_OVERLAP,
    precision: str = "fp32",
    alpha: str = "model",
) -> Any:
    """Upscale one image with ``model``; returns the same kind of image it was given.

    Args:
        model: a generator, e.g. from :func:`load_model` (its device is used).
        image: numpy array (H, W) or (H, W, C), C in 1, 3, 4, of uint8, uint16 or float in
            [0, 1]; a PIL image (L, I;16, RGB, RGBA, LA, P, ...); or a float torch tensor
            (C, H, W) or (N, C, H, W) in [0, 1].
        tile: ``"auto"`` (whole image if it fits in half the free memory, else the largest
            tile that does), a tile side in input pixels, or 0/None for no tiling.
        overlap: input pixels shared by neighbouring tiles (blended with cosine ramps).
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only) or ``"auto"`` (bf16 where
            the device runs it natively, else fp32).
        alpha: ``"model"`` or ``"bicubic"``: how an alpha channel is upscaled.

    Returns:
        numpy: same dtype and layout (uint8/uint16 rounded; float as float in [0, 1]).
        PIL: same mode where PIL can hold it (P becomes RGB or RGBA, 1 becomes L).
        tensor: same layout, dtype and device.
    """
    options = {"tile": tile, "overlap": overlap, "precision": precision, "alpha": alpha}
    if isinstance(image, torch.Tensor):
        return _upscale_torch(model, image, options)
    if isinstance(image, np.ndarray):
        return _upscale_numpy(model, image, options)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return _upscale_pil(model, image, options)
    raise TypeError(
        f"srkit.upscale takes a numpy array, a PIL image or a torch tensor, not {type(image).__name__}"
    )


def _upscale_torch(model: nn.Module, image: torch.Tensor, options: dict) -> torch.Tensor:
    if not image.is_floating_point():
        raise TypeError(f"tensor images must be float in [0, 1], got {image.dtype}")
    batched = image.ndim == 4
    if image.ndim not in (3, 4):
        raise ValueError(f"tensor images are (C, H, W) or (N, C, H, W), got {tuple(image.shape)}")
    sr, _ = upscale_tensor(model, image if batched else image[None], **options)
    sr = sr.to(device=image.device, dtype=image.dtype)
    return sr if batched else sr[0]


def _upscale_numpy(model: nn.Module, image: np.ndarray, options: dict) -> np.ndarray:
    squeeze = image.ndim == 2
    array = image[:, :, None] if squeeze else image
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"numpy images are (H, W) or (H, W, C) with C in 1, 3, 4; got {image.shape}"
        )
    if array.dtype == np.uint8:
        peak = 255.0
    elif array.dtype == np.uint16:
        peak = 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        peak = None
    else:
        raise TypeError(f"numpy images must be uint8, uint16 or float, got {array.dtype}")
    floats = array.astype(np.float32) / np.float32(peak) if peak else array.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(floats.transpose(2, 0, 1)))[None]
    sr, _ = upscale_tensor(model, tensor, **options)
    out = sr[0].permute(1, 2, 0).numpy()
    if peak:
        out = np.rint(out * peak).astype(array.dtype)
    else:
        out = out.astype(array.dtype, copy=False)
    return out[:, :, 0] if squeeze else out


def _upscale_pil(model: nn.Module, image: Any, options: dict) -> Any:
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        array = np.asarray(image).astype(np.uint16)
        out = _upscale_numpy(model, array, options)
        height, width = out.shape[:2]
        return Image.frombytes("I;16", (width, height), out.astype("<u2").tobytes())
    if mode == "I":  # 16-bit data in a 32-bit container (how Pillow opens some 16-bit PNGs)
        array = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        out = _upscale_numpy(model, array, options)
        return Image.fromarray(out.astype(np.int32))
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "LA":
        array = np.asarray(image)
        grey, alpha = array[:, :, :1], array[:, :, 1:]
        out = _upscale_numpy(model, np.concatenate([grey, grey, grey, alpha], axis=2), options)
        rgb = out[:, :, :3].astype(np.float32).mean(axis=2, keepdims=True)
        merged = np.concatenate([np.rint(rgb).astype(np.uint8), out[:, :, 3:]], axis=2)
        return Image.fromarray(merged)  # (H, W, 2) uint8 is LA
    elif mode not in ("L", "RGB", "RGBA"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = image.convert("RGB")
    out = _upscale_numpy(model, np.asarray(image), options)
    return Image.fromarray(out)  # uint8 (H, W) / (H, W, 3) / (H, W, 4): L / RGB / RGBA
