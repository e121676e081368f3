"""The write lane lent to an event loop (litegate/_cluster/_loop_writer.py), on the stand-in
driver: asyncio tasks' transactions run on the loop's own session, chained under one COMMIT;
a failing, lost, cut-off or cancelled one is answered as the writer thread answers it; the
lane goes back to threads and single writes between chains, and comes back from a loop that
closed while it held it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import litegate
from litegate._cluster import ClusterEngine
from litegate._config import make_options

from .fake_driver import FakeDriver
from .test_engine import URL

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.blocks_loop(
        "the stand-in driver runs each statement on SQLite on the loop, and the engine's "
        "writer thread runs Python beside it: under a loaded CI machine the GIL held the loop "
        "30-40 ms once in a while; these test the engine's logic (tests/dqlite/ runs the real "
        "driver)"
    ),
]


@pytest.fixture
def fake(tmp_path: Any) -> FakeDriver:
    return FakeDriver(tmp_path)


async def open_adb(fake: FakeDriver, **options: object) -> litegate.AsyncDatabase:
    engine = await asyncio.to_thread(
        ClusterEngine,
        make_options(URL, {"readers": 2, **options}),  # type: ignore[typeddict-item]
        sessions=fake.open_session,
        async_sessions=fake.open_async_session,
    )
    adb = litegate.AsyncDatabase(engine)
    await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    return adb


async def chained(adb: litegate.AsyncDatabase, bodies: list[object]) -> list[object]:
    """A task's transaction holds the loop's turn while one transaction per body waits for
    it; then they run one after another (a chain). A body is a value to insert, or an
    exception to raise after inserting ``-1 - i``. What each transaction's block ended with."""
    held, go = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO t(v) VALUES ('holder')")
            held.set()
            await go.wait()

    first = asyncio.create_task(holder())
    await asyncio.wait_for(held.wait(), 10)
    out: list[object] = [None] * len(bodies)

    async def run(i: int, body: object) -> None:
        try:
            async with adb.transaction() as tx:
                if isinstance(body, BaseException):
                    await tx.execute("INSERT INTO t(v) VALUES (?)", (-1 - i,))
                    raise body
                await tx.execute(f"INSERT INTO t(v) VALUES ({body})")  # (a fault can match it)
            out[i] = "committed"
        except BaseException as exc:
            out[i] = exc

    tasks = [asyncio.create_task(run(i, b)) for i, b in enumerate(bodies)]
    await asyncio.sleep(0)  # (each task runs up to its wait for the turn)
    go.set()
    await asyncio.wait_for(asyncio.gather(first, *tasks, return_exceptions=True), 30)
    return out


async def values(adb: litegate.AsyncDatabase) -> list[object]:
    return sorted((r[0] for r in await adb.query("SELECT v FROM t")), key=str)


async def test_transactions_of_tasks_chain_on_the_loop_under_one_commit(fake: FakeDriver) -> None:
    adb = await open_adb(fake, group_wait=30.0)  # (a chain may grow old only by its size)
    try:
        loop_thread = threading.current_thread().name
        before = len(fake.sent_on)
        out = await chained(adb, [1, 2, 3, 4, 5])
        assert out == ["committed"] * 5
        assert await values(adb) == [1, 2, 3, 4, 5, "holder"]
        sent = fake.sent_on[before:]
        mine = [(sql, th) for sql, th in sent if "INSERT" in sql or "litegate_member" in sql]
        assert len(mine) == 11  # (six INSERTs, five SAVEPOINTs: one per transaction joining)
        assert {th for _, th in mine} == {loop_thread}  # (no statement hopped to a thread)
        assert [sql for sql, _ in sent].count("COMMIT") == 1  # (one for the six)
        stats = await adb.stats()
        assert stats.transactions == 6 and stats.max_batch_size == 6
    finally:
        await adb.close()


async def test_a_chained_transaction_that_fails_undoes_only_its_own_part(
    fake: FakeDriver,
) -> None:
    adb = await open_adb(fake)
    try:
        out = await chained(adb, [1, KeyError("b"), 3, ValueError("d"), 5])
        assert out[0] == out[2] == out[4] == "committed"
        assert isinstance(out[1], KeyError) and isinstance(out[3], ValueError)
        assert await values(adb) == [1, 3, 5, "holder"]
    finally:
        await adb.close()


async def test_a_lost_session_rolls_back_the_chain_and_the_next_ones_go_on(
    fake: FakeDriver,
) -> None:
    """The third transaction's statement finds the session dead: it and every transaction
    waiting in the chain with it are told they did not commit; those after it begin a chain
    of their own on a new session; what is in the table is exactly what was reported
    committed."""
    adb = await open_adb(fake, group_wait=30.0)
    try:
        fake.fail("lost", "VALUES (3)")
        out = await chained(adb, [1, 2, 3, 4, 5])
        assert isinstance(out[2], litegate.RolledBack)
        assert isinstance(out[0], litegate.RolledBack) and isinstance(out[1], litegate.RolledBack)
        assert out[3] == out[4] == "committed"
        assert await values(adb) == [4, 5]  # (the holder's was in the lost chain too)
    finally:
        await adb.close()


async def test_a_chain_whose_commit_is_cut_off_reports_every_member_unknown(
    fake: FakeDriver,
) -> None:
    adb = await open_adb(fake, group_wait=30.0)
    try:
        fake.fail("ambiguous", "COMMIT")
        out = await chained(adb, [1, 2, 3])
        assert all(isinstance(o, litegate.OutcomeUnknown) for o in out), out
        assert await values(adb) == [1, 2, 3, "holder"]  # (the fake's cut-off COMMIT did apply)
    finally:
        await adb.close()


async def test_sqlite_rolling_back_the_shared_transaction_is_never_reported_committed(
    fake: FakeDriver,
) -> None:
    """A later transaction's ``INSERT OR ROLLBACK`` makes SQLite roll back the transaction the
    chain shares: the ones waiting for its COMMIT are told they did not commit, the later one
    is lost, and the next begins a chain of its own."""
    adb = await open_adb(fake, group_wait=30.0)
    try:
        await adb.execute("INSERT INTO t(v) VALUES ('taken')")
        out: dict[str, object] = {}

        async def second() -> None:
            async with adb.transaction() as tx:
                try:
                    await tx.execute("INSERT OR ROLLBACK INTO t(v) VALUES ('taken')")
                except sqlite3.IntegrityError:
                    pass  # (the app catches it and goes on)
                await tx.execute("INSERT INTO t(v) VALUES ('second')")

        async def third() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('third')")

        async def attempt(name: str, fn: Callable[[], Awaitable[None]]) -> None:
            try:
                await fn()
                out[name] = "committed"
            except BaseException as exc:
                out[name] = exc

        held, go = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('first')")
                held.set()
                await go.wait()

        tasks = [asyncio.create_task(attempt("first", first))]
        await asyncio.wait_for(held.wait(), 10)
        tasks += [asyncio.create_task(attempt(n, f)) for n, f in (("2", second), ("3", third))]
        await asyncio.sleep(0)
        go.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert isinstance(out["first"], litegate.RolledBack), out
        assert isinstance(out["2"], litegate.RolledBack), out
        assert out["3"] == "committed"
        assert await values(adb) == ["taken", "third"]
    finally:
        await adb.close()


async def test_a_cancelled_task_rolls_back_alone_and_the_lane_moves_on(
    fake: FakeDriver,
) -> None:
    adb = await open_adb(fake, group_wait=30.0)
    try:
        inside = asyncio.Event()

        async def stuck() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('cancelled')")
                inside.set()
                await asyncio.sleep(60)

        victim = asyncio.create_task(stuck())
        await asyncio.wait_for(inside.wait(), 10)
        waiting = [asyncio.create_task(insert_in_transaction(adb, v)) for v in (1, 2)]
        await asyncio.sleep(0)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert await values(adb) == [1, 2]
    finally:
        await adb.close()


async def insert_in_transaction(adb: litegate.AsyncDatabase, v: object) -> None:
    async with adb.transaction() as tx:
        await tx.execute("INSERT INTO t(v) VALUES (?)", (v,))


async def test_a_turn_not_given_in_time_is_a_write_timeout_and_nothing_runs(
    fake: FakeDriver,
) -> None:
    adb = await open_adb(fake)
    try:
        db = adb.as_sync()
        entered, release = threading.Event(), threading.Event()

        def holder() -> None:
            with db.transaction():
                entered.set()
                release.wait(10)

        th = threading.Thread(target=holder)
        th.start()
        await asyncio.to_thread(entered.wait, 10)
        t0 = time.monotonic()
        with pytest.raises(litegate.WriteTimeout):
            async with adb.transaction(timeout=0.2) as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('late')")
        assert time.monotonic() - t0 < 5
        release.set()
        await asyncio.to_thread(th.join, 10)
        await insert_in_transaction(adb, "after")  # (the loop asks for the lane again)
        assert await values(adb) == ["after"]
    finally:
        await adb.close()


async def test_threads_single_writes_and_tasks_share_the_lane(fake: FakeDriver) -> None:
    """Threads' transactions and single writes wait in the engine's queue while a loop holds
    the lane: it gives the lane back between chains. Nothing is lost, nothing waits forever."""
    adb = await open_adb(fake)
    try:
        await adb.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER)")
        await adb.executemany("INSERT INTO acct(bal) VALUES (?)", [(100,)] * 16)
        db = adb.as_sync()

        def thread_transfers(k: int) -> None:
            for i in range(25):
                a, b = (k + i) % 16 + 1, (k * 3 + i * 5 + 1) % 16 + 1
                if a == b:
                    continue
                with db.transaction() as tx:
                    x = tx.query_value("SELECT bal FROM acct WHERE id = ?", (a,))
                    tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (x - 1, a))
                    y = tx.query_value("SELECT bal FROM acct WHERE id = ?", (b,))
                    tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (y + 1, b))
                db.execute("INSERT INTO t(v) VALUES (?)", (f"thread {k}.{i}",))

        async def task_transfers(k: int) -> None:
            for i in range(10):
                a, b = (k + i * 7) % 16 + 1, (k + i * 3 + 2) % 16 + 1
                if a == b:
                    continue
                async with adb.transaction() as tx:
                    x = await tx.query_value("SELECT bal FROM acct WHERE id = ?", (a,))
                    await tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (x - 1, a))
                    y = await tx.query_value("SELECT bal FROM acct WHERE id = ?", (b,))
                    await tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (y + 1, b))
                await adb.execute("INSERT INTO t(v) VALUES (?)", (f"task {k}.{i}",))

        threads = [asyncio.to_thread(thread_transfers, k) for k in range(3)]
        await asyncio.wait_for(
            asyncio.gather(*threads, *(task_transfers(k) for k in range(32))), 60
        )
        assert await adb.query_value("SELECT sum(bal) FROM acct") == 1600
        assert await adb.query_value("SELECT count(*) FROM t") == 3 * 25 + 32 * 10
    finally:
        await adb.close()


async def test_statement_functions_of_a_transaction_send_to_the_loops_session(
    fake: FakeDriver,
) -> None:
    adb = await open_adb(fake)
    try:
        loop_thread = threading.current_thread().name
        ran_on: list[str] = []

        def fn(conn: sqlite3.Connection, v: int) -> int:
            ran_on.append(threading.current_thread().name)
            conn.execute("INSERT INTO t(v) VALUES (?)", (v,))
            return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])

        before = len(fake.sent_on)
        async with adb.transaction() as tx:
            await tx.executemany("INSERT INTO t(v) VALUES (?)", [(1,), (2,)])
            await tx.executescript("INSERT INTO t(v) VALUES (3); INSERT INTO t(v) VALUES (4);")
            assert await tx.run(fn, 5) == 5
            with pytest.raises(KeyError):
                async with tx.savepoint():
                    await tx.execute("INSERT INTO t(v) VALUES (6)")
                    raise KeyError
            async with tx.savepoint():
                await tx.execute("INSERT INTO t(v) VALUES (7)")
            assert [r[0] async for r in tx.iterate("SELECT v FROM t ORDER BY v", arraysize=2)] == [
                1, 2, 3, 4, 5, 7,
            ]  # fmt: skip
        assert await values(adb) == [1, 2, 3, 4, 5, 7]
        assert ran_on and loop_thread not in ran_on  # (the function ran beside the loop)
        sent = [(sql, th) for sql, th in fake.sent_on[before:] if "INSERT INTO t" in sql]
        assert {th for _, th in sent} == {loop_thread}  # (its statements, on the loop's)
    finally:
        await adb.close()


async def test_a_function_that_swallows_a_rollback_is_reported_unknown(fake: FakeDriver) -> None:
    adb = await open_adb(fake)
    try:
        await adb.execute("INSERT INTO t(v) VALUES ('taken')")

        def swallow(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT OR ROLLBACK INTO t(v) VALUES ('taken')")
            except sqlite3.IntegrityError:
                pass
            conn.execute("INSERT INTO t(v) VALUES ('after')")  # (outside any transaction now)

        with pytest.raises(litegate.OutcomeUnknown):
            async with adb.transaction() as tx:
                await tx.run(swallow)
        await insert_in_transaction(adb, "next")
        assert await values(adb) == ["after", "next", "taken"]
    finally:
        await adb.close()


def test_a_loop_that_closes_holding_the_lane_gives_it_back(fake: FakeDriver) -> None:
    """A loop torn down in the middle of a transaction never gives the lane back itself: the
    writer thread finds the loop closed, drops its session (the cluster rolls back what it
    left open) and serves the next."""
    engine = ClusterEngine(
        make_options(URL, {"readers": 2, "hold_warn": 0.2}),
        sessions=fake.open_session,
        async_sessions=fake.open_async_session,
    )
    db = litegate.Database(engine)
    try:
        db.execute("CREATE TABLE t(v)")
        adb = litegate.AsyncDatabase(engine)
        loop = asyncio.new_event_loop()
        inside = asyncio.Event()

        async def abandoned() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ('abandoned')")
                inside.set()
                await asyncio.sleep(60)

        loop.create_task(abandoned())
        loop.run_until_complete(asyncio.wait_for(inside.wait(), 10))
        loop.close()  # (its task never finished: no end, no rollback from the loop)
        t0 = time.monotonic()
        db.execute("INSERT INTO t VALUES ('next')", timeout=10)
        assert time.monotonic() - t0 < 5
        assert [r[0] for r in db.query("SELECT v FROM t")] == ["next"]
    finally:
        db.close()


async def test_a_thread_waits_one_chain_not_the_loops_backlog(fake: FakeDriver) -> None:
    """64 tasks keep the loop's turns full for a second; a thread's single writes meanwhile
    are each served between two chains (the loop gives the lane back as soon as one waits),
    long before the tasks are done. (Chains of 8 at most: each commits while tasks still wait
    for turns, as under a steady load.)"""
    adb = await open_adb(fake, max_batch=8)
    try:
        db = adb.as_sync()
        stop = time.monotonic() + 1.5

        async def busy(k: int) -> None:
            i = 0
            while time.monotonic() < stop:
                await insert_in_transaction(adb, f"task {k}.{i}")
                i += 1

        def thread_writes() -> list[float]:
            waits = []
            time.sleep(0.2)  # (the tasks' backlog first)
            for i in range(5):
                t0 = time.monotonic()
                db.execute("INSERT INTO t(v) VALUES (?)", (f"thread {i}",))
                waits.append(time.monotonic() - t0)
            return waits

        tasks = [asyncio.create_task(busy(k)) for k in range(64)]
        waits = await asyncio.to_thread(thread_writes)
        finished = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert max(waits) < 0.5, waits
        assert finished < stop, "the thread's writes waited for the loop's whole backlog"
        assert await adb.query_value("SELECT count(*) FROM t WHERE v LIKE 'thread %'") == 5
    finally:
        await adb.close()


async def test_closing_with_a_transaction_mid_way_ends_it_never_hangs(fake: FakeDriver) -> None:
    """``close(timeout)`` runs out while a task's transaction holds the loop's turn: the loop's
    session is dropped (rolled back) and the transaction ends with an error -- it neither
    writes on without the lane nor waits for a COMMIT nobody will send."""
    adb = await open_adb(fake)
    engine = adb.as_sync()
    inside, go = asyncio.Event(), asyncio.Event()
    outcome: list[BaseException | str] = []

    async def midway() -> None:
        try:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('midway')")
                inside.set()
                await go.wait()
                await tx.execute("INSERT INTO t(v) VALUES ('after close')")
            outcome.append("committed")
        except BaseException as exc:
            outcome.append(exc)

    task = asyncio.create_task(midway())
    await asyncio.wait_for(inside.wait(), 10)
    t0 = time.monotonic()
    await asyncio.to_thread(engine.close, 0.3)
    go.set()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - t0 < 10
    assert len(outcome) == 1 and isinstance(outcome[0], litegate.Error), outcome
    check = litegate.Database(
        ClusterEngine(
            make_options(URL, {"readers": 1}),
            sessions=fake.open_session,
            async_sessions=fake.open_async_session,
        )
    )
    try:
        assert check.query("SELECT v FROM t") == []  # (nothing of it was committed)
    finally:
        check.close()


def test_close_takes_the_lane_back_from_a_stopped_loop(fake: FakeDriver) -> None:
    """A loop stopped (not closed) in the middle of a transaction runs nothing again: the
    engine's close takes the lane back instead of waiting for it."""
    engine = ClusterEngine(
        make_options(URL, {"readers": 2, "hold_warn": 0.2}),
        sessions=fake.open_session,
        async_sessions=fake.open_async_session,
    )
    db = litegate.Database(engine)
    db.execute("CREATE TABLE t(v)")
    adb = litegate.AsyncDatabase(engine)
    loop = asyncio.new_event_loop()
    try:
        inside = asyncio.Event()

        async def stopped() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ('stopped')")
                inside.set()
                await asyncio.sleep(60)

        task = loop.create_task(stopped())
        loop.run_until_complete(asyncio.wait_for(inside.wait(), 10))
        t0 = time.monotonic()
        db.close(timeout=5)
        assert time.monotonic() - t0 < 4  # (taken back within hold_warn, not the timeout)
        assert not task.done()
    finally:
        loop.close()


async def test_a_turn_held_when_the_engine_closes_begins_nothing(fake: FakeDriver) -> None:
    """The turn was given, the transaction not begun yet, and ``close(timeout)`` took the
    lane back: its BEGIN is refused (``Closed``) -- never sent on a new session, outside the
    lane, with a COMMIT nobody would send."""
    engine = await asyncio.to_thread(
        ClusterEngine,
        make_options(URL, {"readers": 1}),
        sessions=fake.open_session,
        async_sessions=fake.open_async_session,
    )
    lease = await engine.lease_async(10)
    await asyncio.to_thread(engine.close, 0.2)
    await asyncio.sleep(0.05)  # (the loop runs the writer's abandon it was handed)
    sent = len(fake.sent)
    with pytest.raises(litegate.Closed):
        await asyncio.wait_for(lease.begin(), 5)
    lease.end()
    assert fake.sent[sent:] == []
