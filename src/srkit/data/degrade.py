"""Real-world degradations: HR patch -> realistic LR (blur, resize, noise, JPEG, twice).

The model of Real-ESRGAN (Wang et al., ICCVW 2021), built from its paper's description: an HR
image goes through a *first pass* of stages, an optional *second pass* of the same kinds of
stages with their own ranges, and a *final* step that resizes to the LR size (``H / scale``),
with a sinc (ringing) filter and the last pass's JPEG in random order::

    pass 1:  blur -> resize (relative to HR) -> noise -> JPEG
    pass 2:  blur -> resize (relative to the LR size) -> noise            (probability p2)
    final:   [resize to LR size + sinc] and [the last pass's JPEG], in random order
             -> clip to [0, 1], round to 8-bit levels

Every stage is a small frozen dataclass whose ``__call__(image, rng)`` takes a float32
``(N, C, H, W)`` tensor on any device and a ``numpy.random.Generator``; every random choice
(kernel, factor, sigma, quality, whether a stage runs) is drawn from that generator, and noise
fields from a CPU ``torch.Generator`` seeded from it, so the LR is a pure function of (HR,
seed) and identical on a CPU and a GPU up to float rounding. The stages run in float32 and
never under autocast (:func:`degrade` disables it). JPEG is Pillow's encoder in memory (the
reference the tests compare with), so that stage runs on the CPU whatever the device.

Definitions (``q = x^T Sigma^-1 x`` over the kernel grid, ``Sigma = R diag(sx^2, sy^2) R^T``):

* Gaussian ``exp(-q / 2)``; generalized Gaussian ``exp(-q^beta / 2)``; plateau
  ``1 / (1 + q^beta)``; each isotropic (``sx = sy``, no rotation) or anisotropic; normalised to
  sum 1.
* sinc: the ideal circular low-pass ``wc J1(wc r) / (2 pi r)`` (cut-off ``wc`` in radians per
  pixel), truncated to the kernel size and normalised to sum 1.
* Gaussian noise: sigma in 8-bit levels, per channel (colour) or one field for all (grey).
* Poisson noise: photon counts ``255 x`` (an 8-bit image read as counts), the shot noise
  ``Poisson(255 x) / 255 - x`` multiplied by ``scale``; grey = computed on luma (BT.601) and
  added to every channel. (Real-ESRGAN counts the image's distinct values instead of using
  255; on natural 8-bit images both give 256 levels.)
* Unsharp masking of targets (:class:`Sharpen`): ``img + w (img - blur(img))`` where
  ``|img - blur(img)| * 255 > threshold``, softened by blurring that mask; the Gaussian blur is
  separable (two 1-D passes), not a ``(2r+1)^2`` 2-D convolution.

Where it runs: in the data workers, per sample, seeded from the sample seed of
:class:`srkit.data.sampler.TrainSampler` (see ``docs/degradations.md`` for the measurements
behind that choice). That keeps the trainer unaware of degradations and makes resume exact.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "KERNEL_SHAPES",
    "PRESETS",
    "REAL_ESRGAN_KERNELS",
    "Blur",
    "DegradationPipeline",
    "FinalStep",
    "Jpeg",
    "Noise",
    "Pass",
    "Resize",
    "Sharpen",
    "anisotropic_kernel",
    "circular_lowpass_kernel",
    "filter2d",
    "jpeg_round_trip",
]

#: Blur kernel shapes a :class:`Blur` stage draws from (besides sinc).
KERNEL_SHAPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_MODES = ("area", "bilinear", "bicubic")

#: Real-ESRGAN's relative weights of the blur kernel shapes.
REAL_ESRGAN_KERNELS = {
    "iso": 0.45,
    "aniso": 0.25,
    "generalized_iso": 0.12,
    "generalized_aniso": 0.03,
    "plateau_iso": 0.12,
    "plateau_aniso": 0.03,
}


def _realesrgan_pass(
    blur_probability: float,
    sigma: list[float],
    up_down_keep: list[float],
    scale: list[float],
    gaussian_sigma: list[float],
    poisson_scale: list[float],
) -> dict[str, Any]:
    """One pass of Real-ESRGAN's settings; the two passes differ only in these values."""
    return {
        "probability": 1.0,
        "blur": {
            "probability": blur_probability,
            "kernel_sizes": [7, 21],
            "kernels": dict(REAL_ESRGAN_KERNELS),
            "sinc_probability": 0.1,
            "sigma": sigma,
            "beta_generalized": [0.5, 4.0],
            "beta_plateau": [1.0, 2.0],
        },
        "resize": {
            "probability": 1.0,
            "up_down_keep": up_down_keep,
            "scale": scale,
            "modes": list(RESIZE_MODES),
        },
        "noise": {
            "probability": 1.0,
            "gaussian_probability": 0.5,
            "gaussian_sigma": gaussian_sigma,
            "poisson_scale": poisson_scale,
            "grey_probability": 0.4,
        },
        "jpeg": {"probability": 1.0, "quality": [30, 95]},
    }


#: Named settings of the ``data.train.degradation`` section (user keys are merged over them).
#: ``realesrgan``: the values of Real-ESRGAN's published train_realesrnet_x4plus.yml.
PRESETS: dict[str, dict[str, Any]] = {
    "realesrgan": {
        "first": _realesrgan_pass(
            1.0, [0.2, 3.0], [0.2, 0.7, 0.1], [0.15, 1.5], [1, 30], [0.05, 3]
        ),
        "second": _realesrgan_pass(
            0.8, [0.2, 1.5], [0.3, 0.4, 0.3], [0.3, 1.2], [1, 25], [0.05, 2.5]
        ),
        "final": {
            "sinc_probability": 0.8,
            "kernel_sizes": [7, 21],
            "modes": list(RESIZE_MODES),
            "jpeg_first_probability": 0.5,
        },
        "sharpen_targets": {"radius": 25, "weight": 0.5, "threshold": 10.0},
    }
}


# --------------------------------------------------------------------------- kernels


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    half = (size - 1) / 2
    axis = torch.arange(size, dtype=torch.float64) - half
    return torch.meshgrid(axis, axis, indexing="xy")  # (x: columns, y: rows)


def anisotropic_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float,
    angle: float = 0.0,
    shape: str = "gaussian",
    beta: float = 1.0,
) -> torch.Tensor:
    """A ``size x size`` float32 blur kernel summing to 1 (see the module's definitions).

    ``shape`` is ``gaussian`` (``beta`` ignored), ``generalized`` or ``plateau``; ``angle``
    rotates the ``sigma_x`` axis counter-clockwise from the x (column) axis.
    """
    x, y = _grid(size)
    cos, sin = math.cos(angle), math.sin(angle)
    # Coordinates in the kernel's own axes, so q = u^2 / sx^2 + v^2 / sy^2.
    u, v = cos * x + sin * y, -sin * x + cos * y
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if shape == "gaussian":
        kernel = torch.exp(-0.5 * q)
    elif shape == "generalized":
        kernel = torch.exp(-0.5 * q**beta)
    elif shape == "plateau":
        kernel = 1.0 / (1.0 + q**beta)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}")
    return (kernel / kernel.sum()).float()


def circular_lowpass_kernel(cutoff: float, size: int) -> torch.Tensor:
    """The 2-D ideal low-pass (sinc) kernel of cut-off ``cutoff`` rad/pixel, summing to 1."""
    x, y = _grid(size)
    radius = torch.sqrt(x**2 + y**2)
    safe = torch.where(radius == 0, torch.ones_like(radius), radius)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    kernel = torch.where(radius == 0, torch.full_like(radius, cutoff**2 / (4 * math.pi)), kernel)
    return (kernel / kernel.sum()).float()


def _pad_mode(image: torch.Tensor, pad: int) -> str:
    # Reflection needs more pixels than the padding; tiny intermediate images replicate.
    return "reflect" if pad < min(image.shape[-2:]) else "replicate"


def filter2d(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of ``(N, C, H, W)`` with one odd ``(k, k)`` kernel, same size."""
    size = kernel.shape[-1]
    pad = size // 2
    channels = image.shape[1]
    padded = F.pad(image, (pad, pad, pad, pad), mode=_pad_mode(image, pad))
    weight = kernel.to(image).flip(-1, -2).expand(channels, 1, size, size)
    return F.conv2d(padded, weight, groups=channels)


def separable_filter(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with the outer product of a 1-D odd kernel with itself."""
    size = taps.shape[0]
    pad = size // 2
    channels = image.shape[1]
    taps = taps.to(image)
    padded = F.pad(image, (pad, pad, pad, pad), mode=_pad_mode(image, pad))
    rows = F.conv2d(padded, taps.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _odd_size(rng: np.random.Generator, bounds: Sequence[int]) -> int:
    """An odd size drawn uniformly from the odd numbers in [low, high]."""
    low, high = int(bounds[0]), int(bounds[1])
    return low + 2 * int(rng.integers(0, (high - low) // 2 + 1))


def _sinc_cutoff(rng: np.random.Generator, size: int) -> float:
    # Small kernels cannot represent low cut-offs (their ringing is truncated away).
    return _uniform(rng, (math.pi / 3 if size < 13 else math.pi / 5, math.pi))


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Blur:
    """Convolve with a random kernel: a sinc with ``sinc_probability``, else one of
    ``kernels`` (shape -> relative weight), of a random odd size in ``kernel_sizes``."""

    probability: float = 1.0
    kernel_sizes: tuple[int, int] = (7, 21)
    kernels: Mapping[str, float] = field(default_factory=lambda: dict(REAL_ESRGAN_KERNELS))
    sinc_probability: float = 0.1
    sigma: tuple[float, float] = (0.2, 3.0)
    beta_generalized: tuple[float, float] = (0.5, 4.0)
    beta_plateau: tuple[float, float] = (1.0, 2.0)

    def draw_kernel(self, rng: np.random.Generator) -> torch.Tensor:
        size = _odd_size(rng, self.kernel_sizes)
        if rng.random() < self.sinc_probability:
            return circular_lowpass_kernel(_sinc_cutoff(rng, size), size)
        names = list(self.kernels)
        weights = np.array([self.kernels[name] for name in names], dtype=np.float64)
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        sigma_x = _uniform(rng, self.sigma)
        if name.endswith("_iso") or name == "iso":
            sigma_y, angle = sigma_x, 0.0
        else:
            sigma_y, angle = _uniform(rng, self.sigma), _uniform(rng, (-math.pi, math.pi))
        shape, beta = "gaussian", 1.0
        if name.startswith("generalized"):
            shape, beta = "generalized", _uniform(rng, self.beta_generalized)
        elif name.startswith("plateau"):
            shape, beta = "plateau", _uniform(rng, self.beta_plateau)
        return anisotropic_kernel(size, sigma_x, sigma_y, angle, shape, beta)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() >= self.probability:
            return image
        return filter2d(image, self.draw_kernel(rng))


def _resized(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, size[0]), max(1, size[1]))
    if tuple(image.shape[-2:]) == size:
        return image
    if mode == "area":
        return F.interpolate(image, size=size, mode="area")
    return F.interpolate(image, size=size, mode=mode, align_corners=False)


@dataclass(frozen=True)
class Resize:
    """Resize by a random factor: up (in [1, max]), down (in [min, 1]) or keep, with the
    chances ``up_down_keep``, with a mode drawn from ``modes``. The factor applies to the
    ``reference`` size the pipeline passes (the HR size in pass 1, the LR size in pass 2)."""

    probability: float = 1.0
    up_down_keep: tuple[float, float, float] = (0.2, 0.7, 0.1)
    scale: tuple[float, float] = (0.15, 1.5)
    modes: tuple[str, ...] = RESIZE_MODES

    def draw_factor(self, rng: np.random.Generator) -> float:
        chances = np.asarray(self.up_down_keep, dtype=np.float64)
        direction = int(rng.choice(3, p=chances / chances.sum()))
        if direction == 0:
            return _uniform(rng, (1.0, max(1.0, self.scale[1])))
        if direction == 1:
            return _uniform(rng, (self.scale[0], min(1.0, self.scale[1])))
        return 1.0

    def __call__(
        self,
        image: torch.Tensor,
        rng: np.random.Generator,
        reference: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        if rng.random() >= self.probability:
            return image
        factor = self.draw_factor(rng)
        mode = self.modes[int(rng.integers(len(self.modes)))]
        height, width = reference or tuple(image.shape[-2:])
        return _resized(image, (int(height * factor), int(width * factor)), mode)


def _noise_generator(rng: np.random.Generator) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return generator


@dataclass(frozen=True)
class Noise:
    """Gaussian noise (with ``gaussian_probability``; sigma in 8-bit levels) or else Poisson
    noise (times a random ``poisson_scale``), grey with ``grey_probability``; result clipped
    to [0, 1]."""

    probability: float = 1.0
    gaussian_probability: float = 0.5
    gaussian_sigma: tuple[float, float] = (1.0, 30.0)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    grey_probability: float = 0.4

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() >= self.probability:
            return image
        gaussian = rng.random() < self.gaussian_probability
        grey = rng.random() < self.grey_probability
        if gaussian:
            noise = gaussian_noise(image, _uniform(rng, self.gaussian_sigma) / 255, grey, rng)
        else:
            noise = poisson_noise(image, _uniform(rng, self.poisson_scale), grey, rng)
        return (image + noise).clamp(0.0, 1.0)


def gaussian_noise(
    image: torch.Tensor, sigma: float, grey: bool, rng: np.random.Generator
) -> torch.Tensor:
    """A Gaussian noise field of std ``sigma`` shaped like ``image`` (one channel if grey)."""
    batch, channels, height, width = image.shape
    shape = (batch, 1 if grey else channels, height, width)
    noise = torch.randn(shape, generator=_noise_generator(rng), dtype=torch.float32) * sigma
    return noise.to(image.device).expand_as(image)


def poisson_noise(
    image: torch.Tensor, scale: float, grey: bool, rng: np.random.Generator
) -> torch.Tensor:
    """Shot noise of an 8-bit image read as photon counts, times ``scale`` (see module)."""
    source = image.clamp(0.0, 1.0)
    if grey:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
        source = (source * luma.view(1, 3, 1, 1)).sum(1, keepdim=True)
    counts = (source * 255.0).round().cpu()
    noisy = torch.poisson(counts, generator=_noise_generator(rng))
    noise = ((noisy - counts) / 255.0 * scale).to(image.device)
    return noise.expand_as(image)


def jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image of ``(N, 3, H, W)`` in [0, 1] encoded and decoded by Pillow's JPEG codec at
    ``quality`` (8-bit, Pillow's default 4:2:0 chroma subsampling)."""
    from PIL import Image

    results = []
    for single in image.detach().clamp(0.0, 1.0):
        pixels = (single * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
        results.append(torch.from_numpy(decoded).permute(2, 0, 1))
    return torch.stack(results).to(image.device)


@dataclass(frozen=True)
class Jpeg:
    """JPEG compression at a quality drawn uniformly from the integers in ``quality``."""

    probability: float = 1.0
    quality: tuple[int, int] = (30, 95)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() >= self.probability:
            return image
        quality = int(rng.integers(self.quality[0], self.quality[1] + 1))
        return jpeg_round_trip(image, quality)


@dataclass(frozen=True)
class Pass:
    """One order of degradation: blur -> resize -> noise -> JPEG (absent stages skipped),
    run with ``probability``."""

    probability: float = 1.0
    blur: Blur | None = None
    resize: Resize | None = None
    noise: Noise | None = None
    jpeg: Jpeg | None = None


@dataclass(frozen=True)
class FinalStep:
    """Resize to the LR size (mode drawn from ``modes``) and, with ``sinc_probability``, a
    sinc filter; the last pass's JPEG comes before this with ``jpeg_first_probability``."""

    sinc_probability: float = 0.8
    kernel_sizes: tuple[int, int] = (7, 21)
    modes: tuple[str, ...] = RESIZE_MODES
    jpeg_first_probability: float = 0.5

    def __call__(
        self, image: torch.Tensor, rng: np.random.Generator, size: tuple[int, int]
    ) -> torch.Tensor:
        mode = self.modes[int(rng.integers(len(self.modes)))]
        image = _resized(image, size, mode)
        if rng.random() < self.sinc_probability:
            kernel_size = _odd_size(rng, self.kernel_sizes)
            image = filter2d(
                image, circular_lowpass_kernel(_sinc_cutoff(rng, kernel_size), kernel_size)
            )
        return image


def gaussian_taps(radius: int) -> torch.Tensor:
    """1-D Gaussian of ``2 radius + 1`` taps, sigma from the size as OpenCV does for sigma 0
    (``0.3 (radius - 1) + 0.8``), summing to 1."""
    sigma = 0.3 * (radius - 1) + 0.8
    axis = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (axis / sigma) ** 2)
    return (taps / taps.sum()).float()


@dataclass(frozen=True)
class Sharpen:
    """Unsharp masking of training targets (see the module); deterministic."""

    radius: int = 25
    weight: float = 0.5
    threshold: float = 10.0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        taps = gaussian_taps(self.radius)
        residual = image - separable_filter(image, taps)
        mask = ((residual.abs() * 255.0) > self.threshold).to(image.dtype)
        soft_mask = separable_filter(mask, taps)
        sharp = (image + self.weight * residual).clamp(0.0, 1.0)
        return soft_mask * sharp + (1.0 - soft_mask) * image


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class DegradationPipeline:
    """HR -> LR of ``1 / scale`` the size through ``passes`` and ``final`` (see the module)."""

    scale: int
    passes: tuple[Pass, ...]
    final: FinalStep = field(default_factory=FinalStep)
    sharpen: Sharpen | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], scale: int) -> DegradationPipeline:
        """Build from a ``data.train.degradation`` mapping (as ``model_dump()`` gives it)."""
        passes = tuple(
            _pass_from(settings[name]) for name in ("first", "second") if settings.get(name)
        )
        final = settings.get("final") or {}
        sharpen = settings.get("sharpen_targets")
        return cls(
            scale=int(scale),
            passes=passes,
            final=FinalStep(**_tuples(final)),
            sharpen=None if sharpen is None else Sharpen(**sharpen),
        )

    def target(self, hr: torch.Tensor) -> torch.Tensor:
        """The training target of an HR batch: sharpened if ``sharpen`` is set."""
        return hr if self.sharpen is None else self.sharpen(hr)

    def __call__(self, hr: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Degrade a float32 ``(N, C, H, W)`` batch (H, W multiples of ``scale``)."""
        with torch.autocast(hr.device.type, enabled=False):
            return self._degrade(hr.float(), rng)

    def _degrade(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        size = (image.shape[-2] // self.scale, image.shape[-1] // self.scale)
        chosen = [stage for stage in self.passes if rng.random() < stage.probability]
        last_jpeg: Jpeg | None = None
        for index, stage in enumerate(chosen):
            if stage.blur is not None:
                image = stage.blur(image, rng)
            if stage.resize is not None:
                image = stage.resize(image, rng, None if index == 0 else size)
            if stage.noise is not None:
                image = stage.noise(image, rng)
            if stage.jpeg is not None:
                if index == len(chosen) - 1:
                    last_jpeg = stage.jpeg
                else:
                    image = stage.jpeg(image, rng)
        jpeg_first = rng.random() < self.final.jpeg_first_probability
        if last_jpeg is not None and jpeg_first:
            image = last_jpeg(image, rng)
        image = self.final(image, rng, size)
        if last_jpeg is not None and not jpeg_first:
            image = last_jpeg(image, rng)
        return (image.clamp(0.0, 1.0) * 255.0).round() / 255.0


def _tuples(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Lists (from YAML/JSON) as tuples, so stages stay hashable plain data."""
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in mapping.items()
    }


_STAGES = {"blur": Blur, "resize": Resize, "noise": Noise, "jpeg": Jpeg}


def _pass_from(settings: Mapping[str, Any]) -> Pass:
    stages = {
        name: None if settings.get(name) is None else kind(**_tuples(settings[name]))
        for name, kind in _STAGES.items()
    }
    return Pass(probability=float(settings.get("probability", 1.0)), **stages)


# --------------------------------------------------------------------------- srkit degrade

_SAMPLES_TAG = 0x53484F57  # "SHOW": seeds of `srkit degrade` samples


def write_samples(
    pipeline: DegradationPipeline,
    images: Sequence[str],
    output: str,
    count: int,
    seed: int,
) -> list[str]:
    """``srkit degrade``: ``count`` degraded LR samples of each image and a contact sheet.

    Writes ``<output>/<stem>_<k>.png`` (k = 1..count; sample k of an image is seeded from
    ``(seed, k)`` and the image's position in ``images``) and ``<output>/contact_sheet.png``:
    one row per image, its bicubic (area) LR first, then the samples. Images are cut to a
    multiple of the scale. Returns the written paths.
    """
    from pathlib import Path

    from srkit.data.io import read_rgb, write_image
    from srkit.data.sampler import derive_seed
    from srkit.log.pictures import side_by_side, stack_rows, to_hwc

    folder = Path(output)
    written: list[str] = []
    rows: list[np.ndarray] = []
    stems = [Path(name).stem for name in images]
    for position, name in enumerate(images):
        stem = (
            stems[position]
            if stems.count(stems[position]) == 1
            else f"{position}_{stems[position]}"
        )
        pixels = read_rgb(name)
        height = pixels.shape[0] // pipeline.scale * pipeline.scale
        width = pixels.shape[1] // pipeline.scale * pipeline.scale
        hr = torch.from_numpy(np.ascontiguousarray(pixels[:height, :width].transpose(2, 0, 1)))[
            None
        ]
        row = [F.interpolate(hr, scale_factor=1 / pipeline.scale, mode="area")]
        target = pipeline.target(hr)
        for sample in range(1, count + 1):
            rng = np.random.default_rng(derive_seed(seed, _SAMPLES_TAG, position, sample))
            lr = pipeline(target, rng)
            path = folder / f"{stem}_{sample}.png"
            write_image(path, lr)
            written.append(str(path))
            row.append(lr)
        rows.append(side_by_side([to_hwc(tile) for tile in row]))
    sheet = folder / "contact_sheet.png"
    write_image(sheet, stack_rows(rows))
    written.append(str(sheet))
    return written
