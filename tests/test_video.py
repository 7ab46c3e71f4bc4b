"""Video in ``srkit upscale`` and ``srkit.upscale_video``: frames, rate, timestamps, rotation and
audio kept; the first frame equals the still-image path; atomic writes; one-line user errors.

The clips are made by the test with PyAV (tests/video_clips.py): 2 seconds of moving shapes at
64x48, 25 frames/s, with a 440 Hz tone and a 90° display rotation.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import srkit
from srkit.cli import main
from srkit.data.io import read_rgb, write_image
from srkit.metrics.psnr_ssim import psnr
from srkit.nets import build_network
from srkit.weights import save_weights

try:
    import av
except ImportError:  # the missing-extra tests still run
    av = None

needs_av = pytest.mark.skipif(
    av is None, reason="PyAV is not installed (pip install 'srkit[video]')"
)


def image_like_rrdb(scale: int, seed: int = 0) -> torch.nn.Module:
    """A small RRDB whose output has an image's range (a fresh one outputs values near 0)."""
    torch.manual_seed(seed)
    model = build_network("rrdb", scale=scale, nf=8, nb=1, gc=4).eval()
    probe = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.conv_last.weight.mul_(0.2 / model(probe).std())
        model.conv_last.bias.add_(0.5 - model(probe).mean())
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for scale in (2, 4):
        paths[scale] = folder / f"rrdb_x{scale}.safetensors"
        save_weights(paths[scale], image_like_rrdb(scale))
    return paths


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    if av is None:
        pytest.skip("PyAV is not installed (pip install 'srkit[video]')")
    from video_clips import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", rotation=90)


def _stream_facts(path: Path) -> dict:
    """Frame timestamps (s), rate, rotation and size of the video; audio packets and duration."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = list(container.decode(video))
        facts = {
            "frame_times": [float(f.pts * video.time_base) for f in frames],
            "rate": video.average_rate,
            "rotation": frames[0].rotation,
            "size": (frames[0].width, frames[0].height),
            "first_frame": frames[0].to_ndarray(format="rgb24"),
            "audio_codec": audio.codec_context.name,
            "audio_frame_size": audio.codec_context.frame_size,
            "audio_rate": audio.rate,
        }
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        packets = [
            (float(p.pts * p.time_base), bytes(p))
            for p in container.demux(audio)
            if p.dts is not None
        ]
    facts["audio_packets"] = packets
    end = packets[-1][0] if packets else 0.0
    facts["audio_seconds"] = end + facts["audio_frame_size"] / facts["audio_rate"]
    return facts


def _no_temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*")) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# What the output keeps
# ---------------------------------------------------------------------------------------------


@needs_av
@pytest.mark.parametrize("scale", [2, 4])
def test_upscaled_video_keeps_frames_rate_timestamps_rotation_and_audio(
    clip, models, tmp_path, scale
):
    out = tmp_path / "out"
    argv = ["upscale", str(models[scale]), str(clip.path), "-o", str(out), "--crf", "8"]
    assert main([*argv, "--quiet"]) == 0
    source, result = _stream_facts(clip.path), _stream_facts(out / "clip.mp4")

    assert len(result["frame_times"]) == len(source["frame_times"]) == clip.frames == 50
    assert result["rate"] == source["rate"] == 25
    assert result["frame_times"] == pytest.approx(source["frame_times"], abs=1e-6)
    assert result["rotation"] == source["rotation"] == 90
    assert result["size"] == (clip.width * scale, clip.height * scale)

    # Audio is copied, not re-encoded: the same packets at the same times.
    assert result["audio_codec"] == source["audio_codec"] == "aac"
    assert result["audio_packets"] == source["audio_packets"]
    one_audio_frame = source["audio_frame_size"] / source["audio_rate"]
    assert abs(result["audio_seconds"] - source["audio_seconds"]) <= one_audio_frame
    assert abs(source["audio_seconds"] - 2.0) <= one_audio_frame

    # The first frame is what `srkit upscale` makes of that frame as a still image.
    still = tmp_path / "still"
    write_image(still / "frame0.png", source["first_frame"])
    assert main(["upscale", str(models[scale]), str(still / "frame0.png"), "-o", str(out)]) == 0
    expected = read_rgb(out / "frame0.png")
    got = result["first_frame"].astype(np.float32) / 255
    # PSNR-Y, the codec's measure: 4:2:0 halves the colour resolution, so RGB differs more.
    assert psnr(got, expected, crop_border=0) >= 40.0
    # ... and it is not what another model makes of the frame (the check has teeth).
    other = srkit.upscale(image_like_rrdb(scale, seed=1), source["first_frame"])
    assert psnr(other.astype(np.float32) / 255, expected, crop_border=0) < 35.0
    assert _no_temporaries(out) == []


@needs_av
def test_api_batches_give_the_same_frames_and_report_where_time_went(clip, tmp_path):
    model = image_like_rrdb(2)
    calls: list[tuple[int, int | None]] = []
    one = srkit.upscale_video(model, clip.path, tmp_path / "one.mp4", batch=1, crf=0)
    three = srkit.upscale_video(
        model,
        clip.path,
        tmp_path / "three.mkv",
        batch=3,
        crf=0,
        on_frame=lambda done, total: calls.append((done, total)),
    )
    assert one.frames == three.frames == 50
    # 50 frames in batches of 3: 16 full batches and a last one of 2.
    assert [done for done, _ in calls] == [*range(3, 50, 3), 50]
    assert {total for _, total in calls} == {50}
    for result in (one, three):
        parts = result.decode_seconds + result.network_seconds + result.encode_seconds
        assert 0 < parts <= result.seconds * 1.01
        assert result.frames_per_second == pytest.approx(50 / result.seconds)
        assert sum(result.shares().values()) == pytest.approx(parts / result.seconds)

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    # crf 0 is lossless (in YUV): frames batched together come out as one by one, in the same
    # order (a batched convolution may round differently: a level here and there, which the
    # shared chroma of 4:2:0 can double).
    single, batched = frames(tmp_path / "one.mp4"), frames(tmp_path / "three.mkv")
    for a, b in zip(single, batched, strict=True):
        difference = np.abs(a.astype(int) - b.astype(int))
        assert difference.max() <= 3 and difference.mean() < 0.02
    assert np.abs(single[10].astype(int) - batched[11].astype(int)).mean() > 0.5  # order matters


def test_auto_tile_lowers_the_batch_then_tiles_frames(monkeypatch):
    import srkit.infer.tiling as tiling
    from srkit.infer.video import frame_tile

    model = image_like_rrdb(2)
    per_pixel = tiling.activation_bytes_per_pixel(model, torch.device("cpu"), 4)
    frame = 48 * 64 * per_pixel + 48 * 64 * 4 * 16  # activations + blended output, one frame
    for free, expected in [
        (100 * frame, (0, 16, 4)),  # four whole frames at a time
        (5 * frame, (0, 16, 2)),  # two fit in the half of the memory auto may use
        (2.5 * frame, (0, 16, 1)),
    ]:
        monkeypatch.setattr(tiling, "free_memory_bytes", lambda device, free=free: int(free))
        assert frame_tile(model, 48, 64, 4, "auto", 16, "fp32") == expected, free
    monkeypatch.setattr(tiling, "free_memory_bytes", lambda device: int(frame))
    side, overlap, batch = frame_tile(model, 48, 64, 4, "auto", 16, "fp32")
    assert batch == 1 and 16 <= side < 48 and overlap == min(16, (side - 1) // 2)
    assert frame_tile(model, 48, 64, 4, 32, 8, "fp32") == (32, 8, 4)  # explicit: as given


@needs_av
def test_uneven_frame_timing_is_kept(models, tmp_path):
    from video_clips import make_clip

    clip = make_clip(
        tmp_path / "gaps.mp4", seconds=0.6, audio_rate=None, skip=frozenset({5, 6, 11})
    )
    assert (
        main(["upscale", str(models[2]), str(clip.path), "-o", str(tmp_path / "out"), "--quiet"])
        == 0
    )

    def times(path: Path) -> list[float]:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return [float(f.pts * stream.time_base) for f in container.decode(stream)]

    expected = [index / 25 for index in range(15) if index not in {5, 6, 11}]
    assert times(clip.path) == pytest.approx(expected)
    assert times(tmp_path / "out" / "gaps.mp4") == pytest.approx(expected)


@needs_av
def test_webm_gets_vp9_and_its_opus_audio_copied(models, tmp_path):
    from video_clips import make_clip

    clip = make_clip(tmp_path / "clip.webm", seconds=0.4, codec="libvpx-vp9")
    assert (
        main(["upscale", str(models[2]), str(clip.path), "-o", str(tmp_path / "out"), "--quiet"])
        == 0
    )
    with av.open(str(tmp_path / "out" / "clip.webm")) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert container.streams.audio[0].codec_context.name == "opus"
        assert len(list(container.decode(video=0))) == clip.frames == 10


@needs_av
def test_h265_into_matroska_keeps_rotation_and_prints_nothing(clip, tmp_path, capfd):
    target = tmp_path / "clip.mkv"
    result = srkit.upscale_video(image_like_rrdb(2), clip.path, target, codec="h265", crf=24)
    assert result.frames == 50
    with av.open(str(target)) as container:
        frames = list(container.decode(video=0))
        assert container.streams.video[0].codec_context.name == "hevc"
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
    assert len(frames) == 50 and frames[0].rotation == 90
    assert capfd.readouterr().err == ""  # x265 prints statistics unless told not to


@needs_av
def test_folders_mix_images_and_videos(models, tmp_path):
    from video_clips import make_clip

    make_clip(tmp_path / "in" / "sub" / "short.mov", seconds=0.2, audio_rate=None)
    write_image(tmp_path / "in" / "photo.png", np.random.default_rng(0).random((12, 16, 3)))
    argv = ["upscale", str(models[2]), str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    assert main([*argv, "--suffix", "_x2", "--quiet"]) == 0
    assert read_rgb(tmp_path / "out" / "photo_x2.png").shape == (24, 32, 3)
    with av.open(str(tmp_path / "out" / "sub" / "short_x2.mov")) as container:
        frames = list(container.decode(video=0))
        assert (len(frames), frames[0].width, frames[0].height) == (5, 128, 96)
        assert not container.streams.audio


# ---------------------------------------------------------------------------------------------
# Interruptions: nothing half-written under the final name
# ---------------------------------------------------------------------------------------------


@needs_av
def test_an_interrupted_job_leaves_the_old_target_and_no_temporary(clip, tmp_path):
    target = tmp_path / "out" / "clip.mp4"
    target.parent.mkdir()
    target.write_bytes(b"the previous result")

    def stop(done: int, _total: int | None) -> None:
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        srkit.upscale_video(image_like_rrdb(2), clip.path, target, on_frame=stop)
    assert target.read_bytes() == b"the previous result"
    assert _no_temporaries(target.parent) == []


@needs_av
def test_sigterm_during_srkit_upscale_removes_the_partial_file(clip, models, tmp_path, monkeypatch):
    import srkit.infer.api as api

    real = api.upscale_tensor
    calls = {"count": 0}

    def upscale_then_terminate(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:  # as `kill PID` would, mid-video
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "upscale_tensor", upscale_then_terminate)
    handler = signal.getsignal(signal.SIGTERM)  # whatever earlier code installed
    out = tmp_path / "out"
    assert main(["upscale", str(models[2]), str(clip.path), "-o", str(out), "--quiet"]) == 130
    assert calls["count"] == 3
    assert not (out / "clip.mp4").exists()
    assert _no_temporaries(out) == []
    assert signal.getsignal(signal.SIGTERM) is handler  # restored


# ---------------------------------------------------------------------------------------------
# User errors: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------------


def _user_error(argv: list[str], out: Path, capsys) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srkit: error: "), lines
    assert not out.exists()
    return lines[0]


@needs_av
@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("wrong_path", "input '<tmp>/nope.mp4' does not exist"),
        ("text_file", "'<tmp>/notes.mp4' is not a video file srkit can read"),
        ("still_image", "'<tmp>/photo.mp4' is a still image (png), not a video"),
        ("webm_h264", "a .webm file cannot hold h264 video"),
        ("crf", "--crf 52 is out of range for h264 (0-51)"),
    ],
)
def test_video_user_errors(clip, models, tmp_path, capsys, mistake, message):
    out = tmp_path / "out"
    model = str(models[2])
    if mistake == "wrong_path":
        argv = ["upscale", model, str(tmp_path / "nope.mp4"), "-o", str(out)]
    elif mistake == "text_file":
        (tmp_path / "notes.mp4").write_text("not a video\n" * 50)
        argv = ["upscale", model, str(tmp_path / "notes.mp4"), "-o", str(out)]
    elif mistake == "still_image":
        write_image(tmp_path / "photo.png", np.zeros((8, 8, 3)))
        (tmp_path / "photo.png").rename(tmp_path / "photo.mp4")
        argv = ["upscale", model, str(tmp_path / "photo.mp4"), "-o", str(out)]
    elif mistake == "webm_h264":
        (tmp_path / "clip.webm").write_bytes(b"")
        argv = ["upscale", model, str(tmp_path / "clip.webm"), "-o", str(out), "--codec", "h264"]
    else:
        argv = ["upscale", model, str(clip.path), "-o", str(out), "--crf", "52"]
    line = _user_error(argv, out, capsys)
    assert message.replace("<tmp>", str(tmp_path)) in line


def test_missing_video_extra_is_one_line_naming_it(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails, as without PyAV
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    line = _user_error(
        ["upscale", str(models[2]), str(tmp_path / "clip.mp4"), "-o", str(out)], out, capsys
    )
    assert "needs PyAV" in line and "pip install 'srkit[video]'" in line
    with pytest.raises(srkit.errors.SrkitError, match=r"srkit\[video\]"):
        srkit.upscale_video(image_like_rrdb(2), tmp_path / "clip.mp4", out / "clip.mp4")
    assert not out.exists()


@needs_av
def test_api_refuses_a_non_video(tmp_path):
    from srkit.infer.video import VideoError

    write_image(tmp_path / "photo.png", np.zeros((8, 8, 3)))
    with pytest.raises(VideoError, match="still image"):
        srkit.upscale_video(image_like_rrdb(2), tmp_path / "photo.png", tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


@needs_av
def test_video_benchmark_script_runs(tmp_path, monkeypatch, capsys):
    import json

    from repo_scripts import load_script

    script = load_script("benchmarks/video.py", "video_benchmark")
    argv = ["video.py", "--width", "32", "--height", "24", "--seconds", "0.2", "--nf", "4"]
    argv += ["--nb", "1", "--gc", "4", "--json", str(tmp_path / "result.json")]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    result = json.loads((tmp_path / "result.json").read_text())["result"]
    assert result["input"] == "32x24, 5 frames at 24/s" and result["output"] == "64x48"
    # The three timed parts are inside the wall time (what is left over, "other", is >= 0).
    assert all(result[f"{part}_share"] > 0 for part in ("decode", "network", "encode"))
    assert result["other_share"] >= -1e-3
    assert "| frames/s |" in capsys.readouterr().out


@needs_av
def test_progress_bar_counts_frames_with_rate_and_time_left(models, tmp_path, monkeypatch):
    import io

    from video_clips import make_clip

    class Terminal(io.StringIO):
        def isatty(self) -> bool:  # tqdm draws its bar only on a terminal
            return True

    clip = make_clip(tmp_path / "short.mp4", seconds=0.4, audio_rate=None)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["upscale", str(models[2]), str(clip.path), "-o", str(tmp_path / "out"), "--batch", "3"]
    assert main(argv) == 0
    text = terminal.getvalue()
    assert "short.mp4:" in text and "frame/s" in text
    assert "0/10" in text and "10/10" in text and "<" in text  # counts, then "elapsed<left"
    assert re.search(r"short\.mp4: 10 frames in [\d.]+ s \([\d.]+ frames/s; decoding \d+%", text)
