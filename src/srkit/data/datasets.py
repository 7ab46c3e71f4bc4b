"""Super-resolution datasets: paired HR/LR folders or HR-only folders with LR made on the fly.

:class:`SRDataset` is a ``torch.utils.data.Dataset`` whose items are
``{"lr": (3, h, w), "hr": (3, h*scale, w*scale), "name": str}`` float32 tensors in [0, 1]; with
``reference_size`` also the whole-image reference of the patch, ``"ref"`` and ``"ref_center"``
(:mod:`srkit.data.reference`; made from the whole LR image, or from the whole HR image when LR
is made on the fly, and flipped/rotated with the patch).

Design points:

* **Randomness comes with the index.** An item index is either a plain ``int`` (validation:
  whole image, or a centre crop, no augmentation) or an ``(index, sample_seed)`` tuple from
  :class:`srkit.data.sampler.TrainSampler`; crop position, flips and rotations are drawn from
  ``np.random.default_rng(sample_seed)``. Batches therefore do not depend on worker count or
  worker seeding, and resuming a run reproduces them exactly.
* **Bad files never stop training.** Every file is checked at start-up with
  :func:`srkit.data.io.quick_check` (headers only); unreadable, truncated and too-small images
  are skipped with one warning each on the ``srkit.data`` logger and listed in
  :attr:`SRDataset.skipped`. A file that still fails to decode later is reported once per
  process and replaced by the next index (deterministically). Only a folder without a single
  usable image is an error.
* **Pairing is explicit.** In paired mode an HR file ``sub/0001.png`` pairs with the LR file of
  the same relative path and stem (any image extension), or with the DIV2K-style
  ``sub/0001x4.png`` (stem + ``x`` + scale). HR files without a partner are a configuration
  error; LR files without a partner are ignored. An HR image may exceed ``scale x LR`` by fewer
  than ``scale`` pixels per axis (it is cropped at the right/bottom, the usual "mod crop");
  any other size mismatch is an error naming the pair.
* **On-the-fly LR equals whole-image LR.** With HR only, LR is MATLAB bicubic
  (:func:`srkit.data.imresize.imresize` by 1/scale) of the HR. For a patch, the HR crop is
  downscaled together with a margin of :data:`LR_MARGIN` LR pixels (where the image has them)
  that is then cut away. The bicubic kernel of an x1/s reduction reaches less than 2 LR pixels
  from the output pixel, and where the margin is cut short it is cut by the image border,
  whose mirroring then matches the whole-image resize; so the LR patch equals the
  corresponding region of the whole-image LR. LR is clipped to [0, 1] and, by default
  (``quantize_lr=True``), rounded to 8-bit levels, so on-the-fly LR matches LR made once and
  stored as PNG, as benchmark LR sets are (and as users' 8-bit inputs will be).
* **Real-world LR** (``degradation``, :mod:`srkit.data.degrade`): instead of bicubic, the LR
  patch is the HR patch (after flips/rotations) through a degradation pipeline whose draws
  come from a seed derived from the item's sample seed, so it too is a pure function of
  ``(index, sample_seed)``: the same for the same run seed, step and batch position, and
  continued exactly by a resumed run.
* **Unpaired data** (:class:`UnpairedDataset`, disjoint training): an LR folder and an HR
  folder of any sizes and unrelated content. An epoch visits every LR image once; the HR image
  of an item is drawn from the item's sample seed, so items stay a pure function of
  ``(index, sample_seed)`` and resume stays exact.
* **Spawn-safe.** Attributes are plain data (no open files, no lambdas, no loggers), and the
  optional decoded-image cache is dropped when pickled, so the dataset works with
  ``DataLoader(num_workers=k, multiprocessing_context="spawn")`` on every platform.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from srkit.data.degrade import DegradationPipeline
from srkit.data.imresize import imresize
from srkit.data.io import IMAGE_EXTENSIONS, UnreadableImageError, quick_check, read_rgb
from srkit.data.sampler import derive_seed
from srkit.errors import DataError

__all__ = ["LR_MARGIN", "SRDataset", "UnpairedDataset", "find_images"]

logger = logging.getLogger("srkit.data")

#: LR pixels of context resized around an on-the-fly LR patch (2 suffice for bicubic).
LR_MARGIN = 2
# Domain tag of the degradation seeds: their draws are independent of the crop's.
_DEGRADE_TAG = 0x44454752  # "DEGR"


def find_images(
    root: str | os.PathLike[str], extensions: Collection[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Image files under ``root``, recursively, sorted by relative path.

    Only :data:`srkit.data.io.IMAGE_EXTENSIONS` count (case-insensitive), or the lower-case
    ``extensions`` given (``srkit upscale`` adds video extensions). Hidden files and
    folders (name starting with ".") are skipped: they are editor/OS debris or srkit's own
    temporary files. Symbolic links to folders are followed. The order (by POSIX relative
    path) is the same on every platform, which keeps the sample order reproducible.

    Raises:
        DataError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    _check_folder(root)
    found: list[tuple[str, Path]] = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for file_name in files:
            if file_name.startswith("."):
                continue
            if Path(file_name).suffix.lower() in extensions:
                path = Path(folder) / file_name
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda pair: pair[0])
    return [path for _, path in found]


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise DataError(f"data folder '{root}' does not exist")
    if not root.is_dir():
        raise DataError(f"data folder '{root}' is not a folder")


@dataclass(frozen=True)
class _Sample:
    """One usable image (pair), as found at start-up."""

    name: str  # HR path relative to the HR root, POSIX separators
    hr_path: str
    lr_path: str | None
    lr_size: tuple[int, int]  # (width, height) of the LR image (made or read)


class SRDataset(Dataset):
    """HR/LR image pairs for training and validation.

    Args:
        hr_root: folder of high-resolution images (searched recursively).
        lr_root: folder of matching low-resolution images; None makes LR on the fly with
            MATLAB-compatible bicubic downscaling.
        scale: upscaling factor (HR size / LR size).
        patch_size: side of the square HR patch (a multiple of ``scale``); None for whole
            images (HR cropped to a multiple of ``scale``).
        flips: random horizontal and vertical flips for ``(index, seed)`` items.
        rotations: random 90° rotations for ``(index, seed)`` items (with flips: all 8
            orientations, equally likely).
        min_size: skip images whose HR width or height is below this; defaults to
            ``patch_size`` (or ``scale`` for whole images). Never lower than those.
        name: label used in log messages; defaults to the HR folder's name.
        quantize_lr: round on-the-fly LR to 8-bit levels (like LR stored as PNG). Ignored in
            paired mode, where LR comes from files.
        cache_images: keep decoded images in memory (per process; not shared with workers,
            and not pickled).
        reference_size: also give each item the whole-image reference of its patch at this
            size (``ref``, ``ref_center``; for generators such as SPSR3); None: no reference.
        degradation: make LR with this real-world degradation pipeline instead of bicubic
            (HR-only mode); its draws come from the item's sample seed (for a plain ``int``
            index, from the index), and ``hr`` is the pipeline's target (sharpened if set).

    Raises:
        DataError: missing folder, no usable image, HR without LR partner, size mismatch of a
            pair, or ``patch_size`` not a multiple of ``scale``.
    """

    def __init__(
        self,
        hr_root: str | os.PathLike[str],
        lr_root: str | os.PathLike[str] | None = None,
        scale: int = 4,
        patch_size: int | None = None,
        flips: bool = True,
        rotations: bool = True,
        min_size: int | None = None,
        name: str | None = None,
        quantize_lr: bool = True,
        cache_images: bool = False,
        reference_size: int | None = None,
        degradation: DegradationPipeline | None = None,
    ) -> None:
        if int(scale) != scale or scale < 1:
            raise DataError(f"scale must be a positive integer, got {scale}")
        if patch_size is not None and (patch_size < 1 or patch_size % scale):
            raise DataError(f"patch_size {patch_size} is not a positive multiple of scale {scale}")
        self.hr_root = str(hr_root)
        self.lr_root = None if lr_root is None else str(lr_root)
        self.scale = int(scale)
        self.patch_size = patch_size
        self.flips = flips
        self.rotations = rotations
        self.quantize_lr = quantize_lr
        self.cache_images = cache_images
        self.reference_size = reference_size
        if degradation is not None and lr_root is not None:
            raise DataError("degradations make LR from HR; they cannot be used with an LR folder")
        self.degradation = degradation
        self.name = name or Path(self.hr_root).name or self.hr_root
        self.min_size = max(min_size or 0, patch_size or self.scale)
        self.skipped: list[tuple[str, str]] = []
        self._samples: list[_Sample] = self._scan()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._bad: set[int] = set()  # indices found undecodable in this process

    # ---------------------------------------------------------------- start-up scan

    def _scan(self) -> list[_Sample]:
        hr_root = Path(self.hr_root)
        hr_files = find_images(hr_root)
        pairs = self._pair(hr_root, hr_files)
        samples = []
        for name, hr_path, lr_path in pairs:
            sample = self._check(name, hr_path, lr_path)
            if sample is not None:
                samples.append(sample)
        if not samples:
            if not hr_files:
                detail = f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found"
            else:
                listed = "; ".join(f"'{path}': {reason}" for path, reason in self.skipped[:3])
                more = ", ..." if len(self.skipped) > 3 else ""
                detail = f"{len(self.skipped)} files skipped: {listed}{more}"
            raise DataError(f"no usable images in '{hr_root}' ({detail})")
        logger.info(
            "%s: %d images%s",
            self.name,
            len(samples),
            f" ({len(self.skipped)} skipped)" if self.skipped else "",
        )
        return samples

    def _pair(self, hr_root: Path, hr_files: list[Path]) -> list[tuple[str, Path, Path | None]]:
        """(name, HR path, LR path or None) for every HR file, matching LR by name."""
        names = [path.relative_to(hr_root).as_posix() for path in hr_files]
        if self.lr_root is None:
            return [(name, path, None) for name, path in zip(names, hr_files, strict=True)]
        lr_root = Path(self.lr_root)
        by_stem: dict[str, list[Path]] = {}
        for path in find_images(lr_root):
            stem = path.relative_to(lr_root).with_suffix("").as_posix()
            by_stem.setdefault(stem, []).append(path)
        pairs: list[tuple[str, Path, Path | None]] = []
        unmatched: list[str] = []
        for name, hr_path in zip(names, hr_files, strict=True):
            stem = Path(name).with_suffix("").as_posix()
            candidates = by_stem.get(stem, []) + by_stem.get(f"{stem}x{self.scale}", [])
            if not candidates:
                unmatched.append(name)
            elif len(candidates) > 1:
                listed = ", ".join(f"'{path}'" for path in candidates)
                raise DataError(f"HR image '{hr_path}' matches several LR images: {listed}")
            else:
                pairs.append((name, hr_path, candidates[0]))
        if unmatched:
            example = Path(unmatched[0]).with_suffix("").as_posix()
            raise DataError(
                f"{len(unmatched)} HR image(s) in '{hr_root}' have no LR partner in "
                f"'{lr_root}', e.g. '{unmatched[0]}' (looked for '{example}.*' and "
                f"'{example}x{self.scale}.*')"
            )
        return pairs

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        logger.warning("%s: skipping '%s': %s", self.name, path, reason)

    def _check(self, name: str, hr_path: Path, lr_path: Path | None) -> _Sample | None:
        """Header checks for one HR (and LR) file; None (with a warning) if unusable."""
        try:
            hr_width, hr_height = quick_check(hr_path)
        except UnreadableImageError as error:
            self._skip(hr_path, error.reason)
            return None
        scale = self.scale
        if lr_path is None:
            lr_width, lr_height = hr_width // scale, hr_height // scale
        else:
            try:
                lr_width, lr_height = quick_check(lr_path)
            except UnreadableImageError as error:
                self._skip(lr_path, error.reason)
                return None
            # HR may exceed scale x LR by less than `scale` pixels (it gets mod-cropped).
            if not (
                0 <= hr_width - lr_width * scale < scale
                and 0 <= hr_height - lr_height * scale < scale
            ):
                ratio = hr_width // lr_width if lr_width else 0
                if ratio != scale and 0 <= hr_width - lr_width * ratio < ratio:
                    what = f"is {ratio} x LR {lr_width}x{lr_height}, not {scale} x (mixed scales?)"
                else:
                    what = f"is not {scale} x LR {lr_width}x{lr_height}"
                raise DataError(
                    f"paired images '{name}': HR {hr_width}x{hr_height} {what} ('{hr_path}', "
                    f"'{lr_path}'); every LR image must be 1/{scale} of its HR image (scale)"
                )
        usable = min(lr_width, lr_height) * scale
        if usable < self.min_size:
            self._skip(
                hr_path,
                f"too small ({hr_width}x{hr_height}; need at least "
                f"{self.min_size}x{self.min_size} after cropping to a multiple of {scale})",
            )
            return None
        lr_name = None if lr_path is None else str(lr_path)
        return _Sample(name, str(hr_path), lr_name, (lr_width, lr_height))

    # ---------------------------------------------------------------- Dataset protocol

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def names(self) -> list[str]:
        """Relative HR paths of the usable samples, in index order."""
        return [sample.name for sample in self._samples]

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """One sample; ``item`` is an index, or ``(index, sample_seed)`` for random crops."""
        if isinstance(item, tuple | list):
            index, sample_seed = int(item[0]), int(item[1])
        else:
            index, sample_seed = int(item), None
        count = len(self._samples)
        if not -count <= index < count:
            raise IndexError(f"index {index} out of range for {count} samples")
        index %= count
        # A file that fails to decode is replaced by the next one, so one bad file cannot stop
        # training; the replacement depends only on which files are bad, hence deterministic.
        for attempt in range(count):
            current = (index + attempt) % count
            if current in self._bad:
                continue
            try:
                hr, lr = self._load(current)
                return self._make_item(current, hr, lr, sample_seed)
            except (UnreadableImageError, OSError) as error:
                self._bad.add(current)
                logger.warning(
                    "%s: skipping '%s' (substituting the next image): %s",
                    self.name,
                    self._samples[current].name,
                    error,
                )
        raise DataError(f"no image in '{self.hr_root}' could be decoded")

    def __getstate__(self) -> dict[str, Any]:
        # The decoded-image cache can be large; each worker process builds its own.
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __repr__(self) -> str:
        mode = f"lr_root='{self.lr_root}'" if self.lr_root else "LR on the fly"
        return (
            f"SRDataset('{self.hr_root}', {mode}, scale={self.scale}, "
            f"patch_size={self.patch_size}, {len(self)} images)"
        )

    # ---------------------------------------------------------------- loading

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Decoded (HR mod-cropped to scale x LR size, LR or None), float32 HWC RGB."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        sample = self._samples[index]
        lr_width, lr_height = sample.lr_size
        hr = read_rgb(sample.hr_path)
        lr = None if sample.lr_path is None else read_rgb(sample.lr_path)
        need_height, need_width = lr_height * self.scale, lr_width * self.scale
        if hr.shape[0] < need_height or hr.shape[1] < need_width:
            raise UnreadableImageError(sample.hr_path, "decoded size differs from its header")
        if lr is not None and lr.shape[:2] != (lr_height, lr_width):
            raise UnreadableImageError(sample.lr_path, "decoded size differs from its header")
        hr = np.ascontiguousarray(hr[:need_height, :need_width])
        if self.cache_images:
            self._cache[index] = (hr, lr)
        return hr, lr

    def _make_item(
        self, index: int, hr: np.ndarray, lr: np.ndarray | None, sample_seed: int | None
    ) -> dict[str, Any]:
        scale = self.scale
        lr_height, lr_width = hr.shape[0] // scale, hr.shape[1] // scale
        rng = None if sample_seed is None else np.random.default_rng(sample_seed)

        # Crop, in LR pixels, aligned so that HR = LR region x scale exactly.
        if self.patch_size is None:
            top, left, patch_height, patch_width = 0, 0, lr_height, lr_width
        else:
            patch_height = patch_width = self.patch_size // scale
            if rng is None:
                top, left = (lr_height - patch_height) // 2, (lr_width - patch_width) // 2
            else:
                top = int(rng.integers(0, lr_height - patch_height + 1))
                left = int(rng.integers(0, lr_width - patch_width + 1))
        hr_patch = hr[
            top * scale : (top + patch_height) * scale, left * scale : (left + patch_width) * scale
        ]
        if lr is not None:
            lr_patch = lr[top : top + patch_height, left : left + patch_width]
        elif self.degradation is not None:
            lr_patch = hr_patch[::scale, ::scale]  # replaced below; flipped along with HR
        else:
            lr_patch = self._downscale_region(hr, top, left, patch_height, patch_width)

        turns = None
        if rng is not None:
            # Always draw all three so the stream of draws does not depend on the options.
            horizontal, vertical, quarter_turns = turns = (
                bool(rng.integers(2)),
                bool(rng.integers(2)),
                int(rng.integers(4)),
            )
            if self.flips:
                if horizontal:
                    hr_patch, lr_patch = hr_patch[:, ::-1], lr_patch[:, ::-1]
                if vertical and not self.rotations:
                    # With rotations, a vertical flip is a horizontal flip plus a half turn,
                    # so it would only make some orientations more likely than others.
                    hr_patch, lr_patch = hr_patch[::-1], lr_patch[::-1]
            if self.rotations and quarter_turns:
                hr_patch = np.rot90(hr_patch, quarter_turns)
                lr_patch = np.rot90(lr_patch, quarter_turns)
        if self.degradation is not None:
            item = self._degraded_item(index, hr_patch, sample_seed)
        else:
            item = {
                "lr": _to_tensor(lr_patch),
                "hr": _to_tensor(hr_patch),
                "name": self._samples[index].name,
            }
        if self.reference_size:
            from srkit.data.reference import patch_reference

            # The whole LR image, or (LR made on the fly) the whole HR image, with the box in
            # its pixels: the reference only needs the box's place, not its resolution.
            source, factor = (lr, 1) if lr is not None else (hr, scale)
            box = (top * factor, left * factor, patch_height * factor, patch_width * factor)
            item.update(
                patch_reference(
                    _to_tensor(source), box, self.reference_size, turns, self.flips, self.rotations
                )
            )
        return item

    def _degraded_item(
        self, index: int, hr_patch: np.ndarray, sample_seed: int | None
    ) -> dict[str, Any]:
        """``hr`` = the pipeline's target of the patch, ``lr`` = its degradation."""
        seed = derive_seed(_DEGRADE_TAG, index if sample_seed is None else sample_seed)
        hr = self.degradation.target(_to_tensor(hr_patch)[None])
        lr = self.degradation(hr, np.random.default_rng(seed))
        return {"lr": lr[0], "hr": hr[0], "name": self._samples[index].name}

    def _downscale_region(
        self, hr: np.ndarray, top: int, left: int, height: int, width: int
    ) -> np.ndarray:
        """LR of an HR region, equal to the same region of the whole-image LR (see module)."""
        scale = self.scale
        lr_height, lr_width = hr.shape[0] // scale, hr.shape[1] // scale
        row_start, row_end = max(0, top - LR_MARGIN), min(lr_height, top + height + LR_MARGIN)
        col_start, col_end = max(0, left - LR_MARGIN), min(lr_width, left + width + LR_MARGIN)
        region = hr[row_start * scale : row_end * scale, col_start * scale : col_end * scale]
        lr = imresize(region, scale=1.0 / scale)
        lr = lr[
            top - row_start : top - row_start + height, left - col_start : left - col_start + width
        ]
        lr = np.clip(lr, 0.0, 1.0)
        if self.quantize_lr:
            lr = np.round(lr * 255.0) / 255.0
        return lr.astype(np.float32, copy=False)


class _ImageFolder:
    """The usable images of one folder: headers checked at start-up, bad files skipped.

    Plain data only (spawn-safe); the optional decoded-image cache is dropped when pickled.
    """

    def __init__(self, root: str, min_size: int, label: str, cache_images: bool) -> None:
        self.root = root
        self.label = label
        self.cache_images = cache_images
        self.skipped: list[tuple[str, str]] = []
        self.paths: list[str] = []
        self.names: list[str] = []
        files = find_images(root)
        for path in files:
            try:
                width, height = quick_check(path)
            except UnreadableImageError as error:
                self._skip(path, error.reason)
                continue
            if min(width, height) < min_size:
                self._skip(
                    path, f"too small ({width}x{height}; need at least {min_size}x{min_size})"
                )
                continue
            self.paths.append(str(path))
            self.names.append(path.relative_to(root).as_posix())
        if not self.paths:
            detail = (
                f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found"
                if not files
                else f"{len(self.skipped)} files skipped: "
                + "; ".join(f"'{path}': {reason}" for path, reason in self.skipped[:3])
            )
            raise DataError(f"no usable images in '{root}' ({detail})")
        self._cache: dict[int, np.ndarray] = {}
        self._bad: set[int] = set()

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        logger.warning("%s: skipping '%s': %s", self.label, path, reason)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[int, np.ndarray]:
        """(index actually used, HWC float32 image); an undecodable file is replaced by the
        next one (deterministically: the replacement depends only on which files are bad)."""
        count = len(self.paths)
        for attempt in range(count):
            current = (index + attempt) % count
            if current in self._bad:
                continue
            cached = self._cache.get(current)
            if cached is not None:
                return current, cached
            try:
                image = read_rgb(self.paths[current])
            except (UnreadableImageError, OSError) as error:
                self._bad.add(current)
                logger.warning(
                    "%s: skipping '%s' (substituting the next image): %s",
                    self.label,
                    self.names[current],
                    error,
                )
                continue
            if self.cache_images:
                self._cache[current] = image
            return current, image
        raise DataError(f"no image in '{self.root}' could be decoded")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


def _crop_and_augment(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator | None,
    flips: bool,
    rotations: bool,
) -> tuple[np.ndarray, tuple[int, int, int, int], Any]:
    """A square ``size`` patch of one image, random with ``rng`` (else centred), with random
    flips/rotations (with ``rng``); draws the same number of values whatever the options.
    Returns (patch, its (top, left, size, size) box, the drawn (horizontal, vertical,
    quarter_turns) or None)."""
    height, width = image.shape[:2]
    if rng is None:
        top, left = (height - size) // 2, (width - size) // 2
    else:
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
    patch = image[top : top + size, left : left + size]
    turns = None
    if rng is not None:
        horizontal, vertical, quarter_turns = turns = (
            bool(rng.integers(2)),
            bool(rng.integers(2)),
            int(rng.integers(4)),
        )
        if flips:
            if horizontal:
                patch = patch[:, ::-1]
            if vertical and not rotations:
                patch = patch[::-1]
        if rotations and quarter_turns:
            patch = np.rot90(patch, quarter_turns)
    return patch, (top, left, size, size), turns


class UnpairedDataset(Dataset):
    """LR and HR images without correspondence, for disjoint (unpaired) training.

    Items are ``{"lr": (3, p/scale, p/scale), "hr": (3, p, p), "name": str}`` (``p`` =
    ``patch_size``; ``name`` is the LR image's) with LR and HR patches from *unrelated* images:
    the HR patch exists only for discriminators. The dataset's length is the number of LR
    images, so an epoch of the sampler visits every LR image once; the HR image of an
    ``(index, sample_seed)`` item is drawn uniformly from the sample seed, as are both crops
    and their (independent) flips and rotations. Items are therefore a pure function of
    ``(index, sample_seed)`` like :class:`SRDataset`'s. A plain ``int`` index gives centred
    crops (HR image ``index mod`` the HR count) without augmentation.

    Args:
        hr_root: folder of high-resolution images (any count, any content).
        lr_root: folder of low-resolution images (any count, any content).
        scale: upscaling factor (HR patch side / LR patch side).
        patch_size: side of the square HR patch (a multiple of ``scale``).
        flips: random horizontal and vertical flips.
        rotations: random 90° rotations.
        cache_images: keep decoded images in memory (per process, not pickled).
        reference_size: also give each item the whole-LR-image reference of its LR patch at
            this size (``ref``, ``ref_center``, see :mod:`srkit.data.reference`).

    Raises:
        DataError: a missing folder, a folder without a usable image, or ``patch_size`` not a
            multiple of ``scale``.
    """

    def __init__(
        self,
        hr_root: str | os.PathLike[str],
        lr_root: str | os.PathLike[str],
        scale: int = 4,
        patch_size: int = 128,
        flips: bool = True,
        rotations: bool = True,
        cache_images: bool = False,
        reference_size: int | None = None,
    ) -> None:
        if patch_size < 1 or patch_size % scale:
            raise DataError(f"patch_size {patch_size} is not a positive multiple of scale {scale}")
        self.reference_size = reference_size
        self.scale = int(scale)
        self.patch_size = patch_size
        self.flips = flips
        self.rotations = rotations
        self.lr_images = _ImageFolder(
            str(lr_root), patch_size // scale, Path(lr_root).name or str(lr_root), cache_images
        )
        self.hr_images = _ImageFolder(
            str(hr_root), patch_size, Path(hr_root).name or str(hr_root), cache_images
        )
        self.skipped = self.lr_images.skipped + self.hr_images.skipped
        logger.info(
            "unpaired data: %d LR images in '%s', %d HR images in '%s'%s",
            len(self.lr_images),
            lr_root,
            len(self.hr_images),
            hr_root,
            f" ({len(self.skipped)} skipped)" if self.skipped else "",
        )

    def __len__(self) -> int:
        return len(self.lr_images)

    @property
    def names(self) -> list[str]:
        """Relative LR paths, in index order."""
        return list(self.lr_images.names)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(item, tuple | list):
            index, sample_seed = int(item[0]), int(item[1])
        else:
            index, sample_seed = int(item), None
        count = len(self.lr_images)
        if not -count <= index < count:
            raise IndexError(f"index {index} out of range for {count} samples")
        index %= count
        rng = None if sample_seed is None else np.random.default_rng(sample_seed)
        hr_index = index if rng is None else int(rng.integers(len(self.hr_images)))
        lr_index, lr = self.lr_images.load(index)
        _, hr = self.hr_images.load(hr_index % len(self.hr_images))
        size = self.patch_size
        lr_patch, box, turns = _crop_and_augment(
            lr, size // self.scale, rng, self.flips, self.rotations
        )
        hr_patch, _, _ = _crop_and_augment(hr, size, rng, self.flips, self.rotations)
        item = {
            "lr": _to_tensor(lr_patch),
            "hr": _to_tensor(hr_patch),
            "name": self.lr_images.names[lr_index],
        }
        if self.reference_size:
            from srkit.data.reference import patch_reference

            item.update(
                patch_reference(
                    _to_tensor(lr), box, self.reference_size, turns, self.flips, self.rotations
                )
            )
        return item

    def __repr__(self) -> str:
        return (
            f"UnpairedDataset(lr='{self.lr_images.root}' ({len(self.lr_images)}), "
            f"hr='{self.hr_images.root}' ({len(self.hr_images)}), scale={self.scale}, "
            f"patch_size={self.patch_size})"
        )


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) array (possibly a flipped/rotated view) -> contiguous (3, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
