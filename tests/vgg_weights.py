"""VGG weight files for tests: random ones in torchvision's layout, and the real ImageNet VGG16.

The real weights (and LPIPS' linear layers) come from ``../shared/data/get-vgg16.sh``, run once
into a cache folder (``$SRKIT_TEST_CACHE``, default ``~/.cache/srkit-tests``), or from
``$SRKIT_VGG16_WEIGHTS`` (the LPIPS layers then at ``<that path>.lpips-lin.pth``, or
``$SRKIT_LPIPS_WEIGHTS``). Tests needing them are ``@pytest.mark.slow`` and skip when neither
is available.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

VGG_CONVS = {
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
}
VGG_WIDTHS = {
    "vgg16": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
    "vgg19": [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512],
}
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def write_random_vgg(path: Path, arch: str = "vgg16", seed: int = 0) -> Path:
    """A random (He-initialised) VGG state dict in torchvision's key layout."""
    generator = torch.Generator().manual_seed(seed)
    state, previous = {}, 3
    for index, width in zip(VGG_CONVS[arch], VGG_WIDTHS[arch], strict=True):
        weight = torch.randn(width, previous, 3, 3, generator=generator)
        state[f"features.{index}.weight"] = weight * (2 / (previous * 9)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(width, generator=generator) * 0.01
        previous = width
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_random_lpips_lin(path: Path, seed: int = 0) -> Path:
    generator = torch.Generator().manual_seed(seed)
    state = {
        f"lin{i}.weight": torch.rand(1, c, 1, 1, generator=generator) * 0.1
        for i, c in enumerate(LPIPS_CHANNELS)
    }
    torch.save(state, path)
    return path


def real_vgg16_weights() -> tuple[Path, Path]:
    """(VGG16 ImageNet file, LPIPS lin file), fetched once into the cache; skips if impossible."""
    given = os.environ.get("SRKIT_VGG16_WEIGHTS")
    if given:
        vgg = Path(given)
        lin = Path(os.environ.get("SRKIT_LPIPS_WEIGHTS", f"{vgg}.lpips-lin.pth"))
        if vgg.is_file() and lin.is_file():
            return vgg, lin
    cache = Path(os.environ.get("SRKIT_TEST_CACHE", Path.home() / ".cache" / "srkit-tests"))
    vgg, lin = cache / "vgg16.pth", cache / "vgg16.pth.lpips-lin.pth"
    if vgg.is_file() and lin.is_file():
        return vgg, lin
    script = Path(__file__).resolve().parents[2] / "shared" / "data" / "get-vgg16.sh"
    if not script.is_file():
        pytest.skip(f"no VGG16 weights: set SRKIT_VGG16_WEIGHTS or provide {script}")
    cache.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["bash", str(script), str(vgg)], capture_output=True, text=True)
    if result.returncode != 0 or not (vgg.is_file() and lin.is_file()):
        pytest.skip(f"could not fetch VGG16 weights: {result.stderr.strip()[-300:]}")
    return vgg, lin
