"""Image I/O: full bit depth, explicit mode conversions, EXIF orientation, clear errors."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from srkit.data import io as sio
from srkit.data.io import (
    UnreadableImageError,
    quick_check,
    read_image,
    read_rgb,
    write_image,
)
from srkit.errors import DataError

RNG = np.random.default_rng(1234)


def _smooth_and_noisy(height: int, width: int, channels: int) -> np.ndarray:
    """uint8 test pattern: smooth ramps on top (Sub/Up/Paeth-friendly), noise below."""
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([(x * 7 + y * 3 + 20 * c) % 256 for c in range(channels)], axis=-1)
    noise = RNG.integers(0, 256, size=(height, width, channels))
    return np.where(y[..., None] < height // 2, smooth, noise).astype(np.uint8)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _handmade_png(
    samples: np.ndarray, colour_type: int, interlaced: bool = False, extra: bytes = b""
) -> bytes:
    """A 16-bit PNG built independently of srkit: filter type 0 everywhere, optional Adam7."""
    height, width = samples.shape[:2]
    big_endian = samples.astype(">u2").reshape(height, width, -1)
    if interlaced:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4)]
        passes += [(1, 0, 2, 2), (0, 1, 1, 2)]
        sub_images = [big_endian[y0::dy, x0::dx] for x0, y0, dx, dy in passes]
    else:
        sub_images = [big_endian]
    raw = b"".join(b"\x00" + row.tobytes() for sub in sub_images if sub.size for row in sub)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, int(interlaced))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + extra
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------ PNG codec


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("filter_type", [None, 0, 1, 2, 3, 4])
def test_png_encoder_output_decodes_identically_in_pillow(channels, filter_type):
    # At 8 bits Pillow decodes everything exactly, so it independently verifies the encoder for
    # each PNG filter type, and then the encoder's output verifies srkit's decoder.
    samples = _smooth_and_noisy(13, 17, channels)
    data = sio._encode_png(samples, filter_type)
    pillow = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(pillow.reshape(samples.shape), samples)
    decoded, depth, _ = sio._decode_png(data)
    assert depth == 8
    assert np.array_equal(decoded, samples)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_decoder_matches_pillow_on_pillow_written_files(channels):
    samples = _smooth_and_noisy(37, 41, channels)
    buffer = io.BytesIO()
    Image.fromarray(samples[:, :, 0] if channels == 1 else samples).save(buffer, "PNG")
    decoded, _, _ = sio._decode_png(buffer.getvalue())
    assert np.array_equal(decoded, samples)


def test_pillow_sees_high_byte_of_srkit_16bit_png():
    # Pillow reduces 16-bit RGB to 8 bits by keeping the high byte: an independent decoder
    # confirming the layout of srkit's 16-bit files.
    samples = RNG.integers(0, 65536, size=(9, 11, 3)).astype(np.uint16)
    pillow = np.asarray(Image.open(io.BytesIO(sio._encode_png(samples))))
    assert np.array_equal(pillow, (samples >> 8).astype(np.uint8))


@pytest.mark.parametrize("interlaced", [False, True])
@pytest.mark.parametrize(("colour_type", "channels"), [(0, 1), (2, 3), (4, 2), (6, 4)])
def test_read_handmade_16bit_png(tmp_path, interlaced, colour_type, channels):
    samples = RNG.integers(0, 65536, size=(11, 13, channels)).astype(np.uint16)
    path = tmp_path / "handmade.png"
    path.write_bytes(_handmade_png(samples, colour_type, interlaced))
    image = read_image(path)
    assert image.bit_depth == 16
    expected = samples.astype(np.float32) / 65535
    if channels == 2:  # grey + alpha becomes RGBA
        expected = expected[:, :, [0, 0, 0, 1]]
    assert image.mode == {1: "L", 2: "RGBA", 3: "RGB", 4: "RGBA"}[channels]
    np.testing.assert_array_equal(image.pixels, expected)


def test_16bit_grey_png_agrees_with_pillow(tmp_path):
    samples = RNG.integers(0, 65536, size=(8, 9, 1)).astype(np.uint16)
    path = tmp_path / "grey.png"
    path.write_bytes(_handmade_png(samples, 0))
    assert Image.open(path).mode == "I;16"  # Pillow reads 16-bit grey correctly
    np.testing.assert_array_equal(
        read_image(path).pixels[:, :, 0], np.asarray(Image.open(path)) / np.float32(65535)
    )


def test_16bit_png_transparency_key_becomes_alpha(tmp_path):
    samples = RNG.integers(0, 65536, size=(6, 7, 3)).astype(np.uint16)
    key = samples[2, 3].copy()
    trns = _png_chunk(b"tRNS", key.astype(">u2").tobytes())
    path = tmp_path / "keyed.png"
    path.write_bytes(_handmade_png(samples, 2, extra=trns))
    image = read_image(path)
    assert image.mode == "RGBA"
    assert image.pixels[2, 3, 3] == 0.0
    assert np.count_nonzero(image.pixels[:, :, 3] == 0) == np.all(samples == key, axis=2).sum()


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_png_round_trip_is_exact(tmp_path, channels):
    samples = RNG.integers(0, 65536, size=(10, 12, channels)).astype(np.uint16)
    pixels = samples.astype(np.float64) / 65535
    path = tmp_path / "deep.png"
    write_image(path, pixels, bit_depth=16)
    image = read_image(path)
    assert image.bit_depth == 16
    assert image.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    np.testing.assert_array_equal(np.rint(image.pixels * 65535).astype(np.uint16), samples)


@pytest.mark.parametrize("extension", [".png", ".bmp", ".tif", ".webp", ".PNG"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_lossless_8bit_round_trip(tmp_path, extension, channels):
    if extension == ".bmp" and channels == 4:
        pytest.skip("BMP has no alpha")
    samples = _smooth_and_noisy(9, 14, channels)
    path = tmp_path / f"image{extension}"
    write_image(path, samples)
    image = read_image(path)
    assert image.bit_depth == 8
    assert image.pixels.dtype == np.float32
    if extension == ".webp" and channels == 1:
        # WebP has no greyscale layout: grey is stored (and read back) as equal RGB channels.
        samples = np.repeat(samples, 3, axis=2)
    assert image.pixels.shape == samples.shape
    np.testing.assert_array_equal(np.rint(image.pixels * 255).astype(np.uint8), samples)


def test_jpeg_round_trip_is_close(tmp_path):
    y, x = np.mgrid[0:32, 0:32] / 31.0
    pixels = np.stack([x, y, (x + y) / 2], axis=-1)
    path = tmp_path / "photo.JPG"
    write_image(path, pixels)
    image = read_image(path)
    assert image.mode == "RGB" and image.bit_depth == 8
    assert np.abs(image.pixels - pixels).mean() < 0.01


def test_16bit_colour_tiff_round_trip(tmp_path):
    pytest.importorskip("tifffile")
    samples = RNG.integers(0, 65536, size=(7, 9, 3)).astype(np.uint16)
    path = tmp_path / "deep.tiff"
    write_image(path, samples, bit_depth=16)
    image = read_image(path)
    assert (image.mode, image.bit_depth) == ("RGB", 16)
    np.testing.assert_array_equal(np.rint(image.pixels * 65535).astype(np.uint16), samples)


def test_16bit_grey_alpha_and_planar_tiffs(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    grey_alpha = RNG.integers(0, 65536, size=(5, 6, 2)).astype(np.uint16)
    path = tmp_path / "la.tif"
    tifffile.imwrite(path, grey_alpha, photometric="minisblack", extrasamples=("unassalpha",))
    image = read_image(path)  # Pillow cannot open this layout at all
    assert (image.mode, image.bit_depth, quick_check(path)) == ("RGBA", 16, (6, 5))
    np.testing.assert_array_equal(
        np.rint(image.pixels * 65535), grey_alpha[:, :, [0, 0, 0, 1]].astype(np.float32)
    )
    planar = RNG.integers(0, 65536, size=(3, 5, 6)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(
        np.rint(read_image(tmp_path / "planar.tif").pixels * 65535),
        planar.transpose(1, 2, 0).astype(np.float32),
    )


def test_16bit_colour_tiff_without_tifffile_is_refused_not_reduced(tmp_path, monkeypatch):
    pytest.importorskip("tifffile")
    path = tmp_path / "deep.tif"
    write_image(path, RNG.integers(0, 65536, size=(4, 4, 3)).astype(np.uint16), bit_depth=16)
    monkeypatch.setitem(sys.modules, "tifffile", None)  # import now raises ImportError
    _assert_unreadable(path, "needs the 'tifffile' package")


def test_16bit_grey_tiff_uses_pillow(tmp_path):
    samples = RNG.integers(0, 65536, size=(7, 9)).astype(np.uint16)
    path = tmp_path / "grey.tif"
    write_image(path, samples, bit_depth=16)
    image = read_image(path)
    assert (image.mode, image.bit_depth) == ("L", 16)
    np.testing.assert_array_equal(np.rint(image.pixels[:, :, 0] * 65535), samples)


def test_write_accepts_tensors_and_rounds_uint16_to_8bit(tmp_path):
    tensor = torch.rand(3, 5, 6)
    write_image(tmp_path / "t.png", tensor)
    expected = np.rint(tensor.permute(1, 2, 0).numpy() * 255) / 255
    np.testing.assert_allclose(read_image(tmp_path / "t.png").pixels, expected, atol=1e-6)
    write_image(tmp_path / "u.png", np.array([[0, 128, 129, 65535]], dtype=np.uint16))
    assert np.rint(read_image(tmp_path / "u.png").pixels.ravel() * 255).tolist() == [0, 0, 1, 255]


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "out.png"
    write_image(path, np.zeros((4, 4, 3)))
    write_image(path, np.ones((4, 4, 3)))  # overwrite in place
    assert read_image(path).pixels.min() == 1.0
    jpeg = tmp_path / "sub" / "keep.jpg"
    write_image(jpeg, np.zeros((4, 4, 3)))
    before = jpeg.read_bytes()
    with pytest.raises(DataError, match="alpha"):
        write_image(jpeg, np.zeros((4, 4, 4)))
    assert jpeg.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["keep.jpg", "out.png"]


def test_write_rejects_unsupported_combinations(tmp_path):
    with pytest.raises(DataError, match="16 bits"):
        write_image(tmp_path / "deep.jpg", np.zeros((2, 2, 3)), bit_depth=16)
    with pytest.raises(DataError, match="unsupported image extension"):
        write_image(tmp_path / "image.gif", np.zeros((2, 2, 3)))


# ------------------------------------------------------------------ mode conversions


def _pillow_file(tmp_path: Path, image: Image.Image, name: str, **params) -> Path:
    path = tmp_path / name
    image.save(path, **params)
    return path


def test_palette_greyscale_la_bilevel_and_cmyk_are_converted_explicitly(tmp_path):
    rgb = Image.fromarray(_smooth_and_noisy(8, 8, 3))
    palette = _pillow_file(tmp_path, rgb.convert("P"), "palette.png")
    assert read_image(palette).mode == "RGB"
    np.testing.assert_allclose(
        read_image(palette).pixels, np.asarray(Image.open(palette).convert("RGB")) / 255
    )

    transparent = rgb.convert("P")
    transparent.info["transparency"] = 0
    keyed = _pillow_file(tmp_path, transparent, "keyed.png", transparency=0)
    assert read_image(keyed).mode == "RGBA"

    grey = _pillow_file(tmp_path, rgb.convert("L"), "grey.png")
    assert read_image(grey).mode == "L" and read_image(grey).pixels.shape == (8, 8, 1)

    la = _pillow_file(tmp_path, rgb.convert("LA"), "la.png")
    loaded = read_image(la)
    assert loaded.mode == "RGBA"
    np.testing.assert_array_equal(loaded.pixels[:, :, 0], loaded.pixels[:, :, 2])

    bilevel = _pillow_file(tmp_path, rgb.convert("1"), "bilevel.png")
    assert set(np.unique(read_image(bilevel).pixels)) <= {0.0, 1.0}

    cmyk = _pillow_file(tmp_path, rgb.convert("CMYK"), "cmyk.jpg", quality=100)
    assert read_image(cmyk).mode == "RGB"
    assert np.abs(read_image(cmyk).pixels - np.asarray(rgb) / 255).mean() < 0.05


def test_read_rgb_replicates_grey_and_drops_alpha(tmp_path):
    write_image(tmp_path / "grey.png", np.full((3, 4), 0.2))
    write_image(tmp_path / "rgba.png", np.full((3, 4, 4), 0.6))
    grey = read_rgb(tmp_path / "grey.png")
    assert grey.shape == (3, 4, 3) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, 51 / 255)
    rgba = read_rgb(tmp_path / "rgba.png")
    assert rgba.shape == (3, 4, 3)
    np.testing.assert_allclose(rgba, 153 / 255)


# ------------------------------------------------------------------ EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    image = Image.fromarray(_smooth_and_noisy(6, 10, 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"
    image.save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path))) / np.float32(255)
    np.testing.assert_array_equal(read_image(path).pixels, expected)
    width, height = quick_check(path)
    assert (height, width) == expected.shape[:2]


def test_exif_orientation_on_16bit_png(tmp_path):
    samples = RNG.integers(0, 65536, size=(5, 8, 3)).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    path = tmp_path / "deep_oriented.png"
    path.write_bytes(_handmade_png(samples, 2, extra=_png_chunk(b"eXIf", exif.tobytes())))
    pixels = read_image(path).pixels
    np.testing.assert_array_equal(pixels, np.rot90(samples, k=-1) / np.float32(65535))
    assert quick_check(path) == (5, 8)


# ------------------------------------------------------------------ bad files


def _assert_unreadable(path: Path, reason: str, function=read_image) -> None:
    with pytest.raises(UnreadableImageError) as caught:
        function(path)
    message = str(caught.value)
    assert isinstance(caught.value, DataError)
    assert "\n" not in message
    assert str(path) in message
    assert reason in message


def test_empty_missing_and_garbage_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image at all")
    for function in (read_image, quick_check):
        _assert_unreadable(tmp_path / "empty.png", "empty file", function)
        _assert_unreadable(tmp_path / "missing.png", "no such file", function)
        _assert_unreadable(tmp_path / "garbage.jpg", "not a recognised image", function)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_truncated_png_is_detected_by_both(tmp_path, bit_depth):
    path = tmp_path / "cut.png"
    write_image(path, RNG.random((40, 40, 3)), bit_depth=bit_depth)
    path.write_bytes(path.read_bytes()[:-40])
    _assert_unreadable(path, "truncated", quick_check)
    _assert_unreadable(path, "truncated", read_image)


def test_truncated_jpeg_is_detected_but_zero_padding_is_fine(tmp_path):
    good = tmp_path / "good.jpg"
    write_image(good, RNG.random((64, 64, 3)))
    data = good.read_bytes()
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data + b"\x00" * 5000)
    assert quick_check(padded) == (64, 64)
    assert read_image(padded).pixels.shape == (64, 64, 3)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])
    _assert_unreadable(cut, "truncated JPEG", quick_check)
    _assert_unreadable(cut, "truncated", read_image)


def test_truncated_webp_is_detected_by_quick_check(tmp_path):
    path = tmp_path / "cut.webp"
    write_image(path, RNG.random((32, 32, 3)))
    path.write_bytes(path.read_bytes()[:-20])
    _assert_unreadable(path, "truncated", quick_check)


def test_quick_check_reports_size_without_decoding(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((7, 9, 3)), bit_depth=16)
    write_image(tmp_path / "b.bmp", np.zeros((5, 3, 3)))
    write_image(tmp_path / "c.tiff", np.zeros((4, 6)))
    assert quick_check(tmp_path / "a.png") == (9, 7)
    assert quick_check(tmp_path / "b.bmp") == (3, 5)
    assert quick_check(tmp_path / "c.tiff") == (6, 4)
