"""Architecture detection round trips, old ESRGAN layouts, checkpoint unwrapping."""

from __future__ import annotations

import re

import pytest
import torch

from srkit.errors import CheckpointError
from srkit.nets import build_network, detect_network
from srkit.nets.compact import detect_compact
from srkit.nets.convert import unwrap_state_dict
from srkit.nets.rrdb import RRDBNet, convert_old_esrgan, detect_rrdb, to_old_esrgan
from srkit.nets.spsr import detect_spsr
from srkit.nets.srg2 import detect_srg2


def finish_schedules(net: torch.nn.Module) -> torch.nn.Module:
    for module in net.modules():
        if hasattr(module, "set_training_step"):
            module.set_training_step(10**9)
    return net


def sr_of(output):
    return output if isinstance(output, torch.Tensor) else output["sr"]


def round_trip(name: str, kwargs: dict, in_channels: int = 3) -> None:
    torch.manual_seed(0)
    original = finish_schedules(build_network(name, **kwargs)).eval()
    state = original.state_dict()
    detected_name, detected = detect_network(state)
    assert detected_name == name
    for key, value in kwargs.items():
        if not key.startswith("temperature"):
            assert detected[key] == value, key
    rebuilt = build_network(detected_name, **detected)
    rebuilt.load_state_dict(state, strict=True)
    rebuilt.eval()
    lr = torch.rand(1, in_channels, 7, 9)
    with torch.no_grad():
        assert torch.equal(sr_of(original(lr)), sr_of(rebuilt(lr)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nf": 16, "nb": 3, "gc": 8, "scale": 2},
        {"nf": 8, "nb": 2, "gc": 4, "scale": 8, "in_channels": 1, "out_channels": 1},
        {"nf": 8, "nb": 1, "gc": 4, "scale": 1},
        {"nf": 8, "nb": 2, "gc": 4, "scale": 2, "pixel_unshuffle": True},
        {"nf": 8, "nb": 2, "gc": 4, "scale": 1, "pixel_unshuffle": True},
    ],
)
def test_rrdb_round_trip(kwargs):
    round_trip("rrdb", kwargs, kwargs.get("in_channels", 3))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nf": 8, "nb": 5, "gc": 4, "scale": 2},
        {"nf": 12, "nb": 4, "gc": 6, "scale": 8, "in_channels": 1, "out_channels": 1},
    ],
)
def test_spsr_round_trip(kwargs):
    round_trip("spsr", kwargs, kwargs.get("in_channels", 3))


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "nf": 8,
            "depth": 3,
            "transforms": 3,
            "trans_layers": 1,
            "mux_filters": 8,
            "reductions": 1,
            "processing_layers": 2,
            "attention_norm": True,
            "attention_history": 5,
            "noise": True,
            "scale": 2,
        },
        {
            "nf": 12,
            "depth": 1,
            "transforms": 5,
            "trans_layers": 4,
            "mux_filters": 12,
            "reductions": 0,
            "processing_layers": 0,
            "scale": 4,
            "temperature_min": 0.5,
            "temperature_final_step": 10,
            "temperature_min_step": 20,
        },
    ],
)
def test_srg2_round_trip(kwargs):
    round_trip("srg2", kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_feat": 8, "num_conv": 3, "scale": 4},
        {"num_feat": 6, "num_conv": 1, "scale": 3, "in_channels": 1, "out_channels": 1},
        {"num_feat": 4, "num_conv": 0, "scale": 8, "in_channels": 1, "out_channels": 3},
        {"num_feat": 4, "num_conv": 2, "scale": 1, "in_channels": 4, "out_channels": 4},
    ],
)
def test_compact_round_trip(kwargs):
    round_trip("compact", kwargs, kwargs.get("in_channels", 3))


def test_srg2_detection_carries_the_temperatures():
    net = build_network("srg2", nf=8, depth=1, transforms=2, mux_filters=8, temperature=7.0)
    net.switches[0].set_training_step(5000)  # mid-anneal: 7 -> 1 over 20000 steps
    state = net.state_dict()
    name, kwargs = detect_network(state)
    rebuilt = build_network(name, **kwargs)
    rebuilt.load_state_dict(state)
    assert float(rebuilt.switches[0].temperature) == pytest.approx(5.5)


def test_detectors_do_not_claim_each_other():
    states = {
        "rrdb": build_network("rrdb", nf=8, nb=4, gc=4).state_dict(),
        "spsr": build_network("spsr", nf=8, nb=4, gc=4).state_dict(),
        "srg2": build_network("srg2", nf=8, depth=1, transforms=2, mux_filters=8).state_dict(),
        "compact": build_network("compact", num_feat=8, num_conv=2).state_dict(),
    }
    detectors = {
        "rrdb": detect_rrdb,
        "spsr": detect_spsr,
        "srg2": detect_srg2,
        "compact": detect_compact,
    }
    for state_name, state in states.items():
        for detector_name, detector in detectors.items():
            found = detector(state)
            assert (found is not None) == (state_name == detector_name), (state_name, detector_name)


def test_detection_refuses_damaged_state_dicts():
    state = build_network("rrdb", nf=8, nb=2, gc=4).state_dict()
    missing = {k: v for k, v in state.items() if k != "body.1.rdb2.conv3.bias"}
    assert detect_rrdb(missing) is None
    reshaped = dict(state, **{"conv_hr.weight": torch.zeros(8, 7, 3, 3)})
    assert detect_rrdb(reshaped) is None
    extra = dict(state, **{"something.else": torch.zeros(1)})
    assert detect_rrdb(extra) is None
    with pytest.raises(CheckpointError, match="do not match any known architecture"):
        detect_network({"foo.weight": torch.zeros(1)})


# ------------------------------------------------------------------------ old ESRGAN layout


def hand_renamed_old_layout(state: dict, nb: int, stages: int) -> dict:
    """The original ESRGAN keys, written out independently of the converter under test."""
    old = {}
    for key, value in state.items():
        if m := re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", key):
            old[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = value
    kinds = ("weight", "bias")
    for kind in kinds:
        old[f"model.0.{kind}"] = state[f"conv_first.{kind}"]
        old[f"model.1.sub.{nb}.{kind}"] = state[f"conv_body.{kind}"]
    # Sequential: 0 conv, 1 shortcut, then [Upsample, conv, LReLU] per x2, HR conv, LReLU, conv.
    index = 2
    for stage in range(1, stages + 1):
        for kind in kinds:
            old[f"model.{index + 1}.{kind}"] = state[f"conv_up{stage}.{kind}"]
        index += 3
    for kind in kinds:
        old[f"model.{index}.{kind}"] = state[f"conv_hr.{kind}"]
        old[f"model.{index + 2}.{kind}"] = state[f"conv_last.{kind}"]
    return old


@pytest.mark.parametrize("scale, stages", [(4, 2), (2, 1), (8, 3), (1, 0)])
def test_old_esrgan_layout_loads_and_gives_the_same_output(scale, stages):
    torch.manual_seed(0)
    nb = 3
    new = RRDBNet(nf=8, nb=nb, gc=4, scale=scale).eval()
    old_state = hand_renamed_old_layout(new.state_dict(), nb, stages)
    if scale == 4:
        for key in (
            "model.0.weight",
            "model.1.sub.0.RDB1.conv1.0.weight",
            "model.1.sub.3.weight",
            "model.3.weight",
            "model.6.weight",
            "model.8.weight",
            "model.10.weight",
        ):
            assert key in old_state
    assert to_old_esrgan(new.state_dict()).keys() == old_state.keys()

    name, kwargs = detect_network(old_state)
    assert name == "rrdb"
    assert (kwargs["nf"], kwargs["nb"], kwargs["gc"], kwargs["scale"]) == (8, nb, 4, scale)
    loaded = build_network(name, **kwargs)
    loaded.load_state_dict(old_state, strict=True)  # converted by the load pre-hook
    lr = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(new(lr), loaded.eval()(lr))
    assert convert_old_esrgan(old_state).keys() == new.state_dict().keys()
    assert RRDBNet.convert_state_dict(old_state).keys() == new.state_dict().keys()


def test_bsrgan_layout_is_converted():
    net = RRDBNet(nf=8, nb=2, gc=4)
    renamed = {}
    for key, value in net.state_dict().items():
        key = re.sub(r"^body\.(\d+)\.rdb(\d)", r"RRDB_trunk.\1.RDB\2", key)
        key = key.replace("conv_body.", "trunk_conv.").replace("conv_hr.", "HRconv.")
        key = re.sub(r"^conv_up(\d)", r"upconv\1", key)
        renamed[key] = value
    assert detect_network(renamed) == ("rrdb", detect_rrdb(net.state_dict()))
    fresh = RRDBNet(nf=8, nb=2, gc=4)
    fresh.load_state_dict(renamed)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, net.state_dict()[key])


def test_old_layout_with_pixel_shuffle_upsampling_is_not_claimed():
    old = to_old_esrgan(RRDBNet(nf=8, nb=1, gc=4).state_dict())
    old["model.5.weight"] = old.pop("model.6.weight")  # not the nearest-upsampling layout
    old["model.5.bias"] = old.pop("model.6.bias")
    assert detect_rrdb(old) is None


# ------------------------------------------------------------------------- unwrapping


def test_unwrap_basicsr_and_other_wrappers():
    state = RRDBNet(nf=8, nb=1, gc=4).state_dict()
    ema = {k: v + 1 for k, v in state.items()}
    assert unwrap_state_dict(state).keys() == state.keys()
    unwrapped = unwrap_state_dict({"params": state, "params_ema": ema})
    assert all(torch.equal(unwrapped[k], ema[k]) for k in state)  # EMA preferred
    assert unwrap_state_dict({"params": state}).keys() == state.keys()
    assert unwrap_state_dict({"state_dict": state, "epoch": 3}).keys() == state.keys()
    ddp = {f"module.{k}": v for k, v in state.items()}
    assert unwrap_state_dict({"state_dict": ddp}).keys() == state.keys()
    compiled = {f"_orig_mod.{k}": v for k, v in ddp.items()}
    assert unwrap_state_dict(compiled).keys() == state.keys()
    assert detect_network(unwrap_state_dict({"params_ema": ddp}))[0] == "rrdb"


def test_unwrap_errors_are_checkpoint_errors():
    with pytest.raises(CheckpointError, match="no network weights"):
        unwrap_state_dict({"epoch": 3, "optimizer": {"lr": 1}})
    with pytest.raises(CheckpointError, match="no network weights"):
        unwrap_state_dict([1, 2, 3])
