"""Import the repository's stand-alone scripts (``benchmarks/``, ``scripts/``) in tests.

They are not part of the ``srkit`` package, so tests load them from their file; tests that
exercise a script this way fail when an srkit rename breaks the script.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, name: str) -> ModuleType:
    """The script at ``REPO / relative_path`` imported as module ``name`` (registered in
    ``sys.modules``, which dataclasses in the script need to look their module up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
