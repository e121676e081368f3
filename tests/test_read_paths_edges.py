"""Edge paths of the async read side: a snapshot's reader held across awaits
(``_engine._async_read``) and the reader threads that serve async reads (``_engine._readers``).

What each test pins: a snapshot query that leaves the loop keeps the snapshot; a cancelled
query still on a reader thread keeps that thread the connection's only user (the next query,
the block's end, a drop-in connection's close all wait for it, never on the loop); a reader
is given back exactly once, bounded; reads queued when the database closes, or for a reader
thread that cannot start, fail at once instead of waiting; a read cancelled while its thread
waits for a reader never runs; in per-thread mode the loop thread's own reader, opened on a
helper thread, is never left open.

A reader thread is held on purpose in a row factory (:class:`Gate`), which runs between two
steps of the statement: the statement stays active, but SQLite's connection mutex is free, so
nothing the loop thread might touch is locked (a user function would hold that mutex: a bug
then hangs the process instead of failing a test). Every wait is bounded by :data:`WAIT`.
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import litegate
import litegate.aio as aiosqlite
from helpers import Outcome, wait_for
from litegate._engine import _async_read, _readers
from litegate._engine._inline import MISS, run_inline
from litegate._engine._readers import _REMEMBER, SlowStatements

WAIT = 5.0  # seconds: the bound of every wait below
HELPER = "test-helper"  # the name of _readers' helper threads under `traced_helpers`
BLOCK = "SELECT 'block' UNION ALL SELECT 'after'"  # (2 rows: active while the 1st is made)
SLOW_N = 100_000
SLOW_SUM = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    "SELECT sum(x) FROM c"
)  # tens of ms: every inline attempt runs over the budget


class Gate:
    """A row factory that holds the thread making a ``'block'`` row until :attr:`go` is set
    (bounded); it records, for every other row, whether a block was in progress then."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.inside = threading.Event()
        self.go = threading.Event()
        self.overlapped: list[bool] = []

    def row_factory(self, cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> tuple[Any, ...]:
        if row and row[0] == "block":
            self.inside.set()
            self.entered.set()
            try:
                self.go.wait(WAIT)
            finally:
                self.inside.clear()
        else:
            self.overlapped.append(self.inside.is_set())
        return row


@pytest.fixture
def path(tmp_path: Path) -> str:
    """A file name of its own: thread names end with it (see :func:`_threads`)."""
    return str(tmp_path / f"{tmp_path.name}.db")


class Helpers:
    """_readers' helper threads, counted: :meth:`idle` once every one started has ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = 0
        self.ended = 0

    def idle(self) -> bool:
        with self._lock:
            return self.started == self.ended

    def start(self, fn: Callable[..., object], args: tuple[Any, ...]) -> int:
        with self._lock:
            self.started += 1

        def run() -> None:
            try:
                fn(*args)
            finally:
                with self._lock:
                    self.ended += 1

        def hop() -> None:
            threading.Thread(target=run, name=HELPER, daemon=True).start()

        return _thread.start_new_thread(hop, ())


@pytest.fixture
def traced_helpers(monkeypatch: pytest.MonkeyPatch) -> Helpers:
    """_readers starts its helper threads with ``_thread.start_new_thread`` (the loop never
    waits for ``Thread.start``); coverage.py traces only threads started through
    ``threading``, so their lines ran but were never counted. Here a raw helper starts a
    ``threading.Thread`` named :data:`HELPER` that runs them: traced, counted, and the loop
    still never waits for a thread to start."""
    helpers = Helpers()
    monkeypatch.setattr(_readers, "start_new_thread", helpers.start)
    return helpers


def _threads(path: str) -> list[str]:
    """The live threads of the engine of ``path`` (and read leases' give-back helpers)."""
    name = Path(path).name
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("litegate-")
        and (t.name.endswith(f":{name}") or t.name == "litegate-reader-back")
    ]


def _closed(conn: sqlite3.Connection) -> bool:
    """Only once no other thread can be using ``conn``: sqlite3 crashes (SIGSEGV) on a
    statement that races the connection's close."""
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def _unstartable_threading() -> types.SimpleNamespace:
    """``threading`` as _readers sees it, with threads that cannot start (as when the process
    is out of threads)."""

    class Unstartable(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    return types.SimpleNamespace(**{**vars(threading), "Thread": Unstartable})


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def _in_use(adb: litegate.AsyncDatabase) -> int:
    return (await adb.stats()).pool_in_use


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


# ---- a snapshot's reader (_async_read) ---------------------------------------------------


async def test_a_snapshot_query_over_the_inline_budget_runs_on_a_reader_thread_in_the_snapshot(
    path: str,
) -> None:
    def hook(conn: sqlite3.Connection) -> None:
        conn.create_function("tid", 0, threading.get_ident)

    adb = await litegate.connect_async(path, readers=2, on_connect=hook)
    try:
        await adb.execute("CREATE TABLE t(x)")
        await adb.execute("INSERT INTO t VALUES (1)")
        async with adb.snapshot() as snap:
            assert await snap.query_value("SELECT count(*) FROM t") == 1
            await adb.execute("INSERT INTO t VALUES (2)")  # (committed after it began)
            row = await snap.query_one(
                f"SELECT tid(), (SELECT count(*) FROM t), ({SLOW_SUM})", (SLOW_N,)
            )
            assert row is not None
            assert row[0] != threading.get_ident()  # (tried inline, interrupted, sent on)
            assert row[1:] == (1, SLOW_N * (SLOW_N + 1) // 2)  # (still the snapshot's)
        assert await adb.query_value("SELECT count(*) FROM t") == 2
    finally:
        await adb.close()


async def test_after_a_cancelled_snapshot_query_the_next_one_waits_off_the_loop_for_its_thread(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a snapshot query cancelled while a reader thread runs it stays on that
    thread until it ends (interrupted). The next query of the snapshot ran inline on the loop
    meanwhile, on the same connection: the inline guard's ``set_progress_handler`` waits for
    SQLite's connection mutex holding the GIL, while the reader thread, inside a step, needed
    the GIL for its progress handler -- the whole process hung (see the next test). It must
    wait for the thread, in a thread, and then run -- never beside it (readers=3: two reader
    threads, so nothing else would keep the two apart)."""
    gate = Gate()
    touched: list[str] = []  # inline attempts while the reader thread still had the connection
    real = run_inline

    def spy(conn: sqlite3.Connection, fn: Any, args: tuple[Any, ...]) -> Any:
        if gate.inside.is_set():
            touched.append(args[0])
            return MISS  # (never touch the connection: the bug would hang right here)
        return real(conn, fn, args)

    monkeypatch.setattr(_async_read, "run_inline", spy)
    adb = await litegate.connect_async(path, readers=3, row_factory=gate.row_factory)
    try:
        await adb.execute("CREATE TABLE t(x)")
        await adb.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
        async with adb.snapshot() as snap:
            await adb.execute("INSERT INTO t VALUES (4)")
            # (a time limit: straight to a reader thread, never tried inline)
            blocked = asyncio.create_task(snap.query(BLOCK, time_limit=WAIT))
            assert await asyncio.to_thread(gate.entered.wait, WAIT)
            blocked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocked
            assert gate.inside.is_set()  # (the thread is still on it)
            asyncio.get_running_loop().call_later(0.05, gate.go.set)  # (the loop runs on)
            gate.overlapped.clear()
            assert await snap.query_value("SELECT count(*) FROM t") == 3
            assert gate.go.is_set()
            assert touched == []
            assert gate.overlapped == [False]  # (its row was made after the block ended)
            assert await snap.query_value("SELECT max(x) FROM t") == 3  # (inline again)
    finally:
        gate.go.set()
        await adb.close()


_HANG_SCRIPT = """
import asyncio, faulthandler, sys
import litegate
faulthandler.dump_traceback_later(20, exit=True)  # (a hang: stacks on stderr, exit 1)
SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
        "SELECT sum(x) FROM c")

async def main():
    async with litegate.connect_async(sys.argv[1], readers=3) as adb:
        await adb.execute("CREATE TABLE t(x)")
        for i in range(24):
            async with adb.snapshot() as snap:
                slow = asyncio.create_task(snap.query_value(SLOW))  # (inline, then a thread)
                await asyncio.sleep(0.001 * (1 + i % 8))
                slow.cancel()
                await asyncio.gather(slow, return_exceptions=True)
                assert await snap.query_value("SELECT count(*) FROM t") == 0

asyncio.run(main())
faulthandler.cancel_dump_traceback_later()
"""


def test_cancelled_snapshot_queries_followed_by_more_never_hang_the_process(path: str) -> None:
    """The previous test's bug as users met it, with nothing but SQL: a long snapshot query
    cancelled, then a point query in the same snapshot. Before the fix the process hung
    within the first two rounds (every run); in a child process, so that a hang fails."""
    # The child is not measured: coverage started in it with a dotted source (such as
    # ``--cov=litegate._engine._readers``) imports asyncio to find the module, then drops it
    # from sys.modules; asyncio is imported again, its C tasks still raise the first
    # CancelledError class, ``except asyncio.CancelledError`` no longer matches it, and no
    # cancellation reaches litegate. (What the child runs is measured here, in-process.)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_"))}
    proc = subprocess.run(
        [sys.executable, "-c", _HANG_SCRIPT, path],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.parametrize("cancels", [1, 2], ids=["cancelled", "cancelled-again-while-leaving"])
async def test_leaving_a_snapshot_whose_query_was_cancelled_gives_the_reader_back_after_its_thread(
    path: str, cancels: int
) -> None:
    """The block's end waits (in a thread) for the interrupted query to leave the reader
    thread before the reader goes back; cancelled again while it waits, the task ends at
    once and the reader goes back when the thread is done (readers=1: a pool of one)."""
    gate = Gate()
    adb = await litegate.connect_async(path, readers=1, row_factory=gate.row_factory)
    try:

        async def reader() -> None:
            async with adb.snapshot() as snap:
                await snap.query(BLOCK, time_limit=WAIT)

        task = asyncio.create_task(reader())
        assert await asyncio.to_thread(gate.entered.wait, WAIT)
        task.cancel()
        await asyncio.sleep(0.05)  # (the block's end is waiting for the thread)
        assert not task.done()
        assert await _in_use(adb) == 1
        if cancels == 2:
            task.cancel()
            await asyncio.wait({task}, timeout=WAIT)
            assert task.cancelled()
            assert gate.inside.is_set() and await _in_use(adb) == 1  # (still the thread's)
            gate.go.set()

            async def back() -> bool:
                return await _in_use(adb) == 0

            await _until(back, "the reader given back")
        else:
            gate.go.set()
            await asyncio.wait({task}, timeout=WAIT)
            assert task.cancelled()
            assert await _in_use(adb) == 0
        assert await adb.query_value("SELECT 1", timeout=1) == 1  # (the pool's one reader)
    finally:
        gate.go.set()
        await adb.close()
    assert _threads(path) == []


async def test_a_snapshot_whose_cancelled_query_never_ends_gives_its_reader_back_after_a_bound(
    path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A query still running ``_INFLIGHT_WAIT`` after its cancellation (30 s; shortened
    here) does not keep the reader for ever: it goes back, and an ERROR says why."""
    monkeypatch.setattr(_async_read, "_INFLIGHT_WAIT", 0.1)
    gate = Gate()
    adb = await litegate.connect_async(path, readers=1, row_factory=gate.row_factory)
    try:

        async def reader() -> None:
            async with adb.snapshot() as snap:
                await snap.query(BLOCK, time_limit=WAIT)

        with caplog.at_level(logging.ERROR, logger="litegate"):
            task = asyncio.create_task(reader())
            assert await asyncio.to_thread(gate.entered.wait, WAIT)
            task.cancel()
            await asyncio.wait({task}, timeout=WAIT)
            assert task.cancelled()
            assert gate.inside.is_set()  # (the thread still holds it: given back even so)
            assert await _in_use(adb) == 0
            assert _logged(caplog, "did not finish") == 1
        gate.go.set()
        await asyncio.to_thread(wait_for, lambda: not gate.inside.is_set(), WAIT)
    finally:
        gate.go.set()
        await adb.close()
    assert _threads(path) == []


@pytest.mark.parametrize("stuck", [False, True], ids=["query-ends", "query-never-ends"])
async def test_closing_an_aio_connection_during_a_cancelled_snapshot_query_frees_the_reader_later(
    path: str, stuck: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``litegate.aio``'s close ends a read-only transaction without awaiting (``end()``):
    with a cancelled query still on a reader thread, a helper thread gives the reader back
    once that query ends -- or after ``_INFLIGHT_WAIT`` (shortened here), saying so."""
    if stuck:
        monkeypatch.setattr(_async_read, "_INFLIGHT_WAIT", 0.1)
    gate = Gate()
    opts = {"readers": 1}
    keeper = await aiosqlite.connect(path, litegate=opts)  # (keeps the shared engine open)
    db = await aiosqlite.connect(path, litegate=opts)
    try:
        engine = keeper.engine
        db.row_factory = gate.row_factory
        db.read_only = True
        await db.execute("BEGIN")
        task = asyncio.create_task(db.execute_fetchall(BLOCK))  # (joins the transaction)
        assert await asyncio.to_thread(gate.entered.wait, WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with caplog.at_level(logging.ERROR, logger="litegate"):
            await db.close()  # (returns at once)
            assert "litegate-reader-back" in _threads(path)
            if not stuck:
                assert engine.stats().pool_in_use == 1  # (not while the thread has it)
                gate.go.set()

            async def back() -> bool:
                return engine.stats().pool_in_use == 0 and "litegate-reader-back" not in _threads(
                    path
                )

            await _until(back, "the reader given back")
            assert _logged(caplog, "did not finish") == (1 if stuck else 0)
        gate.go.set()
        assert await keeper.execute_fetchall("SELECT 1") == [(1,)]  # (the pool's one reader)
    finally:
        gate.go.set()
        await db.close()
        await keeper.close()


async def test_a_snapshot_reader_given_back_twice_goes_back_once(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``release()`` and ``end()`` are idempotent. No facade calls them twice (each drops its
    reference first), so this goes through the engine interface itself."""
    adb = await litegate.connect_async(path, readers=1)
    try:
        engine = adb._engine
        with caplog.at_level(logging.WARNING, logger="litegate"):
            lease = await engine.borrow_async(1.0)
            await lease.begin_snapshot()
            await lease.release()
            await lease.release()
            lease.end()
            lease = await engine.borrow_async(1.0)  # (the one reader: it was given back)
            lease.end()
            lease.end()
            await lease.release()
        assert caplog.records == []
        stats = await adb.stats()
        assert (stats.pool_open, stats.pool_in_use) == (1, 0)
        assert await adb.query_value("SELECT 1", timeout=1) == 1
    finally:
        await adb.close()


# ---- reader threads (_readers) -----------------------------------------------------------


async def test_a_snapshot_held_across_close_refuses_thread_queries_and_its_reader_is_closed(
    path: str,
) -> None:
    conns: list[sqlite3.Connection] = []
    adb = await litegate.connect_async(path, readers=2, on_connect=conns.append)
    async with adb.snapshot() as snap:
        await adb.close()
        with pytest.raises(litegate.Closed):
            await asyncio.wait_for(snap.query_value("SELECT 1", time_limit=1), WAIT)
    assert conns and all(_closed(c) for c in conns)  # (the snapshot's too, given back)
    assert _threads(path) == []


async def test_a_reader_thread_that_cannot_start_fails_the_reads_queued_for_it(
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    traced_helpers: Helpers,
) -> None:
    ran: list[int] = []

    def record(conn: sqlite3.Connection) -> int:
        ran.append(1)
        return int(conn.execute("SELECT 7").fetchone()[0])

    adb = await litegate.connect_async(path, readers=2)  # (one reader thread)
    try:
        monkeypatch.setattr(_readers, "threading", _unstartable_threading())
        with caplog.at_level(logging.ERROR, logger="litegate"):
            with pytest.raises(RuntimeError, match="can't start new thread"):
                await adb.run_read(record, timeout=WAIT)  # (at once, not at its timeout)
        assert ran == []
        assert _logged(caplog, "starting a reader thread failed") == 1
        monkeypatch.setattr(_readers, "threading", threading)  # (threads start again)
        assert await adb.run_read(record, timeout=WAIT) == 7  # (a new thread serves it)
    finally:
        await adb.close()
    assert _threads(path) == []


async def test_a_reader_thread_that_cannot_start_leaves_its_reads_to_the_running_one(
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    traced_helpers: Helpers,
) -> None:
    started, go = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> str:
        started.set()
        go.wait(WAIT)
        return threading.current_thread().name

    def where(conn: sqlite3.Connection) -> str:
        return threading.current_thread().name

    adb = await litegate.connect_async(path, readers=3)  # (two reader threads)
    try:
        first = asyncio.create_task(adb.run_read(hold))
        assert await asyncio.to_thread(started.wait, WAIT)
        monkeypatch.setattr(_readers, "threading", _unstartable_threading())
        with caplog.at_level(logging.ERROR, logger="litegate"):
            second = asyncio.create_task(adb.run_read(where, timeout=WAIT))  # (a 2nd thread)

            async def failed() -> bool:
                return _logged(caplog, "starting a reader thread failed") == 1

            await _until(failed, "the second thread's start to fail")
        assert not second.done()  # (queued for the running thread)
        go.set()
        assert await asyncio.wait_for(first, WAIT) == await asyncio.wait_for(second, WAIT)
    finally:
        go.set()
        await adb.close()


async def test_closing_fails_queued_reads_with_closed_and_lets_the_running_one_finish(
    path: str,
) -> None:
    started, go = threading.Event(), threading.Event()
    ran: list[int] = []

    def hold(conn: sqlite3.Connection) -> str:
        started.set()
        go.wait(WAIT)
        return "held"

    def queued_read(conn: sqlite3.Connection) -> None:
        ran.append(1)

    adb = await litegate.connect_async(path, readers=2)  # (one reader thread)
    try:
        first = asyncio.create_task(adb.run_read(hold))
        assert await asyncio.to_thread(started.wait, WAIT)
        queued = asyncio.create_task(adb.run_read(queued_read))
        await asyncio.sleep(0)  # (its first step: queued behind `hold`)
        closing = asyncio.create_task(adb.close())
        with pytest.raises(litegate.Closed, match="closed before this read ran"):
            await asyncio.wait_for(queued, WAIT)
        go.set()
        assert await asyncio.wait_for(first, WAIT) == "held"
        await asyncio.wait_for(closing, WAIT)
        assert ran == []
    finally:
        go.set()
        await adb.close()
    assert _threads(path) == []


async def test_a_burst_of_reads_is_shared_by_the_idle_reader_threads(path: str) -> None:
    """A thread takes its share of the waiting jobs, not all of them: two reads that can
    finish only together (a barrier) each find a thread, from cold and from idle threads."""
    barrier = threading.Barrier(2, timeout=WAIT)

    def meet(conn: sqlite3.Connection) -> str:
        barrier.wait()
        return threading.current_thread().name

    adb = await litegate.connect_async(path, readers=3)  # (two reader threads)
    try:
        for _ in range(2):
            names = await asyncio.gather(*(adb.run_read(meet, timeout=WAIT) for _ in range(4)))
            assert len(set(names)) == 2
    finally:
        await adb.close()


@pytest.mark.parametrize("then", ["a-reader-frees", "its-wait-times-out"])
async def test_a_read_cancelled_while_its_thread_waits_for_a_reader_never_runs(
    path: str, then: str
) -> None:
    ran: list[int] = []

    def record(conn: sqlite3.Connection) -> None:
        ran.append(1)

    def seven(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT 7").fetchone()[0])

    async def waiting(n: int) -> bool:
        return (await adb.stats()).pool_waiting == n

    adb = await litegate.connect_async(path, readers=2)  # (one reader thread, two readers)
    try:
        held = [adb.snapshot(), adb.snapshot()]
        for snap in held:
            await snap.__aenter__()
        timeout = 0.1 if then == "its-wait-times-out" else WAIT
        task = asyncio.create_task(adb.run_read(record, timeout=timeout))
        await _until(lambda: waiting(1), "its thread to wait for a reader")
        task.cancel()  # (on a loaded machine its timeout may come first: withdrawn alike)
        with pytest.raises((asyncio.CancelledError, litegate.PoolTimeout)):
            await task
        if then == "a-reader-frees":
            await held.pop().__aexit__(None, None, None)

            async def returned() -> bool:
                return await waiting(0) and await _in_use(adb) == 1

            await _until(returned, "the freed reader taken and given back")
        else:
            await _until(lambda: waiting(0), "its thread to give up")
        assert ran == []
        for snap in held:
            await snap.__aexit__(None, None, None)
        assert await asyncio.wait_for(adb.run_read(seven), 1) == 7  # (the thread is free)
        assert ran == []
    finally:
        await adb.close()


def test_slow_statements_forget_them_all_past_their_bound() -> None:
    slow = SlowStatements()
    for i in range(_REMEMBER):
        slow.ran_long(f"q{i}")
    assert len(slow.known) == _REMEMBER and slow.skip("q0")
    slow.ran_long("one more")
    assert list(slow.known) == ["one more"]
    assert not slow.skip("q0")


# ---- the loop thread's own reader in per-thread mode (LoopReaders) -----------------------


async def test_a_loop_threads_reader_that_fails_to_open_is_not_retried_and_reads_go_on(
    path: str, caplog: pytest.LogCaptureFixture, traced_helpers: Helpers
) -> None:
    attempts: list[int] = []

    def hook(conn: sqlite3.Connection) -> None:
        if threading.current_thread().name == HELPER:  # (the loop thread's reader)
            attempts.append(1)
            raise sqlite3.OperationalError("no reader for the loop today")

    adb = await litegate.connect_async(path, readers="per-thread", on_connect=hook)
    try:
        with caplog.at_level(logging.ERROR, logger="litegate"):
            assert await adb.query_value("SELECT 1") == 1  # (on a reader thread)

            async def failed() -> bool:
                return _logged(caplog, "opening the event loop thread's reader failed") == 1

            await _until(failed, "the failed open logged")
            for _ in range(3):
                assert await adb.query_value("SELECT 1") == 1
            await asyncio.to_thread(wait_for, traced_helpers.idle, WAIT)
        assert attempts == [1]
    finally:
        await adb.close()


def _read_on_a_new_loop(adb: litegate.AsyncDatabase) -> Any:
    """One read from an event loop of its own, in a thread of its own (closed after)."""
    return Outcome(lambda: asyncio.run(adb.query_value("SELECT 1"))).join().result


@pytest.fixture
def per_thread_db(
    path: str,
) -> Iterator[tuple[litegate.Database, list[Callable[[sqlite3.Connection], None]]]]:
    """A per-thread database whose ``on_connect`` runs the hooks in the list it comes with."""
    hooks: list[Callable[[sqlite3.Connection], None]] = []

    def on_connect(conn: sqlite3.Connection) -> None:
        for hook in hooks:
            hook(conn)

    db = litegate.connect(path, readers="per-thread", on_connect=on_connect)
    try:
        yield db, hooks
    finally:
        db.close()


def test_a_loop_in_a_new_thread_gets_its_own_reader_even_with_an_ended_threads_id(
    per_thread_db: tuple[litegate.Database, list[Callable[[sqlite3.Connection], None]]],
) -> None:
    """Regression: the loop threads given a reader were remembered by thread id, and an
    ended thread's id is reused at once by the next thread started (glibc does, always): a
    loop in that thread never got a reader of its own, and every read it made went to a
    reader thread for good. Each loop here must come to read inline, on its own thread."""
    db, hooks = per_thread_db
    adb = db.as_async()

    def hook(conn: sqlite3.Connection) -> None:
        conn.create_function("tid", 0, threading.get_ident)

    hooks.append(hook)

    async def reads_on_its_own_thread() -> tuple[int, bool]:
        me = threading.get_ident()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if await adb.query_value("SELECT tid()") == me:  # (inline: its reader is open)
                return me, True
            await asyncio.sleep(0.002)
        return me, False

    loops = [Outcome(lambda: asyncio.run(reads_on_its_own_thread())).join() for _ in range(2)]
    assert [o.result[1] for o in loops] == [True, True]


def test_no_reader_is_opened_for_a_loop_once_the_database_closed(
    path: str,
    per_thread_db: tuple[litegate.Database, list[Callable[[sqlite3.Connection], None]]],
    traced_helpers: Helpers,
) -> None:
    db, hooks = per_thread_db
    adb = db.as_async()
    conns: list[sqlite3.Connection] = []
    by_helper: list[sqlite3.Connection] = []
    entered, go = threading.Event(), threading.Event()

    def hook(conn: sqlite3.Connection) -> None:
        conns.append(conn)
        name = threading.current_thread().name
        if name == HELPER:
            by_helper.append(conn)
        elif name == "opener":  # (a thread's own reader, opened while the helper waits)
            entered.set()
            go.wait(WAIT)

    hooks.append(hook)
    try:
        assert _read_on_a_new_loop(adb) == 1  # (a reader thread opens its reader)
        wait_for(traced_helpers.idle, WAIT, "that loop's helper")
        assert len(by_helper) == 1
        errors: list[BaseException] = []

        def read_here() -> None:  # (this thread's own reader, opened first)
            try:
                db.query_value("SELECT 1")
            except BaseException as exc:
                errors.append(exc)

        opener = threading.Thread(target=read_here, name="opener")
        opener.start()
        assert entered.wait(WAIT)
        assert _read_on_a_new_loop(adb) == 1  # (its loop's helper waits for the open)
        db.close()
        go.set()
        opener.join(WAIT)
        assert [type(e) for e in errors] == [litegate.Closed]
        wait_for(traced_helpers.idle, WAIT, "the second loop's helper")
        assert len(by_helper) == 1  # (none opened for the second loop: closed by then)
        wait_for(lambda: _threads(path) == [], WAIT, "the engine's threads to end")
        assert all(_closed(c) for c in conns)
    finally:
        go.set()
    assert _threads(path) == []


def test_a_reader_opened_for_a_loop_that_has_closed_since_is_closed(
    path: str,
    per_thread_db: tuple[litegate.Database, list[Callable[[sqlite3.Connection], None]]],
    traced_helpers: Helpers,
) -> None:
    db, hooks = per_thread_db
    adb = db.as_async()
    by_helper: list[sqlite3.Connection] = []
    armed, entered, go = threading.Event(), threading.Event(), threading.Event()

    def hook(conn: sqlite3.Connection) -> None:
        if threading.current_thread().name == HELPER:
            by_helper.append(conn)
            if armed.is_set():
                entered.set()
                go.wait(WAIT)

    hooks.append(hook)
    try:
        assert _read_on_a_new_loop(adb) == 1  # (a reader thread opens its reader)
        wait_for(traced_helpers.idle, WAIT, "that loop's helper")
        assert len(by_helper) == 1
        armed.set()
        assert _read_on_a_new_loop(adb) == 1  # (answered by the reader thread; loop closed)
        assert entered.wait(WAIT)  # (its helper is still opening the loop's reader)
        go.set()
        wait_for(traced_helpers.idle, WAIT, "the second loop's helper")
        assert _closed(by_helper[-1])  # (not adopted by the closed loop: not left open)
        assert len(by_helper) == 2
    finally:
        go.set()
