"""Typed run configuration: YAML -> validated, frozen pydantic model.

Every key has exactly one home here (or, for networks, in the constructor signature of the
network in ``srkit.nets``), a type, a default and a description. From this schema come the
validation messages users see, the generated reference ``docs/config.md`` and the JSON schema
``docs/config.schema.json`` (``srkit schema``).

Network sections are derived from the registry: ``networks.<name>`` takes a ``type`` and the
keyword arguments of that network's constructor, plus the common keys of
:class:`NetworkBase`. The range markers of the constructor annotations
(:mod:`srkit.nets.constraints`) become pydantic constraints; the scales a generator supports and
the network's own ``check`` of argument combinations are checked by :func:`check_config`.
Loss-term sections come from the loss registry in the same way.

Errors are :class:`srkit.errors.ConfigError` with one line naming the file, the full key path and
what is wrong (with the closest valid key for typos).
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PositiveInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from srkit.data.degrade import PRESETS, REAL_ESRGAN_KERNELS
from srkit.errors import ConfigError, closest
from srkit.losses.base import StrictModel, loss_entries
from srkit.nets import constraints
from srkit.nets.registry import (
    _REGISTRY,
    NetworkEntry,
    argument_problems,
    signature_of,
    supported_scales,
)

# Constructor arguments that come from the run, not from the network's own section.
INJECTED_ARGUMENTS = {"scale": "the top-level `scale`"}


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- degradations


def _ordered_range(bounds: tuple[Any, Any]) -> tuple[Any, Any]:
    if bounds[0] > bounds[1]:
        raise ValueError(f"range [min, max] has min {bounds[0]} above max {bounds[1]}")
    return bounds


def _kernel_range(bounds: tuple[int, int]) -> tuple[int, int]:
    for size in bounds:
        if size % 2 != 1:
            raise ValueError(f"kernel sizes must be odd (a kernel has a centre pixel), not {size}")
    return _ordered_range(bounds)


def _chances(values: tuple[float, float, float]) -> tuple[float, float, float]:
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"the three chances must sum to 1 (they sum to {sum(values):g})")
    return values


Probability = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
FloatRange = Annotated[tuple[NonNegative, NonNegative], AfterValidator(_ordered_range)]
#: Largest blur kernel side a degradation may use (Real-ESRGAN's largest is 21).
MAX_KERNEL_SIZE = 51
KernelSizes = Annotated[
    tuple[
        Annotated[int, Field(ge=3, le=MAX_KERNEL_SIZE)],
        Annotated[int, Field(ge=3, le=MAX_KERNEL_SIZE)],
    ],
    AfterValidator(_kernel_range),
]
ResizeMode = Literal["area", "bilinear", "bicubic"]
KernelShape = Literal[
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"
]


class BlurStageConfig(StrictModel):
    """Blur with a random kernel (defaults: Real-ESRGAN's first pass)."""

    probability: Probability = Field(1.0, description="Chance that this stage runs.")
    kernel_sizes: KernelSizes = Field(
        (7, 21),
        description="[min, max] kernel side; each sample draws an odd side uniformly in it "
        f"(odd, 3..{MAX_KERNEL_SIZE}, below data.train.patch_size).",
    )
    kernels: dict[KernelShape, NonNegative] = Field(
        default_factory=lambda: dict(REAL_ESRGAN_KERNELS),
        min_length=1,
        description="Kernel shape -> relative weight: Gaussian (`iso`, `aniso`), generalized "
        "Gaussian exp(-q^beta/2) and plateau 1/(1+q^beta), isotropic or anisotropic (random "
        "second sigma and rotation).",
    )
    sinc_probability: Probability = Field(
        0.1, description="Chance of a sinc (ringing) kernel instead of one of `kernels`."
    )
    sigma: FloatRange = Field((0.2, 3.0), description="[min, max] kernel sigma in pixels.")
    beta_generalized: FloatRange = Field(
        (0.5, 4.0), description="[min, max] shape exponent of generalized Gaussian kernels."
    )
    beta_plateau: FloatRange = Field(
        (1.0, 2.0), description="[min, max] shape exponent of plateau kernels."
    )


class ResizeStageConfig(StrictModel):
    """Resize by a random factor (defaults: Real-ESRGAN's first pass). In the first pass the
    factor applies to the HR size, in the second to the LR size (HR / scale)."""

    probability: Probability = Field(1.0, description="Chance that this stage runs.")
    up_down_keep: tuple[Probability, Probability, Probability] = Field(
        (0.2, 0.7, 0.1),
        description="Chances of enlarging (factor in [1, max]), shrinking (in [min, 1]) and "
        "keeping the size; they sum to 1.",
    )
    scale: FloatRange = Field((0.15, 1.5), description="[min, max] resize factor.")
    modes: list[ResizeMode] = Field(
        default_factory=lambda: ["area", "bilinear", "bicubic"],
        min_length=1,
        description="Interpolation modes, one drawn uniformly per sample.",
    )

    _check_chances = field_validator("up_down_keep")(_chances)


class NoiseStageConfig(StrictModel):
    """Gaussian or Poisson noise (defaults: Real-ESRGAN's first pass)."""

    probability: Probability = Field(1.0, description="Chance that this stage runs.")
    gaussian_probability: Probability = Field(
        0.5, description="Chance of Gaussian noise; otherwise Poisson (shot) noise."
    )
    gaussian_sigma: FloatRange = Field(
        (1.0, 30.0), description="[min, max] Gaussian noise sigma in 8-bit levels (0..255)."
    )
    poisson_scale: FloatRange = Field(
        (0.05, 3.0),
        description="[min, max] multiplier of the shot noise of the 8-bit image read as "
        "photon counts.",
    )
    grey_probability: Probability = Field(
        0.4, description="Chance that the noise is grey (the same in every channel)."
    )


class JpegStageConfig(StrictModel):
    """JPEG compression (Pillow's encoder)."""

    probability: Probability = Field(1.0, description="Chance that this stage runs.")
    quality: Annotated[
        tuple[Annotated[int, Field(ge=1, le=100)], Annotated[int, Field(ge=1, le=100)]],
        AfterValidator(_ordered_range),
    ] = Field((30, 95), description="[min, max] JPEG quality, drawn uniformly (integers).")


class DegradationPassConfig(StrictModel):
    """One order of degradation: blur -> resize -> noise -> JPEG; a stage left out (or null)
    is skipped."""

    probability: Probability = Field(1.0, description="Chance that this pass runs.")
    blur: BlurStageConfig | None = Field(None, description="Blur stage; null = none.")
    resize: ResizeStageConfig | None = Field(None, description="Resize stage; null = none.")
    noise: NoiseStageConfig | None = Field(None, description="Noise stage; null = none.")
    jpeg: JpegStageConfig | None = Field(None, description="JPEG stage; null = none.")


class FinalStepConfig(StrictModel):
    """Resize to the LR size, with an optional sinc filter; the last pass's JPEG comes before
    or after it at random (as in Real-ESRGAN)."""

    sinc_probability: Probability = Field(0.8, description="Chance of the final sinc filter.")
    kernel_sizes: KernelSizes = Field((7, 21), description="[min, max] odd sinc kernel side.")
    modes: list[ResizeMode] = Field(
        default_factory=lambda: ["area", "bilinear", "bicubic"],
        min_length=1,
        description="Interpolation modes of the resize to the LR size, one drawn per sample.",
    )
    jpeg_first_probability: Probability = Field(
        0.5, description="Chance that the last pass's JPEG comes before the resize + sinc."
    )


class SharpenConfig(StrictModel):
    """Unsharp masking of the training targets (the HR the losses see and the LR is made
    from): img + weight * (img - blur(img)) where that difference exceeds `threshold`."""

    radius: int = Field(
        25, ge=1, description="Gaussian blur radius (kernel side 2 radius + 1; separable)."
    )
    weight: float = Field(0.5, ge=0, description="Strength of the sharpening.")
    threshold: float = Field(
        10.0, ge=0, description="Sharpen only where |img - blur(img)| exceeds this (8-bit levels)."
    )


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return over


class DegradationConfig(StrictModel):
    """Real-world degradations that make each training LR from its HR patch (see
    docs/degradations.md): a first pass, an optional second pass, and a final resize to the LR
    size with a sinc filter and the last JPEG in random order; LR rounded to 8 bits. Every draw
    comes from the sample's seed (the run's `seed`, step and position), so runs and resumes
    repeat exactly. `preset` fills in a named set of values; every key given next to it
    overrides the preset's (null removes a stage)."""

    preset: Literal["realesrgan"] | None = Field(
        None,
        description="`realesrgan`: Real-ESRGAN's published settings (two passes, final sinc "
        "0.8, sharpened targets); null = only the stages given here.",
    )
    first: DegradationPassConfig | None = Field(None, description="The first pass; null = none.")
    second: DegradationPassConfig | None = Field(
        None, description="The second pass (its resize is relative to the LR size); null = none."
    )
    final: FinalStepConfig = Field(
        default_factory=FinalStepConfig, description="The final resize to the LR size."
    )
    sharpen_targets: SharpenConfig | None = Field(
        None, description="Unsharp-mask the HR targets (and the HR the LR is made from)."
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return _merge(PRESETS[data["preset"]], data)
        return data


class TrainDataConfig(StrictModel):
    """Training images."""

    hr: Path = Field(description="Folder of high-resolution (target) images, searched recursively.")
    lr: Path | None = Field(
        None,
        description="Folder of low-resolution images matched to `hr` by file name; null = LR "
        "made on the fly from HR by MATLAB-compatible bicubic downscaling.",
    )
    patch_size: int = Field(
        128, gt=0, description="Side of the square HR training patch in pixels."
    )
    batch_size: int = Field(
        16,
        gt=0,
        description="Images per optimizer step, summed over all processes (global batch); "
        "split into `train.megabatch` chunks.",
    )
    workers: int = Field(2, ge=0, description="DataLoader worker processes per training process.")
    flips: bool = Field(True, description="Random horizontal and vertical flips.")
    rotations: bool = Field(True, description="Random 90-degree rotations.")
    cache_images: bool = Field(
        False, description="Keep decoded images in memory (per worker); for small datasets."
    )
    degradation: DegradationConfig | None = Field(
        None,
        description="Real-world degradations making LR from HR on the fly (needs `lr: null`); "
        "null = MATLAB bicubic only.",
    )
    disjoint: bool = Field(
        False,
        description="Unpaired training: `lr` and `hr` are unrelated folders of any sizes; each "
        "LR patch comes with a random HR patch that only discriminators see. Loss terms may "
        "not compare anything with `hr` (use `lr_feature`, or LR-scale expressions such as "
        "`grad(down(sr))` vs `grad(lr)`); pixgan swapping is off.",
    )


class LPIPSConfig(StrictModel):
    """Weights of LPIPS (VGG, v0.1), read at start-up."""

    lin: Path = Field(
        description="The five LPIPS v0.1 VGG linear layers (lin0.weight ... lin4.weight), "
        ".pth or .safetensors."
    )
    vgg: Path | None = Field(
        None,
        description="torchvision's ImageNet vgg16-397923af.pth; null = the torch hub cache.",
    )


class ValDataConfig(StrictModel):
    """Validation images (whole images, fixed order)."""

    hr: Path = Field(description="Folder of high-resolution validation images.")
    lr: Path | None = Field(
        None, description="Folder of matching LR images; null = made by bicubic downscaling."
    )
    max_images: int | None = Field(
        None, gt=0, description="Validate on at most this many images (the first, sorted)."
    )
    sheet_images: int = Field(
        3, ge=0, description="How many validation images appear in the LR | SR | HR picture sheet."
    )
    y_channel: bool = Field(
        True, description="Compute PSNR/SSIM on the BT.601 Y channel (SR literature); else RGB."
    )
    crop_border: int | None = Field(
        None, ge=0, description="Pixels cropped from each border before metrics; null = scale."
    )
    losses: bool = Field(
        True,
        description="Also report every loss term without a discriminator on the validation "
        "images as `val/loss/<name>` (weight-0 terms too: they are monitors, e.g. a baseline).",
    )
    lpips: LPIPSConfig | None = Field(
        None, description="Report LPIPS (VGG) when the generator outputs images; null = off."
    )
    colour_drift: bool = Field(
        True,
        description="Report colour drift of SR against HR when the generator outputs images: "
        "`colour_mean_de` (CIE L*a*b* ΔE76 between the images' mean colours) and "
        "`colour_low_de` (mean ΔE76 after both are box-downscaled by 8); ΔE ≈ 2.3 is just "
        "noticeable.",
    )


class DataConfig(StrictModel):
    train: TrainDataConfig
    val: ValDataConfig | None = Field(None, description="Validation data; null = no validation.")


# --------------------------------------------------------------------------- training


class _ScheduleBase(StrictModel):
    warmup: int = Field(0, ge=0, description="Steps of linear learning-rate warm-up from 0.")


class ConstantSchedule(_ScheduleBase):
    """Constant learning rate (after the warm-up)."""

    type: Literal["constant"] = "constant"


class MultiStepSchedule(_ScheduleBase):
    """Multiply the learning rate by `gamma` at each milestone; optional restarts."""

    type: Literal["multistep"] = "multistep"
    milestones: list[int] = Field(default_factory=list, description="Steps at which lr *= gamma.")
    gamma: float = Field(0.5, gt=0, description="Decay factor at each milestone.")
    restarts: list[int] = Field(
        default_factory=list,
        description="Steps at which the decay restarts (lr back to base * restart weight).",
    )
    restart_weights: list[float] = Field(
        default_factory=list,
        description="Base-lr multiplier after each restart; default 1 for every restart.",
    )


class CosineSchedule(_ScheduleBase):
    """Cosine annealing with restarts: one cosine period after another."""

    type: Literal["cosine"] = "cosine"
    periods: list[PositiveInt] = Field(
        min_length=1, description="Length in steps of each cosine period (at least one)."
    )
    restart_weights: list[float] = Field(
        default_factory=list,
        description="Peak-lr multiplier of each period; default 1 for every period.",
    )
    eta_min: float = Field(1e-7, ge=0, description="Learning rate at the bottom of each period.")


ScheduleConfig = Annotated[
    ConstantSchedule | MultiStepSchedule | CosineSchedule, Field(discriminator="type")
]


class TrainOnlyConfig(StrictModel):
    """Train only some named parameter groups of a network for its first steps.

    The network must name its parameter subsets with a `parameter_groups()` method (SPSR's
    generator: `fusion`, `gradient_branch`, `trunk`). Until `steps`, every other parameter gets
    no gradient and is left untouched by the optimizer (no weight decay, no Adam moments).
    """

    groups: list[str] = Field(
        min_length=1, description="Names of the parameter groups that train during the first steps."
    )
    steps: int = Field(
        gt=0, description="Number of steps during which only `groups` train; all parameters after."
    )


class OptimizerConfig(StrictModel):
    """Adam (AdamW when weight_decay > 0) settings of one trained network."""

    lr: float = Field(1e-4, gt=0, description="Base learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="Adam beta1, beta2.")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (AdamW).")
    schedule: ScheduleConfig | None = Field(
        None, description="This network's schedule; null = `train.schedule`."
    )
    train_only: TrainOnlyConfig | None = Field(
        None,
        description="Train only these parameter groups for the first steps (e.g. SPSR's "
        "`{groups: [fusion], steps: 5000}`); null = every parameter trains from step 0.",
    )


class EMAConfig(StrictModel):
    """Exponential moving average of the generator's weights."""

    decay: float = Field(0.999, gt=0, lt=1, description="EMA decay per step.")
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Steps over which the decay ramps linearly from 0 to `decay` (early "
        "weights are poor, so the average should not remember them for long).",
    )
    validate_raw: bool = Field(
        True, description="Also validate the raw (non-EMA) generator when EMA is on."
    )


class NoiseConfig(StrictModel):
    """Gaussian noise added to both discriminator inputs, decaying linearly."""

    start: float = Field(ge=0, description="Noise standard deviation at step 0.")
    floor: float = Field(0.0, ge=0, description="Standard deviation after `until`.")
    until: int = Field(gt=0, description="Step at which the deviation reaches `floor`.")


class TrainConfig(StrictModel):
    """The training loop."""

    iterations: int = Field(gt=0, description="Total optimizer steps.")
    megabatch: int = Field(
        1,
        gt=0,
        description="Gradient accumulation: each step's batch is split into this many equal "
        "chunks, each run forward/backward before one optimizer step.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto = bf16 where the device runs it natively (a CUDA GPU with compute "
        "capability 8.0+, a CPU with AVX512-BF16/AMX), else fp32; fp32; bf16 autocast "
        "(CPU/GPU); or fp16 autocast + grad scaler (GPU). The run's config.yml records what "
        "auto picked (`srkit doctor` shows it).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda if available.")
    generator_input: str = Field(
        "lr", description="Tensor expression fed to the generator (e.g. `up(lr)`)."
    )
    schedule: ScheduleConfig = Field(
        default_factory=ConstantSchedule, description="Learning-rate schedule of every network."
    )
    optim: dict[str, OptimizerConfig] = Field(
        default_factory=dict,
        description="Optimizer per trained network name; a network not listed gets the defaults.",
    )
    ema: EMAConfig | None = Field(None, description="EMA of the generator; null = off.")
    grad_clip: float | None = Field(
        None, gt=0, description="Clip each network's gradient norm to this value; null = off."
    )
    nan_policy: Literal["abort", "skip"] = Field(
        "abort",
        description="When a loss term (or gradient) of a step is NaN/Inf, no network is updated "
        "in that step, and: `abort` stops the run (the last checkpoint stays as it was; a debug "
        "bundle with the batch's file names, the losses and the config goes to "
        "`<run>/debug/step_N/`); `skip` drops the step and goes on, counting skipped steps.",
    )
    nan_skip_limit: int = Field(
        10,
        ge=1,
        description="With `nan_policy: skip`, stop (as `abort` does) after this many skipped "
        "steps in a row.",
    )
    d_update_ratio: int = Field(1, gt=0, description="Train the generator every k-th step.")
    d_init_iters: int = Field(0, ge=0, description="Steps before the generator trains at all.")
    g_warmup: int = Field(0, ge=0, description="Steps before the discriminators train.")
    d_noise: NoiseConfig | None = Field(None, description="Instance noise for discriminators.")
    deterministic: bool = Field(
        False, description="Deterministic kernels (slower); with a fixed seed runs repeat exactly."
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="Use channels_last memory format; auto = with bf16/fp16 (whose convolution "
        "kernels work in channels_last), not in fp32. The run's config.yml records the choice.",
    )
    compile: bool = Field(False, description="torch.compile the trained networks.")


class PictureConfig(StrictModel):
    """One row of training pictures: tensor expressions drawn side by side."""

    tensors: list[str] = Field(
        min_length=1,
        description="Tensor expressions drawn left to right (e.g. `grad(sr)`, `grad_branch`, "
        "`grad(hr)`), from the first image of the last chunk of the step; smaller ones are "
        "enlarged (nearest) to the tallest; 1-channel maps are grey, other channel counts "
        "than 3 are shown as their channel mean.",
    )
    scale: Literal["clamp", "shared"] = Field(
        "clamp",
        description="clamp: values drawn as they are, clipped to [0, 1] (images); shared: the "
        "whole row is divided by the 99.5th percentile of its values (each map's outermost "
        "pixel ring left out), so maps of small values (gradient magnitudes) are visible and "
        "still comparable with each other.",
    )


class HealthConfig(StrictModel):
    """Discriminator health figures and warnings (docs/gan-health.md)."""

    enabled: bool = Field(
        True,
        description="Log `health/<discriminator>/...` figures (D's probabilities, accuracy, "
        "logit gap, swap IoU for map discriminators, gradient norm) every `print_every` "
        "steps, and warn when a discriminator collapses or wins outright.",
    )
    gradient_every: int = Field(
        100,
        ge=0,
        description="Every k-th step, measure each generator loss term's share of the "
        "gradient at the generator's output (`health/generator/share/<term>`; one extra "
        "backward pass per term, from its loss to G's output); 0 = never. Not measured in a "
        "run with a single weighted term (its share is 1).",
    )
    collapse_gap: float = Field(
        0.1,
        ge=0,
        description="A discriminator counts as collapsed at a log whose logit gap (or, with "
        "region swaps, swap gap) is below this many logits.",
    )
    win_accuracy: float = Field(
        0.98,
        gt=0.5,
        le=1,
        description="A discriminator counts as winning outright at a log whose accuracy is at "
        "least this while its adversarial terms' gradient share is below `win_share`.",
    )
    win_share: float = Field(
        0.01, ge=0, le=1, description="See `win_accuracy` (the share last measured)."
    )
    patience: int = Field(
        3, gt=0, description="Consecutive logs a condition must hold before the warning."
    )
    anchor_share: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Warn when the terms that hold the output's colours (pixel distances "
        "between images, the colour term) together have less than this share of the "
        "generator's gradient beside other terms (at the first such measurement); 0 = never.",
    )


class LoggingConfig(StrictModel):
    print_every: int = Field(50, gt=0, description="Steps between console/TensorBoard scalars.")
    val_every: int = Field(1000, gt=0, description="Steps between validations.")
    validate_at_start: bool = Field(
        False,
        description="Also validate before the first step of a fresh run (logged as step 0), "
        "so the run records where it started: e.g. the initial weights of a GAN run started "
        "from a PSNR model, or what a fresh network scores. Not repeated on resume.",
    )
    checkpoint_every: int = Field(1000, gt=0, description="Steps between checkpoints.")
    image_every: int = Field(500, gt=0, description="Steps between training pictures.")
    pictures: dict[str, PictureConfig] = Field(
        default_factory=dict,
        description="Extra training pictures by name, written every `image_every` steps to "
        "the run's images/ folder (`<name>_<step>.png`) and TensorBoard (`train/<name>`).",
    )
    keep_checkpoints: int = Field(3, gt=0, description="Keep only the newest k checkpoints.")
    checkpoint_failure: Literal["stop", "retry"] = Field(
        "stop",
        description="When a checkpoint cannot be written (disk full, folder not writable): "
        "`stop` ends training (the previous checkpoint stays intact; continue with "
        "`--resume auto`); `retry` goes on training and tries again at the next checkpoint "
        "interval (the final checkpoint must succeed).",
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="Discriminator health figures and warnings."
    )
    tensorboard: bool = Field(True, description="Write TensorBoard event files.")
    progress_bar: bool = Field(True, description="Show a progress bar (when on a terminal).")


# --------------------------------------------------------------------------- networks


class NetworkBase(StrictModel):
    """Keys every network section has besides its own hyper-parameters."""

    init: Path | None = Field(
        None,
        description="Weights to start from: an srkit checkpoint folder, a .safetensors or a "
        ".pth/.pt state dict.",
    )
    init_strict: bool = Field(True, description="Require every weight of `init` to match.")


class DiscriminatorBase(NetworkBase):
    """Keys every discriminator section has besides its own hyper-parameters."""

    spectral_norm: bool = Field(
        False,
        description="Spectral normalisation of every convolution and linear layer (each "
        "layer's weight divided by its largest singular value, one power iteration per "
        "forward pass): bounds how steeply the discriminator can change, a common cure for "
        "a discriminator that wins outright or gradients that explode. Applied after `init` "
        "weights are loaded. See docs/gan-stability.md.",
    )


def _docstring_arguments(doc: str) -> dict[str, str]:
    """Parse a Google-style ``Args:`` section into {argument: one-line description}."""
    descriptions: dict[str, str] = {}
    in_args = False
    current: str | None = None
    indent = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args, current, indent = True, None, None
            continue
        if not in_args:
            continue
        if not stripped:
            continue
        line_indent = len(line) - len(line.lstrip())
        if indent is None:
            indent = line_indent
        if line_indent < indent:
            in_args = False
            continue
        match = re.match(r"^(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", stripped)
        if line_indent == indent and match:
            current = match.group(1)
            descriptions[current] = match.group(3)
        elif current:
            descriptions[current] += " " + stripped
    return descriptions


def constructor_arguments(entry: NetworkEntry) -> dict[str, tuple[Any, Any, str]]:
    """{argument: (annotation with its range markers, default or ..., description)}."""
    docs = _docstring_arguments(inspect.getdoc(entry.constructor) or "")
    return {
        name: (
            annotation,
            ... if default is inspect.Parameter.empty else default,
            docs.get(name, ""),
        )
        for name, (annotation, default) in signature_of(entry.constructor).items()
    }


def _require_odd(value: int) -> int:
    if value % 2 != 1:
        raise ValueError("Input should be an odd number")
    return value


class _OddNumber:
    """pydantic form of :data:`srkit.nets.constraints.Odd` (JSON schema: not a multiple of 2)."""

    @staticmethod
    def __get_pydantic_core_schema__(source: Any, handler: Any) -> Any:
        return core_schema.no_info_after_validator_function(_require_odd, handler(source))

    @staticmethod
    def __get_pydantic_json_schema__(schema: Any, handler: Any) -> Any:
        json_schema = handler(schema)
        json_schema["not"] = {"multipleOf": 2}
        return json_schema


def _pydantic_constraint(marker: Any) -> Any:
    if isinstance(marker, constraints.AtLeast):
        return annotated_types.Ge(marker.minimum)
    if isinstance(marker, constraints.Above):
        return annotated_types.Gt(marker.bound)
    if isinstance(marker, constraints.AtMost):
        return annotated_types.Le(marker.maximum)
    if isinstance(marker, constraints.MultipleOf):
        return annotated_types.MultipleOf(marker.factor)
    if marker is constraints.Odd:
        return _OddNumber()
    if isinstance(marker, constraints.Constraint):
        raise TypeError(f"no pydantic form for the network argument marker {marker!r}")
    return marker


def _pydantic_annotation(annotation: Any) -> Any:
    """A constructor annotation with its range markers turned into pydantic constraints."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *metadata = typing.get_args(annotation)
        return Annotated[(_pydantic_annotation(base), *map(_pydantic_constraint, metadata))]
    if origin in (Union, types.UnionType):
        return Union[tuple(_pydantic_annotation(a) for a in typing.get_args(annotation))]  # noqa: UP007
    return annotation


def _network_model(entry: NetworkEntry) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "type": (Literal[entry.name], Field(description=f"{entry.role}: {entry.summary}")),
    }
    for name, (annotation, default, description) in constructor_arguments(entry).items():
        if name in INJECTED_ARGUMENTS:
            continue
        fields[name] = (_pydantic_annotation(annotation), Field(default, description=description))
    class_name = "".join(p.capitalize() for p in re.split(r"[^a-zA-Z0-9]", entry.name)) + "Network"
    base = DiscriminatorBase if entry.role == "discriminator" else NetworkBase
    model = create_model(class_name, __base__=base, **fields)
    doc = f"`type: {entry.name}` ({entry.role}). {entry.summary}"
    scales = supported_scales(entry)
    if scales is not None:
        doc += f" Supported `scale`: {', '.join(map(str, scales))}."
    rules = inspect.getdoc(entry.check) if entry.check is not None else None
    if rules:
        doc += " " + " ".join(rules.split())
    model.__doc__ = doc
    return model


def _tagged_union(models: list[type[BaseModel]]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


class RunConfigBase(StrictModel):
    """One training run."""

    name: str = Field(description="Run name; the run folder is `<output_dir>/<name>`.")
    scale: Literal[1, 2, 3, 4, 8] = Field(4, description="Super-resolution factor.")
    seed: int = Field(0, description="Seed of every random choice (weights, data, augmentation).")
    output_dir: Path = Field(Path("experiments"), description="Parent folder of run folders.")
    data: DataConfig
    train: TrainConfig
    logging: LoggingConfig = Field(default_factory=LoggingConfig)


@functools.cache
def config_model() -> type[RunConfigBase]:
    """The full config model, built once from the network and loss registries."""
    import srkit.nets  # noqa: F401  (registers every network)

    roles = {"generator": 0, "discriminator": 1, "feature": 2}
    entries = sorted(_REGISTRY.values(), key=lambda e: (roles.get(e.role, 3), e.name))
    network_models = [_network_model(entry) for entry in entries]
    loss_models = [entry.config_class for entry in loss_entries().values()]
    model = create_model(
        "Config",
        __base__=RunConfigBase,
        networks=(
            dict[str, _tagged_union(network_models)],
            Field(
                description="Networks by name. `generator` is required; discriminators and "
                "frozen helper networks (views) are named freely."
            ),
        ),
        losses=(
            list[_tagged_union(loss_models)],
            Field(description="Weighted loss terms of the generator objective."),
        ),
    )
    model.__doc__ = RunConfigBase.__doc__
    return model


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the raw config mapping in place."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{override}': expected KEY=VALUE, e.g. train.iterations=1000")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:depth]) or "<top>"
                raise ConfigError(
                    f"--set '{override}': {where} is a list of {len(node)}; use an index 0..{len(node) - 1}"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            where = ".".join(parts[:depth])
            raise ConfigError(f"--set '{override}': {where} is a value, not a section")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfigBase:
    """Read, override and validate a config file; raise ConfigError with one line on problems."""
    path = Path(path)
    raw = read_yaml(path)
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict[str, Any], source: str = "<config>") -> RunConfigBase:
    model = config_model()
    try:
        config = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, model)}") from None
    check_config(config, source)
    return config


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- messages


def _strip(annotation: Any) -> Any:
    """Remove Annotated/Optional wrappers around an annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    annotation = _strip(annotation)
    if typing.get_origin(annotation) in (Union, getattr(__import__("types"), "UnionType", Union)):
        return [
            m
            for m in typing.get_args(_strip(annotation))
            if inspect.isclass(m) and issubclass(m, BaseModel)
        ]
    return []


def _type_tag(member: type[BaseModel]) -> Any:
    """The ``type`` literal that selects ``member`` in a tagged union."""
    field = member.model_fields.get("type")
    if field is None:
        return None
    literal = typing.get_args(field.annotation)
    return literal[0] if literal else field.default


def _walk(model: type[BaseModel], loc: tuple) -> tuple[list[str], Any]:
    """Follow an error location through the schema: (key path for users, annotation there)."""
    path: list[str] = []
    current: Any = model
    for item in loc:
        current = _strip(current)
        members = _union_members(current)
        if members:
            match = [m for m in members if _type_tag(m) == item]
            if match:
                current = match[0]
                continue
        if inspect.isclass(current) and issubclass(current, BaseModel):
            path.append(str(item))
            field = current.model_fields.get(str(item))
            current = field.annotation if field else None
            continue
        origin = typing.get_origin(current)
        path.append(str(item))
        if origin is dict:
            current = typing.get_args(current)[1]
        elif origin in (list, tuple):
            args = typing.get_args(current)
            current = args[0] if args else None
        else:
            current = None
    return path, current


_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "str": "a string",
    "dict": "a mapping of keys",
    "model": "a mapping of keys",
    "list": "a list",
    "tuple": "a list",
    "path": "a path",
}


def _kind_of(annotation: Any) -> str:
    members = _union_members(annotation)
    if members and "Network" in members[0].__name__:
        return "network type"
    if members and issubclass(members[0], _ScheduleBase):
        return "schedule type"
    return "loss term type" if members else "type"


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first error of a pydantic ValidationError, with key path and hint."""
    errors = exc.errors()
    error = errors[0]
    kind = error["type"]
    loc = tuple(error["loc"])
    given = error.get("input")
    more = (
        f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        if len(errors) > 1
        else ""
    )

    if kind == "extra_forbidden":
        path, parent = _walk(model, loc[:-1])
        parent = _strip(parent)
        key = str(loc[-1])
        valid = (
            list(parent.model_fields)
            if inspect.isclass(parent) and issubclass(parent, BaseModel)
            else []
        )
        hint = closest(key, valid)
        where = ".".join([*path, key])
        text = f"{where}: unknown key '{key}'"
        if hint:
            text += f" (did you mean '{hint}'?)"
        elif valid:
            text += f"; valid keys here: {', '.join(valid)}"
        return text + more

    path, annotation = _walk(model, loc)
    # pydantic marks a bad mapping key with a "[key]" step after the key itself.
    where = ".".join(part for part in path if part != "[key]") or "<top>"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = sorted(str(_type_tag(m)) for m in _union_members(annotation))
        label = _kind_of(annotation)
        if kind == "union_tag_not_found":
            return f"{where}: missing key 'type'; valid {label}s: {', '.join(tags)}" + more
        tag = str(error.get("ctx", {}).get("tag", given))
        hint = closest(tag, tags)
        did = f" (did you mean '{hint}'?)" if hint else ""
        return f"{where}.type: unknown {label} '{tag}'{did}; valid: {', '.join(tags)}" + more
    if kind == "missing":
        return f"{where}: required key missing" + more
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{where}: expected one of {expected}, got {given!r}" + more
    base = kind.split("_")[0]
    if kind.endswith(("_type", "_parsing")) and base in _EXPECTED:
        return f"{where}: expected {_EXPECTED[base]}, got {given!r} ({type(given).__name__})" + more
    message = error.get("msg", kind)
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return f"{where}: {message[0].lower() + message[1:]}, got {given!r}" + more


# --------------------------------------------------------------------------- consistency


def trained_network_names(config: Any) -> list[str]:
    """The generator first, then every discriminator some loss term trains, in config order."""
    names = ["generator"]
    for term in config.losses:
        discriminator = getattr(term, "discriminator", None)
        if discriminator and discriminator not in names:
            names.append(discriminator)
    return names


def section_arguments(section: Any, scale: int) -> dict[str, Any]:
    """The constructor arguments a ``networks.<name>`` section stands for (with the run's scale
    when the network takes one)."""
    accepted = constructor_arguments(_REGISTRY[section.type])
    arguments = {key: value for key, value in section if key in accepted}
    if "scale" in accepted:
        arguments["scale"] = scale
    return arguments


def check_network_arguments(
    name: str, section: Any, scale: int, fail: Callable[[str], None]
) -> None:
    """The run's scale is one ``networks.<name>`` supports, and its arguments fit together.

    (Each argument's own range was checked by pydantic; this runs the network's ``check``.)
    """
    entry = _REGISTRY[section.type]
    scales = supported_scales(entry)
    if scales is not None and scale not in scales:
        fail(
            f"scale: {scale} is not supported by networks.{name} ({section.type} supports "
            f"{', '.join(map(str, scales))})"
        )
    for key, problem in argument_problems(entry, section_arguments(section, scale)):
        if key in INJECTED_ARGUMENTS:  # the run's value, not a key of the section
            fail(f"{key}: {problem} (networks.{name} is {section.type})")
        fail(f"networks.{name}.{key}: {problem}")


def check_degradation(train_data: Any, fail: Callable[[str], None]) -> None:
    """Degradations make LR from HR: no LR folder, and kernels smaller than the patch."""
    where = "data.train.degradation"
    if train_data.lr is not None or train_data.disjoint:
        fail(
            f"{where}: degradations make LR from HR on the fly; remove data.train.lr "
            "(and data.train.disjoint) or the degradation section"
        )
    degradation = train_data.degradation
    kernels = [(f"{where}.final.kernel_sizes", degradation.final.kernel_sizes[1])]
    for name in ("first", "second"):
        stage = getattr(degradation, name)
        if stage is not None and stage.blur is not None:
            kernels.append((f"{where}.{name}.blur.kernel_sizes", stage.blur.kernel_sizes[1]))
    for key, size in kernels:
        if size >= train_data.patch_size:
            fail(
                f"{key}: kernel side {size} is not smaller than data.train.patch_size "
                f"{train_data.patch_size}"
            )


def check_config(config: Any, source: str = "<config>") -> None:
    """Checks that span several keys (pydantic checks each key alone)."""

    def fail(message: str) -> None:
        raise ConfigError(f"{source}: {message}")

    networks = config.networks
    if "generator" not in networks:
        fail(
            f"networks: a network named 'generator' is required (have: {', '.join(networks) or 'none'})"
        )
    generator_role = _REGISTRY[networks["generator"].type].role
    if generator_role == "discriminator":
        fail(
            f"networks.generator.type: '{networks['generator'].type}' is a discriminator, not a generator"
        )

    for name, section in networks.items():
        check_network_arguments(name, section, config.scale, fail)

    term_names = [term.log_name for term in config.losses]
    for name in term_names:
        if term_names.count(name) > 1:
            fail(f"losses: two terms are called '{name}'; give one of them a distinct `name`")
    for index, term in enumerate(config.losses):
        discriminator = getattr(term, "discriminator", None)
        if discriminator is None:
            continue
        if discriminator not in networks:
            fail(
                f"losses.{index}.discriminator: no network named '{discriminator}' "
                f"(networks: {', '.join(networks)})"
            )
        role = _REGISTRY[networks[discriminator].type].role
        if role != "discriminator":
            fail(
                f"losses.{index}.discriminator: network '{discriminator}' is a {role}, not a discriminator"
            )

    trained = trained_network_names(config)
    for name in config.train.optim:
        if name not in trained:
            fail(
                f"train.optim.{name}: '{name}' is not a trained network (trained: {', '.join(trained)})"
            )

    train_data = config.data.train
    if train_data.batch_size % config.train.megabatch:
        fail(
            f"train.megabatch: {config.train.megabatch} does not divide data.train.batch_size "
            f"{train_data.batch_size}"
        )
    if train_data.disjoint and train_data.lr is None:
        fail(
            "data.train.lr: disjoint (unpaired) training needs a folder of LR images next to "
            "the HR folder (data.train.disjoint: true)"
        )
    if train_data.degradation is not None:
        check_degradation(train_data, fail)
    if train_data.patch_size % config.scale:
        fail(
            f"data.train.patch_size: {train_data.patch_size} is not a multiple of scale {config.scale}"
        )
    if len(trained) > 1 and train_data.patch_size % 32:
        fail(
            f"data.train.patch_size: {train_data.patch_size} is not a multiple of 32, which the "
            "discriminators need"
        )

    from srkit.losses.tensors import builtin_views, check_expression, parse_expression

    functions = set(builtin_views(config.scale)) | {n for n in networks if n not in trained}
    if config.train.ema is not None:
        functions.add("ema")  # the averaged generator (srkit.train.build.ema_view)
    check_expression(config.train.generator_input, functions, f"{source}: train.generator_input")
    for index, term in enumerate(config.losses):
        for field_name, value in term:
            values = value if isinstance(value, (list, tuple)) else [value]
            if field_name in ("input", "target", "real", "fake", "source", "reference"):
                for expression in values:
                    # Malformed or unknown first; `ema` without train.ema gets its own advice.
                    where = f"{source}: losses.{index}.{field_name}"
                    check_expression(expression, functions | {"ema"}, where)
                    if "ema" not in functions and "ema" in parse_expression(expression)[:-1]:
                        fail(
                            f"losses.{index}.{field_name}: '{expression}' reads the averaged "
                            "generator, which needs train.ema (e.g. {decay: 0.999})"
                        )

    for name, picture in config.logging.pictures.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            fail(
                f"logging.pictures.{name}: picture names become file names; use letters, "
                "digits, '_' or '-'"
            )
        for index, expression in enumerate(picture.tensors):
            check_expression(
                expression, functions, f"{source}: logging.pictures.{name}.tensors.{index}"
            )

    schedules = [("train.schedule", config.train.schedule)] + [
        (f"train.optim.{n}.schedule", o.schedule)
        for n, o in config.train.optim.items()
        if o.schedule
    ]
    for where, schedule in schedules:
        if schedule.type == "multistep" and len(schedule.restart_weights) > len(schedule.restarts):
            fail(
                f"{where}.restart_weights: more weights ({len(schedule.restart_weights)}) than restarts"
            )
        if schedule.type == "cosine" and len(schedule.restart_weights) > len(schedule.periods):
            fail(
                f"{where}.restart_weights: more weights ({len(schedule.restart_weights)}) than periods"
            )
