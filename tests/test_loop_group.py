"""One-statement async writes group-committed from the event loop where a COMMIT fsyncs
(``litegate._engine._loop_group``): their statements run on the loop, one COMMIT per group off
it, and nothing else about a write changes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

import litegate
from helpers import interrupting
from litegate import _statements
from litegate._engine import _connection, _lane_loop, _loop_group

INSERT = "INSERT INTO t(v) VALUES (?)"


async def _open(db_path: str, synchronous: Any = "FULL", **kw: Any) -> litegate.AsyncDatabase:
    adb = await litegate.connect_async(db_path, synchronous=synchronous, **kw)
    await adb.executescript("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    await adb.execute(INSERT, (-1,))  # (its first run is measured off the loop: quick)
    return adb


def _on_commit(monkeypatch: pytest.MonkeyPatch, before: Any) -> None:
    """Call ``before()`` as a group's COMMIT is about to run (on whichever thread runs it)."""
    real = _connection.end_transaction

    def spy(conn: sqlite3.Connection, guard: Any, sql: str) -> None:
        before()
        real(conn, guard, sql)

    monkeypatch.setattr("litegate._engine._group.end_transaction", spy)


CHILD = "INSERT INTO c(p) VALUES (?)"  # (its parent checked at COMMIT: see _open_deferred)


async def _open_deferred(db_path: str) -> litegate.AsyncDatabase:
    """A database whose ``c`` rows reference ``p(1)`` through a foreign key checked only at
    COMMIT; one child written already (``CHILD``: measured, quick)."""

    def foreign_keys(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA foreign_keys=ON")

    adb = await litegate.connect_async(db_path, synchronous="FULL", on_connect=foreign_keys)
    await adb.executescript(
        "CREATE TABLE p(id INTEGER PRIMARY KEY);"
        "CREATE TABLE c(id INTEGER PRIMARY KEY, "
        "  p REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);"
        "INSERT INTO p VALUES (1);"
    )
    await adb.execute(CHILD, (1,))
    return adb


async def _in_group(coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    """Start the write ``coro`` as a task; return once its statement ran into the loop's
    group, whose end is due later in this loop iteration (the loop holds the lane now)."""
    task = asyncio.ensure_future(coro)
    if asyncio.get_running_loop().get_task_factory() is None:
        await asyncio.sleep(0)  # (it runs up to its first yield: in the group)
    # (an eager task ran up to it inside ensure_future: a sleep here would let the group end)
    return task


@pytest.fixture
def grouped(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The loop groups handed to the writer thread: (the handing thread, writes in it)."""
    seen: list[tuple[int, int]] = []
    real = _lane_loop.LaneLoop.hand_group_here

    def spy(lane: Any, group: Any) -> bool:
        seen.append((threading.get_ident(), group.writes))
        return real(lane, group)

    monkeypatch.setattr(_lane_loop.LaneLoop, "hand_group_here", spy)
    return seen


@pytest.fixture
def statements_on(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads the loop group's statements ran on."""
    on: list[int] = []
    real = _statements.run_execute

    def spy(conn: sqlite3.Connection, sql: str, params: Any = ()) -> Any:
        on.append(threading.get_ident())
        return real(conn, sql, params)

    monkeypatch.setattr("litegate._engine._loop_group.run_execute", spy)
    return on


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])  # (NORMAL: writes that come together)
async def test_concurrent_writes_run_on_the_loop_and_share_one_commit_off_it(
    db_path: str,
    synchronous: str,
    grouped: list[tuple[int, int]],
    statements_on: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commits: list[int] = []
    adb = await _open(db_path, synchronous)
    statements_on.clear()
    grouped.clear()
    try:
        _on_commit(monkeypatch, lambda: commits.append(threading.get_ident()))
        results = await asyncio.gather(*(adb.execute(INSERT, (i,)) for i in range(64)))
        assert sorted(r.lastrowid or 0 for r in results) == list(range(2, 66))  # (-1: row 1)
        assert await adb.query_value("SELECT count(*) FROM t") == 65
        assert await adb.query_value("SELECT sum(v) FROM t") == sum(range(64)) - 1
        stats = await adb.stats()
    finally:
        monkeypatch.undo()
        await adb.close()
    here = threading.get_ident()
    assert statements_on == [here] * 64  # every statement on the loop
    assert grouped == [(here, 64)]  # one group, handed on from the loop
    assert len(commits) == 1 and commits[0] != here  # one COMMIT, off the loop
    assert stats.max_batch_size == 64 and stats.jobs_ok == 66 and stats.jobs_failed == 0, stats


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])  # (NORMAL: writes that come together)
async def test_a_failing_write_fails_alone_and_keeps_nothing_of_its_own(
    db_path: str, synchronous: str, statements_on: list[int]
) -> None:
    adb = await _open(db_path, synchronous)
    try:
        # OR FAIL keeps the rows a statement wrote before its failing one: in a shared
        # transaction they would commit with the others. Nothing of it may be kept.
        many = "INSERT OR FAIL INTO t(v) VALUES (?), (?), (?)"
        await adb.execute(many, (100, 101, 102))  # (measured: quick)
        results = await asyncio.gather(
            adb.execute(INSERT, (0,)),  # (at NORMAL it gives way: its statement runs last)
            adb.execute(INSERT, (1,)),
            adb.execute(INSERT, (2,)),
            adb.execute(many, (3, 4, 1)),  # its 3rd row collides with an earlier write
            adb.execute(INSERT, (5,)),
            return_exceptions=True,
        )
        assert isinstance(results[3], sqlite3.IntegrityError), results
        assert all(isinstance(r, litegate.Result) for i, r in enumerate(results) if i != 3)
        # (it failed in a loop group: the 3 writes before it and it ran there, on the loop)
        assert statements_on.count(threading.get_ident()) >= 4, statements_on
        rows = [r[0] for r in await adb.query("SELECT v FROM t ORDER BY v")]
        assert rows == [-1, 0, 1, 2, 5, 100, 101, 102]
        stats = await adb.stats()
        assert stats.jobs_failed == 1, stats
        await adb.execute(INSERT, (6,))  # the lane is free again
    finally:
        await adb.close()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])  # (NORMAL: writes that come together)
async def test_a_statement_that_ends_the_transaction_loses_only_itself(
    db_path: str, synchronous: str, statements_on: list[int]
) -> None:
    adb = await _open(db_path, synchronous)
    try:
        rollback = "INSERT OR ROLLBACK INTO t(v) VALUES (?)"
        await adb.execute(rollback, (200,))  # (measured: quick)
        results = await asyncio.gather(
            adb.execute(INSERT, (0,)),  # (at NORMAL it gives way: its statement runs last)
            adb.execute(INSERT, (1,)),
            adb.execute(rollback, (1,)),  # collides: SQLite rolls the whole group back
            adb.execute(INSERT, (2,)),
            return_exceptions=True,
        )
        assert isinstance(results[2], sqlite3.IntegrityError), results
        assert all(isinstance(r, litegate.Result) for i, r in enumerate(results) if i != 2)
        # (it ended a loop group: the write before it and it ran there, on the loop)
        assert statements_on.count(threading.get_ident()) >= 2, statements_on
        rows = [r[0] for r in await adb.query("SELECT v FROM t ORDER BY v")]
        assert rows == [-1, 0, 1, 2, 200]  # the others ran again
    finally:
        await adb.close()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])  # (NORMAL: writes that come together)
async def test_a_failed_group_commit_fails_every_write_and_acknowledges_none(
    db_path: str, synchronous: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    adb = await _open(db_path, synchronous)

    def failing() -> None:
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    try:
        _on_commit(monkeypatch, failing)
        results = await asyncio.gather(
            *(adb.execute(INSERT, (i,)) for i in range(8)), return_exceptions=True
        )
        assert all(isinstance(r, litegate.RolledBack) for r in results), results
        assert all("shared its COMMIT" in str(r) for r in results)
        monkeypatch.undo()
        assert await adb.query_value("SELECT count(*) FROM t") == 1
        await adb.execute(INSERT, (9,))  # the lane works again
        assert await adb.query_value("SELECT count(*) FROM t") == 2
    finally:
        await adb.close()


async def test_a_deferred_constraint_failing_at_commit_fails_only_the_guilty(
    db_path: str,
) -> None:
    adb = await _open_deferred(db_path)
    try:
        results = await asyncio.gather(
            adb.execute(CHILD, (1,)),
            adb.execute(CHILD, (42,)),  # no such parent: its COMMIT fails
            adb.execute(CHILD, (1,)),
            return_exceptions=True,
        )
        assert isinstance(results[1], sqlite3.IntegrityError), results
        assert isinstance(results[0], litegate.Result) and isinstance(results[2], litegate.Result)
        assert await adb.query_value("SELECT count(*) FROM c") == 3
    finally:
        await adb.close()


async def test_a_cancelled_write_in_a_group_still_commits(db_path: str) -> None:
    adb = await _open(db_path)
    try:
        first = asyncio.ensure_future(adb.execute(INSERT, (1,)))
        others = [asyncio.ensure_future(adb.execute(INSERT, (i,))) for i in (2, 3)]
        await asyncio.sleep(0)  # (each ran its statement into the group: started)
        first.cancel()
        await asyncio.gather(*others)
        with pytest.raises(asyncio.CancelledError):
            await first
        rows = [r[0] for r in await adb.query("SELECT v FROM t ORDER BY v")]
        assert rows == [-1, 1, 2, 3]  # a started write finishes; its result is dropped
    finally:
        await adb.close()


async def test_a_cancelled_write_waiting_for_the_commit_never_runs(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    adb = await _open(db_path)
    committing, go = threading.Event(), threading.Event()

    def held() -> None:
        committing.set()
        go.wait(10)

    try:
        _on_commit(monkeypatch, held)
        first = asyncio.ensure_future(adb.execute(INSERT, (1,)))
        assert await asyncio.to_thread(committing.wait, 10)  # its group's COMMIT runs
        late = asyncio.ensure_future(adb.execute(INSERT, (2,)))
        await asyncio.sleep(0.01)  # (it waits for that COMMIT)
        late.cancel()
        go.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await late
        monkeypatch.undo()
        await adb.execute(INSERT, (3,))
        assert [r[0] for r in await adb.query("SELECT v FROM t ORDER BY v")] == [-1, 1, 3]
    finally:
        go.set()
        await adb.close()


async def test_a_blocking_sync_call_on_the_loop_thread_ends_the_group_first(
    db_path: str,
) -> None:
    adb = await _open(db_path)
    db = adb.as_sync()
    try:
        task = await _in_group(adb.execute(INSERT, (1,)))
        # A sync call from the loop thread (blocking the loop, as some apps do) must neither
        # deadlock nor be refused: the group is handed to the writer first.
        db.execute(INSERT, (2,), timeout=5.0)
        with db.transaction(timeout=5.0) as tx:
            tx.execute(INSERT, (3,))
        await task
        assert [r[0] for r in await adb.query("SELECT v FROM t ORDER BY v")] == [-1, 1, 2, 3]
    finally:
        await adb.close()


@pytest.mark.blocks_loop("a blocking read from the loop's thread is the case under test")
async def test_a_blocking_read_on_the_loop_thread_waiting_for_a_reader_ends_the_group_first(
    tmp_path: Any,
) -> None:
    """The only reader is borrowed by a thread that then writes (it waits for the lane, which
    the loop's group holds); a blocking read from the loop's thread waits for that reader: the
    group is handed to the writer first, so neither waits for the other until a timeout."""
    db = litegate.connect(str(tmp_path / "r.db"), synchronous="FULL", readers=1, timeout=10.0)
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    adb = db.as_async()
    await adb.execute(INSERT, (-1,))  # (measured: quick)
    have_reader, group_open = threading.Event(), threading.Event()
    waited: dict[str, float] = {}

    def borrower() -> None:
        for _ in db.iterate("SELECT 1"):  # (holds the reader while it writes)
            have_reader.set()
            group_open.wait(10.0)
            t0 = time.monotonic()
            db.execute(INSERT, (99,))
            waited["write"] = time.monotonic() - t0

    thread = threading.Thread(target=borrower)
    thread.start()
    try:
        assert have_reader.wait(10.0)
        task = await _in_group(adb.execute(INSERT, (1,)))
        group_open.set()
        pause, deadline = threading.Event(), time.monotonic() + 10.0
        while db.stats().queue_depth == 0 and time.monotonic() < deadline:
            pause.wait(0.005)  # (until the thread waits for the lane, queued)
        assert db.stats().queue_depth == 1  # (the thread's write waits for the loop's group)
        t0 = time.monotonic()
        assert db.query_value("SELECT count(*) FROM t") in (2, 3)  # blocking, on the loop
        waited["read"] = time.monotonic() - t0
        assert db.stats().pool_waits == 1  # (the read waited for the thread's reader)
        await task
        await asyncio.to_thread(thread.join, 10.0)
        assert waited["read"] < 5.0 and waited["write"] < 5.0, waited
        assert [r[0] for r in db.query("SELECT v FROM t ORDER BY v")] == [-1, 1, 99]
    finally:
        group_open.set()
        await asyncio.to_thread(thread.join, 10.0)
        db.close()


def test_a_group_whose_loop_was_closed_never_keeps_the_lane(db_path: str) -> None:
    db = litegate.connect(db_path, synchronous="FULL", hold_warn=0.2)
    try:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
        adb = db.as_async()
        loop = asyncio.new_event_loop()

        async def start() -> None:
            await adb.execute(INSERT, (-1,))  # (measured: quick)
            asyncio.ensure_future(adb.execute(INSERT, (1,)))
            await asyncio.sleep(0)  # it joined a group, whose end is due next iteration
            loop.stop()  # ... which never comes

        try:
            loop.run_until_complete(start())  # (it returned; the loop stopped with it)
        finally:
            loop.close()  # (the group's end never runs)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # (another thread: this one
            # would end the group itself, see the next test)
            pool.submit(db.execute, INSERT, (2,), timeout=10.0).result()  # the writer takes
        assert time.monotonic() - t0 < 5.0  # the lane back
        assert [r[0] for r in db.query("SELECT v FROM t ORDER BY v")] in ([-1, 1, 2], [-1, 2])
    finally:
        db.close()


@pytest.mark.parametrize(
    ("func", "text", "first"),
    [
        (_lane_loop.LaneLoop.take_group_here, "if not self._begin_if_free():", True),
        (_lane_loop.LaneLoop.take_group_here, "group = self._group = Group()", True),
        (_loop_group._join, "end.future = _Ended(loop, lg, joined)", True),
        (_loop_group._join, "loop.call_soon(_end, lane, lg, group)", True),
        (_loop_group._join, "result = run_execute(conn, sql, params)", True),
        (_loop_group._join, "result = run_execute(conn, sql, params)", False),
        (_loop_group._join, "joined.append((fut, result))", False),
    ],
)
async def test_an_interrupt_on_the_loop_never_strands_the_lane_nor_a_write(
    db_path: str, func: Any, text: str, first: bool
) -> None:
    # (the interrupted write runs in the test's own task: a KeyboardInterrupt in another
    # task leaves the event loop. ``first``: it opens the group, else it joins one the other
    # writes opened)
    adb = await _open(db_path)
    try:
        tasks = []
        if not first:  # (an eager task factory runs them at once: hence only here)
            tasks = [asyncio.ensure_future(adb.execute(INSERT, (i,))) for i in range(3)]
            await asyncio.sleep(0)  # (they ran their statements into a group)
        with interrupting(func, text):
            await adb.execute(INSERT, (3,))
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await adb.execute(INSERT, (10,), timeout=2.0)  # the lane works again
        rows = {r[0] for r in await adb.query("SELECT v FROM t")}
        for i, outcome in enumerate(outcomes):  # every answer is the truth
            assert isinstance(outcome, litegate.Result) and i in rows, (outcomes, rows)
        assert 3 not in rows and {-1, 10} <= rows, rows  # (interrupted: nothing of it kept)
    finally:
        await adb.close()


@pytest.mark.parametrize(
    ("func", "text"),
    [
        (_loop_group._end, "joined = lg.joined"),
        (_loop_group._end, "handed = lane.hand_group_here(group)"),
        (_lane_loop.LaneLoop.hand_group_here, "self._conn.set_progress_handler(None, 0)"),
        (_lane_loop.LaneLoop.hand_group_here, "self._release_locked()"),
    ],
)
def test_an_interrupt_ending_a_group_on_the_loop_never_strands_the_lane(
    db_path: str, func: Any, text: str
) -> None:
    # A Ctrl-C in the group's end (a loop callback, in no task) leaves the loop: asyncio.run
    # ends and closes it. The writer thread then takes the lane back.
    db = litegate.connect(db_path, synchronous="FULL")
    try:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
        adb = db.as_async()
        asyncio.run(adb.execute(INSERT, (-1,)))  # (measured: quick)

        async def writes() -> None:
            await asyncio.gather(*(adb.execute(INSERT, (i,)) for i in range(3)))

        with interrupting(func, text):
            asyncio.run(writes())
        t0 = time.monotonic()
        db.execute(INSERT, (10,), timeout=10.0)  # the lane works again
        assert time.monotonic() - t0 < 5.0
        rows = sorted(r[0] for r in db.query("SELECT v FROM t"))
        assert rows in ([-1, 10], [-1, 0, 1, 2, 10]), rows  # the group, all or nothing
    finally:
        db.close()


async def test_a_queued_write_failing_never_undoes_another_tasks_group(db_path: str) -> None:
    # A queued write's failure (or cancellation) reaches its task while another task of the
    # loop holds the lane for a group: the repairs of the failed write must leave that group.
    adb = await _open(db_path, timeout=3.0)
    db = adb.as_sync()
    held, release = threading.Event(), threading.Event()

    def hold_lane() -> None:
        with db.transaction() as tx:
            tx.execute(INSERT, ("thread",))
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold_lane)
    holder.start()
    try:
        assert await asyncio.to_thread(held.wait, 5)
        lane = adb._engine._lane  # type: ignore[attr-defined]
        failing = asyncio.ensure_future(adb.execute(INSERT, (-1,)))  # a duplicate, queued
        while not lane._queue:  # noqa: ASYNC110
            await asyncio.sleep(0)
        job = lane._queue[0]
        release.set()

        async def poller(i: int) -> Any:
            # (polled, not an Event: one of them writes in the very iteration that answers
            # the queued write, before that write's task resumes)
            while not job.future.done():  # noqa: ASYNC110
                await asyncio.sleep(0)
            return await adb.execute(INSERT, (100 + i,))

        pollers = [asyncio.ensure_future(poller(i)) for i in range(64)]
        results = await asyncio.wait_for(
            asyncio.gather(failing, *pollers, return_exceptions=True), 10
        )
        assert isinstance(results[0], sqlite3.IntegrityError), results[0]
        assert all(isinstance(r, litegate.Result) for r in results[1:]), results[1:]
        assert await adb.query_value("SELECT count(*) FROM t WHERE v BETWEEN 100 AND 163") == 64
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 5)
        await adb.close()


@pytest.mark.blocks_loop("a blocking sync call from the loop thread is the case under test")
async def test_a_blocking_call_to_another_database_ends_this_loops_groups_first(
    tmp_path: Any,
) -> None:
    # The loop holds B's lane for a group; a task calls A blocking while thread T holds A and
    # wants B: without ending B's group first, each waits for the other until a timeout.
    a = await litegate.connect_async(str(tmp_path / "a.db"), synchronous="FULL", timeout=2.0)
    b = await litegate.connect_async(str(tmp_path / "b.db"), synchronous="FULL", timeout=2.0)
    in_a, go = threading.Event(), threading.Event()
    took: list[float] = []

    def thread_t() -> None:
        with a.as_sync().transaction(timeout=2.0) as tx:
            tx.execute(INSERT, ("T",))
            in_a.set()
            go.wait(5)
            time.sleep(0.2)  # (the loop thread now waits for A)
            t0 = time.monotonic()
            b.as_sync().execute(INSERT, ("T",), timeout=2.0)
            took.append(time.monotonic() - t0)

    try:
        for x in (a, b):
            await x.executescript("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
            await x.execute(INSERT, (0,))  # (measured: quick)
        t = threading.Thread(target=thread_t)
        t.start()
        assert await asyncio.to_thread(in_a.wait, 5)
        write = await _in_group(b.execute(INSERT, (1,)))  # (the loop holds B's lane)
        go.set()
        a.as_sync().execute(INSERT, ("loop",), timeout=5.0)  # blocks the loop until T is done
        await write
        await asyncio.to_thread(t.join, 5)
        assert took and took[0] < 1.0, took
        assert await b.query_value("SELECT count(*) FROM t") == 3
    finally:
        await a.close()
        await b.close()


async def test_a_function_of_a_grouped_statement_calling_the_database_is_refused(
    db_path: str,
) -> None:
    notes: list[str] = []
    dbs: list[litegate.Database] = []

    def call_back(x: int) -> int:
        try:
            dbs[0].execute(INSERT, (x + 1000,), timeout=1.0)
        except litegate.Misuse as exc:
            notes.append(str(exc))
        return x

    def register(conn: sqlite3.Connection) -> None:
        conn.create_function("call_back", 1, call_back)

    adb = await _open(db_path, on_connect=register)
    dbs.append(adb.as_sync())
    try:
        sql = "INSERT INTO t(v) VALUES (call_back(?))"
        await adb.execute(sql, (1,))  # (measured off the loop: refused there too)
        notes.clear()
        others = [asyncio.ensure_future(adb.execute(INSERT, (i,))) for i in (2, 3)]
        await asyncio.sleep(0)  # (a group is open)
        t0 = time.monotonic()
        await adb.execute(sql, (4,))
        assert time.monotonic() - t0 < 0.5  # refused at once, not after a timeout
        await asyncio.gather(*others)
        assert len(notes) == 1 and "inside a write statement" in notes[0], notes
        rows = sorted(r[0] for r in await adb.query("SELECT v FROM t"))
        assert rows == [-1, 1, 2, 3, 4], rows
    finally:
        await adb.close()


async def test_a_lone_write_whose_deferred_constraint_fails_gets_its_own_error(
    db_path: str,
) -> None:
    adb = await _open_deferred(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await adb.execute(CHILD, (42,))
        assert await adb.query_value("SELECT count(*) FROM c") == 1
    finally:
        await adb.close()


async def test_savepoint_statements_never_run_in_a_loop_group(
    db_path: str, statements_on: list[int]
) -> None:
    # In a group of other writes, a ROLLBACK TO would undo theirs: such texts are never
    # judged quick (so a transaction's never runs on the loop), and as plain writes they are
    # refused before anything runs.
    adb = await _open(db_path)
    try:
        for _ in range(3):
            async with adb.transaction() as tx:  # (measured there too: never quick)
                await tx.execute("SAVEPOINT x")
                await tx.execute("ROLLBACK TO x")
            with pytest.raises(litegate.Refused):
                await adb.execute("SAVEPOINT y")
        statements_on.clear()
        done = await asyncio.gather(
            adb.execute(INSERT, (1,)), adb.execute("SAVEPOINT y"), return_exceptions=True
        )
        assert isinstance(done[1], litegate.Refused)
        assert statements_on == [threading.get_ident()]  # on the loop: the INSERT only
    finally:
        await adb.close()


async def test_a_task_writing_alone_is_queued_whole_until_writes_come_together(
    db_path: str, grouped: list[tuple[int, int]], statements_on: list[int]
) -> None:
    """Groups of one write each, _SOLO in a row: the next lone writes go to the writer thread
    whole (statement and COMMIT: cheaper for a lone write); once writes come together, groups
    again. Nothing else changes: every write is acknowledged and kept."""
    adb = await _open(db_path)
    loop_thread = threading.get_ident()
    try:
        for i in range(_loop_group._SOLO + 3):
            await adb.execute(INSERT, (i,))
        assert [n for _, n in grouped] == [1] * _loop_group._SOLO  # (then queued whole)
        assert statements_on.count(loop_thread) == _loop_group._SOLO
        statements_on.clear()

        async def task(k: int) -> None:
            for j in range(10):
                await adb.execute(INSERT, (1000 + k * 100 + j,))

        await asyncio.gather(*(task(k) for k in range(32)))
        assert any(n > 1 for _, n in grouped[_loop_group._SOLO :]), grouped
        assert statements_on.count(loop_thread) > 1
        assert await adb.query_value("SELECT count(*) FROM t") == 1 + _loop_group._SOLO + 3 + 320
    finally:
        await adb.close()


async def test_a_burst_after_writing_alone_is_grouped_again(
    db_path: str, grouped: list[tuple[int, int]]
) -> None:
    """After a task wrote alone (queued whole), a burst of writes -- each request's gather,
    done before the next -- gets groups again, not a queue behind its first write."""
    adb = await _open(db_path)
    try:
        for i in range(_loop_group._SOLO + 2):
            await adb.execute(INSERT, (i,))
        grouped.clear()
        for burst in range(4):
            await asyncio.gather(*(adb.execute(INSERT, (100 * (burst + 1) + k,)) for k in range(8)))
        assert any(n > 1 for _, n in grouped), grouped
        assert await adb.query_value("SELECT count(*) FROM t") == 1 + _loop_group._SOLO + 2 + 32
    finally:
        await adb.close()
