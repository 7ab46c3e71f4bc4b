"""GAN stability tools as configuration: spectral norm, R1/R2 penalties, label smoothing, TTUR."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from srkit.config import validate_config
from srkit.nets.registry import build_network
from srkit.nets.spectral import (
    WRAPPED_LAYERS,
    apply_spectral_norm,
    fold_spectral_norm,
    has_spectral_norm,
    spectral_layers,
)
from srkit.train.trainer import Trainer
from srkit.weights import load_network
from test_gan_training import TINY_DISCRIMINATORS, gan_config, logged

# --------------------------------------------------------------------------- spectral norm


def tiny_discriminator(kind: str) -> torch.nn.Module:
    arguments = {k: v for k, v in TINY_DISCRIMINATORS[kind].items() if k != "type"}
    return build_network(TINY_DISCRIMINATORS[kind]["type"], **arguments)


@pytest.mark.parametrize("kind", sorted(TINY_DISCRIMINATORS))
def test_spectral_norm_makes_every_layer_1_lipschitz(kind):
    torch.manual_seed(0)
    discriminator = tiny_discriminator(kind)
    layers = [m for m in discriminator.modules() if isinstance(m, WRAPPED_LAYERS)]
    before = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in layers]
    apply_spectral_norm(discriminator)
    assert spectral_layers(discriminator) == {
        name for name, m in discriminator.named_modules() if isinstance(m, WRAPPED_LAYERS)
    }
    discriminator.train()
    with torch.no_grad():
        for _ in range(5):  # one power iteration per forward pass
            discriminator(torch.rand(2, 3, 64, 64))
    for layer, sigma_before in zip(layers, before, strict=True):
        sigma = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2).item()
        assert abs(sigma - 1) <= 0.05, (layer, sigma_before, sigma)
    # Not trivially so: the unnormalised layers were not 1-Lipschitz to begin with.
    assert any(abs(s - 1) > 0.05 for s in before)


def test_folded_weights_compute_what_the_wrapped_network_computes():
    torch.manual_seed(1)
    wrapped = tiny_discriminator("pixdisc")
    apply_spectral_norm(wrapped)
    with torch.no_grad():
        wrapped(torch.rand(2, 3, 64, 64))  # move u, v away from their start
    state = wrapped.state_dict()
    assert has_spectral_norm(state)
    plain = tiny_discriminator("pixdisc")
    plain.load_state_dict(fold_spectral_norm(state))  # strict: the plain keys exactly
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(image), wrapped.eval()(image), atol=1e-5)


def test_spectral_norm_trains_resumes_and_loads(make_config):
    # unet normalises its inner layers itself (norm: spectral); the key adds the outer ones.
    raw = gan_config(make_config, "unet", "gan", iterations=4)
    raw["networks"]["discriminator"]["spectral_norm"] = True
    raw["logging"]["checkpoint_every"] = 2
    Trainer(validate_config({**raw, "name": "straight"}), quiet=True).run()
    first = {**raw, "name": "resumed", "train": {**raw["train"], "iterations": 2}}
    Trainer(validate_config(first), quiet=True).run()
    Trainer(validate_config({**raw, "name": "resumed"}), resume="auto", quiet=True).run()
    runs = Path(raw["output_dir"])
    straight = runs / "straight/checkpoints/step_00000004"
    a = load_file(straight / "discriminator.safetensors")
    b = load_file(runs / "resumed/checkpoints/step_00000004/discriminator.safetensors")
    # The power iteration's vectors are part of the checkpoint, of every layer.
    assert "conv0.parametrizations.weight.0._u" in a and "conv9.weight" not in a
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [{k: v for k, v in r.items() if k[:2] in ("g/", "d/")} for r in logged(runs / "resumed")]
    assert rows == [
        {k: v for k, v in r.items() if k[:2] in ("g/", "d/")} for r in logged(runs / "straight")
    ]
    # The saved discriminator rebuilds from its checkpoint without a config (as a plain
    # network with the effective weights), and judges as the wrapped one does in eval mode.
    loaded = load_network(straight, network="discriminator")
    wrapped = tiny_discriminator("unet")
    apply_spectral_norm(wrapped)
    wrapped.load_state_dict(a)
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(image), wrapped.eval()(image), atol=1e-5)


def test_spectral_norm_is_a_discriminator_key_only(make_config):
    from srkit.errors import ConfigError

    raw = make_config()
    raw["networks"]["generator"]["spectral_norm"] = True
    with pytest.raises(ConfigError, match=r"networks\.generator\.spectral_norm: unknown key"):
        validate_config(raw)
