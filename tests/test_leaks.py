"""Opening and closing many databases leaks no file descriptor and no thread."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

import litegate


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_open_close_fifty_times_leaks_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "leak.db")
    with litegate.connect(path) as db:
        db.execute("CREATE TABLE t(x)")
    fds, threads = _fds(), threading.active_count()
    for i, readers in zip(range(50), [4, "per-thread", 0] * 17, strict=False):
        db = litegate.connect(path, readers=readers)  # type: ignore[arg-type]
        db.execute("INSERT INTO t VALUES (?)", (i,))
        assert db.query_value("SELECT count(*) FROM t") == i + 1
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (-1)")
            tx.execute("DELETE FROM t WHERE x = -1")
        adb = db.as_async()

        async def use(adb: litegate.AsyncDatabase = adb) -> None:
            await adb.execute("UPDATE t SET x = x WHERE x = 0")
            await adb.run_read(lambda c: c.execute("SELECT 1").fetchall())

        asyncio.run(use())  # a fresh loop per round: its own FDs must come back too
        db.close()
    for t in threading.enumerate():
        if t.name.startswith("litegate-"):
            t.join(5)
    assert _fds() == fds
    assert threading.active_count() == threads
