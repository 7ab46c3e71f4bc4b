"""Helpers shared by the reliability tests: a tiny deterministic GAN run and weight comparison."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from conftest import BASE_CONFIG, write_photo_like


def write_images(folder: Path, count: int = 6, size: int = 64) -> Path:
    for index in range(count):
        write_photo_like(folder / f"img{index}.png", (size, size), seed=index)
    return folder


def tiny_gan_config(
    images: Path, output_dir: Path, name: str, iterations: int = 6, checkpoint_every: int = 2
) -> dict[str, Any]:
    """Generator + discriminator + EMA, deterministic, no validation: a few steps per second."""
    raw = copy.deepcopy(BASE_CONFIG)
    raw["name"] = name
    raw["output_dir"] = str(output_dir)
    raw["data"] = {"train": {"hr": str(images), "patch_size": 32, "batch_size": 4, "workers": 0}}
    raw["networks"]["discriminator"] = {"type": "vgg", "nf": 4, "norm": "none"}
    raw["losses"] = [
        {"type": "pixel", "weight": 1.0},
        {"type": "gan", "weight": 0.1, "gan_type": "ragan", "discriminator": "discriminator"},
    ]
    raw["train"].update(iterations=iterations, ema={"decay": 0.9})
    raw["logging"].update(checkpoint_every=checkpoint_every, keep_checkpoints=2, print_every=1)
    return raw


def final_weights(run: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    folder = run / "checkpoints" / f"step_{step:08d}"
    return {file.name: load_file(file) for file in sorted(folder.glob("*.safetensors"))}


def assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for file in a:
        assert sorted(a[file]) == sorted(b[file]), file
        for key in a[file]:
            assert torch.equal(a[file][key], b[file][key]), (file, key)
