"""The quickstart end to end (slow: about three minutes of training on 2 CPU cores)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from srkit.config import load_config
from srkit.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("skimage", reason="the quickstart photos come from scikit-image")


@pytest.mark.slow
def test_quickstart_beats_bicubic_on_the_held_out_photo(tmp_path, capsys):
    from srkit.demo import write_demo_photos

    train, val = write_demo_photos(tmp_path / "data")
    config = load_config(
        REPO / "configs" / "quickstart.yml",
        [f"data.train.hr={train}", f"data.val.hr={val}", f"output_dir={tmp_path / 'runs'}"],
    )
    Trainer(config, quiet=True).run()

    spec = importlib.util.spec_from_file_location(
        "report", REPO / "scripts" / "quickstart_report.py"
    )
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    status = report.main(tmp_path / "runs" / "quickstart", val, tmp_path / "out")
    printed = capsys.readouterr().out
    assert status == 0, printed  # exit status 0 means SR beat bicubic in PSNR-Y
    assert (tmp_path / "out" / "chelsea_sr.png").is_file()
