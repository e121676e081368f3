"""The async read path under load (issue 11, point 4): inline reads share the loop in rounds,
a statement known to run over the inline budget goes straight to a reader thread, and an
offloaded read's answer is not held behind a stream of inline reads."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import itertools
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import litegate
from litegate._engine import _inline, _readers
from litegate._engine._connection import open_connection
from litegate._engine._pool import ReadPool
from litegate._engine._readers import _SKIPS_FIRST, SlowStatements

# Far longer than INLINE_BUDGET on any machine (tens of ms), so every inline attempt misses.
SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    "SELECT sum(x) FROM c"
)
SLOW_N = 300_000
POINT = "SELECT v FROM t WHERE id = ?"


async def _open(db_path: str, readers: Any) -> litegate.AsyncDatabase:
    adb = await litegate.connect_async(db_path, readers=readers)
    await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)")
    await adb.executemany("INSERT INTO t VALUES (?, ?)", [(i, i * 10) for i in range(1, 101)])
    return adb


def test_slow_statements_skip_for_a_while_then_try_again() -> None:
    slow = SlowStatements()
    assert not slow.known and not slow.skip("q")
    slow.ran_long("q")
    assert [slow.skip("q") for _ in range(_SKIPS_FIRST + 1)] == [True] * _SKIPS_FIRST + [False]
    slow.ran_long("q")  # slow again when tried inline: twice as many skips
    skipped = 0
    while slow.skip("q"):
        skipped += 1
        slow.ran_long("q")  # (a call that skipped it, judged slow: no change)
    assert skipped == 2 * _SKIPS_FIRST
    slow.ran_inline("q")  # one success forgets it
    assert not slow.known and not slow.skip("q")
    assert not slow.skip("other")


async def test_a_statement_known_slow_goes_straight_to_a_thread(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (readers=2: in per-thread mode the loop thread never has a reader of its own, so every
    # async read runs on a reader thread)
    tried: list[str] = []
    real = ReadPool.inline  # (where _local's query_inline runs a read on the loop)

    def counting(pool: ReadPool, fn: Any, args: Any) -> Any:
        tried.append(args[0])
        return real(pool, fn, args)

    monkeypatch.setattr(ReadPool, "inline", counting)
    adb = await _open(db_path, 2)
    try:
        for _ in range(3):  # (the first read opens a reader, on a thread)
            await adb.query_value(POINT, (1,))
        tried.clear()
        want = SLOW_N * (SLOW_N + 1) // 2
        # tried inline, interrupted, tried again a turn later (it might have been a stall),
        # then run on a reader thread, which finds it slow
        assert await adb.query_value(SLOW, (SLOW_N,)) == want
        assert tried.count(SLOW) == 2
        for i in range(_SKIPS_FIRST):  # known slow: never tried inline, still answered
            assert await adb.query_value(SLOW, (SLOW_N,)) == want
            assert await adb.query_value(POINT, (i + 1,)) == (i + 1) * 10  # fast ones inline
        assert tried.count(SLOW) == 2
        assert tried.count(POINT) == _SKIPS_FIRST
        assert await adb.query_value(SLOW, (SLOW_N,)) == want  # then tried inline again, once
        assert tried.count(SLOW) == 3
    finally:
        await adb.close()


@pytest.mark.no_debug_loop("counts reads per loop round; debug bookkeeping only slows it")
async def test_an_offloaded_answer_is_not_held_behind_inline_reads(db_path: str) -> None:
    """32 tasks read inline in a loop while one task's reads run on a reader thread: between
    a thread finishing a read and its task resuming (the answer's delivery, then the task's
    turn: two rounds of the ready tasks), the others make a bounded number of inline reads.
    With a fixed 2 ms turn per task it was two rounds of 32 x 2 ms: thousands of reads."""
    adb = await _open(db_path, 2)
    done = 0
    stop = False
    going = asyncio.Event()

    async def reader(key: int) -> None:
        nonlocal done
        while not stop:
            assert await adb.query_value(POINT, (key,)) == key * 10
            done += 1
            if done == 1000:
                going.set()

    def offloaded(conn: sqlite3.Connection, marks: dict[str, int]) -> int:
        value = int(conn.execute(SLOW, (20_000,)).fetchone()[0])
        marks["finished"] = done  # (read on the reader thread: the count as it ends)
        return value

    tasks = [asyncio.create_task(reader(i % 100 + 1)) for i in range(32)]
    try:
        await going.wait()
        gaps = []
        for _ in range(5):
            marks: dict[str, int] = {}
            assert await adb.run_read(offloaded, marks) == 20_000 * 20_001 // 2
            gaps.append(done - marks["finished"])
        assert done > 1000 + 5  # the inline readers kept going meanwhile
        assert max(gaps) < 32 * 64, gaps
    finally:
        stop = True
        await asyncio.gather(*tasks)
        await adb.close()


# ---- turns: inline readers whose slice is spent park and take turns -------------------------
# With a zero slice every inline read ends its task's turn, so the order is deterministic:
# after the first burst (every task's first read), one reader per loop iteration, in FIFO order.


@pytest.fixture
def zero_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("litegate._engine._turns._SLICE_MAX", 0.0)
    monkeypatch.setattr("litegate._engine._turns._SLICE_MIN", 0.0)
    # (no inline read runs over budget, even on a slow debug loop: a miss takes the
    # reader-thread path, outside the turns)
    monkeypatch.setattr(_inline, "INLINE_BUDGET", 30.0)


def _count_iterations() -> tuple[list[int], Any]:
    """A callback that runs once per loop iteration, counting them (stop with the handle)."""
    loop = asyncio.get_running_loop()
    count = [0]
    handle: list[asyncio.Handle] = []

    def tick() -> None:
        count[0] += 1
        handle[:] = [loop.call_soon(tick)]

    handle.append(loop.call_soon(tick))
    return count, lambda: handle[0].cancel()


@pytest.mark.usefixtures("zero_slice")
async def test_one_inline_reader_per_loop_iteration_in_turns(db_path: str) -> None:
    """Readers whose slice is spent wait in a queue: a loop iteration holds one reader's reads,
    and they take turns in order (with a plain yield, each iteration ran all 8 tasks) -- from
    the first read: a task parks before a read once the slice is spent (parking after it, the
    8 tasks made ready at once each read once in the same iteration)."""
    adb = await _open(db_path, 2)
    for _ in range(3):  # (the first read opens a reader, on a thread: not inline)
        await adb.query_value(POINT, (1,))
    count, stop_counting = _count_iterations()
    log: list[tuple[int, int]] = []  # (iteration, task) of every read, when it returned
    engine: Any = adb._engine
    real_inline = engine.query_inline
    read_in: list[int] = []  # the iteration every inline read ran in

    def spy(sql: str, params: Any) -> Any:
        read_in.append(count[0])
        return real_inline(sql, params)

    engine.query_inline = spy

    async def reader(task: int) -> None:
        for _ in range(40):
            assert await adb.query_value(POINT, (task + 1,)) == (task + 1) * 10
            log.append((count[0], task))

    try:
        await asyncio.wait_for(asyncio.gather(*(reader(t) for t in range(8))), 30)
    finally:
        stop_counting()
        await adb.close()
    assert len(log) == 8 * 40 == len(read_in)
    assert max(read_in.count(iteration) for iteration in read_in) == 1
    steady = log
    per_iteration: dict[int, set[int]] = {}
    for iteration, task in steady:
        per_iteration.setdefault(iteration, set()).add(task)
    assert max(len(tasks) for tasks in per_iteration.values()) == 1, per_iteration
    order = [task for _, task in steady]
    for i in range(0, len(order) - 8, 8):  # every window of 8 turns is all 8 tasks
        assert sorted(order[i : i + 8]) == list(range(8)), order[i : i + 8]


@pytest.mark.usefixtures("zero_slice")
async def test_readers_waiting_for_a_turn_go_on_when_the_holder_stops_or_is_cancelled(
    db_path: str,
) -> None:
    """A woken reader that never reads inline again, and readers cancelled while waiting for
    their turn or just after being woken, never leave the others parked."""
    adb = await _open(db_path, 2)
    release = asyncio.Event()
    done: list[int] = []

    async def once_then_idle() -> None:
        await adb.query_value(POINT, (1,))  # parks, is woken, then waits on something else
        await release.wait()

    async def reader(task: int, reads: int) -> None:
        key = task % 50 + 1
        for _ in range(reads):
            assert await adb.query_value(POINT, (key,)) == key * 10
        done.append(task)

    try:
        idle = asyncio.create_task(once_then_idle())
        doomed = [asyncio.create_task(reader(100 + t, 10**6)) for t in range(6)]
        readers = [asyncio.create_task(reader(t, 60)) for t in range(6)]
        for i, task in enumerate(doomed):  # cancelled at different points of their turns
            for _ in range(i * 3 + 1):
                await asyncio.sleep(0)
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        assert sorted(done) == list(range(6))
        assert all(t.cancelled() for t in doomed), [
            t.exception() for t in doomed if not t.cancelled()
        ]
        assert not idle.done()
        assert await adb.query_value(POINT, (2,)) == 20  # and a later reader gets a turn
        release.set()
        await asyncio.wait_for(idle, 30)
    finally:
        await adb.close()


# ---- reader threads are started off the loop ----------------------------------------------------


def _seven(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT 7").fetchone()[0])


async def test_starting_a_reader_thread_never_holds_the_loop(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread.start() waits for the new thread to run: the loop must not wait with it. Here
    the start waits for the loop itself to tick (with the old inline start, a deadlock until
    the gate's timeout)."""
    adb = await _open(db_path, 2)  # (no reader thread yet: nothing was read)
    gate = threading.Event()
    real_start = threading.Thread.start

    def gated_start(self: threading.Thread) -> None:
        if self.name.startswith("litegate-reader"):
            gate.wait(30)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", gated_start)
    try:
        read = asyncio.create_task(adb.run_read(_seven))
        for _ in range(5):
            await asyncio.sleep(0.001)  # the loop goes on while the thread is being started
        assert not read.done()
        gate.set()
        assert await asyncio.wait_for(read, 30) == 7
    finally:
        gate.set()
        await adb.close()


async def test_a_reader_thread_that_cannot_start_fails_the_queued_reads(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    adb = await _open(db_path, 2)
    real_start = threading.Thread.start

    def failing_start(self: threading.Thread) -> None:
        if self.name.startswith("litegate-reader"):
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", failing_start)
    try:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            await asyncio.wait_for(adb.run_read(_seven), 30)
        monkeypatch.setattr(threading.Thread, "start", real_start)
        assert await asyncio.wait_for(adb.run_read(_seven), 30) == 7  # the next one starts
    finally:
        await adb.close()


async def test_per_thread_readers_read_inline_once_the_loop_thread_has_its_own(
    db_path: str,
) -> None:
    """readers="per-thread": the loop thread gets a reader of its own (opened on a helper
    thread meanwhile its reads go to reader threads); then point reads run inline, and the
    reader is the pool's: closed with it."""
    adb = await _open(db_path, "per-thread")
    engine: Any = adb._engine
    pool = engine._pool
    threads = engine._reader_threads()
    try:
        for _ in range(500):
            assert await adb.query_value(POINT, (3,)) == 30
            if pool.has_reader():
                break
            await asyncio.sleep(0.01)
        assert pool.has_reader()
        before = threads.submitted
        for i in range(50):
            assert await adb.query_value(POINT, (i + 1,)) == (i + 1) * 10
        assert threads.submitted == before  # inline on the loop thread
        conn = pool.try_acquire()
        pool.release(conn)
    finally:
        await adb.close()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


async def test_reader_threads_judge_a_statement_by_its_steps_not_its_time(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader thread contending for the GIL took over 1 ms of CPU time for a 100-row scan
    (~700 VM steps): judged long, every scan went to the threads (a cascade). Here its clock
    runs 10 ms per reading; only the statement with many steps is judged long."""
    adb = await _open(db_path, 2)
    engine: Any = adb._engine
    scan = "SELECT v FROM t WHERE id BETWEEN ? AND ?"
    for sql in (scan, SLOW):
        engine._slow.ran_long(sql)  # known slow: their next calls go to a reader thread
    judged: list[str] = []
    monkeypatch.setattr(SlowStatements, "ran_long", lambda self, sql: judged.append(sql))
    clock = itertools.count(0.0, 0.01)
    monkeypatch.setattr(_readers, "thread_time", lambda: next(clock), raising=False)
    try:
        assert len(await adb.query(scan, (1, 100))) == 100
        assert await adb.query_value(SLOW, (20_000,)) == 20_000 * 20_001 // 2
        assert judged == [SLOW]
    finally:
        await adb.close()


# ---- a stall is not a long statement; readers are opened for the loop ---------------------------


def _stalled_clock(monkeypatch: pytest.MonkeyPatch, stall: float) -> None:
    """``_inline.perf_counter`` jumps ``stall`` seconds after its first reading (as if the
    loop thread had waited that long for the GIL once), then stands still."""
    readings = itertools.chain([100.0], itertools.repeat(100.0 + stall))
    monkeypatch.setattr(_inline, "perf_counter", lambda: next(readings))


@pytest.mark.parametrize("stall", [0.0015, 0.01])
def test_an_inline_read_stalled_past_the_budget_is_interrupted_only_if_long(
    db_path: str, monkeypatch: pytest.MonkeyPatch, stall: float
) -> None:
    """A 100-row scan (~700 VM steps) stalled past INLINE_BUDGET finishes inline (interrupted,
    it was re-run on a reader thread, contending with the loop for the GIL); a long statement
    is still interrupted; and a stall past the hard bound interrupts even a short one."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(1, 201)])
        scan = ("SELECT v FROM t WHERE id BETWEEN ? AND ?", (1, 100))
        _stalled_clock(monkeypatch, stall)
        rows = _inline.run_inline(conn, lambda c, q, p: c.execute(q, p).fetchall(), scan)
        if stall < _inline._HARD_BUDGET:
            assert rows is not _inline.MISS and len(rows) == 100
        else:
            assert rows is _inline.MISS
        _stalled_clock(monkeypatch, stall)
        long = _inline.run_inline(
            conn, lambda c, q, p: c.execute(q, p).fetchall(), (SLOW, (SLOW_N,))
        )
        assert long is _inline.MISS
        _stalled_clock(monkeypatch, 0.0)  # no stall: the same scan is never interrupted
        assert (
            len(_inline.run_inline(conn, lambda c, q, p: c.execute(q, p).fetchall(), scan)) == 100
        )
    finally:
        conn.close()


async def test_a_burst_of_first_reads_waits_for_a_reader_and_reads_inline(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 tasks read at once before any reader is open: one is opened for the loop (on a helper
    thread) and every read runs inline (they all went to reader threads, which convoyed with
    the loop on the GIL: 30-150 ms of loop lag at 64 tasks)."""
    monkeypatch.setattr(_inline, "INLINE_BUDGET", 30.0)  # (where reads go, not the budget)
    adb = await _open(db_path, 2)  # (nothing read yet: no reader open)
    engine: Any = adb._engine

    async def reader(task: int) -> None:
        key = task % 100 + 1
        assert await adb.query_value(POINT, (key,)) == key * 10

    try:
        await asyncio.wait_for(asyncio.gather(*(reader(t) for t in range(64))), 30)
        threads = engine._readers
        assert threads is None or threads.submitted == 0  # none went to a reader thread
        assert engine._pool.open_count == 1
    finally:
        await adb.close()


@contextlib.asynccontextmanager
async def _reader_thread_held(
    adb: litegate.AsyncDatabase,
) -> AsyncIterator[asyncio.Task[int]]:
    """readers=2 (one reader thread): a long read holds the thread and its reader while the
    block runs (the task running it is yielded); released, and its result checked, after."""
    held, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> int:
        held.set()
        release.wait(30)
        return 1

    blocker = asyncio.create_task(adb.run_read(hold))
    try:
        assert await asyncio.to_thread(held.wait, 30)
        yield blocker
    finally:
        release.set()
        assert await asyncio.wait_for(blocker, 30) == 1


async def test_the_loop_gets_the_last_reader_opened_while_threads_hold_the_others(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """readers=2 (one reader thread): a long read holds the thread's reader; the loop's reads
    get the other slot opened for them and run inline (they queued behind the long read)."""
    monkeypatch.setattr(_inline, "INLINE_BUDGET", 30.0)  # (where reads go, not the budget)
    adb = await _open(db_path, 2)
    engine: Any = adb._engine
    try:
        async with _reader_thread_held(adb) as blocker:
            submitted = engine._readers.submitted
            for i in range(20):
                read = adb.query_value(POINT, (i + 1,))
                assert await asyncio.wait_for(read, 5) == (i + 1) * 10
            assert engine._readers.submitted == submitted  # all inline, none behind it
            assert not blocker.done()
    finally:
        await adb.close()


async def test_a_reader_the_loop_could_not_get_opened_loses_no_read(
    db_path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The helper thread's open fails (logged): the slot goes back, the read is served
    (by a reader thread, which opens the slot itself), and later reads run inline."""
    adb = await _open(db_path, 2)
    engine: Any = adb._engine
    real_open = open_connection
    failures = [1]

    def failing_once(opts: Any, *, reader: bool) -> sqlite3.Connection:
        if failures:
            failures.pop()
            raise sqlite3.OperationalError("unable to open database file (injected)")
        return real_open(opts, reader=reader)

    monkeypatch.setattr("litegate._engine._pool.open_connection", failing_once)
    try:
        assert await asyncio.wait_for(adb.query_value(POINT, (5,)), 30) == 50
        assert not failures and "opening a reader failed" in caplog.text
        assert engine._readers.submitted == 1  # (that read, on a thread)
        for i in range(20):
            assert await adb.query_value(POINT, (i + 1,)) == (i + 1) * 10
        assert engine._readers.submitted == 1  # the rest inline
    finally:
        await adb.close()


def _slow_reader_opens(
    monkeypatch: pytest.MonkeyPatch, delay: float, gate: list[bool]
) -> list[float]:
    """Reader opens sleep ``delay`` while gate[0]; returns the times (monotonic) opens ended."""
    real = open_connection
    ended: list[float] = []

    def slow(opts: Any, *, reader: bool) -> sqlite3.Connection:
        if reader and gate[0]:
            time.sleep(delay)
        conn = real(opts, reader=reader)
        ended.append(time.monotonic())
        return conn

    monkeypatch.setattr("litegate._engine._pool.open_connection", slow)
    return ended


async def test_the_wait_for_the_spare_counts_against_the_timeout(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """readers=2: the reader thread is busy; the spare's open is slow. A read with timeout=0.3
    fails after 0.3 s (it failed after 0.6 s: 0.3 s waiting for the spare, then a fresh 0.3 s
    queued for the reader thread)."""
    gate = [False]
    _slow_reader_opens(monkeypatch, 1.0, gate)
    adb = await _open(db_path, 2)
    try:
        async with _reader_thread_held(adb):
            gate[0] = True
            t0 = time.monotonic()
            with pytest.raises(litegate.PoolTimeout):
                await adb.query_value(POINT, (1,), timeout=0.3)
            waited = time.monotonic() - t0
            assert waited < 0.3 + 0.15, f"timeout=0.3 but the read failed after {waited:.2f}s"
    finally:
        await adb.close()
        await asyncio.sleep(1.2)  # (the helper's open)


async def test_no_reader_is_opened_after_close_returns(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() waits for a reader being opened for the loop (closed as soon as it is open):
    none is opened -- the file opened, on_connect run -- after close() has returned."""
    ended = _slow_reader_opens(monkeypatch, 0.3, [True])
    adb = await _open(db_path, 2)
    reading = asyncio.create_task(adb.query_value(POINT, (1,)))
    await asyncio.sleep(0.05)  # (it waits for the spare's open)
    await adb.close()
    closed_at = time.monotonic()
    with pytest.raises(litegate.Closed):
        await reading
    await asyncio.sleep(0.5)
    late = [t - closed_at for t in ended if t > closed_at]
    assert not late, f"a reader was opened {late[0]:.2f}s after close() returned"


async def test_no_thread_for_the_spare_open_loses_no_read(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting the helper thread fails: the slot goes back, the read is served (by a reader
    thread), and the next miss tries the spare open again."""
    adb = await _open(db_path, 2)
    engine: Any = adb._engine
    real_start = _thread.start_new_thread
    failures = [1]

    def failing_once(fn: Any, args: Any) -> int:
        if failures and getattr(fn, "__name__", "") == "_start_spare":
            failures.pop()
            raise RuntimeError("can't start new thread")
        return real_start(fn, args)

    monkeypatch.setattr("litegate._engine._pool.start_new_thread", failing_once)
    try:
        assert await asyncio.wait_for(adb.query_value(POINT, (7,)), 30) == 70
        assert not failures and engine._readers.submitted == 1  # (that read, on a thread)
        for i in range(20):
            assert await adb.query_value(POINT, (i + 1,)) == (i + 1) * 10
        assert engine._readers.submitted == 1  # the rest inline (the thread's reader, idle)
        assert engine._pool.open_spare() is not None or engine._pool.open_count == 2
    finally:
        await adb.close()


async def test_tasks_woken_by_the_spare_open_take_turns(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks that waited for a reader to be opened for the loop, all woken when it opens,
    retry in turns: with a zero slice, one inline read per loop iteration (the engine's retry
    skipped the turns: 12 of 16 read in one iteration)."""
    monkeypatch.setattr("litegate._engine._turns._SLICE_MAX", 0.0)
    monkeypatch.setattr("litegate._engine._turns._SLICE_MIN", 0.0)
    monkeypatch.setattr(_inline, "INLINE_BUDGET", 30.0)
    _slow_reader_opens(monkeypatch, 0.05, [True])  # all 16 tasks wait for the spare
    adb = await _open(db_path, 2)
    engine: Any = adb._engine
    real_inline = engine.query_inline
    count, stop = _count_iterations()
    read_in: list[int] = []

    def spy(sql: str, params: Any) -> Any:
        rows = real_inline(sql, params)
        if rows is not _inline.MISS:
            read_in.append(count[0])
        return rows

    engine.query_inline = spy
    try:
        await asyncio.gather(*(adb.query_value(POINT, (t + 1,)) for t in range(16)))
    finally:
        stop()
        await adb.close()
    assert len(read_in) == 16
    worst = max(read_in.count(i) for i in read_in)
    assert worst == 1, f"{worst} inline reads in one loop iteration"
