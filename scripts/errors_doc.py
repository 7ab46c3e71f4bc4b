"""Regenerate docs/errors.md from the error catalogue (tests/error_catalogue.py).

Runs every catalogued mistake through the real ``srkit`` command line in a temporary folder and
writes the messages it printed. ``tests/test_error_catalogue.py`` fails when the file is stale.

    python scripts/errors_doc.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from error_catalogue import generate  # noqa: E402

if __name__ == "__main__":
    target = REPO / "docs" / "errors.md"
    generate(target)
    print(f"wrote {target}")
