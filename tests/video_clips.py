"""Synthetic test clips made with PyAV (the binding srkit reads videos with): moving shapes on a
smooth background and a sine tone, with known frame count, rate, timestamps and rotation.

Used by tests/test_video.py and benchmarks/video.py. Needs ``av`` (``pip install 'srkit[video]'``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Clip:
    path: Path
    width: int
    height: int
    frames: int
    rate: Fraction
    audio_rate: int | None
    audio_samples: int


def clip_frame(index: int, width: int, height: int, frames: int) -> np.ndarray:
    """Frame ``index`` (uint8 HWC RGB): a gradient background, a square moving right, a disc
    moving down and a thin stripe pattern (detail that an upscaler has to keep)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    progress = index / max(frames - 1, 1)
    image = np.stack(
        [
            0.25 + 0.5 * x / width,
            0.3 + 0.4 * y / height,
            0.55 + 0.2 * np.sin(2 * math.pi * (x + y) / (width + height) + progress * 2),
        ],
        axis=-1,
    )
    side = max(4, height // 4)
    left = int(progress * (width - side))
    image[height // 6 : height // 6 + side, left : left + side] = (0.95, 0.2, 0.15)
    centre_x, centre_y = width * 0.7, height * (0.2 + 0.6 * progress)
    disc = (x - centre_x) ** 2 + (y - centre_y) ** 2 <= (height / 7) ** 2
    image[disc] = (0.1, 0.2, 0.85)
    stripes = (x.astype(int) // 2) % 2 == 0
    band = (y > height * 0.8) & stripes
    image[band] = image[band] * 0.4
    return (image.clip(0, 1) * 255).round().astype(np.uint8)


def make_clip(
    path: Path,
    width: int = 64,
    height: int = 48,
    rate: int = 25,
    seconds: float = 2.0,
    audio_rate: int | None = 44100,
    rotation: int = 0,
    codec: str = "libx264",
    skip: frozenset[int] = frozenset(),
) -> Clip:
    """Write the clip to ``path`` (container from the extension) and describe it.

    The video is ``seconds * rate`` frames of :func:`clip_frame` encoded nearly losslessly
    (crf 1); the audio (unless ``audio_rate`` is None) a 440 Hz sine of the same duration,
    AAC-encoded (Opus for .webm); ``rotation`` sets the stream's display matrix. Frames whose
    index is in ``skip`` are left out, leaving gaps in the timestamps (uneven frame timing).
    """
    import av

    frames = round(seconds * rate)
    samples = round(seconds * audio_rate) if audio_rate else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as output:
        video = output.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "1"} if codec in ("libx264", "libx265") else {}
        if rotation:
            video.set_display_rotation(rotation)
        audio = None
        if audio_rate:
            audio_codec = "libopus" if path.suffix == ".webm" else "aac"
            audio = output.add_stream(
                audio_codec, rate=48000 if audio_codec == "libopus" else audio_rate
            )
            audio.layout = "mono"
        for index in range(frames):
            if index in skip:
                continue
            frame = av.VideoFrame.from_ndarray(clip_frame(index, width, height, frames), "rgb24")
            frame.pts = index
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        if audio is not None:
            sample_rate = audio.rate
            total = round(seconds * sample_rate)
            tone = 0.3 * np.sin(2 * math.pi * 440 * np.arange(total) / sample_rate)
            step = 960 if audio.codec_context.name == "libopus" else 1024
            for start in range(0, total, step):
                chunk = tone[start : start + step].astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                output.mux(audio.encode(frame))
            output.mux(audio.encode(None))
            samples = total
    return Clip(path, width, height, frames - len(skip), Fraction(rate), audio_rate, samples)
