"""The catalogue of user errors srkit recognises: one source for the test and for docs/errors.md.

Each :class:`Case` makes a small workspace with one mistake in it and returns the ``srkit``
command line that meets the mistake. :func:`run_case` runs it in-process and returns what the
user saw. ``tests/test_error_catalogue.py`` checks every case (exit status 2, one line, no
traceback, nothing left on disk, the documented message); ``python scripts/errors_doc.py``
regenerates ``docs/errors.md`` from the same cases.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conftest import BASE_CONFIG, write_photo_like

ROOT_PLACEHOLDER = "<tmp>"
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One user mistake.

    Attributes:
        id: stable name (the heading in docs/errors.md).
        area: "config", "data", "checkpoint" or "cli".
        mistake: what the user did, in words, for the docs.
        setup: makes the mistake inside a workspace folder; returns the srkit arguments.
        expect: text the message must contain (the essence, checked even if the docs drift).
        mask: regexes for parts of the message that come from libraries or vary by platform;
            they are replaced by "…" before the message is compared with the docs.
        skip: returns a reason to skip this case on this machine, or None.
        context: makes the context the command runs in (e.g. an optional dependency made
            unimportable), or None.
    """

    id: str
    area: str
    mistake: str
    setup: Callable[[Path], list[str]]
    expect: str
    mask: tuple[str, ...] = ()
    skip: Callable[[], str | None] = field(default=lambda: None)
    context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None


@dataclass
class Outcome:
    status: int
    lines: list[str]
    error_line: str  # the line the user reads, with the workspace path as <tmp>
    documented: str  # error_line with the masks applied (what docs/errors.md shows)


# --------------------------------------------------------------------------- workspace helpers


def images(folder: Path, count: int = 6, size: tuple[int, int] = (64, 64)) -> Path:
    for index in range(count):
        write_photo_like(folder / f"img{index}.png", size, seed=index)
    return folder


def base_config(ws: Path) -> dict[str, Any]:
    raw = copy.deepcopy(BASE_CONFIG)
    train = ws / "train"
    if not train.exists():
        images(train)
    raw["data"] = {"train": copy.deepcopy(BASE_CONFIG["data"]["train"])}
    raw["data"]["train"]["hr"] = str(train)
    raw["output_dir"] = str(ws / "runs")
    return raw


def write_config(ws: Path, raw: dict[str, Any], name: str = "run.yml") -> Path:
    path = ws / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_with(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], list[str]]:
    """Setup: the base config changed by ``change(raw)``, trained with ``srkit train``."""

    def setup(ws: Path) -> list[str]:
        raw = base_config(ws)
        change(raw)
        return ["train", str(write_config(ws, raw))]

    return setup


def gan(raw: dict[str, Any], discriminator: str = "vgg", gan_type: str = "gan") -> None:
    raw["networks"]["discriminator"] = {"type": discriminator, "nf": 4}
    raw["losses"].append({"type": "gan", "weight": 0.1, "gan_type": gan_type})
    raw["losses"][-1]["discriminator"] = "discriminator"


@functools.cache
def _library() -> Path:
    """A finished one-step run of the base config (scale 2, rrdb nf 8), made once."""
    from srkit.config import validate_config
    from srkit.train.trainer import Trainer

    root = Path(tempfile.mkdtemp(prefix="srkit-catalogue-"))
    raw = base_config(root)
    raw["train"]["iterations"] = 1
    Trainer(validate_config(raw), quiet=True).run()
    return root / "runs" / raw["name"] / "checkpoints" / "step_00000001"


def checkpoint_copy(ws: Path, run: str = "test") -> Path:
    """A complete checkpoint of the base config inside the workspace's run folder."""
    target = ws / "runs" / run / "checkpoints" / "step_00000001"
    shutil.copytree(_library(), target)
    return target


def weights_copy(ws: Path) -> Path:
    target = ws / "weights" / "generator.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(_library() / "generator.safetensors", target)
    return target


class _Exploit:
    """Unpickling this would run code (create a file); loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "code ran"))


def foreign_pickle(ws: Path) -> Path:
    path = ws / "weights" / "model.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(
            {"params": {"conv_first.weight": _Exploit(ws / "CODE_RAN")}}, handle, protocol=2
        )
    return path


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def setting(*pairs: tuple[str, Any]) -> Callable[[Path], list[str]]:
    return train_with(lambda raw: [_set(raw, key, value) for key, value in pairs])


# --------------------------------------------------------------------------- the cases

_CASES: list[Case] = []


def case(id: str, area: str, mistake: str, expect: str, **options: Any):
    def register(setup: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        _CASES.append(Case(id, area, mistake, setup, expect, **options))
        return setup

    return register


def simple(id: str, area: str, mistake: str, expect: str, setup, **options: Any) -> None:
    _CASES.append(Case(id, area, mistake, setup, expect, **options))


# Config files ---------------------------------------------------------------------------

simple(
    "config-file-missing",
    "config",
    "The config file named on the command line does not exist.",
    "config file '<tmp>/nope.yml' does not exist",
    lambda ws: ["train", str(ws / "nope.yml")],
)


@case(
    "config-not-yaml",
    "config",
    "The config file is not valid YAML (two keys on one line).",
    "run.yml: line 3: not valid YAML (mapping values are not allowed here)",
)
def _(ws: Path) -> list[str]:
    path = ws / "run.yml"
    path.write_text("name: x\nscale: 2\ntrain: iterations: 3\n")
    return ["train", str(path)]


@case(
    "config-not-a-mapping",
    "config",
    "The config file holds a list (or a single value) instead of keys.",
    "expected a mapping of keys at the top level",
)
def _(ws: Path) -> list[str]:
    path = ws / "run.yml"
    path.write_text("- name\n- scale\n")
    return ["train", str(path)]


@case(
    "config-python-tag",
    "config",
    "The YAML asks to build a Python object (`!!python/object/apply`); it is never executed.",
    "not valid YAML",
    mask=(r"(?<=not valid YAML \().*(?=\)$)",),
)
def _(ws: Path) -> list[str]:
    path = ws / "run.yml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {ws / 'CODE_RAN'}']\n")
    return ["train", str(path)]


simple(
    "config-unknown-key",
    "config",
    "A misspelt key.",
    "train.iteratoins: unknown key 'iteratoins' (did you mean 'iterations'?)",
    setting(("train.iteratoins", 5)),
)
simple(
    "config-unknown-network-key",
    "config",
    "A key the network's constructor does not take.",
    "networks.generator.nff: unknown key 'nff' (did you mean 'nf'?)",
    setting(("networks.generator.nff", 5)),
)
simple(
    "config-unknown-loss-key",
    "config",
    "A misspelt key inside a loss term.",
    "losses.0.wieght: unknown key 'wieght' (did you mean 'weight'?)",
    setting(("losses.0.wieght", 1)),
)
simple(
    "config-wrong-type",
    "config",
    "A value of the wrong type.",
    "data.train.batch_size: expected an integer, got 'many' (str)",
    setting(("data.train.batch_size", "many")),
)
simple(
    "config-missing-key",
    "config",
    "A required key is missing.",
    "train.iterations: required key missing",
    train_with(lambda raw: raw["train"].pop("iterations")),
)
simple(
    "config-out-of-range",
    "config",
    "A value outside its range (megabatch must be at least 1).",
    "train.megabatch: input should be greater than 0, got 0",
    setting(("train.megabatch", 0)),
)
simple(
    "config-out-of-range-float",
    "config",
    "An EMA decay of 1 or more.",
    "train.ema.decay: input should be less than 1, got 1.5",
    setting(("train.ema", {"decay": 1.5})),
)
simple(
    "config-negative-learning-rate",
    "config",
    "A learning rate that is not positive.",
    "train.optim.generator.lr: input should be greater than 0, got -0.001",
    setting(("train.optim.generator.lr", -1e-3)),
)
simple(
    "config-bad-choice",
    "config",
    "A value that is not one of the allowed choices.",
    "train.precision: expected one of 'auto', 'fp32', 'bf16' or 'fp16', got 'fp8'",
    setting(("train.precision", "fp8")),
)
simple(
    "config-bad-scale",
    "config",
    "A scale srkit does not support.",
    "scale: expected one of 1, 2, 3, 4 or 8, got 5",
    setting(("scale", 5)),
)
simple(
    "config-bad-nan-policy",
    "config",
    "An unknown NaN policy.",
    "train.nan_policy: expected one of 'abort' or 'skip', got 'ignore'",
    setting(("train.nan_policy", "ignore")),
)
simple(
    "config-unknown-network-type",
    "config",
    "A misspelt network type.",
    "networks.generator.type: unknown network type 'rrbd' (did you mean 'rrdb'?)",
    setting(("networks.generator.type", "rrbd")),
    mask=(r"(?<=; valid: ).*$",),
)
simple(
    "config-unknown-loss-type",
    "config",
    "A misspelt loss term type.",
    "losses.0.type: unknown loss term type 'pixle' (did you mean 'pixel'?)",
    setting(("losses.0.type", "pixle")),
    mask=(r"(?<=; valid: ).*$",),
)
simple(
    "config-no-generator",
    "config",
    "No network is called `generator`.",
    "networks: a network named 'generator' is required (have: gen)",
    train_with(lambda raw: raw.update(networks={"gen": raw["networks"]["generator"]})),
)
simple(
    "config-discriminator-as-generator",
    "config",
    "The generator is a discriminator type.",
    "networks.generator.type: 'vgg' is a discriminator, not a generator",
    setting(("networks.generator", {"type": "vgg", "nf": 4})),
)
simple(
    "config-missing-discriminator",
    "config",
    "A GAN term names a discriminator that is not in `networks`.",
    "losses.1.discriminator: no network named 'disc' (networks: generator)",
    train_with(
        lambda raw: raw["losses"].append({"type": "gan", "weight": 0.1, "discriminator": "disc"})
    ),
)
simple(
    "config-generator-as-discriminator",
    "config",
    "A GAN term names a generator as its discriminator.",
    "losses.1.discriminator: network 'other' is a generator, not a discriminator",
    train_with(
        lambda raw: (
            raw["networks"].update(other=dict(raw["networks"]["generator"])),
            raw["losses"].append({"type": "gan", "weight": 0.1, "discriminator": "other"}),
        )
    ),
)
simple(
    "config-pixgan-vector-discriminator",
    "config",
    "pixgan with a discriminator that outputs one logit per image.",
    "losses.1: term 'gan' needs a discriminator that outputs a logit map (pixdisc, unet, "
    "switched), but 'discriminator' is vgg, which outputs one logit per image",
    train_with(lambda raw: gan(raw, "vgg", "pixgan")),
)
simple(
    "config-gan-penalty-negative",
    "config",
    "A negative R1 (or R2) gradient-penalty weight.",
    "losses.1.penalty.r1_gamma: input should be greater than or equal to 0, got -10",
    train_with(lambda raw: (gan(raw), _set(raw, "losses.1.penalty", {"r1_gamma": -10}))),
)
simple(
    "config-gan-penalty-interval",
    "config",
    "A lazy-regularisation interval below 1.",
    "losses.1.penalty.interval: input should be greater than or equal to 1, got 0",
    train_with(
        lambda raw: (gan(raw), _set(raw, "losses.1.penalty", {"r1_gamma": 10, "interval": 0}))
    ),
)
simple(
    "config-gan-real-label-out-of-range",
    "config",
    "A label-smoothing target for real samples outside (0, 1].",
    "losses.1.real_label: input should be less than or equal to 1, got 1.1",
    train_with(lambda raw: (gan(raw), _set(raw, "losses.1.real_label", 1.1))),
)
simple(
    "config-gan-real-label-hinge",
    "config",
    "Label smoothing on a hinge GAN term, which has no targets.",
    "losses.1.real_label: hinge has no real target to smooth; use 1 or another gan_type, got 0.9",
    train_with(lambda raw: (gan(raw, "vgg", "hinge"), _set(raw, "losses.1.real_label", 0.9))),
)
simple(
    "config-spectral-norm-not-discriminator",
    "config",
    "`spectral_norm` on a network that is not a discriminator.",
    "networks.generator.spectral_norm: unknown key 'spectral_norm'",
    setting(("networks.generator.spectral_norm", True)),
    mask=(r"(?<=unknown key 'spectral_norm'); valid keys here: .*$",),
)
simple(
    "config-ema-view-without-ema",
    "config",
    "A loss term reading the averaged generator (`ema(lr)`, e.g. LDL's reference) in a run "
    "without `train.ema`.",
    "losses.1.reference: 'ema(lr)' reads the averaged generator, which needs train.ema",
    train_with(lambda raw: raw["losses"].append({"type": "ldl", "weight": 1.0})),
)
simple(
    "config-ldl-even-window",
    "config",
    "An LDL window without a centre pixel.",
    "losses.1.window: the window needs a centre pixel: use an odd side, got 4",
    train_with(lambda raw: raw["losses"].append({"type": "ldl", "window": 4})),
)
simple(
    "config-megabatch-not-dividing",
    "config",
    "`train.megabatch` does not divide the batch size.",
    "train.megabatch: 3 does not divide data.train.batch_size 4",
    setting(("train.megabatch", 3)),
)
simple(
    "config-patch-not-multiple-of-scale",
    "config",
    "The patch size is not a multiple of the scale.",
    "data.train.patch_size: 30 is not a multiple of scale 4",
    setting(("scale", 4), ("data.train.patch_size", 30)),
)
simple(
    "config-patch-not-multiple-of-32",
    "config",
    "With a discriminator, the patch size is not a multiple of 32.",
    "data.train.patch_size: 48 is not a multiple of 32, which the discriminators need",
    train_with(lambda raw: (gan(raw), _set(raw, "data.train.patch_size", 48))),
)
simple(
    "config-degradation-probability",
    "config",
    "A degradation stage's probability outside [0, 1].",
    "data.train.degradation.first.noise.probability: input should be less than or equal to 1, "
    "got 1.5",
    setting(("data.train.degradation", {"first": {"noise": {"probability": 1.5}}})),
)
simple(
    "config-degradation-range-reversed",
    "config",
    "A degradation range whose minimum is above its maximum.",
    "data.train.degradation.first.noise.gaussian_sigma: range [min, max] has min 30.0 above "
    "max 1.0, got [30, 1]",
    setting(("data.train.degradation", {"first": {"noise": {"gaussian_sigma": [30, 1]}}})),
)
simple(
    "config-degradation-even-kernel",
    "config",
    "An even blur kernel size (a kernel needs a centre pixel).",
    "data.train.degradation.first.blur.kernel_sizes: kernel sizes must be odd (a kernel has a "
    "centre pixel), not 8, got [8, 21]",
    setting(("data.train.degradation", {"first": {"blur": {"kernel_sizes": [8, 21]}}})),
)
simple(
    "config-degradation-kernel-too-large",
    "config",
    "A blur kernel as large as the training patch.",
    "data.train.degradation.first.blur.kernel_sizes: kernel side 41 is not smaller than "
    "data.train.patch_size 32",
    setting(("data.train.degradation", {"first": {"blur": {"kernel_sizes": [7, 41]}}})),
)
simple(
    "config-degradation-unknown-stage",
    "config",
    "A misspelt degradation stage.",
    "data.train.degradation.first.jepg: unknown key 'jepg' (did you mean 'jpeg'?)",
    setting(("data.train.degradation", {"first": {"jepg": {}}})),
)
simple(
    "config-degradation-unknown-preset",
    "config",
    "A degradation preset that does not exist.",
    "data.train.degradation.preset: expected one of 'realesrgan', got 'realesrgan2'",
    setting(("data.train.degradation", {"preset": "realesrgan2"})),
)
simple(
    "config-duplicate-loss-names",
    "config",
    "Two loss terms with the same name.",
    "losses: two terms are called 'pixel'; give one of them a distinct `name`",
    train_with(lambda raw: raw["losses"].append({"type": "pixel", "weight": 0.5})),
)
simple(
    "config-optimizer-for-untrained-network",
    "config",
    "Optimizer settings for a network that is not trained.",
    "train.optim.discriminator: 'discriminator' is not a trained network (trained: generator)",
    setting(("train.optim.discriminator", {"lr": 1e-4})),
)
simple(
    "config-unknown-view",
    "config",
    "A tensor expression uses an unknown function.",
    "losses.0.input: unknown function 'gard' in 'gard(sr)'",
    setting(("losses.0.input", "gard(sr)")),
    mask=(r"(?<=; available: ).*$",),
)
simple(
    "config-malformed-expression",
    "config",
    "A tensor expression is not a name or nested calls.",
    "losses.0.input: malformed tensor expression 'detail(sr'; write a name such as 'sr' or "
    "nested calls such as 'grad(sr)'",
    setting(("losses.0.input", "detail(sr")),
)
simple(
    "config-restart-weights",
    "config",
    "More restart weights than restarts in a schedule.",
    "train.schedule.restart_weights: more weights (2) than restarts",
    setting(("train.schedule", {"type": "multistep", "restarts": [10], "restart_weights": [1, 1]})),
)
simple(
    "config-cosine-period-zero",
    "config",
    "A cosine period of zero steps (it would train at `eta_min` throughout).",
    "train.schedule.periods.1: input should be greater than 0, got 0",
    setting(("train.schedule", {"type": "cosine", "periods": [100, 0]})),
)
simple(
    "config-fp16-on-cpu",
    "config",
    "fp16 training on a machine without a CUDA GPU.",
    "train.precision: fp16 needs a CUDA GPU; use bf16 on CPU",
    setting(("train.precision", "fp16"), ("train.device", "cpu")),
)


def _has_cuda() -> str | None:
    import torch

    return "a CUDA device is present" if torch.cuda.is_available() else None


simple(
    "config-cuda-unavailable",
    "config",
    "`train.device: cuda` without a CUDA device.",
    "train.device: cuda requested but no CUDA device is available",
    setting(("train.device", "cuda")),
    skip=_has_cuda,
)


@case(
    "config-set-malformed",
    "config",
    "A `--set` override without `=`.",
    "--set 'train.iterations': expected KEY=VALUE",
)
def _(ws: Path) -> list[str]:
    return ["train", str(write_config(ws, base_config(ws))), "--set", "train.iterations"]


@case(
    "config-set-bad-index",
    "config",
    "A `--set` override indexes past the end of a list.",
    "--set 'losses.3.weight=1': losses is a list of 1; use an index 0..0",
)
def _(ws: Path) -> list[str]:
    return ["train", str(write_config(ws, base_config(ws))), "--set", "losses.3.weight=1"]


# Network arguments: one out-of-range value per network type, checked before anything is built.


@case(
    "config-network-rrdb-out-of-range",
    "config",
    "`srkit train configs/quickstart.yml --set networks.generator.nf=-4`: a negative width.",
    "quickstart.yml: networks.generator.nf: input should be greater than 0, got -4",
)
def _(ws: Path) -> list[str]:
    # The shipped quickstart, with its run folder moved into the workspace.
    text = (REPO / "configs" / "quickstart.yml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^output_dir: .*$", f"output_dir: {ws / 'runs'}", text)
    (ws / "quickstart.yml").write_text(text, encoding="utf-8")
    return ["train", str(ws / "quickstart.yml"), "--set", "networks.generator.nf=-4"]


def feature_network(network: dict[str, Any]) -> Callable[[Path], list[str]]:
    """Setup: the base config with a frozen helper network ``features``."""
    return train_with(lambda raw: raw["networks"].update(features=network))


def discriminator_with(type_: str, key: str, value: Any) -> Callable[[Path], list[str]]:
    return train_with(
        lambda raw: (gan(raw, type_), _set(raw, f"networks.discriminator.{key}", value))
    )


simple(
    "config-network-spsr-out-of-range",
    "config",
    "An SPSR generator with fewer than 4 trunk blocks (its gradient branch taps every nb/4).",
    "networks.generator.nb: input should be greater than or equal to 4, got 2",
    setting(("networks.generator", {"type": "spsr", "nf": 4, "nb": 2, "gc": 4})),
)
simple(
    "config-network-srg2-out-of-range",
    "config",
    "An SRG2 multiplexer width that is not a multiple of 4.",
    "networks.generator.mux_filters: input should be a multiple of 4, got 30",
    setting(("networks.generator", {"type": "srg2", "nf": 8, "mux_filters": 30})),
)
simple(
    "config-network-spsr_switched-out-of-range",
    "config",
    "A switched SPSR whose gradient switch has no transforms to choose from.",
    "networks.generator.grad_transforms: input should be greater than 0, got 0",
    setting(("networks.generator", {"type": "spsr_switched", "nf": 8, "grad_transforms": 0})),
)
simple(
    "config-network-spsr3-out-of-range",
    "config",
    "An SPSR3 whose reference encoder has width 0.",
    "networks.generator.ref_nf: input should be greater than 0, got 0",
    setting(("networks.generator", {"type": "spsr3", "nf": 8, "ref_nf": 0})),
)
simple(
    "config-network-compact-out-of-range",
    "config",
    "A compact generator with a negative number of body convolutions.",
    "networks.generator.num_conv: input should be greater than or equal to 0, got -1",
    setting(("networks.generator", {"type": "compact", "num_feat": 4, "num_conv": -1})),
)
simple(
    "config-network-vgg-out-of-range",
    "config",
    "A VGG discriminator with a hidden layer of width 0.",
    "networks.discriminator.hidden: input should be greater than 0, got 0",
    discriminator_with("vgg", "hidden", 0),
)
simple(
    "config-network-pixdisc-out-of-range",
    "config",
    "A pixel discriminator of width 0.",
    "networks.discriminator.nf: input should be greater than 0, got 0",
    discriminator_with("pixdisc", "nf", 0),
)
simple(
    "config-network-unet-out-of-range",
    "config",
    "A u-net discriminator output reduction it does not offer.",
    "networks.discriminator.reduction: expected one of 1, 2 or 4, got 3",
    discriminator_with("unet", "reduction", 3),
)
simple(
    "config-network-switched-out-of-range",
    "config",
    "A switched discriminator whose temperature starts below 1 (it anneals down to 1).",
    "networks.discriminator.temperature: input should be greater than or equal to 1, got 0.5",
    discriminator_with("switched", "temperature", 0.5),
)
simple(
    "config-network-featurenet-out-of-range",
    "config",
    "A feature net predicting a layer its VGG layout does not have (VGG16 has no relu3_4).",
    "networks.features.layer: 'relu3_4' is not a vgg16 layer (did you mean 'relu3_3'?)",
    feature_network({"type": "featurenet", "arch": "vgg16", "layer": "relu3_4"}),
    mask=(r"(?<=; valid: ).*$",),
)
simple(
    "config-network-vgg19_features-out-of-range",
    "config",
    "A VGG19 feature layer that does not exist.",
    "networks.features.layer: 'conv6_1' is not a vgg19 layer",
    feature_network({"type": "vgg19_features", "layer": "conv6_1"}),
    mask=(r"(?<=; valid: ).*$",),
)
simple(
    "config-network-vgg16_features-out-of-range",
    "config",
    "A VGG19 layer name on a VGG16 feature network.",
    "networks.features.layer: 'conv5_4' is not a vgg16 layer (did you mean 'conv5_3'?)",
    feature_network({"type": "vgg16_features", "layer": "conv5_4"}),
    mask=(r"(?<=; valid: ).*$",),
)
simple(
    "config-network-scale-unsupported",
    "config",
    "A scale the generator cannot upscale by (its upsampler doubles).",
    "scale: 3 is not supported by networks.generator (rrdb supports 1, 2, 4, 8)",
    setting(("scale", 3), ("data.train.patch_size", 48)),
)
simple(
    "config-network-arguments-conflict",
    "config",
    "Network arguments that do not go together (RRDB's pixel-unshuffle layout at scale 4).",
    "networks.generator.pixel_unshuffle: true needs scale 1 or 2, not 4",
    setting(("scale", 4), ("networks.generator.pixel_unshuffle", True)),
)


# Data ------------------------------------------------------------------------------------


@case(
    "data-missing-folder",
    "data",
    "The training folder does not exist.",
    "data.train: data folder '<tmp>/nowhere' does not exist",
)
def _(ws: Path) -> list[str]:
    raw = base_config(ws)
    raw["data"]["train"]["hr"] = str(ws / "nowhere")
    return ["train", str(write_config(ws, raw))]


@case(
    "data-not-a-folder",
    "data",
    "The training 'folder' is a file.",
    "data.train: data folder '<tmp>/train/img0.png' is not a folder",
)
def _(ws: Path) -> list[str]:
    raw = base_config(ws)
    raw["data"]["train"]["hr"] = str(ws / "train" / "img0.png")
    return ["train", str(write_config(ws, raw))]


@case(
    "data-empty-folder",
    "data",
    "The training folder holds no image files.",
    "data.train: no usable images in '<tmp>/empty' (no image files",
)
def _(ws: Path) -> list[str]:
    (ws / "empty").mkdir()
    (ws / "empty" / "notes.txt").write_text("not an image")
    raw = base_config(ws)
    raw["data"]["train"]["hr"] = str(ws / "empty")
    return ["train", str(write_config(ws, raw))]


@case(
    "data-unreadable-files",
    "data",
    "Every image in the folder is unreadable (empty or truncated files).",
    "data.train: no usable images in '<tmp>/broken' (2 files skipped:",
)
def _(ws: Path) -> list[str]:
    broken = ws / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"")
    write_photo_like(broken / "b.jpg", (64, 64), seed=1)
    (broken / "b.jpg").write_bytes((broken / "b.jpg").read_bytes()[:300])
    raw = base_config(ws)
    raw["data"]["train"]["hr"] = str(broken)
    return ["train", str(write_config(ws, raw))]


@case(
    "data-images-too-small",
    "data",
    "Every image is smaller than the training patch.",
    "too small (20x20; need at least 32x32",
)
def _(ws: Path) -> list[str]:
    images(ws / "small", 2, (20, 20))
    raw = base_config(ws)
    raw["data"]["train"]["hr"] = str(ws / "small")
    return ["train", str(write_config(ws, raw))]


@case(
    "data-lr-hr-size-mismatch",
    "data",
    "A paired LR image does not have HR size / scale.",
    "paired images 'img0.png': HR 64x64 is not 2 x LR 30x32",
)
def _(ws: Path) -> list[str]:
    images(ws / "lr", 6, (32, 30))
    raw = base_config(ws)
    raw["data"]["train"]["lr"] = str(ws / "lr")
    return ["train", str(write_config(ws, raw))]


@case(
    "data-mixed-scales",
    "data",
    "The LR folder mixes scales (some images are 1/4 of their HR, the config says 2).",
    "HR 64x64 is 4 x LR 16x16, not 2 x",
)
def _(ws: Path) -> list[str]:
    images(ws / "lr", 6, (32, 32))
    images(ws / "lr", 1, (16, 16))  # img0 is now x4
    raw = base_config(ws)
    raw["data"]["train"]["lr"] = str(ws / "lr")
    return ["train", str(write_config(ws, raw))]


@case(
    "data-missing-lr-partner",
    "data",
    "An HR image has no LR image of the same name.",
    "1 HR image(s) in '<tmp>/train' have no LR partner in '<tmp>/lr', e.g. 'img5.png'",
)
def _(ws: Path) -> list[str]:
    images(ws / "lr", 5, (32, 32))
    raw = base_config(ws)
    raw["data"]["train"]["lr"] = str(ws / "lr")
    return ["train", str(write_config(ws, raw))]


@case(
    "data-validation-folder-missing",
    "data",
    "The validation folder does not exist (found at start-up, not at the first validation).",
    "data.val: data folder '<tmp>/val' does not exist",
)
def _(ws: Path) -> list[str]:
    raw = base_config(ws)
    raw["data"]["val"] = {"hr": str(ws / "val")}
    return ["train", str(write_config(ws, raw))]


# Checkpoints and weights ------------------------------------------------------------------


@case(
    "checkpoint-resume-missing",
    "checkpoint",
    "`--resume` names a folder that does not exist.",
    "cannot resume from '<tmp>/runs/test/checkpoints/step_00000100': no such folder",
)
def _(ws: Path) -> list[str]:
    path = ws / "runs" / "test" / "checkpoints" / "step_00000100"
    return ["train", str(write_config(ws, base_config(ws))), "--resume", str(path)]


@case(
    "checkpoint-resume-not-a-checkpoint",
    "checkpoint",
    "`--resume` names a folder that is not a checkpoint.",
    "cannot resume from '<tmp>/train': no manifest.json, so not a complete srkit checkpoint",
)
def _(ws: Path) -> list[str]:
    return ["train", str(write_config(ws, base_config(ws))), "--resume", str(ws / "train")]


@case(
    "checkpoint-resume-truncated",
    "checkpoint",
    "`--resume` names a checkpoint with a truncated file.",
    "generator.safetensors has",
    mask=(r"\d+(?= bytes)", r"(?<=says )\d+"),
)
def _(ws: Path) -> list[str]:
    folder = checkpoint_copy(ws)
    weights = folder / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return ["train", str(write_config(ws, base_config(ws))), "--resume", str(folder)]


@case(
    "checkpoint-resume-damaged",
    "checkpoint",
    "`--resume` names a checkpoint whose file was changed (same size, different bytes).",
    "generator.safetensors does not match its checksum (damaged)",
)
def _(ws: Path) -> list[str]:
    folder = checkpoint_copy(ws)
    weights = folder / "generator.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return ["train", str(write_config(ws, base_config(ws))), "--resume", str(folder)]


@case(
    "checkpoint-resume-wrong-architecture",
    "checkpoint",
    "`--resume` with a config whose generator differs from the checkpoint's.",
    "its generator was saved with nf=8, the config has nf=16; resume with the config the run "
    "was trained with",
)
def _(ws: Path) -> list[str]:
    folder = checkpoint_copy(ws)
    raw = base_config(ws)
    raw["networks"]["generator"]["nf"] = 16
    return ["train", str(write_config(ws, raw)), "--resume", str(folder)]


@case(
    "checkpoint-resume-wrong-scale",
    "checkpoint",
    "`--resume` with a config of another scale than the checkpoint's.",
    "its generator was saved with scale=2, the config has scale=4",
)
def _(ws: Path) -> list[str]:
    folder = checkpoint_copy(ws)
    raw = base_config(ws)
    raw["scale"] = 4
    return ["train", str(write_config(ws, raw)), "--resume", str(folder)]


@case(
    "checkpoint-resume-auto-all-damaged",
    "checkpoint",
    "`--resume auto` finds checkpoints, but none is complete.",
    "no usable checkpoint in '<tmp>/runs/test/checkpoints' (step_00000001: training_state.pt "
    "is missing)",
)
def _(ws: Path) -> list[str]:
    folder = checkpoint_copy(ws)
    (folder / "training_state.pt").unlink()
    return ["train", str(write_config(ws, base_config(ws))), "--resume", "auto"]


@case(
    "checkpoint-fresh-start-over-a-run",
    "checkpoint",
    "Starting a new run (no `--resume`) where a run with checkpoints already is.",
    "already has checkpoints; continue it with --resume auto",
)
def _(ws: Path) -> list[str]:
    checkpoint_copy(ws)
    return ["train", str(write_config(ws, base_config(ws)))]


@case(
    "checkpoint-init-missing",
    "checkpoint",
    "`networks.generator.init` names a file that does not exist.",
    "networks.generator.init: weights file '<tmp>/nowhere.safetensors' does not exist",
)
def _(ws: Path) -> list[str]:
    raw = base_config(ws)
    raw["networks"]["generator"]["init"] = str(ws / "nowhere.safetensors")
    return ["train", str(write_config(ws, raw))]


@case(
    "checkpoint-init-truncated",
    "checkpoint",
    "`networks.generator.init` is a truncated .safetensors file.",
    "networks.generator.init: cannot read weights file '<tmp>/weights/generator.safetensors': "
    "it is a safetensors file cut short",
    mask=(r"\d+(?= bytes)",),
)
def _(ws: Path) -> list[str]:
    weights = weights_copy(ws)
    weights.write_bytes(weights.read_bytes()[:200])
    raw = base_config(ws)
    raw["networks"]["generator"]["init"] = str(weights)
    return ["train", str(write_config(ws, raw))]


@case(
    "checkpoint-init-not-weights",
    "checkpoint",
    "`networks.generator.init` is not a weights file at all (a text file).",
    "networks.generator.init: '<tmp>/weights/model.pth' is not a weights file: it is text, "
    "starting 'these are not weights'; expected a .safetensors file",
)
def _(ws: Path) -> list[str]:
    path = ws / "weights" / "model.pth"
    path.parent.mkdir()
    path.write_text("these are not weights\n")
    raw = base_config(ws)
    raw["networks"]["generator"]["init"] = str(path)
    return ["train", str(write_config(ws, raw))]


@case(
    "checkpoint-init-foreign-pickle",
    "checkpoint",
    "`networks.generator.init` is a pickle that would run code when loaded; it is refused "
    "and nothing runs.",
    "refusing to load '<tmp>/weights/model.pth': it holds Python objects that could run code "
    "when unpickled (it calls",
)
def _(ws: Path) -> list[str]:
    raw = base_config(ws)
    raw["networks"]["generator"]["init"] = str(foreign_pickle(ws))
    return ["train", str(write_config(ws, raw))]


@case(
    "checkpoint-init-wrong-architecture",
    "checkpoint",
    "`networks.generator.init` holds weights of a differently sized network.",
    "networks.generator.init: '<tmp>/weights/generator.safetensors' was saved with nf=8, "
    "the config has nf=16",
)
def _(ws: Path) -> list[str]:
    raw = base_config(ws)
    raw["networks"]["generator"].update(nf=16, init=str(weights_copy(ws)))
    return ["train", str(write_config(ws, raw))]


@case(
    "checkpoint-init-community-wrong-shape",
    "checkpoint",
    "`networks.generator.init` is a community model (Real-ESRGAN compact .pth, no srkit "
    "metadata) of another depth than the config's network.",
    "networks.generator.init: '<tmp>/weights/compact.pth' holds a compact network with "
    "num_conv=2, the config has num_conv=1",
)
def _(ws: Path) -> list[str]:
    import torch

    from srkit.nets import build_network

    path = ws / "weights" / "compact.pth"
    path.parent.mkdir()
    state = build_network("compact", scale=2, num_feat=4, num_conv=2).state_dict()
    torch.save({"params_ema": state}, path)
    raw = base_config(ws)
    raw["networks"]["generator"] = {
        "type": "compact",
        "num_feat": 4,
        "num_conv": 1,
        "init": str(path),
    }
    return ["train", str(write_config(ws, raw))]


@case(
    "checkpoint-init-wrong-scale",
    "checkpoint",
    "`networks.generator.init` holds weights for another scale.",
    "was saved with scale=2, the config has scale=4",
)
def _(ws: Path) -> list[str]:
    raw = base_config(ws)
    raw["scale"] = 4
    raw["networks"]["generator"]["init"] = str(weights_copy(ws))
    return ["train", str(write_config(ws, raw))]


@case(
    "checkpoint-init-other-network",
    "checkpoint",
    "`networks.discriminator.init` points at a generator's weights.",
    "networks.discriminator.init: '<tmp>/weights/generator.safetensors' is a 'rrdb' network, "
    "the config builds 'vgg'",
)
def _(ws: Path) -> list[str]:
    raw = base_config(ws)
    gan(raw)
    raw["data"]["train"]["patch_size"] = 32
    raw["networks"]["discriminator"]["init"] = str(weights_copy(ws))
    return ["train", str(write_config(ws, raw))]


@case(
    "checkpoint-info-foreign-pickle",
    "checkpoint",
    "`srkit info` on a pickle that would run code.",
    "refusing to load '<tmp>/weights/model.pth'",
    mask=(r"(?<=unpickled \().*?(?=\); convert)",),
)
def _(ws: Path) -> list[str]:
    return ["info", str(foreign_pickle(ws))]


@case(
    "checkpoint-info-image",
    "checkpoint",
    "`srkit info` on a photo instead of a weights file.",
    "'<tmp>/photo.png' is not a weights file: it is a PNG image; expected a .safetensors file, "
    "a PyTorch state dict (.pth, .pt, .ckpt, .bin) or an srkit checkpoint folder",
)
def _(ws: Path) -> list[str]:
    write_photo_like(ws / "photo.png", (32, 32), seed=0)
    return ["info", str(ws / "photo.png")]


@case(
    "checkpoint-upscale-image-as-model",
    "checkpoint",
    "`srkit upscale` with the photo where the model goes.",
    "'<tmp>/photo.png' is not a weights file: it is a PNG image; expected a .safetensors file, "
    "a PyTorch state dict (.pth, .pt, .ckpt, .bin) or an srkit checkpoint folder (the model "
    "comes first: srkit upscale MODEL INPUT... -o OUTPUT)",
)
def _(ws: Path) -> list[str]:
    write_photo_like(ws / "photo.png", (32, 32), seed=0)
    return ["upscale", str(ws / "photo.png"), str(ws / "photo.png"), "-o", str(ws / "out")]


@case(
    "checkpoint-export-not-weights",
    "checkpoint",
    "`srkit export` on a file that is not weights (an HTML page saved from a download link).",
    "'<tmp>/model.pth' is not a weights file: it is an HTML page (a download link that "
    "returned a web page?)",
)
def _(ws: Path) -> list[str]:
    (ws / "model.pth").write_text("<!DOCTYPE html>\n<html><head><title>Model</title></head></html>")
    return ["export", str(ws / "model.pth"), "--safetensors", str(ws / "out.safetensors")]


# Command line ---------------------------------------------------------------------------

simple(
    "cli-no-command",
    "cli",
    "`srkit` without a command.",
    "the following arguments are required: COMMAND",
    lambda ws: [],
)
simple(
    "cli-unknown-command",
    "cli",
    "A misspelt command.",
    "argument COMMAND: invalid choice: 'trian'",
    lambda ws: ["trian"],
    mask=(r"(?<=\(choose from ).*(?=\)$)",),
)
simple(
    "cli-train-missing-config",
    "cli",
    "`srkit train` without a config file.",
    "the following arguments are required: config",
    lambda ws: ["train"],
)
simple(
    "cli-resume-missing-value",
    "cli",
    "`--resume` without a value.",
    "argument --resume: expected one argument",
    lambda ws: ["train", str(write_config(ws, base_config(ws))), "--resume"],
)
simple(
    "cli-upscale-missing-output",
    "cli",
    "`srkit upscale` without `-o`.",
    "the following arguments are required: -o/--output",
    lambda ws: ["upscale", str(weights_copy(ws)), str(ws / "train")],
)


@case(
    "cli-output-dir-is-a-file",
    "cli",
    "`output_dir` is (or is inside) a file.",
    "output_dir: '<tmp>/results' is a file, not a folder",
)
def _(ws: Path) -> list[str]:
    (ws / "results").write_text("a file")
    raw = base_config(ws)
    raw["output_dir"] = str(ws / "results")
    return ["train", str(write_config(ws, raw))]


@case(
    "cli-upscale-output-is-a-file",
    "cli",
    "`srkit upscale -o` names a file.",
    "output '<tmp>/out.png' is a file, not a folder",
)
def _(ws: Path) -> list[str]:
    (ws / "out.png").write_text("a file")
    return ["upscale", str(weights_copy(ws)), str(ws / "train"), "-o", str(ws / "out.png")]


simple(
    "cli-validate-missing-folder",
    "cli",
    "`srkit validate --hr` names a folder that does not exist.",
    "data folder '<tmp>/nowhere' does not exist",
    lambda ws: ["validate", str(weights_copy(ws)), "--hr", str(ws / "nowhere")],
)

simple(
    "cli-validate-nothing-to-validate",
    "cli",
    "`srkit validate` is given neither a model nor `--bicubic`.",
    "srkit validate: name at least one model, or pass --bicubic",
    lambda ws: ["validate", "--hr", str(images(ws / "hr"))],
)


@case(
    "cli-validate-mixed-scales",
    "cli",
    "`srkit validate` is given models of different scales for one table.",
    "the models have different scales",
)
def _(ws: Path) -> list[str]:
    from srkit.nets.registry import build_network
    from srkit.weights import save_weights

    for scale in (2, 4):
        network = build_network("rrdb", nf=8, nb=1, gc=4, scale=scale)
        save_weights(ws / f"x{scale}.safetensors", network)
    return [
        "validate",
        str(ws / "x2.safetensors"),
        str(ws / "x4.safetensors"),
        "--hr",
        str(images(ws / "hr")),
    ]


@case(
    "cli-export-onnx-reference-generator",
    "cli",
    "`srkit export --onnx` is given an SPSR3 model, which takes a whole-image reference besides "
    "the image.",
    "ONNX export covers generators whose only input is the image",
)
def _(ws: Path) -> list[str]:
    from srkit.nets.registry import build_network
    from srkit.weights import save_weights

    network = build_network(
        "spsr3", nf=8, transforms=2, grad_transforms=1, trans_layers=1, mux_filters=8,
        reductions=1, ref_size=16, ref_nf=4, ref_reductions=1, scale=2,
    )  # fmt: skip
    save_weights(ws / "spsr3.safetensors", network)
    return ["export", str(ws / "spsr3.safetensors"), "--onnx", str(ws / "out" / "spsr3.onnx")]


simple(
    "data-prepare-no-photos",
    "data",
    "`srkit prepare` is pointed at a folder without images.",
    "no images (.bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp) in '<tmp>/empty' to prepare",
    lambda ws: (ws / "empty").mkdir() or ["prepare", str(ws / "empty"), "-o", str(ws / "ds")],
)


@case(
    "data-prepare-other-options",
    "data",
    "`srkit prepare` writes into a dataset folder prepared with other options.",
    "'<tmp>/ds/manifest.json' was written with other options (crop_size 32 there, 48 now)",
)
def _(ws: Path) -> list[str]:
    from srkit.data.prepare import PrepareOptions, prepare_dataset

    prepare_dataset(
        images(ws / "photos"), ws / "ds", PrepareOptions(scales=(2,), crop_size=32, step=32)
    )
    return [
        "prepare",
        str(ws / "photos"),
        "-o",
        str(ws / "ds"),
        "--scales",
        "2",
        "--crop-size",
        "48",
        "--step",
        "32",
    ]


simple(
    "data-prepare-bad-crop",
    "data",
    "`srkit prepare --crop-size` is not a multiple of the scales.",
    "--crop-size 50 is not a positive multiple of the scales (4)",
    lambda ws: ["prepare", str(images(ws / "photos")), "-o", str(ws / "ds"), "--crop-size", "50"],
)

CASES: list[Case] = list(_CASES)
AREAS = {
    "config": "Config files and `--set`",
    "data": "Data folders",
    "checkpoint": "Checkpoints and weights files",
    "cli": "Command line",
}


# --------------------------------------------------------------------------- running


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
    }


def run_case(case: Case, workspace: Path) -> tuple[Outcome, list[str]]:
    """Run ``case`` in ``workspace``; (what the user saw, files created or changed)."""
    from srkit.cli import main

    workspace.mkdir(parents=True, exist_ok=True)
    argv = case.setup(workspace)
    before = _snapshot(workspace)
    stream = io.StringIO()
    context = case.context() if case.context is not None else contextlib.nullcontext()
    with context, contextlib.redirect_stderr(stream), contextlib.redirect_stdout(stream):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse
            status = int(exit_.code or 0)
    after = _snapshot(workspace)
    changed = sorted(k for k in after if before.get(k) != after[k])
    changed += sorted(f"(deleted) {k}" for k in before if k not in after)
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    error = lines[-1] if lines else ""
    for root in (str(workspace.resolve()), str(workspace)):
        error = error.replace(root, ROOT_PLACEHOLDER)
    documented = error
    for pattern in case.mask:
        documented = re.sub(pattern, "…", documented)
    return Outcome(status, lines, error, documented), changed


# --------------------------------------------------------------------------- docs

DOC_HEADER = """# srkit errors

<!-- Generated by `python scripts/errors_doc.py` from tests/error_catalogue.py; do not edit.
     tests/test_error_catalogue.py checks every message below against srkit's output. -->

Every mistake srkit recognises in a config, a data folder, a checkpoint or the command line ends
the command with **one line** on stderr, `srkit: error: ...`, naming what is wrong and what to
do, and **exit status 2**. Nothing is left behind on disk (no empty run folder). `--debug`
(before the command: `srkit --debug train ...`) shows the Python traceback instead.

Mistakes on the command line itself are reported by Python's argparse: a usage line, then the
error line (shown below), also with status 2.

Other exit statuses of `srkit train`:

| status | meaning | what to do |
|---|---|---|
| 0 | finished | |
| 2 | a mistake listed below | fix it and run again |
| 3 | a loss became NaN/Inf (`train.nan_policy: abort`, or too many skipped steps) | see the debug bundle in `<run>/debug/step_N/`; lower the learning rate, set `train.grad_clip`, or `train.nan_policy: skip`; continue with `--resume auto` |
| 4 | a checkpoint could not be written (disk full, folder not writable) | free space; continue with `--resume auto` (nothing before the last checkpoint is lost) |
| 130, 143 | stopped by SIGINT (Ctrl-C) / SIGTERM after saving a checkpoint of the current step | continue with `--resume auto` |

In the messages, `<tmp>` stands for the folder the example ran in; `…` marks text that comes
from a library and varies between versions, or a list of names that grows with srkit.
"""


def render_doc(outcomes: dict[str, Outcome]) -> str:
    parts = [DOC_HEADER]
    for area, title in AREAS.items():
        cases = [c for c in CASES if c.area == area]
        parts.append(f"\n## {title} ({len(cases)})\n")
        for item in cases:
            message = outcomes[item.id].documented
            parts.append(f"\n### {item.id}\n\n{item.mistake}\n\n```\n{message}\n```\n")
    return "".join(parts)


def documented_messages(text: str) -> dict[str, str]:
    """{case id: documented message} parsed from docs/errors.md."""
    found = {}
    for match in re.finditer(r"^### (\S+)\n\n.*?\n\n```\n(.*?)\n```$", text, re.S | re.M):
        found[match.group(1)] = match.group(2)
    return found


def generate(path: Path) -> None:
    outcomes = {}
    with tempfile.TemporaryDirectory(prefix="srkit-errors-") as folder:
        for item in CASES:
            outcome, _ = run_case(item, Path(folder) / item.id)
            outcomes[item.id] = outcome
    path.write_text(render_doc(outcomes), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Video in `srkit upscale` and the comparison report (`srkit compare`). Registered after CASES
# was built above, so they are appended to it at the end of this block.

_VIDEO_AND_REPORT_FIRST = len(_CASES)


def _without_pyav() -> contextlib.AbstractContextManager[Any]:
    """`import av` fails inside, as on a machine without srkit's video extra."""
    import sys
    from unittest import mock

    return mock.patch.dict(sys.modules, {"av": None})


def _no_pyav() -> str | None:
    try:
        import av  # noqa: F401
    except ImportError:
        return "PyAV is not installed (pip install 'srkit[video]')"
    return None


simple(
    "cli-upscale-video-missing",
    "cli",
    "`srkit upscale` is given a video path that does not exist.",
    "input '<tmp>/holiday.mp4' does not exist",
    lambda ws: ["upscale", str(weights_copy(ws)), str(ws / "holiday.mp4"), "-o", str(ws / "out")],
)


@case(
    "cli-upscale-not-a-video",
    "cli",
    "`srkit upscale` is given a file with a video extension that is not a video.",
    "'<tmp>/notes.mp4' is not a video file srkit can read",
    mask=(r"(?<=can read \().*(?=\)$)",),
    skip=_no_pyav,
)
def _(ws: Path) -> list[str]:
    (ws / "notes.mp4").write_text("shopping list\n" * 40)
    return ["upscale", str(weights_copy(ws)), str(ws / "notes.mp4"), "-o", str(ws / "out")]


@case(
    "cli-upscale-video-without-pyav",
    "cli",
    "`srkit upscale` is given a video, but the video extra (PyAV) is not installed.",
    "video '<tmp>/holiday.mp4' needs PyAV, which srkit's optional video extra installs: "
    "pip install 'srkit[video]'",
    context=_without_pyav,
)
def _(ws: Path) -> list[str]:
    (ws / "holiday.mp4").write_bytes(bytes(64))
    return ["upscale", str(weights_copy(ws)), str(ws / "holiday.mp4"), "-o", str(ws / "out")]


@case(
    "cli-upscale-video-codec",
    "cli",
    "`srkit upscale --codec` asks for a codec the video's container cannot hold.",
    "a .webm file cannot hold h264 video ('<tmp>/out/clip.webm'); use --codec vp9",
)
def _(ws: Path) -> list[str]:
    (ws / "clip.webm").write_bytes(bytes(64))
    model = str(weights_copy(ws))
    return ["upscale", model, str(ws / "clip.webm"), "-o", str(ws / "out"), "--codec", "h264"]


@case(
    "cli-compare-report-is-a-file",
    "cli",
    "`srkit compare -o` (or `srkit validate --report`) names a file.",
    "report folder '<tmp>/report.html' is a file, not a folder",
)
def _(ws: Path) -> list[str]:
    (ws / "report.html").write_text("an old page")
    hr = str(images(ws / "hr", count=2, size=(32, 32)))
    return ["compare", str(weights_copy(ws)), "--hr", hr, "-o", str(ws / "report.html")]


CASES.extend(_CASES[_VIDEO_AND_REPORT_FIRST:])
