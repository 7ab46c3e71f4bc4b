"""Switched SPSR and SPSR3 through the one trainer: the reference dataset, the SPSR terms with the
gradient discriminator, every switch's attention pictures, validation with a whole-image
reference, exact resume; and (slow) short real runs on photos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from srkit.config import load_config, validate_config
from srkit.train.trainer import Trainer
from switched_nets import TINY, TINY_REF

# A schedule that ends within a short run, and an attention history that fills in two steps.
SCHEDULE = {"temperature_final_step": 4, "attention_history": 2}

REPO = Path(__file__).resolve().parents[1]
TERMS = [
    {"type": "pixel", "weight": 1.0},
    {"type": "gradient_pixel", "weight": 1e-2},
    {"type": "branch_pixel", "weight": 0.5},
    {"type": "gan", "weight": 5e-3, "gan_type": "ragan"},
    {"type": "gradient_gan", "weight": 5e-3, "gan_type": "ragan"},
]
SWITCHES = ("feature_switch0", "feature_switch1", "grad_switch", "join_switch")


def switched_config(make_config, name: str, **train) -> dict:
    raw = make_config()
    generator = {"type": name, **TINY, **SCHEDULE, **(TINY_REF if name == "spsr3" else {})}
    raw["networks"] = {
        "generator": generator,
        "discriminator": {"type": "vgg", "nf": 4, "norm": "batch"},
        "grad_discriminator": {"type": "vgg", "nf": 4, "norm": "spectral"},
    }
    raw["losses"] = [dict(term) for term in TERMS]
    raw["train"].update(train)
    return raw


def logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["spsr_switched", "spsr3"])
def test_a_run_with_every_spsr_term_validates_and_draws_every_switch(make_config, name):
    raw = switched_config(make_config, name, iterations=2, megabatch=2)
    raw["logging"].update(val_every=2, image_every=2)
    raw["logging"]["pictures"] = {
        "gradients": {"tensors": ["grad(sr)", "grad_branch", "grad(hr)"], "scale": "shared"}
    }
    trainer = Trainer(validate_config(raw), quiet=True)
    item = trainer.train_dataset[(0, 1)]
    assert ("ref" in item) == (name == "spsr3")
    trainer.run()
    run = Path(raw["output_dir"]) / raw["name"]
    rows = logged(run)
    steps = [row for row in rows if "g/total" in row]
    assert [row["step"] for row in steps] == [1, 2]
    for row in steps:
        for key, value in row.items():
            if key.startswith(("g/", "d/")):
                assert math.isfinite(value), key
    validation = next(row for row in rows if "val/psnr_y" in row)
    assert math.isfinite(validation["val/psnr_y"]) and validation["step"] == 2
    images = {path.name for path in (run / "images").iterdir()}
    assert "gradients_00000002.png" in images
    for switch in SWITCHES:
        assert f"generator_{switch}_attention_00000002.png" in images, switch
    assert {f"stats/generator/{s}/specificity" for s in SWITCHES} <= set(steps[-1])


def test_spsr3_resume_with_the_reference_dataset_is_exact(make_config):
    raw = switched_config(make_config, "spsr3", iterations=3)
    raw["train"]["ema"] = {"decay": 0.9}
    raw["logging"]["checkpoint_every"] = 1
    raw["data"]["val"] = None
    Trainer(validate_config({**raw, "name": "straight"}), quiet=True).run()
    first = {**raw, "name": "resumed", "train": {**raw["train"], "iterations": 1}}
    Trainer(validate_config(first), quiet=True).run()
    Trainer(validate_config({**raw, "name": "resumed"}), resume="auto", quiet=True).run()
    runs = Path(raw["output_dir"])

    def losses(name: str) -> dict[int, dict]:
        return {
            row["step"]: {k: v for k, v in row.items() if k[:2] in ("g/", "d/")}
            for row in logged(runs / name)
            if "g/total" in row
        }

    straight = losses("straight")
    assert sorted(straight) == [1, 2, 3]
    assert losses("resumed") == straight  # bit-identical per-step losses
    for file in ("generator", "generator_ema", "discriminator", "grad_discriminator"):
        a = load_file(runs / f"straight/checkpoints/step_00000003/{file}.safetensors")
        b = load_file(runs / f"resumed/checkpoints/step_00000003/{file}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file
    # The attention normalisation's usage history is part of what resumed exactly.
    state = load_file(runs / "straight/checkpoints/step_00000003/generator.safetensors")
    assert "join_switch.usage_history" in state


def test_shipped_configs_validate_and_name_the_new_generators():
    for name, generator in (("spsr_switched_psnr_x4", "spsr_switched"), ("spsr3_x4", "spsr3")):
        config = load_config(REPO / "configs" / f"{name}.yml")
        assert config.name == name and config.networks["generator"].type == generator
    gan = load_config(REPO / "configs" / "spsr3_x4.yml")
    assert {term.type for term in gan.losses} >= {"gan", "gradient_gan", "branch_pixel"}
    assert "grad_discriminator" in gan.networks


# ------------------------------------------------------------------ real photos (slow)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spsr_switched", "spsr3"])
def test_short_real_run_lowers_held_out_l1(tmp_path, name):
    """300 steps of a small network (nf 16) on the quickstart's real photos (LR made on the
    fly, so SPSR3's references come from the whole HR images): held-out L1 at the end below
    step 0's, every logged loss finite."""
    pytest.importorskip("skimage")
    from srkit.demo import write_demo_photos

    train, val = write_demo_photos(tmp_path / "photos")
    generator = {
        "type": name,
        "nf": 16,
        "transforms": 4,
        "grad_transforms": 2,
        "trans_layers": 2,
        "mux_filters": 8,
        "temperature_final_step": 200,
        **({"ref_nf": 16, "ref_size": 32, "ref_reductions": 2} if name == "spsr3" else {}),
    }
    raw = {
        "name": name,
        "scale": 4,
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "train": {"hr": str(train), "patch_size": 64, "batch_size": 4, "workers": 1},
            "val": {"hr": str(val)},
        },
        "networks": {"generator": generator},
        "losses": [
            {"type": "pixel", "weight": 1.0, "criterion": "l1"},
            {"type": "branch_pixel", "weight": 0.5},
        ],
        "train": {
            "iterations": 300,
            "optim": {"generator": {"lr": 5e-4, "betas": [0.9, 0.99]}},
            "schedule": {"type": "cosine", "periods": [300], "eta_min": 1e-6, "warmup": 20},
        },
        "logging": {
            "print_every": 50,
            "val_every": 300,
            "validate_at_start": True,
            "checkpoint_every": 300,
            "image_every": 10_000,
            "tensorboard": False,
            "progress_bar": False,
        },
    }
    Trainer(validate_config(raw), quiet=True).run()
    rows = logged(tmp_path / "runs" / name)
    validations = [row for row in rows if "val/l1" in row]
    assert [row["step"] for row in validations] == [0, 300]
    print({row["step"]: round(row["val/l1"], 5) for row in validations})
    assert validations[-1]["val/l1"] < validations[0]["val/l1"]
    for row in rows:
        for key, value in row.items():
            if key.startswith(("g/", "d/", "val/")):
                assert math.isfinite(value), (row["step"], key)
