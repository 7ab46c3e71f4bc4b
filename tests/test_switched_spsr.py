"""Switched SPSR and SPSR3: shapes, parameter counts, layout, detection, ONNX export."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from srkit.errors import ConfigError
from srkit.nets import build_network, detect_network
from srkit.nets.blocks import count_parameters
from srkit.nets.registry import get_network_entry, network_names
from srkit.nets.switch import SwitchTemperatureWarning
from srkit.nets.switched_spsr import SPSR3Net, SwitchedSPSRNet
from switched_nets import TINY, TINY_REF, finished, tiny


def reference_for(net: nn.Module, batch: int, seed: int = 0) -> dict:
    if not getattr(net, "extra_inputs", ()):
        return {}
    generator = torch.Generator().manual_seed(seed)
    size = net.reference_size
    return {
        "ref": torch.rand(batch, 4, size, size, generator=generator),
        "ref_center": torch.rand(batch, 2, generator=generator) * 2 - 1,
    }


def meta_count(constructor, **kwargs) -> int:
    with torch.device("meta"):
        return count_parameters(constructor(**kwargs))


# ------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("name", ["spsr_switched", "spsr3"])
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(12, 12), (13, 17)])
def test_forward_shapes(name, scale, size):
    net = tiny(name, scale=scale)
    out = net(torch.rand(2, 3, *size), **reference_for(net, 2))
    high = (2, 3, size[0] * scale, size[1] * scale)
    assert out["sr"].shape == out["grad_branch"].shape == high
    counts = [TINY["transforms"], TINY["transforms"], TINY["grad_transforms"], TINY["transforms"]]
    assert [a.shape for a in out["attention"]] == [(2, *size, n) for n in counts]
    for attention in out["attention"]:
        assert torch.allclose(attention.sum(-1), torch.ones(2, *size), atol=1e-5)


@pytest.mark.parametrize("name", ["spsr_switched", "spsr3"])
def test_scale_one_eight_channels_and_bad_scale(name):
    for scale in (1, 8):
        net = tiny(name, scale=scale)
        assert net(torch.rand(1, 3, 5, 7), **reference_for(net, 1))["sr"].shape[-2:] == (
            5 * scale,
            7 * scale,
        )
    grey = tiny(name, scale=2, in_channels=1, out_channels=1)
    ref = reference_for(grey, 1)
    if ref:
        ref["ref"] = ref["ref"][:, :2]  # one image channel + the mask
    assert grey(torch.rand(1, 1, 6, 6), **ref)["sr"].shape == (1, 1, 12, 12)
    with pytest.raises(ConfigError, match="scale: must be one of"):
        tiny(name, scale=3)


# ------------------------------------------------------------------ parameter counts


def test_switched_spsr_parameter_count_and_where_the_parameters_are():
    assert meta_count(SwitchedSPSRNet, nf=64, transforms=8, scale=4) == 12_632_874
    with torch.device("meta"):
        net = SwitchedSPSRNet()
    parts = {name: count_parameters(module) for name, module in net.named_children()}
    switches = ("feature_switches", "grad_switch", "join_switch")
    # The figures of SwitchedSPSRNet's docstring.
    assert parts["feature_switches"] == 2 * 2_304_162
    assert parts["grad_switch"] == 1_547_134
    assert parts["join_switch"] == 6_176_482
    assert sum(v for k, v in parts.items() if k not in switches) == 300_934
    transform = 64 * 96 * 9 + 96 + 96 * 96 * 9 + 96 + 96 * 64 * 9 + 64
    join_transform = 128 * 192 * 9 + 192 + 192 * 192 * 9 + 192 + 192 * 64 * 9 + 64
    assert count_parameters(net.feature_switches[0].transforms[0]) == transform == 193_792
    assert count_parameters(net.join_switch.transforms[0]) == join_transform == 664_000
    assert count_parameters(net.feature_switches[0].multiplexer) == 679_968
    assert count_parameters(net.grad_switch.multiplexer) == 698_108
    # The seed's multiplexer sizing (its ~112 M came mostly from there; see the docstring).
    seed_like = {"mux_filters": 64, "reductions": 3, "processing_layers": 2}
    assert meta_count(SwitchedSPSRNet, **seed_like) == 63_129_194
    # GroupNorm multiplexers (mux_norm): a weight and a bias per normalised channel, 1,712 per
    # feature or join multiplexer at the default sizes.
    assert meta_count(SwitchedSPSRNet, mux_norm=True) == 12_632_874 + 3 * 1_712 == 12_638_010


def test_spsr3_is_switched_spsr_plus_encoder_and_context_maps():
    assert meta_count(SPSR3Net) == 13_245_290
    with torch.device("meta"):
        net = SPSR3Net()
    encoder = count_parameters(net.reference_encoder)
    context = sum(p.numel() for k, p in net.named_parameters() if ".context." in k)
    assert encoder == 150_080 and context == 462_336
    assert 12_632_874 + encoder + context == 13_245_290
    # Its state dict extends switched SPSR's with the same shapes: SPSR3 can start from it.
    with torch.device("meta"):
        switched = SwitchedSPSRNet().state_dict()
    own = net.state_dict()
    assert all(tuple(own[k].shape) == tuple(v.shape) for k, v in switched.items())
    extra = set(own) - set(switched)
    assert extra and all(
        k.startswith("reference_encoder.") or ".context." in k or k == "ref_size" for k in extra
    )


def test_spsr3_parameter_groups_are_the_new_parts_and_the_rest():
    net = tiny("spsr3")
    groups = net.parameter_groups()
    switched = tiny("spsr_switched")
    assert sum(p.numel() for p in groups["switched"]) == count_parameters(switched)
    ids = [id(p) for params in groups.values() for p in params]
    assert sorted(ids) == sorted(id(p) for p in net.parameters()) and len(set(ids)) == len(ids)


def test_spsr3_starts_from_a_switched_spsr_checkpoint():
    switched = finished(tiny("spsr_switched", scale=2))
    spsr3 = finished(tiny("spsr3", scale=2))
    missing, unexpected = spsr3.load_state_dict(switched.state_dict(), strict=False)
    assert not unexpected and all(
        "context" in k or "reference" in k or k == "ref_size" for k in missing
    )
    # With its context maps at zero, SPSR3 is exactly the switched SPSR it started from.
    with torch.no_grad():
        for name, parameter in spsr3.named_parameters():
            if ".context." in name:
                parameter.zero_()
    lr = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(switched(lr)["sr"], spsr3(lr, **reference_for(spsr3, 1))["sr"])


# ----------------------------------------------------------------------------- layout


def test_the_paths_are_wired_as_documented():
    net = tiny("spsr_switched", scale=2).eval()
    seen = {}

    def keep(name):
        return lambda module, args, kwargs, output: seen.__setitem__(name, (args, kwargs, output))

    for name in ("conv_first", "feature_conv", "grad_conv_first", "grad_conv"):
        getattr(net, name).register_forward_hook(keep(name), with_kwargs=True)
    for name in ("grad_switch", "join_switch"):
        getattr(net, name).register_forward_hook(keep(name), with_kwargs=True)
    net.feature_switches[0].register_forward_hook(keep("f0"), with_kwargs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SwitchTemperatureWarning)
        net(torch.rand(1, 3, 8, 8))
    f1 = seen["f0"][2][0]
    g0 = seen["grad_conv_first"][2]
    fea = seen["feature_conv"][2]
    g = seen["grad_conv"][2]
    # The gradient switch: input g0, multiplexer reads cat(g0, feature switch 0).
    assert torch.equal(seen["grad_switch"][0][0], g0)
    assert torch.equal(seen["grad_switch"][1]["mux_input"], torch.cat((g0, f1), 1))
    # The join: transforms read cat(g, fea); identity and multiplexer read fea.
    join_args, join_kwargs, _ = seen["join_switch"]
    assert torch.equal(join_args[0], torch.cat((g, fea), 1))
    assert join_kwargs["identity"] is fea and join_kwargs["mux_input"] is fea
    # Every conv has a bias; image input to the gradient path is grad(LR).
    assert all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))
    # No per-image statistics anywhere by default (tiles must see what the whole image sees);
    # with mux_norm the feature and join multiplexers get GroupNorm, the gradient one never.
    assert not any(isinstance(m, nn.GroupNorm) for m in net.modules())
    seeds = tiny("spsr_switched", scale=2, mux_norm=True)
    normed = [
        type(s.multiplexer.conv_in.norm).__name__
        for s in (*seeds.feature_switches, seeds.join_switch, seeds.grad_switch)
    ]
    assert normed == ["GroupNorm", "GroupNorm", "GroupNorm", "Identity"]


def test_stats_and_pictures_name_every_switch():
    net = tiny("spsr3", scale=2).train()
    net(torch.rand(2, 3, 8, 8), **reference_for(net, 2))
    stats, pictures = {}, {}
    for module in net.modules():
        if hasattr(module, "training_stats"):
            stats.update(module.training_stats())
        if hasattr(module, "training_pictures"):
            pictures.update(module.training_pictures())
    prefixes = ["feature_switch0", "feature_switch1", "grad_switch", "join_switch"]
    assert stats["temperature"] == pytest.approx(10.0)
    for prefix in prefixes:
        assert f"{prefix}/specificity" in stats
        assert f"{prefix}_attention" in pictures and f"{prefix}_max_weight" in pictures


def test_constructor_is_a_documented_config_schema():
    import inspect
    import re
    import typing

    for name in ("spsr_switched", "spsr3"):
        entry = get_network_entry(name)
        assert entry.role == "generator" and entry.detect is not None
        init = entry.constructor.__init__
        hints = typing.get_type_hints(init)
        args = inspect.getdoc(entry.constructor).split("Args:", 1)[1]
        documented = dict(re.findall(r"^\s{4}(\w+): (.+)$", args, flags=re.M))
        parameters = [p for p in inspect.signature(init).parameters.values() if p.name != "self"]
        for parameter in parameters:
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, parameter.name
            assert parameter.default is not inspect.Parameter.empty, parameter.name
            assert parameter.name in hints, parameter.name
        assert set(documented) == {p.name for p in parameters}


def test_spsr3_refuses_a_reference_smaller_than_its_encoder():
    with pytest.raises(ConfigError, match="ref_size 4 is smaller"):
        SPSR3Net(ref_size=4, ref_reductions=3)


# ---------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("spsr_switched", {"scale": 2}),
        ("spsr_switched", {"scale": 8, "attention_norm": False, "noise": True, "mux_norm": True}),
        ("spsr_switched", {"scale": 1, "in_channels": 1, "out_channels": 1, "reductions": 2}),
        ("spsr3", {"scale": 4}),
        ("spsr3", {"scale": 2, "ref_size": 24, "ref_nf": 4, "ref_reductions": 1}),
        ("spsr3", {"scale": 2, "attention_history": 5, "processing_layers": 2}),
        ("spsr3", {"scale": 2, "mux_norm": True}),
    ],
)
def test_detection_round_trip(name, kwargs):
    original = finished(tiny(name, **kwargs))
    state = original.state_dict()
    detected_name, detected = detect_network(state)
    assert detected_name == name
    for key, value in {**TINY, **(TINY_REF if name == "spsr3" else {}), **kwargs}.items():
        assert detected[key] == value, key
    rebuilt = build_network(detected_name, **detected)
    rebuilt.load_state_dict(state, strict=True)
    rebuilt.eval()
    channels = kwargs.get("in_channels", 3)
    lr = torch.rand(1, channels, 7, 9)
    extra = reference_for(original, 1)
    if extra:
        extra["ref"] = extra["ref"][:, : channels + 1]
    with torch.no_grad():
        assert torch.equal(original(lr, **extra)["sr"], rebuilt(lr, **extra)["sr"])


def test_every_generator_detector_claims_only_its_own_state_dicts():
    small = {
        "compact": {"num_feat": 8, "num_conv": 2},
        "rrdb": {"nf": 8, "nb": 2, "gc": 4},
        "spsr": {"nf": 8, "nb": 4, "gc": 4},
        "srg2": {"nf": 8, "depth": 1, "transforms": 2, "mux_filters": 8},
        "spsr_switched": TINY,
        "spsr3": {**TINY, **TINY_REF},
    }
    assert set(network_names("generator")) == set(small)
    states = {name: build_network(name, **kwargs).state_dict() for name, kwargs in small.items()}
    for detector_name in small:
        detector = get_network_entry(detector_name).detect
        for state_name, state in states.items():
            found = detector(state)
            assert (found is not None) == (state_name == detector_name), (state_name, detector_name)


# ------------------------------------------------------------------------------- export


def test_onnx_export_of_switched_spsr_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from srkit.infer.export import export_onnx

    net = finished(tiny("spsr_switched", scale=4))
    report = export_onnx(
        net, tmp_path / "switched.onnx", input_size=24, verify_sizes=((24, 24), (21, 30))
    )
    assert set(report.differences) == {"1x3x24x24", "1x3x21x30"}
    assert report.max_difference < 1e-4, report.differences


def test_onnx_export_refuses_spsr3_in_one_line(tmp_path):
    from srkit.infer.export import ExportError, export_onnx

    with pytest.raises(ExportError, match="takes ref, ref_center besides the image"):
        export_onnx(finished(tiny("spsr3")), tmp_path / "spsr3.onnx")
    assert not (tmp_path / "spsr3.onnx").exists()
