"""`srkit prepare`: sub-images, LR, the held-out split, the manifest, re-runs and interruptions;
and the prepared folders as paired training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_photo_like
from srkit.cli import main
from srkit.config import validate_config
from srkit.data.imresize import imresize
from srkit.data.io import read_rgb
from srkit.data.prepare import (
    PrepareOptions,
    is_held_out,
    prepare_dataset,
    subimage_positions,
)
from srkit.errors import DataError

OPTIONS = PrepareOptions(
    scales=(2, 4), crop_size=24, step=16, jpeg_downscale=2, holdout_every=3, holdout_crop=16
)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Seven small photos: JPEGs (reduced x2 first) and PNGs (kept as they are)."""
    folder = tmp_path / "photos"
    for index in range(7):
        png = folder / f"p{index}.png"
        write_photo_like(png, (60 + 4 * index, 72), seed=index)
        if index % 2 == 0:  # p0, p2, p4, p6 become JPEGs twice the size
            image = Image.open(png).resize((144, 2 * (60 + 4 * index)), Image.BICUBIC)
            image.save(folder / f"p{index}.jpg", quality=95)
            png.unlink()
    return folder


def test_subimage_positions_cover_the_far_edge():
    assert subimage_positions(64, 24, 16, 0) == [0, 16, 32, 40]  # 40 + 24 = 64
    assert subimage_positions(56, 24, 16, 0) == [0, 16, 32]  # already flush
    assert subimage_positions(60, 24, 16, 10) == [0, 16, 32]  # 4 left over <= 10: dropped
    assert subimage_positions(20, 24, 16, 0) == []


def test_split_rule_is_every_kth_by_name():
    assert [i for i in range(15) if is_held_out(i, 7)] == [6, 13]
    assert not any(is_held_out(i, 0) for i in range(10))


def test_prepare_writes_paired_sets_and_manifest(photos, tmp_path):
    out = tmp_path / "ds"
    report = prepare_dataset(photos, out, OPTIONS)
    assert sorted(report.made) == sorted(p.name for p in photos.iterdir())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["scales"] == [2, 4]
    split = {name: record["split"] for name, record in manifest["sources"].items()}
    # sorted names p0.jpg, p1.png, p2.jpg, ...: the 3rd and 6th are held out
    assert [n for n, s in sorted(split.items()) if s == "heldout"] == ["p2.jpg", "p5.png"]

    # p0.jpg: 120x144 JPEG -> reduced x2 to 60x72 -> rows 0,16,32,36 x cols 0,16,32,48
    p0 = sorted((out / "train/hr").glob("p0_s*.png"))
    assert len(p0) == 16
    # p1.png (64x72, not reduced): rows 0,16,32,40 x cols 0,16,32,48
    assert len(list((out / "train/hr").glob("p1_s*.png"))) == 16
    first = read_rgb(p0[0])
    assert first.shape == (24, 24, 3)
    # The first sub-image of a PNG source is its top-left corner, pixel for pixel.
    np.testing.assert_array_equal(
        read_rgb(out / "train/hr/p1_s001.png"), read_rgb(photos / "p1.png")[:24, :24]
    )
    # LR = MATLAB bicubic of the stored HR, 8-bit, for every scale
    for scale in (2, 4):
        lr = read_rgb(out / f"train/lr_x{scale}" / p0[0].name)
        expected = np.round(np.clip(imresize(first, scale=1 / scale), 0, 1) * 255) / 255
        assert lr.shape == (24 // scale, 24 // scale, 3)
        np.testing.assert_allclose(lr, expected, atol=1 / 255 + 1e-6)
    # Held-out photos: one centre crop each, with their LR
    assert sorted(p.name for p in (out / "heldout/hr").iterdir()) == ["p2.png", "p5.png"]
    held = read_rgb(out / "heldout/hr/p5.png")
    source = read_rgb(photos / "p5.png")  # 80x72
    np.testing.assert_array_equal(held, source[32:48, 28:44])
    assert read_rgb(out / "heldout/lr_x4/p5.png").shape == (4, 4, 3)
    # Every output is in the manifest with its size and hash; nothing else was written.
    listed = {name for record in manifest["sources"].values() for name in record["files"]} | {
        "manifest.json"
    }
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == listed
    assert report.train_images == sum(1 for name in listed if name.startswith("train/hr/"))


def test_prepare_is_idempotent_and_redoes_damaged_work(photos, tmp_path):
    out = tmp_path / "ds"
    prepare_dataset(photos, out, OPTIONS)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = prepare_dataset(photos, out, OPTIONS)
    assert again.made == [] and len(again.skipped) == 7
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps

    # A missing output, a truncated output: only that photo is made again.
    (out / "train/lr_x4/p1_s003.png").unlink()
    truncated = out / "train/hr/p3_s002.png"
    truncated.write_bytes(truncated.read_bytes()[:50])
    report = prepare_dataset(photos, out, OPTIONS)
    assert sorted(report.made) == ["p1.png", "p3.png"]
    assert (out / "train/lr_x4/p1_s003.png").is_file()
    assert read_rgb(truncated).shape == (24, 24, 3)

    # Same size, other bytes: only --verify (hashes) notices.
    victim = out / "train/hr/p4_s001.png"
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert prepare_dataset(photos, out, OPTIONS).made == []
    assert prepare_dataset(photos, out, OPTIONS, verify=True).made == ["p4.jpg"]

    # A changed source photo is prepared again.
    write_photo_like(photos / "p5.png", (80, 72), seed=99)
    assert prepare_dataset(photos, out, OPTIONS).made == ["p5.png"]


def test_interrupted_prepare_resumes_to_the_same_result(photos, tmp_path):
    reference = tmp_path / "reference"
    prepare_dataset(photos, reference, OPTIONS)
    out = tmp_path / "ds"

    def stop_after_third(name: str) -> None:
        if name == "p2.jpg":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(photos, out, OPTIONS, on_photo_done=stop_after_third)
    # Work of the next photo started but did not finish: a partial file and a stray temp file.
    partial = out / "train/hr/p3_s001.png"
    partial.write_bytes(b"\x89PNG half")
    (out / "train/hr/.p3_s002.png.abc.tmp").write_bytes(b"junk")
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["sources"]) == ["p0.jpg", "p1.png", "p2.jpg"]

    report = prepare_dataset(photos, out, OPTIONS)
    assert report.skipped == ["p0.jpg", "p1.png", "p2.jpg"]
    assert report.made == ["p3.png", "p4.jpg", "p5.png", "p6.jpg"]
    # Same photos, same options: the same records (sizes, hashes) as an uninterrupted run.
    assert (
        json.loads((out / "manifest.json").read_text())["sources"]
        == json.loads((reference / "manifest.json").read_text())["sources"]
    )
    for record in json.loads((reference / "manifest.json").read_text())["sources"].values():
        for relative in record["files"]:
            assert (out / relative).read_bytes() == (reference / relative).read_bytes(), relative


def test_prepare_refuses_a_folder_made_with_other_options(photos, tmp_path):
    out = tmp_path / "ds"
    prepare_dataset(photos, out, OPTIONS)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(DataError, match=r"other options.*crop_size 24 there, 32 now"):
        prepare_dataset(
            photos,
            out,
            PrepareOptions(
                scales=(2, 4),
                crop_size=32,
                step=16,
                jpeg_downscale=2,
                holdout_every=3,
                holdout_crop=16,
            ),
        )
    assert (out / "manifest.json").read_bytes() == before


def test_prepare_command_and_training_on_the_result(photos, tmp_path, capsys, make_config):
    out = tmp_path / "ds"
    args = [
        "prepare",
        str(photos),
        "-o",
        str(out),
        "--scales",
        "2",
        "--crop-size",
        "32",
        "--step",
        "16",
        "--holdout-every",
        "7",
        "--holdout-crop",
        "32",
    ]
    assert main(args) == 0
    assert "7 photos prepared" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 photos prepared, 7 already done" in capsys.readouterr().out
    assert main([*args[:-1], "40"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "manifest.json" in err and "holdout_crop" in err

    raw = make_config()
    raw["data"]["train"].update(hr=str(out / "train/hr"), lr=str(out / "train/lr_x2"))
    raw["data"]["val"].update(hr=str(out / "heldout/hr"), lr=str(out / "heldout/lr_x2"))
    raw["train"]["iterations"] = 2
    from srkit.train.trainer import Trainer

    trainer = Trainer(validate_config(raw), quiet=True)
    assert trainer.train_dataset.lr_root == str(out / "train/lr_x2")
    assert len(trainer.train_dataset) == len(list((out / "train/hr").iterdir()))
    trainer.run()
    assert trainer.step == 2
