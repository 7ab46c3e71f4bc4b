"""The quickstart end to end (slow: about three minutes of training on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from repo_scripts import load_script
from srkit.config import load_config, validate_config
from srkit.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def _load_report():
    return load_script("scripts/quickstart_report.py", "report")


def test_quickstart_report_runs_on_a_tiny_run(make_config, image_folders, tmp_path, capsys):
    """The report script (README command 1's last step) imports and runs; the slow test below
    checks the quality, this one that an API rename cannot break the script unnoticed."""
    Trainer(validate_config(make_config()), quiet=True).run()
    status = _load_report().main(
        image_folders["root"] / "runs" / "test", image_folders["val"], tmp_path / "out"
    )
    printed = capsys.readouterr().out
    assert status in (0, 1), printed  # 4 steps need not beat bicubic; 2 would be "no checkpoint"
    assert "PSNR-Y" in printed and "mean gain over bicubic" in printed
    rows = [line.split()[0] for line in printed.splitlines()]
    assert {"val0", "val1", "mean"} <= set(rows), printed  # every photo listed, and the mean
    for photo in ("val0", "val1"):
        for kind in ("lr", "bicubic", "sr", "hr"):
            assert (tmp_path / "out" / f"{photo}_{kind}.png").is_file()


@pytest.mark.slow
def test_quickstart_beats_bicubic_on_the_held_out_photo(tmp_path, capsys):
    pytest.importorskip("skimage", reason="the quickstart photos come from scikit-image")
    from srkit.demo import write_demo_photos

    train, val = write_demo_photos(tmp_path / "data")
    config = load_config(
        REPO / "configs" / "quickstart.yml",
        [f"data.train.hr={train}", f"data.val.hr={val}", f"output_dir={tmp_path / 'runs'}"],
    )
    Trainer(config, quiet=True).run()

    status = _load_report().main(tmp_path / "runs" / "quickstart", val, tmp_path / "out")
    printed = capsys.readouterr().out
    assert status == 0, printed  # exit status 0: mean PSNR-Y above bicubic's
    assert (tmp_path / "out" / "chelsea_sr.png").is_file()
