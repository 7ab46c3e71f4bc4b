"""Discriminators: output contract at many sizes, norm options, spectral norm, registry conventions."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import srkit.nets  # noqa: F401  (registers every network)
from srkit.nets.discriminators import (
    PixelDiscriminator,
    SwitchedDiscriminator,
    UNetDiscriminator,
    VGGDiscriminator,
    convert_legacy_spectral_norm_keys,
)
from srkit.nets.registry import build_network, get_network_entry, network_names

SIZES = (64, 96, 128, 192, 256)
DISCRIMINATORS = ("vgg", "pixdisc", "unet", "switched")
NORMS = ("batch", "group", "spectral", "none")

# Small widths keep the tests fast; the architecture does not depend on the width.
SMALL = {
    "vgg": {"nf": 4},
    "pixdisc": {"nf": 4},
    "unet": {"nf": 4},
    "switched": {"nf": 4, "transforms": 3, "mux_filters": 8},
}


@pytest.fixture(scope="module")
def small_discriminators():
    torch.manual_seed(0)
    return {name: build_network(name, **SMALL[name]) for name in DISCRIMINATORS}


def _expected_shape(net, batch, height, width):
    if net.reduction is None:
        return (batch, 1)
    return (batch, net.logit_channels, height // net.reduction, width // net.reduction)


@pytest.mark.parametrize("name", DISCRIMINATORS)
def test_output_contract_at_every_size(small_discriminators, name):
    net = small_discriminators[name]
    for size in SIZES:
        out = net(torch.rand(2, 3, size, size))
        assert out.shape == _expected_shape(net, 2, size, size), (name, size)
        assert torch.isfinite(out).all()
    out = net(torch.rand(1, 3, 96, 160))  # non-square
    assert out.shape == _expected_shape(net, 1, 96, 160)


def test_declared_output_geometry():
    assert VGGDiscriminator.reduction is None
    pix = PixelDiscriminator(nf=4)
    assert (pix.logit_channels, pix.reduction) == (3, 8)
    assert pix(torch.rand(1, 3, 64, 128)).shape == (1, 3, 8, 16)
    for reduction in (1, 2, 4):
        net = UNetDiscriminator(nf=4, reduction=reduction)
        assert (net.logit_channels, net.reduction) == (1, reduction)
        assert net(torch.rand(2, 3, 64, 96)).shape == (2, 1, 64 // reduction, 96 // reduction)
    switched = SwitchedDiscriminator(nf=4, transforms=2, mux_filters=8)
    assert (switched.logit_channels, switched.reduction) == (3, 8)


@pytest.mark.parametrize("name", ["pixdisc", "switched"])
def test_map_discriminators_reject_sizes_that_are_not_multiples_of_32(name):
    net = build_network(name, **SMALL[name])
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 80, 64))


def test_single_channel_inputs():
    # Gradient-map discriminators (SPSR) judge 1- or 3-channel maps.
    for name in ("vgg", "pixdisc", "unet"):
        net = build_network(name, in_channels=1, nf=4)
        out = net(torch.rand(2, 1, 64, 64))
        assert out.shape == _expected_shape(net, 2, 64, 64)


@pytest.mark.parametrize("name", DISCRIMINATORS)
def test_gradients_reach_every_parameter_and_the_input(name):
    torch.manual_seed(0)
    net = build_network(name, **SMALL[name])
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    net(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    without_grad = [n for n, p in net.named_parameters() if p.grad is None]
    assert not without_grad


def _kinds(net: nn.Module) -> set[str]:
    kinds = set()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            kinds.add("batch")
        # The switch's multiplexer always uses GroupNorm (by design); count only the rest.
        if isinstance(module, nn.GroupNorm) and "multiplexer" not in _path_of(net, module):
            kinds.add("group")
        if isinstance(module, (nn.Conv2d, nn.Linear)) and parametrize.is_parametrized(
            module, "weight"
        ):
            kinds.add("spectral")
    return kinds


def _path_of(root: nn.Module, target: nn.Module) -> str:
    return next(name for name, module in root.named_modules() if module is target)


@pytest.mark.parametrize("name", DISCRIMINATORS)
@pytest.mark.parametrize("norm", NORMS)
def test_norm_option_changes_the_layers(name, norm):
    net = build_network(name, norm=norm, **SMALL[name])
    expected = set() if norm == "none" else {norm}
    assert _kinds(net) == expected
    out = net(torch.rand(2, 3, 64, 64))
    assert out.shape == _expected_shape(net, 2, 64, 64)


def test_default_norms():
    assert _kinds(VGGDiscriminator(nf=4)) == {"batch"}  # ESRGAN
    assert _kinds(PixelDiscriminator(nf=4)) == {"group"}  # the seed's choice
    assert _kinds(UNetDiscriminator(nf=4)) == {"spectral"}  # Real-ESRGAN


def test_conv_bias_only_without_batch_or_group_norm():
    with_norm = PixelDiscriminator(nf=4, norm="group")
    without = PixelDiscriminator(nf=4, norm="none")
    assert with_norm.encoder[1][0].conv.bias is None
    assert without.encoder[1][0].conv.bias is not None


@pytest.mark.parametrize("name", DISCRIMINATORS)
def test_spectral_norm_bounds_the_weights(name):
    torch.manual_seed(0)
    net = build_network(name, norm="spectral", **SMALL[name]).train()
    for _ in range(3):  # power iterations happen in training forwards
        net(torch.rand(2, 3, 64, 64))
    raw_sigmas = []
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and parametrize.is_parametrized(
            module, "weight"
        ):
            original = module.parametrizations.weight.original
            assert original.requires_grad  # the raw weight is what the optimizer trains
            raw = original.detach().reshape(original.shape[0], -1)
            raw_sigmas.append(float(torch.linalg.matrix_norm(raw, ord=2)))
            # The weight the layer uses has unit spectral norm, whatever the raw one has.
            effective = module.weight.detach().reshape(module.weight.shape[0], -1)
            sigma = torch.linalg.matrix_norm(effective, ord=2)
            assert sigma == pytest.approx(1.0, abs=0.05), module
    assert len(raw_sigmas) >= 5
    assert any(abs(sigma - 1.0) > 0.2 for sigma in raw_sigmas)


def test_unet_loads_old_style_spectral_norm_keys():
    """Real-ESRGAN's released discriminator uses torch.nn.utils.spectral_norm's key layout."""
    torch.manual_seed(0)
    legacy = nn.Conv2d(4, 8, 4, 2, 1, bias=False)
    legacy = torch.nn.utils.spectral_norm(legacy)
    legacy.train()
    for _ in range(5):
        legacy(torch.rand(1, 4, 16, 16))  # update u
    legacy.eval()
    legacy_state = {f"conv1.{key}": value for key, value in legacy.state_dict().items()}
    assert set(legacy_state) == {"conv1.weight_orig", "conv1.weight_u", "conv1.weight_v"}

    net = UNetDiscriminator(nf=4)
    state = {key: value for key, value in net.state_dict().items() if not key.startswith("conv1.")}
    state.update(legacy_state)
    net.load_state_dict(state)  # strict: every key must map
    net.eval()
    x = torch.rand(1, 4, 16, 16)
    torch.testing.assert_close(net.conv1(x), legacy(x))

    converted = convert_legacy_spectral_norm_keys(legacy_state)
    assert set(converted) == {
        "conv1.parametrizations.weight.original",
        "conv1.parametrizations.weight.0._u",
        "conv1.parametrizations.weight.0._v",
    }


def test_unet_default_layout_matches_real_esrgan():
    net = UNetDiscriminator()  # nf=64
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 4_376_897
    assert state["conv0.weight"].shape == (64, 3, 3, 3)
    assert state["conv3.parametrizations.weight.original"].shape == (512, 256, 4, 4)
    assert state["conv9.weight"].shape == (1, 64, 3, 3)
    assert "conv1.bias" not in state and "conv9.bias" in state


def test_switched_discriminator_exposes_attention_and_anneals():
    torch.manual_seed(0)
    net = SwitchedDiscriminator(
        nf=4, transforms=3, mux_filters=8, temperature=10.0, temperature_final_step=100
    )
    assert net.last_attention is None
    net(torch.rand(2, 3, 64, 96))
    attention = net.last_attention
    assert attention.shape == (2, 32, 48, 3)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 32, 48))
    assert not attention.requires_grad

    hooks = [m for m in net.modules() if hasattr(m, "set_training_step")]
    assert hooks == [net.switch]
    temperatures = []
    for step in (0, 50, 100, 500):
        for module in hooks:
            module.set_training_step(step)
        temperatures.append(net.switch.training_stats()["switch/temperature"])
    assert temperatures == pytest.approx([10.0, 5.5, 1.0, 1.0])
    stats = net.switch.training_stats()
    assert "switch/specificity" in stats


def test_switched_discriminator_non_residual_variant():
    net = SwitchedDiscriminator(nf=4, transforms=2, mux_filters=8, residual=False)
    assert net.switch.residual is False
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 3, 8, 8)


def test_registry_roles():
    names = network_names("discriminator")
    for name in DISCRIMINATORS:
        assert name in names


@pytest.mark.parametrize("name", DISCRIMINATORS)
def test_constructor_arguments_are_documented_config_keys(name):
    """docs/architecture.md: every kwarg typed, defaulted and described in ``Args:``."""
    constructor = get_network_entry(name).constructor
    signature = inspect.signature(constructor)
    doc = inspect.getdoc(constructor) or ""
    args_section = doc.split("Args:", 1)[1]
    documented = set(re.findall(r"^\s{4}(\w+):", args_section, flags=re.MULTILINE))
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, parameter.name
        assert parameter.default is not inspect.Parameter.empty, parameter.name
        assert parameter.name in documented, parameter.name
    assert documented == set(signature.parameters)


@pytest.mark.parametrize("name", DISCRIMINATORS)
def test_unnormalised_discriminators_pass_a_faint_input_on_to_their_logits(name):
    # Image detail (`detail(hr)`) has a standard deviation of a few hundredths. With PyTorch's
    # default init a norm-free pixel discriminator answered it with logit changes ~1e-6 (its
    # gradients started near 1e-3 and it never learned); the Kaiming init keeps the scale.
    torch.manual_seed(0)
    network = build_network(name, **{**SMALL[name], "nf": 8}, norm="none")
    faint = 0.03 * torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        response = network(faint) - network(torch.zeros_like(faint))
    assert response.std() > 0.06 * faint.std()
