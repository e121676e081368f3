"""aiosqlite's own test suite, run against ``litegate.aio`` in place of ``aiosqlite``.

Every test must pass or be listed, with its reason, in aio_differences.py (and in docs/aio.md);
a listed test that passes fails this check too, so the list stays exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aio_differences import DIFFERENCES

HERE = Path(__file__).parent
DOCS = HERE.parent.parent / "docs" / "aio.md"


def _base(test_id: str) -> str:
    """``aiosqlite.tests.smoke.SmokeTest.method`` -> ``SmokeTest.method``."""
    return ".".join(test_id.split(".")[-2:])


def test_aiosqlite_suite_passes_but_for_the_listed_differences(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(HERE / "aiosqlite_conformance.py"), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.exists(), f"the suite did not finish:\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert result["run"] >= 30, result["run"]  # (the whole suite ran)
    failed = {_base(t) for t in result["failed"]}
    unlisted = sorted(failed - DIFFERENCES.keys())
    details = "\n\n".join(result["details"][t] for t in result["failed"] if _base(t) in unlisted)
    assert not unlisted, f"failing, not listed in aio_differences.py: {unlisted}\n{details}"
    ran = {_base(t) for t in result["ids"]}
    fixed = sorted(k for k in DIFFERENCES if k in ran and k not in failed)
    assert not fixed, f"listed in aio_differences.py but passing now (remove them): {fixed}"
    print(
        f"aiosqlite suite: {result['run']} tests, {len(result['failed'])} failed (listed), "
        f"{len(result['skipped'])} skipped: {result['skipped']}"
    )


def test_the_docs_list_every_difference() -> None:
    text = DOCS.read_text()
    missing = [k for k in DIFFERENCES if k.rsplit(".", 1)[1] not in text]
    assert not missing, f"docs/aio.md does not name: {missing}"
