"""The naive store app really fails under the load litegate's app passes (so the demo's
comparison is honest): 500s, and the server log names the sqlite3 error."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

from litegate._demo import web

CROSS_THREAD = "SQLite objects created in a thread"
LOCKED = "database is locked"


def test_naive_app_fails_under_the_same_load() -> None:
    run = web.run_app("naive", web.APPS["naive sqlite3"], requests=1500, clients=256, seed=7)
    r = run.result
    assert r.requests == 1500
    assert r.non_2xx > 0, dict(r.status)
    assert r.status[500] > 0
    assert CROSS_THREAD in run.log or LOCKED in run.log, run.log[-3000:]
    # The calls that cross threads (asyncio.to_thread, the `def` route) fail every time.
    assert r.by_route["status"]["ok"] == 0 and r.by_route["status"]["error"] > 0
    assert r.by_route["search"]["ok"] == 0 and r.by_route["search"]["error"] > 0
    assert any(CROSS_THREAD in msg for msg in r.server_errors), r.server_errors
    assert not web.verdict(run)
