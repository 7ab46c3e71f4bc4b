"""Every user error srkit recognises: exit status 2, one line, no traceback, nothing left on
disk, and the message documented in docs/errors.md (the cases are in error_catalogue.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from error_catalogue import CASES, documented_messages, run_case

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
STALE = "docs/errors.md is stale: run `python scripts/errors_doc.py`"


@pytest.fixture(scope="module")
def documented() -> dict[str, str]:
    return documented_messages(DOC.read_text(encoding="utf-8"))


def test_catalogue_is_complete_and_documented(documented):
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.area for c in CASES} == {"config", "data", "checkpoint", "cli"}
    assert sorted(documented) == sorted(c.id for c in CASES), STALE


def test_every_network_type_has_an_out_of_range_case():
    """Each registered network type (those added later too) shows its one-line range error."""
    from srkit.nets.registry import network_names

    ids = {c.id for c in CASES}
    missing = [n for n in network_names() if f"config-network-{n}-out-of-range" not in ids]
    assert not missing, f"add a config-network-<type>-out-of-range case for: {missing}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_error(case, tmp_path, documented):
    reason = case.skip()
    if reason:
        pytest.skip(reason)
    outcome, changed = run_case(case, tmp_path / "ws")
    assert outcome.status == 2, outcome.lines
    assert not any("Traceback" in line for line in outcome.lines), outcome.lines
    if outcome.lines and outcome.lines[0].startswith("usage: srkit"):
        # argparse's own errors: a usage line, then "srkit <command>: error: ..."
        assert outcome.error_line.startswith("srkit") and ": error: " in outcome.error_line
    else:
        assert outcome.error_line.startswith("srkit: error: "), outcome.lines
        # Anything before the error line is ordinary log output (start-up info, warnings).
        for line in outcome.lines[:-1]:
            assert " INFO " in line or " WARNING " in line, line
    assert case.expect in outcome.error_line
    assert not changed, f"left behind: {changed}"
    assert outcome.documented == documented.get(case.id), STALE


def test_debug_shows_the_traceback(tmp_path):
    from srkit.cli import main
    from srkit.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        main(["--debug", "train", str(tmp_path / "nope.yml")])
