"""Lone async writes run on the event loop where a COMMIT costs no fsync
(``litegate._engine._loop_write``): when, and that nothing else about a write changes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

import pytest

import litegate
from litegate._engine import _connection, _lane_turns

SLOW_INSERT = (
    "INSERT INTO t(v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
    "SELECT x + 1 FROM c) SELECT x FROM c LIMIT 200000)"
)


@pytest.fixture
def commits_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads that ran a COMMIT on a loop (held-off checkpoint), in order."""
    on: list[int] = []
    real = _connection.commit_on_loop

    def spy(conn: sqlite3.Connection, guard: Any, pages: int) -> None:
        on.append(threading.get_ident())
        real(conn, guard, pages)

    monkeypatch.setattr(_lane_turns, "commit_on_loop", spy)
    return on


async def _open(db_path: str, synchronous: Any = "NORMAL") -> litegate.AsyncDatabase:
    adb = await litegate.connect_async(db_path, synchronous=synchronous)
    await adb.executescript("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    return adb


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_lone_write_runs_on_the_loop_only_where_its_commit_costs_no_fsync(
    db_path: str, synchronous: Any, commits_here: list[int]
) -> None:
    adb = await _open(db_path, synchronous)
    try:
        for i in range(5):
            result = await adb.execute("INSERT INTO t(v) VALUES (?)", (i,))
            assert result.rowcount == 1 and result.lastrowid == i + 1
        assert await adb.query_value("SELECT count(*) FROM t") == 5
    finally:
        await adb.close()
    here = threading.get_ident()
    assert commits_here == ([here] * 5 if synchronous == "NORMAL" else [])


async def test_a_slow_lone_write_is_moved_off_the_loop_and_applied_once(
    db_path: str, commits_here: list[int]
) -> None:
    # (tests/loop_lag.py fails the test if the loop was held: the statement takes ~100 ms)
    adb = await _open(db_path)
    try:
        await adb.execute(SLOW_INSERT)  # interrupted on the loop, run on the writer thread
        assert await adb.query_value("SELECT count(*) FROM t") == 200000  # once, not twice
        assert await adb.query_value("SELECT sum(v) FROM t") == 200000 * 200001 // 2
        with pytest.raises(sqlite3.IntegrityError):  # known slow: straight to the writer
            await adb.execute(SLOW_INSERT)
        assert await adb.query_value("SELECT count(*) FROM t") == 200000
    finally:
        await adb.close()
    assert commits_here == []  # no COMMIT of it ran on the loop


async def test_a_failing_lone_write_raises_its_error_and_keeps_nothing(
    db_path: str, commits_here: list[int]
) -> None:
    adb = await _open(db_path)
    try:
        await adb.execute("INSERT INTO t(v) VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError):
            await adb.execute("INSERT INTO t(v) VALUES (2), (1)")  # (the 2nd row fails)
        with pytest.raises(litegate.Refused):
            await adb.execute("PRAGMA journal_mode=DELETE")
        assert [r[0] for r in await adb.query("SELECT v FROM t")] == [1]
        await adb.execute("INSERT INTO t(v) VALUES (3)")  # the lane is free again
        assert await adb.query_value("SELECT count(*) FROM t") == 2
    finally:
        await adb.close()
    assert len(commits_here) == 2  # (the two that succeeded)


async def test_writes_that_arrive_together_are_group_committed_off_the_loop(
    db_path: str, commits_here: list[int]
) -> None:
    adb = await _open(db_path)
    try:
        await asyncio.gather(*(adb.execute("INSERT INTO t(v) VALUES (?)", (i,)) for i in range(64)))
        assert await adb.query_value("SELECT count(*) FROM t") == 64
        stats = await adb.stats()
        assert stats.max_batch_size > 1, stats
    finally:
        await adb.close()
    assert len(commits_here) <= 1  # (at most the first, alone before the others came)


async def test_a_write_cancelled_while_it_gives_way_never_runs(db_path: str) -> None:
    adb = await _open(db_path)
    try:
        task = asyncio.create_task(adb.execute("INSERT INTO t(v) VALUES (1)"))
        await asyncio.sleep(0)  # it runs up to its first yield
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await adb.execute("INSERT INTO t(v) VALUES (2)")
        assert [r[0] for r in await adb.query("SELECT v FROM t")] == [2]
    finally:
        await adb.close()
