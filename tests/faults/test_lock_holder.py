"""Another process holds the file's write lock (``BEGIN IMMEDIATE``) longer than
``busy_timeout``.

What must hold, sync and async: every write (a single write, a batch of group-committed ones,
``run_write``, a transaction) raises :class:`litegate.Busy` -- not before ``busy_timeout``, and
without hanging (well within ``busy_timeout`` + 5 s); nothing of them is written; reads go on
meanwhile and see the committed data; once the other process commits, the next write gets the
lock at the first try (no busy retry) and the other process's row is there. A lock released
*within* ``busy_timeout`` is waited for, never surfaced.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import litegate
from helpers import Outcome, wait_for

BUSY_TIMEOUT = 0.5
# Not a timing test: the bound only tells "raised after waiting as configured" from "hung".
HANG = BUSY_TIMEOUT + 5.0

HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO t(who) VALUES ('holder')")
print("held", flush=True)
conn.execute(sys.stdin.readline().strip() or "ROLLBACK")  # COMMIT or ROLLBACK
print("released", flush=True)
sys.stdin.read()  # the connection stays open, without a lock, until the test ends
"""


class Holder:
    """A child process holding the database's write lock (inside an uncommitted write of
    its own row) until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == "held"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def release(self, how: str = "COMMIT") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(how + "\n")
        self.proc.stdin.flush()
        assert self._line() == "released"

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


@contextmanager
def lock_held(path: Path) -> Iterator[Holder]:
    holder = Holder(path)
    try:
        yield holder
    finally:
        holder.stop()


SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT); INSERT INTO t(who) VALUES ('before')"


def _open(path: Path, busy_timeout: float = BUSY_TIMEOUT) -> litegate.Database:
    db = litegate.connect(path, busy_timeout=busy_timeout, readers=2)
    db.executescript(SCHEMA)
    return db


def _who(db: litegate.Database) -> list[str]:
    return [r[0] for r in db.query("SELECT who FROM t ORDER BY id")]


def _timed(fn: Any) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        fn()
    except BaseException as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


def _transaction(db: litegate.Database) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO t(who) VALUES ('tx')")


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda db: db.execute("INSERT INTO t(who) VALUES ('w')"), id="execute"),
        pytest.param(
            lambda db: db.run_write(lambda c: c.execute("INSERT INTO t(who) VALUES ('f')")),
            id="run_write",
        ),
        pytest.param(_transaction, id="transaction"),
    ],
)
def test_write_raises_busy_after_busy_timeout_and_reads_go_on(tmp_path: Path, write: Any) -> None:
    with _open(tmp_path / "app.db") as db:
        with lock_held(tmp_path / "app.db") as holder:
            busy_before = db.stats().busy_timeouts
            out = Outcome(lambda: _timed(lambda: write(db)))
            reads = 0
            while out.thread.is_alive():  # reads are served while the write waits
                assert _who(db) == ["before"]
                reads += 1
            error, waited = out.join().result
            assert isinstance(error, litegate.Busy), error
            assert f"busy_timeout={BUSY_TIMEOUT}s" in str(error)
            assert BUSY_TIMEOUT <= waited < HANG, waited
            assert reads > 0
            assert db.stats().busy_timeouts == busy_before + 1
            holder.release("COMMIT")
            retries = db.stats().busy_retries
            write(db)  # at the first try: the lock is free
            assert db.stats().busy_retries == retries
        assert _who(db)[:2] == ["before", "holder"] and len(_who(db)) == 3


def test_group_committed_writes_all_raise_busy_none_written(tmp_path: Path) -> None:
    """Writes queued behind the first one form batches; each batch's BEGIN IMMEDIATE times out,
    every job of it fails with Busy, and none is acknowledged."""
    n = 8
    with _open(tmp_path / "app.db") as db:
        with lock_held(tmp_path / "app.db") as holder:
            start = threading.Barrier(n)

            def one(i: int) -> tuple[BaseException | None, float]:
                start.wait()
                return _timed(lambda: db.execute("INSERT INTO t(who) VALUES (?)", (f"w{i}",)))

            outs = [Outcome(partial(one, i)) for i in range(n)]
            results = [o.join().result for o in outs]
            assert all(isinstance(e, litegate.Busy) for e, _ in results), results
            # The first batch waits busy_timeout; one queued behind it, at most twice that.
            assert all(BUSY_TIMEOUT <= w < 2 * BUSY_TIMEOUT + HANG for _, w in results)
            assert _who(db) == ["before"]
            holder.release("ROLLBACK")  # its row is gone too
        db.execute("INSERT INTO t(who) VALUES ('after')")
        assert _who(db) == ["before", "after"]


def test_lock_released_within_busy_timeout_is_waited_for(tmp_path: Path) -> None:
    with _open(tmp_path / "app.db", busy_timeout=10.0) as db:
        with lock_held(tmp_path / "app.db") as holder:
            out = Outcome(lambda: db.execute("INSERT INTO t(who) VALUES ('waited')"))
            wait_for(lambda: db.stats().busy_retries > 0, what="the write to wait for the lock")
            holder.release("COMMIT")
            assert out.join().error is None
        assert _who(db) == ["before", "holder", "waited"]


async def test_async_writes_raise_busy_and_reads_go_on(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    adb = await litegate.connect_async(path, busy_timeout=BUSY_TIMEOUT, readers=2)
    try:
        await adb.executescript(SCHEMA)
        holder = await asyncio.to_thread(Holder, path)
        try:
            loop = asyncio.get_running_loop()

            async def write(i: int) -> tuple[BaseException | None, float]:
                start = loop.time()
                try:
                    await adb.execute("INSERT INTO t(who) VALUES (?)", (f"a{i}",))
                except BaseException as exc:
                    return exc, loop.time() - start
                return None, loop.time() - start

            async def transaction() -> tuple[BaseException | None, float]:
                start = loop.time()
                try:
                    async with adb.transaction() as tx:
                        await tx.execute("INSERT INTO t(who) VALUES ('atx')")
                except BaseException as exc:
                    return exc, loop.time() - start
                return None, loop.time() - start

            tasks = [asyncio.ensure_future(write(i)) for i in range(5)]
            tasks.append(asyncio.ensure_future(transaction()))
            reads = 0
            while not all(t.done() for t in tasks):  # reads are served while writes wait
                rows = await adb.query("SELECT who FROM t ORDER BY id")
                assert [r[0] for r in rows] == ["before"]
                reads += 1
                await asyncio.sleep(0.01)
            results = [t.result() for t in tasks]
            assert all(isinstance(e, litegate.Busy) for e, _ in results), results
            assert all(BUSY_TIMEOUT <= w < 3 * BUSY_TIMEOUT + HANG for _, w in results), results
            assert reads > 0
            await asyncio.to_thread(holder.release, "COMMIT")
            retries = (await adb.stats()).busy_retries
            await adb.execute("INSERT INTO t(who) VALUES ('after')")
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(who) VALUES ('atx-after')")
            assert (await adb.stats()).busy_retries == retries
        finally:
            await asyncio.to_thread(holder.stop)
        rows = await adb.query("SELECT who FROM t ORDER BY id")
        assert [r[0] for r in rows] == ["before", "holder", "after", "atx-after"]
    finally:
        await adb.close()
