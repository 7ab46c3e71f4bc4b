"""spandrel (the model loader behind chaiNNer and ComfyUI), for the benchmarks and the tests.

spandrel is not an srkit dependency. Install it where the scripts can find it, without its
dependencies (it would pull torchvision builds that may not fit the installed torch)::

    pip install --no-deps --target /some/folder spandrel einops   # safetensors: srkit has it
    export SRKIT_SPANDREL_PATH=/some/folder

or into the environment itself (``pip install --no-deps spandrel einops``).

spandrel imports torchvision at import time for two architectures unrelated to ESRGAN (LaMa,
RestoreFormer). Where no torchvision is importable, :func:`spandrel_search_path` writes a small
stand-in (:data:`TORCHVISION_STUB`) that satisfies those imports; the ESRGAN and Compact code
paths never call it. Not part of the ``srkit`` package: ``benchmarks/vs_spandrel.py`` imports
this module from its folder, ``tests/test_export.py`` loads it with ``tests/repo_scripts.py``.
"""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path

#: The environment variable naming a folder that holds spandrel (``pip install --target``).
SPANDREL_PATH_VARIABLE = "SRKIT_SPANDREL_PATH"

#: File (relative path) -> text of the torchvision stand-in.
TORCHVISION_STUB = {
    "torchvision/__init__.py": "",
    "torchvision/transforms/__init__.py": "",
    "torchvision/transforms/functional.py": textwrap.dedent(
        """
        import enum
        class InterpolationMode(enum.Enum):
            NEAREST = "nearest"
            BILINEAR = "bilinear"
            BICUBIC = "bicubic"
        def rotate(*args, **kwargs):
            raise NotImplementedError("torchvision stand-in")
        def normalize(*args, **kwargs):
            raise NotImplementedError("torchvision stand-in")
        """
    ),
}


def spandrel_folder(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """The folder holding spandrel: ``explicit``, else ``$SRKIT_SPANDREL_PATH``, else None
    (spandrel, if any, is in the environment itself)."""
    folder = explicit or os.environ.get(SPANDREL_PATH_VARIABLE)
    return str(folder) if folder else None


def spandrel_available(explicit: str | os.PathLike[str] | None = None) -> bool:
    """Whether spandrel can be imported (from the named folder or the environment)."""
    folder = spandrel_folder(explicit)
    if folder is not None:
        return (Path(folder) / "spandrel" / "__init__.py").is_file()
    return importlib.util.find_spec("spandrel") is not None


def write_torchvision_stub(root: Path) -> Path:
    """Write :data:`TORCHVISION_STUB` under ``root``; returns ``root`` (a sys.path entry)."""
    for name, text in TORCHVISION_STUB.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def spandrel_search_path(
    stub_root: Path, explicit: str | os.PathLike[str] | None = None
) -> list[str]:
    """Folders to put in front of ``sys.path`` / ``PYTHONPATH`` so that ``import spandrel``
    works: the spandrel folder (if one is named) and, when no torchvision is importable, the
    stand-in written under ``stub_root``."""
    paths = [folder for folder in [spandrel_folder(explicit)] if folder]
    if importlib.util.find_spec("torchvision") is None:
        paths.append(str(write_torchvision_stub(stub_root)))
    return paths
