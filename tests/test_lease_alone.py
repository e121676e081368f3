"""``WriteLease.run_alone``: a write of one statement on a held lane, committed by SQLite's
autocommit where a COMMIT costs no fsync (``litegate._engine._lane.WriteLane.run_alone``),
else begin/run/commit. What must hold: it commits (and only what it wrote), a statement that
fails leaves what SQLite's autocommit leaves (a row refused by a constraint: nothing), another
process's lock is waited for, a group the lane was handed on with is committed first, and the
lane is free afterwards."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, Literal

import pytest

import litegate
from helpers import wait_for
from litegate._config import Options
from litegate._engine import Engine, open_engine
from litegate._engine._commit_gate import available


def _insert(conn: sqlite3.Connection, x: Any) -> int | None:
    return conn.execute("INSERT INTO t(x) VALUES (?)", (x,)).lastrowid


def _count(engine: Engine) -> int:
    rows = engine.query("SELECT count(*) FROM t", (), 5, None, True)
    return int(rows[0])


def _open(db_path: str, synchronous: Literal["NORMAL", "FULL"], **opts: Any) -> Engine:
    engine = open_engine(Options(db_path, synchronous=synchronous, row_factory=None, **opts))
    engine.write(lambda c: c.execute("CREATE TABLE t(x UNIQUE)"), (), 5, None)
    return engine


def _alone(engine: Engine, fn: Any, *args: Any) -> Any:
    lease = engine.lease(5)
    try:
        return lease.run_alone(fn, args, None, None)
    finally:
        lease.release()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_it_commits_and_a_failure_leaves_nothing(
    db_path: str, synchronous: Literal["NORMAL", "FULL"]
) -> None:
    engine = _open(db_path, synchronous)
    try:
        assert _alone(engine, _insert, 1) == 1
        with pytest.raises(sqlite3.IntegrityError):
            _alone(engine, _insert, 1)
        assert _alone(engine, _insert, 2) == 2
        other = sqlite3.connect(db_path)  # committed: another connection sees it
        try:
            assert other.execute("SELECT group_concat(x) FROM t").fetchone()[0] == "1,2"
        finally:
            other.close()
        assert engine.stats().transactions >= 2
    finally:
        engine.close()


def test_it_refuses_inside_a_transaction(db_path: str) -> None:
    engine = _open(db_path, "NORMAL")
    try:
        lease = engine.lease(5)
        try:
            lease.begin()
            with pytest.raises(litegate.Misuse, match="outside a transaction"):
                lease.run_alone(_insert, (1,), None, None)
            lease.rollback()
        finally:
            lease.release()
        assert _alone(engine, _insert, 3) is not None
        assert _count(engine) == 1
    finally:
        engine.close()


def test_a_statement_left_unfinished_past_the_call_commits_nothing(db_path: str) -> None:
    """``fn`` must run its statement to the end (the drop-in's does). One whose cursor is
    kept open past the call would commit as it is reset, later, outside the lane's control:
    the commit gate, shut by then, turns that into a rollback."""
    engine = _open(db_path, "NORMAL")
    if not available():
        raise AssertionError("no commit gate in this interpreter (CPython: always one)")
    try:

        def unfinished(conn: sqlite3.Connection) -> sqlite3.Cursor:
            cur = conn.execute("INSERT INTO t(x) VALUES (1), (2) RETURNING x")
            cur.fetchone()
            return cur  # (kept open past the call)

        cur = _alone(engine, unfinished)
        del cur  # (reset now: its commit is refused)
        assert _count(engine) == 0
        assert _alone(engine, _insert, 9) is not None
        assert _count(engine) == 1
    finally:
        engine.close()


def test_another_process_holding_the_lock_is_waited_for(db_path: str) -> None:
    """SQLite's autocommit statement finds the write lock taken (the writer's own busy
    timeout is 0): nothing ran, so it is run again as a transaction, whose BEGIN waits."""
    engine = _open(db_path, "NORMAL", busy_timeout=5)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t(x) VALUES (0)")
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(_alone(engine, _insert, 1)))
        t.start()
        wait_for(lambda: engine.stats().busy_retries > 0, what="busy retries")
        other.execute("COMMIT")
        t.join(10)
        assert result == [2]
        assert _count(engine) == 2
    finally:
        other.close()
        engine.close()


def test_a_group_the_lane_was_handed_on_with_commits_first(db_path: str) -> None:
    """A transaction ends while a one-statement write waits for the lane: at FULL the lane is
    handed on with the group open, and the write joins it (a COMMIT costs an fsync there:
    run_alone is begin/run/commit). Both rows commit, and the transaction's caller is
    answered. (Where a COMMIT is cheap, a sync holder commits before it hands the lane on.)"""
    engine = _open(db_path, "FULL")
    try:
        lease = engine.lease(5)
        lease.begin()
        lease.run(_insert, (1,), None, None)
        done: list[Any] = []
        t = threading.Thread(target=lambda: done.append(_alone(engine, _insert, 2)))
        t.start()
        wait_for(lambda: engine.stats().queue_depth > 0, what="the write to wait")
        lease.commit()
        lease.release()
        t.join(10)
        assert done == [2]
        other = sqlite3.connect(db_path)
        try:
            assert other.execute("SELECT group_concat(x) FROM t").fetchone()[0] == "1,2"
        finally:
            other.close()
    finally:
        engine.close()


def test_busy_after_a_change_is_not_run_again(db_path: str) -> None:
    """The fallback on another process's lock re-runs ``fn`` only if nothing ran: a function
    breaking the one-statement rule, whose second statement meets the lock after its first
    committed, gets the error rather than a second run (which would write 'a' twice)."""
    engine = _open(db_path, "NORMAL", busy_timeout=5)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:

        def two(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t(x) VALUES ('a')")
            other.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t(x) VALUES ('b')")

        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _alone(engine, two)
        other.execute("ROLLBACK")
        assert engine.query("SELECT x FROM t", (), 5, None, False) == [("a",)]
    finally:
        other.close()
        engine.close()
