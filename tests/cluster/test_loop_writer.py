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
from .test_engine import URL, hold_lane, swallow

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
        release, th = await asyncio.to_thread(hold_lane, db)
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
        stop = time.monotonic() + 1.0

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


async def test_with_an_on_connect_hook_async_transactions_go_through_the_writer_thread(
    fake: FakeDriver,
) -> None:
    """``on_connect`` takes a thread's connection: the loop cannot open its own writer session
    with it, so async transactions keep to the writer thread -- chained, rolled back alone,
    cut off, as there."""
    hooked: list[object] = []
    adb = await open_adb(fake, on_connect=hooked.append, group_wait=30.0)
    try:
        loop_thread = threading.current_thread().name
        before = len(fake.sent_on)
        out = await chained(adb, [1, KeyError("b"), 3])
        assert out[0] == out[2] == "committed" and isinstance(out[1], KeyError)
        assert await values(adb) == [1, 3, "holder"]
        mine = [th for sql, th in fake.sent_on[before:] if "INSERT INTO t" in sql]
        assert mine and loop_thread not in mine  # (sent from the writer thread)
        assert hooked  # (the hook ran on the writer's connection)
        async with adb.transaction() as tx:
            await tx.executemany("INSERT INTO t(v) VALUES (?)", [(4,), (5,)])
            assert await tx.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 5
            with pytest.raises(KeyError):
                async with tx.savepoint():
                    await tx.execute("INSERT INTO t(v) VALUES (6)")
                    raise KeyError
        fake.fail("ambiguous", "COMMIT")
        with pytest.raises(litegate.OutcomeUnknown):
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES (7)")
        fake.fail("lost", "VALUES (8)")
        with pytest.raises(litegate.RolledBack):
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES (8)")
        assert await values(adb) == [1, 3, 4, 5, 7, "holder"]
    finally:
        await adb.close()


async def test_faults_inside_a_chain_fail_it_closed(fake: FakeDriver) -> None:
    """A session lost while the next transaction's savepoint is opened, while a failing one's
    is rolled back to, or while a function of a transaction runs beside the loop: the chain's
    waiting transactions are told they did not commit, and what is in the table is exactly
    what was reported committed."""
    adb = await open_adb(fake, group_wait=30.0)
    try:
        cases: list[tuple[str, list[object]]] = [
            ("SAVEPOINT litegate_member", [1, 2, 3]),  # (the holder's commit opens the next's)
            ("ROLLBACK TO litegate_member", [11, KeyError("x"), 13]),
        ]
        for fault, bodies in cases:
            fake.fail("lost", fault)
            await adb.execute("DELETE FROM t")
            out = await chained(adb, bodies)
            committed = {b for b, o in zip(bodies, out, strict=True) if o == "committed"}
            assert set(await values(adb)) == committed, (fault, out)  # (the holder's: lost)
            assert len(committed) < len(bodies) or fault.startswith("SAVEPOINT"), out

        def writes(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t(v) VALUES ('in fn')")

        fake.fail("lost", "'in fn'")
        with pytest.raises(litegate.RolledBack):
            async with adb.transaction() as tx:
                await tx.run(writes)
        with pytest.raises(litegate.Misuse):
            async with adb.transaction(time_limit=1.0) as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('limited')")
        assert "in fn" not in await values(adb) and "limited" not in await values(adb)
    finally:
        await adb.close()


async def test_a_commit_sqlite_refuses_fails_every_transaction_of_the_chain(
    fake: FakeDriver,
) -> None:
    """A deferred foreign key checked at the chain's COMMIT: SQLite refuses the COMMIT, so no
    transaction of the chain committed, and each is told (never "committed")."""
    adb = await open_adb(fake, group_wait=30.0, pragmas={"foreign_keys": "ON"})
    try:
        await adb.executescript(
            "CREATE TABLE p(id INTEGER PRIMARY KEY);"
            "CREATE TABLE c(pid INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);"
        )
        out = await chained(adb, [1, 2])
        assert out == ["committed", "committed"]
        held, go = asyncio.Event(), asyncio.Event()

        async def orphan() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO c VALUES (42)")  # (no parent: found at COMMIT)
                held.set()
                await go.wait()

        results: list[object] = []

        async def attempt(fn: Callable[[], Awaitable[None]]) -> None:
            try:
                await fn()
                results.append("committed")
            except BaseException as exc:
                results.append(exc)

        first = asyncio.create_task(attempt(orphan))
        await asyncio.wait_for(held.wait(), 10)
        later = asyncio.create_task(attempt(lambda: insert_in_transaction(adb, "later")))
        await asyncio.sleep(0)
        go.set()
        await asyncio.wait_for(asyncio.gather(first, later), 10)
        assert len(results) == 2 and all(isinstance(r, litegate.RolledBack) for r in results)
        assert "later" not in await values(adb)
        assert await adb.query_value("SELECT count(*) FROM c") == 0
    finally:
        await adb.close()


async def test_a_cancellation_during_commit_waits_for_its_outcome(fake: FakeDriver) -> None:
    """A task cancelled while its COMMIT waits for the chain's: the cancellation is raised
    once the COMMIT is over, and ``committed`` says it took effect."""
    adb = await open_adb(fake, group_wait=30.0)
    try:
        held, go = asyncio.Event(), asyncio.Event()
        seen: list[litegate.AsyncTransaction] = []

        async def first() -> None:
            async with adb.transaction() as tx:
                seen.append(tx)
                await tx.execute("INSERT INTO t(v) VALUES ('first')")
                held.set()
                await go.wait()

        task = asyncio.create_task(first())
        await asyncio.wait_for(held.wait(), 10)
        follower = asyncio.create_task(insert_in_transaction(adb, "second"))
        await asyncio.sleep(0)
        go.set()
        for _ in range(3):  # (its COMMIT queued in the chain, the second's turn next)
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await asyncio.wait_for(follower, 10)
        assert seen[0].committed
        assert await values(adb) == ["first", "second"]
    finally:
        await adb.close()


async def test_a_snapshot_on_the_lane_sees_one_state(fake: FakeDriver) -> None:
    engine = await asyncio.to_thread(
        ClusterEngine,
        make_options(URL, {"readers": 1}),
        sessions=fake.open_session,
        async_sessions=fake.open_async_session,
    )
    adb = litegate.AsyncDatabase(engine)
    try:
        await adb.execute("CREATE TABLE t(v)")
        await adb.execute("INSERT INTO t(v) VALUES (1)")
        async with adb.transaction() as tx:  # (a chain open on the loop's session)
            await tx.execute("INSERT INTO t(v) VALUES (2)")
        lease = await engine.lease_async(5)
        try:
            await lease.begin_snapshot()
            assert [tuple(r) for r in await lease.query("SELECT count(*) FROM t", (), None)] == [
                (2,)
            ]
            await lease.commit()
        finally:
            lease.end()
        await insert_in_transaction(adb, 3)
        assert await values(adb) == [1, 2, 3]
    finally:
        await adb.close()


async def test_a_lost_session_at_begin_is_reopened_and_a_dead_seed_skipped(
    fake: FakeDriver,
) -> None:
    fake.down.add("n1:9001")  # (the first seed: the loop's sessions open on another)
    adb = await open_adb(fake, readers=1)
    try:
        fake.fail("lost", "BEGIN IMMEDIATE")  # (nothing of it ran: the BEGIN is sent again)
        await insert_in_transaction(adb, "after a reopen")
        values_read = await asyncio.gather(*(adb.query_value("SELECT ?", (i,)) for i in range(8)))
        assert values_read == list(range(8))  # (one reader on the loop: they waited in turn)
        assert await values(adb) == ["after a reopen"]
    finally:
        await adb.close()


async def test_ending_a_transaction_from_another_thread_rolls_it_back(fake: FakeDriver) -> None:
    """``end()`` from a thread (an aiosqlite-style ``close()`` elsewhere, a ``__del__``) is
    handed to the loop: the transaction rolls back and the turn passes on."""
    engine = await asyncio.to_thread(
        ClusterEngine,
        make_options(URL, {"readers": 1}),
        sessions=fake.open_session,
        async_sessions=fake.open_async_session,
    )
    adb = litegate.AsyncDatabase(engine)
    try:
        await adb.execute("CREATE TABLE t(v)")
        lease = await engine.lease_async(5)
        await lease.begin()
        await lease.execute("INSERT INTO t VALUES ('ended elsewhere')", (), None)
        await asyncio.to_thread(lease.end)
        await asyncio.wait_for(insert_in_transaction(adb, "next"), 10)
        assert await values(adb) == ["next"]
    finally:
        await adb.close()


async def test_tasks_waiting_for_a_turn_when_the_database_closes_are_told(
    fake: FakeDriver,
) -> None:
    adb = await open_adb(fake)
    db = adb.as_sync()
    release, th = await asyncio.to_thread(hold_lane, db)
    waiting = asyncio.create_task(insert_in_transaction(adb, "never"))
    await asyncio.sleep(0.05)  # (its loop asked for the lane, queued behind the thread's)
    closing = asyncio.create_task(asyncio.to_thread(db.close, 0.5))
    await asyncio.sleep(0.1)
    release.set()
    await asyncio.wait_for(closing, 10)
    with pytest.raises(litegate.Error):
        await asyncio.wait_for(waiting, 10)
    await asyncio.to_thread(th.join, 10)


async def test_a_transaction_holding_the_turn_too_long_is_reported(
    fake: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    adb = await open_adb(fake, hold_warn=0.1)
    try:
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO t(v) VALUES ('slow')")
            await asyncio.sleep(0.3)
        assert (await adb.stats()).long_holds >= 1
        assert "has held the write lane" in caplog.text
        async with adb.transaction() as tx:  # (a quick one is not)
            await tx.execute("INSERT INTO t(v) VALUES ('quick')")
        assert (await adb.stats()).long_holds == 1
    finally:
        await adb.close()


async def test_a_failing_function_leaves_its_transaction_usable_and_a_lost_one_refuses_more(
    fake: FakeDriver,
) -> None:
    adb = await open_adb(fake)
    try:

        def fails(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t(v) VALUES ('before the error')")
            raise KeyError("the function's own")

        async with adb.transaction() as tx:
            with pytest.raises(KeyError):
                await tx.run(fails)
            await tx.execute("INSERT INTO t(v) VALUES ('after it')")  # (still open: usable)
        assert await values(adb) == ["after it", "before the error"]
        fake.fail("lost", "'lost'")
        with pytest.raises(litegate.RolledBack):
            async with adb.transaction() as tx:
                with pytest.raises(litegate.RolledBack):
                    await tx.execute("INSERT INTO t(v) VALUES ('lost')")
                await tx.execute("INSERT INTO t(v) VALUES ('refused')")  # (RolledBack again)
        assert await values(adb) == ["after it", "before the error"]
    finally:
        await adb.close()
