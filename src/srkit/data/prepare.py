"""``srkit prepare``: turn a folder of large photos into a paired HR/LR training set.

What it writes into the dataset folder (``-o DATASET``)::

    train/hr/<photo>_s<NNN>.png       overlapping HR sub-images of the training photos
    train/lr_x<s>/<photo>_s<NNN>.png  their LR images, one folder per scale
    heldout/hr/<photo>.png            held-out photos (whole, or a centre crop)
    heldout/lr_x<s>/<photo>.png
    heldout/lr_x<s>_degraded/<photo>.png   with --degrade CONFIG (real-world LR, fixed seed)
    manifest.json                     options, and per finished photo its outputs and sizes

The steps, per photo (sorted by file name):

1. **Source reduction** (``jpeg_downscale``, default 1 = off): JPEG photos are shrunk by this
   factor with MATLAB-compatible bicubic (antialiased) first. Camera JPEGs carry blocking,
   ringing and demosaicking noise at the pixel level; averaging it away makes the "HR" images
   closer to what a network should learn to produce. PNG and other lossless sources are kept.
2. **Split**: with ``holdout_every = k``, the k-th, 2k-th, ... photo of the sorted list is held
   out (1-based; index ``i`` with ``i % k == k - 1``), the others are for training. The rule
   depends only on the names, so every tool that follows it picks the same photos.
3. **Sub-images** (training photos): ``crop_size`` squares every ``step`` pixels (overlap =
   crop_size - step); a last row/column is added at the far edge when more than
   ``min_remainder`` pixels would be left uncovered. Small files instead of large photos: the
   data loader decodes a few hundred kilobytes per patch rather than megapixels.
4. **Held-out photos**: the whole (reduced) photo, or its centre ``holdout_crop`` square, so an
   evaluation costs a fixed, small amount.
5. **LR**: MATLAB bicubic (:func:`srkit.data.imresize.imresize`) by 1/s for each scale,
   rounded to 8 bits (PNG). HR sizes are cut to a multiple of every scale first.
6. **Degraded held-out LR** (``--degrade CONFIG``): each held-out HR through the config's
   ``data.train.degradation`` pipeline, seeded from the config's seed and the photo's name, to
   ``heldout/lr_x<s>_degraded/`` (s = the config's scale): a fixed validation set for a
   real-world run (``data.val.lr``), so validation measures what the run is for.

Idempotent and resumable: every file is written atomically (temporary name, then rename), and a
photo is recorded in ``manifest.json`` (itself written atomically) only after all its files
exist. A re-run skips photos whose record matches the source file (size, modification time)
and whose recorded outputs exist with their recorded sizes (``verify=True`` also compares
SHA-256); everything else is (re)made, so an interrupted run continues where it stopped and a
partial file never counts. A manifest written with other options is an error (mixing two
preparations in one folder would silently corrupt the set).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srkit.errors import DataError
from srkit.fsutil import file_sha256

__all__ = ["PrepareOptions", "PrepareReport", "is_held_out", "prepare_dataset"]

logger = logging.getLogger("srkit.data")

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
JPEG_SUFFIXES = {".jpg", ".jpeg"}
SOURCE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
_HELDOUT_TAG = 0x484F4C44  # "HOLD": seeds of degraded held-out LR


@dataclass(frozen=True)
class PrepareOptions:
    """How a dataset is prepared; recorded in the manifest (see the module docstring)."""

    scales: tuple[int, ...] = (4,)
    crop_size: int = 480
    step: int = 240
    min_remainder: int = 0
    jpeg_downscale: int = 1
    holdout_every: int = 0
    holdout_crop: int | None = None
    #: ``{"scale", "seed", "settings"}`` of a ``data.train.degradation`` section: held-out
    #: photos also get a degraded LR (``heldout/lr_x<scale>_degraded``); None = not made.
    degrade: dict[str, Any] | None = None

    def check(self) -> None:
        multiple = math.lcm(*self.scales) if self.scales else 1
        if not self.scales or any(s < 1 for s in self.scales):
            raise DataError(f"--scales must be positive integers, got {list(self.scales)}")
        if self.crop_size < 1 or self.crop_size % multiple:
            raise DataError(
                f"--crop-size {self.crop_size} is not a positive multiple of the scales "
                f"({multiple})"
            )
        if not 0 < self.step <= self.crop_size:
            raise DataError(f"--step {self.step} must be between 1 and --crop-size")
        if self.jpeg_downscale < 1:
            raise DataError(f"--jpeg-downscale must be at least 1, got {self.jpeg_downscale}")
        if self.holdout_every < 0 or self.holdout_every == 1:
            raise DataError(
                f"--holdout-every {self.holdout_every}: use 0 (no held-out photos) or k >= 2"
            )
        if self.degrade is not None and self.degrade["scale"] not in self.scales:
            raise DataError(
                f"--degrade: the config's scale {self.degrade['scale']} is not one of --scales "
                f"{list(self.scales)}"
            )
        if self.holdout_crop is not None and (
            self.holdout_crop < 1 or self.holdout_crop % multiple
        ):
            raise DataError(
                f"--holdout-crop {self.holdout_crop} is not a positive multiple of the scales "
                f"({multiple})"
            )

    def record(self) -> dict[str, Any]:
        values = asdict(self)
        values["scales"] = list(self.scales)
        if self.degrade is None:
            del values["degrade"]  # manifests written before --degrade existed stay valid
        return values


@dataclass
class PrepareReport:
    made: list[str] = field(default_factory=list)  # photos processed in this run
    skipped: list[str] = field(default_factory=list)  # photos already complete
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    train_images: int = 0
    heldout_images: int = 0


def is_held_out(index: int, holdout_every: int) -> bool:
    """The split rule: the k-th, 2k-th, ... item (1-based) of the sorted names is held out."""
    return holdout_every > 0 and index % holdout_every == holdout_every - 1


def subimage_positions(length: int, crop: int, step: int, min_remainder: int) -> list[int]:
    """Start offsets along one axis: every ``step``, plus one flush with the far edge when more
    than ``min_remainder`` pixels would otherwise stay uncovered."""
    if length < crop:
        return []
    positions = list(range(0, length - crop + 1, step))
    if length - (positions[-1] + crop) > min_remainder:
        positions.append(length - crop)
    return positions


def _source_signature(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_manifest(output: Path, options: PrepareOptions) -> dict[str, Any]:
    path = output / MANIFEST
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "options": options.record(), "sources": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(
            f"'{path}' cannot be read ({error}); delete it to prepare the folder again"
        ) from None
    if manifest.get("options") != options.record():
        recorded = manifest.get("options", {})
        differing = sorted(
            key
            for key in set(recorded) | set(options.record())
            if recorded.get(key) != options.record().get(key)
        )
        detail = ", ".join(
            f"{key} {recorded.get(key)!r} there, {options.record().get(key)!r} now"
            for key in differing
        )
        raise DataError(
            f"'{path}' was written with other options ({detail}); prepare into another folder "
            "or use the same options"
        )
    return manifest


def _write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    from srkit.fsutil import atomic_write_bytes

    payload = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    atomic_write_bytes(output / MANIFEST, payload)


def _complete(output: Path, record: dict[str, Any], source: Path, verify: bool) -> bool:
    """Whether a manifest record still describes finished work for ``source``."""
    if record.get("source") != _source_signature(source):
        return False
    for relative, facts in record.get("files", {}).items():
        path = output / relative
        try:
            if path.stat().st_size != facts["bytes"]:
                return False
        except OSError:
            return False
        if verify and file_sha256(path) != facts["sha256"]:
            return False
    return True


def _reduce_source(image: np.ndarray, source: Path, factor: int) -> np.ndarray:
    from srkit.data.imresize import imresize

    if factor == 1 or source.suffix.lower() not in JPEG_SUFFIXES:
        return image
    height, width = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    return imresize(image[:height, :width], scale=1 / factor)


def _pieces(
    image: np.ndarray, stem: str, held_out: bool, options: PrepareOptions
) -> list[tuple[str, np.ndarray]]:
    """(file stem, HR array) of one photo's outputs."""
    multiple = math.lcm(*options.scales)
    height = image.shape[0] // multiple * multiple
    width = image.shape[1] // multiple * multiple
    if held_out:
        if options.holdout_crop is None:
            return [(stem, image[:height, :width])]
        side = min(options.holdout_crop, height, width) // multiple * multiple
        if side < multiple:
            return []
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        return [(stem, image[top : top + side, left : left + side])]
    crop = options.crop_size
    rows = subimage_positions(image.shape[0], crop, options.step, options.min_remainder)
    cols = subimage_positions(image.shape[1], crop, options.step, options.min_remainder)
    pieces = []
    for top in rows:
        for left in cols:
            pieces.append(
                (f"{stem}_s{len(pieces) + 1:03d}", image[top : top + crop, left : left + crop])
            )
    return pieces


def _process(
    source: Path, held_out: bool, output: Path, options: PrepareOptions
) -> dict[str, dict[str, Any]]:
    """Write one photo's HR and LR files; returns {relative path: {bytes, sha256}}."""
    from srkit.data.imresize import imresize
    from srkit.data.io import read_rgb, write_image

    image = _reduce_source(read_rgb(source).astype(np.float32), source, options.jpeg_downscale)
    # Round the (reduced) HR to 8 bits once, so LR is made from exactly the stored HR pixels.
    image = np.round(np.clip(image, 0, 1) * 255) / 255
    split = "heldout" if held_out else "train"
    files: dict[str, dict[str, Any]] = {}
    for stem, hr in _pieces(image, source.stem, held_out, options):
        outputs = [(f"{split}/hr/{stem}.png", hr)]
        for scale in options.scales:
            lr = np.clip(imresize(np.ascontiguousarray(hr), scale=1 / scale), 0, 1)
            outputs.append((f"{split}/lr_x{scale}/{stem}.png", lr))
        if held_out and options.degrade is not None:
            scale = options.degrade["scale"]
            outputs.append(
                (f"{split}/lr_x{scale}_degraded/{stem}.png", _degraded(hr, stem, options))
            )
        for relative, array in outputs:
            path = output / relative
            write_image(path, array)
            files[relative] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return files


def _degraded(hr: np.ndarray, stem: str, options: PrepareOptions) -> np.ndarray:
    """The held-out photo's degraded LR: the config's pipeline, seeded by the config's seed
    and the photo's name (so it never changes between runs), applied to the plain HR."""
    import zlib

    import torch

    from srkit.data.degrade import DegradationPipeline
    from srkit.data.sampler import derive_seed

    pipeline = DegradationPipeline.from_settings(
        options.degrade["settings"], options.degrade["scale"]
    )
    seed = derive_seed(options.degrade["seed"], _HELDOUT_TAG, zlib.crc32(stem.encode("utf-8")))
    tensor = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1), dtype=np.float32))
    lr = pipeline(tensor[None], np.random.default_rng(seed))[0]
    return lr.permute(1, 2, 0).numpy()


def find_sources(input_dir: Path) -> list[Path]:
    if not input_dir.is_dir():
        raise DataError(f"photo folder '{input_dir}' does not exist")
    sources = sorted(
        (p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in SOURCE_SUFFIXES),
        key=lambda p: p.name,
    )
    if not sources:
        raise DataError(
            f"no images ({', '.join(sorted(SOURCE_SUFFIXES))}) in '{input_dir}' to prepare"
        )
    stems: dict[str, Path] = {}
    for path in sources:
        if path.stem in stems:
            raise DataError(
                f"'{stems[path.stem].name}' and '{path.name}' in '{input_dir}' would both be "
                f"named '{path.stem}'; rename one"
            )
        stems[path.stem] = path
    return sources


def prepare_dataset(
    input_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: PrepareOptions,
    verify: bool = False,
    progress: bool = False,
    on_photo_done: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Prepare ``output`` from the photos in ``input_dir`` (see the module docstring).

    ``on_photo_done`` is called with each photo's name after its record is saved (tests use
    it to interrupt a run between photos).
    """
    from tqdm import tqdm

    from srkit.data.io import UnreadableImageError

    options.check()
    input_dir, output = Path(input_dir), Path(output)
    sources = find_sources(input_dir)
    output.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(output, options)
    records: dict[str, Any] = manifest["sources"]
    report = PrepareReport()
    bar = tqdm(sources, desc="prepare", unit="photo", disable=not progress, dynamic_ncols=True)
    for index, source in enumerate(bar):
        held_out = is_held_out(index, options.holdout_every)
        record = records.get(source.name)
        if (
            record is not None
            and record.get("split") == ("heldout" if held_out else "train")
            and _complete(output, record, source, verify)
        ):
            report.skipped.append(source.name)
        else:
            bar.set_postfix_str(source.name[:40])
            try:
                files = _process(source, held_out, output, options)
            except UnreadableImageError as error:
                logger.warning("skipping %s", error)
                report.unreadable.append((source.name, str(error)))
                continue
            records[source.name] = {
                "split": "heldout" if held_out else "train",
                "source": _source_signature(source),
                "files": files,
            }
            _write_manifest(output, manifest)
            report.made.append(source.name)
            if on_photo_done is not None:
                on_photo_done(source.name)
    bar.close()
    for record in records.values():
        count = sum(1 for name in record["files"] if "/hr/" in name)
        if record["split"] == "heldout":
            report.heldout_images += count
        else:
            report.train_images += count
    return report


def add_prepare_arguments(parser: Any) -> None:
    parser.add_argument("input", type=Path, help="folder of photos (JPEG, PNG, ...)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="dataset folder")
    parser.add_argument(
        "--scales", type=int, nargs="+", default=[4], help="LR scales to make (default 4)"
    )
    parser.add_argument("--crop-size", type=int, default=480, help="HR sub-image side (480)")
    parser.add_argument(
        "--step", type=int, default=240, help="sub-image spacing; overlap = crop - step (240)"
    )
    parser.add_argument(
        "--min-remainder",
        type=int,
        default=0,
        help="add a sub-image flush with the far edge when more pixels than this are left (0)",
    )
    parser.add_argument(
        "--jpeg-downscale",
        type=int,
        default=1,
        metavar="F",
        help="shrink JPEG sources by F first (MATLAB bicubic; 2 reduces JPEG artefacts)",
    )
    parser.add_argument(
        "--holdout-every",
        type=int,
        default=0,
        metavar="K",
        help="hold out every K-th photo by sorted file name (0: none)",
    )
    parser.add_argument(
        "--holdout-crop",
        type=int,
        metavar="N",
        help="held-out photos: keep only the centre NxN (default: whole photo)",
    )
    parser.add_argument(
        "--degrade",
        type=Path,
        metavar="CONFIG",
        help="also write heldout/lr_x<s>_degraded: each held-out photo through CONFIG's "
        "data.train.degradation, with a fixed seed (the config's seed and the file name)",
    )
    parser.add_argument(
        "--verify", action="store_true", help="re-hash finished files before skipping them"
    )


def degradation_record(config_path: Path) -> dict[str, Any]:
    """What ``--degrade CONFIG`` records: the config's scale, seed and degradation settings."""
    from srkit.config import load_config
    from srkit.errors import ConfigError

    config = load_config(config_path)
    settings = config.data.train.degradation
    if settings is None:
        raise ConfigError(
            f"{config_path}: data.train.degradation is not set; --degrade needs a config with "
            "degradations"
        )
    return {
        "scale": config.scale,
        "seed": config.seed,
        "settings": settings.model_dump(mode="json"),
    }


def prepare_command(args: Any) -> int:
    options = PrepareOptions(
        scales=tuple(args.scales),
        crop_size=args.crop_size,
        step=args.step,
        min_remainder=args.min_remainder,
        jpeg_downscale=args.jpeg_downscale,
        holdout_every=args.holdout_every,
        holdout_crop=args.holdout_crop,
        degrade=None if args.degrade is None else degradation_record(args.degrade),
    )
    report = prepare_dataset(args.input, args.output, options, verify=args.verify, progress=True)
    print(
        f"{args.output}: {len(report.made)} photos prepared, {len(report.skipped)} already done, "
        f"{len(report.unreadable)} unreadable; {report.train_images} training sub-images "
        f"(train/hr, train/lr_x*), {report.heldout_images} held-out images (heldout/hr, "
        "heldout/lr_x*)"
    )
    return 0
