"""The compact generator (SRVGGNetCompact layout): size, community files, detection, rules."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from srkit.cli import main
from srkit.config import validate_config
from srkit.errors import ConfigError
from srkit.nets import build_network, detect_network
from srkit.nets.compact import detect_compact
from srkit.train.trainer import Trainer
from srkit.weights import load_network, save_weights


def community_state(
    num_feat: int, num_conv: int, scale: int, in_ch: int = 3, out_ch: int = 3, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A Real-ESRGAN SRVGGNetCompact (PReLU) state dict with random weights, keys written out
    from that layout (``body`` = [conv, PReLU] * (num_conv + 1) + [last conv])."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, spread: float) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1) * spread

    state, channels = {}, in_ch
    for i in range(num_conv + 1):
        bound = 1 / (channels * 9) ** 0.5
        state[f"body.{2 * i}.weight"] = rand(num_feat, channels, 3, 3, spread=bound)
        state[f"body.{2 * i}.bias"] = rand(num_feat, spread=bound)
        state[f"body.{2 * i + 1}.weight"] = torch.rand(num_feat, generator=generator) * 0.5
        channels = num_feat
    last = 2 * (num_conv + 1)
    bound = 1 / (num_feat * 9) ** 0.5
    state[f"body.{last}.weight"] = rand(out_ch * scale * scale, num_feat, 3, 3, spread=bound)
    state[f"body.{last}.bias"] = rand(out_ch * scale * scale, spread=bound)
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor, scale: int) -> torch.Tensor:
    """SRVGGNetCompact from its description, in plain torch ops: 3x3 conv + PReLU at LR size,
    a last conv to out*s^2 channels, pixel shuffle, plus the nearest-upsampled input."""
    convs = sorted(int(k.split(".")[1]) for k in state if k.endswith(".bias"))
    h = x
    for index in convs[:-1]:
        h = F.conv2d(h, state[f"body.{index}.weight"], state[f"body.{index}.bias"], padding=1)
        h = F.prelu(h, state[f"body.{index + 1}.weight"])
    last = convs[-1]
    h = F.conv2d(h, state[f"body.{last}.weight"], state[f"body.{last}.bias"], padding=1)
    return F.pixel_shuffle(h, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")


def test_parameter_counts_of_the_community_shapes():
    """num_feat 64, PReLU, x4: realesr-general-x4v3 (32 convs) and realesr-animevideov3 (16)."""
    with torch.device("meta"):
        general = build_network("compact", scale=4, num_feat=64, num_conv=32)
        anime = build_network("compact", scale=4, num_feat=64, num_conv=16)
    assert sum(p.numel() for p in general.parameters()) == 1_213_296
    assert sum(p.numel() for p in anime.parameters()) == 621_424
    # By hand: first conv 3*64*9+64, each body conv 64*64*9+64, a PReLU slope per channel after
    # every conv but the last, last conv 64*48*9+48.
    by_hand = (3 * 64 * 9 + 64) + 32 * (64 * 64 * 9 + 64) + 33 * 64 + (64 * 48 * 9 + 48)
    assert by_hand == 1_213_296


@pytest.mark.parametrize(
    ("num_feat", "num_conv", "scale", "in_ch", "out_ch", "suffix"),
    [
        (8, 3, 4, 3, 3, ".pth"),
        (6, 2, 2, 3, 3, ".safetensors"),
        (5, 1, 3, 1, 1, ".pth"),
        (4, 0, 1, 3, 3, ".pth"),
        (4, 2, 4, 1, 3, ".safetensors"),
    ],
)
def test_a_community_file_upscales_like_the_reference(
    tmp_path, num_feat, num_conv, scale, in_ch, out_ch, suffix
):
    state = community_state(num_feat, num_conv, scale, in_ch, out_ch)
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        # Real-ESRGAN's release files: the weights under params_ema (preferred) and params.
        raw = community_state(num_feat, num_conv, scale, in_ch, out_ch, seed=1)
        torch.save({"params_ema": state, "params": raw}, path)
    else:
        save_file(state, str(path))
    model = load_network(path)
    assert model.srkit_arch == {
        "type": "compact",
        "scale": scale,
        "in_channels": in_ch,
        "out_channels": out_ch,
        "num_feat": num_feat,
        "num_conv": num_conv,
        "act_type": "prelu",
    }
    x = torch.rand(2, in_ch, 7, 9, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference_forward(state, x, scale)
        actual = model(x)
    assert actual.shape == (2, out_ch, 7 * scale, 9 * scale)
    assert (actual - expected).abs().max().item() <= 1e-5


def test_a_fresh_network_starts_near_the_nearest_upscale():
    torch.manual_seed(0)
    net = build_network("compact", scale=2, num_feat=8, num_conv=2).eval()
    for parameter in net.body[-1].parameters():
        torch.nn.init.zeros_(parameter)
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        assert torch.equal(net(x), F.interpolate(x, scale_factor=2, mode="nearest"))


@pytest.mark.parametrize("act_type", ["relu", "leakyrelu"])
def test_weightless_activations_load_from_srkit_files_only(tmp_path, act_type):
    torch.manual_seed(0)
    net = build_network("compact", scale=2, num_feat=6, num_conv=2, act_type=act_type).eval()
    assert "body.1.weight" not in net.state_dict()
    # Bare weights cannot tell ReLU from LeakyReLU: not claimed rather than guessed.
    assert detect_compact(net.state_dict()) is None
    save_weights(tmp_path / "g.safetensors", net)  # srkit's metadata records act_type
    loaded = load_network(tmp_path / "g.safetensors")
    assert loaded.srkit_arch["act_type"] == act_type
    x = torch.rand(1, 3, 6, 5) - 0.5
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    slope = 0.1 if act_type == "leakyrelu" else 0.0
    with torch.no_grad():
        assert torch.equal(net.body[1](torch.tensor([-1.0])), torch.tensor([-slope]))


def test_detection_refuses_damaged_or_foreign_state_dicts():
    state = community_state(4, 2, 4)
    assert detect_network(state) == ("compact", detect_compact(state))
    missing = {k: v for k, v in state.items() if k != "body.3.weight"}
    assert detect_compact(missing) is None
    extra = dict(state, **{"body.9.weight": torch.zeros(4, 4, 3, 3)})
    assert detect_compact(extra) is None
    odd_width = dict(
        state, **{"body.6.weight": torch.zeros(7, 4, 3, 3), "body.6.bias": torch.zeros(7)}
    )
    assert detect_compact(odd_width) is None  # 7 = out * s^2 for no channels and scale
    x5 = community_state(4, 1, 5)  # scale 5 is not one srkit builds
    assert detect_compact(x5) is None


def test_in_and_out_channels_must_broadcast():
    with pytest.raises(
        ConfigError, match=r"^compact: out_channels: 1 does not match in_channels 3"
    ):
        build_network("compact", in_channels=3, out_channels=1)
    build_network("compact", in_channels=1, out_channels=3, num_feat=4, num_conv=0)


# ------------------------------------------------------------- community files in srkit's tools


def _community_pth(path, state: dict[str, torch.Tensor]) -> None:
    raw = {k: torch.zeros_like(v) for k, v in state.items()}  # must not be the one loaded
    torch.save({"params_ema": state, "params": raw}, path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_init_fine_tunes_a_community_model(make_config, tmp_path, capsys, suffix):
    state = community_state(num_feat=4, num_conv=1, scale=2)
    path = tmp_path / f"community{suffix}"
    if suffix == ".pth":
        _community_pth(path, state)
    else:
        save_file(state, str(path))
    raw = make_config()
    raw["networks"]["generator"] = {
        "type": "compact",
        "num_feat": 4,
        "num_conv": 1,
        "init": str(path),
    }
    raw["train"]["iterations"] = 2
    trainer = Trainer(validate_config(raw), quiet=True)
    start = trainer.generator.state_dict()
    assert start.keys() == state.keys()
    assert all(torch.equal(start[k], state[k]) for k in state)  # params_ema, not params
    trainer.run()
    run = Path(raw["output_dir"]) / raw["name"]
    trained = load_network(run / "checkpoints" / "step_00000002", prefer_ema=False)
    assert trained.srkit_arch["type"] == "compact"
    moved = [k for k in state if not torch.equal(trained.state_dict()[k], state[k])]
    assert moved  # two steps of Adam moved the weights away from the community model
    # `srkit info` on the checkpoint the fine-tuning wrote.
    assert main(["info", str(run / "checkpoints" / "step_00000002")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"network:\s+compact", out) and "num_conv: 1" in out


def test_info_and_upscale_with_a_community_file(tmp_path, capsys):
    state = community_state(num_feat=5, num_conv=2, scale=2, seed=3)
    _community_pth(tmp_path / "realesr-tiny.pth", state)
    assert main(["info", str(tmp_path / "realesr-tiny.pth")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"network:\s+compact", out)
    for line in ("num_feat: 5", "num_conv: 2", "scale: 2", "act_type: prelu"):
        assert line in out, out

    pixels = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    argv = ["upscale", str(tmp_path / "realesr-tiny.pth"), str(tmp_path / "in.png")]
    assert main([*argv, "-o", str(tmp_path / "out"), "--quiet"]) == 0
    result = np.asarray(Image.open(tmp_path / "out" / "in.png"), dtype=np.float64) / 255
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = reference_forward(state, x, 2).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert result.shape == (20, 24, 3)
    assert np.abs(result - expected).max() <= 0.5 / 255 + 1e-6  # rounding to 8 bits only


def test_a_x3_run_trains_validates_and_checkpoints(make_config):
    """x3 (one pixel shuffle by 3) through the whole trainer: the x2-stage generators cannot."""
    raw = make_config()
    raw["scale"] = 3
    raw["data"]["train"]["patch_size"] = 48
    raw["networks"]["generator"] = {"type": "compact", "num_feat": 8, "num_conv": 2}
    raw["train"]["iterations"] = 2
    raw["logging"]["val_every"] = 2
    Trainer(validate_config(raw), quiet=True).run()
    run = Path(raw["output_dir"]) / raw["name"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(math.isfinite(row.get("val/psnr_y", math.nan)) for row in rows)
    model = load_network(run / "checkpoints" / "step_00000002")
    with torch.no_grad():
        assert model(torch.rand(1, 3, 5, 7)).shape == (1, 3, 15, 21)
