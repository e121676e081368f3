"""Lone async writes run on the event loop where a COMMIT costs no fsync
(``litegate._engine._loop_write``): when, and that nothing else about a write changes."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import litegate
from helpers import interrupt_at, writer_autocheckpoint
from litegate import _statements as stmt
from litegate._engine import (
    _async_lease,
    _connection,
    _costs,
    _lane_loop,
    _lane_turns,
    _loop_group,
    _loop_write,
)

SLOW_INSERT_N = (
    "INSERT INTO t(v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
    "SELECT x + 1 FROM c) SELECT x FROM c LIMIT ?)"
)
SLOW_INSERT = (
    "INSERT INTO t(v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
    "SELECT x + 1 FROM c) SELECT x FROM c LIMIT 200000)"
)


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
        for i in range(6):
            if i == 1:
                commits_here.clear()  # (the first run of a SQL text is measured off the loop)
            result = await adb.execute("INSERT INTO t(v) VALUES (?)", (i,))
            assert result.rowcount == 1 and result.lastrowid == i + 1
        assert await adb.query_value("SELECT count(*) FROM t") == 6
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
        await adb.execute(SLOW_INSERT_N, (10,))  # new: measured on the writer thread (quick)
        await adb.execute("DELETE FROM t WHERE v <= ?", (10,))
        assert await adb.query_value("SELECT count(*) FROM t") == 0
        commits_here.clear()
        await adb.execute(SLOW_INSERT_N, (200000,))  # interrupted here, re-run off the loop
        assert await adb.query_value("SELECT count(*) FROM t") == 200000  # once, not twice
        assert await adb.query_value("SELECT sum(v) FROM t") == 200000 * 200001 // 2
        with pytest.raises(sqlite3.IntegrityError):  # known slow now: straight to the writer
            await adb.execute(SLOW_INSERT_N, (5,))
        assert await adb.query_value("SELECT count(*) FROM t") == 200000
        stats = await adb.stats()
    finally:
        await adb.close()
    assert commits_here == []  # none of it committed on the loop
    assert (stats.jobs_ok, stats.jobs_failed) == (4, 1), stats  # (the move is no failure)


async def test_statements_measured_slow_off_the_loop_never_run_on_it(db_path: str) -> None:
    # DELETE without WHERE and DROP TABLE are one VM step each, however much they free: judged
    # by the CPU time of their first run (on the writer thread), they stay off the loop
    adb = await _open(db_path)
    try:
        await adb.execute("CREATE TABLE u(v)")
        fill = "INSERT INTO u(v) SELECT randomblob(100) FROM (" + SLOW_INSERT.split("(", 2)[2]
        for _ in range(2):
            await adb.execute(fill)
            await adb.execute("DELETE FROM u")
        await adb.execute(fill)
        await adb.execute("DROP TABLE u")
        assert await adb.query_value("SELECT count(*) FROM sqlite_schema WHERE name = 'u'") == 0
    finally:
        await adb.close()


@pytest.mark.parametrize(
    ("func", "text"),
    [
        (_lane_loop.LaneLoop.take_here, "begun = self._begin_if_free()"),  # taken
        (_lane_turns.LaneTurns._begin_if_free, "guard.permit()"),
        (_lane_turns.LaneTurns._begin_if_free, "guard.revoke()"),  # BEGIN ran
        (_lane_loop.LaneLoop.take_here, "if not begun:"),
        (_lane_loop.LaneLoop.take_here, "return self._conn"),
        (_loop_write._run_here, "if conn is None:"),
        (_loop_write._run_here, "budget = _Budget()"),
        (_loop_write._run_here, "error = lane.end_here(True)"),  # ran, before its COMMIT
        (_connection.commit_on_loop, "conn.execute(COMMIT)"),  # checkpoints held off
    ],
)
async def test_an_interrupt_on_the_loop_never_strands_the_lane(
    db_path: str, func: Any, text: str
) -> None:
    adb = await _open(db_path)
    try:
        sql = "INSERT INTO t(v) VALUES (?)"
        await adb.execute(sql, (0,))  # (measured: quick)
        tracer = sys.gettrace()  # (coverage's, under `make test`: put back after)
        sys.settrace(interrupt_at(func, text))
        try:
            with pytest.raises(KeyboardInterrupt):
                await adb.execute(sql, (1,))
        finally:
            sys.settrace(tracer)
        await adb.execute(sql, (2,), timeout=2.0)  # the lane works again
        assert [r[0] for r in await adb.query("SELECT v FROM t ORDER BY v")] == [0, 2]
        # (and SQLite's automatic checkpoint is given back by a COMMIT off the loop)
        assert await asyncio.to_thread(writer_autocheckpoint, adb.as_sync()) == 1000
    finally:
        await adb.close()


async def test_a_failing_lone_write_raises_its_error_and_keeps_nothing(
    db_path: str, commits_here: list[int]
) -> None:
    adb = await _open(db_path)
    try:
        two = "INSERT INTO t(v) VALUES (?), (?)"
        await adb.execute(two, (1, 2))  # (measured off the loop: quick)
        commits_here.clear()
        with pytest.raises(sqlite3.IntegrityError):
            await adb.execute(two, (3, 1))  # (on the loop; its 2nd row fails)
        for _ in range(2):
            with pytest.raises(litegate.Refused):
                await adb.execute("PRAGMA journal_mode=DELETE")
        assert [r[0] for r in await adb.query("SELECT v FROM t ORDER BY v")] == [1, 2]
        await adb.execute(two, (3, 4))  # the lane is free again
        assert await adb.query_value("SELECT count(*) FROM t") == 4
        stats = await adb.stats()
    finally:
        await adb.close()
    assert len(commits_here) == 1  # (the one that succeeded, on the loop)
    assert (stats.jobs_ok, stats.jobs_failed) == (3, 3), stats


async def test_writes_that_arrive_together_are_group_committed_off_the_loop(
    db_path: str, commits_here: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """They run their statements on the loop, into the loop's write group (the one that gave
    way joins it), and the writer thread runs the group's one COMMIT."""
    sql = "INSERT INTO t(v) VALUES (?)"
    adb = await _open(db_path)
    ran_on: list[int] = []
    real = stmt.run_execute  # (what _loop_group runs a statement with)

    def spy(conn: sqlite3.Connection, sql: str, params: Any = ()) -> stmt.Result:
        ran_on.append(threading.get_ident())
        return real(conn, sql, params)

    try:
        await adb.execute(sql, (-1,))  # (a new text is measured off the loop first)
        commits_here.clear()
        before = await adb.stats()
        monkeypatch.setattr(_loop_group, "run_execute", spy)
        await asyncio.gather(*(adb.execute(sql, (i,)) for i in range(64)))
        assert await adb.query_value("SELECT count(*) FROM t") == 65
        stats = await adb.stats()
        assert stats.batches - before.batches == 1, stats  # (one COMMIT for all 64)
        assert stats.max_batch_size == 64, stats
    finally:
        await adb.close()
    assert ran_on == [threading.get_ident()] * 64  # (each statement on the loop)
    assert commits_here == []  # (the COMMIT: off the loop)


@pytest.mark.blocks_loop("a task blocks the iteration the first write gives way in")
async def test_a_write_that_gave_way_and_joined_a_group_is_timed_from_its_call(
    db_path: str,
) -> None:
    """Its stats time includes the loop iteration it gave way for (here 0.2 s long)."""
    sql = "INSERT INTO t(v) VALUES (?)"
    adb = await _open(db_path)

    async def blocker() -> None:
        time.sleep(0.2)  # noqa: ASYNC251 (the long iteration under test)

    try:
        await adb.execute(sql, (0,))  # (measured off the loop: quick; timed ~0)
        await asyncio.gather(adb.execute(sql, (1,)), adb.execute(sql, (2,)), blocker())
        stats = await adb.stats()  # (3 writes timed: ~0, and ~0.2 s for both of these)
        assert stats.write_p50_ms >= 150.0, stats
    finally:
        await adb.close()


async def test_a_write_cancelled_while_it_gives_way_never_runs(db_path: str) -> None:
    adb = await _open(db_path)
    try:
        task = asyncio.create_task(adb.execute("INSERT INTO t(v) VALUES (1)"))
        if asyncio.get_running_loop().get_task_factory() is None:
            await asyncio.sleep(0)  # it runs up to its first yield
        # (An eager task ran up to it inside create_task: a sleep here would let it go on
        # past the give-way and queue the write, and the cancellation would race the writer
        # thread's start of it: the 3.13 "eager" leg failed so once.)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await adb.execute("INSERT INTO t(v) VALUES (2)")
        assert [r[0] for r in await adb.query("SELECT v FROM t")] == [2]
    finally:
        await adb.close()


@pytest.mark.blocks_loop("the one-step 30 MB UPDATE runs on the loop once (README: the limit)")
async def test_a_transaction_after_a_heavy_statement_does_not_commit_on_the_loop(
    db_path: str, commits_here: list[int]
) -> None:
    # one row changed, but ~30 MB of pages to write: found slow, so its COMMIT goes off the loop
    adb = await _open(db_path)
    try:
        await adb.execute("INSERT INTO t(v) VALUES (1)")
        for n in (1, 1):  # first run measured on the writer thread, second on the loop
            async with adb.transaction() as tx:
                await tx.execute("UPDATE t SET v = zeroblob(?)", (n,))
        commits_here.clear()
        async with adb.transaction() as tx:
            await tx.execute("UPDATE t SET v = zeroblob(?)", (30_000_000,))
        assert tx.committed
        assert await adb.query_value("SELECT length(v) FROM t") == 30_000_000
    finally:
        await adb.close()
    assert commits_here == []


def _jumpy(real: Callable[[], float]) -> Callable[[], float]:
    """``real``, one second later at its 2nd reading only (a run's end reading)."""
    calls = [0]

    def clock() -> float:
        calls[0] += 1
        return real() + (1.0 if calls[0] == 2 else 0.0)

    return clock


async def test_a_write_slow_once_on_the_loop_is_measured_again_off_it_then_comes_back(
    db_path: str, commits_here: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # one run over SLOW_SECONDS of CPU (a page fault, a tracer, or a heavy one-step statement)
    # makes the text unknown: its next run is measured on the writer thread, and a quick text
    # comes back to the loop (it is never marked slow for good by one reading)
    adb = await _open(db_path)
    try:
        sql = "INSERT INTO t(v) VALUES (?)"
        await adb.execute(sql, (0,))  # measured: quick
        # (CPU time is read at the end only once the wall time is over: both jump)
        monkeypatch.setattr(_costs, "thread_time", _jumpy(time.thread_time))
        monkeypatch.setattr(_costs, "perf_counter", _jumpy(time.perf_counter))
        commits_here.clear()
        await adb.execute(sql, (1,))  # on the loop, judged slow: unknown again
        assert len(commits_here) == 1
        await adb.execute(sql, (2,))  # measured on the writer thread
        assert len(commits_here) == 1
        await adb.execute(sql, (3,))  # quick again: on the loop
        assert len(commits_here) == 2
        assert await adb.query_value("SELECT count(*) FROM t") == 4
    finally:
        await adb.close()


async def test_a_transaction_write_slow_once_commits_off_the_loop_and_is_measured_again(
    db_path: str, commits_here: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same inside an async transaction: a known-quick write whose run took over
    SLOW_SECONDS of CPU (both clocks jump at its end reading) makes the transaction heavy --
    its COMMIT goes off the loop -- and its text unknown: the next run is measured on the
    writer thread (heavy again), and the one after is quick on the loop."""
    adb = await _open(db_path)
    try:
        sql = "INSERT INTO t(v) VALUES (?)"

        async def tx_write(v: int) -> None:
            async with adb.transaction() as tx:
                await tx.execute(sql, (v,))
            assert tx.committed

        await tx_write(0)  # measured on the writer thread: quick
        commits_here.clear()
        await tx_write(1)
        assert len(commits_here) == 1  # quick: its COMMIT on the loop
        monkeypatch.setattr(_async_lease, "thread_time", _jumpy(time.thread_time))
        monkeypatch.setattr(_async_lease, "perf_counter", _jumpy(time.perf_counter))
        await tx_write(2)  # judged slow
        assert len(commits_here) == 1
        await tx_write(3)  # unknown again: measured on the writer thread
        assert len(commits_here) == 1
        await tx_write(4)  # quick again
        assert len(commits_here) == 2
        assert await adb.query_value("SELECT count(*) FROM t") == 5
    finally:
        await adb.close()


@pytest.mark.parametrize("named", [False, True])
async def test_a_transaction_write_with_a_large_parameter_runs_off_the_loop(
    db_path: str, commits_here: list[int], named: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A known-quick text still goes to the writer thread when a parameter is large
    (LARGE_VALUE or longer: binding and writing it is one VM step however long it takes), and
    its transaction COMMITs off the loop; small values of the same text stay on the loop."""
    adb = await _open(db_path)
    sql = "INSERT INTO t(v) VALUES (:v)" if named else "INSERT INTO t(v) VALUES (?)"
    here = threading.get_ident()
    on_loop: list[bool] = []
    real = stmt.run_execute

    def spy(conn: sqlite3.Connection, sql: str, params: Any = ()) -> Any:
        on_loop.append(threading.get_ident() == here)
        return real(conn, sql, params)

    try:
        for i, value in enumerate((0, 1, b"x" * _costs.LARGE_VALUE, "y" * 70_000, 2)):
            async with adb.transaction() as tx:
                if i == 1:
                    commits_here.clear()  # (the text is known quick from here on)
                    monkeypatch.setattr(_async_lease, "run_execute", spy)
                await tx.execute(sql, {"v": value} if named else (value,))
            assert tx.committed
    finally:
        await adb.close()
    assert on_loop == [True, False, False, True]  # small here, large on the writer thread
    assert commits_here == [here, here]  # the two small ones; both large ones off the loop


async def test_a_writer_reopened_after_a_loop_commit_holds_the_checkpoint_off_again(
    db_path: str, commits_here: list[int]
) -> None:
    """A COMMIT on the loop holds the automatic checkpoint off (recorded on the lane's guard);
    a function that closes the writer connection gets a new one, which has it on: the next
    COMMIT on the loop must switch it off there too (a stale record would let that COMMIT
    checkpoint, and fsync, on the loop)."""
    adb = await _open(db_path)
    try:
        sql = "INSERT INTO t(v) VALUES (?)"
        await adb.execute(sql, (0,))  # measured: quick
        await adb.execute(sql, (1,))  # on the loop: held off
        with pytest.raises(litegate.Misuse, match="closed the write lane's connection"):
            await adb.run_write(lambda conn: conn.close())
        commits_here.clear()
        await adb.execute(sql, (2,))  # on the loop, on the new connection
        assert commits_here
        async with adb.transaction() as tx:  # (a read on the writer connection)
            assert await tx.query_value("PRAGMA wal_autocheckpoint") == 0
        assert await adb.query_value("SELECT count(*) FROM t") == 3
    finally:
        await adb.close()
