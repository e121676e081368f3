"""CPython's own ``test_sqlite3`` suite, run against ``litegate.sqlite3`` in place of ``sqlite3``.

Every test must pass or be listed, with its reason, in dropin_differences.py (and in
docs/sqlite3.md); a listed test that passes fails this check too, so the list stays exact.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dropin_differences import DIFFERENCES, FROM_PYTHON

HERE = Path(__file__).parent
DOCS = HERE.parent.parent / "docs" / "sqlite3.md"


def _base(test_id: str) -> str:
    """``test.test_sqlite3.mod.Class.method (subtest)`` -> ``mod.Class.method``."""
    return re.sub(r" \(.*", "", test_id.split(".", 2)[2])


def test_cpython_suite_passes_but_for_the_listed_differences(tmp_path: Path) -> None:
    if importlib.util.find_spec("test.test_sqlite3") is None:
        pytest.skip(
            f"this Python ({sys.executable}) has no test.test_sqlite3 (Debian ships it in "
            "libpython3.X-testsuite; pyenv builds include it)"
        )
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(HERE / "cpython_conformance.py"), str(out)],
        cwd=tmp_path,  # (the suite leaves files named @test_* in its working directory)
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), f"the suite did not finish:\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert result["run"] > 400, result["run"]  # (the whole suite ran, not a module of it)
    failed = {_base(t) for t in result["failed"]}
    unlisted = sorted(failed - DIFFERENCES.keys())
    details = "\n\n".join(result["details"][t] for t in result["failed"] if _base(t) in unlisted)
    assert not unlisted, f"failing, not listed in dropin_differences.py: {unlisted}\n{details}"
    ran = {_base(t) for t in result["ids"]}
    fixed = sorted(
        k
        for k in DIFFERENCES
        if k in ran and k not in failed and sys.version_info >= FROM_PYTHON.get(k, (3, 0))
    )
    assert not fixed, f"listed in dropin_differences.py but passing now (remove them): {fixed}"
    print(  # (the figures, for the record: pytest -s shows them)
        f"python {result['python']}: {result['run']} tests, {len(result['failed'])} failed "
        f"({len(failed)} listed differences), {len(result['skipped'])} skipped"
    )


def test_the_docs_list_every_difference() -> None:
    text = DOCS.read_text()
    missing = [k for k in DIFFERENCES if k.rsplit(".", 1)[1] not in text]
    assert not missing, f"docs/sqlite3.md does not name: {missing}"
