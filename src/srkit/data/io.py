"""Image file I/O: the only module in srkit that reads or writes image files.

Everything else works on float32 arrays in [0, 1] (HWC, numpy) or tensors; this module turns
files into such arrays and back, and is strict about it:

* **Bit depth is kept.** Pillow (up to at least 13.0) silently reduces 16-bit RGB/RGBA PNGs and
  16-bit colour TIFFs to 8 bits when it decodes them. 16-bit PNGs of every colour type are
  therefore decoded and encoded here by a small zlib-based PNG codec (:func:`_decode_png`,
  :func:`_encode_png`), vectorised with numpy. 16-bit colour TIFFs go through the optional
  ``tifffile`` package; without it they are refused with a clear message rather than read at
  reduced depth. Everything else is decoded by Pillow.
* **Conversions are explicit.** Each Pillow mode (palette, LA, CMYK, 1-bit, I;16, ...) is mapped
  to one of three results: grey ``"L"`` (C=1), ``"RGB"`` (C=3) or ``"RGBA"`` (C=4). EXIF
  orientation is applied. ICC profiles are ignored (pixels are taken as sRGB); multi-frame files
  (animated WebP, multi-page TIFF) contribute their first frame.
* **Failures are user errors.** A missing, empty, truncated or undecodable file raises
  :class:`UnreadableImageError` whose one-line message names the file and the reason, so a
  dataset can skip it and tell the user which file to fix. :func:`quick_check` finds most such
  files from their headers without decoding pixels.
* **Writes are atomic**: a temporary file in the destination folder is renamed over the target,
  so an interrupted run never leaves a half-written image behind.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from srkit.errors import DataError
from srkit.fsutil import atomic_write_bytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "UnreadableImageError",
    "is_image_file",
    "quick_check",
    "read_image",
    "read_rgb",
    "write_image",
]

#: File extensions (lower case, with the dot) that srkit treats as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
)

# Pillow format names used when writing, by extension.
_WRITE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION_TAG = 0x0112


class UnreadableImageError(DataError):
    """An image file is missing, empty, truncated, damaged or in an unsupported layout."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"cannot read image '{self.path}': {self.reason}")


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image.

    Attributes:
        pixels: float32 array (H, W, C) in [0, 1]; C is 1 (grey), 3 (RGB) or 4 (RGBA).
        bit_depth: bits per sample in the file, 8 or 16 (1-bit images count as 8).
        mode: ``"L"``, ``"RGB"`` or ``"RGBA"``, matching C.
    """

    pixels: np.ndarray
    bit_depth: int
    mode: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow reports sizes."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True if the file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Decode an image file at its full bit depth, with EXIF orientation applied.

    Raises:
        UnreadableImageError: the file is missing, empty, truncated, undecodable, or holds a
            pixel layout srkit does not handle (e.g. floating-point TIFF).
    """
    path = Path(path)
    _check_nonempty(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(33)
        if head.startswith(_PNG_SIGNATURE) and len(head) >= 33 and head[24] == 16:
            # 16-bit PNG: Pillow would drop the low byte of colour images, so decode it here.
            data = path.read_bytes()
            samples, bit_depth, exif = _decode_png(data)
            pixels = samples.astype(np.float32) / np.float32(65535.0)
            orientation = _orientation_from_exif_bytes(exif)
        else:
            pixels, bit_depth, orientation = _read_with_pillow(path)
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(path, f"image too large ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error) as error:
        # Pillow reports damaged files with a mix of exception types; all mean "cannot decode".
        raise UnreadableImageError(path, _describe(error)) from error
    pixels = _apply_orientation(pixels, orientation)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    return LoadedImage(np.ascontiguousarray(pixels, dtype=np.float32), bit_depth, mode)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as float32 (H, W, 3) RGB in [0, 1], the layout training uses.

    Greyscale is replicated to three channels. Alpha is dropped, not composited: SR networks
    predict colour, and compositing onto an arbitrary background would invent colours in
    transparent regions that the file never had.
    """
    image = read_image(path)
    pixels = image.pixels
    if image.mode == "L":
        pixels = np.repeat(pixels, 3, axis=2)
    elif image.mode == "RGBA":
        pixels = pixels[:, :, :3]
    return np.ascontiguousarray(pixels)


def quick_check(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image, read from its headers without decoding pixels.

    The size is reported after EXIF orientation, i.e. as :func:`read_image` would return it.

    Cheap checks catch most bad files: empty files, unrecognised headers, PNGs without an
    ``IEND`` chunk (or whose chunks run past the end of the file), JPEGs not ending with the
    ``FFD9`` end-of-image marker (trailing zero padding is allowed), WebP/BMP files shorter than
    their headers declare. Damage inside compressed data is only found by decoding.

    Raises:
        UnreadableImageError: with the reason.
    """
    path = Path(path)
    _check_nonempty(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
            if head.startswith(_PNG_SIGNATURE):
                width, height, exif = _png_walk_chunks(handle)
                orientation = _orientation_from_exif_bytes(exif)
            else:
                width, height, orientation = _pillow_header(path)
                if head.startswith(b"\xff\xd8"):
                    _check_jpeg_end(handle)
                elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                    _check_declared_size(handle, struct.unpack("<I", head[4:8])[0] + 8, "RIFF")
                elif head[:2] == b"BM":
                    _check_declared_size(handle, struct.unpack("<I", head[2:6])[0], "BMP")
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(path, f"image too large ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as error:
        raise UnreadableImageError(path, _describe(error)) from error
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height


def _check_nonempty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UnreadableImageError(path, "no such file") from None
    except OSError as error:
        raise UnreadableImageError(path, _describe(error)) from error
    if path.is_dir():
        raise UnreadableImageError(path, "is a folder, not a file")
    if size == 0:
        raise UnreadableImageError(path, "empty file (0 bytes)")


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if isinstance(error, zlib.error) else text


def _pillow_header(path: Path) -> tuple[int, int, int]:
    """Size and EXIF orientation from Pillow's lazy open (headers only)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = _orientation_from_pillow(image)
    except UnidentifiedImageError:
        if _is_tiff(path):  # layouts Pillow cannot open, e.g. 16-bit grey + alpha
            with _tifffile(path).TiffFile(path) as tiff:
                page = tiff.pages[0]
                orientation = int(page.tags.valueof(_EXIF_ORIENTATION_TAG, 1))
                return int(page.imagewidth), int(page.imagelength), orientation
        raise UnreadableImageError(
            path, "not a recognised image format (damaged header?)"
        ) from None
    return width, height, orientation


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) in (b"II*\x00", b"MM\x00*")


def _tifffile(path: Path) -> Any:
    """The optional ``tifffile`` module, or an UnreadableImageError saying it is needed."""
    try:
        import tifffile
    except ImportError:
        raise UnreadableImageError(
            path,
            "this TIFF (16-bit colour or grey + alpha) needs the 'tifffile' package "
            "(pip install tifffile); Pillow cannot read it at full depth",
        ) from None
    return tifffile


def _check_jpeg_end(handle: Any) -> None:
    """A complete JPEG ends with FFD9; some writers pad the file with zero bytes after it."""
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    block = 4096
    while end > 0:
        start = max(0, end - block)
        handle.seek(start)
        chunk = handle.read(end - start).rstrip(b"\x00")
        if chunk:
            break
        end = start
    else:
        raise UnreadableImageError(handle.name, "truncated JPEG (no end-of-image marker)")
    # The marker might straddle the block boundary: re-read the last two non-zero bytes.
    last = start + len(chunk)
    handle.seek(max(0, last - 2))
    if handle.read(2) != b"\xff\xd9":
        raise UnreadableImageError(handle.name, "truncated JPEG (no end-of-image marker)")


def _check_declared_size(handle: Any, declared: int, what: str) -> None:
    handle.seek(0, os.SEEK_END)
    actual = handle.tell()
    # BMP writers may leave the size field 0; only a non-zero declared size is checked.
    if declared and actual < declared:
        raise UnreadableImageError(
            handle.name, f"truncated file ({what} header declares {declared} bytes, has {actual})"
        )


def _orientation_from_pillow(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:
        # A broken EXIF block must not make an otherwise good image unreadable.
        return 1


def _orientation_from_exif_bytes(exif: bytes | None) -> int:
    if not exif:
        return 1
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        return int(parsed.get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:
        return 1


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip an (H, W, C) array so it displays upright, per the EXIF orientation tag.

    Values follow the EXIF specification (the same transforms as ``ImageOps.exif_transpose``):
    2 mirror horizontally, 3 rotate 180°, 4 mirror vertically, 5 transpose, 6 rotate 90° clockwise,
    7 transverse, 8 rotate 90° counter-clockwise. Anything else leaves the array unchanged.
    """
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(pixels, k=-1)
    if orientation == 7:
        return pixels[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(pixels, k=1)
    return pixels


# Pillow modes holding 16-bit greyscale samples.
_GREY16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def _read_with_pillow(path: Path) -> tuple[np.ndarray, int, int]:
    """Decode with Pillow: (float32 HWC pixels, bit depth, EXIF orientation)."""
    try:
        image_context = Image.open(path)
    except UnidentifiedImageError:
        if _is_tiff(path):
            return _read_tiff_with_tifffile(path)
        raise UnreadableImageError(
            path, "not a recognised image format (damaged header?)"
        ) from None
    with image_context as image:
        orientation = _orientation_from_pillow(image)
        if image.format == "TIFF" and _tiff_is_16bit_colour(image):
            return _read_tiff_with_tifffile(path)
        image.load()
        return (*_pillow_to_array(image, path), orientation)


def _pillow_to_array(image: Image.Image, path: Path) -> tuple[np.ndarray, int]:
    mode = image.mode
    if mode in _GREY16_MODES:
        samples = np.asarray(image).astype(np.float32) / np.float32(65535.0)
        return samples[:, :, None], 16
    if mode == "I":
        # 32-bit integer container: 16-bit data (some PNG/TIFF readers) fits; more does not.
        samples = np.asarray(image)
        if samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise UnreadableImageError(path, "32-bit integer pixels are not supported")
        return (samples.astype(np.float32) / np.float32(65535.0))[:, :, None], 16
    if mode == "F":
        raise UnreadableImageError(path, "floating-point pixels (mode 'F') are not supported")
    if mode == "1":
        image = image.convert("L")
    elif mode == "P":
        # Palette images with a transparent entry (or an RGBA palette) keep their alpha.
        has_alpha = "transparency" in image.info or (
            image.palette is not None and image.palette.mode == "RGBA"
        )
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        # CMYK: Pillow's naive conversion (it already undoes Adobe's inverted CMYK in JPEGs);
        # colour management would need the embedded ICC profile, which srkit ignores.
        image = image.convert("RGB")
    elif mode not in ("L", "RGB", "RGBA"):
        raise UnreadableImageError(path, f"unsupported pixel mode '{mode}'")
    samples = np.asarray(image, dtype=np.uint8)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    return samples.astype(np.float32) / np.float32(255.0), 8


def _tiff_is_16bit_colour(image: Image.Image) -> bool:
    bits = image.tag_v2.get(258)  # BitsPerSample
    if bits is None:
        return False
    bits = tuple(bits) if isinstance(bits, tuple | list) else (bits,)
    return len(bits) > 1 and max(bits) == 16


def _read_tiff_with_tifffile(path: Path) -> tuple[np.ndarray, int, int]:
    """TIFFs Pillow cannot read at full depth: (pixels, bit depth, EXIF orientation)."""
    with _tifffile(path).TiffFile(path) as tiff:
        page = tiff.pages[0]
        samples = page.asarray()
        planar_separate = int(getattr(page, "planarconfig", 1)) == 2
        orientation = int(page.tags.valueof(_EXIF_ORIENTATION_TAG, 1))
    if samples.ndim == 3 and planar_separate:
        samples = samples.transpose(1, 2, 0)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    if samples.ndim == 3 and samples.shape[2] == 2:  # grey + alpha -> RGBA
        samples = samples[:, :, [0, 0, 0, 1]]
    if samples.ndim != 3 or samples.shape[2] not in (1, 3, 4):
        raise UnreadableImageError(path, f"unsupported TIFF layout {samples.shape}")
    if samples.dtype == np.uint16:
        return samples.astype(np.float32) / np.float32(65535.0), 16, orientation
    if samples.dtype == np.uint8:
        return samples.astype(np.float32) / np.float32(255.0), 8, orientation
    raise UnreadableImageError(path, f"unsupported TIFF sample type {samples.dtype}")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_image(
    path: str | os.PathLike[str],
    image: Any,
    bit_depth: int = 8,
    quality: int | None = None,
) -> None:
    """Write an image atomically; the format comes from the file extension.

    Args:
        path: destination; missing parent folders are created.
        image: float array (H, W) or (H, W, C) with C in {1, 3, 4}, values in [0, 1] (clipped,
            then rounded to the bit depth); uint8/uint16 arrays are taken as samples of that
            depth. A torch tensor (C, H, W) or (1, C, H, W) is accepted too.
        bit_depth: 8, or 16 for PNG and TIFF.
        quality: JPEG/WebP quality 1-100. JPEG defaults to 95; WebP is lossless unless a
            quality is given.

    Raises:
        DataError: unsupported extension, 16 bits requested for an 8-bit-only format, or alpha
            requested for JPEG.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITE_FORMATS:
        raise DataError(
            f"cannot write '{path}': unsupported image extension '{path.suffix}' "
            f"(use one of {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    fmt = _WRITE_FORMATS[ext]
    if bit_depth == 16 and fmt not in ("PNG", "TIFF"):
        raise DataError(f"cannot write '{path}' with 16 bits: {fmt} stores 8 bits; use .png")
    samples = _to_samples(image, bit_depth)
    channels = samples.shape[2]
    if channels == 4 and fmt in ("JPEG", "BMP"):
        raise DataError(f"cannot write RGBA to '{path}': {fmt} has no alpha; use .png or .webp")

    if bit_depth == 16 and fmt == "PNG":
        payload = _encode_png(samples)
    elif bit_depth == 16 and channels > 1:
        payload = _encode_tiff16_colour(samples, path)
    else:
        payload = _encode_with_pillow(samples, fmt, quality)
    atomic_write_bytes(path, payload)


def _to_samples(image: Any, bit_depth: int) -> np.ndarray:
    """Convert the accepted inputs to an integer (H, W, C) array of the requested depth."""
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor, without importing it
        tensor = image.detach().cpu()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim == 3:
            tensor = tensor.permute(1, 2, 0)
        image = tensor.float().numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W) or (H, W, C) with C in 1, 3, 4; got {array.shape}")
    peak = 65535 if bit_depth == 16 else 255
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    if array.dtype == np.uint8:
        return (array.astype(np.uint16) * 257).astype(dtype) if bit_depth == 16 else array
    if array.dtype == np.uint16:
        if bit_depth == 16:
            return array
        # Round to the nearest 8-bit level (65535 / 255 = 257 exactly).
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"image must be float in [0, 1], uint8 or uint16; got {array.dtype}")
    scaled = np.clip(np.nan_to_num(array.astype(np.float64), nan=0.0), 0.0, 1.0) * peak
    return np.rint(scaled).astype(dtype)


def _encode_with_pillow(samples: np.ndarray, fmt: str, quality: int | None) -> bytes:
    channels = samples.shape[2]
    if samples.dtype == np.uint16:  # 16-bit grey TIFF: Pillow's I;16 is lossless here
        pil = Image.fromarray(np.ascontiguousarray(samples[:, :, 0], dtype="<u2"))
    else:
        pil = Image.fromarray(samples[:, :, 0] if channels == 1 else samples)
    params: dict[str, Any] = {}
    if fmt == "JPEG":
        params["quality"] = 95 if quality is None else quality
    elif fmt == "WEBP":
        # exact=True keeps the colour under fully transparent pixels, which lossless WebP
        # otherwise discards (and which read_rgb returns, since it drops alpha).
        lossless = {"lossless": True, "exact": True}
        params.update(lossless if quality is None else {"quality": quality})
    elif fmt == "TIFF":
        params["compression"] = "tiff_deflate"
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _encode_tiff16_colour(samples: np.ndarray, path: Path) -> bytes:
    try:
        import tifffile
    except ImportError:
        raise DataError(
            f"cannot write '{path}': 16-bit colour TIFF needs the 'tifffile' package "
            "(pip install tifffile), or use .png"
        ) from None
    buffer = io.BytesIO()
    photometric = "rgb"
    extrasamples = ("unassalpha",) if samples.shape[2] == 4 else None
    tifffile.imwrite(
        buffer, samples, photometric=photometric, extrasamples=extrasamples, compression="zlib"
    )
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# PNG codec for 16-bit images (Pillow keeps only 8 bits of colour PNGs)
# --------------------------------------------------------------------------------------------

_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (palette excluded)
# Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


class _PngError(ValueError):
    """Malformed PNG data (reported as an UnreadableImageError by the callers)."""


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG byte string into (type, payload) chunks up to IEND, checking CRCs."""
    if not data.startswith(_PNG_SIGNATURE):
        raise _PngError("not a PNG file")
    chunks = []
    position = len(_PNG_SIGNATURE)
    while True:
        if position + 8 > len(data):
            raise _PngError("truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        end = position + 8 + length + 4
        if end > len(data):
            raise _PngError(f"truncated PNG (chunk {kind.decode('latin-1')!r} runs past the end)")
        payload = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + payload) & 0xFFFFFFFF != crc:
            raise _PngError(f"damaged PNG (CRC mismatch in chunk {kind.decode('latin-1')!r})")
        chunks.append((kind, payload))
        if kind == b"IEND":
            return chunks
        position = end


def _png_walk_chunks(handle: Any) -> tuple[int, int, bytes | None]:
    """Read only chunk headers of an open PNG file: (width, height, eXIf payload or None).

    Seeks over chunk payloads, so the cost is one small read per chunk.
    """
    handle.seek(0, os.SEEK_END)
    file_size = handle.tell()
    handle.seek(len(_PNG_SIGNATURE))
    width = height = None
    exif = None
    while True:
        header = handle.read(8)
        if len(header) < 8:
            raise UnreadableImageError(handle.name, "truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", header)
        start = handle.tell()
        if start + length + 4 > file_size:
            raise UnreadableImageError(
                handle.name, f"truncated PNG (chunk {kind.decode('latin-1')!r} runs past the end)"
            )
        if kind == b"IHDR":
            if length < 13:
                raise UnreadableImageError(handle.name, "damaged PNG header")
            width, height = struct.unpack(">II", handle.read(8))
        elif kind == b"eXIf":
            exif = handle.read(length)
        elif kind == b"IEND":
            break
        handle.seek(start + length + 4)
    if width is None or height is None or width == 0 or height == 0:
        raise UnreadableImageError(handle.name, "damaged PNG header (no valid IHDR)")
    return width, height, exif


def _decode_png(data: bytes) -> tuple[np.ndarray, int, bytes | None]:
    """Decode an 8- or 16-bit grey/RGB/grey+alpha/RGBA PNG (interlaced or not).

    Returns (uint8 or uint16 array (H, W, C) with C in 1, 3, 4, bit depth, eXIf payload).
    Grey+alpha is expanded to RGBA; a tRNS colour key becomes an alpha channel.
    """
    chunks = _png_chunks(data)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise _PngError("damaged PNG (IHDR is not the first chunk)")
    width, height, depth, colour_type, compression, filter_method, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    if colour_type not in _PNG_CHANNELS or depth not in (8, 16):
        raise _PngError(f"unsupported PNG layout (colour type {colour_type}, {depth} bits)")
    if compression != 0 or filter_method != 0 or interlace not in (0, 1):
        raise _PngError("unsupported PNG compression, filter or interlace method")
    if width == 0 or height == 0:
        raise _PngError("damaged PNG header (zero size)")
    compressed = b"".join(payload for kind, payload in chunks if kind == b"IDAT")
    transparency = next((payload for kind, payload in chunks if kind == b"tRNS"), None)
    exif = next((payload for kind, payload in chunks if kind == b"eXIf"), None)

    channels = _PNG_CHANNELS[colour_type]
    pixel_bytes = channels * depth // 8
    decompressor = zlib.decompressobj()
    raw = decompressor.decompress(compressed)
    if not decompressor.eof:
        raise _PngError("truncated PNG image data")

    if interlace == 0:
        passes = [(0, 0, 1, 1, width, height)]
    else:
        passes = []
        for x0, y0, dx, dy in _ADAM7:
            pass_width = (width - x0 + dx - 1) // dx if width > x0 else 0
            pass_height = (height - y0 + dy - 1) // dy if height > y0 else 0
            if pass_width and pass_height:  # empty passes have no bytes at all
                passes.append((x0, y0, dx, dy, pass_width, pass_height))
    image_bytes = np.zeros((height, width, pixel_bytes), dtype=np.uint8)
    offset = 0
    for x0, y0, dx, dy, pass_width, pass_height in passes:
        size = pass_height * (1 + pass_width * pixel_bytes)
        if offset + size > len(raw):
            raise _PngError("truncated PNG image data")
        rows = np.frombuffer(raw, dtype=np.uint8, count=size, offset=offset)
        rows = rows.reshape(pass_height, 1 + pass_width * pixel_bytes)
        image_bytes[y0::dy, x0::dx] = _unfilter(rows, pass_width, pixel_bytes)
        offset += size

    if depth == 16:
        samples = image_bytes.view(">u2").reshape(height, width, channels).astype(np.uint16)
    else:
        samples = image_bytes.reshape(height, width, channels)
    peak = (1 << depth) - 1
    if transparency is not None and colour_type in (0, 2):
        key = np.frombuffer(transparency, dtype=">u2")[:channels].astype(np.uint16)
        if len(key) == channels:
            is_key = np.all(samples == key.astype(samples.dtype), axis=2, keepdims=True)
            alpha = np.where(is_key, 0, peak).astype(samples.dtype)
            samples = np.concatenate([samples, alpha], axis=2)
            channels += 1
    if channels == 2:  # grey + alpha -> RGBA, as for every other reader path
        grey, alpha = samples[:, :, :1], samples[:, :, 1:]
        samples = np.concatenate([grey, grey, grey, alpha], axis=2)
    return np.ascontiguousarray(samples), depth, exif


def _paeth(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """The PNG Paeth predictor on int16 arrays."""
    distance_left = np.abs(up - up_left)  # |p - left| with p = left + up - up_left
    distance_up = np.abs(left - up_left)
    distance_up_left = np.abs(left + up - 2 * up_left)
    return np.where(
        (distance_left <= distance_up) & (distance_left <= distance_up_left),
        left,
        np.where(distance_up <= distance_up_left, up, up_left),
    )


def _unfilter(rows: np.ndarray, width: int, pixel_bytes: int) -> np.ndarray:
    """Undo PNG filtering: (H, 1 + W*bpp) filtered bytes -> (H, W, bpp) uint8.

    Sub, Average and Paeth make every byte depend on the reconstructed byte to its left (and
    above), so rows cannot be done in one vectorised operation. Instead this walks
    anti-diagonals: pixel (y, x) depends only on (y, x-1), (y-1, x) and (y-1, x-1), which all
    lie on earlier diagonals, so every pixel of one diagonal is computed at once. That is
    H + W - 1 numpy steps instead of H * W Python steps.
    """
    height = rows.shape[0]
    filter_types = rows[:, 0].astype(np.int64)
    if filter_types.size and filter_types.max() > 4:
        raise _PngError(f"damaged PNG (unknown row filter {int(filter_types.max())})")
    filtered = rows[:, 1:].reshape(height, width, pixel_bytes).astype(np.int16)
    # One row and one column of zeros above/left of the image stand for "outside".
    result = np.zeros((height + 1, width + 1, pixel_bytes), dtype=np.int16)
    zeros = np.zeros((min(height, width), pixel_bytes), dtype=np.int16)
    for diagonal in range(height + width - 1):
        first_row = max(0, diagonal - width + 1)
        ys = np.arange(first_row, min(height, diagonal + 1))
        xs = diagonal - ys
        left = result[ys + 1, xs]
        up = result[ys, xs + 1]
        up_left = result[ys, xs]
        kinds = filter_types[ys][:, None]
        prediction = np.choose(
            kinds,
            [zeros[: len(ys)], left, up, (left + up) >> 1, _paeth(left, up, up_left)],
        )
        result[ys + 1, xs + 1] = (filtered[ys, xs] + prediction) & 0xFF
    return result[1:, 1:].astype(np.uint8)


def _filter_rows(image_bytes: np.ndarray, filter_type: int | None) -> np.ndarray:
    """Filter (H, W, bpp) bytes for encoding: (H, 1 + W*bpp) with the filter byte first.

    With ``filter_type=None`` each row gets the filter with the smallest sum of absolute
    (signed) residuals, the heuristic the PNG specification recommends. Rows are processed in
    blocks (each filter needs only the row above) to bound memory on very large images.
    """
    height, width, pixel_bytes = image_bytes.shape
    out = np.empty((height, 1 + width * pixel_bytes), dtype=np.uint8)
    block = max(1, (1 << 22) // max(1, width * pixel_bytes))
    for first in range(0, height, block):
        last = min(height, first + block)
        current = image_bytes[first:last].astype(np.int16)
        up = np.zeros_like(current)
        if first > 0:
            up[0] = image_bytes[first - 1]
        up[1:] = current[:-1]
        left = np.zeros_like(current)
        left[:, 1:] = current[:, :-1]
        up_left = np.zeros_like(current)
        up_left[:, 1:] = up[:, :-1]
        predictions = [0, left, up, (left + up) >> 1, _paeth(left, up, up_left)]
        residuals = np.stack([(current - p) & 0xFF for p in predictions]).astype(np.uint8)
        rows = last - first
        if filter_type is None:
            signed = residuals.reshape(5, rows, -1).view(np.int8).astype(np.int32)
            chosen = np.abs(signed).sum(axis=2).argmin(axis=0)
        else:
            chosen = np.full(rows, filter_type)
        out[first:last, 0] = chosen
        out[first:last, 1:] = residuals[chosen, np.arange(rows)].reshape(rows, -1)
    return out


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _encode_png(samples: np.ndarray, filter_type: int | None = None) -> bytes:
    """Encode uint8/uint16 (H, W, C) samples, C in 1, 3, 4, as a non-interlaced PNG."""
    height, width, channels = samples.shape
    depth = 16 if samples.dtype == np.uint16 else 8
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    big_endian = samples.astype(">u2" if depth == 16 else np.uint8)
    image_bytes = np.ascontiguousarray(big_endian).view(np.uint8).reshape(height, width, -1)
    raw = _filter_rows(image_bytes, filter_type).tobytes()
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    compressed = zlib.compress(raw, 6)
    idat = b"".join(
        _png_chunk(b"IDAT", compressed[start : start + (1 << 20)])
        for start in range(0, max(len(compressed), 1), 1 << 20)
    )
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + idat + _png_chunk(b"IEND", b"")
