"""GAN stability tools as configuration: spectral norm, R1/R2 penalties, label smoothing, TTUR."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from srkit.config import validate_config
from srkit.losses import gan
from srkit.losses.adversarial import GanTerm, GanTermConfig
from srkit.losses.artifacts import ArtifactLoss, ArtifactLossConfig, artifact_map
from srkit.losses.base import BuildContext
from srkit.losses.penalty import gradient_penalty
from srkit.losses.tensors import StepTensors, builtin_views
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
from test_gan_training import TINY_DISCRIMINATORS, gan_config, logged, one_gan_step

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


# --------------------------------------------------------------------------- R1 / R2


class ToyDiscriminator(torch.nn.Module):
    """Two convolutions and a linear head: smooth (softplus), so second derivatives are not 0."""

    def __init__(self, map_output: bool = False) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, 2, 1)
        self.conv2 = torch.nn.Conv2d(4, 2, 3, 2, 1)
        self.head = torch.nn.Linear(2 * 4 * 4, 1)
        self.map_output = map_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.nn.functional.softplus(
            self.conv2(torch.nn.functional.softplus(self.conv1(x)))
        )
        return features if self.map_output else self.head(features.flatten(1))


def reference_penalty(discriminator: torch.nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """E_x ||grad_x D(x)||^2, one sample at a time (map outputs summed per sample)."""
    squares = []
    for sample in samples:
        x = sample[None].clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
        squares.append((gradient**2).sum())
    return torch.stack(squares).mean()


@pytest.mark.parametrize("map_output", [False, True])
def test_gradient_penalty_equals_the_autograd_reference(map_output):
    torch.manual_seed(0)
    discriminator = ToyDiscriminator(map_output)
    samples = torch.rand(3, 3, 16, 16)
    value = gradient_penalty(discriminator, samples)
    expected = reference_penalty(discriminator, samples)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5) and value.item() > 0
    # ... and trains D the same way (the double backward through D's parameters).
    # (Biases after the last nonlinearity do not reach the input gradient: allow_unused.)
    parameters = list(discriminator.parameters())
    grads = torch.autograd.grad(value, parameters, allow_unused=True)
    expected_grads = torch.autograd.grad(expected, parameters, allow_unused=True)
    for got, want in zip(grads, expected_grads, strict=True):
        assert (got is None) == (want is None)
        assert got is None or torch.allclose(got, want, rtol=1e-4, atol=1e-7)
    assert sum(g.abs().sum() for g in grads if g is not None) > 0


def test_gradient_penalty_is_float32_under_autocast():
    torch.manual_seed(0)
    discriminator = ToyDiscriminator()
    samples = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = gradient_penalty(discriminator, samples.bfloat16())
    assert value.dtype == torch.float32
    expected = reference_penalty(discriminator, samples.bfloat16().float())
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def gan_term(**penalty) -> tuple[GanTerm, ToyDiscriminator]:
    discriminator = ToyDiscriminator()
    config = GanTermConfig(gan_type="gan", penalty=penalty, fake=["sr"])
    context = BuildContext(
        scale=2, device=torch.device("cpu"), networks={"discriminator": discriminator}
    )
    return GanTerm(config, context), discriminator


def test_lazy_penalties_apply_every_interval_scaled_by_it():
    torch.manual_seed(0)
    term, discriminator = gan_term(r1_gamma=10.0, r2_gamma=0.5, interval=4)
    hr, sr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    tensors = StepTensors({"hr": hr, "sr": sr}, builtin_views(2))
    r1 = reference_penalty(discriminator, hr).item()
    r2 = reference_penalty(discriminator, sr).item()
    for step in (0, 4, 8):
        total, logged = term.discriminator_penalty(tensors, step)
        assert total.item() == pytest.approx(4 * (10.0 / 2 * r1 + 0.5 / 2 * r2), rel=1e-5)
        assert logged["r1"].item() == pytest.approx(10.0 / 2 * r1, rel=1e-5)
        assert logged["r2"].item() == pytest.approx(0.5 / 2 * r2, rel=1e-5)
    for step in (1, 2, 3, 5):
        assert term.discriminator_penalty(tensors, step) == (None, {})
    off, _ = gan_term()
    assert off.discriminator_penalty(tensors, 0) == (None, {})


def test_penalty_is_megabatch_invariant(make_config):
    raw = gan_config(make_config, "vgg", "gan")
    raw["losses"][1]["penalty"] = {"r1_gamma": 1.0, "r2_gamma": 1.0}
    logs1, grads1 = one_gan_step(raw, 1)
    logs2, grads2 = one_gan_step(raw, 4)
    for key in ("d/gan", "d/gan/r1", "d/gan/r2"):
        assert logs2[key] == pytest.approx(logs1[key], rel=1e-5), key
    assert logs1["d/gan/r1"] > 0
    for key in grads1:
        scale = grads1[key].abs().max().item()
        assert (grads2[key] - grads1[key]).abs().max().item() <= 3e-4 * scale + 1e-7, key


def test_penalties_train_end_to_end_with_megabatch_and_bf16(make_config):
    raw = gan_config(make_config, "pixdisc", "pixgan", iterations=2, megabatch=2, precision="bf16")
    raw["losses"][1]["penalty"] = {"r1_gamma": 0.1, "r2_gamma": 0.1, "interval": 2}
    raw["logging"]["print_every"] = 1
    Trainer(validate_config(raw), quiet=True).run()
    first, second = logged(Path(raw["output_dir"]) / raw["name"])
    # Step 0 (logged as 1) carries the penalties, step 1 does not.
    assert math.isfinite(first["d/gan/r1"]) and first["d/gan/r1"] > 0
    assert math.isfinite(first["d/gan/r2"]) and first["d/gan/r2"] > 0
    assert "d/gan/r1" not in second and "d/gan/r2" not in second
    assert math.isfinite(second["d/gan"])


# --------------------------------------------------------------------------- label smoothing


def bce(logits: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Binary cross-entropy with logits written out: -(t log s + (1 - t) log(1 - s))."""
    s = torch.sigmoid(logits)
    return -(target * torch.log(s) + (1 - target) * torch.log(1 - s)).mean()


def test_label_smoothing_matches_the_formula():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 1), torch.randn(4, 1)
    smooth = 0.9
    expected = {
        "gan": (bce(real, smooth) + bce(fake, 0.0)) / 2,
        "lsgan": (((real - smooth) ** 2).mean() + (fake**2).mean()) / 2,
        "ragan": (bce(real - fake.mean(), smooth) + bce(fake - real.mean(), 0.0)) / 2,
    }
    for gan_type, want in expected.items():
        got = gan.discriminator_loss(gan_type, real, fake, real_target=smooth)
        assert got.item() == pytest.approx(want.item(), rel=1e-5), gan_type
        plain = gan.discriminator_loss(gan_type, real, fake)
        assert plain.item() != pytest.approx(got.item(), rel=1e-3), gan_type  # it changes
    with pytest.raises(ValueError, match="hinge"):
        gan.discriminator_loss("hinge", real, fake, real_target=smooth)


def test_label_smoothing_of_pixgan_maps_is_one_sided():
    torch.manual_seed(0)
    real, fake = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    real_map = torch.ones(2, 1, 4, 4)
    real_map[:, :, :2, :2] = 0  # a fake region swapped into the real image
    fake_map = 1 - real_map  # ... and the real region in the fake image
    got = gan.discriminator_loss("pixgan", real, [fake], real_map, fake_map, real_target=0.8)
    want = (bce(real, 0.8 * real_map) + bce(fake, 0.8 * fake_map)) / 2
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_real_label_reaches_the_discriminator_step(make_config):
    """Through the term: the logged D loss at step 0 differs exactly as the targets do."""
    raw = gan_config(make_config, "vgg", "lsgan")
    logs_plain, _ = one_gan_step(raw, 1)
    raw["losses"][1]["real_label"] = 0.5
    logs_smooth, _ = one_gan_step(raw, 1)
    # lsgan: [mean (r - t)^2 + mean f^2] / 2, identical logits at step 0, so the difference is
    # [mean (r - 0.5)^2 - mean (r - 1)^2] / 2 = [mean r - 0.75] / 2.
    r = logs_plain["d/gan/real_logit"]
    assert logs_smooth["d/gan"] - logs_plain["d/gan"] == pytest.approx((r - 0.75) / 2, abs=1e-5)


# --------------------------------------------------------------------------- TTUR


def test_generator_and_discriminator_step_with_their_own_learning_rates(make_config):
    """Two time-scale update rule through `train.optim`: Adam's first update of a parameter
    with a gradient far above eps is lr * g / |g|, so every element moves by its network's lr."""
    raw = gan_config(make_config, "vgg", "gan")
    raw["train"]["optim"] = {"generator": {"lr": 1e-4}, "discriminator": {"lr": 4e-4}}
    trainer = Trainer(validate_config(raw), quiet=True)
    items = [trainer.train_dataset[(index, index)] for index in range(4)]
    batch = {key: torch.stack([i[key] for i in items]) for key in ("lr", "hr")}
    before = {
        name: [p.detach().clone() for p in trainer.networks[name].parameters()]
        for name in ("generator", "discriminator")
    }
    trainer.train_step(batch, step=0)
    for name, lr in (("generator", 1e-4), ("discriminator", 4e-4)):
        moves = [
            (after.detach() - start)[after.grad.abs() > 1e-4].abs()
            for start, after in zip(before[name], trainer.networks[name].parameters(), strict=True)
            if after.grad is not None
        ]
        moves = torch.cat(moves)
        assert moves.numel() > 100
        assert torch.allclose(moves, torch.full_like(moves, lr), rtol=1e-3), name


# --------------------------------------------------------------------------- LDL


def reference_artifact_map(sr, hr, reference, window):
    """LDL's map written out with explicit windows (numpy, reflect padding, unbiased variance)."""
    residual = np.abs(hr - sr).sum(axis=1)  # (N, H, W)
    reference_residual = np.abs(hr - reference).sum(axis=1)
    pad = window // 2
    out = np.zeros_like(residual)
    for n in range(residual.shape[0]):
        padded = np.pad(residual[n], pad, mode="reflect")
        patch = residual[n].var(ddof=1) ** 0.2
        for i in range(residual.shape[1]):
            for j in range(residual.shape[2]):
                out[n, i, j] = patch * padded[i : i + window, j : j + window].var(ddof=1)
    out[residual < reference_residual] = 0
    return out[:, None]


def test_artifact_map_matches_the_written_out_formula():
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 12, 10, dtype=torch.float64)
    sr = hr + 0.1 * torch.randn_like(hr)
    reference = hr + 0.1 * torch.randn_like(hr)
    got = artifact_map(sr, hr, reference, window=5)
    want = reference_artifact_map(sr.numpy(), hr.numpy(), reference.numpy(), 5)
    assert got.shape == (2, 1, 12, 10)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4, atol=1e-9)
    # Both cases occur: pixels where the EMA model is better (masked) and where it is not.
    assert 0 < (want == 0).mean() < 1


def test_ldl_loss_is_weighted_l1_without_gradient_through_the_map():
    torch.manual_seed(0)
    term = ArtifactLoss(ArtifactLossConfig(window=3))
    hr = torch.rand(1, 3, 8, 8)
    reference = hr + 0.05 * torch.randn_like(hr)
    sr = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
    tensors = StepTensors({"sr": sr, "hr": hr, "ref": reference}, {"ema": lambda x: x})
    term.reference = "ref"
    loss = term.generator_loss(tensors)
    weight = artifact_map(sr, hr, reference, 3)
    assert loss.item() == pytest.approx((weight * (sr - hr)).abs().mean().item(), rel=1e-6)
    (gradient,) = torch.autograd.grad(loss, sr)
    expected = weight * torch.sign(sr - hr).detach() / sr.numel()
    assert torch.allclose(gradient, expected, atol=1e-9)
    same = StepTensors({"sr": hr, "hr": hr, "ref": reference}, {})
    assert term.generator_loss(same).item() == 0


def test_ldl_trains_with_the_ema_view_and_needs_train_ema(make_config):
    from srkit.errors import ConfigError

    raw = gan_config(make_config, "vgg", "ragan", iterations=2)
    raw["losses"].append({"type": "ldl", "weight": 1.0})
    with pytest.raises(
        ConfigError, match=r"losses\.2\.reference: 'ema\(lr\)' reads .* needs train\.ema"
    ):
        validate_config(raw)
    raw["train"]["ema"] = {"decay": 0.9}
    raw["logging"]["print_every"] = 1
    Trainer(validate_config(raw), quiet=True).run()
    rows = logged(Path(raw["output_dir"]) / raw["name"])
    assert rows[0]["g/ldl"] > 0 and math.isfinite(rows[1]["g/ldl"])
