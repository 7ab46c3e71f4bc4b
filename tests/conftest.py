"""Shared fixtures: tiny image folders and minimal configs that train in seconds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def write_photo_like(path: Path, size: tuple[int, int], seed: int) -> None:
    """A smooth random image with edges (not pure noise, so SR has something to learn)."""
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.28)
        channels.append(0.5 + 0.4 * np.sin(fx * 6.28 * x + phase) * np.cos(fy * 6.28 * y))
    image = np.stack(channels, axis=-1)
    image[(x * 7 + y * 3) % 1 < 0.15] *= 0.5  # some hard edges
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.clip(0, 1) * 255).round().astype(np.uint8)).save(path)


@pytest.fixture
def image_folders(tmp_path: Path) -> dict[str, Path]:
    """``train`` (6 images 64x64) and ``val`` (2 images 48x40) HR folders."""
    train, val = tmp_path / "train", tmp_path / "val"
    for index in range(6):
        write_photo_like(train / f"img{index}.png", (64, 64), seed=index)
    for index in range(2):
        write_photo_like(val / f"val{index}.png", (48, 40), seed=100 + index)
    return {"train": train, "val": val, "root": tmp_path}


BASE_CONFIG: dict[str, Any] = {
    "name": "test",
    "scale": 2,
    "seed": 0,
    "data": {
        "train": {"hr": "TRAIN", "patch_size": 32, "batch_size": 4, "workers": 0},
        "val": {"hr": "VAL", "sheet_images": 1},
    },
    "networks": {"generator": {"type": "rrdb", "nf": 8, "nb": 1, "gc": 4}},
    "losses": [{"type": "pixel", "weight": 1.0, "criterion": "l1"}],
    "train": {
        "iterations": 4,
        "optim": {"generator": {"lr": 2e-4}},
        "deterministic": True,
        # Explicit, so that a machine whose CPU runs bf16 (where auto picks it) computes what
        # the tests expect.
        "precision": "fp32",
        "channels_last": False,
    },
    "logging": {
        "print_every": 1,
        "val_every": 1000,
        "checkpoint_every": 1000,
        "image_every": 1000,
        "tensorboard": False,
        "progress_bar": False,
    },
}


@pytest.fixture
def make_config(image_folders: dict[str, Path]):
    """A function returning a fresh raw config dict pointing at the tiny image folders."""

    def make(**changes: Any) -> dict[str, Any]:
        raw = copy.deepcopy(BASE_CONFIG)
        raw["data"]["train"]["hr"] = str(image_folders["train"])
        raw["data"]["val"]["hr"] = str(image_folders["val"])
        raw["output_dir"] = str(image_folders["root"] / "runs")
        for dotted, value in changes.items():
            node = raw
            parts = dotted.split("__")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return raw

    return make
