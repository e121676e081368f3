"""Group commit of interactive transactions: transactions that queue for the write lane share
one SQLite transaction and one COMMIT, each inside its own savepoint (``_engine/_group.py``).

Each test checks contents (which rows are there, sums), never timings; the group is made by
holding the lane while the transactions queue, so that they are handed the lane one after the
other with the shared transaction open.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import litegate
from helpers import Outcome, interrupt_at, wait_for, writer_autocheckpoint
from litegate._engine import (
    _async_lease,
    _bridge,
    _connection,
    _group,
    _lane_loop,
    _lane_turns,
    _lease,
)

SCHEMA = """
CREATE TABLE items(name TEXT PRIMARY KEY);
CREATE TABLE parent(id INTEGER PRIMARY KEY);
CREATE TABLE child(pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0));
"""
ACCOUNTS = 8
START = 100
GROUPED = {"group_wait": 30.0}  # (a loaded machine never ends a group early by its age)


def _open(db_path: str, **opts: Any) -> litegate.Database:
    db = litegate.connect(db_path, **{**GROUPED, **opts})
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, START) for i in range(ACCOUNTS)])
    return db


def _names(db: litegate.Database) -> set[str]:
    return {r[0] for r in db.query("SELECT name FROM items")}


@contextmanager
def _leader(db: litegate.Database, name: str = "leader") -> Iterator[Outcome]:
    """A transaction that inserts ``name`` and holds the lane until the block ends: what
    queues meanwhile joins its group."""
    inside, leave = threading.Event(), threading.Event()

    def body() -> None:
        with db.transaction() as tx:
            tx.execute("INSERT INTO items VALUES (?)", (name,))
            inside.set()
            leave.wait(20)

    out = Outcome(body)
    assert inside.wait(10)
    try:
        yield out
    finally:
        leave.set()
        out.join()


def _insert_tx(db: litegate.Database, name: str, fail: bool = False) -> Callable[[], None]:
    def run() -> None:
        with db.transaction() as tx:
            tx.execute("INSERT INTO items VALUES (?)", (name,))
            tx.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 0")
            tx.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
            if fail:
                raise KeyError(name)

    return run


def test_queued_transactions_share_one_commit(db_path: str) -> None:
    with _open(db_path) as db:
        before = db.stats()
        with _leader(db) as leader:
            outs = [Outcome(_insert_tx(db, f"t{i}")) for i in range(6)]
            wait_for(lambda: db.stats().queue_depth == 6, what="6 queued transactions")
        assert leader.error is None and all(o.join().error is None for o in outs)
        assert _names(db) == {"leader", *(f"t{i}" for i in range(6))}
        stats = db.stats()
        assert stats.batches - before.batches == 1  # one COMMIT for all seven
        assert stats.max_batch_size == 7
        assert stats.transactions - before.transactions == 7
        assert db.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START


def test_a_transaction_that_raises_is_undone_alone(db_path: str) -> None:
    with _open(db_path) as db:
        with _leader(db):
            outs = {
                name: Outcome(_insert_tx(db, name, fail=name == "bad"))
                for name in ("a", "b", "bad", "c")
            }
            wait_for(lambda: db.stats().queue_depth == 4, what="4 queued transactions")
        errors = {name: o.join().error for name, o in outs.items()}
        assert isinstance(errors.pop("bad"), KeyError)
        assert all(e is None for e in errors.values()), errors
        assert _names(db) == {"leader", "a", "b", "c"}  # the undone one's writes only are gone
        assert db.query_value("SELECT balance FROM accounts WHERE id = 0") == START - 3
        assert db.stats().max_batch_size == 4  # (the leader and three)


def test_a_failed_shared_commit_fails_every_member(db_path: str) -> None:
    """A deferred constraint fails at COMMIT: every transaction of the group fails (the others
    with RolledBack saying so), and none of them is in the file."""
    with _open(db_path) as db:

        def orphan() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO child VALUES (42)")  # no parent 42: fails at COMMIT

        with _leader(db) as leader:
            outs = [Outcome(_insert_tx(db, f"t{i}")) for i in range(3)]
            outs.append(Outcome(orphan))
            wait_for(lambda: db.stats().queue_depth == 4, what="4 queued transactions")
        errors = [leader.error, *(o.join().error for o in outs)]
        assert all(e is not None for e in errors), errors  # nobody acknowledged
        rolled = [e for e in errors if isinstance(e, litegate.RolledBack)]
        assert len(rolled) == 4 and all("shared its COMMIT" in str(e) for e in rolled)
        assert [type(e) for e in errors if not isinstance(e, litegate.RolledBack)] == [
            sqlite3.IntegrityError  # the last one's own COMMIT
        ]
        assert _names(db) == set()
        assert db.query_value("SELECT count(*) FROM child") == 0
        db.execute("INSERT INTO items VALUES ('after')")  # the lane goes on
        assert _names(db) == {"after"}


def test_a_lost_shared_transaction_fails_every_member(db_path: str) -> None:
    """SQLite rolls the shared transaction back (here: a conflict with ON CONFLICT ROLLBACK in
    the last member): the members before it fail with RolledBack, nothing commits."""
    with _open(db_path) as db:
        db.execute("INSERT INTO items VALUES ('dup')")

        def conflict() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT OR ROLLBACK INTO items VALUES ('dup')")

        with _leader(db) as leader:
            first = Outcome(_insert_tx(db, "a"))
            wait_for(lambda: db.stats().queue_depth == 1)
            last = Outcome(conflict)
            wait_for(lambda: db.stats().queue_depth == 2)
        assert isinstance(leader.error, litegate.RolledBack)
        assert isinstance(first.join().error, litegate.RolledBack)
        assert isinstance(last.join().error, sqlite3.IntegrityError)
        assert _names(db) == {"dup"}
        assert db.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START


@pytest.mark.parametrize("opts", [{"group_wait": 0.0}, {"max_batch": 2}])
def test_group_bounds(db_path: str, opts: dict[str, Any]) -> None:
    """group_wait=0: every transaction commits alone; max_batch bounds a group's size."""
    with _open(db_path, **opts) as db:
        before = db.stats().batches
        with _leader(db):
            outs = [Outcome(_insert_tx(db, f"t{i}")) for i in range(5)]
            wait_for(lambda: db.stats().queue_depth == 5, what="5 queued transactions")
        assert all(o.join().error is None for o in outs)
        assert len(_names(db)) == 6
        stats = db.stats()
        limit = 1 if opts.get("group_wait") == 0.0 else 2
        assert stats.max_batch_size <= limit
        assert stats.batches - before >= 6 // limit


def test_a_snapshot_and_a_plain_write_after_a_group(db_path: str) -> None:
    """With readers=0 a snapshot is a lane lease: handed a group left open, it commits it
    first (and sees it); a plain write queued behind it commits after."""
    with _open(db_path, readers=0) as db:

        def snap() -> set[str]:
            with db.snapshot() as s:
                return {r[0] for r in s.query("SELECT name FROM items")}

        with _leader(db):
            tx = Outcome(_insert_tx(db, "t"))
            wait_for(lambda: db.stats().queue_depth == 1)
            seen = Outcome(snap)
            wait_for(lambda: db.stats().queue_depth == 2)
            write = Outcome(lambda: db.execute("INSERT INTO items VALUES ('w')"))
            wait_for(lambda: db.stats().queue_depth == 3)
        assert tx.join().error is None and write.join().error is None
        assert seen.join().result == {"leader", "t"}
        assert _names(db) == {"leader", "t", "w"}


# ---- slices (a COMMIT without fsync: synchronous NORMAL) -------------------------------------
def _sync_transfer(db: litegate.Database, seed: int) -> None:
    a, b = seed % ACCOUNTS, (seed * 7 + 1) % ACCOUNTS
    if a == b:
        b = (b + 1) % ACCOUNTS
    with db.transaction() as tx:
        balance = tx.query_value("SELECT balance FROM accounts WHERE id = ?", (a,))
        amount = min(balance, 3)
        tx.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
        tx.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_threads_of_transfers_keep_the_sum(db_path: str, synchronous: str) -> None:
    """8 threads of transfers (mixed with plain writes): at NORMAL a thread retakes the lane
    within its slice, at FULL the lane is handed on with the group open; either way every
    transaction is applied once and whole."""
    threads, each = 8, 150
    with _open(db_path, synchronous=synchronous, group_wait=0.005) as db:
        before = db.stats().transactions

        def worker(k: int) -> Callable[[], None]:
            def run() -> None:
                for i in range(each):
                    _sync_transfer(db, k * 1000 + i)
                    if i % 10 == 0:
                        db.execute("INSERT INTO items VALUES (?)", (f"{k}-{i}",))

            return run

        outs = [Outcome(worker(k)) for k in range(threads)]
        assert all(o.join().error is None for o in outs)
        assert db.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START
        assert db.query_value("SELECT min(balance) FROM accounts") >= 0
        assert db.stats().transactions - before == threads * each
        assert len(_names(db)) == threads * (each // 10)


def test_a_thread_in_its_slice_never_starves_a_waiter(db_path: str) -> None:
    """At NORMAL a thread may take the lane again ahead of the queue, but only within its
    slice: a transaction queued behind a thread that runs transactions back to back gets the
    lane while that thread still runs (unbounded, it would wait until the thread stops)."""
    with _open(db_path, synchronous="NORMAL") as db:
        waiter_done = threading.Event()
        hog_started = threading.Event()
        rounds = 0

        def hog() -> None:
            nonlocal rounds
            deadline = time.monotonic() + 60
            while not waiter_done.is_set() and time.monotonic() < deadline:
                _sync_transfer(db, rounds)
                rounds += 1
                hog_started.set()

        running = Outcome(hog)
        try:
            assert hog_started.wait(10)
            waiter = Outcome(_insert_tx(db, "waiter"))
            waiter.thread.join(20)
            served = not waiter.thread.is_alive()  # while the hog still ran
        finally:
            waiter_done.set()
        assert running.join().error is None
        assert served, "the queued transaction waited until the thread ahead of it stopped"
        assert waiter.join().error is None
        assert _names(db) == {"waiter"}
        assert db.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_threads_are_answered_only_after_their_commit(db_path: str, synchronous: str) -> None:
    """6 threads of transactions contending for the lane (at NORMAL each commits and hands
    the lane on when its slice ends; at FULL the group commits): a transaction whose block
    has returned is committed, seen at once by a connection of the thread's own."""
    threads, each = 6, 120
    MOVE = "UPDATE accounts SET balance = balance + ? WHERE id = ?"
    with _open(db_path, synchronous=synchronous, group_wait=0.005) as db:

        def worker(k: int) -> Callable[[], None]:
            def run() -> None:
                seen = sqlite3.connect(db_path, isolation_level=None)
                try:
                    for i in range(each):
                        name = f"{k}-{i}"
                        with db.transaction() as tx:
                            tx.execute("INSERT INTO items VALUES (?)", (name,))
                            a, b = (k, k + 1) if i % 2 else (k + 1, k)
                            tx.execute(MOVE, (-1, a))
                            tx.execute(MOVE, (1, b))
                        row = seen.execute("SELECT 1 FROM items WHERE name = ?", (name,))
                        assert row.fetchone() == (1,), f"{name} answered before its COMMIT"
                finally:
                    seen.close()

            return run

        outs = [Outcome(worker(k)) for k in range(threads)]
        assert [o.join().error for o in outs] == [None] * threads
        assert len(_names(db)) == threads * each
        assert db.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START


@pytest.mark.parametrize("closed", ["before the grant", "after the grant"])
def test_an_async_transaction_whose_loop_closed_never_keeps_the_lane(
    db_path: str, closed: str
) -> None:
    """An async transaction queued for the lane on a loop that is then closed (its task never
    runs again): the lane is not handed to it (closed before), or taken back by the writer's
    watch (closed after it was handed the lane); the leader's transaction commits and the lane
    serves the next write."""
    with _open(db_path, hold_warn=0.2) as db:
        adb = db.as_async()
        loop = asyncio.new_event_loop()

        async def queued() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO items VALUES ('orphan')")

        inside, leave = threading.Event(), threading.Event()

        def lead() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO items VALUES ('leader')")
                inside.set()
                leave.wait(20)

        leader = Outcome(lead)
        try:
            assert inside.wait(10)
            loop.create_task(queued())
            loop.run_until_complete(asyncio.sleep(0.05))  # it queues behind the leader
            wait_for(lambda: db.stats().queue_depth == 1, what="the queued async hold")
            if closed == "before the grant":
                loop.close()
            leave.set()
            if closed == "after the grant":  # (handed the lane, which its loop never sees)
                wait_for(lambda: db.stats().queue_depth == 0, what="the lane handed to it")
                loop.close()
            assert leader.join().error is None
            db.execute("INSERT INTO items VALUES ('after')", timeout=10)
        finally:
            leave.set()
            if not loop.is_closed():
                loop.close()
        assert _names(db) == {"leader", "after"}


def test_a_writer_failure_while_a_thread_holds_the_group_acknowledges_only_what_committed(
    db_path: str,
) -> None:
    """The writer thread fails (an internal error) while B holds the lane with A's finished
    transaction in its group: whatever each is told, it is true -- acknowledged means in the
    file, failed means not (the group is B's to commit or lose, not the stopping writer's)."""
    db = _open(db_path, hold_warn=0.2)
    lane = db._engine._lane  # type: ignore[attr-defined]
    gates = {name: (threading.Event(), threading.Event()) for name in ("a", "b")}

    def tx(name: str) -> Callable[[], None]:
        def run() -> None:
            inside, leave = gates[name]
            with db.transaction() as t:
                t.execute("INSERT INTO items VALUES (?)", (name,))
                inside.set()
                leave.wait(20)

        return run

    try:
        a = Outcome(tx("a"))
        assert gates["a"][0].wait(10)
        b = Outcome(tx("b"))
        wait_for(lambda: db.stats().queue_depth == 1, what="b queued")
        gates["a"][1].set()  # a ends: the lane goes to b, the group open; a waits for it
        assert gates["b"][0].wait(10)

        def fail() -> bool:
            raise RuntimeError("injected writer failure")

        lane._watch_hold = fail  # (the writer calls it while a thread holds the lane)
        wait_for(lambda: lane.broken is not None, what="the writer to stop")
        gates["b"][1].set()
        outcomes = {"a": a.join().error, "b": b.join().error}
    finally:
        for _, leave in gates.values():
            leave.set()
        db.close()
    with sqlite3.connect(db_path) as conn:
        stored = {r[0] for r in conn.execute("SELECT name FROM items")}
    conn.close()
    for name, error in outcomes.items():
        assert (error is None) == (name in stored), (name, error, stored)


# ---- async ----------------------------------------------------------------------------------
async def _transfer(adb: litegate.AsyncDatabase, rng_seed: int) -> None:
    a, b = rng_seed % ACCOUNTS, (rng_seed * 7 + 1) % ACCOUNTS
    if a == b:
        b = (b + 1) % ACCOUNTS
    async with adb.transaction() as tx:
        balance = await tx.query_value("SELECT balance FROM accounts WHERE id = ?", (a,))
        amount = min(balance, 3)
        await tx.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
        await tx.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))


async def test_async_transactions_share_commits(db_path: str) -> None:
    db = await asyncio.to_thread(_open, db_path)
    try:
        adb = db.as_async()
        before = await adb.stats()
        await asyncio.gather(*(_transfer(adb, i) for i in range(200)))
        stats = await adb.stats()
        assert stats.transactions - before.transactions == 200
        assert stats.batches - before.batches < 200  # groups formed
        assert stats.max_batch_size > 1
        assert await adb.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START
        assert await adb.query_value("SELECT min(balance) FROM accounts") >= 0
    finally:
        await asyncio.to_thread(db.close)


async def _insert_atx(adb: litegate.AsyncDatabase, name: str, fail: bool = False) -> None:
    async with adb.transaction() as tx:
        await tx.execute("INSERT INTO items VALUES (?)", (name,))
        await tx.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 0")
        await tx.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
        if fail:
            raise KeyError(name)


async def test_async_group_one_raises_undone_alone(db_path: str) -> None:
    db = await asyncio.to_thread(_open, db_path)
    try:
        adb = db.as_async()
        lane_free = asyncio.Event()

        async def leader() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO items VALUES ('leader')")
                await lane_free.wait()

        first = asyncio.create_task(leader())
        await asyncio.sleep(0.01)
        names = ["a", "b", "bad", "c", "d"]
        tasks = [asyncio.create_task(_insert_atx(adb, n, fail=n == "bad")) for n in names]
        await asyncio.sleep(0.01)
        lane_free.set()
        await first
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[2], KeyError)
        assert [r for i, r in enumerate(results) if i != 2] == [None] * 4
        assert await asyncio.to_thread(_names, db) == {"leader", "a", "b", "c", "d"}
        assert (await adb.stats()).max_batch_size == 5
        assert await adb.query_value("SELECT balance FROM accounts WHERE id = 0") == START - 4
    finally:
        await asyncio.to_thread(db.close)


async def test_async_failed_shared_commit_fails_every_member(db_path: str) -> None:
    db = await asyncio.to_thread(_open, db_path)
    try:
        adb = db.as_async()
        go = asyncio.Event()

        async def leader() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO items VALUES ('leader')")
                await go.wait()

        async def orphan() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO child VALUES (42)")

        first = asyncio.create_task(leader())
        await asyncio.sleep(0.01)
        tasks = [asyncio.create_task(_insert_atx(adb, f"t{i}")) for i in range(3)]
        tasks.append(asyncio.create_task(orphan()))
        await asyncio.sleep(0.01)
        go.set()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        assert all(isinstance(r, litegate.RolledBack) for r in results), results
        assert all("shared its COMMIT" in str(r) for r in results)
        assert await asyncio.to_thread(_names, db) == set()
        assert await adb.query_value("SELECT count(*) FROM child") == 0
    finally:
        await asyncio.to_thread(db.close)


async def test_async_cancellation_at_every_await_point_of_a_group(db_path: str) -> None:
    """Tasks of a group cancelled while queued for the lane, during a statement sent to the
    writer thread (a first-seen SQL text), and while waiting for the shared COMMIT: the sum is
    kept, a transaction's marker is there exactly when ``committed`` says so, and the lane
    goes on."""
    db = await asyncio.to_thread(_open, db_path)
    try:
        adb = db.as_async()
        await adb.execute("CREATE TABLE markers(tx INT PRIMARY KEY)")
        txs: dict[int, litegate.AsyncTransaction] = {}

        async def grouped(i: int) -> None:
            tx = txs[i] = adb.transaction()
            async with tx:
                await tx.execute("INSERT INTO markers VALUES (?)", (i,))
                # a text never seen before: sent to the writer thread (and measured)
                await tx.execute(f"UPDATE accounts SET balance = balance - 1 WHERE id = 0 -- {i}")
                await tx.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")

        for wave in range(12):
            go = asyncio.Event()

            async def leader(w: int = wave, go: asyncio.Event = go) -> None:
                async with adb.transaction() as tx:
                    await tx.execute("UPDATE accounts SET balance = balance WHERE id = ?", (w,))
                    await go.wait()

            first = asyncio.create_task(leader())
            await asyncio.sleep(0.005)
            tasks = [asyncio.create_task(grouped(wave * 100 + k)) for k in range(12)]
            await asyncio.sleep(0.001)
            tasks[wave % 12].cancel()  # queued for the lane
            go.set()
            for k, task in enumerate(tasks):
                for _ in range(k % 4):  # later and later: statements, commit, done
                    await asyncio.sleep(0)
                if k % 3 == wave % 3:
                    task.cancel()
            await first
            await asyncio.gather(*tasks, return_exceptions=True)
        markers = {r[0] for r in await adb.query("SELECT tx FROM markers")}
        assert markers == {i for i, tx in txs.items() if tx.committed}
        moved = await adb.query_value("SELECT balance FROM accounts WHERE id = 1") - START
        assert moved == len(markers)
        assert await adb.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START
        async with adb.transaction(timeout=2) as tx:  # the lane is free
            await tx.execute("INSERT INTO items VALUES ('after')")
        assert (await adb.stats()).queue_depth == 0
    finally:
        await asyncio.to_thread(db.close)


SLOW_WRITE = (  # ~0.1-0.3 s here: a statement that must never run on the loop
    "INSERT INTO items SELECT 'x' || i FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
    "SELECT i + 1 FROM c WHERE i < 1500000) SELECT i FROM c) WHERE i < 0"
)


async def test_a_slow_write_in_a_transaction_never_runs_on_the_loop(db_path: str) -> None:
    """The loop-lag monitor every async test runs under (tests/loop_lag.py) fails this test if
    the loop is held beyond its limit: the slow statement runs on the writer thread the first
    time (unknown text) and every later time (known slow), while other transactions go on."""
    db = await asyncio.to_thread(_open, db_path)
    try:
        adb = db.as_async()
        for _ in range(3):
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO items VALUES ('s' || random())")
                await asyncio.gather(
                    tx.execute(SLOW_WRITE), asyncio.sleep(0)
                )  # (the ticker runs meanwhile)
            await asyncio.gather(*(_transfer(adb, i) for i in range(20)))
        assert await adb.query_value("SELECT count(*) FROM items") == 3
        assert await adb.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START
    finally:
        await asyncio.to_thread(db.close)


async def test_a_function_on_the_writer_calling_the_database_is_refused(db_path: str) -> None:
    """Regression (review): an async transaction's ``tx.run`` function runs on the writer
    thread; calling the sync database from there must raise Misuse (it would wait for its own
    transaction), not deadlock the writer."""
    db = await asyncio.to_thread(_open, db_path)
    try:
        adb = db.as_async()

        def reenter(conn: sqlite3.Connection) -> None:
            db.execute("INSERT INTO items VALUES ('inner')", timeout=None)

        with pytest.raises(litegate.Misuse):
            async with adb.transaction() as tx:
                await tx.run(reenter)
        async with adb.transaction(timeout=2) as tx:  # the lane is free
            await tx.execute("INSERT INTO items VALUES ('after')")
        assert await asyncio.to_thread(_names, db) == {"after"}
    finally:
        await asyncio.to_thread(db.close)


# ---- a lone async transaction's COMMIT on the loop (where it costs no fsync) -------------------
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_lone_async_commit_runs_on_the_loop_only_where_it_costs_no_fsync(
    db_path: str, synchronous: Any, commits_here: list[int]
) -> None:
    adb = await litegate.connect_async(db_path, synchronous=synchronous)
    try:
        await adb.executescript(SCHEMA)
        for i in range(6):
            if i == 1:
                commits_here.clear()  # (the first run of a SQL text is measured on the writer thread)
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO items VALUES (?)", (f"n{i}",))
            assert tx.committed
        assert await adb.query_value("SELECT count(*) FROM items") == 6
    finally:
        await adb.close()
    # NORMAL: no fsync, nobody waiting: each COMMIT ran here, on the loop's thread; FULL: never
    assert commits_here == ([threading.get_ident()] * 5 if synchronous == "NORMAL" else [])


def _wal_frames(db_path: str) -> int:
    """The WAL's high-water mark in frames (its size: a checkpoint restarts the WAL from its
    start, so a WAL that was checkpointed every few frames stays that small)."""
    size = os.path.getsize(db_path + "-wal")
    return max(0, size - 32) // (4096 + 24)


async def test_commits_on_the_loop_never_checkpoint_there_and_the_wal_stays_bounded(
    db_path: str,
) -> None:
    adb = await litegate.connect_async(
        db_path, synchronous="NORMAL", checkpoint_idle=600, pragmas={"wal_autocheckpoint": 10}
    )
    try:
        await adb.execute("CREATE TABLE n(id INTEGER PRIMARY KEY, v INT)")
        await adb.execute("INSERT INTO n VALUES (1, 0)")
        for _ in range(60):  # one page changed, one WAL frame, per COMMIT
            async with adb.transaction() as tx:
                await tx.execute("UPDATE n SET v = v + 1 WHERE id = 1")
        # SQLite's own checkpoint (due every 10 frames) never ran on the loop: the WAL grew
        assert _wal_frames(db_path) >= 50, _wal_frames(db_path)
        for _ in range(300):
            async with adb.transaction() as tx:
                await tx.execute("UPDATE n SET v = v + 1 WHERE id = 1")
        assert await adb.query_value("SELECT v FROM n") == 360
        # every LOOP_COMMITS-th COMMIT ran off the loop and checkpointed: the WAL restarted
        assert _wal_frames(db_path) < 200, _wal_frames(db_path)
    finally:
        await adb.close()


async def test_a_failed_commit_on_the_loop_raises_as_a_groups_does(db_path: str) -> None:
    # a deferred foreign key fails at COMMIT: on the loop (NORMAL, alone) as on the writer
    # thread (FULL, or shared): RolledBack, nothing stored, the lane free again
    adb = await litegate.connect_async(db_path, synchronous="NORMAL")
    try:
        await adb.executescript(SCHEMA)
        for _ in range(2):  # (the first run measures the statement off the loop)
            with pytest.raises(litegate.RolledBack, match="COMMIT failed"):
                async with adb.transaction() as tx:
                    await tx.execute("INSERT INTO child(pid) VALUES (?)", (99,))
            assert not tx.committed
        assert await adb.query_value("SELECT count(*) FROM child") == 0
        await adb.execute("INSERT INTO items VALUES ('after')")
    finally:
        await adb.close()


async def test_a_transaction_that_changed_many_rows_commits_off_the_loop(
    db_path: str, commits_here: list[int]
) -> None:
    adb = await litegate.connect_async(db_path, synchronous="NORMAL")
    try:
        await adb.executescript(SCHEMA)
        for rows in (1, 1, 300, 1):
            async with adb.transaction() as tx:
                for _ in range(rows):
                    await tx.execute("INSERT INTO child(pid) VALUES (NULL)")
        assert await adb.query_value("SELECT count(*) FROM child") == 303
    finally:
        await adb.close()
    # the 1st measured its statement off the loop; the 300-row one committed off it too
    assert len(commits_here) == 2


async def test_a_transaction_whose_reads_went_to_the_writer_still_commits_on_the_loop(
    db_path: str, commits_here: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # under load an inline read runs past its budget and goes to the writer thread: it writes
    # nothing, so the transaction's COMMIT may still run on the loop
    adb = await litegate.connect_async(db_path, synchronous="NORMAL")
    try:
        await adb.executescript(SCHEMA)
        await adb.executescript(f"INSERT INTO accounts VALUES (1, {START})")
        for i in range(3):
            if i == 1:  # (the 1st measured its UPDATE off the loop)
                commits_here.clear()
                monkeypatch.setattr(_async_lease, "run_inline", lambda *_: _bridge.MISS)
            async with adb.transaction() as tx:
                balance = await tx.query_value("SELECT balance FROM accounts WHERE id = 1")
                await tx.execute("UPDATE accounts SET balance = ? WHERE id = 1", (balance + 1,))
        assert await adb.query_value("SELECT balance FROM accounts WHERE id = 1") == START + 3
    finally:
        await adb.close()
    assert len(commits_here) == 2


# ---- a group's COMMIT on the loop (where it costs no fsync) ----------------------------------
async def _warm(adb: litegate.AsyncDatabase) -> None:
    """Run every SQL text of these tests once (a first-seen text is measured on the writer
    thread, which keeps its transaction's COMMIT off the loop)."""
    await adb.execute("INSERT INTO parent VALUES (1)")
    for _ in range(2):
        await _insert_atx(adb, "warm")
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO child VALUES (?)", (1,))
            await tx.execute("DELETE FROM items WHERE name = ?", ("warm",))
            await tx.execute("INSERT INTO items VALUES (?)", ("leader",))
            await tx.execute("DELETE FROM items WHERE name = ?", ("leader",))
    await adb.execute("DELETE FROM child")


async def _group_of(
    adb: litegate.AsyncDatabase, *parts: Callable[[], Any]
) -> list[BaseException | None]:
    """A leader that holds the lane while ``parts`` queue for it, then lets them in: one
    group, leader first. Returns each part's outcome (the leader's first)."""
    go = asyncio.Event()

    async def leader() -> None:
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO items VALUES (?)", ("leader",))
            await go.wait()

    first = asyncio.create_task(leader())
    await asyncio.sleep(0.01)
    tasks = []
    for n, part in enumerate(parts, 1):  # each queued before the next starts: in this order
        tasks.append(asyncio.create_task(part()))
        deadline = time.monotonic() + 10
        while (await adb.stats()).queue_depth < n:
            assert time.monotonic() < deadline, "a part never queued for the lane"
            await asyncio.sleep(0.002)
    go.set()
    return list(await asyncio.gather(first, *tasks, return_exceptions=True))


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_an_async_group_commits_on_the_loop_only_where_it_costs_no_fsync(
    db_path: str, synchronous: str, commits_here: list[int]
) -> None:
    db = await asyncio.to_thread(_open, db_path, synchronous=synchronous)
    try:
        adb = db.as_async()
        await _warm(adb)
        commits_here.clear()
        before = await adb.stats()
        moved = await adb.query_value("SELECT balance FROM accounts WHERE id = 1")
        names = ["a", "b", "c", "d"]
        results = await _group_of(adb, *(lambda n=n: _insert_atx(adb, n) for n in names))
        assert results == [None] * 5
        stats = await adb.stats()
        assert stats.batches - before.batches == 1 and stats.max_batch_size == 5
        assert await asyncio.to_thread(_names, db) == {"leader", *names}
        assert await adb.query_value("SELECT balance FROM accounts WHERE id = 1") == moved + 4
    finally:
        await asyncio.to_thread(db.close)
    # NORMAL: the last of the group committed for all on the loop's thread; FULL: never there
    assert commits_here == ([threading.get_ident()] if synchronous == "NORMAL" else [])


async def test_a_failed_group_commit_on_the_loop_fails_every_member(
    db_path: str, commits_here: list[int]
) -> None:
    db = await asyncio.to_thread(_open, db_path, synchronous="NORMAL")
    try:
        adb = db.as_async()
        await _warm(adb)
        commits_here.clear()

        async def orphan() -> None:  # a deferred foreign key: fails at the shared COMMIT
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO child VALUES (?)", (42,))

        results = await _group_of(
            adb, *(lambda i=i: _insert_atx(adb, f"t{i}") for i in range(3)), orphan
        )
        assert all(isinstance(r, litegate.RolledBack) for r in results), results
        assert all("shared its COMMIT" in str(r) for r in results)
        assert commits_here == [threading.get_ident()]
        assert await asyncio.to_thread(_names, db) == set()
        assert await adb.query_value("SELECT count(*) FROM child") == 0
        assert await adb.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START
        async with adb.transaction(timeout=2) as tx:  # the lane is free
            await tx.execute("INSERT INTO items VALUES ('after')")
    finally:
        await asyncio.to_thread(db.close)


@pytest.mark.parametrize("part", ["first-seen text", "many rows", "a thread"])
async def test_a_group_with_a_heavy_or_unknown_part_commits_off_the_loop(
    db_path: str, part: str, commits_here: list[int]
) -> None:
    db = await asyncio.to_thread(_open, db_path, synchronous="NORMAL")
    try:
        adb = db.as_async()
        await _warm(adb)
        await adb.execute("INSERT INTO child(pid) VALUES (NULL)")  # (its text measured)
        commits_here.clear()

        async def heavy() -> None:
            if part == "a thread":  # a sync transaction's part: its weight is unknown here
                await asyncio.to_thread(thread_part)
                return
            async with adb.transaction() as tx:
                if part == "first-seen text":  # measured on the writer thread
                    await tx.execute("INSERT INTO items VALUES ('t') -- first seen")
                    return
                await tx.execute("INSERT INTO items VALUES (?)", ("t",))
                for _ in range(100):  # light alone; 300 rows with the others: too many
                    await tx.execute("INSERT INTO child(pid) VALUES (NULL)")

        def thread_part() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO items VALUES (?)", ("t",))
                time.sleep(0.01)  # past its slice of the lane: it hands the lane on

        async def many() -> None:
            async with adb.transaction() as tx:
                for _ in range(100):
                    await tx.execute("INSERT INTO child(pid) VALUES (NULL)")

        extra = [many, many] if part == "many rows" else []
        # (the heavy part first: the last part's own weight is checked anyway)
        results = await _group_of(adb, heavy, *extra, lambda: _insert_atx(adb, "a"))
        assert results == [None] * (3 + len(extra))
        assert (await adb.stats()).max_batch_size == 3 + len(extra)
        assert await asyncio.to_thread(_names, db) == {"leader", "a", "t"}
    finally:
        await asyncio.to_thread(db.close)
    assert commits_here == []


@pytest.mark.parametrize(
    "cancel",
    [
        # (the debug loop's foreign-thread checks run in the cancelling variant: the same
        # hand-offs and loop COMMITs, cancellations besides; this one takes ~9 s there)
        pytest.param(False, marks=pytest.mark.no_debug_loop("1,500 transactions: CI time")),
        True,
    ],
)
async def test_groups_committed_on_the_loop_keep_the_sum_and_the_wal_bounded(
    db_path: str, commits_here: list[int], cancel: bool
) -> None:
    """Many groups of transfers at NORMAL (``cancel``: tasks cancelled while queued,
    mid-transaction and while their group commits): the sum is kept, a transaction's marker is
    there exactly when ``committed`` says so. Without cancellations every COMMIT is a group's:
    every LOOP_COMMITS-th ran on the writer thread, which checkpointed (SQLite's automatic
    checkpoint is held off on the loop), so the WAL stayed small."""
    db = await asyncio.to_thread(
        _open, db_path, synchronous="NORMAL", pragmas={"wal_autocheckpoint": 10}
    )
    try:
        adb = db.as_async()
        await _warm(adb)
        await adb.execute("CREATE TABLE markers(tx INT PRIMARY KEY)")
        txs: dict[int, litegate.AsyncTransaction] = {}

        async def transfer(i: int) -> None:
            a, b = i % ACCOUNTS, (i * 3 + 1) % ACCOUNTS
            tx = txs[i] = adb.transaction()
            async with tx:
                balance = await tx.query_value("SELECT balance FROM accounts WHERE id = ?", (a,))
                amount = min(balance, 2) if a != b else 0
                await tx.execute("INSERT INTO markers VALUES (?)", (i,))
                await tx.execute(
                    "UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a)
                )
                await tx.execute(
                    "UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b)
                )

        for _ in range(2):  # (every SQL text measured)
            await transfer(-1 - _)
        loop_thread = threading.get_ident()
        commits_here.clear()
        before = await adb.stats()
        for wave in range(300):
            tasks = [asyncio.create_task(transfer(wave * 100 + k)) for k in range(5)]
            for k, task in enumerate(tasks):
                for _ in range(k % 5):  # later and later: queued, statements, commit, done
                    await asyncio.sleep(0)
                if cancel and k % 4 == wave % 4:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        stats = await adb.stats()
        markers = {r[0] for r in await adb.query("SELECT tx FROM markers")}
        assert markers == {i for i, tx in txs.items() if tx.committed}
        assert await adb.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START
        assert await adb.query_value("SELECT min(balance) FROM accounts") >= 0
        groups = stats.batches - before.batches
        assert groups < len(markers)  # groups formed
        assert set(commits_here) == {loop_thread}
        if not cancel:
            assert len(markers) == 1502 and groups == 300  # a group a wave (no lone COMMIT)
            assert len(commits_here) >= 100
            assert groups > len(commits_here)  # every LOOP_COMMITS-th went to the writer
            # (~3 frames a group: 300 groups all on the loop would leave ~900)
            assert _wal_frames(db_path) < 450, _wal_frames(db_path)
    finally:
        await asyncio.to_thread(db.close)


async def test_a_commit_on_the_writer_answers_after_the_lane_is_free(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread answers a transaction whose COMMIT it ran only once it has given the
    lane back: the task's next transaction takes the idle lane on its loop instead of queueing
    behind the writer (one more hop there and back). The writer is made slow between the
    COMMIT and giving the lane back, so an early answer would always find it taken."""
    real = _lane_turns.LaneTurns._take_over

    def slow_take_over(self: Any) -> None:
        real(self)
        time.sleep(0.005)  # (writer thread, the lane still its own)

    monkeypatch.setattr(_lane_turns.LaneTurns, "_take_over", slow_take_over)
    adb = await litegate.connect_async(db_path, synchronous="FULL")
    try:
        await adb.executescript(SCHEMA)
        await adb.execute("INSERT INTO accounts VALUES (0, 0)")
        for _ in range(20):
            async with adb.transaction() as tx:
                await tx.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 0")
            assert tx.committed
        stats = await adb.stats()
        assert stats.lane_wait_p99_ms == 0.0  # no transaction waited for the lane
        assert await adb.query_value("SELECT balance FROM accounts WHERE id = 0") == 20
    finally:
        await adb.close()


# ---- an interrupt (Ctrl-C on the loop's thread) while a group commits on the loop ------------
_BOTH, _TASK, _THREAD = ("task", "thread"), ("task",), ("thread",)


@pytest.mark.parametrize(
    ("func", "text", "nth", "waiter"),
    [
        (func, text, nth, waiter)
        for func, text, nth, waiters in [
            # after the shared COMMIT went through: every member is told so
            (_connection.commit_on_loop, "gate[0] = SHUT", 1, _BOTH),
            (_group.Group.commit, "job.finish(result)", 2, _BOTH),  # (2nd: the leader's ticket)
            # the hand-off: the lane goes on to the next waiter, or back, never stays held
            (
                _lane_turns.LaneTurns.end_turn,
                "return bool(self._queue) and self._pass_on(group)",
                1,
                _BOTH,
            ),
            (_lane_turns.LaneTurns.end_turn, "group.members.append((ticket, None))", 1, _BOTH),
            (
                _async_lease.AsyncLaneLease.commit,
                "done = light and lane.commit_group_here(",
                1,
                _BOTH,
            ),
            (
                _lane_loop.LaneLoop.commit_group_here,
                "if not self._loop_commit_allowed():",
                1,
                _BOTH,
            ),
            (_lane_loop.LaneLoop.commit_group_here, "error = group.commit(", 1, _BOTH),
            (_lane_loop.LaneLoop.commit_group_here, "flush(self.outbox)", 1, _BOTH),
            (_lane_loop.LaneLoop.commit_group_here, "if not self._pass_on(None):", 1, _BOTH),
            # a thread waiter is queued: the lane is granted to it
            (_lane_turns.LaneTurns._pass_on, "self._assign_locked(nxt)", 1, _THREAD),
            (_lane_turns.LaneTurns._pass_on, "self._announce(nxt)", 1, _THREAD),
            # a task of the same loop waits for a turn: the lane is handed on to it there
            (_lane_turns.LaneTurns.give_back_async, "if self._hand_turn(hold):", 1, _TASK),
            (_lane_turns.LaneTurns._hand_turn, "self._held_since = now", 1, _TASK),
            (_lane_turns.LaneTurns._hand_turn, "hold.turn = None", 1, _TASK),
            (_lane_turns.LaneTurns._hand_turn, "fut.set_result(None)", 1, _TASK),
            (_lane_turns.LaneTurns._hand_turn, "return True", 1, _TASK),
        ]
        for waiter in waiters
    ],
)
async def test_an_interrupt_in_a_group_commit_on_the_loop_tells_the_truth_and_frees_the_lane(
    db_path: str, func: Any, text: str, nth: int, waiter: str
) -> None:
    """A leader holds the lane; this task's transaction and then a waiter (a task or a thread)
    queue for it; the group's bound (max_batch=2) makes this task's part the last: it
    COMMITs on the loop and hands the lane to the waiter -- and is interrupted at ``text``.
    Whatever the point: the leader is answered, and told the truth (committed exactly when
    its row is there); the waiter gets the lane and commits; the lane is free after."""
    db = await asyncio.to_thread(_open, db_path, synchronous="NORMAL", max_batch=2, timeout=5)
    try:
        adb = db.as_async()
        await _warm(adb)
        go = asyncio.Event()

        async def leader() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO items VALUES (?)", ("leader",))
                await go.wait()

        def thread_tx() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO items VALUES (?)", ("w",))

        async def arrange() -> Any:
            await wait_async(adb, 1)  # (this task queued)
            if waiter == "task":
                w: Any = asyncio.create_task(_insert_atx(adb, "w"))
            else:
                w = asyncio.ensure_future(asyncio.to_thread(thread_tx))
            await wait_async(adb, 2)
            go.set()
            return w

        first = asyncio.create_task(leader())
        await asyncio.sleep(0.01)
        arranging = asyncio.create_task(arrange())
        tracer = sys.gettrace()  # (coverage's, under `make test`: put back after)
        try:
            with pytest.raises(KeyboardInterrupt):
                async with adb.transaction() as tx:
                    await tx.execute("INSERT INTO items VALUES (?)", ("me",))
                    sys.settrace(interrupt_at(func, text, nth))
        finally:
            sys.settrace(tracer)
        w = await arranging
        outcomes = await asyncio.wait_for(
            asyncio.gather(first, w, return_exceptions=True), timeout=10
        )
        names = await asyncio.to_thread(_names, db)
        assert outcomes[1] is None and "w" in names, outcomes  # the waiter got the lane
        if outcomes[0] is None:
            assert "leader" in names, "the leader was told it committed: it did not"
        else:
            assert isinstance(outcomes[0], litegate.RolledBack), outcomes
            assert "leader" not in names, "the leader was told it rolled back: it committed"
        if tx.committed:  # (else its outcome is unknown: an interrupt, as documented)
            assert "me" in names
        if func in (_connection.commit_on_loop, _group.Group.commit):
            assert tx.committed  # (interrupted after the shared COMMIT: it knows)
        async with adb.transaction(timeout=5) as tx:  # the lane is free
            await tx.execute("INSERT INTO items VALUES ('after')")
        assert await asyncio.to_thread(writer_autocheckpoint, db) == 1000
    finally:
        await asyncio.to_thread(db.close)


def _sync_waits(db: litegate.Database, depth: int) -> None:
    wait_for(lambda: db.stats().queue_depth >= depth, what=f"{depth} waiting for the lane")


@pytest.mark.parametrize(
    ("func", "text"),
    [
        (_lease.LaneLease.commit, "outcome = lane.commit_and_pass_on()"),
        (_lease.LaneLease.commit, "if outcome is True:"),
        (_lease.LaneLease.commit, "self._conn = None  # (the lane is the next holder's now)"),
        (_lane_turns.LaneTurns.commit_and_pass_on, "error = self.commit_group(own=True)"),
        (_lane_turns.LaneTurns.commit_and_pass_on, "if error is not None:"),
        (_lane_turns.LaneTurns.commit_and_pass_on, "return bool(self._queue) and self._pass_on"),
        (_group.Group.commit, "end_transaction(conn, guard, COMMIT)"),
        (_group.Group.commit, "self.committed = True"),
        (_group.Group.commit, "job.finish(result)"),
        (_lane_turns.LaneTurns._pass_on, "self._assign_locked(nxt)"),
        (_lane_turns.LaneTurns._pass_on, "self._announce(nxt)"),
    ],
)
def test_an_interrupt_as_a_thread_commits_a_handed_group_tells_the_truth(
    db_path: str, func: Any, text: str
) -> None:
    """At NORMAL an async leader hands the lane, its group open, to this thread's transaction;
    a thread waits behind it. This thread COMMITs the group and hands the lane straight on
    (``commit_and_pass_on``) -- and is interrupted at ``text``. Whatever the point: the leader
    is told the truth (committed exactly when its row is there), the waiter gets the lane and
    commits, and the lane is free after."""
    db = _open(db_path, synchronous="NORMAL", timeout=5)
    try:
        adb = db.as_async()
        go, holding = threading.Event(), threading.Event()

        async def leader() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO items VALUES ('leader')")
                holding.set()
                await asyncio.to_thread(go.wait, 10)

        lead = Outcome(lambda: asyncio.run(leader()))
        assert holding.wait(10)

        def arrange() -> Outcome:
            _sync_waits(db, 1)  # (this thread queued first)
            waiter = Outcome(_insert_tx(db, "w"))
            _sync_waits(db, 2)
            go.set()
            return waiter

        arranging = Outcome(arrange)
        tracer = sys.gettrace()  # (coverage's, under `make test`: put back after)
        try:
            with pytest.raises(KeyboardInterrupt):
                with db.transaction() as tx:
                    tx.execute("INSERT INTO items VALUES ('me')")
                    sys.settrace(interrupt_at(func, text))
        finally:
            sys.settrace(tracer)
        waiter = arranging.join().result
        assert waiter.join().error is None  # the waiter got the lane
        lead.join()
        names = _names(db)
        assert "w" in names
        if lead.error is None:
            assert "leader" in names, "the leader was told it committed: it did not"
        else:
            assert isinstance(lead.error, litegate.RolledBack), lead.error
            assert "leader" not in names, "the leader was told it rolled back: it committed"
        assert ("me" in names) == ("leader" in names)  # (one group: both or neither)
        with db.transaction(timeout=5) as tx:  # the lane is free
            tx.execute("INSERT INTO items VALUES ('after')")
    finally:
        db.close()


async def wait_async(adb: litegate.AsyncDatabase, depth: int) -> None:
    """Until ``depth`` transactions queue for the lane."""
    deadline = time.monotonic() + 10
    while (await adb.stats()).queue_depth < depth:
        assert time.monotonic() < deadline, "a transaction never queued for the lane"
        await asyncio.sleep(0.002)
