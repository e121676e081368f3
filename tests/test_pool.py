"""The read pool: lazy opening, bounds, timeouts with diagnostics, per-thread mode."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from contextlib import closing
from typing import Any

import pytest

import litegate
from helpers import Outcome, wait_for
from litegate._engine import _inline, _pool
from litegate._engine._inline import MISS, InlineGuard
from litegate._engine._pool import ReadPool


@pytest.fixture
def pooled(db_path: str) -> litegate.Database:
    db = litegate.connect(db_path, readers=2)
    db.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
    return db


def test_pool_opens_lazily_up_to_its_size(pooled: litegate.Database) -> None:
    with pooled as db:
        assert db.stats().pool_open == 0
        db.query("SELECT * FROM t")
        assert db.stats().pool_open == 1
        barrier = threading.Barrier(4)

        def reader() -> None:
            barrier.wait(5)
            for _ in range(200):
                assert db.query_value("SELECT sum(x) FROM t") == 6

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = db.stats()
        assert 1 <= stats.pool_open <= 2
        assert stats.pool_in_use == 0


def test_pool_timeout_names_size_waiters_and_holder(pooled: litegate.Database) -> None:
    with pooled as db:
        it1 = db.iterate("SELECT x FROM t")
        it2 = db.iterate("SELECT x FROM t")
        next(it1), next(it2)  # both readers now held by this thread
        assert db.stats().pool_in_use == 2
        with pytest.raises(litegate.PoolTimeout) as info:
            db.query("SELECT 1", timeout=0.1)
        msg = str(info.value)
        assert "pool size 2" in msg and "1 caller(s) waiting" in msg and "MainThread" in msg
        assert db.stats().pool_timeouts == 1
        it1.close()
        assert db.query_value("SELECT 1", timeout=1) == 1
        it2.close()
        assert db.stats().pool_in_use == 0


def test_waiter_gets_the_reader_when_it_is_returned(pooled: litegate.Database) -> None:
    with pooled as db:
        it1, it2 = db.iterate("SELECT x FROM t"), db.iterate("SELECT x FROM t")
        next(it1), next(it2)
        out = Outcome(lambda: db.query_value("SELECT count(*) FROM t", timeout=5))
        wait_for(lambda: db.stats().pool_waiting == 1)
        assert [r[0] for r in it1] == [2, 3]  # exhausting the iteration returns its reader
        assert out.join().result == 3
        it2.close()
        assert db.stats().pool_waits == 1


def test_abandoned_iteration_returns_its_reader(pooled: litegate.Database) -> None:
    with pooled as db:
        for _ in range(10):
            with closing(db.iterate("SELECT x FROM t")) as it:
                assert next(it)[0] == 1
        assert db.stats().pool_in_use == 0


def test_per_thread_mode_gives_each_thread_its_connection(db_path: str) -> None:
    with litegate.connect(db_path, readers="per-thread") as db:
        db.execute("CREATE TABLE t(x)")
        seen: dict[str, int] = {}
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def reader(name: str) -> None:
            ids = {db.run_read(lambda c: id(c)) for _ in range(5)}
            assert len(ids) == 1
            with lock:
                seen[name] = ids.pop()
            barrier.wait(5)  # all alive at once, so no connection (or id) is recycled

        threads = [threading.Thread(target=reader, args=(f"t{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 4 and len(set(seen.values())) == 4
        assert db.stats().readers_mode == "per-thread"


def test_per_thread_connection_is_closed_when_its_thread_ends(db_path: str) -> None:
    with litegate.connect(db_path, readers="per-thread") as db:
        db.execute("CREATE TABLE t(x)")
        for _ in range(5):
            t = threading.Thread(target=lambda: db.query("SELECT * FROM t"))
            t.start()
            t.join()
        wait_for(lambda: db.stats().pool_open == 0, what="per-thread readers closed")


def test_lane_mode_reads_through_the_writer(db_path: str) -> None:
    with litegate.connect(db_path, readers=0) as db:
        db.execute("CREATE TABLE t(x)")
        writer_conn = db.run_write(lambda c: id(c))
        assert db.run_read(lambda c: id(c)) == writer_conn
        assert db.stats().readers_mode == "lane"


def test_reader_left_in_a_transaction_is_cleaned(pooled: litegate.Database) -> None:
    with pooled as db:
        db.run_read(lambda c: c.execute("BEGIN").fetchall())
        conn_in_txn = db.run_read(lambda c: c.in_transaction)
        assert conn_in_txn is False


def test_pool_closes_every_connection(db_path: str) -> None:
    db = litegate.connect(db_path, readers=3)
    db.execute("CREATE TABLE t(x)")
    conns: list[sqlite3.Connection] = []
    barrier = threading.Barrier(3)

    def grab() -> None:
        def fn(c: sqlite3.Connection) -> None:
            conns.append(c)
            barrier.wait(5)

        db.run_read(fn)

    threads = [threading.Thread(target=grab) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.close()
    assert len({id(c) for c in conns}) == 3
    for c in conns:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            c.execute("SELECT 1")


def test_close_wakes_a_waiting_borrower_with_closed(db_path: str) -> None:
    db = litegate.connect(db_path, readers=1, timeout=None)
    db.execute("CREATE TABLE t(x)")
    pool = db._engine._pool  # type: ignore[attr-defined]
    assert isinstance(pool, ReadPool)
    held = pool.acquire(None)
    waiter = Outcome(lambda: db.query("SELECT 1"))
    wait_for(lambda: db.stats().pool_waiting == 1)
    db.close(timeout=1)
    err = waiter.join().error
    assert isinstance(err, litegate.Closed)
    assert "closed while waiting for a reader" in str(err)
    pool.release(held)  # returned after close: closed, not kept
    assert (pool.open_count, pool.in_use, pool.waiting) == (0, 0, 0)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        held.execute("SELECT 1")


def test_a_failed_open_frees_its_slot_and_hides_no_idle_reader(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with litegate.connect(db_path, readers=2) as db:
        pool = db._engine._pool  # type: ignore[attr-defined]
        assert isinstance(pool, ReadPool)
        first = pool.acquire(None)

        def refuse(*_: object, **__: object) -> sqlite3.Connection:
            raise OSError("no more file handles")

        monkeypatch.setattr(_pool, "open_connection", refuse)
        with pytest.raises(OSError, match="file handles"):
            pool.acquire(None)  # the second slot: its open fails, the slot goes back
        monkeypatch.undo()
        assert pool.open_count == 1
        pool.release(first)  # now queued behind the freed slot
        # The async inline path borrows only idle readers: it must find the one behind the slot.
        assert pool.try_acquire() is first
        assert pool.try_acquire() is None  # the slot is not opened by try_acquire
        pool.release(first)
        # A query that meets the freed slot first keeps it (it reads on the idle reader).
        assert db.query_value("SELECT 1") == 1
        second = pool.acquire(2)  # the freed slot is still usable:
        third = pool.acquire(2)  # one of these opens a new connection
        assert first in (second, third) and second is not third
        assert pool.open_count == 2
        pool.release(second)
        pool.release(third)


def test_fork_quiesce_sees_a_reader_in_flight(db_path: str) -> None:
    """A reader taken off the queue but not yet recorded as held (a GIL switch can fall
    there: borrows take no lock) must not look idle to fork(); nor may one being returned."""
    with litegate.connect(db_path, readers=1) as db:
        db.execute("CREATE TABLE t(x)")
        db.query("SELECT 1")  # open the one reader
        pool = db._engine._pool  # type: ignore[attr-defined]
        assert isinstance(pool, ReadPool)
        conn = pool._free.get_nowait()  # in flight: neither queued nor in _holders
        assert pool.in_use == 0  # what the old check trusted
        assert not pool.quiesce(time.monotonic() + 0.05)
        pool.resume()
        pool._free.put(conn)
        assert pool.quiesce(time.monotonic() + 0.05)  # every opened reader is stashed
        try:
            assert pool.try_acquire() is None  # nobody can borrow one meanwhile
        finally:
            pool.resume()
        assert db.query_value("SELECT 1") == 1


def test_per_thread_fork_quiesce_waits_for_a_borrow_and_blocks_new_ones(db_path: str) -> None:
    """Per-thread mode: fork() holds each thread's reader still. A reader in use makes the
    engine busy for the fork; while quiesced, a new borrow waits until resume()."""
    with litegate.connect(db_path, readers="per-thread") as db:
        db.execute("CREATE TABLE t(x)")
        pool = db._engine._pool  # type: ignore[attr-defined]
        conn = pool.acquire(None)  # this thread's reader, in use
        assert pool.in_use == 1
        assert not pool.quiesce(time.monotonic() + 0.05)
        pool.resume()
        pool.release(conn)
        assert pool.quiesce(time.monotonic() + 0.05)
        reader = Outcome(lambda: db.query_value("SELECT 1"))  # another thread: opens its own
        time.sleep(0.1)
        assert reader.thread.is_alive()  # it waits: no connection is opened during a fork
        pool.resume()
        assert reader.join().result == 1
        assert db.query_value("SELECT 1") == 1


@pytest.mark.parametrize("mode", [1, "per-thread"])
def test_a_query_that_leaves_a_transaction_open_is_cleaned(db_path: str, mode: Any) -> None:
    with litegate.connect(db_path, readers=mode) as db:
        db.execute("CREATE TABLE t(x)")
        assert db.query_value("SELECT 1") == 1  # the reader is open (the first borrow opens it)
        assert db.query("BEGIN") == []  # the reader is now inside a transaction...
        assert db.query_value("SELECT count(*) FROM t") == 0  # (would pin this snapshot)
        db.execute("INSERT INTO t VALUES (1)")
        assert db.query_value("SELECT count(*) FROM t") == 1  # ...unless check-in ended it
        assert db.query_one("SELECT x FROM t")[0] == 1
        assert db.stats().pool_in_use == 0


# ---- regressions found by review, each named after the failure it pins ----------------
async def test_cancelled_snapshot_query_keeps_its_reader_until_it_stops(db_path: str) -> None:
    def on_connect(conn: sqlite3.Connection) -> None:
        def slow(x: int) -> int:
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


# ---- a reader closed by the function it was lent to (issue 10, item 5) --------------------
def _close(conn: sqlite3.Connection) -> str:
    conn.close()
    return "closed"


def _all_readers_serve(db: litegate.Database, size: int) -> None:
    """Every reader of the pool, held at once, answers (none was lost) and is read-only."""
    snaps = [db.snapshot() for _ in range(size)]
    for snap in snaps:
        snap.__enter__()
    try:
        for snap in snaps:
            assert snap.query_value("SELECT sum(x) FROM t") == 6
            assert snap.query_value("PRAGMA query_only") == 1
        assert db.stats().pool_open == size
    finally:
        for snap in snaps:
            snap.__exit__(None, None, None)


def test_run_read_closing_its_reader_fails_and_the_pool_replaces_it(
    pooled: litegate.Database,
) -> None:
    """Regression: run_read(lambda c: c.close()) lost a pool slot for good (and failed with a
    raw ProgrammingError from the check-in)."""
    with pooled as db:
        for _ in range(5):  # more than the pool's size: every slot comes back
            with pytest.raises(litegate.Misuse, match="closed the connection"):
                db.run_read(_close)
        _all_readers_serve(db, 2)
        assert db.stats().pool_in_use == 0


def test_run_read_closing_its_per_thread_reader_fails_and_it_is_replaced(db_path: str) -> None:
    with litegate.connect(db_path, readers="per-thread") as db:
        db.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
        for _ in range(3):
            with pytest.raises(litegate.Misuse, match="closed the connection"):
                db.run_read(_close)
            assert db.query_value("SELECT sum(x) FROM t") == 6
            assert db.query_value("PRAGMA query_only") == 1
        assert db.stats().pool_open == 1  # the closed ones were forgotten


@pytest.mark.parametrize("readers", [2, "per-thread"])
def test_async_run_read_closing_its_reader_fails_and_it_is_replaced(
    db_path: str, readers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def main(adb: litegate.AsyncDatabase) -> None:
        for _ in range(6):  # the reader threads' pool (or per-thread readers) lose nothing
            with pytest.raises(litegate.Misuse, match="closed the connection"):
                await adb.run_read(_close)
        sums = await asyncio.gather(
            *(
                adb.run_read(lambda c: c.execute("SELECT sum(x) FROM t").fetchone()[0])
                for _ in range(8)
            )
        )
        assert sums == [6] * 8

    with litegate.connect(db_path, readers=readers) as db:
        db.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
        asyncio.run(main(db.as_async()))
        if readers == 2:
            _all_readers_serve(db, 2)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("path", ["query", "run", "inline"])
def test_a_close_between_taking_a_reader_and_using_it_leaves_no_reader_open(
    db_path: str, path: str
) -> None:
    """The one-frame paths (query, run, inline) take an idle reader, then find the pool closed: the
    reader they put back is closed too (close() emptied the queue before it was back)."""
    with litegate.connect(db_path, readers=1) as db:
        db.execute("CREATE TABLE t(x)")
    pool = ReadPool(litegate.Options(db_path, row_factory=None), 1)
    conn = pool.acquire(5)
    pool.release(conn)
    real = pool._free

    class ClosingQueue:
        armed = True

        def get_nowait(self) -> Any:
            item = real.get_nowait()
            if ClosingQueue.armed:  # (once: close() itself empties the queue)
                ClosingQueue.armed = False
                pool.close()  # (close() runs now: the queue is empty)
            return item

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    pool._free = ClosingQueue()  # type: ignore[assignment]
    if path == "inline":  # (the loop's: nothing to read, so it would wait elsewhere)
        assert pool.inline(lambda c: c.execute("SELECT 1").fetchone(), ()) is MISS
    else:
        with pytest.raises(litegate.Closed):
            if path == "query":
                pool.query("SELECT 1", (), 1, True)
            else:
                pool.run(lambda c: c.execute("SELECT 1").fetchone(), (), 1)
    with pytest.raises(sqlite3.ProgrammingError):  # closed, not left open
        conn.execute("SELECT 1")
    assert pool.open_count == 0


def test_a_function_that_closes_its_reader_and_uses_it_gets_the_sqlite3_error(
    pooled: litegate.Database,
) -> None:
    """As before the one-frame run path (and as on every other path): the function's own
    error reaches the caller; only a function that returns after closing it is Misuse."""
    with pooled as db:
        assert db.query_value("SELECT 1") == 1  # (a warm pool: the one-frame path)
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            db.run_read(lambda c: (c.close(), c.execute("SELECT 1")))
        with pytest.raises(litegate.Misuse, match="closed the connection"):
            db.run_read(_close)
        assert db.query_value("SELECT 2") == 2


def test_the_inline_guard_stays_between_inline_reads_and_never_runs_elsewhere(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader keeps the inline budget's progress handler from one inline read to the next
    (installed once), and has it removed before it is lent any other way: on a reader
    thread it would take the GIL every few VM steps of a long read."""
    with litegate.connect(db_path, readers=1) as db:
        db.executescript(
            "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c"
            " WHERE i < 5000) INSERT INTO t SELECT i FROM c;"
        )
    monkeypatch.setattr(_inline, "INLINE_BUDGET", 30.0)  # (what runs where, not the budget)
    monkeypatch.setattr(_inline, "_HARD_BUDGET", 30.0)
    calls: list[int] = []
    made: list[InlineGuard] = []
    real_over, real_init = InlineGuard.over, InlineGuard.__init__

    def over(self: InlineGuard) -> bool:
        calls.append(threading.get_ident())
        return real_over(self)

    def init(self: InlineGuard) -> None:
        made.append(self)
        real_init(self)

    monkeypatch.setattr(InlineGuard, "over", over)
    monkeypatch.setattr(InlineGuard, "__init__", init)
    total = 5000 * 5001 // 2

    def scan(c: sqlite3.Connection) -> int:
        value: int = c.execute("SELECT sum(x) FROM t").fetchone()[0]
        return value

    pool = ReadPool(litegate.Options(db_path, row_factory=None), 1)
    try:
        pool.release(pool.acquire(5))  # (opened)
        me = threading.get_ident()
        for _ in range(2):
            assert pool.inline(scan, ()) == total
        assert calls and set(calls) == {me}  # (5,000 rows: many progress calls)
        assert len(made) == 1  # (installed once, for both)
        calls.clear()
        got: list[int] = []
        t = threading.Thread(target=lambda: got.append(pool.run(scan, (), 5)))
        t.start()
        t.join(10)
        assert got == [total] and calls == []  # (removed before the thread's read)
        assert pool.inline(scan, ()) == total and len(made) == 2  # (installed again)
        calls.clear()
        conn = pool.acquire(5)
        try:
            assert scan(conn) == total and calls == []
        finally:
            pool.release(conn)
        assert pool.query("SELECT count(*) FROM t", (), 5, True) == (5000,)
    finally:
        pool.close()


def test_an_inline_read_over_its_budget_is_a_miss_and_gives_its_reader_back(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with litegate.connect(db_path, readers=1) as db:
        db.execute("CREATE TABLE t(x)")
    monkeypatch.setattr(_inline, "INLINE_BUDGET", 0.0)
    monkeypatch.setattr(_inline, "_HARD_BUDGET", 0.0)
    endless = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT max(i) FROM c"
    pool = ReadPool(litegate.Options(db_path, row_factory=None), 1)
    try:
        pool.release(pool.acquire(5))
        assert pool.inline(lambda c: c.execute(endless).fetchone(), ()) is MISS
        assert pool.in_use == 0 and pool.reads == 0
        monkeypatch.setattr(_inline, "INLINE_BUDGET", 30.0)
        monkeypatch.setattr(_inline, "_HARD_BUDGET", 30.0)
        assert pool.inline(lambda c: c.execute("SELECT 7").fetchone(), ()) == (7,)
        assert pool.reads == 1 and pool.open_count == 1
    finally:
        pool.close()
