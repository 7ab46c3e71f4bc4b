"""Sample photos for the quickstart, taken from scikit-image's bundled data (no download).

``python -m srkit.demo OUT_DIR`` writes ``OUT_DIR/train`` (natural photos and a few greyscale
textures) and ``OUT_DIR/val`` (one held-out photo) as PNG files. scikit-image is an optional
dependency (``pip install srkit[demo]``), used only here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from srkit.errors import SrkitError

TRAIN_PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "motorcycle_left",
    "brick",
    "grass",
    "gravel",
)
HELD_OUT_PHOTOS = ("chelsea",)


def _load(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle_left":  # stereo pair loader returns (left, right, disparity)
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def write_demo_photos(out_dir: Path) -> tuple[Path, Path]:
    """Write the train and held-out photos as PNG; existing files are kept. Returns the folders."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        raise SrkitError(
            "the quickstart photos come from scikit-image: pip install 'srkit[demo]'"
        ) from None
    from srkit.data.io import write_image

    out_dir = Path(out_dir)
    folders = {"train": TRAIN_PHOTOS, "val": HELD_OUT_PHOTOS}
    for folder, names in folders.items():
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            target = out_dir / folder / f"{name}.png"
            if not target.exists():
                pixels = _load(name).astype(np.float32) / 255.0
                write_image(target, pixels)
    return out_dir / "train", out_dir / "val"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        train, val = write_demo_photos(args.out_dir)
    except SrkitError as error:
        print(f"srkit: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {train} and {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
