"""The switch: near-identity start, attention, normalisation, temperature schedule, hooks."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

from srkit.errors import ConfigError
from srkit.nets.srg2 import SRG2Net
from srkit.nets.switch import (
    Switch,
    SwitchMultiplexer,
    SwitchTemperatureWarning,
    switch_temperature,
)

SMALL = {"transforms": 4, "trans_layers": 2, "mux_filters": 8}


def make_switch(**kwargs) -> Switch:
    torch.manual_seed(0)
    return Switch(16, **{**SMALL, **kwargs})


def captured_logits(switch: Switch, x: torch.Tensor):
    """(switch output, attention, output of the multiplexer's last conv)."""
    seen = {}
    hook = switch.multiplexer.logits.register_forward_hook(
        lambda m, i, o: seen.__setitem__("logits", o)
    )
    out, attention = switch(x)
    hook.remove()
    return out, attention, seen["logits"]


# ---------------------------------------------------------------------- residual start


@pytest.mark.parametrize("noise", [False, True])
def test_fresh_switch_is_almost_the_identity(noise):
    switch = make_switch(noise=noise, transforms=8, trans_layers=3, mux_filters=16)
    x = torch.randn(2, 16, 12, 12)
    for mode in (True, False):
        switch.train(mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SwitchTemperatureWarning)
            out, _ = switch(x)
        relative = (out - x).norm() / x.norm()
        assert relative < 0.05, f"training={mode}: relative change {relative:.3f}"


def test_fresh_srg2_switches_change_features_by_less_than_five_percent():
    torch.manual_seed(0)
    net = SRG2Net(nf=16, depth=3, **SMALL).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SwitchTemperatureWarning)
        feat = net.conv_first(torch.rand(2, 3, 12, 12))
        for switch in net.switches:
            out, _ = switch(feat)
            assert (out - feat).norm() / feat.norm() < 0.05
            feat = out


def test_switch_backpropagates_into_every_part():
    switch = make_switch(noise=True, attention_norm=True)
    out, attention = switch(torch.randn(2, 16, 8, 8))
    (out.square().mean() + attention.square().mean()).backward()
    for name, param in switch.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------- attention


def test_attention_is_a_per_pixel_softmax_of_plain_logits_over_temperature():
    switch = make_switch(temperature=5.0, temperature_final_step=100).eval()
    switch.set_training_step(50)  # temperature 3
    assert float(switch.temperature) == pytest.approx(3.0)
    x = torch.randn(2, 16, 13, 17)
    with pytest.warns(SwitchTemperatureWarning):
        _, attention, logits = captured_logits(switch, x)
    assert attention.shape == (2, 13, 17, 4)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 13, 17), atol=1e-6)
    # The last multiplexer layer is a plain conv whose output goes straight to the softmax.
    assert type(switch.multiplexer.logits) is nn.Conv2d
    assert torch.equal(switch.multiplexer(x), logits)
    expected = torch.softmax(logits / 3.0, dim=1).permute(0, 2, 3, 1)
    assert torch.allclose(attention, expected, atol=1e-6)
    # Logits are unbounded below (no SiLU/ReLU-like activation squashed them).
    assert logits.min() < -0.3


def test_multiplexer_uses_group_norm_and_handles_odd_sizes():
    mux = SwitchMultiplexer(16, transforms=5, filters=8, reductions=3, processing_layers=2)
    assert any(isinstance(m, nn.GroupNorm) for m in mux.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in mux.modules())
    assert mux(torch.randn(1, 16, 13, 17)).shape == (1, 5, 13, 17)
    with pytest.raises(ConfigError):
        SwitchMultiplexer(16, transforms=5, filters=10)


def test_transforms_are_biased_and_follow_the_width_pattern():
    switch = make_switch(trans_layers=3)
    for transform in switch.transforms:
        widths = [(c.in_channels, c.out_channels) for c in transform.convs]
        assert widths == [(16, 24), (24, 24), (24, 16)]
        assert all(c.bias is not None for c in transform.convs)


def test_attention_normalisation_acts_only_in_training_mode():
    switch = make_switch(attention_norm=True, attention_history=3, temperature=1.0)
    # Make transform 0 dominate everywhere so the usage is far from uniform.
    with torch.no_grad():
        switch.multiplexer.logits.bias.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
    x = torch.randn(2, 16, 8, 8)

    switch.eval()
    _, attention, logits = captured_logits(switch, x)
    assert int(switch.usage_count) == 0  # eval does not update the history
    assert torch.allclose(attention, torch.softmax(logits, 1).permute(0, 2, 3, 1), atol=1e-6)

    switch.train()
    for _ in range(2):  # history not full yet: plain softmax
        _, attention, logits = captured_logits(switch, x)
        assert torch.allclose(attention, torch.softmax(logits, 1).permute(0, 2, 3, 1), atol=1e-6)
    _, attention, logits = captured_logits(switch, x)  # third forward fills it
    plain = torch.softmax(logits, 1).permute(0, 2, 3, 1)
    assert int(switch.usage_count) == 3
    assert not torch.allclose(attention, plain, atol=1e-3)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 8, 8), atol=1e-5)
    # Normalisation moves weight away from the over-used transform.
    assert attention[..., 0].mean() < plain[..., 0].mean()

    history = switch.usage_history.clone()
    switch.eval()
    _, attention, logits = captured_logits(switch, x)
    assert torch.allclose(attention, torch.softmax(logits, 1).permute(0, 2, 3, 1), atol=1e-6)
    assert torch.equal(history, switch.usage_history) and int(switch.usage_count) == 3
    assert "usage_history" in switch.state_dict()


def test_noise_only_in_training():
    switch = make_switch(noise=True)
    x = torch.randn(1, 16, 8, 8)
    switch.set_training_step(10**9)
    switch.eval()
    assert torch.equal(switch(x)[0], switch(x)[0])
    switch.train()
    assert not torch.equal(switch(x)[0], switch(x)[0])
    assert float(switch.noise_scale.detach()) == pytest.approx(1e-3)


def test_non_residual_variant():
    torch.manual_seed(0)
    switch = Switch(8, 3, 2, out_channels=12, residual=False, mux_filters=8)
    x = torch.randn(2, 8, 10, 10)
    out, attention = switch(x)
    assert out.shape == (2, 12, 10, 10) and attention.shape == (2, 10, 10, 3)
    # Full-strength init: the non-residual output carries the signal.
    assert out.norm() / x.norm() > 0.1
    with pytest.raises(ConfigError, match="residual switch keeps its width"):
        Switch(8, out_channels=12, residual=True)


# ---------------------------------------------------------------------- temperature


def test_temperature_schedule_is_continuous_monotone_and_hits_its_values():
    args = {"start": 10.0, "final_step": 1000, "minimum": 0.25, "min_step": 3000}
    values = [switch_temperature(step, **args) for step in range(0, 4001)]
    assert values[0] == 10.0
    assert values[1000] == pytest.approx(1.0)
    assert values[500] == pytest.approx(5.5)
    assert values[2000] == pytest.approx(0.625)
    assert values[3000] == pytest.approx(0.25) and values[4000] == 0.25
    assert all(b <= a for a, b in itertools.pairwise(values))
    # Continuity: neighbouring steps differ by at most one step's worth of slope.
    largest_jump = max(abs(b - a) for a, b in itertools.pairwise(values))
    assert largest_jump <= 9.0 / 1000 + 1e-9
    assert switch_temperature(999.999, **args) == pytest.approx(1.0, abs=1e-4)
    # Without a second phase the temperature stays at 1.
    assert switch_temperature(10**6, 10.0, 1000) == 1.0
    assert switch_temperature(0, 10.0, 0) == 1.0


def test_set_training_step_drives_a_checkpointed_buffer():
    switch = make_switch(temperature=10.0, temperature_final_step=100)
    assert float(switch.temperature) == 10.0
    switch.set_training_step(50)
    assert float(switch.state_dict()["temperature"]) == pytest.approx(5.5)
    other = make_switch(temperature=10.0, temperature_final_step=100)
    other.load_state_dict(switch.state_dict())
    assert float(other.temperature) == pytest.approx(5.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.5},
        {"temperature_min": 0.5, "temperature_final_step": 100, "temperature_min_step": 100},
        {"temperature_min": 0.0},
        {"temperature_min": 1.5},
        {"temperature_final_step": -1},
    ],
)
def test_bad_schedules_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        make_switch(**kwargs)


def test_evaluating_at_a_training_temperature_warns_once():
    switch = make_switch(temperature=10.0, temperature_final_step=100)
    x = torch.randn(1, 16, 6, 6)
    switch.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwitchTemperatureWarning)
        switch(x)  # training mode: no check
    switch.eval()
    with pytest.warns(SwitchTemperatureWarning, match="temperature 10"):
        switch(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwitchTemperatureWarning)
        switch(x)  # once per switch
        switch.set_training_step(100)
        switch.eval()
        switch(x)  # at the final temperature: silent


def test_final_temperature_below_one_is_carried_by_the_weights():
    switch = make_switch(
        temperature=4.0, temperature_final_step=10, temperature_min=0.5, temperature_min_step=20
    )
    switch.set_training_step(20)
    state = switch.state_dict()
    assert float(state["temperature"]) == float(state["temperature_final"]) == 0.5
    # A switch built with the default schedule (as detection does) adopts the saved one.
    fresh = make_switch()
    fresh.load_state_dict(state)
    fresh.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwitchTemperatureWarning)
        fresh(torch.randn(1, 16, 6, 6))
    # A mid-anneal checkpoint loaded later re-arms the warning.
    switch.set_training_step(5)
    fresh.load_state_dict(switch.state_dict())
    with pytest.warns(SwitchTemperatureWarning):
        fresh(torch.randn(1, 16, 6, 6))


def test_training_stats_of_a_switch():
    switch = make_switch()
    switch.stats_prefix = "switch3"
    assert switch.training_stats() == {"switch3/temperature": 10.0}
    switch.train()
    switch(torch.randn(2, 16, 8, 8))
    stats = switch.training_stats()
    assert set(stats) == {
        "switch3/temperature",
        "switch3/specificity",
        *(f"switch3/usage{i}" for i in range(4)),
    }
    assert 0.5 <= stats["switch3/specificity"] <= 1.0  # top-2 of 4 weights
    assert sum(stats[f"switch3/usage{i}"] for i in range(4)) == pytest.approx(1.0)


def test_multiplexer_without_group_norm_keeps_the_signal():
    """No GroupNorm (multiplexers fed by image gradients): LeakyReLU units with Kaiming weights
    carry the input's scale to the logits and gradients back to the input. (SiLU with PyTorch's
    default init, measured: backward gain 0.0003, i.e. the multiplexer could not learn and its
    attention stayed uniform.)"""
    mux = SwitchMultiplexer(32, transforms=4, filters=16, reductions=2, norm=False)
    assert not any(isinstance(m, nn.GroupNorm) for m in mux.modules())
    for seed in range(3):
        torch.manual_seed(seed)
        mux = SwitchMultiplexer(32, transforms=4, filters=16, reductions=2, norm=False)
        x = (torch.randn(2, 32, 24, 24) * 0.25).requires_grad_(True)
        logits = mux(x)
        assert logits.std() > 0.3 * x.std()
        direction = torch.randn_like(logits)
        (grad,) = torch.autograd.grad(logits, x, direction / direction.norm())
        gain = grad.norm() * (logits.numel() / x.numel()) ** 0.5  # measured 0.27-0.29
        assert gain > 0.05
