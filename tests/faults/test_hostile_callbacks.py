"""Hostile user callbacks: whatever a ``run_write`` / ``run_read`` / ``tx.run`` function does --
raise any kind of ``BaseException``, swallow SQLite's rollback and keep writing, release the
lane's own savepoint, close the connection it was lent, close the database from inside -- it
fails its own call only: every other call of its batch is answered (and committed), nothing
commits outside the lane's COMMIT, and the engine serves the next query and write.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import litegate
from helpers import lane_held, lane_held_async, wait_for
from litegate._engine import _commit_gate

KINDS: list[type[BaseException]] = [
    StopIteration,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    ValueError,
    type("CustomBase", (BaseException,), {}),
]
ANSWER_TIMEOUT = 10.0  # an answer that has not come by then never will (the bug: forever)
# The async tests check the database's state through the sync facade between their steps (and
# close it): those checks, not litegate's async calls, block the loop for a moment.
pytestmark = pytest.mark.blocks_loop("state is checked through the sync Database between steps")


def _fresh(tmp_path: Path, **options: Any) -> litegate.Database:
    db = litegate.connect(tmp_path / "h.db", **options)
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    return db


def _serves(db: litegate.Database, marker: int) -> None:
    """The engine still takes a write and answers a query about it."""
    db.execute("INSERT INTO t(id, v) VALUES (?, 'after')", (marker,))
    assert db.query_value("SELECT v FROM t WHERE id = ?", (marker,)) == "after"


def _raiser(kind: type[BaseException]) -> Any:
    def fn(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t(id, v) VALUES (999, 'doomed')")
        raise kind("hostile")

    return fn


async def _outcome(awaitable: Any) -> Any:
    """What the awaitable returned or raised (KeyboardInterrupt and SystemExit included: a
    task they escaped would stop the event loop, as asyncio does for any coroutine)."""
    try:
        return await awaitable
    except BaseException as exc:
        return exc


async def _in_one_batch(
    db: litegate.Database, calls: list[Any], before_release: Any = None
) -> list[Any]:
    """Start ``calls`` (coroutines) while another thread holds the lane, so that they queue
    and run as one batch once it is released; every outcome (results and exceptions), in
    order. ``before_release()`` runs just before the lane is let go."""
    async with lane_held_async(db):
        futures = [asyncio.ensure_future(call) for call in calls]
        await asyncio.sleep(0.05)
        if before_release is not None:
            before_release()
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), ANSWER_TIMEOUT)


def _inserts(adb: litegate.AsyncDatabase, ids: range, v: str = "ok") -> list[Any]:
    return [adb.execute("INSERT INTO t(id, v) VALUES (?, ?)", (i, v)) for i in ids]


def _expected(kind: type[BaseException], async_: bool) -> type[BaseException]:
    # A coroutine cannot take StopIteration (asyncio refuses it in a future) or GeneratorExit
    # (it could not await its cleanup): an async caller gets a RuntimeError caused by it.
    return RuntimeError if async_ and kind in (StopIteration, GeneratorExit) else kind


# ---- any BaseException fails its own call only --------------------------------------------------
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
async def test_async_write_raising_any_exception_fails_alone(
    tmp_path: Path, kind: type[BaseException]
) -> None:
    db = _fresh(tmp_path)
    adb = db.as_async()
    try:
        bad = _outcome(adb.run_write(_raiser(kind), timeout=2))
        results = await _in_one_batch(db, [*_inserts(adb, range(20)), bad])
        assert all(isinstance(r, litegate.Result) for r in results[:-1]), results
        assert isinstance(results[-1], _expected(kind, True)), results[-1]
        assert db.query_value("SELECT count(*) FROM t WHERE v = 'ok'") == 20
        assert db.query_value("SELECT count(*) FROM t WHERE id = 999") == 0
        _serves(db, 1000)
    finally:
        db.close()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
async def test_async_read_raising_any_exception_fails_alone(
    tmp_path: Path, kind: type[BaseException]
) -> None:
    db = _fresh(tmp_path)
    adb = db.as_async()

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT 1").fetchall()
        raise kind("hostile")

    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *[adb.query_value("SELECT ?", (i,)) for i in range(10)],
                _outcome(adb.run_read(bad, timeout=2)),
                return_exceptions=True,
            ),
            ANSWER_TIMEOUT,
        )
        assert outcomes[:10] == list(range(10))
        assert isinstance(outcomes[10], _expected(kind, True)), outcomes[10]
        _serves(db, 1000)
    finally:
        db.close()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
async def test_async_transaction_run_raising_any_exception_ends_the_block(
    tmp_path: Path, kind: type[BaseException]
) -> None:
    db = _fresh(tmp_path)
    adb = db.as_async()
    try:

        async def block() -> None:
            async with adb.transaction(timeout=2) as tx:
                await tx.execute("INSERT INTO t(id, v) VALUES (1, 'in tx')")
                await tx.run(_raiser(kind))

        outcome = await asyncio.wait_for(_outcome(block()), ANSWER_TIMEOUT)
        assert isinstance(outcome, _expected(kind, True)), outcome
        assert db.query_value("SELECT count(*) FROM t") == 0  # rolled back, lane free
        await asyncio.wait_for(adb.execute("INSERT INTO t(id, v) VALUES (2, 'x')"), 5)
        _serves(db, 1000)
    finally:
        db.close()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_thread_write_raising_any_exception_fails_alone(
    tmp_path: Path, kind: type[BaseException]
) -> None:
    db = _fresh(tmp_path)
    outcomes: dict[int, object] = {}

    def call(i: int, fn: Any) -> None:
        try:
            outcomes[i] = db.run_write(fn, timeout=5)
        except BaseException as exc:
            outcomes[i] = exc

    def good(i: int) -> Any:
        return lambda conn: conn.execute("INSERT INTO t(id, v) VALUES (?, 'ok')", (i,)).rowcount

    try:
        with lane_held(db):  # one batch with the hostile job in the middle
            threads = [threading.Thread(target=call, args=(i, good(i))) for i in range(8)]
            threads.insert(4, threading.Thread(target=call, args=(99, _raiser(kind))))
            for t in threads:
                t.start()
            wait_for(lambda: db.stats().queue_depth == 9, what="all nine jobs queued")
        for t in threads:
            t.join(ANSWER_TIMEOUT)
            assert not t.is_alive()
        assert isinstance(outcomes.pop(99), kind)
        assert outcomes == dict.fromkeys(range(8), 1)
        assert db.query_value("SELECT count(*) FROM t") == 8
        _serves(db, 1000)
    finally:
        db.close()


# ---- nothing commits outside the lane's COMMIT ------------------------------------------------
def _swallow_rollback_and_write(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("INSERT OR ROLLBACK INTO t(id, v) VALUES (1, 'duplicate')")
    except sqlite3.IntegrityError:
        pass  # SQLite has rolled the lane's transaction back; carrying on is the bug
    conn.execute("INSERT INTO t(id, v) VALUES (50, 'after the rollback')")


@pytest.mark.skipif(not _commit_gate.available(), reason="no commit hook in this interpreter")
def test_statements_after_sqlite_rolled_back_never_commit(tmp_path: Path) -> None:
    db = _fresh(tmp_path)
    try:
        db.execute("INSERT INTO t(id, v) VALUES (1, 'first')")
        with pytest.raises(litegate.RolledBack):
            db.run_write(_swallow_rollback_and_write)
        assert db.query_value("SELECT count(*) FROM t WHERE id = 50") == 0
        with pytest.raises(litegate.RolledBack), db.transaction() as tx:
            tx.run(_swallow_rollback_and_write)
        assert db.query_value("SELECT count(*) FROM t WHERE id = 50") == 0
        _serves(db, 1000)
    finally:
        db.close()


@pytest.mark.skipif(not _commit_gate.available(), reason="no commit hook in this interpreter")
async def test_async_statements_after_sqlite_rolled_back_never_commit(tmp_path: Path) -> None:
    db = _fresh(tmp_path)
    adb = db.as_async()
    try:
        db.execute("INSERT INTO t(id, v) VALUES (1, 'first')")
        bad = adb.run_write(_swallow_rollback_and_write)  # (in a batch with others)
        results = await _in_one_batch(db, [*_inserts(adb, range(100, 110)), bad])
        assert all(isinstance(r, litegate.Result) for r in results[:-1]), results
        assert isinstance(results[-1], litegate.RolledBack), results[-1]
        assert db.query_value("SELECT count(*) FROM t WHERE id = 50") == 0
        assert db.query_value("SELECT count(*) FROM t WHERE v = 'ok'") == 10
    finally:
        db.close()


def test_writes_through_a_lent_connection_outside_a_transaction_are_refused(
    tmp_path: Path,
) -> None:
    """readers=0: a run_read function gets the writer connection outside any transaction; a
    write there would autocommit outside the lane."""
    if not _commit_gate.available():
        pytest.skip("no commit hook in this interpreter")
    db = _fresh(tmp_path, readers=0)
    try:
        with pytest.raises(litegate.Misuse, match="outside any transaction"):
            db.run_read(lambda c: c.execute("INSERT INTO t(id, v) VALUES (7, 'sneaky')"))
        assert db.query_value("SELECT count(*) FROM t") == 0
        _serves(db, 1000)
    finally:
        db.close()


# ---- the lane's own savepoint and connection ---------------------------------------------------
async def test_a_job_releasing_the_lanes_savepoint_fails_alone(tmp_path: Path) -> None:
    db = _fresh(tmp_path)
    adb = db.as_async()

    def fails(conn: sqlite3.Connection) -> None:
        raise ValueError("first failure: the batch is rerun with a savepoint per job")

    def releases(conn: sqlite3.Connection) -> None:
        conn.execute("RELEASE litegate_job")
        raise ValueError("and now the lane's ROLLBACK TO has nothing to roll back to")

    try:
        calls = [adb.run_write(fails), *_inserts(adb, range(1, 2))]
        calls += [adb.run_write(releases), *_inserts(adb, range(2, 3))]
        results = await _in_one_batch(db, calls)
        assert isinstance(results[0], ValueError) and isinstance(results[2], ValueError), results
        assert [type(r) for r in (results[1], results[3])] == [litegate.Result] * 2
        assert not db.closed
        assert db.query_value("SELECT group_concat(id) FROM t") == "1,2"
        _serves(db, 1000)
    finally:
        db.close()


@pytest.mark.parametrize("readers", [4, 0])
def test_a_function_closing_the_writer_connection_fails_alone(tmp_path: Path, readers: int) -> None:
    db = _fresh(tmp_path, readers=readers)
    try:
        with pytest.raises(litegate.Misuse, match="closed the write lane's connection"):
            db.run_write(lambda c: c.close())
        _serves(db, 1000)
        if readers == 0:
            with pytest.raises(litegate.Misuse, match="closed the write lane's connection"):
                db.run_read(lambda c: c.close())
            assert db.query_value("SELECT count(*) FROM t") == 1
        with db.transaction() as tx:  # a lease after the replacement works too
            tx.execute("INSERT INTO t(id, v) VALUES (2000, 'tx')")
        assert db.query_value("SELECT count(*) FROM t") == 2
    finally:
        db.close()


async def test_async_function_closing_the_writer_connection_fails_alone(tmp_path: Path) -> None:
    db = _fresh(tmp_path)
    adb = db.as_async()
    try:
        calls = _inserts(adb, range(5))
        calls.insert(2, adb.run_write(lambda c: c.close()))
        results = await _in_one_batch(db, calls)
        assert isinstance(results.pop(2), litegate.Misuse)
        assert all(isinstance(r, litegate.Result) for r in results), results
        assert db.query_value("SELECT count(*) FROM t") == 5
        _serves(db, 1000)
    finally:
        db.close()


def test_a_lane_that_cannot_continue_closes_visibly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer connection is closed under the lane and cannot be reopened (the disk is
    gone, say): every waiter is answered with Closed saying why, ``db.closed`` is true, and it
    is logged once."""
    from litegate._engine import _lane_state

    db = _fresh(tmp_path)
    adb = db.as_async()

    def cannot_open(*_: object, **__: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    async def scenario() -> list[Any]:
        calls = _inserts(adb, range(3), "x")
        calls.insert(1, adb.run_write(lambda c: c.close()))
        return await _in_one_batch(
            db, calls, lambda: monkeypatch.setattr(_lane_state, "open_connection", cannot_open)
        )

    with caplog.at_level(logging.ERROR, logger="litegate"):
        results = asyncio.run(scenario())
        assert isinstance(results[1], litegate.Misuse)
        rest = results[:1] + results[2:]
        assert all(isinstance(r, litegate.Closed) for r in rest), rest
        assert all("unable to open database file" in str(r) for r in rest), rest
        assert db.closed
        with pytest.raises(litegate.Closed, match="write lane stopped"):
            db.execute("INSERT INTO t(id, v) VALUES (9, 'late')")
    stops = [r for r in caplog.records if "closing it" in r.getMessage()]
    assert len(stops) == 1, [r.getMessage() for r in caplog.records]
    db.close()


# ---- close() from inside one's own transaction ------------------------------------------------
def test_close_inside_own_transaction_is_refused_at_once(tmp_path: Path) -> None:
    db = _fresh(tmp_path, timeout=30)
    try:
        with db.transaction() as tx:
            tx.execute("INSERT INTO t(id, v) VALUES (1, 'kept')")
            with pytest.raises(litegate.Misuse, match="inside a transaction"):
                db.close()
            assert not db.closed
        with pytest.raises(litegate.Misuse, match="run_write"):
            db.run_write(lambda c: db.close())
        assert not db.closed
        assert db.query_value("SELECT v FROM t WHERE id = 1") == "kept"
    finally:
        db.close()
    assert db.closed


async def test_async_close_inside_own_transaction_is_refused_at_once(tmp_path: Path) -> None:
    adb = await litegate.connect_async(tmp_path / "a.db", timeout=30)
    try:
        await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO t(id, v) VALUES (1, 'kept')")
            with pytest.raises(litegate.Misuse, match="own transaction"):
                await asyncio.wait_for(adb.close(), 5)
            assert not adb.closed
        with pytest.raises(litegate.Misuse):
            await adb.run_write(lambda c: adb.as_sync().close())
        assert await adb.query_value("SELECT v FROM t WHERE id = 1") == "kept"
    finally:
        await adb.close()
    assert adb.closed


# ---- messages that say what is true -----------------------------------------------------------
async def test_write_timeout_names_the_async_transaction_holding_the_lane(tmp_path: Path) -> None:
    """It used to say "no transaction holds it now" while an async transaction held it."""
    db = _fresh(tmp_path)
    adb = db.as_async()
    try:
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO t(id, v) VALUES (1, 'held')")
            with pytest.raises(litegate.WriteTimeout, match="a transaction has held it for"):
                await asyncio.to_thread(
                    db.execute, "INSERT INTO t(id, v) VALUES (2, 'x')", (), timeout=0.2
                )
    finally:
        db.close()
