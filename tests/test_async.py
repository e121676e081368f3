"""The asyncio facade: API, no loop blocking, cancellation, timeouts, sharing one engine."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import litegate
from helpers import lane_held_async, write_elsewhere

SLOW_SELECT = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "SELECT count(*) FROM (SELECT x FROM c LIMIT 6000000)"
)
SLOW_INSERT = (  # into the regressions' table t; runs for seconds unless interrupted
    "INSERT INTO t SELECT i FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
    "SELECT i+1 FROM c WHERE i < 30000000) SELECT i FROM c) WHERE i = -1"
)
SCHEMA = """
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, qty INT DEFAULT 0);
CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0));
"""


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


async def open_db(path: str, readers: Any, **kw: Any) -> litegate.AsyncDatabase:
    adb = await litegate.connect_async(path, readers=readers, **kw)
    await adb.executescript(SCHEMA)
    return adb


async def test_async_api(db_path: str, readers: Any) -> None:
    async with litegate.connect_async(db_path, readers=readers) as adb:
        await adb.executescript(SCHEMA)
        res = await adb.execute("INSERT INTO items(name, qty) VALUES (?, ?)", ("a", 1))
        assert (res.rowcount, res.lastrowid) == (1, 1)
        await adb.executemany("INSERT INTO items(name, qty) VALUES (?, ?)", [("b", 2), ("c", 3)])
        assert [r["name"] for r in await adb.query("SELECT name FROM items ORDER BY id")] == [
            "a",
            "b",
            "c",
        ]
        assert (await adb.query_one("SELECT qty FROM items WHERE name='b'"))["qty"] == 2
        assert await adb.query_one("SELECT 1 WHERE 0") is None
        assert await adb.query_value("SELECT sum(qty) FROM items") == 6
        assert [
            r[0] async for r in adb.iterate("SELECT qty FROM items ORDER BY qty", arraysize=2)
        ] == [1, 2, 3]
        assert (
            await adb.run_write(
                lambda c, n: c.execute("DELETE FROM items WHERE name=?", (n,)).rowcount, "c"
            )
            == 1
        )
        assert (
            await adb.run_read(lambda c: c.execute("SELECT count(*) FROM items").fetchone()[0]) == 2
        )
        with pytest.raises(sqlite3.IntegrityError):
            await adb.execute("INSERT INTO items(name) VALUES ('a')")
        with pytest.raises(sqlite3.OperationalError):
            await adb.query("SELECT * FROM nowhere")
        assert await adb.migrate(["CREATE TABLE m(x)"]) == 1
        stats = await adb.stats()
        assert stats.jobs_ok >= 4 and stats.reads >= 5
    assert adb.closed
    with pytest.raises(litegate.Closed):
        await adb.query("SELECT 1")
    with pytest.raises(litegate.Closed):
        await adb.execute("SELECT 1")


async def test_async_transactions_and_savepoints(db_path: str, readers: Any) -> None:
    adb = await open_db(db_path, readers)
    try:
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO items(name) VALUES ('outer')")
            async with tx.savepoint():
                await tx.execute("INSERT INTO items(name) VALUES ('kept')")
            with pytest.raises(sqlite3.IntegrityError):
                async with tx.savepoint():
                    await tx.execute("INSERT INTO items(name) VALUES ('x')")
                    await tx.execute("INSERT INTO items(name) VALUES ('x')")
            assert await tx.query_value("SELECT count(*) FROM items") == 2
            assert [r[0] async for r in tx.iterate("SELECT name FROM items ORDER BY id")] == [
                "outer",
                "kept",
            ]
        assert tx.committed
        with pytest.raises(RuntimeError):
            async with adb.transaction() as tx2:
                await tx2.execute("INSERT INTO items(name) VALUES ('gone')")
                raise RuntimeError
        assert not tx2.committed
        assert [r[0] for r in await adb.query("SELECT name FROM items ORDER BY id")] == [
            "outer",
            "kept",
        ]
        async with adb.snapshot() as snap:
            assert await snap.query_value("SELECT count(*) FROM items") == 2
    finally:
        await adb.close()


@pytest.mark.parametrize("what", ["read", "write", "connect-close"])
async def test_event_loop_keeps_ticking_during_a_long_statement(
    db_path: str, readers: Any, what: str
) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    t0 = time.monotonic()
    adb = await open_db(db_path, readers)
    try:
        # (~0.8 s each here: long enough that a held loop would miss dozens of ticks, and
        # every held tick over 25 ms fails the test anyway -- tests/loop_lag.py)
        if what == "read":
            assert await adb.query_value(SLOW_SELECT.replace("6000000", "2000000")) == 2000000
        elif what == "write":
            await adb.execute(
                "INSERT INTO items(name) SELECT 'z' || x FROM (WITH RECURSIVE c(x) AS "
                "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c LIMIT 500000)"
            )
        else:
            # built off the loop: the test must not hold its own loop for tens of ms
            rows = await asyncio.to_thread(lambda: [(f"n{i}",) for i in range(100000)])
            await adb.executemany("INSERT INTO items(name) VALUES (?)", rows)
    finally:
        await adb.close()
    elapsed = time.monotonic() - t0
    stop.set()
    await t
    if what != "connect-close":
        assert elapsed >= 0.25, (
            f"the statement should run >= 0.25 s to prove anything ({elapsed:.2f}s)"
        )
    # a blocked loop would tick about once; a free one ~elapsed/0.01 times
    assert ticks >= max(5, elapsed / 0.01 * 0.3), (ticks, elapsed)


async def test_inline_reads_move_to_a_thread_when_over_budget(db_path: str) -> None:
    adb = await open_db(db_path, 2)
    try:
        await adb.query_value("SELECT 1")  # the first read opens a reader (in a thread)
        threads = adb._engine._reader_threads()  # type: ignore[attr-defined]
        before = threads.submitted
        for _ in range(50):
            assert await adb.query_value("SELECT 1") == 1
        assert threads.submitted == before  # point reads ran inline on the loop
        n = await adb.query_value(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT count(*) FROM (SELECT x FROM c LIMIT 2000000)"
        )
        assert n == 2000000
        assert threads.submitted == before + 1  # the long one was moved to a thread
    finally:
        await adb.close()


async def test_running_read_is_interrupted_by_cancellation(db_path: str) -> None:
    adb = await open_db(db_path, 1)
    try:
        slow = asyncio.create_task(adb.query_value(SLOW_SELECT))
        await until(lambda: _in_use(adb))
        t0 = time.monotonic()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # the only reader is free at once: the next read does not wait for the slow one
        assert await adb.query_value("SELECT 42", timeout=2) == 42
        assert time.monotonic() - t0 < 2
        await until(lambda: _idle(adb))
    finally:
        await adb.close()


async def _in_use(adb: litegate.AsyncDatabase) -> bool:
    return (await adb.stats()).pool_in_use == 1


async def _idle(adb: litegate.AsyncDatabase) -> bool:
    return (await adb.stats()).pool_in_use == 0


async def test_cancelled_queued_write_never_runs(db_path: str, readers: Any) -> None:
    adb = await open_db(db_path, readers)
    db = adb.as_sync()
    try:
        async with lane_held_async(db):
            task = asyncio.create_task(adb.execute("INSERT INTO items(name) VALUES ('never')"))
            await until(lambda: _queued(adb, 1))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await adb.execute("INSERT INTO items(name) VALUES ('after')")
        assert [r[0] for r in await adb.query("SELECT name FROM items")] == ["after"]
    finally:
        await adb.close()


async def _queued(adb: litegate.AsyncDatabase, n: int) -> bool:
    return (await adb.stats()).queue_depth == n


async def test_cancelled_transaction_rolls_back_and_frees_the_lane(
    db_path: str, readers: Any
) -> None:
    adb = await open_db(db_path, readers)
    try:
        inside = asyncio.Event()

        async def stuck() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO items(name) VALUES ('trace')")
                inside.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(stuck())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with adb.transaction(timeout=1) as tx:
            assert await tx.query_value("SELECT count(*) FROM items") == 0
        assert await adb.query_value("SELECT count(*) FROM items") == 0
    finally:
        await adb.close()


async def test_async_timeouts(db_path: str) -> None:
    adb = await open_db(db_path, 1)
    db = adb.as_sync()
    try:
        async with lane_held_async(db):
            with pytest.raises(litegate.WriteTimeout, match="did not get the write lane"):
                await adb.execute("INSERT INTO items(name) VALUES ('late')", timeout=0.1)
            with pytest.raises(litegate.WriteTimeout):
                async with adb.transaction(timeout=0.1):
                    pass  # pragma: no cover
        it = db.iterate("SELECT 1 UNION ALL SELECT 2")
        await asyncio.to_thread(next, it)  # the only reader is held (taken off the loop)
        with pytest.raises(litegate.PoolTimeout):
            await adb.query("SELECT 1", timeout=0.1)
        await asyncio.to_thread(it.close)
        assert await adb.query_value("SELECT count(*) FROM items") == 0
    finally:
        await adb.close()


@pytest.mark.parametrize("what", ["write", "transaction"])
async def test_a_wait_for_room_in_a_full_queue_counts_against_the_same_timeout(
    db_path: str, what: str
) -> None:
    """Regression: a write or transaction that first waited for room in a full queue then
    waited for the lane its whole ``timeout`` again (up to twice it in all). The queued writes
    time out at 0.3 s, so this one queues then, and the lane stays held: it must fail at its
    0.6 s, not at 0.3 + 0.6 s."""
    adb = await open_db(db_path, 1, queue_size=2)
    db = adb.as_sync()
    try:
        async with lane_held_async(db):
            fill = [  # (threads' writes: withdrawn from the queue when they time out)
                asyncio.ensure_future(
                    asyncio.to_thread(
                        db.execute, "INSERT INTO items(name) VALUES (?)", (n,), timeout=0.3
                    )
                )
                for n in ("a", "b")
            ]
            deadline = time.monotonic() + 10
            while (await adb.stats()).queue_depth < 2:
                assert time.monotonic() < deadline, "the two writes never queued"
                await asyncio.sleep(0.002)

            async def late() -> None:
                if what == "write":
                    await adb.execute("INSERT INTO items(name) VALUES ('late')", timeout=0.6)
                else:
                    async with adb.transaction(timeout=0.6):
                        pass  # pragma: no cover

            t0 = time.monotonic()
            waiting = asyncio.ensure_future(late())
            for f in fill:  # (room at ~0.3 s: the late one queues then)
                with pytest.raises(litegate.WriteTimeout):
                    await f
            assert not waiting.done()
            with pytest.raises(litegate.WriteTimeout):
                await asyncio.wait_for(waiting, 5)
            waited = time.monotonic() - t0
            assert 0.6 - 0.002 <= waited < 0.85, waited
        assert await adb.query_value("SELECT count(*) FROM items") == 0
    finally:
        await adb.close()


async def test_a_cancelled_queued_write_or_transaction_frees_its_place_at_once(
    db_path: str,
) -> None:
    """Regression: an async write or transaction cancelled while queued stayed in the queue
    (the writer skips it, but only once the lane moves): a queue full of cancelled ones
    refused new writes ("queue stayed full") for as long as the lane was held."""
    adb = await open_db(db_path, 1, queue_size=2)
    db = adb.as_sync()
    try:
        async with lane_held_async(db):

            async def tx() -> None:
                async with adb.transaction():
                    pass  # pragma: no cover

            queued = [
                asyncio.ensure_future(adb.execute("INSERT INTO items(name) VALUES ('x')")),
                asyncio.ensure_future(tx()),
            ]
            deadline = time.monotonic() + 10
            while (await adb.stats()).queue_depth < 2:
                assert time.monotonic() < deadline, "the two never queued"
                await asyncio.sleep(0.002)
            for q in queued:
                q.cancel()
            outcomes = await asyncio.gather(*queued, return_exceptions=True)
            assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
            assert (await adb.stats()).queue_depth == 0
            with pytest.raises(litegate.WriteTimeout, match="did not get the write lane"):
                await adb.execute("INSERT INTO items(name) VALUES ('late')", timeout=0.2)
        assert await adb.query_value("SELECT count(*) FROM items") == 0
    finally:
        await adb.close()


async def test_waits_with_different_timeouts_each_expire_at_their_own(db_path: str) -> None:
    """The queued waits of a loop share one timer: one with a short timeout, queued after
    waits with long ones, still fails at its own deadline (the timer moves earlier), and
    the long ones fail at theirs afterwards (it moves on); none early."""
    adb = await open_db(db_path, 1)
    db = adb.as_sync()
    try:
        async with lane_held_async(db):

            async def wait(timeout: float) -> float:
                t0 = time.monotonic()
                with pytest.raises(litegate.WriteTimeout):
                    async with adb.transaction(timeout=timeout):
                        pass  # pragma: no cover
                return time.monotonic() - t0

            long = asyncio.ensure_future(wait(0.6))
            longer = asyncio.ensure_future(wait(30.0))
            await asyncio.sleep(0.01)
            short = await wait(0.1)
            assert 0.1 - 0.002 <= short < 0.5, short  # (not at the long ones' deadlines)
            waited = await asyncio.wait_for(long, 5)
            assert 0.6 - 0.002 <= waited < 2.0, waited
            assert not longer.done()
            longer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await longer
        assert await adb.query_value("SELECT count(*) FROM items") == 0
    finally:
        await adb.close()


async def test_finished_waits_leave_nothing_behind(db_path: str) -> None:
    """A wait's timeout entry goes when the wait ends: 16 tasks x 40 transactions that queue
    for the lane (each with a 30 s timeout) keep none of their finished lane holds."""
    from litegate._engine._jobs import AsyncLaneHold

    adb = await open_db(db_path, 1)
    try:

        async def worker(w: int) -> None:
            for i in range(40):
                async with adb.transaction(timeout=30) as tx:
                    await tx.execute("INSERT INTO items(name) VALUES (?)", (f"{w}-{i}",))
                    await asyncio.sleep(0)  # (holding the lane: the others queue)

        await asyncio.gather(*(worker(w) for w in range(16)))
        assert await adb.query_value("SELECT count(*) FROM items") == 640
        assert (await adb.stats()).lane_wait_p99_ms > 0  # (they did queue)
        gc.collect()
        alive = sum(1 for o in gc.get_objects() if type(o) is AsyncLaneHold)
        assert alive <= 17, alive  # (each task's last, in its context)
    finally:
        await adb.close()


@pytest.mark.parametrize("order", ["cancel, answer", "answer, cancel", "answered, cancel"])
async def test_a_cancelled_wait_for_the_commit_still_gets_its_answer(order: str) -> None:
    """An async transaction waits for its group's COMMIT on the ticket's own future (no
    ``asyncio.shield``: a loop iteration less), so a cancellation cancels that future. The
    answer is still the waiter's, whichever runs first: the waiter seeing the cancellation,
    the answer's delivery, or (answered already) the cancellation after it; the waiter returns
    the answer and says it was cancelled, and an error answer is raised, not lost."""
    from collections import deque

    from litegate._engine._bridge import await_answer
    from litegate._engine._jobs import AsyncTicket, Outbox, flush

    loop = asyncio.get_running_loop()
    for error in (None, litegate.RolledBack("the group's COMMIT failed")):
        outbox: Outbox = deque()
        ticket = AsyncTicket(loop, outbox)
        waiter = asyncio.ensure_future(await_answer(ticket))
        await asyncio.sleep(0)  # it awaits the ticket's future
        if order == "cancel, answer":  # its wake-up is queued before the delivery
            waiter.cancel()
        ticket.finish("done" if error is None else None, error)
        flush(outbox)  # (the delivery is queued: on this loop, call_soon)
        if order == "answered, cancel":
            await asyncio.sleep(0)  # the delivery ran: the future has the answer
            assert not waiter.done()
        if order != "cancel, answer":
            waiter.cancel()
        done, _ = await asyncio.wait({waiter}, timeout=2)
        if not done:  # lost: end the wait (it outlives cancellation) before failing
            ticket.future.set_result("lost")
            await waiter
            pytest.fail(f"{order}: the answer was lost")
        if error is None:
            assert waiter.result() == ("done", True)
        else:
            with pytest.raises(litegate.RolledBack, match="COMMIT failed"):
                waiter.result()


async def test_an_answer_left_unawaited_after_a_cancellation_is_not_logged() -> None:
    """A cancelled wait whose waiter is gone (interrupted before it made the fresh future):
    the failed answer _deliver puts in the fresh future is marked retrieved, so asyncio does
    not log "Future exception was never retrieved" when it is collected."""
    from collections import deque

    from litegate._engine._jobs import AsyncTicket, Outbox, flush

    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        outbox: Outbox = deque()
        ticket = AsyncTicket(loop, outbox)
        ticket.future.cancel()  # (its waiter's task was cancelled, and it never looked again)
        ticket.finish(None, litegate.RolledBack("the group's COMMIT failed"))
        flush(outbox)
        await asyncio.sleep(0)  # the delivery ran
        assert ticket.future.done() and not ticket.future.cancelled()
        del ticket
        gc.collect()
        await asyncio.sleep(0)
        assert seen == []
    finally:
        loop.set_exception_handler(previous)


async def test_a_savepoint_rollback_left_unawaited_by_a_cancellation_is_not_logged(
    db_path: str,
) -> None:
    """A cancelled savepoint block posts its ROLLBACK TO without awaiting it (it runs on the
    loop, at once). When that fails -- here the block's SQL released the savepoint itself --
    the failure is marked retrieved: asyncio does not log "Future exception was never
    retrieved" when it is collected; the transaction goes on."""
    adb = await open_db(db_path, 1)
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        async with adb.transaction() as tx:
            await tx.execute("CREATE TABLE IF NOT EXISTS sp(v)")
            with pytest.raises(asyncio.CancelledError):
                async with tx.savepoint() as sp:
                    await tx.execute(f"RELEASE {sp._name}")  # (its ROLLBACK TO will fail)
                    raise asyncio.CancelledError
            await tx.execute("INSERT INTO sp VALUES (1)")
        gc.collect()
        await asyncio.sleep(0)
        assert seen == []
        assert await adb.query_value("SELECT count(*) FROM sp") == 1
    finally:
        loop.set_exception_handler(previous)
        await adb.close()


async def test_close_fails_waiting_tasks_with_closed(db_path: str) -> None:
    adb = await open_db(db_path, 1)
    db = adb.as_sync()
    it = db.iterate("SELECT 1 UNION ALL SELECT 2")
    await asyncio.to_thread(next, it)  # hold the only reader so async reads queue up
    waiting = [asyncio.create_task(adb.run_read(lambda c: 1, timeout=None)) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in waiting)
    await asyncio.to_thread(it.close)
    closer = asyncio.create_task(adb.close())
    results = await asyncio.gather(*waiting, return_exceptions=True)
    await closer
    assert all(r == 1 or isinstance(r, litegate.Closed) for r in results), results


@pytest.mark.blocks_loop(
    "1000 tasks ready at once: one loop iteration runs hundreds of task steps back to back "
    "(20-60 ms in all); the longest single step measured 7.7 ms"
)
@pytest.mark.no_debug_loop(
    "11-16 s there under coverage, and transactions queued behind ~500 jobs time out"
)
async def test_thousand_tasks_keep_every_invariant(db_path: str, readers: Any) -> None:
    accounts, start_balance = 20, 500
    adb = await open_db(db_path, readers)
    try:
        await adb.executemany(
            "INSERT INTO accounts VALUES (?, ?)", [(i, start_balance) for i in range(accounts)]
        )
        acked: list[str] = []

        async def task(k: int) -> None:
            rng = random.Random(k)
            for i in range(6):
                r = rng.random()
                if r < 0.4:
                    assert (
                        await adb.query_value(
                            "SELECT balance FROM accounts WHERE id=?",
                            (rng.randrange(accounts),),
                        )
                        >= 0
                    )
                elif r < 0.7:
                    await adb.execute("INSERT INTO items(name) VALUES (?)", (f"{k}-{i}",))
                    acked.append(f"{k}-{i}")
                elif r < 0.9:
                    a, b = rng.sample(range(accounts), 2)
                    async with adb.transaction() as tx:
                        if (
                            await tx.query_value("SELECT balance FROM accounts WHERE id=?", (a,))
                            >= 5
                        ):
                            await tx.execute(
                                "UPDATE accounts SET balance = balance - 5 WHERE id=?", (a,)
                            )
                            await tx.execute(
                                "UPDATE accounts SET balance = balance + 5 WHERE id=?", (b,)
                            )
                else:
                    async with adb.snapshot() as snap:
                        assert (
                            await snap.query_value("SELECT sum(balance) FROM accounts")
                            == accounts * start_balance
                        )

        await asyncio.gather(*(task(k) for k in range(1000)))
        assert (
            await adb.query_value("SELECT sum(balance) FROM accounts") == accounts * start_balance
        )
        assert sorted(r[0] for r in await adb.query("SELECT name FROM items")) == sorted(acked)
        assert (await adb.stats()).jobs_failed == 0
    finally:
        await adb.close()


async def test_sync_and_async_share_one_engine(db_path: str, readers: Any) -> None:
    # the sync calls of this test run in threads: only litegate's async calls use the loop
    db = await asyncio.to_thread(litegate.connect, db_path, readers=readers)
    await asyncio.to_thread(db.executescript, SCHEMA)
    adb = db.as_async()
    errors: list[BaseException] = []

    def thread_worker(k: int) -> None:
        try:
            for i in range(100):
                db.execute("INSERT INTO items(name) VALUES (?)", (f"t{k}-{i}",))
                db.query("SELECT count(*) FROM items")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    async def one(k: int) -> None:
        for i in range(50):
            await adb.execute("INSERT INTO items(name) VALUES (?)", (f"a{k}-{i}",))
            await adb.query("SELECT count(*) FROM items")

    try:
        threads = [threading.Thread(target=thread_worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        await asyncio.gather(*(one(k) for k in range(8)))
        for t in threads:
            await asyncio.to_thread(t.join)
        assert errors == []
        assert await adb.query_value("SELECT count(*) FROM items") == 4 * 100 + 8 * 50
        assert (await adb.stats()).max_batch_size > 1
    finally:
        await asyncio.to_thread(db.close)


def test_several_event_loops_at_once(db_path: str) -> None:
    # stays sync: it runs four event loops, one per thread (asyncio.run in each)
    db = litegate.connect(db_path)
    db.executescript(SCHEMA)
    adb = db.as_async()
    errors: list[BaseException] = []

    def loop_thread(k: int) -> None:
        async def main() -> None:
            for i in range(100):
                await adb.execute("INSERT INTO items(name) VALUES (?)", (f"l{k}-{i}",))
                assert (
                    await adb.query_value("SELECT count(*) FROM items WHERE name=?", (f"l{k}-{i}",))
                    == 1
                )

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    try:
        threads = [threading.Thread(target=loop_thread, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert db.query_value("SELECT count(*) FROM items") == 400
    finally:
        db.close()


async def test_unclosed_async_database_warns(db_path: str) -> None:
    adb = await litegate.connect_async(db_path)
    engine = adb._engine
    with pytest.warns(ResourceWarning, match="never closed"):
        del adb
        gc.collect()
    await asyncio.to_thread(engine.close, timeout=5)


# ---- regressions found by review, each named after the failure it pins ----------------
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


@pytest.mark.parametrize("leave", ["break", "aclosing", "cancel", "snapshot-break", "tx-break"])
async def test_leaving_async_iterate_early_logs_no_error(
    db_path: str, readers: Any, leave: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: leaving ``async for row in adb.iterate(...)`` early (break, aclosing,
    cancellation) logged ``Misuse('the snapshot is not active ...')`` at ERROR every time: the
    inner iterator's cleanup ran after its snapshot had ended. Its cursor, left open on the
    reader given back, also kept its snapshot: the next read there saw stale data."""
    caplog.set_level(logging.ERROR)
    async with litegate.connect_async(db_path, readers=readers, busy_timeout=1.0) as adb:
        await adb.execute("CREATE TABLE t(x)")
        await adb.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
        seen: list[int] = []
        reached = asyncio.Event()

        async def consume() -> None:
            async for row in adb.iterate("SELECT x FROM t ORDER BY x", arraysize=16):
                seen.append(row[0])
                if len(seen) == 5:
                    if leave == "cancel":
                        reached.set()
                        await asyncio.sleep(30)
                    break

        if leave == "aclosing":
            async with contextlib.aclosing(adb.iterate("SELECT x FROM t ORDER BY x")) as rows:
                async for row in rows:
                    seen.append(row[0])
                    if len(seen) == 5:
                        break
        elif leave == "cancel":
            task = asyncio.create_task(consume())
            await reached.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif leave in ("snapshot-break", "tx-break"):
            block = adb.snapshot() if leave == "snapshot-break" else adb.transaction()
            async with block as snap:
                async for row in snap.iterate("SELECT x FROM t ORDER BY x", arraysize=16):
                    seen.append(row[0])
                    if len(seen) == 5:
                        break
        else:
            await consume()
        del consume
        for _ in range(5):  # let the generators' finalizer tasks run, then collect them
            await asyncio.sleep(0.01)
            gc.collect()
        assert seen == [0, 1, 2, 3, 4]
        # the reader (or the lane) came back: the next iteration and a write are served
        assert [r[0] async for r in adb.iterate("SELECT x FROM t WHERE x < 3 ORDER BY x")] == [
            0,
            1,
            2,
        ]
        await asyncio.to_thread(write_elsewhere, db_path)  # (its fsync off the loop)
        await adb.execute("INSERT INTO t VALUES (1000)")  # no snapshot pinned on the writer
        assert await adb.query_value("SELECT count(*) FROM t") == 1002  # nor on a reader
        assert (await adb.stats()).pool_in_use == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
