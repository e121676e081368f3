"""Disk full, as ``RLIMIT_FSIZE`` makes it: in a forked child, writes past the limit fail
(``EFBIG``; the ``SIGXFSZ`` that would kill the process is ignored), for root too.

Two ways to run out, each through the sync and the async facade:

* ``wal``: the -wal file grows past the limit (no checkpoint runs meanwhile);
* ``checkpoint``: the lane's idle checkpoints copy each commit into the main file, which grows
  past the limit first; the WAL then keeps the commits, grows, and writes fail too.

What must hold: a write that fails raises a clear error (SQLite's ``disk I/O error`` as
``sqlite3.OperationalError``, or :class:`litegate.RolledBack` for a transaction SQLite rolled
back), and none that failed is acknowledged -- the rows are exactly those of the writes that
returned; reads go on meanwhile; once space is back (the limit raised) writes and checkpoints
work again on the same open database; the file passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbfiles import SUFFIXES
from forked import run_forked

import litegate

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

ROOM = 128 * 1024  # bytes a file may grow past its size when the limit is set
PAYLOAD = "x" * 32_000  # eight pages a row
MAX_WRITES = 2000  # the limit is reached long before (ROOM / 32 KB = 4 rows)
FAILURES = 5  # failing writes tried while full
CLEAR = ("disk I/O error", "database or disk is full")


class Driver:
    """The same script through either facade: ``call("execute", ...)`` runs the method of
    the sync :class:`~litegate.Database`, or awaits that of the
    :class:`~litegate.AsyncDatabase` on a loop of its own."""

    def __init__(self, facade: str, path: Path, **opts: Any) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        if facade == "async":
            self.loop = asyncio.new_event_loop()
            self.db: Any = self.loop.run_until_complete(_connect_async(path, **opts))
        else:
            self.db = litegate.connect(path, **opts)

    def call(self, method: str, *args: Any) -> Any:
        result = getattr(self.db, method)(*args)
        return result if self.loop is None else self.loop.run_until_complete(result)

    def transaction(self, ids: list[int]) -> None:
        """One transaction inserting ``ids``."""
        if self.loop is None:
            with self.db.transaction() as tx:
                for i in ids:
                    tx.execute("INSERT INTO t(id, v) VALUES (?, ?)", (i, PAYLOAD))
        else:
            self.loop.run_until_complete(self._transaction(ids))

    async def _transaction(self, ids: list[int]) -> None:
        async with self.db.transaction() as tx:
            for i in ids:
                await tx.execute("INSERT INTO t(id, v) VALUES (?, ?)", (i, PAYLOAD))

    def close(self) -> None:
        self.call("close")
        if self.loop is not None:
            self.loop.close()


async def _connect_async(path: Path, **opts: Any) -> litegate.AsyncDatabase:
    return await litegate.connect_async(path, **opts)


def _largest_file(path: Path) -> int:
    return max(os.path.getsize(f"{path}{s}") for s in SUFFIXES if os.path.exists(f"{path}{s}"))


def _wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


def _set_limit(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _scenario(path: Path, facade: str, way: str) -> dict[str, Any]:
    """In the child: fill the disk, try writes, read, free space, write again."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    out: dict[str, Any] = {"errors": [], "checkpoint_stuck_at": None}
    # "wal": no idle checkpoint for a minute (and the WAL stays under SQLite's own
    # 1000-page autocheckpoint); "checkpoint": one 20 ms after every write.
    d = Driver(facade, path, readers=2, checkpoint_idle=60.0 if way == "wal" else 0.02)
    acked: list[int] = []
    try:
        d.call("execute", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        if way == "checkpoint":
            assert _wait(lambda: _wal_size(path) == 0, 10.0), "the idle checkpoint never ran"
        limit = _largest_file(path) + ROOM
        out["limit"] = limit
        _set_limit(limit)
        try:
            for i in range(MAX_WRITES):
                try:
                    if i % 10 == 9:
                        d.transaction([i])
                    else:
                        d.call("execute", "INSERT INTO t(id, v) VALUES (?, ?)", (i, PAYLOAD))
                except Exception as exc:
                    out["errors"].append((type(exc).__name__, str(exc), repr(exc.__cause__)))
                    if len(out["errors"]) >= FAILURES:
                        break
                    continue
                acked.append(i)
                if way == "checkpoint" and out["checkpoint_stuck_at"] is None and i % 10 != 9:
                    # The idle checkpoint empties the WAL, until the main file is full. (Not
                    # after a transaction: the lane checkpoints when idle after a write job.)
                    if not _wait(lambda: _wal_size(path) == 0, 2.0):
                        out["checkpoint_stuck_at"] = (i, os.path.getsize(path), _wal_size(path))
            out["acked_while_limited"] = len(acked)
            # Reads while the disk is full: exactly the acknowledged rows.
            out["read_while_full"] = [r[0] for r in d.call("query", "SELECT id FROM t ORDER BY id")]
        finally:
            _set_limit(unlimited)
        # Space is back: the same open database writes again, and checkpoints.
        for i in range(MAX_WRITES, MAX_WRITES + 5):
            d.call("execute", "INSERT INTO t(id, v) VALUES (?, ?)", (i, PAYLOAD))
            acked.append(i)
        d.transaction([MAX_WRITES + 5, MAX_WRITES + 6])
        acked += [MAX_WRITES + 5, MAX_WRITES + 6]
        if way == "checkpoint":
            out["checkpointed_after"] = _wait(lambda: _wal_size(path) == 0, 10.0)
        out["read_after"] = [r[0] for r in d.call("query", "SELECT id FROM t ORDER BY id")]
        out["integrity"] = [r[0] for r in d.call("query", "PRAGMA integrity_check")]
    finally:
        _set_limit(unlimited)
        d.close()
    out["acked"] = acked
    conn = sqlite3.connect(path)  # what the files hold, read without litegate
    try:
        out["plain_integrity"] = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        out["plain_ids"] = [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")]
    finally:
        conn.close()
    return out


@pytest.mark.parametrize("facade", ["sync", "async"])
@pytest.mark.parametrize("way", ["wal", "checkpoint"])
def test_disk_full_fails_writes_clearly_and_recovers_without_reopening(
    tmp_path: Path, way: str, facade: str
) -> None:
    path = tmp_path / "app.db"
    out = run_forked(lambda: _scenario(path, facade, way))
    limited = out["acked"][: out["acked_while_limited"]]
    # It did fill up, and each failure said so clearly.
    assert len(out["errors"]) == FAILURES, out
    for kind, message, cause in out["errors"]:
        assert kind in ("OperationalError", "RolledBack"), out["errors"]
        assert any(c in message or c in cause for c in CLEAR), out["errors"]
    assert 0 < len(limited) < MAX_WRITES
    if way == "checkpoint":  # the main file filled up first, the WAL kept the commits
        assert out["checkpoint_stuck_at"] is not None, out
        _, main_size, wal_size = out["checkpoint_stuck_at"]
        assert main_size <= out["limit"] and wal_size > 0
        assert out["checkpointed_after"]
    # No failed write acknowledged, no acknowledged write lost, reads unaffected.
    assert out["read_while_full"] == sorted(limited)
    assert out["read_after"] == sorted(out["acked"]) == out["plain_ids"]
    assert out["integrity"] == ["ok"] == out["plain_integrity"]
