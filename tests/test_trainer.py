"""The one training loop: megabatch invariance, exact resume, logging, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from srkit.cli import main
from srkit.config import validate_config
from srkit.train.trainer import Trainer


def fixed_batch(trainer: Trainer, size: int) -> dict:
    items = [trainer.train_dataset[(index, 1000 + index)] for index in range(size)]
    return {
        "lr": torch.stack([i["lr"] for i in items]),
        "hr": torch.stack([i["hr"] for i in items]),
        "name": [i["name"] for i in items],
    }


def one_step(raw: dict, megabatch: int, name: str) -> tuple[dict, dict, dict]:
    raw = {**raw, "name": name}
    raw["train"] = {**raw["train"], "megabatch": megabatch}
    trainer = Trainer(validate_config(raw), quiet=True)
    batch = fixed_batch(trainer, 4)
    logs = trainer.train_step(batch, step=0)
    grads = {n: p.grad.clone() for n, p in trainer.generator.named_parameters()}
    params = {n: p.detach().clone() for n, p in trainer.generator.named_parameters()}
    return {k: float(v) for k, v in logs.items()}, grads, params


def test_megabatch_gives_same_losses_and_update(make_config):
    raw = make_config()
    raw["losses"] = [
        {"type": "pixel", "weight": 1.0, "criterion": "l1"},
        {"type": "pixel", "name": "mse", "weight": 0.5, "criterion": "l2"},
    ]
    logs1, grads1, params1 = one_step(raw, 1, "mb1")
    logs4, grads4, params4 = one_step(raw, 4, "mb4")
    assert set(logs1) == set(logs4)
    for key in ("g/pixel", "g/mse", "g/total"):
        assert logs4[key] == pytest.approx(logs1[key], rel=1e-5), key
    for name in grads1:
        torch.testing.assert_close(grads4[name], grads1[name], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(params4[name], params1[name], rtol=1e-4, atol=1e-7)


def read_losses(run: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        r["step"]: {k: v for k, v in r.items() if k.startswith("g/")}
        for r in rows
        if "g/total" in r
    }


def test_resume_continues_exactly(make_config, tmp_path):
    raw = make_config()
    raw["train"]["iterations"] = 6
    raw["train"]["ema"] = {"decay": 0.9}
    raw["train"]["schedule"] = {"type": "multistep", "milestones": [2, 4], "gamma": 0.5}
    raw["logging"]["checkpoint_every"] = 3
    raw["data"]["train"]["workers"] = 1

    Trainer(validate_config({**raw, "name": "straight"}), quiet=True).run()

    interrupted = validate_config(
        {**raw, "name": "resumed", "train": {**raw["train"], "iterations": 3}}
    )
    Trainer(interrupted, quiet=True).run()
    Trainer(validate_config({**raw, "name": "resumed"}), resume="auto", quiet=True).run()

    runs = Path(raw["output_dir"])
    straight, resumed = read_losses(runs / "straight"), read_losses(runs / "resumed")
    assert sorted(straight) == sorted(resumed) == [1, 2, 3, 4, 5, 6]
    assert straight == resumed  # bit-identical per-step losses
    for file in ("generator.safetensors", "generator_ema.safetensors"):
        a = load_file(runs / "straight/checkpoints/step_00000006" / file)
        b = load_file(runs / "resumed/checkpoints/step_00000006" / file)
        for key in a:
            assert torch.equal(a[key], b[key]), (file, key)


def test_fresh_start_refuses_to_overwrite_a_run(make_config):
    raw = make_config()
    raw["train"]["iterations"] = 1
    Trainer(validate_config(raw), quiet=True).run()
    with pytest.raises(Exception, match="already has checkpoints; continue it with --resume auto"):
        Trainer(validate_config(raw), quiet=True)


def test_run_folder_has_config_log_metrics_and_sheet(make_config):
    raw = make_config()
    raw["train"]["iterations"] = 2
    raw["logging"]["val_every"] = 2
    Trainer(validate_config(raw), quiet=True).run()
    run = Path(raw["output_dir"]) / raw["name"]
    saved = yaml.safe_load((run / "config.yml").read_text())
    assert saved["train"]["megabatch"] == 1  # defaults written out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in rows if "val/psnr_y" in r]
    assert validation and validation[0]["step"] == 2
    assert {"g/pixel", "lr/generator", "grad_norm/generator", "speed/images_per_s"} <= set(rows[0])
    assert (run / "images" / "val_00000002.png").is_file()
    assert "step 2" in (run / "train.log").read_text()


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_missing_data_folder_is_one_line_exit_2(make_config, tmp_path, capsys):
    raw = make_config()
    raw["data"]["train"]["hr"] = str(tmp_path / "nowhere")
    assert main(["train", str(write_config(tmp_path, raw))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and "does not exist" in err
    assert not (Path(raw["output_dir"]) / raw["name"]).exists()


def test_paired_size_mismatch_names_the_file(make_config, tmp_path, capsys):
    from conftest import write_photo_like

    raw = make_config()
    lr = tmp_path / "lr"
    for index in range(6):
        write_photo_like(lr / f"img{index}.png", (30, 32), seed=index)  # 64/2 = 32 expected
    raw["data"]["train"]["lr"] = str(lr)
    assert main(["train", str(write_config(tmp_path, raw))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "img0.png" in err


def test_unknown_network_name_exit_2(make_config, tmp_path, capsys):
    raw = make_config()
    raw["networks"]["generator"]["type"] = "esrgan_plus"
    assert main(["train", str(write_config(tmp_path, raw))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "networks.generator.type" in err and "rrdb" in err


def test_bad_files_are_skipped_and_named(make_config, image_folders):
    from conftest import write_photo_like

    train = image_folders["train"]
    (train / "empty.png").write_bytes(b"")
    write_photo_like(train / "cut.jpg", (64, 64), seed=9)
    (train / "cut.jpg").write_bytes((train / "cut.jpg").read_bytes()[:300])
    raw = make_config()
    raw["train"]["iterations"] = 2
    Trainer(validate_config(raw), quiet=True).run()
    log = (Path(raw["output_dir"]) / raw["name"] / "train.log").read_text()
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert any("empty.png" in line for line in warnings)
    assert any("cut.jpg" in line for line in warnings)
    assert "6 images (2 skipped)" in log
