"""Mixed precision, the gradient scaler, EMA, channels_last and torch.compile in the trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from srkit.config import validate_config
from srkit.losses.base import BuildContext
from srkit.train import checkpoint as ckpt
from srkit.train.build import build_loss_terms, build_networks
from srkit.train.ema import ModelEMA
from srkit.train.trainer import Trainer


def fixed_batch(trainer: Trainer, size: int = 4) -> dict:
    items = [trainer.train_dataset[(index, 500 + index)] for index in range(size)]
    return {
        "lr": torch.stack([i["lr"] for i in items]),
        "hr": torch.stack([i["hr"] for i in items]),
    }


def gan_raw(make_config, **train) -> dict:
    raw = make_config()
    raw["data"]["train"]["patch_size"] = 64
    raw["networks"]["discriminator"] = {"type": "vgg", "nf": 4, "norm": "none"}
    raw["losses"] = [
        {"type": "pixel", "weight": 1.0},
        {"type": "gan", "weight": 0.1, "gan_type": "ragan", "discriminator": "discriminator"},
    ]
    raw["train"].update(train)
    return raw


def steps(raw: dict, count: int, name: str) -> tuple[Trainer, list[dict[str, float]]]:
    trainer = Trainer(validate_config({**raw, "name": name}), quiet=True)
    batch = fixed_batch(trainer)
    logs = [
        {k: float(v) for k, v in trainer.train_step(batch, step).items()} for step in range(count)
    ]
    return trainer, logs


# ----------------------------------------------------------------------------- precision


def test_bf16_loss_terms_stay_float32(make_config):
    """Under bf16 autocast the networks run in bf16, but every loss (pixel, GAN generator and
    discriminator side) is computed and returned in float32."""
    config = validate_config(gan_raw(make_config))
    device = torch.device("cpu")
    networks = build_networks(config, device)
    terms = build_loss_terms(config, BuildContext(scale=2, device=device, networks=networks))
    from srkit.losses.tensors import StepTensors

    lr, hr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sr = networks["generator"](lr)
        assert sr.dtype == torch.bfloat16  # the network itself does run in bf16
        tensors = StepTensors({"lr": lr, "hr": hr, "sr": sr.float()}, {})
        for term in terms:
            assert term.generator_loss(tensors).dtype == torch.float32, term.name
        gan = terms[1]
        loss, scalars = gan.discriminator_loss(
            tensors.detached(), networks["discriminator"], torch.Generator()
        )
        assert loss.dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in scalars.values())


def test_bf16_training_steps_are_finite_and_weights_stay_float32(make_config):
    trainer, logs = steps(gan_raw(make_config, precision="bf16"), 3, "bf16")
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in logs)
    for name in trainer.trained:
        assert all(p.dtype == torch.float32 for p in trainer.networks[name].parameters())
    # bf16 tracks fp32 closely on the first step (same weights, same batch).
    _, reference = steps(gan_raw(make_config), 1, "fp32")
    assert logs[0]["g/pixel"] == pytest.approx(reference[0]["g/pixel"], rel=2e-2)


def test_fp16_scaler_state_is_checkpointed_and_resumed(make_config, monkeypatch):
    """fp16 is a GPU option; the scaler logic is device-independent, so the test lets it run on
    the CPU (fp16 autocast + torch.amp.GradScaler('cpu')) and checks the scaler's state makes the
    round trip through a checkpoint."""
    monkeypatch.setattr(Trainer, "_check_precision", lambda self: None)
    raw = gan_raw(make_config, precision="fp16", iterations=3)
    raw["logging"]["checkpoint_every"] = 3
    trainer = Trainer(validate_config(raw), quiet=True)
    assert trainer.scaler is not None
    trainer.run()
    saved = trainer.scaler.state_dict()
    assert saved["_growth_tracker"] == 3  # three steps with finite gradients
    folder = Path(raw["output_dir"]) / raw["name"] / "checkpoints" / "step_00000003"
    assert ckpt.read_training_state(folder)["scaler"] == saved
    raw["train"]["iterations"] = 4
    resumed = Trainer(validate_config(raw), resume="auto", quiet=True)
    assert resumed.scaler.state_dict() == saved


def test_fp16_on_cpu_is_a_one_line_config_error(make_config):
    raw = make_config()
    raw["train"]["precision"] = "fp16"
    raw["train"]["device"] = "cpu"
    with pytest.raises(Exception, match="fp16 needs a CUDA GPU; use bf16 on CPU"):
        Trainer(validate_config(raw), quiet=True)


# ----------------------------------------------------------------------------- memory layout


def test_channels_last_trains_like_contiguous(make_config):
    _, contiguous = steps(gan_raw(make_config), 3, "nchw")
    trainer, last = steps(gan_raw(make_config, channels_last=True), 3, "nhwc")
    conv = next(m for m in trainer.generator.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(contiguous, last, strict=True):
        for key in ("g/pixel", "g/gan", "d/gan"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key


@pytest.mark.slow
def test_compiled_networks_train_like_eager(make_config):
    """torch.compile (inductor; on CPU it needs a C compiler) gives the eager losses."""
    raw = make_config()
    raw["train"]["deterministic"] = False
    _, eager = steps(raw, 3, "eager")
    raw["train"]["compile"] = True
    _, compiled = steps(raw, 3, "compiled")
    for a, b in zip(eager, compiled, strict=True):
        assert b["g/pixel"] == pytest.approx(a["g/pixel"], rel=1e-4)


# ----------------------------------------------------------------------------- EMA


def test_ema_decay_warms_up_and_averages():
    model = torch.nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.9, warmup_steps=10)
    assert ema.decay_at(0) == 0 and ema.decay_at(5) == pytest.approx(0.45)
    assert ema.decay_at(10) == ema.decay_at(1000) == pytest.approx(0.9)
    start = ema.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 20)  # decay 0.9: moves a tenth of the way
    torch.testing.assert_close(ema.module.weight, start + 0.1)
    assert not ema.module.weight.requires_grad


def read_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_ema_is_validated_saved_and_resumed(make_config):
    raw = make_config()
    raw["train"].update(iterations=4, ema={"decay": 0.5, "warmup_steps": 2})
    raw["logging"].update(val_every=4, checkpoint_every=2)
    trainer = Trainer(validate_config(raw), quiet=True)
    trainer.run()
    run = Path(raw["output_dir"]) / raw["name"]

    # Validated with both weights, and the EMA numbers are those of the EMA network.
    row = next(r for r in read_rows(run) if "val_ema/psnr_y" in r)
    assert "val/psnr_y" in row and row["val_ema/psnr_y"] != row["val/psnr_y"]
    ema_metrics, _ = trainer.evaluate(trainer.ema.module)
    raw_metrics, _ = trainer.evaluate(trainer.generator)
    assert row["val_ema/psnr_y"] == pytest.approx(ema_metrics["psnr_y"], abs=1e-9)
    assert row["val/psnr_y"] == pytest.approx(raw_metrics["psnr_y"], abs=1e-9)
    assert (run / "images" / "val_ema_00000004.png").is_file()

    # Saved: the checkpoint's EMA file holds the EMA weights, different from the raw ones.
    folder = run / "checkpoints" / "step_00000004"
    saved = load_file(folder / "generator_ema.safetensors")
    raw_saved = load_file(folder / "generator.safetensors")
    ema_state = trainer.ema.module.state_dict()
    assert all(torch.equal(saved[k], ema_state[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw_saved[k]) for k in saved)

    # Resumed: a resumed trainer's EMA network is the saved one (step 2 checkpoint -> steps
    # 3, 4 again give the same EMA as the uninterrupted run).
    resumed_run = Path(raw["output_dir"]) / "resumed"
    resumed_run.mkdir()
    (resumed_run / "checkpoints").mkdir()
    import shutil

    shutil.copytree(
        run / "checkpoints" / "step_00000002", resumed_run / "checkpoints" / "step_00000002"
    )
    resumed = Trainer(validate_config({**raw, "name": "resumed"}), resume="auto", quiet=True)
    at_two = load_file(run / "checkpoints" / "step_00000002" / "generator_ema.safetensors")
    assert all(torch.equal(resumed.ema.module.state_dict()[k], at_two[k]) for k in at_two)
    resumed.run()
    again = load_file(resumed_run / "checkpoints" / "step_00000004" / "generator_ema.safetensors")
    assert all(torch.equal(again[k], saved[k]) for k in saved)


def test_ema_only_validation_when_raw_is_off(make_config):
    raw = make_config()
    raw["train"].update(iterations=2, ema={"decay": 0.9, "validate_raw": False})
    raw["logging"]["val_every"] = 2
    Trainer(validate_config(raw), quiet=True).run()
    rows = read_rows(Path(raw["output_dir"]) / raw["name"])
    validation = [r for r in rows if any(k.startswith("val") for k in r)]
    assert validation and all("val/psnr_y" not in r for r in validation)
    assert "val_ema/psnr_y" in validation[0]


# ----------------------------------------------------------------------------- bf16 quality

# The quickstart (configs/quickstart.yml: RRDB nf 32 nb 2, batch 8, patch 96, 1500 steps) scaled
# down so that bf16 runs on CPUs without bf16 instructions, where bf16 convolutions take aten's
# slow path (~25x fp32; benchmarks/RESULTS.md): same photos, schedule shape, EMA and validation.
BF16_QUALITY_STEPS = 300


def quickstart_reduced(root: Path, precision: str) -> dict:
    return {
        "name": f"quickstart_{precision}",
        "scale": 4,
        "seed": 0,
        "output_dir": str(root / "runs"),
        "data": {
            "train": {"hr": str(root / "train"), "patch_size": 64, "batch_size": 4, "workers": 1},
            "val": {"hr": str(root / "val"), "sheet_images": 1},
        },
        "networks": {"generator": {"type": "rrdb", "nf": 16, "nb": 1, "gc": 8}},
        "losses": [{"type": "pixel", "weight": 1.0, "criterion": "l1"}],
        "train": {
            "iterations": BF16_QUALITY_STEPS,
            "precision": precision,
            "optim": {"generator": {"lr": 5e-4, "betas": [0.9, 0.99]}},
            "schedule": {
                "type": "cosine",
                "periods": [BF16_QUALITY_STEPS],
                "eta_min": 1e-5,
                "warmup": 20,
            },
            "ema": {"decay": 0.99, "warmup_steps": 50},
        },
        "logging": {
            "print_every": 50,
            "val_every": BF16_QUALITY_STEPS,
            "checkpoint_every": BF16_QUALITY_STEPS,
            "image_every": 10_000,
            "tensorboard": False,
            "progress_bar": False,
        },
    }


@pytest.mark.slow
def test_bf16_quickstart_reaches_fp32_psnr(tmp_path):
    """bf16 training reaches the validation PSNR of fp32 training at the same step count, within
    0.1 dB (reduced quickstart, see above; validation runs in each run's own precision)."""
    pytest.importorskip("skimage")
    from srkit.demo import write_demo_photos

    write_demo_photos(tmp_path)
    results = {}
    for precision in ("fp32", "bf16"):
        raw = quickstart_reduced(tmp_path, precision)
        Trainer(validate_config(raw), quiet=True).run()
        rows = read_rows(tmp_path / "runs" / raw["name"])
        results[precision] = next(r for r in rows if "val_ema/psnr_y" in r)
    print({p: {k: v for k, v in r.items() if "psnr" in k} for p, r in results.items()})
    for key in ("val_ema/psnr_y", "val/psnr_y"):
        assert abs(results["bf16"][key] - results["fp32"][key]) <= 0.1, key
