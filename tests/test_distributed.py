"""Multi-process training (DDP over gloo on the CPU) against one process with the same global batch.

Two runs of 20 steps with a fixed data order train an RRDB generator and a VGG-style
discriminator (no normalisation, BCE GAN, decaying D noise): two processes started by
``srkit train --nproc 2`` (torchrun's launcher, ``python -m srkit`` in each process), each taking
2 images of the global batch of 4, and one process with the same global batch split into
``megabatch: 2`` chunks of 2. The per-chunk random draws (the D noise here) are a function of the
chunk's global index, so the two runs see the same images *and* the same noise; every logged
loss must match, and a run must resume from a checkpoint written with the other process count.

Tolerance: relative 1e-5 (absolute 1e-6 for the near-zero logit means). Both runs compute the
same per-image gradients, but sum them in a different order: one convolution backward over 4
images versus two over 2 images plus DDP's all-reduce (and a mean of two per-process losses in
the log). Those float32 rounding differences (eps 1.2e-7) pass through 20 Adam steps; measured,
they stay at about 1e-7 relative. A real mismatch (a wrong batch slice, gradients summed instead
of averaged, megabatch applied twice, different noise) moves the losses by 1e-3 or more.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import srkit
from conftest import BASE_CONFIG, write_photo_like
from srkit.cli import main
from srkit.config import validate_config
from srkit.errors import ConfigError
from srkit.train.distributed import check_batch_layout
from srkit.train.trainer import Trainer

STEPS = 20
RELATIVE, ABSOLUTE = 1e-5, 1e-6


def single_process(raw: dict, name: str) -> dict:
    """The one-process twin of the two-process config: 2 chunks of 2 instead of 2 processes."""
    return {**raw, "name": name, "train": {**raw["train"], "megabatch": 2}}


def ddp_config(root: Path) -> dict:
    raw = copy.deepcopy(BASE_CONFIG)
    raw["output_dir"] = str(root / "runs")
    raw["data"]["train"].update(hr=str(root / "train"), patch_size=64, batch_size=4)
    raw["data"]["val"]["hr"] = str(root / "val")
    raw["networks"]["discriminator"] = {"type": "vgg", "nf": 4, "norm": "none"}
    raw["losses"] = [
        {"type": "pixel", "weight": 1.0},
        {"type": "gan", "weight": 0.1, "gan_type": "gan", "discriminator": "discriminator"},
    ]
    raw["train"].update(
        iterations=STEPS,
        d_noise={"start": 0.05, "until": STEPS},
        ema={"decay": 0.9},
        optim={"generator": {"lr": 2e-4}, "discriminator": {"lr": 2e-4}},
    )
    raw["logging"].update(val_every=10, checkpoint_every=10, keep_checkpoints=5)
    return raw


def launch(config: Path, name: str, *extra: str) -> None:
    """``srkit train CONFIG --nproc 2``; the started processes import srkit from wherever this
    process does (the test may run from a source tree that is not installed)."""
    package_parent = str(Path(srkit.__file__).resolve().parent.parent)
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, old_path) if p)
    try:
        arguments = ["train", str(config), "--nproc", "2", "--quiet", "--set", f"name={name}"]
        assert main([*arguments, *extra]) == 0
    finally:
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


def losses(run: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if "g/total" in row]
    assert len(steps) == len(set(steps)), "a step was logged twice (more than one writer?)"
    return {
        row["step"]: {k: v for k, v in row.items() if k.startswith(("g/", "d/"))}
        for row in rows
        if "g/total" in row
    }


def assert_same_losses(expected: dict, actual: dict, steps: list[int]) -> None:
    assert sorted(actual) == steps
    for step in steps:
        assert set(actual[step]) == set(expected[step])
        for key, value in expected[step].items():
            assert actual[step][key] == pytest.approx(value, rel=RELATIVE, abs=ABSOLUTE), (
                step,
                key,
            )


def copy_checkpoint(source_run: Path, target_run: Path, step: int) -> None:
    folder = f"step_{step:08d}"
    shutil.copytree(source_run / "checkpoints" / folder, target_run / "checkpoints" / folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One 20-step run in this process and one in two processes, same config."""
    root = tmp_path_factory.mktemp("ddp")
    for index in range(6):
        write_photo_like(root / "train" / f"img{index}.png", (64, 64), seed=index)
    for index in range(2):
        write_photo_like(root / "val" / f"val{index}.png", (48, 40), seed=100 + index)
    raw = ddp_config(root)
    config = root / "ddp.yml"
    config.write_text(yaml.safe_dump(raw))
    Trainer(validate_config(single_process(raw, "single")), quiet=True).run()
    launch(config, "double")
    return {"root": root, "config": config, "raw": raw, "runs": root / "runs"}


def test_two_processes_match_one_with_the_same_global_batch(runs):
    single, double = runs["runs"] / "single", runs["runs"] / "double"
    assert_same_losses(losses(single), losses(double), list(range(1, STEPS + 1)))
    # Only rank 0 wrote: one log with the process count, checkpoints, validation rows.
    log = (double / "train.log").read_text()
    assert "2 process(es)" in log and log.count("validation at step 20") == 1
    assert (double / "checkpoints" / "step_00000020" / "generator_ema.safetensors").is_file()
    rows = [json.loads(line) for line in (double / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_ema/psnr_y" in r] == [10, 20]


@pytest.mark.slow  # a third launch of two processes; the other direction runs by default
def test_resume_two_processes_from_a_one_process_checkpoint(runs):
    grown = runs["runs"] / "grown"
    copy_checkpoint(runs["runs"] / "single", grown, 10)
    launch(runs["config"], "grown", "--resume", "auto")
    expected = losses(runs["runs"] / "single")
    assert_same_losses(expected, losses(grown), list(range(11, STEPS + 1)))
    assert "resuming a 1-process run with 2 process(es)" in (grown / "train.log").read_text()


def test_resume_one_process_from_a_two_process_checkpoint(runs):
    shrunk = runs["runs"] / "shrunk"
    copy_checkpoint(runs["runs"] / "double", shrunk, 10)
    raw = single_process(runs["raw"], "shrunk")
    Trainer(validate_config(raw), resume="auto", quiet=True).run()
    expected = losses(runs["runs"] / "single")
    assert_same_losses(expected, losses(shrunk), list(range(11, STEPS + 1)))


def test_batch_layout_errors_are_one_line():
    assert check_batch_layout(8, 2, 2) == 4
    with pytest.raises(ConfigError, match=r"batch_size: 6 is the global batch .* 4 training"):
        check_batch_layout(6, 4, 1)
    with pytest.raises(ConfigError, match=r"megabatch: 4 does not divide the per-process batch 2"):
        check_batch_layout(8, 4, 4)


def test_nproc_checks_the_batch_before_starting_processes(make_config, tmp_path, capsys):
    raw = make_config()  # global batch 4
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path), "--nproc", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "data.train.batch_size: 4 is the global batch" in err and "3 training processes" in err
    assert not (Path(raw["output_dir"]) / raw["name"]).exists()
