"""Fault injection with real processes (slow): kill -9 at random moments, signals, a real failed
write. Every interrupted run is finished with ``--resume auto`` and must end with weights equal,
bit for bit, to those of an uninterrupted run of the same config.

Run with ``python -m pytest -m slow tests/test_fault_injection.py``.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from faultkit import assert_same_weights, final_weights, tiny_gan_config, write_images
from srkit.train import checkpoint as ckpt
from srkit.train.reliability import KILL_HOOK

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[1] / "src"
TOTAL = 24
EVERY = 3
# Files of one checkpoint of the tiny GAN run: generator, discriminator, generator_ema,
# training_state.pt, manifest.json; one more "file" is the rename.
CHECKPOINT_FILES = 5


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRKIT_TEST_HOOK")}
    # The same thread count in every process, so float reductions repeat exactly.
    env.update(PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def launch(config: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "srkit", "train", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def logged_step(run: Path) -> int:
    """The newest step in metrics.jsonl (print_every is 1), 0 if none yet."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def wait_for_step(process: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> bool:
    """Poll until the run logged ``step``; False if the process ended first.

    A resumed run first rewrites metrics.jsonl without the steps after its checkpoint, so
    steps are only believed once the file was replaced (new inode) by this process.
    """
    metrics = run / "metrics.jsonl"
    stale = metrics.stat().st_ino if metrics.exists() else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fresh = metrics.stat().st_ino != stale
        except OSError:
            fresh = False
        if fresh and logged_step(run) >= step:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    raise TimeoutError(f"step {step} not reached")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    images = write_images(root / "images")
    runs = root / "runs"

    def config(name: str, **changes) -> Path:
        raw = tiny_gan_config(images, runs, name, iterations=TOTAL, checkpoint_every=EVERY)
        raw["data"]["train"].update(changes)
        path = root / f"{name}.yml"
        path.write_text(yaml.safe_dump(raw))
        return path

    status, err = finish(launch(config("reference"), "--quiet", env=environment()))
    assert status == 0, err
    return {"config": config, "runs": runs, "reference": final_weights(runs / "reference", TOTAL)}


def resume_to_the_end(setup, config: Path, name: str) -> None:
    status, err = finish(launch(config, "--resume", "auto", "--quiet", env=environment()))
    assert status == 0, err
    assert_same_weights(final_weights(setup["runs"] / name, TOTAL), setup["reference"])


def test_kill_9_at_ten_random_moments_then_resume_gives_identical_weights(setup):
    """One run is killed ten times (each restart is itself a --resume auto); after every kill
    the run folder is copied aside, and each copy is then finished with --resume auto."""
    runs = setup["runs"]
    config = setup["config"]("killed")
    run = runs / "killed"
    rng = random.Random(10)
    # Three kills inside a checkpoint write (forced by the test hook, after k of its files or
    # right after the rename), one during start-up, six at random moments of training.
    plan = ["checkpoint"] * 3 + ["startup"] + ["training"] * 6
    rng.shuffle(plan)
    moments = []
    for index, kind in enumerate(plan):
        resumable = ckpt.find_resumable(run / "checkpoints")  # never corrupt, never raises
        start = 0 if resumable is None else int(resumable.name.split("_")[1])
        args = ("--resume", "auto", "--quiet")
        if kind == "checkpoint":
            at = (start // EVERY + 1) * EVERY
            files = rng.randint(1, CHECKPOINT_FILES + 1)
            process = launch(config, *args, env=environment(**{KILL_HOOK: f"{at}:{files}"}))
            moments.append(f"writing checkpoint {at}, after {files} files")
        else:
            process = launch(config, *args, env=environment())
            if kind == "startup":
                time.sleep(rng.uniform(0.2, 2.0))
                moments.append("start-up")
            else:
                target = min(TOTAL - 1, start + rng.randint(1, 2 * EVERY))
                assert wait_for_step(process, run, target), f"run ended before step {target}"
                time.sleep(rng.uniform(0.0, 0.1))  # somewhere in the following step(s)
                moments.append(f"training, after step {logged_step(run)}")
            process.send_signal(signal.SIGKILL)
        status, err = finish(process)
        assert status == -signal.SIGKILL, (index, moments[-1], status, err)
        if run.exists():  # (not yet, if the first kill came during start-up)
            shutil.copytree(run, runs / f"killed_{index}")
    assert len(moments) == 10, moments

    # Finish every snapshot (two at a time) and the original run.
    names = [f"killed_{index}" for index in range(10)] + ["killed"]
    for pair in (names[i : i + 2] for i in range(0, len(names), 2)):
        processes = [
            launch(setup["config"](name), "--resume", "auto", "--quiet", env=environment())
            for name in pair
        ]
        for name, process in zip(pair, processes, strict=True):
            status, err = finish(process)
            assert status == 0, (name, moments[names.index(name)] if name != "killed" else "", err)
    for index, name in enumerate(names):
        moment = moments[index] if index < 10 else "end"
        weights = final_weights(runs / name, TOTAL)
        try:
            assert_same_weights(weights, setup["reference"])
        except AssertionError as error:
            raise AssertionError(f"{name} (killed at {moment}): {error}") from None
        # Leftovers of interrupted writes are gone once a later checkpoint succeeded.
        assert not list((runs / name / "checkpoints").glob("*.tmp")), name


def test_sigterm_mid_run_saves_that_step_and_resumes_identically(setup):
    config = setup["config"]("sigterm")
    run = setup["runs"] / "sigterm"
    process = launch(config, env=environment())
    assert wait_for_step(process, run, 4)
    process.send_signal(signal.SIGTERM)
    status, err = finish(process)
    assert status == 128 + signal.SIGTERM, err
    assert "SIGTERM received: finishing the current step, then saving a checkpoint" in err
    stopped = [line for line in err.splitlines() if "stopped by SIGTERM after step" in line]
    assert len(stopped) == 1, err
    step = int(stopped[0].split("after step ")[1].split(";")[0])
    assert step >= 4
    folder = run / "checkpoints" / f"step_{step:08d}"
    assert ckpt.checkpoint_problem(folder) is None
    assert ckpt.find_resumable(run / "checkpoints") == folder
    resume_to_the_end(setup, config, "sigterm")


def test_ctrl_c_with_data_workers_saves_and_resumes_identically(setup):
    """SIGINT to the whole process group (as a terminal's Ctrl-C): the data workers keep
    serving until the main process has saved; their number does not change the result."""
    config = setup["config"]("sigint", workers=1)
    run = setup["runs"] / "sigint"
    process = launch(config, "--quiet", env=environment(), start_new_session=True)
    assert wait_for_step(process, run, 4)
    os.killpg(process.pid, signal.SIGINT)
    status, err = finish(process)
    assert status == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    step = logged_step(run)
    assert ckpt.find_resumable(run / "checkpoints") == run / "checkpoints" / f"step_{step:08d}"
    resume_to_the_end(setup, config, "sigint")


def test_second_signal_exits_at_once_and_leaves_nothing_corrupt(setup):
    config = setup["config"]("twice")
    run = setup["runs"] / "twice"
    process = launch(config, env=environment())
    assert wait_for_step(process, run, 4)
    process.send_signal(signal.SIGTERM)
    # Signals sent back to back coalesce; send the second once the first was handled (the
    # process is then finishing its step or writing the checkpoint).
    seen = []
    while not seen or "SIGTERM received" not in seen[-1]:
        line = process.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
    process.send_signal(signal.SIGTERM)
    status, err = finish(process)
    err = "".join(seen) + err
    assert status == 128 + signal.SIGTERM, err
    assert "second SIGTERM: stopping now without a checkpoint" in err
    ckpt.find_resumable(run / "checkpoints")  # whatever is there is complete or ignored
    resume_to_the_end(setup, config, "twice")


def test_a_real_failed_write_keeps_the_previous_checkpoint(setup, tmp_path):
    """The OS refuses the write (file size limit: EFBIG, like a full disk): one line naming the
    file and the free space, exit status 4, the previous checkpoint intact and resumable."""
    config = setup["config"]("limited")
    run = setup["runs"] / "limited"
    status, err = finish(
        launch(config, "--quiet", "--set", "train.iterations=6", env=environment())
    )
    assert status == 0, err

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    process = launch(
        config, "--resume", "auto", "--quiet", env=environment(), preexec_fn=limit_file_size
    )
    status, err = finish(process)
    assert status == 4, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "checkpoint of step 9 not saved: cannot write '" in lines[0]
    assert "step_00000009.tmp/generator.safetensors': File too large (" in lines[0]
    assert " free of " in lines[0] and "step_00000006' is intact" in lines[0]
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [3, 6]
    resume_to_the_end(setup, config, "limited")
