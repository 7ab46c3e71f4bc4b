"""``srkit upscale MODEL INPUT... -o OUT``: run a generator over images and videos.

Inputs are files, folders (searched recursively; the folder tree is kept under ``OUT``) and
glob patterns, which srkit expands itself (``**`` included) so a quoted pattern works the same
in every shell, Windows' included; a pattern keeps the tree below its first wildcard. Each image
is read at its bit depth with EXIF orientation applied, upscaled in blended tiles (see
:mod:`srkit.infer.tiling`) and written as ``OUT/<relative path>.<format>``:

* 16-bit PNG/TIFF in -> 16-bit out (PNG/TIFF formats), 8-bit otherwise;
* greyscale in -> greyscale out; alpha kept (upscaled separately, ``--alpha``); JPEG output
  drops alpha with a warning since JPEG has none;
* existing outputs are skipped unless ``--overwrite``;
* a file that cannot be read, upscaled or written is reported on one line naming it, and the
  rest continue.

Files with a video extension (:data:`srkit.infer.video.VIDEO_EXTENSIONS`) are videos: each is
upscaled frame by frame into ``OUT/<relative path>`` with the same container (see
:mod:`srkit.infer.video`: frames, timestamps, rotation and audio kept; ``--codec``, ``--crf``,
``--batch``), atomically, with a progress bar in frames/s. Every video is opened and checked
before any work, so a video that is not one, or a missing PyAV (the ``video`` extra), is a user
error.

Exit status: 0 when every input was upscaled or skipped, 1 when some failed, 2 for user errors
found before any work (unreadable model, missing input, output that is a file, bad options, a
video file that is not a video, PyAV missing for a video).

Importing this module is cheap (no torch), so ``srkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srkit.errors import CheckpointError, SrkitError
from srkit.infer.video import CODECS, DEFAULT_BATCH, is_video_file

log = logging.getLogger("srkit.infer")

#: Output formats: option value -> file extension.
FORMATS = {"png": ".png", "webp": ".webp", "jpg": ".jpg", "tif": ".tif"}
_SIXTEEN_BIT_FORMATS = {"png", "tif"}
_GLOB_CHARS = set("*?[")


class InputError(SrkitError):
    """An input path or pattern that names no image."""


def _auto_or_count(minimum: int, what: str) -> Callable[[str], int | str]:
    """An argparse type: ``auto`` or an integer >= ``minimum`` (``what`` names it in errors)."""

    def parse(value: str) -> int | str:
        if value.lower() == "auto":
            return "auto"
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected 'auto' or a number, got '{value}'"
            ) from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {number}")
        return number

    return parse


#: ``--tile``: ``auto`` or a non-negative integer (0 = whole image).
tile_argument = _auto_or_count(0, "tile")
#: ``--tile-batch``: ``auto`` or an integer >= 1.
tile_batch_argument = _auto_or_count(1, "tile batch")


def add_upscale_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``srkit upscale`` options."""
    parser.add_argument(
        "model", type=Path, help="weights file (.safetensors/.pth/.pt) or checkpoint folder"
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image or video files, folders (recursive) or glob patterns",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--tile",
        type=tile_argument,
        default="auto",
        help="tile side in input pixels; 'auto' (default) picks it from the free memory, 0 = whole image",
    )
    parser.add_argument(
        "--tile-batch",
        type=tile_batch_argument,
        default="auto",
        help="tiles per forward pass when tiling; 'auto' (default): on a GPU as many as fit "
        "in memory, up to 8; on the CPU one (batching measured no faster there)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=16,
        help="input pixels shared by neighbouring tiles (default 16)",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto (default): bf16 where the device runs it natively (GPUs of compute "
        "capability 8.0+, CPUs with AVX512-BF16/AMX), else fp32; see `srkit doctor`",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (pays off on many images)"
    )
    parser.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="png",
        help="output format of images (default png; videos keep their container)",
    )
    parser.add_argument(
        "--quality", type=int, help="JPEG/WebP quality 1-100 (WebP: lossless if unset)"
    )
    parser.add_argument(
        "--alpha",
        choices=["model", "bicubic"],
        default="model",
        help="how an alpha channel is upscaled: through the model (default) or bicubic",
    )
    parser.add_argument("--suffix", default="", help="appended to each output file name, e.g. _x4")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--attention-maps",
        type=Path,
        metavar="DIR",
        help="SRG2 models: also write switch attention pictures (argmax, max weight) here",
    )
    video = parser.add_argument_group("videos (needs the video extra: pip install 'srkit[video]')")
    video.add_argument(
        "--codec",
        choices=sorted(CODECS),
        help="video codec: h264 (default; libx264), h265 (libx265), vp9 (default for .webm)",
    )
    video.add_argument(
        "--crf",
        type=int,
        help="constant quality, lower is better: 0-51 for h264/h265 (default 18/20), "
        "0-63 for vp9 (default 24)",
    )
    video.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"frames per network call (default {DEFAULT_BATCH}; --tile auto lowers it to fit)",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="run on the CPU even if a GPU is present"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class Job:
    """One image or video to upscale: where it is and where its outputs go (relative to the
    roots)."""

    source: Path
    relative: Path

    @property
    def is_video(self) -> bool:
        return is_video_file(self.source)


def _has_glob(text: str) -> bool:
    return any(char in text for char in _GLOB_CHARS)


def _glob_base(pattern: str) -> Path:
    """The folder part of a pattern before its first wildcard component."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts[:-1]:
        if _has_glob(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def collect_inputs(inputs: list[str]) -> list[Job]:
    """Every image and video named by ``inputs``, with the relative path its output keeps.

    A file keeps its name; a folder's images keep their path below the folder; a glob's
    matches keep their path below the pattern's fixed leading folders. Files named twice are
    taken once.

    Raises:
        InputError: an input that does not exist, a pattern that matches nothing, or no image
            or video at all.
    """
    from srkit.data.datasets import find_images
    from srkit.data.io import IMAGE_EXTENSIONS, is_image_file
    from srkit.infer.video import VIDEO_EXTENSIONS

    media = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

    jobs: list[Job] = []
    seen: set[Path] = set()

    def add(source: Path, relative: Path) -> None:
        key = source.resolve()
        if key not in seen:
            seen.add(key)
            jobs.append(Job(source, relative))

    for text in inputs:
        item = Path(os.path.expanduser(text))
        if item.is_dir():
            for file in find_images(item, media):
                add(file, file.relative_to(item))
        elif item.is_file():
            add(item, Path(item.name))
        elif _has_glob(text):
            base = _glob_base(os.path.expanduser(text))
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            count = 0
            for match in map(Path, matches):
                if match.is_dir():
                    for file in find_images(match, media):
                        add(file, file.relative_to(base))
                        count += 1
                elif match.is_file() and (is_image_file(match) or is_video_file(match)):
                    add(match, match.relative_to(base))
                    count += 1
            if count == 0:
                raise InputError(f"pattern '{text}' matches no image or video files")
        else:
            raise InputError(f"input '{text}' does not exist")
    if not jobs:
        raise InputError(f"no image or video files found in {', '.join(repr(t) for t in inputs)}")
    return jobs


def output_path(root: Path, relative: Path, fmt: str, suffix: str = "") -> Path:
    """Where the upscaled ``relative`` image goes (a video keeps its own extension)."""
    extension = relative.suffix if is_video_file(relative) else FORMATS[fmt]
    return root / relative.parent / f"{relative.stem}{suffix}{extension}"


def _check_collisions(jobs: list[Job], targets: list[Path]) -> None:
    owners: dict[Path, Path] = {}
    for job, target in zip(jobs, targets, strict=True):
        if target in owners:
            raise InputError(
                f"inputs '{owners[target]}' and '{job.source}' would both be written to "
                f"'{target}'; upscale them in separate runs or use --suffix"
            )
        owners[target] = job.source


def upscale_command(args: argparse.Namespace) -> int:
    """Run ``srkit upscale``; returns the exit status (user errors raise SrkitError)."""
    output: Path = args.output
    if output.exists() and not output.is_dir():
        raise SrkitError(f"output '{output}' is a file, not a folder")
    if (
        args.attention_maps is not None
        and args.attention_maps.exists()
        and not args.attention_maps.is_dir()
    ):
        raise SrkitError(f"--attention-maps '{args.attention_maps}' is a file, not a folder")
    if args.quality is not None and not 1 <= args.quality <= 100:
        raise SrkitError(f"--quality must be 1-100, got {args.quality}")
    if args.overlap < 0:
        raise SrkitError(f"--overlap must be >= 0, got {args.overlap}")
    if args.batch < 1:
        raise SrkitError(f"--batch must be at least 1, got {args.batch}")
    jobs = collect_inputs(args.inputs)
    targets = [output_path(output, job.relative, args.format, args.suffix) for job in jobs]
    _check_collisions(jobs, targets)
    videos = _check_videos(args, jobs, targets)

    import torch

    from srkit.infer.api import check_precision, load_model, prepare_for_inference
    from srkit.infer.tiling import plan_tiles, tile_alignment

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    check_precision(args.precision, device)
    try:
        model = load_model(args.model, device=device)
    except CheckpointError as error:
        from srkit.data.io import is_image_file

        if is_image_file(args.model):  # the image and the model swapped on the command line
            raise CheckpointError(
                f"{error} (the model comes first: srkit upscale MODEL INPUT... -o OUTPUT)"
            ) from None
        raise
    model = prepare_for_inference(model, args.precision, compile=args.compile)
    if isinstance(args.tile, int) and args.tile > 0:
        plan_tiles(args.tile * 4, args.tile * 4, args.tile, args.overlap, tile_alignment(model))
    if args.attention_maps is not None and not _has_attention(model, device):
        arch = (getattr(model, "srkit_arch", None) or {}).get("type", type(model).__name__)
        raise SrkitError(
            f"--attention-maps: the {arch} model '{args.model}' has no attention outputs "
            "(only switched generators such as srg2 do)"
        )
    images = [index for index, job in enumerate(jobs) if not job.is_video]
    status = 0
    if images:
        status = _run_jobs(args, model, [jobs[i] for i in images], [targets[i] for i in images])
    if videos:
        status = max(status, _run_videos(args, model, videos))
    return status


def _check_videos(
    args: argparse.Namespace, jobs: list[Job], targets: list[Path]
) -> list[tuple[Job, Path, Any]]:
    """The video jobs with their :class:`~srkit.infer.video.VideoInfo`, each checked (PyAV present, a readable video, codec and crf possible)
    before any work; a problem is a user error."""
    from srkit.infer.video import check_codec, probe_video

    videos = []
    for job, target in zip(jobs, targets, strict=True):
        if not job.is_video:
            continue
        check_codec(target, args.codec, args.crf)
        info = probe_video(job.source)
        if job.source.resolve() == target.resolve():
            raise SrkitError(f"'{job.source}' would be overwritten by its upscaled version")
        videos.append((job, target, info))
    return videos


def _run_videos(args: argparse.Namespace, model: Any, videos: list[tuple[Job, Path, Any]]) -> int:
    """Upscale each video (atomically; SIGTERM and Ctrl-C remove the partial file)."""
    from tqdm import tqdm

    from srkit.infer.video import VideoError, upscale_video

    if args.attention_maps is not None:
        log.warning("--attention-maps: not written for videos")
    failed = done = skipped = 0
    for job, target, info in videos:
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        bar = tqdm(
            desc=job.relative.name,
            total=info.expected_frames,
            unit="frame",
            disable=True if args.quiet else None,  # None: only on a terminal
            file=sys.stderr,
            dynamic_ncols=True,
        )

        def progress(frames: int, total: int | None, bar: Any = bar) -> None:
            if total and bar.total != max(total, frames):
                bar.total = max(total, frames)
            bar.update(frames - bar.n)

        try:
            with bar, _sigterm_as_interrupt():
                result = upscale_video(
                    model,
                    job.source,
                    target,
                    tile=args.tile,
                    overlap=args.overlap,
                    precision=args.precision,
                    batch=args.batch,
                    codec=args.codec,
                    crf=args.crf,
                    on_frame=progress,
                )
        except (VideoError, OSError, RuntimeError, ValueError, MemoryError) as error:
            failed += 1
            message = _first_line(error)
            if str(job.source) not in message:
                message = f"'{job.source}': {message}"
            print(f"srkit: error: {message}", file=sys.stderr)
            continue
        done += 1
        if not args.quiet:
            print(f"srkit: {target}: {result.summary()}", file=sys.stderr)
    if skipped and not args.quiet:
        print(
            f"srkit: {skipped} video(s) skipped (already there; --overwrite replaces)",
            file=sys.stderr,
        )
    return 1 if failed else 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a video is written, SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so the
    partial file is removed before the process exits (with status 130)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _has_attention(model: Any, device: Any) -> bool:
    """Whether the model's output carries attention maps (one tiny forward pass)."""
    import torch

    from srkit.data.reference import whole_image_inputs
    from srkit.infer.api import model_channels, model_dtype
    from srkit.infer.tiling import split_output, tile_alignment

    side = max(8, tile_alignment(model))
    shape = (1, model_channels(model)[0], side, side)
    probe = torch.zeros(shape, device=device, dtype=model_dtype(model))
    with torch.no_grad():
        _, attention = split_output(model(probe, **whole_image_inputs(model, probe)))
    return bool(attention)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _run_jobs(args: argparse.Namespace, model: Any, jobs: list[Job], targets: list[Path]) -> int:
    import torch
    from tqdm import tqdm

    from srkit.data.io import read_image, write_image
    from srkit.infer.api import upscale_tensor

    failed = skipped = done = 0
    megapixels = 0.0
    started = time.perf_counter()
    warned_jpeg_alpha = False
    bar = tqdm(
        total=len(jobs),
        unit="img",
        disable=True if args.quiet else None,  # None: only on a terminal
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def report(message: str) -> None:
        tqdm.write(f"srkit: {message}", file=sys.stderr)

    with bar:
        for job, target in zip(jobs, targets, strict=True):
            if target.exists() and not args.overwrite:
                skipped += 1
                bar.update(1)
                continue
            try:
                image = read_image(job.source)
                pixels = torch.from_numpy(image.pixels.transpose(2, 0, 1).copy())[None]
                sr, attention = upscale_tensor(
                    model,
                    pixels,
                    tile=args.tile,
                    overlap=args.overlap,
                    precision=args.precision,
                    alpha=args.alpha,
                    attention=args.attention_maps is not None,
                    tile_batch=args.tile_batch,
                )
                result = sr[0]
                if result.shape[0] == 4 and args.format == "jpg":
                    result = result[:3]
                    if not warned_jpeg_alpha:
                        warned_jpeg_alpha = True
                        report(f"warning: JPEG has no alpha channel; alpha dropped ({job.source})")
                depth = image.bit_depth if args.format in _SIXTEEN_BIT_FORMATS else 8
                write_image(target, result, bit_depth=depth, quality=args.quality)
                if attention:
                    _write_attention(args.attention_maps, job.relative, attention)
            except (SrkitError, OSError, RuntimeError, ValueError, MemoryError) as error:
                failed += 1
                message = _first_line(error)
                if str(job.source) not in message:
                    message = f"'{job.source}': {message}"
                if "out of memory" in message.lower() or isinstance(error, MemoryError):
                    message += " (try a smaller --tile)"
                report(f"error: {message}")
                bar.update(1)
                continue
            done += 1
            megapixels += result.shape[-1] * result.shape[-2] / 1e6
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{megapixels / elapsed:.3f} MP/s", refresh=False)
            bar.update(1)
    elapsed = time.perf_counter() - started
    summary = (
        f"{done} upscaled, {skipped} skipped (already there; --overwrite replaces), {failed} failed"
    )
    if done:
        summary += f"; {megapixels:.2f} MP out in {elapsed:.1f} s ({megapixels / elapsed:.3f} MP/s)"
    if not args.quiet or failed:
        print(f"srkit: {summary}", file=sys.stderr)
    return 1 if failed else 0


def _write_attention(folder: Path, relative: Path, attention: list[Any]) -> None:
    """``DIR/<relative stem>_switch{i}_argmax.png`` and ``..._max_weight.png`` per switch."""
    from srkit.data.io import write_image
    from srkit.nets.attention import attention_pictures

    for index, maps in enumerate(attention):
        pictures = attention_pictures(maps[0])
        stem = folder / relative.parent / f"{relative.stem}_switch{index}"
        write_image(stem.with_name(stem.name + "_argmax.png"), pictures["argmax"])
        write_image(stem.with_name(stem.name + "_max_weight.png"), pictures["max_weight"])
