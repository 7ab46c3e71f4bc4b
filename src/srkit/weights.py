"""Reading and writing network weights safely (torch + safetensors only; no training imports).

Accepted inputs: an srkit checkpoint folder, ``.safetensors`` files, and ``.pth``/``.pt`` files
holding a state dict or a common wrapper of one (BasicSR's ``params``/``params_ema``,
``state_dict``, a ``module.`` DDP prefix); safetensors content loads as such whatever the
file's suffix. Pickle files are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, so
loading a file never executes code from it.

A file that does not load is described from its first bytes (:func:`describe_content`): an
image, text, an HTML page, a Git LFS pointer, a cut-short safetensors/zip/pickle file..., so the
user reads what the file is instead of a reader's internal error code.

srkit writes weights as safetensors with the architecture in the metadata (``srkit_arch``:
JSON of the network type and constructor arguments), so a bare file is enough to rebuild the
network; files from elsewhere are recognised by :func:`srkit.nets.registry.detect_network`.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srkit.errors import CheckpointError, ConfigError
from srkit.fsutil import atomic_write
from srkit.nets.convert import unwrap_state_dict
from srkit.nets.spectral import fold_spectral_norm, has_spectral_norm, spectral_layers

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")

#: What srkit reads, for messages about files that are something else.
EXPECTED_WEIGHTS = (
    "expected a .safetensors file, a PyTorch state dict (.pth, .pt, .ckpt, .bin) or an srkit "
    "checkpoint folder"
)


def resolve_weights_file(
    path: str | Path, network: str = "generator", prefer_ema: bool = True
) -> Path:
    """The weights file meant by ``path``: itself, or ``<network>[_ema].safetensors`` in a folder.

    In a checkpoint folder the EMA weights are preferred when present (they are the ones to use
    for inference and to start a new run from).
    """
    path = Path(path)
    if path.is_dir():
        candidates = [f"{network}_ema.safetensors"] if prefer_ema else []
        candidates.append(f"{network}.safetensors")
        for name in candidates:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"'{path}' is a folder without {' or '.join(candidates)}; pass a checkpoint folder "
            "or a weights file"
        )
    if not path.exists():
        raise CheckpointError(f"weights file '{path}' does not exist")
    return path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a weights file: (state dict on CPU, metadata). Never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file '{path}' is empty")
    if path.suffix == ".safetensors" or _safetensors_header(path):
        return _read_safetensors(path)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it "might not support" before refusing them.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if re.search(r"GLOBAL [\w.]+", str(exc)) is None:
            _raise_if_recognised(path, exc)
        raise _unpickling_error(path, exc) from None
    except Exception as exc:  # a damaged or foreign file fails in many ways; all unreadable
        _raise_if_recognised(path, exc)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read weights file '{path}': {first[:200]}") from None
    metadata = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("srkit_arch"), str):
        metadata["srkit_arch"] = obj["srkit_arch"]
    try:
        return unwrap_state_dict(obj), metadata
    except CheckpointError as error:
        raise CheckpointError(f"'{path}': {error}") from None


def _safetensors_header(path: Path) -> bool:
    """Whether the file starts like safetensors (an 8-byte header length, then the JSON header),
    whatever its name says (a .pth that is really safetensors loads as what it is)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1


def _unpickling_error(path: Path, error: pickle.UnpicklingError) -> CheckpointError:
    """A one-line error for a file ``torch.load(weights_only=True)`` refused.

    torch's message starts with generic advice; the reason is on a later line: "unsupported
    GLOBAL ..." for objects whose unpickling would call code, "Unsupported operand ..." for
    bytes that are not a (supported) pickle at all.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # torch names the forbidden callable as "GLOBAL module.name"; that is the useful part.
    forbidden = re.search(r"GLOBAL ([\w.]+)", str(error))
    if forbidden is not None:
        return CheckpointError(
            f"refusing to load '{path}': it holds Python objects that could run code when "
            f"unpickled (it calls {forbidden.group(1)}); if you trust it, convert it to "
            ".safetensors"
        )
    reason = next((line for line in lines if line.startswith("Unsupported")), None)
    detail = reason or (lines[-1] if lines else "unsupported content")
    return CheckpointError(
        f"cannot read weights file '{path}': not a PyTorch state dict that loads without "
        f"running code ({detail[:160]})"
    )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        _raise_if_recognised(path, exc)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read weights file '{path}': {first[:200]}") from None
    return state, metadata


# -- what a file that does not load looks like -------------------------------------------------

_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)


def describe_content(path: Path, error: BaseException | None = None) -> tuple[str, bool] | None:
    """What a file that failed to load as weights looks like, from its first bytes.

    Returns (description completing "it is ...", whether it is weights that are damaged rather
    than another kind of file), or None when nothing useful is recognised (the reader's own
    error is then the best there is). ``error`` is the reader's exception. Only called after
    loading failed, so it never rejects a good file.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head:
        return "empty", False
    for signature, name in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return name, False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image", False
    if head[:2] == b"BM" and len(head) >= 6 and struct.unpack("<I", head[2:6])[0] == size:
        return "a BMP image", False
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data (decompress it first)", False
    if path.suffix.lower() == ".onnx":
        return "an ONNX model (srkit exports these; it loads PyTorch weights)", False
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, JSON header
        return _describe_safetensors(path, head, size)
    if head.startswith(b"PK\x03\x04"):
        return _describe_zip(path)
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # a pickle (PyTorch's pre-1.6 format)
        # Pickles that would call code were refused before; what is left is damage.
        reason = "ends too early" if isinstance(error, EOFError) else "is damaged"
        return f"a pickle (PyTorch's pre-1.6 format) that {reason}; cut short?", True
    text = _text_start(head)
    if text is not None:
        if text.startswith("version https://git-lfs"):
            return "a Git LFS pointer, not the file it points to (fetch it: git lfs pull)", False
        if text.lower().startswith(("<!doctype html", "<html")):
            return "an HTML page (a download link that returned a web page?)", False
        return f"text, starting '{text[:60]}'", False
    return f"{size} bytes of unrecognised binary data (starting {head[:8].hex(' ')})", False


def _describe_safetensors(path: Path, head: bytes, size: int) -> tuple[str, bool] | None:
    """A safetensors file shorter than its header says it is; None when the sizes agree."""
    header_length = struct.unpack("<Q", head[:8])[0]
    if 8 + header_length > size:
        return (
            f"a safetensors file cut short (its header alone needs {8 + header_length} bytes, "
            f"the file has {size})",
            True,
        )
    try:
        with open(path, "rb") as handle:
            handle.seek(8)
            header = json.loads(handle.read(header_length))
        end = max(
            (
                int(entry["data_offsets"][1])
                for key, entry in header.items()
                if key != "__metadata__"
            ),
            default=0,
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return "a safetensors file with a damaged header", True
    if 8 + header_length + end > size:
        return (
            f"a safetensors file cut short (its header says {8 + header_length + end} bytes, "
            f"the file has {size})",
            True,
        )
    return None


def _describe_zip(path: Path) -> tuple[str, bool] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a zip archive that is damaged or cut short (PyTorch saves zip archives)", True
    if any(name.endswith("data.pkl") for name in names):
        return None  # a PyTorch archive: its own error says more
    count = f"{len(names)} file{'s' if len(names) != 1 else ''}"
    example = f", e.g. '{names[0]}'" if names else ""
    return f"a zip archive of {count}{example}, not a PyTorch checkpoint", False


def _text_start(head: bytes) -> str | None:
    """The first non-blank line of ``head`` if it is text (UTF-8, no control bytes), else None."""
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the 4 KiB boundary
            return None
        text = head[: error.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def _raise_if_recognised(path: Path, error: BaseException | None = None) -> None:
    """Raise the one-line error for a file that failed to load and is recognisably not weights
    (or recognisably damaged weights); return when the content says nothing useful."""
    found = describe_content(path, error)
    if found is None:
        return
    description, damaged = found
    if damaged:
        raise CheckpointError(f"cannot read weights file '{path}': it is {description}")
    raise CheckpointError(
        f"'{path}' is not a weights file: it is {description}; {EXPECTED_WEIGHTS}"
    )


def save_weights(
    path: str | Path,
    module_or_state: nn.Module | Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a network's weights as safetensors, atomically, with its architecture as metadata."""
    from safetensors.torch import save_file

    if isinstance(module_or_state, nn.Module):
        arch = getattr(module_or_state, "srkit_arch", None)
        state = module_or_state.state_dict()
    else:
        arch, state = None, module_or_state
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    meta = {"format": "pt", "srkit_format": "1"}
    if arch is not None:
        meta["srkit_arch"] = json.dumps(arch, sort_keys=True, default=str)
    meta.update(metadata or {})
    atomic_write(Path(path), lambda temporary: save_file(tensors, str(temporary), metadata=meta))


def architecture_of(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> tuple[str, dict[str, Any]]:
    """(network type, constructor arguments) from srkit metadata, else by detection."""
    from srkit.nets.registry import detect_network

    if "srkit_arch" in metadata:
        try:
            arch = json.loads(metadata["srkit_arch"])
            return arch.pop("type"), arch
        except (ValueError, KeyError, AttributeError):
            pass
    return detect_network(state)


def load_network(
    path: str | Path, network: str = "generator", prefer_ema: bool = True
) -> nn.Module:
    """Rebuild and load a network from a weights file or checkpoint folder (eval mode, CPU).

    The module gets ``srkit_arch`` (type and constructor arguments) and ``srkit_metadata`` (the
    file's metadata plus ``source``, the path of the file read).
    """
    from srkit.nets.registry import build_network

    file = resolve_weights_file(path, network, prefer_ema)
    state, metadata = read_weights(file)
    try:
        arch_type, arguments = architecture_of(state, metadata)
    except CheckpointError as error:
        raise CheckpointError(f"'{file}': {error}") from None
    try:
        module = build_network(arch_type, **arguments)
    except (TypeError, ConfigError) as error:  # arguments this version lacks or does not allow
        raise CheckpointError(
            f"'{file}': its architecture record does not fit this srkit ({error})"
        ) from None
    load_state(module, state, strict=True, source=str(file))
    module.srkit_metadata = {**metadata, "source": str(file)}
    return module.eval()


def load_state(
    module: nn.Module, state: Mapping[str, torch.Tensor], strict: bool, source: str
) -> None:
    """``load_state_dict`` with a one-line CheckpointError on mismatch (converting known layouts)."""
    convert = getattr(module, "convert_state_dict", None)
    if callable(convert):
        state = convert(state)
    if has_spectral_norm(state):  # layers trained with spectral norm, loaded without it
        state = fold_spectral_norm(state, keep=spectral_layers(module))
    result = None
    try:
        result = module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        arch = getattr(module, "srkit_arch", {}).get("type", type(module).__name__)
        raise CheckpointError(
            f"'{source}' does not fit the {arch} network: {detail[:240]}"
        ) from None
    return result
