"""Video upscaling: a video file in, a video file out (``srkit upscale`` and ``srkit.upscale_video``).

Reading and writing go through PyAV, FFmpeg's libraries in a wheel (no system ffmpeg needed),
installed with the optional extra: ``pip install 'srkit[video]'``. Without it, naming a video
is a one-line user error that says so.

What the output keeps from the input:

* every frame, each with its own timestamp (pts, in the input's time base): frame count, frame
  rate and uneven frame timing are the input's;
* the rotation (the display matrix of the video stream), so a phone clip still shows upright;
* the colour interpretation: frames are converted to RGB with the input's matrix and range
  (BT.601 / BT.709, limited / full) and converted back with the same, and the output carries
  the input's colour tags;
* every audio stream, copied packet for packet (not re-encoded).

Other streams (subtitles, data, attachments) are dropped with a warning. The picture is decoded
to 8-bit RGB, upscaled ``batch`` frames at a time through the same code as still images
(:func:`srkit.infer.api.upscale_tensor`: tiles when a frame does not fit in memory) and encoded
as yuv420p with H.264 (libx264; H.265 or VP9 on request, VP9 for ``.webm``) at a constant
quality (``crf``). The container is the input's (its file extension).

Writing is atomic: the video is written under a hidden temporary name beside the target
(``.NAME.XXXX.tmp.EXT``) and renamed when complete. A failed or interrupted job (an exception,
Ctrl-C; SIGTERM in ``srkit upscale``) deletes the temporary file, so there is never a
half-written file under the final name; only a hard kill can leave the hidden temporary file
behind. Jobs do not resume: run them again.

Importing this module is cheap (no torch, no PyAV).
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from srkit.errors import SrkitError

log = logging.getLogger("srkit.infer")

#: File extensions (lower case, with the dot) that srkit treats as videos.
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})

#: ``codec`` option -> FFmpeg encoder.
CODECS: dict[str, str] = {"h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9"}

#: Constant-quality setting per codec when none is given: visually lossless for most content.
DEFAULT_CRF: dict[str, int] = {"h264": 18, "h265": 20, "vp9": 24}

#: Largest ``crf`` each codec accepts (0 is the best quality; 0 is lossless for H.264/H.265).
MAX_CRF: dict[str, int] = {"h264": 51, "h265": 51, "vp9": 63}

#: Codecs a container can hold, where not every codec fits.
CONTAINER_CODECS: dict[str, frozenset[str]] = {".webm": frozenset({"vp9"})}

#: Frames per network call.
DEFAULT_BATCH = 4

#: The pixel format written: 8-bit 4:2:0, which every player decodes.
OUTPUT_PIXEL_FORMAT = "yuv420p"

# FFmpeg demuxers that read still images; a picture renamed to .mp4 is not a video.
_IMAGE_DEMUXERS = ("image2", "_pipe")

# FFmpeg's "unspecified" colour tag values (AVCOL_SPC_UNSPECIFIED etc., AVCOL_RANGE_UNSPECIFIED).
_UNSPECIFIED = 2
_RANGE_UNSPECIFIED = 0


class VideoError(SrkitError):
    """A video that cannot be read, or written as asked."""


def is_video_file(path: str | Path) -> bool:
    """True if the file name has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def require_av(what: str) -> Any:
    """The ``av`` module (PyAV), or a :class:`VideoError` naming the extra that provides it."""
    try:
        import av
    except ImportError:
        raise VideoError(
            f"{what} needs PyAV, which srkit's optional video extra installs: "
            "pip install 'srkit[video]'"
        ) from None
    return av


def default_codec(target: str | Path) -> str:
    """The codec written when none is asked for: VP9 for ``.webm``, else H.264."""
    return "vp9" if Path(target).suffix.lower() == ".webm" else "h264"


def check_codec(target: str | Path, codec: str | None, crf: int | None) -> tuple[str, int]:
    """(codec, crf) with the defaults filled in; VideoError for a combination that cannot work."""
    codec = codec or default_codec(target)
    if codec not in CODECS:
        raise VideoError(f"unknown video codec '{codec}'; use one of {', '.join(CODECS)}")
    suffix = Path(target).suffix.lower()
    allowed = CONTAINER_CODECS.get(suffix)
    if allowed is not None and codec not in allowed:
        raise VideoError(
            f"a {suffix} file cannot hold {codec} video ('{target}'); "
            f"use --codec {' or '.join(sorted(allowed))}"
        )
    crf = DEFAULT_CRF[codec] if crf is None else int(crf)
    if not 0 <= crf <= MAX_CRF[codec]:
        raise VideoError(f"--crf {crf} is out of range for {codec} (0-{MAX_CRF[codec]})")
    return codec, crf


# --------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What srkit needs to know about a video before upscaling it."""

    path: Path
    width: int
    height: int
    #: Frame count the container states (None when it does not say, as Matroska often).
    frames: int | None
    #: Average frame rate (frames per second), None when unknown.
    rate: Fraction | None
    #: Duration of the video stream in seconds, None when unknown.
    duration: float | None
    audio_streams: int
    #: The video stream's display matrix (9 int32 values), None when there is none.
    display_matrix: tuple[int, ...] | None = None
    #: Rotation in degrees (counter-clockwise) that the display matrix applies; 0 without one.
    rotation: int = 0
    #: FFmpeg colour tags of the first frame: colorspace, color_range, primaries, transfer.
    colour: dict[str, int] = field(default_factory=dict)

    @property
    def expected_frames(self) -> int | None:
        """The frame count, or an estimate from duration x rate when the container has none."""
        if self.frames:
            return self.frames
        if self.duration and self.rate:
            return max(1, round(self.duration * float(self.rate)))
        return None


def _ffmpeg_errors(av: Any) -> tuple[type[BaseException], ...]:
    return (av.error.FFmpegError, OSError, ValueError)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    text = text[0] if text else type(error).__name__
    # PyAV appends "[Errno N] ...: 'path'"; the path is already in srkit's message.
    return text.split(": '")[0].removeprefix("[Errno 1094995529] ")


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path``, check that it is a video srkit can read, and describe it.

    Decodes the first frame (which carries the rotation and colour tags).

    Raises:
        VideoError: PyAV is missing, the file does not exist, is not a video (text, a still
            image renamed, no video stream) or its first frame cannot be decoded.
    """
    path = Path(path)
    av = require_av(f"video '{path}'")
    if not path.exists():
        raise VideoError(f"video '{path}' does not exist")
    if not path.is_file():
        raise VideoError(f"video '{path}' is not a file")
    try:
        with av.open(str(path)) as container:
            fmt = container.format.name
            if fmt == _IMAGE_DEMUXERS[0] or fmt.endswith(_IMAGE_DEMUXERS[1]):
                raise VideoError(
                    f"'{path}' is a still image ({fmt.removesuffix('_pipe')}), not a video; "
                    "give it an image extension to upscale it as an image"
                )
            if not container.streams.video:
                raise VideoError(f"'{path}' has no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise VideoError(f"'{path}' has no video frame that can be decoded")
            time_base = stream.time_base
            duration = None
            if stream.duration is not None and time_base is not None:
                duration = float(stream.duration * time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            return VideoInfo(
                path=path,
                width=first.width,
                height=first.height,
                frames=int(stream.frames) or None,
                rate=stream.average_rate or stream.guessed_rate,
                duration=duration,
                audio_streams=len(container.streams.audio),
                display_matrix=_display_matrix(first),
                rotation=int(getattr(first, "rotation", 0) or 0),
                colour={
                    "colorspace": int(first.colorspace),
                    "color_range": int(first.color_range),
                    "color_primaries": int(first.color_primaries),
                    "color_trc": int(first.color_trc),
                },
            )
    except VideoError:
        raise
    except _ffmpeg_errors(av) as error:
        raise VideoError(
            f"'{path}' is not a video file srkit can read ({_reason(error)})"
        ) from None


def _display_matrix(frame: Any) -> tuple[int, ...] | None:
    """The frame's display matrix side data as 9 int32 values (FFmpeg's layout), or None."""
    from av.sidedata.sidedata import Type

    data = frame.side_data.get(Type.DISPLAYMATRIX)
    if data is None:
        return None
    raw = bytes(data)
    if len(raw) != 36:
        return None
    return struct.unpack("<9i", raw)


# --------------------------------------------------------------------------------------------
# Upscaling
# --------------------------------------------------------------------------------------------


@dataclass
class VideoResult:
    """What :func:`upscale_video` did, with where the time went."""

    source: Path
    target: Path
    frames: int = 0
    audio_streams: int = 0
    seconds: float = 0.0
    #: Reading packets, decoding frames and converting them to RGB.
    decode_seconds: float = 0.0
    #: The network (and the tensor conversions around it).
    network_seconds: float = 0.0
    #: Converting back to YUV, encoding, writing video and audio packets, closing the file.
    encode_seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def shares(self) -> dict[str, float]:
        """Fraction of the wall time in decoding, the network and encoding."""
        total = max(self.seconds, 1e-9)
        return {
            "decode": self.decode_seconds / total,
            "network": self.network_seconds / total,
            "encode": self.encode_seconds / total,
        }

    def summary(self) -> str:
        shares = self.shares()
        return (
            f"{self.frames} frames in {self.seconds:.1f} s ({self.frames_per_second:.2f} frames/s; "
            f"decoding {shares['decode']:.0%}, network {shares['network']:.0%}, "
            f"encoding {shares['encode']:.0%})"
        )


def frame_tile(
    model: Any,
    height: int,
    width: int,
    batch: int,
    tile: int | str | None,
    overlap: int,
    precision: str,
) -> tuple[int, int, int]:
    """(tile, overlap, batch) for frames of ``height`` x ``width``.

    ``tile="auto"`` keeps whole frames and the requested batch when the batch fits in memory
    (the same budget as ``--tile auto`` for an image ``batch`` times as tall), lowers the batch
    until it fits, and tiles single frames only when one frame alone does not fit.
    """
    if tile != "auto":
        return int(tile or 0), overlap, batch
    from srkit.infer.api import element_bytes, model_device
    from srkit.infer.tiling import auto_tile

    device = model_device(model)
    size = element_bytes(precision)
    while batch > 1 and auto_tile(model, height * batch, width, device, size) != 0:
        batch //= 2
    side = auto_tile(model, height, width, device, size)
    if side:
        return side, min(overlap, (side - 1) // 2), 1
    return 0, overlap, batch


def _clock(result: VideoResult) -> Callable[[str], contextlib.AbstractContextManager[None]]:
    """``with clock("decode"): ...`` adds the block's wall time to ``result.decode_seconds``."""

    @contextlib.contextmanager
    def clock(part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            name = f"{part}_seconds"
            setattr(result, name, getattr(result, name) + time.perf_counter() - started)

    return clock


def upscale_video(
    model: Any,
    source: str | Path,
    target: str | Path,
    *,
    tile: int | str | None = "auto",
    overlap: int = 16,
    precision: str = "fp32",
    batch: int = DEFAULT_BATCH,
    codec: str | None = None,
    crf: int | None = None,
    on_frame: Callable[[int, int | None], None] | None = None,
) -> VideoResult:
    """Upscale the video ``source`` with ``model`` into ``target`` (replaced if it exists).

    Args:
        model: a generator (see :func:`srkit.load_model`; its device is used) or a path to one
            (loaded on the GPU when there is one).
        source: the input video file.
        target: the output file; its extension picks the container (e.g. ``.mp4``).
        tile: ``"auto"`` (whole frames and batches that fit in memory), a tile side in input
            pixels, or 0/None for whole frames.
        overlap: input pixels shared by neighbouring tiles.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only) or ``"auto"`` (bf16 where
            the device runs it natively, else fp32).
        batch: frames per network call (``"auto"`` tiling may lower it to fit memory).
        codec: ``"h264"`` (default), ``"h265"`` or ``"vp9"`` (default for ``.webm``).
        crf: constant-quality setting, lower is better (default :data:`DEFAULT_CRF`).
        on_frame: called as ``on_frame(frames_done, expected_total_or_None)`` after each batch.

    Returns:
        A :class:`VideoResult` with the frame count and the time spent decoding, in the network
        and encoding.

    Raises:
        VideoError: PyAV missing, ``source`` not a readable video, a codec the container cannot
            hold, a crf out of range; or a failure while transcoding (the target is then left as
            it was).
    """
    from srkit.fsutil import atomic_write

    source, target = Path(source), Path(target)
    if batch < 1:
        raise VideoError(f"batch must be at least 1, got {batch}")
    codec, crf = check_codec(target, codec, crf)
    info = probe_video(source)
    if source.resolve() == target.resolve():
        raise VideoError(f"'{source}' would be overwritten by its own upscaled version")
    if not hasattr(model, "forward"):
        import torch

        from srkit.infer.api import load_model

        model = load_model(model, device="cuda" if torch.cuda.is_available() else "cpu")
    from srkit.infer.api import check_precision, model_device, resolve_precision

    precision = resolve_precision(precision, model_device(model))
    check_precision(precision, model_device(model))
    result = VideoResult(source=source, target=target, audio_streams=info.audio_streams)
    started = time.perf_counter()
    av = require_av(f"video '{source}'")

    def write(temporary: Path) -> None:
        _transcode(
            av,
            model,
            info,
            temporary,
            result,
            tile,
            overlap,
            precision,
            batch,
            codec,
            crf,
            on_frame,
        )

    try:
        atomic_write(target, write, suffix=".tmp" + target.suffix)
    except _ffmpeg_errors(av) as error:
        raise VideoError(f"'{source}': {_reason(error)}") from None
    result.seconds = time.perf_counter() - started
    return result


def _transcode(
    av: Any,
    model: Any,
    info: VideoInfo,
    temporary: Path,
    result: VideoResult,
    tile: int | str | None,
    overlap: int,
    precision: str,
    batch: int,
    codec: str,
    crf: int,
    on_frame: Callable[[int, int | None], None] | None,
) -> None:
    """Decode ``info.path``, upscale the frames, encode them into ``temporary``; copy audio."""
    import numpy as np
    import torch

    from srkit.infer.api import upscale_tensor

    clock = _clock(result)
    scale = int(model.scale)
    tile, overlap, batch = frame_tile(
        model, info.height, info.width, batch, tile, overlap, precision
    )
    expected = info.expected_frames
    with contextlib.ExitStack() as stack:
        with clock("decode"):
            container = stack.enter_context(av.open(str(info.path)))
        with clock("encode"):
            output = stack.enter_context(av.open(str(temporary), "w"))
        video_in = container.streams.video[0]
        video_in.thread_type = "AUTO"  # frame-parallel decoding
        audio_in = list(container.streams.audio)
        dropped = [s for s in container.streams if s is not video_in and s.type != "audio"]
        if dropped:
            kinds = ", ".join(f"#{s.index} {s.type}" for s in dropped)
            log.warning(
                "'%s': streams %s are not copied (only video and audio are)", info.path, kinds
            )

        time_base = video_in.time_base
        rate = info.rate or Fraction(25)
        video_out = output.add_stream(CODECS[codec], rate=rate)
        video_out.width = info.width * scale
        video_out.height = info.height * scale
        video_out.pix_fmt = OUTPUT_PIXEL_FORMAT
        # Keep the input's time base so every frame keeps its exact timestamp.
        video_out.time_base = time_base
        video_out.codec_context.time_base = time_base
        options = {"crf": str(crf)}
        if codec == "vp9":
            options["b"] = "0"  # constant quality, not a bit-rate target
        elif codec == "h265":
            options["x265-params"] = "log-level=error"  # x265 prints its own statistics
        video_out.options = options
        colour = {
            k: v for k, v in info.colour.items() if v not in (_UNSPECIFIED, _RANGE_UNSPECIFIED)
        }
        for key, value in colour.items():
            setattr(video_out.codec_context, key, value)
        if info.display_matrix is not None:
            video_out.set_display_matrix(list(info.display_matrix))
        audio_out = {s.index: output.add_stream_from_template(s) for s in audio_in}
        reformat = {"format": OUTPUT_PIXEL_FORMAT}
        if "colorspace" in colour:
            reformat["dst_colorspace"] = colour["colorspace"]
        if "color_range" in colour:
            reformat["dst_color_range"] = colour["color_range"]

        pending: list[Any] = []
        frame_step = max(1, round(1 / (rate * time_base))) if time_base else 1
        last_pts: int | None = None

        def encode(frames: list[Any]) -> None:
            nonlocal last_pts
            with clock("decode"):
                pixels = np.stack([f.to_ndarray(format="rgb24") for f in frames])
            with clock("network"):
                lr = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
                sr, _ = upscale_tensor(model, lr, tile=tile, overlap=overlap, precision=precision)
                sr_pixels = sr.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            with clock("encode"):
                for frame, upscaled in zip(frames, sr_pixels, strict=True):
                    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(upscaled), format="rgb24")
                    out = out.reformat(**reformat)
                    pts = frame.pts
                    if pts is None:  # some containers (AVI) leave timestamps out
                        pts = 0 if last_pts is None else last_pts + frame_step
                    last_pts = pts
                    out.pts = pts
                    out.time_base = time_base
                    output.mux(video_out.encode(out))
            result.frames += len(frames)
            if on_frame is not None:
                on_frame(result.frames, expected)

        packets = container.demux(video_in, *audio_in)
        while True:
            with clock("decode"):
                packet = next(packets, None)
                if packet is None:
                    break
                is_video = packet.stream.index == video_in.index
                decoded = packet.decode() if is_video else []
            if not is_video:
                if packet.dts is not None:  # the flush packet at the end has none
                    with clock("encode"):
                        packet.stream = audio_out[packet.stream.index]
                        output.mux(packet)
                continue
            for frame in decoded:
                pending.append(frame)
                if len(pending) >= batch:
                    encode(pending)
                    pending = []
        if pending:
            encode(pending)
        with clock("encode"):
            output.mux(video_out.encode(None))
            output.close()  # writes the trailer (an MP4's index)
    if result.frames == 0:
        raise VideoError(f"'{info.path}': no video frame could be decoded")
