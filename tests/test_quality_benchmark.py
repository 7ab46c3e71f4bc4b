"""benchmarks/quality.py: its runs are valid configs chained correctly, and its evaluation,
step-0/end L1 read-out and image sheet work on tiny runs (so a rename cannot break it unseen)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from repo_scripts import load_script
from srkit.config import load_config, validate_config
from srkit.data.io import read_rgb
from srkit.train.trainer import Trainer


def _load_quality():
    return load_script("benchmarks/quality.py", "quality")


def _args(work: Path) -> argparse.Namespace:
    return argparse.Namespace(
        work=work,
        psnr_steps=30,
        start_steps=[20, 10],
        gan_steps=8,
        spsr_gan_steps=6,
        vgg16=Path("/vgg16.pth"),
        basicsr_python=Path("/bin/python3"),
        basicsr_steps=None,
    )


def test_every_run_is_a_shipped_config_with_its_start_and_budget(tmp_path):
    quality = _load_quality()
    args = _args(tmp_path)
    runs = {run.name: run for run in quality.plan(args)}
    assert list(runs) == [
        "rrdb_psnr_x4",
        "rrdb_psnr_x4_basicsr",
        "srg2_psnr_x4",
        "spsr_psnr_x4",
        "esrgan_x4",
        "switched_d_x4",
        "srg2_pixgan_x4",
        "spsr_x4",
    ]
    starts = {
        "spsr_psnr_x4": ("rrdb_psnr_x4", 30),
        "esrgan_x4": ("rrdb_psnr_x4", 30),
        "switched_d_x4": ("rrdb_psnr_x4", 30),
        "srg2_pixgan_x4": ("srg2_psnr_x4", 20),
        "spsr_x4": ("spsr_psnr_x4", 10),
    }
    for name, run in runs.items():
        command = quality.command(run, args)
        if run.basicsr:
            # BasicSR runs the whole recipe, with the same (scaled) periods as srkit.
            assert command[command.index("--iterations") + 1] == "30"
            assert command[command.index("--periods") + 1 :] == ["4", "4", "11", "11"]
            continue
        sets = [command[i + 1] for i, item in enumerate(command) if item == "--set"]
        config = load_config(Path(command[4]), sets)
        assert config.name == name and config.train.iterations == run.steps
        assert config.output_dir == tmp_path / "runs"
        assert config.data.train.lr == tmp_path / "dataset/train/lr_x4"
        # Validation while training looks at the tuning crops, never at the report ones.
        assert config.data.val.hr == tmp_path / "dataset/heldout_tuning/hr"
        assert config.data.val.lr == tmp_path / "dataset/heldout_tuning/lr_x4"
        if name == "rrdb_psnr_x4":
            # The shipped recipe's 1500 / 1500 / 4500 / 4500 cycles scaled to 30 steps.
            assert config.train.schedule.periods == [4, 4, 11, 11]
            assert config.train.schedule.restart_weights == [1.0, 0.3, 0.3, 0.3]
        init = config.networks["generator"].init
        if name in starts:
            start, steps = starts[name]
            assert run.needs == [start]
            assert (
                init
                == runs[start].final(tmp_path)
                == tmp_path / f"runs/{start}/checkpoints/step_{steps:08d}"
            )
        else:
            assert init is None and run.needs == []
        for term in config.losses:
            if term.type == "perceptual":
                assert term.weights == args.vgg16


def _prepared_heldout(tmp_path: Path) -> Path:
    """A work folder whose held-out set is laid out as `srkit prepare` writes it (x4, 48 px)."""
    from conftest import write_photo_like
    from srkit.cli import main

    work, photos = tmp_path / "work", tmp_path / "photos"
    for index in range(4):
        write_photo_like(photos / f"p{index}.png", (64, 64), seed=index)
    command = ["prepare", str(photos), "-o", str(work / "dataset"), "--crop-size", "32"]
    command += ["--step", "32", "--holdout-every", "2", "--holdout-crop", "48"]
    assert main(command) == 0
    return work


def _tiny_run(make_config, work: Path, name: str, **changes) -> None:
    raw = make_config(name=name, scale=4, **changes)
    raw["output_dir"] = str(work / "runs")
    raw["data"]["val"] = {
        "hr": str(work / "dataset/heldout/hr"),
        "lr": str(work / "dataset/heldout/lr_x4"),
    }
    raw["logging"]["validate_at_start"] = True
    Trainer(validate_config(raw), quiet=True).run()


def test_evaluation_l1_readout_and_sheet_on_tiny_runs(make_config, tmp_path, capsys, monkeypatch):
    quality = _load_quality()
    work = _prepared_heldout(tmp_path)
    runs = []
    for name in ("tiny_a", "tiny_b"):
        _tiny_run(make_config, work, name)
        runs.append(quality.Run(name, 4))
    args = argparse.Namespace(
        work=work, lpips_lin=None, vgg16=None, sheet=tmp_path / "sheet.png", split="report"
    )
    monkeypatch.setattr("srkit.metrics.lpips.load_lpips", lambda *a, **k: None)
    results = quality.evaluate(runs, args)
    out = capsys.readouterr().out
    assert "split: report (1 held-out crops: p1)" in out
    assert (work / "quality_report.csv").is_file()
    assert [name for name, _ in results] == ["bicubic", "tiny_a", "tiny_b"]
    metrics = json.loads(
        next(
            line
            for line in (work / "runs/tiny_a/metrics.jsonl").read_text().splitlines()
            if '"step": 0' in line and "val" in line
        )
    )
    first, last, step = quality.start_and_end_l1(work, "tiny_a")
    assert first == metrics["val/l1"] and step == 4 and last != first
    assert f"step 0: {first:.4f}" in out
    sheet = read_rgb(tmp_path / "sheet.png")
    # 2 held-out images (every 2nd of 4), 1 of them in the report split -> 1 row; 4 columns
    # (bicubic, 2 runs, HR) of 128 px... the crops are only 48 px here, so each tile is 48 px.
    assert sheet.shape == (48, 4 * 48 + 3 * 4, 3)
    hr = read_rgb(work / "dataset/heldout/hr/p1.png")
    np.testing.assert_allclose(sheet[:48, -48:], hr, atol=1 / 255)


def test_srkit_and_basicsr_are_compared_at_each_cycle_end(make_config, tmp_path, monkeypatch):
    """With BasicSR in the plan, both runs' checkpoints at the end of every cosine cycle of the
    PSNR recipe are evaluated side by side (the scaled 1500/1500/4500/4500 cycles of 16 steps end
    at 2, 4, 10 and 16), each row loading its own run's weights."""
    import torch
    from safetensors.torch import load_file

    quality = _load_quality()
    work = _prepared_heldout(tmp_path)
    _tiny_run(
        make_config,
        work,
        "rrdb_psnr_x4",
        train__iterations=16,
        train__ema={"decay": 0.9},
        logging__checkpoint_every=2,
        logging__keep_checkpoints=10,
    )
    # BasicSR's files as it writes them (`params` / `params_ema`), here a copy of srkit's
    # weights at the same step with the last conv's bias moved, so every row is distinct.
    models = work / "basicsr/experiments/rrdb_psnr_x4_basicsr/models"
    models.mkdir(parents=True)
    for step in range(2, 17, 2):
        checkpoint = work / f"runs/rrdb_psnr_x4/checkpoints/step_{step:08d}"
        weights = load_file(checkpoint / "generator_ema.safetensors")
        weights["conv_last.bias"] = weights["conv_last.bias"] + 0.01 * step
        torch.save({"params": weights, "params_ema": weights}, models / f"net_g_{step}.pth")
    runs = [quality.Run("rrdb_psnr_x4", 16), quality.Run("rrdb_psnr_x4_basicsr", 16, basicsr=True)]
    args = argparse.Namespace(
        work=work,
        psnr_steps=16,
        lpips_lin=None,
        vgg16=None,
        sheet=None,
        basicsr_steps=None,
        split="tuning",
    )
    monkeypatch.setattr("srkit.metrics.lpips.load_lpips", lambda *a, **k: None)
    results = dict(quality.evaluate(runs, args))
    assert list(results) == [
        "bicubic",
        "rrdb_psnr_x4",
        "rrdb_psnr_x4@2",
        "rrdb_psnr_x4_basicsr@2",
        "rrdb_psnr_x4@4",
        "rrdb_psnr_x4_basicsr@4",
        "rrdb_psnr_x4@10",
        "rrdb_psnr_x4_basicsr@10",
        "rrdb_psnr_x4_basicsr",
    ]
    # Each row is its own checkpoint: no two srkit/BasicSR rows score the same.
    scores = [results[name].metrics["psnr_y"] for name in list(results)[1:]]
    assert len(set(scores)) == len(scores)


def test_heldout_crops_split_into_disjoint_tuning_and_report_sets(tmp_path):
    """Sorted by name, the held-out crops alternate report, tuning, report, ..."""
    quality = _load_quality()
    assert [quality.split_of(i) for i in range(7)] == ["report", "tuning"] * 3 + ["report"]
    work = tmp_path / "work"
    names = [f"photo{i}.png" for i in (3, 0, 6, 1, 5, 2, 4)]
    for folder in ("hr", "lr_x4"):
        (work / "dataset/heldout" / folder).mkdir(parents=True)
        for name in names:
            (work / "dataset/heldout" / folder / name).write_text(folder + name)
    chosen = {}
    for split in quality.SPLITS:
        folder = quality.heldout_split(work, split)
        chosen[split] = sorted(p.name for p in (folder / "hr").iterdir())
        assert chosen[split] == sorted(p.name for p in (folder / "lr_x4").iterdir())
        assert (folder / "lr_x4" / chosen[split][0]).read_text() == "lr_x4" + chosen[split][0]
    assert chosen["report"] == [f"photo{i}.png" for i in (0, 2, 4, 6)]
    assert chosen["tuning"] == [f"photo{i}.png" for i in (1, 3, 5)]
