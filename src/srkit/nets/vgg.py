"""VGG16/VGG19 feature extractors with torchvision-compatible weights, for perceptual losses.

The convolutional part of VGG is rebuilt here (no torchvision dependency) as an
``nn.Sequential`` called ``features`` whose indices follow ``torchvision.models.vgg16().features``
and ``vgg19().features`` exactly, so the ImageNet weight files torchvision publishes
(``vgg16-397923af.pth``, ``vgg19-dcbb9e9d.pth``: plain state dicts of ``features.N.weight/bias``
plus ``classifier.*``) load without conversion; the classifier keys are ignored.

Layers are addressed by name: ``convB_I`` is the I-th convolution of block B *before* its ReLU,
``reluB_I`` the same *after* it, ``poolB`` the max-pool closing block B. An extractor only builds
the layers up to the deepest one requested, and returns a dict name -> feature map.

Inputs are images in [0, 1]; ImageNet mean/std normalisation is built in. Single-channel inputs
are repeated to three channels (greyscale feature-net training, SPEC section 6).

Weights are never fetched implicitly: :func:`load_vgg_weights` reads an explicit file or the
torch hub cache and otherwise raises a one-line :class:`~srkit.errors.ConfigError`; a download
happens only when ``download=True`` is passed. Files are read with ``torch.load(weights_only=True)``
or safetensors, so a weights file can never execute code.

Registered networks (role ``feature``): ``vgg19_features`` and ``vgg16_features`` return the
single feature map of one named layer. They can be frozen pretrained targets (the default) or
trainable VGG-shaped networks (the LR feature net of SPEC section 6, from random or ImageNet init).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from srkit.errors import CheckpointError, ConfigError, closest, unknown_name
from srkit.nets.registry import register_network

VGGArch = Literal["vgg16", "vgg19"]

# Channel widths of the convolutions, "M" = 2x2 max-pool; torchvision's configurations "D"/"E".
# fmt: off
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
# fmt: on

#: torchvision's published ImageNet weights (file name as in the torch hub cache, and URL).
TORCHVISION_FILES: dict[str, str] = {
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
}
TORCHVISION_URL = "https://download.pytorch.org/models/{file}"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_arch(arch: str) -> None:
    if arch not in VGG_CONFIGS:
        raise unknown_name("VGG architecture", arch, VGG_CONFIGS)


def vgg_layer_names(arch: str) -> dict[str, int]:
    """Map every layer name of ``arch`` (conv1_1, relu1_1, ..., pool5) to its ``features`` index."""
    _check_arch(arch)
    names: dict[str, int] = {}
    block, conv_in_block, index = 1, 0, 0
    for item in VGG_CONFIGS[arch]:
        if item == "M":
            names[f"pool{block}"] = index
            index += 1
            block, conv_in_block = block + 1, 0
        else:
            conv_in_block += 1
            names[f"conv{block}_{conv_in_block}"] = index
            names[f"relu{block}_{conv_in_block}"] = index + 1
            index += 2
    return names


def layer_problem(arch: str, layer: str) -> str | None:
    """Why ``layer`` is not a layer name of ``arch`` (one line for config errors), or None."""
    names = vgg_layer_names(arch)
    if layer in names:
        return None
    hint = closest(layer, names)
    did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
    return f"'{layer}' is not a {arch} layer{did_you_mean}; valid: {', '.join(names)}"


def make_vgg_features(arch: str, depth: int | None = None) -> nn.Sequential:
    """The first ``depth`` modules of torchvision's ``vgg*().features`` (all when None).

    Indices (hence state-dict keys) are torchvision's. ReLUs are not in-place, unlike
    torchvision's, because a pre-ReLU feature handed out by the extractor must not be
    overwritten by the ReLU that follows it.
    """
    _check_arch(arch)
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG_CONFIGS[arch]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*(layers if depth is None else layers[:depth]))


# -- weights -----------------------------------------------------------------------------------


def hub_checkpoint_path(arch: str) -> Path:
    """Where torch hub caches torchvision's ``arch`` weights (honours ``$TORCH_HOME``)."""
    _check_arch(arch)
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILES[arch]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file without executing pickled code (safetensors or weights_only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable/foreign file is the user's to fix
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"cannot read VGG weights file {path}: {reason}") from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # some re-saved files wrap the state dict
    if not isinstance(state, Mapping):
        raise CheckpointError(f"VGG weights file {path} does not hold a state dict")
    return dict(state)


def _expected_feature_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """``features.N.weight/bias`` -> shape for ``arch``, from the configuration (no allocation)."""
    shapes: dict[str, tuple[int, ...]] = {}
    channels, index = 3, 0
    for item in VGG_CONFIGS[arch]:
        if item == "M":
            index += 1
            continue
        width = int(item)
        shapes[f"features.{index}.weight"] = (width, channels, 3, 3)
        shapes[f"features.{index}.bias"] = (width,)
        channels, index = width, index + 2
    return shapes


def _feature_weights(state: Mapping[str, torch.Tensor], arch: str, source: str) -> dict:
    """Keep the ``features.*`` tensors of a torchvision VGG state dict and check them."""
    features = {}
    for key, value in state.items():
        key = key.removeprefix("module.")  # saved from DataParallel/DDP
        if key.startswith("features."):
            features[key] = value
    expected = _expected_feature_shapes(arch)
    for key, shape in expected.items():
        if key not in features:
            raise CheckpointError(
                f"{source} does not look like torchvision {arch} weights: {key} is missing "
                f"(found {len(features)} features.* tensors)"
            )
        if tuple(features[key].shape) != shape:
            raise CheckpointError(
                f"{source} does not look like torchvision {arch} weights: {key} has shape "
                f"{tuple(features[key].shape)}, expected {shape}"
            )
    return {key: features[key].float() for key in expected}


def download_vgg_weights(arch: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """Download torchvision's ImageNet ``arch`` weights into the torch hub cache (online use).

    The file name carries the first hex digits of its SHA-256, which torch hub verifies.
    """
    _check_arch(arch)
    url = TORCHVISION_URL.format(file=TORCHVISION_FILES[arch])
    try:
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except Exception as error:
        raise ConfigError(
            f"could not download {arch} weights from {url} ({type(error).__name__}: {error}); "
            f"download {TORCHVISION_FILES[arch]} by other means and pass its path"
        ) from error
    return _feature_weights(state, arch, url)


def load_vgg_weights(
    arch: str, path: str | os.PathLike | None = None, download: bool = False
) -> dict[str, torch.Tensor]:
    """ImageNet weights for ``arch`` as a ``features.N.*`` state dict.

    Looks at ``path`` when given (and nowhere else), otherwise at the torch hub cache
    (``$TORCH_HOME/hub/checkpoints/<torchvision file>``), otherwise downloads when
    ``download=True``; otherwise raises a one-line ConfigError saying where it looked and how to
    provide the file. ``.safetensors`` files and torch ``.pth`` state dicts are accepted.
    """
    _check_arch(arch)
    file_name = TORCHVISION_FILES[arch]
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"VGG weights file {path} does not exist; download torchvision's {file_name} "
                f"({TORCHVISION_URL.format(file=file_name)}) and pass its path"
            )
        return _feature_weights(_read_state_dict(path), arch, str(path))
    cached = hub_checkpoint_path(arch)
    if cached.is_file():
        return _feature_weights(_read_state_dict(cached), arch, str(cached))
    if download:
        return download_vgg_weights(arch)
    raise ConfigError(
        f"no ImageNet weights for {arch}: no weights path given and {cached} does not exist; "
        f"download torchvision's {file_name} ({TORCHVISION_URL.format(file=file_name)}) and "
        f"pass its path as 'weights', put it at {cached}, or allow download=true"
    )


# -- extractor ---------------------------------------------------------------------------------


class VGGFeatureExtractor(nn.Module):
    """VGG features of [0, 1] images at named layers (dict name -> tensor).

    Only the layers up to the deepest requested one are built. ``frozen`` (the default) turns off
    parameter gradients and pins the module in eval mode: ``train()`` cannot switch it back, so a
    trainer calling ``model.train()`` on everything never un-freezes a loss network. Gradients
    still flow to the *input*, which is what a perceptual loss needs.

    The state dict holds only ``features.N.weight/bias`` (the normalisation constants are
    non-persistent buffers), i.e. a prefix of torchvision's layout.
    """

    def __init__(
        self,
        arch: VGGArch = "vgg19",
        layers: Iterable[str] = ("conv5_4",),
        normalize_input: bool = True,
        frozen: bool = True,
        state_dict: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        _check_arch(arch)
        names = vgg_layer_names(arch)
        self.arch = arch
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))  # ordered, no duplicates
        if not self.layers:
            raise ConfigError(f"{arch} feature extractor needs at least one layer name")
        for layer in self.layers:
            if layer not in names:
                raise unknown_name(f"{arch} layer", layer, names)
        self.layer_indices = {layer: names[layer] for layer in self.layers}
        depth = max(self.layer_indices.values()) + 1
        if state_dict is None:
            self.features = make_vgg_features(arch, depth)
        else:
            # Build on the meta device and adopt the loaded tensors: skips a random
            # initialisation (~1 s for VGG19) that the weights would overwrite anyway.
            with torch.device("meta"):
                self.features = make_vgg_features(arch, depth)
            self.load_vgg_state_dict(state_dict, assign=True)
        self.normalize_input = normalize_input
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def load_vgg_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], assign: bool = False
    ) -> None:
        """Load a (full or partial-depth) torchvision-layout VGG state dict; extra keys ignored.

        ``assign=True`` adopts (copies of) the given tensors instead of copying into the existing
        parameters, which is what a module built on the meta device needs.
        """
        own = self.features.state_dict()
        wanted = {
            key.removeprefix("features."): value.to(torch.float32, copy=True)
            for key, value in state_dict.items()
            if key.startswith("features.") and key.removeprefix("features.") in own
        }
        missing = sorted(set(own) - set(wanted))
        if missing:
            raise CheckpointError(f"{self.arch} weights lack features.{missing[0]}")
        self.features.load_state_dict(wanted, assign=assign)

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        # A frozen extractor stays in eval mode whatever the caller asks.
        return super().train(False if getattr(self, "frozen", False) else mode)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize_input:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = {index: layer for layer, index in self.layer_indices.items()}
        outputs: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                outputs[wanted[index]] = x
        return {layer: outputs[layer] for layer in self.layers}


def pretrained_vgg(
    arch: VGGArch = "vgg19",
    layers: Iterable[str] = ("conv5_4",),
    weights: str | os.PathLike | None = None,
    download: bool = False,
    normalize_input: bool = True,
) -> VGGFeatureExtractor:
    """A frozen ImageNet VGG extractor; weights found as :func:`load_vgg_weights` describes."""
    return VGGFeatureExtractor(
        arch,
        layers,
        normalize_input=normalize_input,
        frozen=True,
        state_dict=load_vgg_weights(arch, weights, download=download),
    )


# -- registered feature networks ---------------------------------------------------------------


class _VGGFeatureNetwork(VGGFeatureExtractor):
    """Single-layer VGG feature network returning a tensor (base of the registered ones)."""

    def __init__(
        self,
        arch: VGGArch,
        layer: str,
        pretrained: bool,
        weights: str | None,
        download: bool,
        trainable: bool,
        normalize_input: bool,
    ) -> None:
        state_dict = load_vgg_weights(arch, weights, download=download) if pretrained else None
        super().__init__(
            arch,
            (layer,),
            normalize_input=normalize_input,
            frozen=not trainable,
            state_dict=state_dict,
        )
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[self.layer]


#: Initial-weight arguments of the VGG networks: a checkpoint rebuilds them without the file.
VGG_WEIGHT_SOURCE = {"pretrained": False, "weights": None, "download": False}


def check_vgg19_layer(arguments: Mapping[str, object]) -> list[tuple[str, str]]:
    """`layer` must be a VGG19 layer: convB_I, reluB_I (B = 1..5) or poolB."""
    problem = layer_problem("vgg19", str(arguments["layer"]))
    return [("layer", problem)] if problem else []


def check_vgg16_layer(arguments: Mapping[str, object]) -> list[tuple[str, str]]:
    """`layer` must be a VGG16 layer: convB_I, reluB_I (B = 1..5) or poolB."""
    problem = layer_problem("vgg16", str(arguments["layer"]))
    return [("layer", problem)] if problem else []


@register_network(
    "vgg19_features", role="feature", weight_source=VGG_WEIGHT_SOURCE, check=check_vgg19_layer
)
class VGG19Features(_VGGFeatureNetwork):
    """VGG19 features at one named layer (frozen ImageNet VGG by default).

    Args:
        layer: Layer whose output is returned: convB_I (before ReLU), reluB_I (after) or poolB.
        pretrained: Start from torchvision's ImageNet weights (False: random initialisation).
        weights: Path of torchvision's vgg19-dcbb9e9d.pth (or a .safetensors copy); None: torch hub cache.
        download: Allow downloading the ImageNet weights into the torch hub cache when missing.
        trainable: Train this network (e.g. an LR feature net); False freezes it in eval mode.
        normalize_input: Apply ImageNet mean/std normalisation to the [0, 1] input.
    """

    def __init__(
        self,
        layer: str = "conv5_4",
        pretrained: bool = True,
        weights: str | None = None,
        download: bool = False,
        trainable: bool = False,
        normalize_input: bool = True,
    ) -> None:
        super().__init__("vgg19", layer, pretrained, weights, download, trainable, normalize_input)


@register_network(
    "vgg16_features", role="feature", weight_source=VGG_WEIGHT_SOURCE, check=check_vgg16_layer
)
class VGG16Features(_VGGFeatureNetwork):
    """VGG16 features at one named layer (frozen ImageNet VGG by default).

    Args:
        layer: Layer whose output is returned: convB_I (before ReLU), reluB_I (after) or poolB.
        pretrained: Start from torchvision's ImageNet weights (False: random initialisation).
        weights: Path of torchvision's vgg16-397923af.pth (or a .safetensors copy); None: torch hub cache.
        download: Allow downloading the ImageNet weights into the torch hub cache when missing.
        trainable: Train this network (e.g. an LR feature net); False freezes it in eval mode.
        normalize_input: Apply ImageNet mean/std normalisation to the [0, 1] input.
    """

    def __init__(
        self,
        layer: str = "conv5_3",
        pretrained: bool = True,
        weights: str | None = None,
        download: bool = False,
        trainable: bool = False,
        normalize_input: bool = True,
    ) -> None:
        super().__init__("vgg16", layer, pretrained, weights, download, trainable, normalize_input)
