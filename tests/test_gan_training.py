"""GAN training through the one trainer: every GAN type and discriminator, megabatch, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from srkit.cli import main
from srkit.config import validate_config
from srkit.errors import ConfigError
from srkit.train.trainer import Trainer

TINY_DISCRIMINATORS = {
    "vgg": {"type": "vgg", "nf": 4, "norm": "none"},
    "pixdisc": {"type": "pixdisc", "nf": 4},
    "unet": {"type": "unet", "nf": 4},
    "switched": {
        "type": "switched",
        "nf": 4,
        "transforms": 2,
        "mux_filters": 4,
        "temperature_final_step": 10,
    },
}


def gan_config(make_config, discriminator: str, gan_type: str, **train) -> dict:
    raw = make_config()
    raw["data"]["train"]["patch_size"] = 64
    raw["networks"]["discriminator"] = dict(TINY_DISCRIMINATORS[discriminator])
    raw["losses"] = [
        {"type": "pixel", "weight": 1.0},
        {"type": "gan", "weight": 0.1, "gan_type": gan_type, "discriminator": "discriminator"},
    ]
    raw["train"].update(train)
    return raw


def logged(run: Path) -> list[dict]:
    """Training scalars per logged step (validation rows left out)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "g/total" in row or "d/gan" in row]


@pytest.mark.parametrize("gan_type", ["gan", "ragan", "lsgan", "hinge", "pixgan"])
def test_every_gan_type_trains_with_finite_losses(make_config, gan_type):
    raw = gan_config(make_config, "pixdisc", gan_type, iterations=30)
    raw["logging"]["print_every"] = 10
    Trainer(validate_config(raw), quiet=True).run()
    rows = logged(Path(raw["output_dir"]) / raw["name"])
    assert [r["step"] for r in rows] == [10, 20, 30]
    for row in rows:
        for key in (
            "g/gan",
            "g/pixel",
            "d/gan",
            "d/gan/real_logit",
            "d/gan/fake_logit",
            "d/gan/logit_gap",
        ):
            assert math.isfinite(row[key]), (key, row)
        assert "grad_norm/discriminator" in row and "lr/discriminator" in row


@pytest.mark.parametrize("discriminator", ["vgg", "unet", "switched"])
def test_every_discriminator_trains(make_config, discriminator):
    gan_type = "ragan" if discriminator == "vgg" else "pixgan"
    raw = gan_config(make_config, discriminator, gan_type, iterations=6)
    raw["logging"]["print_every"] = 3
    raw["logging"]["image_every"] = 6
    Trainer(validate_config(raw), quiet=True).run()
    run = Path(raw["output_dir"]) / raw["name"]
    rows = logged(run)
    assert all(math.isfinite(r["d/gan"]) and math.isfinite(r["g/gan"]) for r in rows)
    images = {p.name for p in (run / "images").iterdir()}
    if gan_type == "pixgan":  # swapped real/fake beside D's maps
        assert "gan_swaps_00000006.png" in images
    if discriminator == "switched":  # attention of the discriminator's switch, and its stats
        assert any(name.startswith("discriminator_switch_attention") for name in images)
        assert "stats/discriminator/switch/temperature" in rows[-1]


def one_gan_step(raw: dict, megabatch: int) -> tuple[dict, dict]:
    raw = {**raw, "name": f"mb{megabatch}", "train": {**raw["train"], "megabatch": megabatch}}
    trainer = Trainer(validate_config(raw), quiet=True)
    items = [trainer.train_dataset[(index, 7 + index)] for index in range(4)]
    batch = {
        "lr": torch.stack([i["lr"] for i in items]),
        "hr": torch.stack([i["hr"] for i in items]),
    }
    logs = {k: float(v) for k, v in trainer.train_step(batch, step=0).items()}
    grads = {}
    for name in ("generator", "discriminator"):
        for key, parameter in trainer.networks[name].named_parameters():
            grads[f"{name}.{key}"] = parameter.grad.clone()
            grads[f"{name}.{key}/value"] = parameter.detach().clone()
    return logs, grads


def test_megabatch_invariance_with_a_discriminator(make_config):
    # A discriminator without normalisation: batch-size-dependent conv kernels change GroupNorm
    # outputs in the last float bits and tiny networks amplify that; spectral norm's power
    # iteration runs once per forward, i.e. once per chunk (documented, not invariant).
    raw = gan_config(make_config, "vgg", "gan")
    logs1, grads1 = one_gan_step(raw, 1)
    logs2, grads2 = one_gan_step(raw, 4)
    for key in ("g/gan", "g/pixel", "g/total", "d/gan", "d/gan/real_logit", "d/gan/fake_logit"):
        assert logs2[key] == pytest.approx(logs1[key], rel=1e-5, abs=1e-7), key
    for key in grads1:
        # Relative to each tensor's scale: bias gradients are sums over every HR pixel and
        # lose their last float32 digits to cancellation (seen: 1.2e-4 of the scale), so an
        # element-wise rtol would test float noise. Any real error in chunking or in the
        # 1/megabatch scaling is a factor, far above this bound.
        scale = grads1[key].abs().max().item()
        difference = (grads2[key] - grads1[key]).abs().max().item()
        assert difference <= 3e-4 * scale + 1e-7, (key, difference, scale)


def test_resume_with_discriminator_is_exact(make_config):
    raw = gan_config(make_config, "pixdisc", "pixgan", iterations=6, g_warmup=1)
    raw["train"]["d_noise"] = {"start": 0.05, "until": 6}
    raw["logging"]["checkpoint_every"] = 3
    Trainer(validate_config({**raw, "name": "straight"}), quiet=True).run()
    first = {**raw, "name": "resumed", "train": {**raw["train"], "iterations": 3}}
    Trainer(validate_config(first), quiet=True).run()
    Trainer(validate_config({**raw, "name": "resumed"}), resume="auto", quiet=True).run()
    runs = Path(raw["output_dir"])

    def losses(name: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k[:2] in ("g/", "d/")} for r in logged(runs / name)]

    assert losses("straight") == losses("resumed")
    for file in ("generator.safetensors", "discriminator.safetensors"):
        a = load_file(runs / "straight/checkpoints/step_00000006" / file)
        b = load_file(runs / "resumed/checkpoints/step_00000006" / file)
        assert all(torch.equal(a[k], b[k]) for k in a), file


def test_step_options_gate_the_networks(make_config):
    raw = gan_config(make_config, "pixdisc", "gan", iterations=4, d_init_iters=2, g_warmup=3)
    trainer = Trainer(validate_config(raw), quiet=True)
    items = [trainer.train_dataset[(index, index)] for index in range(4)]
    batch = {
        "lr": torch.stack([i["lr"] for i in items]),
        "hr": torch.stack([i["hr"] for i in items]),
    }
    assert not any(k.startswith("g/") for k in trainer.train_step(batch, 0))  # before d_init_iters
    assert not any(k.startswith("d/") for k in trainer.train_step(batch, 1))  # before g_warmup
    logs = trainer.train_step(batch, 3)
    assert "g/gan" in logs and "d/gan" in logs


def test_pixgan_needs_a_map_discriminator(make_config):
    raw = gan_config(make_config, "vgg", "pixgan")
    with pytest.raises(ConfigError, match="needs a discriminator that outputs a logit map"):
        Trainer(validate_config(raw), quiet=True)


def test_unknown_gan_type_lists_valid_names(make_config, tmp_path, capsys):
    raw = gan_config(make_config, "pixdisc", "wgan")
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "losses.1.gan_type" in err and "'wgan'" in err
    for name in ("gan", "ragan", "lsgan", "hinge", "pixgan"):
        assert f"'{name}'" in err


def test_discriminator_name_must_exist(make_config):
    raw = gan_config(make_config, "pixdisc", "gan")
    raw["losses"][1]["discriminator"] = "critic"
    with pytest.raises(ConfigError, match=r"losses\.1\.discriminator: no network named 'critic'"):
        validate_config(raw)


def test_pixgan_pictures_draw_signed_detail_around_mid_grey():
    from srkit.losses.adversarial import _judged_pictures

    images = [torch.rand(3, 8, 8), torch.rand(3, 8, 8)]
    for drawn, image in zip(_judged_pictures(*images), images, strict=True):
        torch.testing.assert_close(drawn, image)  # images are drawn as they are
    # detail(x) is signed and faint: clamped to 0..1 it would be a black picture.
    real, fake = 0.03 * torch.randn(3, 8, 8), 0.01 * torch.randn(3, 8, 8)
    drawn_real, drawn_fake = _judged_pictures(real, fake)
    scale = max(real.abs().max(), fake.abs().max())
    torch.testing.assert_close(drawn_real, 0.5 + 0.5 * real / scale)
    torch.testing.assert_close(drawn_fake, 0.5 + 0.5 * fake / scale)  # one scale for both
    assert drawn_real.std() > 0.1 and drawn_real.min() >= 0 and drawn_real.max() <= 1


def test_a_pixgan_discriminator_judging_detail_trains_and_draws_its_swaps(make_config):
    # The shipped pixgan recipes' setting: D judges detail(hr) / detail(sr), no normalisation.
    raw = gan_config(make_config, "pixdisc", "pixgan", iterations=6)
    raw["networks"]["discriminator"]["norm"] = "none"
    raw["losses"][1].update(
        real="detail(hr)",
        fake=["detail(sr)"],
        pixgan={"swap_probability": 1.0, "min_size": 16},
    )
    raw["logging"]["print_every"] = 3
    raw["logging"]["image_every"] = 6
    Trainer(validate_config(raw), quiet=True).run()
    run = Path(raw["output_dir"]) / raw["name"]
    assert all(math.isfinite(r["d/gan"]) and math.isfinite(r["g/gan"]) for r in logged(run))
    from PIL import Image

    picture = np.asarray(Image.open(run / "images" / "gan_swaps_00000006.png").convert("L"))
    judged = picture[:, : 2 * picture.shape[1] // 5]  # swapped real | swapped fake
    assert 100 < judged.mean() < 156 and judged.std() > 5  # signed detail around mid-grey
