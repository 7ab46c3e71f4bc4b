"""Generators: parameter counts, shapes, the gradient operator, SPSR design rules, pictures."""

from __future__ import annotations

import inspect
import re
import typing

import numpy as np
import pytest
import torch
from torch import nn

from srkit.errors import ConfigError
from srkit.nets.attention import attention_pictures, transform_palette
from srkit.nets.blocks import count_parameters
from srkit.nets.gradient import ImageGradient, image_gradient
from srkit.nets.registry import build_network, get_network_entry
from srkit.nets.rrdb import RRDBNet
from srkit.nets.spsr import SPSRNet, trunk_taps
from srkit.nets.srg2 import SRG2Net

SMALL = {
    "rrdb": {"nf": 16, "nb": 2, "gc": 8},
    "spsr": {"nf": 8, "nb": 4, "gc": 8},
    "srg2": {"nf": 16, "depth": 2, "transforms": 3, "trans_layers": 2, "mux_filters": 8},
}


def sr_of(output):
    return output if isinstance(output, torch.Tensor) else output["sr"]


def meta_count(constructor, **kwargs) -> int:
    """Parameter count of a full-size network built without allocating or initialising it."""
    with torch.device("meta"):
        return count_parameters(constructor(**kwargs))


# ------------------------------------------------------------------------- parameter counts


def test_rrdb_parameter_count_matches_esrgan():
    assert meta_count(RRDBNet, nf=64, nb=23, gc=32, scale=4) == 16_697_987


def test_spsr_parameter_count_and_where_the_parameters_are():
    assert meta_count(SPSRNet, nf=64, nb=23, gc=32, scale=4) == 24_796_230
    with torch.device("meta"):
        groups = SPSRNet().parameter_groups()
    sizes = {name: sum(p.numel() for p in params) for name, params in groups.items()}
    # The figures quoted in SPSRNet's docstring.
    assert sizes == {"fusion": 1_606_211, "gradient_branch": 6_456_835, "trunk": 16_733_184}


def test_spsr_trunk_is_rrdbnet_without_its_last_conv_plus_one_hr_conv():
    nf = 64
    last_conv = 3 * nf * 9 + 3
    hr_out_conv = nf * nf * 9 + nf
    with torch.device("meta"):
        trunk = sum(p.numel() for p in SPSRNet().parameter_groups()["trunk"])
    assert trunk == 16_697_987 - last_conv + hr_out_conv


# ------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("name", ["rrdb", "spsr", "srg2"])
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(12, 12), (13, 17)])
def test_forward_shapes(name, scale, size):
    torch.manual_seed(0)
    net = build_network(name, scale=scale, **SMALL[name])
    assert net.scale == scale
    lr = torch.rand(2, 3, *size)
    output = net(lr)
    assert sr_of(output).shape == (2, 3, size[0] * scale, size[1] * scale)
    if name == "spsr":
        assert output["grad_branch"].shape == (2, 3, size[0] * scale, size[1] * scale)
    if name == "srg2":
        assert len(output["attention"]) == SMALL["srg2"]["depth"]
        for attention in output["attention"]:
            assert attention.shape == (2, *size, SMALL["srg2"]["transforms"])


@pytest.mark.parametrize("name", ["rrdb", "spsr", "srg2"])
@pytest.mark.parametrize("scale", [1, 8])
def test_scale_one_and_eight(name, scale):
    net = build_network(name, scale=scale, **SMALL[name])
    assert sr_of(net(torch.rand(1, 3, 5, 7))).shape == (1, 3, 5 * scale, 7 * scale)


@pytest.mark.parametrize("name", ["rrdb", "spsr", "srg2"])
def test_unsupported_scale_is_a_config_error(name):
    with pytest.raises(ConfigError, match="scale: must be one of 1, 2, 4, 8, got 3"):
        build_network(name, scale=3, **SMALL[name])


@pytest.mark.parametrize("scale", [1, 2])
def test_rrdb_pixel_unshuffle_layout(scale):
    net = RRDBNet(scale=scale, pixel_unshuffle=True, nf=8, nb=1, gc=4)
    assert net.conv_first.in_channels == 3 * (4 // scale) ** 2
    assert hasattr(net, "conv_up2")
    # Odd sizes are padded for the unshuffle and cropped back.
    assert net(torch.rand(1, 3, 13, 17)).shape == (1, 3, 13 * scale, 17 * scale)
    with pytest.raises(ConfigError):
        RRDBNet(scale=4, pixel_unshuffle=True)


def test_channel_options():
    net = RRDBNet(in_channels=1, out_channels=2, nf=8, nb=1, gc=4, scale=2)
    assert net(torch.rand(1, 1, 6, 6)).shape == (1, 2, 12, 12)
    spsr = SPSRNet(in_channels=1, out_channels=1, nf=8, nb=4, gc=4, scale=2)
    out = spsr(torch.rand(1, 1, 6, 6))
    assert out["sr"].shape == out["grad_branch"].shape == (1, 1, 12, 12)
    srg2 = SRG2Net(in_channels=1, out_channels=1, scale=2, **SMALL["srg2"])
    assert srg2(torch.rand(1, 1, 6, 6))["sr"].shape == (1, 1, 12, 12)


def test_rrdb_uses_the_ecosystem_key_names():
    keys = set(RRDBNet(nf=8, nb=2, gc=4, scale=8).state_dict())
    for key in (
        "conv_first.weight",
        "body.0.rdb1.conv1.weight",
        "body.1.rdb3.conv5.bias",
        "conv_body.weight",
        "conv_up1.weight",
        "conv_up2.weight",
        "conv_up3.weight",
        "conv_hr.weight",
        "conv_last.bias",
    ):
        assert key in keys


# ------------------------------------------------------------------- constructor conventions


@pytest.mark.parametrize("name", ["rrdb", "spsr", "srg2"])
def test_constructor_is_a_documented_config_schema(name):
    entry = get_network_entry(name)
    assert entry.role == "generator" and entry.detect is not None
    init = entry.constructor.__init__
    hints = typing.get_type_hints(init)
    doc = inspect.getdoc(entry.constructor)
    args_section = doc.split("Args:", 1)[1]
    documented = dict(re.findall(r"^\s{4}(\w+): (.+)$", args_section, flags=re.M))
    parameters = [p for p in inspect.signature(init).parameters.values() if p.name != "self"]
    names = {p.name for p in parameters}
    assert {"scale", "in_channels", "out_channels"} <= names
    for parameter in parameters:
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, parameter.name
        assert parameter.default is not inspect.Parameter.empty, parameter.name
        assert parameter.name in hints, parameter.name
        assert documented.get(parameter.name), f"{name}.{parameter.name} has no Args line"
    assert set(documented) == names


# --------------------------------------------------------------------- gradient operator


def test_gradient_of_a_horizontal_ramp():
    # x[i, j] = 0.1 * j on a 4x5 image; zero padding outside.
    ramp = (0.1 * torch.arange(5.0)).repeat(4, 1)[None, None]
    grad = ImageGradient()(ramp)[0, 0]
    eps = 1e-6
    # Interior: v = 0, h = x[j+1] - x[j-1] = 0.2.
    assert grad[1, 2].item() == pytest.approx((0.2**2 + eps) ** 0.5, abs=1e-6)
    # Left border, interior row: h = x[1] - 0 = 0.1, v = 0.
    assert grad[1, 0].item() == pytest.approx((0.1**2 + eps) ** 0.5, abs=1e-6)
    # Right border, interior row: h = 0 - x[3] = -0.3.
    assert grad[2, 4].item() == pytest.approx((0.3**2 + eps) ** 0.5, abs=1e-6)
    # Top border, column 1: v = x[1, 1] - 0 = 0.1, h = 0.2.
    assert grad[0, 1].item() == pytest.approx((0.1**2 + 0.2**2 + eps) ** 0.5, abs=1e-6)
    # Bottom-right corner: v = 0 - x[2, 4] = -0.4, h = 0 - x[3, 3] = -0.3.
    assert grad[3, 4].item() == pytest.approx((0.4**2 + 0.3**2 + eps) ** 0.5, abs=1e-6)
    # A flat image gives sqrt(eps) inside, and the function equals the module.
    assert image_gradient(torch.ones(1, 1, 5, 5))[0, 0, 2, 2].item() == pytest.approx(1e-3)
    assert torch.equal(image_gradient(ramp), ImageGradient()(ramp))


def test_gradient_operator_is_per_channel_same_size_and_stateless():
    module = ImageGradient()
    assert module.state_dict() == {} and list(module.parameters()) == []
    x = torch.rand(2, 3, 7, 9)
    grad = module(x)
    assert grad.shape == x.shape
    # Channel 1 alone gives the same as channel 1 in the batch: channels do not mix.
    assert torch.allclose(grad[:, 1:2], module(x[:, 1:2]))


def test_spsr_state_dict_has_no_gradient_kernels():
    keys = SPSRNet(nf=8, nb=4, gc=4).state_dict()
    assert not any(k.startswith("gradient.") for k in keys)


# -------------------------------------------------------------------- SPSR design rules


def test_spsr_taps_are_computed_from_nb():
    assert trunk_taps(23) == [5, 10, 15, 20]
    assert trunk_taps(8) == [2, 4, 6, 8]
    assert trunk_taps(4) == [1, 2, 3, 4]
    assert SPSRNet(nf=8, nb=9, gc=4).taps == [2, 4, 6, 8]
    with pytest.raises(ConfigError, match="nb must be at least 4"):
        SPSRNet(nb=3)


def test_spsr_uses_the_tapped_trunk_features():
    torch.manual_seed(0)
    net = SPSRNet(nf=8, nb=8, gc=4, scale=2).eval()
    lr = torch.rand(1, 3, 8, 8)
    seen = []
    hooks = [
        block.register_forward_hook(lambda m, i, o, index=index: seen.append(index))
        for index, block in enumerate(net.body, start=1)
    ]
    captured = []
    branch_hooks = [
        blk.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
        for blk in net.grad_blocks
    ]
    trunk_features = {}
    tap_hooks = [
        net.body[t - 1].register_forward_hook(lambda m, i, o, t=t: trunk_features.__setitem__(t, o))
        for t in net.taps
    ]
    net(lr)
    for hook in hooks + branch_hooks + tap_hooks:
        hook.remove()
    assert seen == list(range(1, 9))
    # Stage k of the branch sees cat(branch, trunk features after block taps[k]).
    for stage, tap in enumerate(net.taps):
        assert torch.equal(captured[stage][:, 8:], trunk_features[tap])


def test_spsr_has_no_normalisation_layers_and_biased_convs():
    net = SPSRNet(nf=8, nb=4, gc=4)
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)
    for name, module in net.named_modules():
        assert not isinstance(module, norms), f"normalisation layer at {name}"
        if isinstance(module, nn.Conv2d):
            assert module.bias is not None, f"conv without bias at {name}"


def test_spsr_parameter_groups_partition_the_parameters():
    net = SPSRNet(nf=8, nb=4, gc=4)
    groups = net.parameter_groups()
    fusion_modules = [net.fusion_block, net.fusion_conv, net.fusion_conv_hr, net.fusion_conv_last]
    expected = {id(p) for m in fusion_modules for p in m.parameters()}
    assert {id(p) for p in groups["fusion"]} == expected
    all_ids = [id(p) for params in groups.values() for p in params]
    assert sorted(all_ids) == sorted(id(p) for p in net.parameters())
    assert len(set(all_ids)) == len(all_ids)


def test_spsr_outputs_depend_on_the_right_parts():
    torch.manual_seed(0)
    net = SPSRNet(nf=8, nb=4, gc=4, scale=2)
    out = net(torch.rand(1, 3, 6, 6))
    # The branch output does not depend on the fusion; sr depends on all three parts.
    grads = torch.autograd.grad(out["grad_branch"].sum(), net.fusion_conv.weight, allow_unused=True)
    assert grads[0] is None
    out["sr"].sum().backward()
    for group in ("fusion", "gradient_branch", "trunk"):
        assert any(
            p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameter_groups()[group]
        )


# -------------------------------------------------------------------- SRG2 hooks and stats


def test_srg2_training_stats_and_attention():
    torch.manual_seed(0)
    net = SRG2Net(scale=2, **SMALL["srg2"]).train()
    out = net(torch.rand(2, 3, 9, 11))
    for attention in out["attention"]:
        assert torch.allclose(attention.sum(-1), torch.ones(2, 9, 11), atol=1e-5)
    stats = {}
    for module in net.modules():
        if hasattr(module, "training_stats"):
            stats.update(module.training_stats())
    assert stats["temperature"] == pytest.approx(10.0)
    for i in range(2):
        assert stats[f"switch{i}/temperature"] == pytest.approx(10.0)
        assert 0.0 < stats[f"switch{i}/specificity"] <= 1.0
        usage = [stats[f"switch{i}/usage{t}"] for t in range(3)]
        assert sum(usage) == pytest.approx(1.0)
    for module in net.modules():
        if hasattr(module, "set_training_step"):
            module.set_training_step(10**9)
    assert net.training_stats()["temperature"] == pytest.approx(1.0)


# -------------------------------------------------------------------- attention pictures


def test_attention_pictures_colours_legend_and_max_weight():
    n, h, w = 5, 4, 6
    attention = torch.full((2, h, w, n), 0.0)
    winners = torch.arange(h * w).reshape(h, w) % n
    attention[0] = torch.nn.functional.one_hot(winners, n).float()
    attention[1] = 1.0 / n
    pictures = attention_pictures(attention, zoom=3)
    palette = pictures["palette"]
    assert palette.shape == (n, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == n
    argmax = pictures["argmax"]
    assert argmax.dtype == np.uint8 and argmax.ndim == 4 and argmax.shape[-1] == 3
    assert argmax.shape[1] > h * 3  # legend strip below the map
    for i in range(h):
        for j in range(w):
            block = argmax[0, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3]
            assert (block == palette[winners[i, j]]).all()
    legend = argmax[0, h * 3 :]
    for colour in palette:  # every transform has a swatch
        assert (legend == colour).all(-1).sum() > 20
    grey = pictures["max_weight"]
    assert grey.shape == (2, h * 3, w * 3) and grey.dtype == np.uint8
    assert (grey[0] == 255).all() and (grey[1] == 0).all()


def test_attention_pictures_unbatched_and_numpy_input():
    attention = np.random.default_rng(0).dirichlet(np.ones(12), size=(7, 10)).astype(np.float32)
    pictures = attention_pictures(attention)
    assert pictures["argmax"].ndim == 3 and pictures["max_weight"].ndim == 2
    assert pictures["argmax"].shape[1] >= 128  # small maps are enlarged
    assert transform_palette(40).shape == (40, 3)
    with pytest.raises(ValueError):
        attention_pictures(np.zeros((3, 3)))
