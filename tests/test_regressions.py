"""Regressions found by review, each named after the failure it pins."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import litegate
from helpers import Outcome, lane_held, lane_held_async, wait_for

SLOW_INSERT = (
    "INSERT INTO t SELECT i FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
    "SELECT i+1 FROM c WHERE i < 30000000) SELECT i FROM c) WHERE i = -1"
)


async def test_caught_timeout_inside_async_transaction_never_autocommits(db_path: str) -> None:
    """The cancelled statement was interrupted and SQLite rolled the transaction back; later
    statements ran in autocommit mode and tx.committed said True."""
    async with litegate.connect_async(db_path) as adb:
        await adb.execute("CREATE TABLE t(x)")
        tx = adb.transaction()
        with pytest.raises(litegate.RolledBack, match="did not commit"):
            async with tx:
                await tx.execute("INSERT INTO t VALUES ('first')")
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await tx.execute(SLOW_INSERT)
                with pytest.raises(litegate.RolledBack, match="rolled back"):
                    await tx.execute("INSERT INTO t VALUES ('second')")
        assert await adb.query("SELECT x FROM t") == []
    assert not tx.committed


async def test_async_savepoint_rolls_back_on_a_caught_timeout(db_path: str) -> None:
    async with litegate.connect_async(db_path) as adb:
        await adb.execute("CREATE TABLE t(x)")
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES ('outer')")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    async with tx.savepoint():
                        await tx.execute("INSERT INTO t VALUES ('inside')")
                        await asyncio.sleep(1)
        assert tx.committed
        assert [r[0] for r in await adb.query("SELECT x FROM t")] == ["outer"]


async def test_cancelled_lane_read_does_not_interrupt_another_callers_write(db_path: str) -> None:
    slow = (
        "INSERT INTO t SELECT i FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
        "SELECT i+1 FROM c WHERE i < 3000000) SELECT i FROM c) WHERE i % 1000000 = 0"
    )
    async with litegate.connect_async(db_path, readers=0) as adb:
        await adb.execute("CREATE TABLE t(x)")
        async with lane_held_async(adb.as_sync()):
            w = asyncio.create_task(adb.execute(slow))
            r = asyncio.create_task(adb.query("SELECT count(*) FROM t"))
            await asyncio.sleep(0.05)  # both queued behind the transaction
        await asyncio.sleep(0.1)  # the writer runs the batch [w, r]; w is running
        r.cancel()
        res = await w
        assert res.rowcount == 3
        assert await adb.query_value("SELECT count(*) FROM t") == 3


def test_write_function_that_swallows_a_rollback_fails_without_losing_its_batch(
    db_path: str,
) -> None:
    with litegate.connect(db_path) as db:
        db.execute("CREATE TABLE t(x UNIQUE)")
        db.execute("INSERT INTO t VALUES ('dup')")

        def tolerant(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT OR ROLLBACK INTO t VALUES ('dup')")
            except sqlite3.IntegrityError:
                pass

        with lane_held(db):
            a = Outcome(lambda: db.execute("INSERT INTO t VALUES ('A')"))
            wait_for(lambda: db.stats().queue_depth == 1)
            b = Outcome(lambda: db.run_write(tolerant))
            wait_for(lambda: db.stats().queue_depth == 2)
            c = Outcome(lambda: db.execute("INSERT INTO t VALUES ('C')"))
            wait_for(lambda: db.stats().queue_depth == 3)
        assert a.join().error is None and c.join().error is None
        assert isinstance(b.join().error, litegate.RolledBack)
        assert [r[0] for r in db.query("SELECT x FROM t ORDER BY x")] == ["A", "C", "dup"]


async def test_cancelled_snapshot_query_keeps_its_reader_until_it_stops(db_path: str) -> None:
    def on_connect(conn: sqlite3.Connection) -> None:
        def slow(x: object) -> object:
            time.sleep(0.5)
            return x

        conn.create_function("slow", 1, slow)

    async with litegate.connect_async(db_path, readers=1, on_connect=on_connect) as adb:
        await adb.execute("CREATE TABLE t(x)")
        await adb.execute("INSERT INTO t VALUES (1)")

        async def snap_task() -> None:
            async with adb.snapshot() as snap:
                async for _ in snap.iterate("SELECT slow(x) FROM t"):
                    pass

        lags: list[float] = []

        async def heartbeat() -> None:
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - t)

        hb = asyncio.create_task(heartbeat())
        t = asyncio.create_task(snap_task())
        await asyncio.sleep(0.1)
        lags.clear()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await asyncio.sleep(0.05)
        hb.cancel()
        assert max(lags) < 0.3  # the loop was not held by the reader's ROLLBACK
        # the reader came back clean and works
        assert await adb.query_value("SELECT count(*) FROM t", timeout=5) == 1
        assert (await adb.stats()).pool_in_use == 0


async def test_operation_queued_after_the_block_ended_fails_instead_of_hanging(
    db_path: str,
) -> None:
    async with litegate.connect_async(db_path) as adb:
        await adb.execute("CREATE TABLE t(x UNIQUE)")
        await adb.execute("INSERT INTO t VALUES (1)")
        b: asyncio.Task[litegate.Result] | None = None
        with pytest.raises(ValueError):
            async with adb.transaction() as tx:
                b = asyncio.create_task(tx.execute("INSERT INTO t VALUES (1)"))
                await asyncio.sleep(0)
                raise ValueError("leave the block")
        assert b is not None
        with pytest.raises((sqlite3.IntegrityError, litegate.Misuse)):
            await asyncio.wait_for(b, 5)


async def test_async_rollback_by_exception_logs_no_error(
    db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="litegate")

    async with litegate.connect_async(db_path) as adb:
        await adb.execute("CREATE TABLE t(x)")
        with pytest.raises(KeyError):
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (1)")
                raise KeyError
        assert await adb.query_value("SELECT count(*) FROM t") == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_interrupt_while_waiting_for_the_lane_does_not_strand_it(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with litegate.connect(db_path, timeout=1.0) as db:
        db.execute("CREATE TABLE t(x)")
        from litegate._engine import _lane

        class InterruptedWait:
            """A LaneHold's ``done`` whose waiter gets "Ctrl-C" once the writer granted it."""

            def __init__(self, lock: Any) -> None:
                self.lock = lock

            def acquire(self, *_: object) -> bool:
                time.sleep(0.2)  # let the writer grant it, then "Ctrl-C"
                raise KeyboardInterrupt

            def release(self) -> None:
                self.lock.release()

        class InterruptedHold(_lane.LaneHold):
            __slots__ = ()

            def __init__(self) -> None:
                super().__init__()
                self.done = InterruptedWait(self.done)

        with lane_held(db):
            monkeypatch.setattr(_lane, "LaneHold", InterruptedHold)
            got: list[BaseException] = []

            def waiter() -> None:
                try:
                    with db.transaction():
                        pass  # pragma: no cover
                except BaseException as exc:
                    got.append(exc)

            t = threading.Thread(target=waiter)
            t.start()
            t.join(5)
            monkeypatch.undo()
        assert len(got) == 1 and isinstance(got[0], KeyboardInterrupt)
        db.execute("INSERT INTO t VALUES (1)", timeout=2)  # the lane is not stranded
        assert db.query_value("SELECT count(*) FROM t") == 1


def test_database_call_inside_run_write_is_misuse_not_a_deadlock(tmp_path: Path) -> None:
    with litegate.connect(str(tmp_path / "r.db")) as db:
        db.execute("CREATE TABLE t(x)")
        t0 = time.monotonic()
        with pytest.raises(litegate.Misuse, match="run_write"):
            db.run_write(lambda conn: db.execute("INSERT INTO t VALUES (1)"), timeout=None)
        assert db.run_write(lambda conn: db.query_value("SELECT 7")) == 7  # a pool read is fine
        assert time.monotonic() - t0 < 1
    with litegate.connect(str(tmp_path / "r0.db"), readers=0) as db:
        with pytest.raises(litegate.Misuse, match="run_write"):
            db.run_write(lambda conn: db.query_value("SELECT 1"), timeout=None)
