"""Sample photos for the quickstart, taken from scikit-image's bundled data (no download).

``python -m srkit.demo OUT_DIR`` writes ``OUT_DIR/train`` (the training photos) and
``OUT_DIR/val`` (the held-out photos the quickstart reports on) as PNG files; ``--tuning`` also
writes ``OUT_DIR/tune``, the photos the quickstart's recipe was chosen on. Greyscale photos are
written as greyscale PNG (srkit reads them as RGB with three equal channels). scikit-image is an
optional dependency (``pip install srkit[demo]``), used only here; every photo below is a file in
its wheel (``skimage/data/``), none is fetched from the network.

The three sets are disjoint and no photo in one shows the scene of another:

* ``TRAIN_PHOTOS``: what the quickstart trains on.
* ``TUNING_PHOTOS``: held out; the recipe (network size, patch, batch, steps, learning rate,
  training photos) was chosen by PSNR-Y on these, see benchmarks/RESULTS.md.
* ``HELD_OUT_PHOTOS``: held out and never used to choose anything; the quickstart's report
  shows the model against bicubic on each of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from srkit.errors import SrkitError

# Photos only: with the greyscale brick, grass and gravel textures added, the tuning photos
# scored 0.1 dB lower (benchmarks/RESULTS.md).
TRAIN_PHOTOS = (
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "page",
)
TUNING_PHOTOS = ("astronaut", "moon", "text")
HELD_OUT_PHOTOS = ("chelsea", "coffee", "rocket", "camera", "coins")


def _load(name: str) -> np.ndarray:
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):  # one loader for the stereo pair
        left, right, _disparity = skimage.data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skimage.data, name)()


def write_demo_photos(out_dir: Path, tuning: bool = False) -> tuple[Path, Path]:
    """Write the train and held-out photos (and with ``tuning`` the tuning photos) as PNG;
    existing files are kept. Returns the train and held-out folders."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        raise SrkitError(
            "the quickstart photos come from scikit-image: pip install 'srkit[demo]'"
        ) from None
    from srkit.data.io import write_image

    out_dir = Path(out_dir)
    folders = {"train": TRAIN_PHOTOS, "val": HELD_OUT_PHOTOS}
    if tuning:
        folders["tune"] = TUNING_PHOTOS
    for folder, names in folders.items():
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        # A folder written by an older srkit may hold photos that are now held out: training on
        # them would make the report meaningless, so refuse rather than mix the sets.
        strangers = sorted(
            path.name
            for path in (out_dir / folder).iterdir()
            if path.suffix.lower() == ".png" and path.stem not in names
        )
        if strangers:
            raise SrkitError(
                f"{out_dir / folder} holds photos that are not the quickstart's "
                f"({', '.join(strangers)}; from an older srkit?): delete {out_dir} and run again"
            )
        for name in names:
            target = out_dir / folder / f"{name}.png"
            if not target.exists():
                pixels = _load(name).astype(np.float32) / 255.0
                write_image(target, pixels)
    return out_dir / "train", out_dir / "val"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--tuning",
        action="store_true",
        help="also write OUT_DIR/tune, the photos the quickstart's recipe was chosen on",
    )
    args = parser.parse_args(argv)
    try:
        train, val = write_demo_photos(args.out_dir, tuning=args.tuning)
    except SrkitError as error:
        print(f"srkit: error: {error}", file=sys.stderr)
        return 2
    written = f"{train} ({len(TRAIN_PHOTOS)} photos), {val} ({len(HELD_OUT_PHOTOS)} held out)"
    if args.tuning:
        written += f", {args.out_dir / 'tune'} ({len(TUNING_PHOTOS)} for tuning)"
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
