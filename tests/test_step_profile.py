"""benchmarks/step_profile.py: the ESRGAN-shaped step's time, attributed to the parts of the step
(``train_step.py --profile``), and what the profile showed must stay so: the perceptual VGG
computes no weight gradients."""

from __future__ import annotations

import torch

from repo_scripts import load_script
from srkit.config import validate_config
from srkit.train.trainer import Trainer
from vgg_weights import write_random_vgg


def _esrgan_trainer(make_config, tmp_path) -> Trainer:
    """A tiny step of vs_basicsr.py's shape: RRDB, VGG-style D with BatchNorm, pixel +
    perceptual (VGG16, random weights) + RaGAN, Adam, EMA."""
    torch.manual_seed(0)
    weights = write_random_vgg(tmp_path / "vgg16.pth")
    raw = make_config()
    raw["data"]["train"]["patch_size"] = 64
    raw["networks"]["discriminator"] = {"type": "vgg", "nf": 4, "norm": "batch"}
    raw["losses"] = [
        {"type": "pixel", "weight": 1e-2, "criterion": "l1"},
        {"type": "perceptual", "weight": 1.0, "network": "vgg16", "layers": {"conv2_2": 1.0},
         "weights": str(weights)},
        {"type": "gan", "weight": 5e-3, "gan_type": "ragan"},
    ]  # fmt: skip
    raw["train"]["ema"] = {"decay": 0.9}
    return Trainer(validate_config(raw), quiet=True)


def test_the_profile_names_every_part_of_the_step_and_leaves_the_trainer_as_it_was(
    make_config, tmp_path
):
    profile = load_script("benchmarks/step_profile.py", "step_profile")
    trainer = _esrgan_trainer(make_config, tmp_path)
    batches = trainer.data_loader()
    trainer.train_step(next(batches), 0)
    rows, top = profile.profile_trainer_steps(trainer, lambda: next(batches), 1, 1)
    parts = {row["part"]: row for row in rows}
    expected = {
        "generator forward [G pass]",
        "generator backward [G pass]",
        "vgg16 (perceptual) forward [G pass]",
        "vgg16 (perceptual) backward [G pass]",
        "discriminator forward [G pass]",
        "discriminator backward [G pass]",
        "discriminator forward [D pass]",
        "discriminator backward [D pass]",
        "Adam step (generator)",
        "Adam step (discriminator)",
        "EMA update",
        "grad norms",
    }
    assert expected <= set(parts), sorted(parts)
    for name in expected - {"EMA update", "grad norms"}:
        assert parts[name]["ms"] > 0, name
    # Convolution time lands in the networks' parts, not in the glue.
    assert parts["generator backward [G pass]"]["conv"] > 0
    # Python between a forward's ops counts for that forward, not for nothing.
    assert parts["generator forward [G pass]"]["between ops"] > 0
    assert all(row["conv"] == 0 for row in rows if row["part"].startswith("losses / glue"))
    total = rows[-1]
    assert total["part"] == "total"
    assert abs(total["ms"] - sum(row["ms"] for row in rows[:-1])) < 1e-6
    assert "aten::" in top
    # Hooks and wrapped methods are gone: the trainer's step is its own again.
    step = trainer.optimise
    assert not {"_generator_pass", "_discriminator_pass", "_gradient_norm"} & set(vars(step))
    assert all(not network._forward_hooks for network in trainer.networks.values())
    assert trainer.ema is not None and "update" not in vars(trainer.ema)
    trainer.train_step(next(batches), 2)


def test_the_perceptual_vgg_computes_no_weight_gradients_in_a_step(make_config, tmp_path):
    """The profile shows the VGG's backward at about one forward's cost (input gradients only);
    a VGG whose weights required gradients would cost a second one, every step."""
    profile = load_script("benchmarks/step_profile.py", "step_profile")
    trainer = _esrgan_trainer(make_config, tmp_path)
    extractors = profile._feature_networks(trainer)
    assert list(extractors) == ["vgg16 (perceptual)"]
    (vgg,) = extractors.values()
    trainer.train_step(next(trainer.data_loader()), 0)
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
