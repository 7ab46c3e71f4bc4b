"""Turn a validated config into the parts the trainer runs: networks, loss terms, data.

Everything method-specific is decided here by reading the config generically (which networks
exist, which loss terms name which discriminator); the trainer receives plain collections.
"""

from __future__ import annotations

import logging
import os
import random
import zlib
from typing import Any

import numpy as np
import torch
from torch import nn

from srkit.config import constructor_arguments, trained_network_names
from srkit.data.sampler import derive_seed
from srkit.errors import CheckpointError, ConfigError, SrkitError
from srkit.evaluation import named_outputs
from srkit.losses.base import BuildContext, LossTerm, loss_entries
from srkit.losses.tensors import StepTensors, View, builtin_views, parse_expression
from srkit.nets.registry import build_network, get_network_entry
from srkit.nets.spectral import apply_spectral_norm
from srkit.weights import load_state, read_weights, resolve_weights_file

log = logging.getLogger("srkit.train")

_INIT_TAG = 0x494E4954  # "INIT": keeps weight-init seeds apart from the data seeds
_SN_TAG = 0x534E4F52  # "SNOR": spectral norm's start vectors


def select_device(choice: str) -> torch.device:
    """The device of ``train.device`` (``auto``: CUDA when there is one)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def resolve_auto_settings(config: Any, device: torch.device) -> tuple[Any, list[str]]:
    """The config with ``train.precision`` and ``train.channels_last`` resolved for ``device``
    (``auto`` -> what :mod:`srkit.hardware` picks), and one line per ``auto`` choice saying
    what was picked and why. The resolved config is what the run writes to its config.yml,
    so copying that file repeats the run on another machine."""
    from srkit import hardware

    train = config.train
    precision = hardware.resolve_precision(train.precision, device)
    layout = hardware.resolve_channels_last(train.channels_last, device, precision.value)
    notes = []
    if train.precision == "auto":
        notes.append(f"precision {precision.value} (auto: {precision.reason})")
    if train.channels_last == "auto":
        notes.append(f"channels_last {str(layout.value).lower()} (auto: {layout.reason})")
    resolved = train.model_copy(
        update={"precision": precision.value, "channels_last": layout.value}
    )
    return config.model_copy(update={"train": resolved}), notes


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def find_hooks(module: nn.Module, hook: str) -> list[Any]:
    """Bound ``hook`` methods of every submodule that defines one (the generic network hooks:
    ``set_training_step(step)``, ``training_stats() -> dict`` and ``training_pictures() ->
    dict``, see docs/architecture.md)."""
    found = []
    for submodule in module.modules():
        function = getattr(submodule, hook, None)
        if callable(function):
            found.append(function)
    return found


def network_arguments(network_config: Any, scale: int) -> dict[str, Any]:
    """Constructor arguments of a network section (its own keys plus injected run values)."""
    entry = get_network_entry(network_config.type)
    accepted = constructor_arguments(entry)
    arguments = {k: v for k, v in network_config if k in accepted}
    if "scale" in accepted:
        arguments["scale"] = scale
    return arguments


def build_networks(config: Any, device: torch.device) -> dict[str, nn.Module]:
    """Every network of the config, on ``device``; frozen helpers in eval mode, no grad.

    Each network's initial weights come from its own seed, derived from (``seed``, its name),
    so they do not depend on the order of the ``networks`` keys in the file (a config saved
    with sorted keys starts the same run) nor on which other networks exist.
    """
    trained = set(trained_network_names(config))
    networks: dict[str, nn.Module] = {}
    for name, section in config.networks.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(
                derive_seed(config.seed % 2**64, _INIT_TAG, zlib.crc32(name.encode()))
            )
            module = build_network(section.type, **network_arguments(section, config.scale))
        if section.init is not None:
            file = _load_init_weights(name, section, module)
            log.info("networks.%s: weights from %s", name, file)
        if getattr(section, "spectral_norm", False):
            with torch.random.fork_rng(devices=[]):  # the power iteration's start vectors
                torch.manual_seed(
                    derive_seed(config.seed % 2**64, _SN_TAG, zlib.crc32(name.encode()))
                )
                apply_spectral_norm(module)
        if name not in trained:
            module.requires_grad_(False).eval()
        networks[name] = module.to(device)
    return networks


def _load_init_weights(name: str, section: Any, module: nn.Module) -> Any:
    """Load ``networks.<name>.init`` into ``module``; every problem names that key."""
    from srkit.train.checkpoint import architecture_difference

    try:
        file = resolve_weights_file(section.init, network=name)
        state, metadata = read_weights(file)
    except CheckpointError as error:
        raise ConfigError(f"networks.{name}.init: {error}") from error
    try:
        load_state(module, state, strict=section.init_strict, source=str(file))
    except CheckpointError as error:
        difference = architecture_difference(metadata, module, state)
        if difference is None:
            raise ConfigError(f"networks.{name}.init: {error}") from error
        raise ConfigError(
            f"networks.{name}.init: '{file}' {difference}; set networks.{name} to match "
            "the weights, or start from weights made for this network"
        ) from error
    return file


def tensor_views(config: Any, networks: dict[str, nn.Module]) -> dict[str, View]:
    """Functions usable in tensor expressions: built-ins plus every frozen network."""
    views = builtin_views(config.scale)
    trained = set(trained_network_names(config))
    for name, module in networks.items():
        if name not in trained:
            if name in views or name == "ema":
                raise ConfigError(
                    f"networks.{name}: the name '{name}' is a built-in view; rename it"
                )
            views[name] = module
    return views


def ema_view(module: nn.Module) -> View:
    """The ``ema`` expression function of a run with ``train.ema``: the averaged generator's
    ``sr`` output for an input (no gradient), e.g. ``ema(lr)``."""

    def ema(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return named_outputs(module(x))["sr"].float()

    return ema


def build_loss_terms(config: Any, context: BuildContext) -> list[LossTerm]:
    entries = loss_entries()
    terms = []
    for index, term_config in enumerate(config.losses):
        try:
            term = entries[term_config.type].build(term_config, context)
        except SrkitError as error:
            raise type(error)(f"losses.{index} ({term_config.log_name}): {error}") from None
        if term.discriminator is not None:
            check_discriminator_fits(term, context.networks[term.discriminator], index)
        if context.disjoint:
            check_unpaired(term, index)
        terms.append(term.to(context.device))
    return terms


def reads_hr(expression: str) -> bool:
    """Whether a tensor expression is computed from the HR batch (``hr``, ``grad(hr)`` ...)."""
    return parse_expression(expression.replace(" ", ""))[-1] == "hr"


def check_unpaired(term: LossTerm, index: int) -> None:
    """With unpaired data only discriminators may see HR: refuse terms comparing with it."""
    real = set(term.real_expressions())
    for expression in term.expressions():
        if expression not in real and reads_hr(expression):
            raise ConfigError(
                f"losses.{index} ({term.name}): reads '{expression}', but with "
                "data.train.disjoint: true the HR images are unrelated to the LR ones and only "
                "feed discriminators; remove the term, use lr_feature, or compare at LR scale "
                "(e.g. input: grad(down(sr)), target: grad(lr))"
            )


def may_leave_parameters_unused(
    config: Any,
    name: str,
    network: nn.Module,
    terms: list[LossTerm],
    holds_back: bool,
    device: torch.device,
) -> bool:
    """Whether a step may leave some trainable parameter of network ``name`` without a
    gradient, so that DDP must look for unused parameters (``find_unused_parameters``, an
    extra autograd traversal per step, which PyTorch warns about when it finds none).

    Yes when ``train_only`` holds parameters back, and for a generator with a named output
    that no weighted loss term reads (its output layers then get no gradient: e.g. a gradient
    branch without branch terms). Found with one forward pass of a zero LR patch; a
    discriminator's single output is always read."""
    if holds_back:
        return True
    if name != "generator":
        return False
    read = {
        parse_expression(expression)[-1]
        for term in terms
        if term.weight
        for expression in term.expressions()
    }
    lr_side = config.data.train.patch_size // config.scale
    lr = torch.zeros(1, 3, lr_side, lr_side, device=device)
    hr = torch.zeros(1, 3, lr_side * config.scale, lr_side * config.scale, device=device)
    views = tensor_views(config, {})
    training = network.training
    network.eval()  # no running statistics or recorded attention from the probe
    try:
        with torch.no_grad():
            tensors = StepTensors({"lr": lr, "hr": hr}, views)
            output = network(tensors[config.train.generator_input])
    finally:
        network.train(training)
    outputs = {"sr"} if isinstance(output, torch.Tensor) else set(output)
    return bool(outputs - read)


def build_lpips(config: Any, device: torch.device) -> nn.Module | None:
    """LPIPS for validation when ``data.val.lpips`` is set (a missing file: an error now, not
    mid-run)."""
    val = config.data.val
    if val is None or val.lpips is None:
        return None
    from srkit.metrics.lpips import load_lpips

    return load_lpips(val.lpips.lin, val.lpips.vgg, key="data.val.lpips").to(device)


def build_train_dataset(config: Any, generator: nn.Module | None = None) -> Any:
    """The training dataset of ``data.train``: paired/HR-only, or unpaired (disjoint); its
    items carry the extra inputs ``generator`` takes (a whole-image reference), if any."""
    from srkit.data.datasets import SRDataset, UnpairedDataset
    from srkit.data.reference import reference_size

    data = config.data.train
    if data.disjoint and reads_hr(config.train.generator_input):
        raise ConfigError(
            f"train.generator_input: '{config.train.generator_input}' reads HR images, "
            "which are unrelated to the LR ones with data.train.disjoint: true"
        )
    arguments = {
        "hr_root": data.hr,
        "lr_root": data.lr,
        "scale": config.scale,
        "patch_size": data.patch_size,
        "flips": data.flips,
        "rotations": data.rotations,
        "cache_images": data.cache_images,
        "reference_size": None if generator is None else reference_size(generator),
    }
    if data.disjoint:
        return UnpairedDataset(**arguments)
    return SRDataset(**arguments, degradation=degradation_pipeline(config))


def degradation_pipeline(config: Any) -> Any:
    """The ``data.train.degradation`` pipeline of a config, or None (bicubic LR)."""
    from srkit.data.degrade import DegradationPipeline

    settings = config.data.train.degradation
    if settings is None:
        return None
    return DegradationPipeline.from_settings(settings.model_dump(), config.scale)


def check_discriminator_fits(term: LossTerm, discriminator: nn.Module, index: int) -> None:
    """A term needing a map discriminator (e.g. pixgan) must not get a vector one."""
    if (
        getattr(term, "needs_map_discriminator", False)
        and getattr(discriminator, "reduction", None) is None
    ):
        kind = getattr(discriminator, "srkit_arch", {}).get("type", type(discriminator).__name__)
        raise ConfigError(
            f"losses.{index}: term '{term.name}' needs a discriminator that outputs a logit map "
            f"(pixdisc, unet, switched), but '{term.discriminator}' is {kind}, which outputs "
            "one logit per image; change that network's type or the term's gan_type"
        )
