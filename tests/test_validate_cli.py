"""`srkit validate`: one table row per model, the bicubic floor, CSV; `logging.validate_at_start`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import write_photo_like
from srkit.cli import main
from srkit.data.imresize import imresize
from srkit.data.io import read_rgb
from srkit.metrics.psnr_ssim import psnr
from srkit.nets.registry import build_network
from srkit.weights import save_weights


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    hr = tmp_path / "hr"
    for index in range(2):
        write_photo_like(hr / f"im{index}.png", (32, 40), seed=index)
    return hr


def _table(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    header = lines[0].split()
    assert header[0] == "model"
    return {line.split()[0]: line.split()[1:] for line in lines[1:] if not line.startswith("(")}


def test_validate_several_models_with_bicubic_row_and_csv(hr_folder, tmp_path, capsys):
    models = []
    for index in range(2):
        model = build_network("rrdb", nf=8, nb=1, gc=4, scale=2)
        path = tmp_path / f"model{index}.safetensors"
        save_weights(path, model)
        models.append(str(path))
    table_csv = tmp_path / "table.csv"
    assert (
        main(["validate", *models, "--hr", str(hr_folder), "--bicubic", "--csv", str(table_csv)])
        == 0
    )
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["model", "psnr_y", "ssim_y", "l1"]
    rows = _table(out)
    assert list(rows) == ["bicubic", *models]

    # The bicubic row is MATLAB bicubic up of the MATLAB bicubic LR, scored like any model.
    expected = []
    for index in range(2):
        hr = read_rgb(hr_folder / f"im{index}.png")
        lr = np.round(np.clip(imresize(hr, scale=0.5), 0, 1) * 255) / 255
        sr = np.round(np.clip(imresize(lr, scale=2), 0, 1) * 255) / 255
        expected.append(psnr(sr, hr, crop_border=2, y_channel=True))
    assert float(rows["bicubic"][0]) == pytest.approx(np.mean(expected), abs=2e-4)
    # Untrained networks are far worse than bicubic.
    assert all(float(rows[m][0]) < float(rows["bicubic"][0]) - 3 for m in models)

    with open(table_csv, newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [(r["model"], r["image"]) for r in records] == [
        (name, image) for name in ["bicubic", *models] for image in ("im0.png", "im1.png", "mean")
    ]
    assert float(records[0]["psnr_y"]) == pytest.approx(expected[0], abs=1e-4)
    mean_row = records[2]
    assert float(mean_row["psnr_y"]) == pytest.approx(float(rows["bicubic"][0]), abs=1e-4)

    # Bicubic alone needs the scale.
    assert main(["validate", "--hr", str(hr_folder), "--bicubic"]) == 2
    assert "--scale" in capsys.readouterr().err
    assert (
        main(["validate", "--hr", str(hr_folder), "--bicubic", "--scale", "2", "--per-image"]) == 0
    )
    out = capsys.readouterr().out
    per_image, table = out.split("model ", 1)
    assert "bicubic:" in per_image and "im0.png" in per_image and "im1.png" in per_image
    assert list(_table("model " + table)) == ["bicubic"]


def test_validate_refuses_models_of_different_scales(hr_folder, tmp_path, capsys):
    for scale in (2, 4):
        save_weights(
            tmp_path / f"x{scale}.safetensors", build_network("rrdb", nf=8, nb=1, gc=4, scale=scale)
        )
    code = main(
        [
            "validate",
            str(tmp_path / "x2.safetensors"),
            str(tmp_path / "x4.safetensors"),
            "--hr",
            str(hr_folder),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different scales" in err


def test_validate_at_start_logs_step_zero_once(make_config, tmp_path):
    raw = make_config()
    raw["train"]["iterations"] = 2
    raw["logging"].update(validate_at_start=True, val_every=2, checkpoint_every=1)
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 0
    run = Path(raw["output_dir"]) / raw["name"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in rows if "val/psnr_y" in r]
    assert val_steps == [0, 2]
    # The step-0 numbers are those of the initial weights: a fresh untrained RRDB.
    first = next(r for r in rows if r["step"] == 0 and "val/l1" in r)
    last = next(r for r in rows if r["step"] == 2 and "val/l1" in r)
    assert first["val/l1"] != last["val/l1"]
    # Resuming (here: past the end, from step 1) does not validate step 0 again.
    raw["train"]["iterations"] = 3
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path), "--resume", "auto"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val/psnr_y" in r] == [0, 2, 3]
