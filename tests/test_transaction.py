"""Interactive transactions, savepoints and snapshots."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from typing import Any

import pytest

import litegate
from helpers import Outcome, lane_held, wait_for, write_elsewhere


def _count(db: litegate.Database) -> int:
    return int(db.query_value("SELECT count(*) FROM items"))


def test_commit_and_read_own_writes(db: litegate.Database) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO items(name, qty) VALUES ('a', 1)")
        tx.executemany("INSERT INTO items(name, qty) VALUES (?, ?)", [("b", 2), ("c", 3)])
        assert tx.query_value("SELECT sum(qty) FROM items") == 6
        assert tx.query_one("SELECT name FROM items WHERE qty = 2")["name"] == "b"
        assert [r[0] for r in tx.iterate("SELECT name FROM items ORDER BY name")] == ["a", "b", "c"]
    assert _count(db) == 3
    assert db.stats().transactions == 1


def test_exception_rolls_back_and_frees_the_lane(db: litegate.Database) -> None:
    with pytest.raises(ZeroDivisionError):
        with db.transaction() as tx:
            tx.execute("INSERT INTO items(name) VALUES ('gone')")
            1 / 0  # noqa: B018
    assert _count(db) == 0
    db.execute("INSERT INTO items(name) VALUES ('next')", timeout=1)
    assert _count(db) == 1


def test_nested_savepoints(db: litegate.Database) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO items(name) VALUES ('outer')")
        with tx.savepoint():
            tx.execute("INSERT INTO items(name) VALUES ('kept')")
            with pytest.raises(sqlite3.IntegrityError):
                with tx.savepoint():
                    tx.execute("INSERT INTO items(name) VALUES ('inner')")
                    tx.execute("INSERT INTO items(name) VALUES ('inner')")
            assert tx.query_value("SELECT count(*) FROM items WHERE name='inner'") == 0
        with pytest.raises(KeyError):
            with tx.savepoint():
                tx.execute("INSERT INTO items(name) VALUES ('dropped')")
                raise KeyError("x")
    assert [r[0] for r in db.query("SELECT name FROM items ORDER BY id")] == ["outer", "kept"]


def test_executescript_inside_a_transaction_does_not_commit_early(db: litegate.Database) -> None:
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx.executescript(
                "INSERT INTO items(name) VALUES ('s1'); INSERT INTO items(name) VALUES ('s2');"
            )
            assert tx.query_value("SELECT count(*) FROM items") == 2
            raise RuntimeError
    assert _count(db) == 0


def test_read_then_write_transaction_never_hits_busy_snapshot(db: litegate.Database) -> None:
    db.execute("INSERT INTO accounts(id, balance) VALUES (1, 100)")
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(50):
                with db.transaction() as tx:
                    bal = tx.query_value("SELECT balance FROM accounts WHERE id = 1")
                    tx.execute("UPDATE accounts SET balance = ? WHERE id = 1", (bal + 1,))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.query_value("SELECT balance FROM accounts WHERE id = 1") == 100 + 8 * 50


def test_db_write_inside_own_transaction_is_misuse_not_deadlock(db: litegate.Database) -> None:
    with db.transaction() as tx:
        with pytest.raises(litegate.Misuse, match="deadlock"):
            db.execute("INSERT INTO items(name) VALUES ('x')")
        with pytest.raises(litegate.Misuse):
            with db.transaction():
                pass
        tx.execute("INSERT INTO items(name) VALUES ('y')")
    assert [r[0] for r in db.query("SELECT name FROM items")] == ["y"]


def test_reads_inside_a_transaction_in_lane_mode_run_inline(db_path: str) -> None:
    with litegate.connect(db_path, readers=0) as db:
        db.execute("CREATE TABLE t(x)")
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
            # readers=0: the database's own read path shares the writer connection.
            assert db.query_value("SELECT count(*) FROM t", timeout=1) == 1
            assert [r[0] for r in db.iterate("SELECT x FROM t")] == [1]
        assert db.query_value("SELECT count(*) FROM t") == 1


def test_user_commit_inside_transaction_is_refused(db: litegate.Database) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO items(name) VALUES ('a')")
        with pytest.raises(litegate.Refused, match="refused COMMIT"):
            tx.execute("COMMIT")
        tx.execute("INSERT INTO items(name) VALUES ('b')")
    assert _count(db) == 2


def test_transaction_rolled_back_by_sqlite_is_reported(db: litegate.Database) -> None:
    slow = (
        "INSERT INTO items(name) SELECT 'z' || x FROM (WITH RECURSIVE c(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c LIMIT 100000000)"
    )
    with pytest.raises(litegate.RolledBack, match="did not commit"):
        with db.transaction() as tx:
            tx.execute("INSERT INTO items(name) VALUES ('before')")
            with pytest.raises(litegate.QueryTimeout):
                tx.execute(slow, time_limit=0.05)
            with pytest.raises(litegate.RolledBack, match="rolled back"):
                tx.execute("INSERT INTO items(name) VALUES ('after')")
    assert _count(db) == 0
    db.execute("INSERT INTO items(name) VALUES ('fine')", timeout=1)


def test_transaction_waits_for_the_lane_with_a_timeout(db: litegate.Database) -> None:
    with lane_held(db):
        with pytest.raises(litegate.WriteTimeout, match="transaction did not get the write lane"):
            with db.transaction(timeout=0.1):
                pass  # pragma: no cover
    with db.transaction(timeout=1) as tx:
        tx.execute("INSERT INTO items(name) VALUES ('ok')")
    assert _count(db) == 1


def test_long_hold_is_reported(db_path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="litegate")
    with litegate.connect(db_path, hold_warn=0.05) as db:
        release = threading.Event()
        with db.transaction():
            # another thread's write waits behind us; we stay until the report is out
            out = Outcome(lambda: db.execute("CREATE TABLE t(x)"))
            wait_for(lambda: db.stats().long_holds == 1, what="the long-hold report")
            release.set()
        assert out.join().error is None
        assert db.stats().lane_hold_max_ms >= 50
    assert any("held the write lane" in r.getMessage() for r in caplog.records)


def test_transaction_object_outside_its_block(db: litegate.Database) -> None:
    tx = db.transaction()
    with pytest.raises(litegate.Misuse):
        tx.execute("SELECT 1")
    with tx:
        pass
    with pytest.raises(litegate.Misuse):
        tx.query("SELECT 1")
    with pytest.raises(litegate.Misuse, match="only once"):
        tx.__enter__()


def test_snapshot_sees_one_state(db: litegate.Database) -> None:
    db.execute("INSERT INTO items(name, qty) VALUES ('a', 1)")
    if db.options.readers == 0:
        # with readers=0 a snapshot holds the lane: writers wait until it ends
        with db.snapshot() as snap:
            assert snap.query_value("SELECT sum(qty) FROM items") == 1
            with pytest.raises(litegate.Misuse):  # same thread: refused, not a deadlock
                db.execute("INSERT INTO items(name, qty) VALUES ('b', 2)")
            out = Outcome(
                lambda: db.execute("INSERT INTO items(name, qty) VALUES ('b', 2)", timeout=0.1)
            )
            assert isinstance(out.join().error, litegate.WriteTimeout)
        return
    with db.snapshot() as snap:
        assert snap.query_value("SELECT sum(qty) FROM items") == 1
        Outcome(lambda: db.execute("INSERT INTO items(name, qty) VALUES ('b', 2)")).join()
        assert db.query_value("SELECT sum(qty) FROM items") in (1, 3)
        assert snap.query_value("SELECT sum(qty) FROM items") == 1
        assert [r[0] for r in snap.iterate("SELECT name FROM items")] == ["a"]
    assert db.query_value("SELECT sum(qty) FROM items") == 3
    with pytest.raises(litegate.Misuse):
        snap.query("SELECT 1")


@pytest.mark.parametrize("readers", [2], ids=["readers=2"])
def test_snapshot_cannot_write(db: litegate.Database, readers: Any) -> None:
    with db.snapshot() as snap:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            snap.query("INSERT INTO items(name) VALUES ('x')")
    assert _count(db) == 0


def test_run_that_swallows_a_rollback_lets_nothing_autocommit(db: litegate.Database) -> None:
    """Regression: a tx.run function that caught the error of an INSERT OR ROLLBACK (SQLite had
    rolled the transaction back) went unnoticed: later statements autocommitted one by one."""

    def swallow(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("INSERT OR ROLLBACK INTO items(name) VALUES ('dup')")
        except sqlite3.IntegrityError:
            pass

    db.execute("INSERT INTO items(name) VALUES ('dup')")
    with pytest.raises(litegate.RolledBack, match="did not commit"):
        with db.transaction() as tx:
            tx.execute("INSERT INTO items(name) VALUES ('before')")
            with pytest.raises(litegate.RolledBack):
                tx.run(swallow)
            with pytest.raises(litegate.RolledBack):
                tx.execute("INSERT INTO items(name) VALUES ('after')")
    assert [r[0] for r in db.query("SELECT name FROM items")] == ["dup"]


def test_a_transaction_may_be_entered_again_after_a_timeout(db: litegate.Database) -> None:
    with lane_held(db):
        tx = db.transaction(timeout=0.05)
        with pytest.raises(litegate.WriteTimeout):
            tx.__enter__()
    with tx:
        tx.execute("INSERT INTO items(name) VALUES ('retried')")
    assert db.query_value("SELECT name FROM items") == "retried"
    with pytest.raises(litegate.Misuse, match="only once"):
        tx.__enter__()


def test_iterating_after_the_block_never_reads_the_writer_connection(
    db: litegate.Database,
) -> None:
    """Regression: tx.iterate's generator kept reading the writer connection after the block
    had given the lane back."""
    db.executemany("INSERT INTO items(name) VALUES (?)", [(f"n{i}",) for i in range(10)])
    with db.transaction() as tx:
        rows = tx.iterate("SELECT name FROM items ORDER BY name", arraysize=1)
        assert next(rows)[0] == "n0"
    db.execute("INSERT INTO items(name) VALUES ('later')")
    with pytest.raises(litegate.Misuse, match="not active"):
        next(rows)


@pytest.mark.parametrize("leave", ["normally", "by-exception"])
async def test_a_savepoint_left_after_sqlite_rolled_back_the_transaction_is_quiet(
    db: litegate.Database, leave: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (found by tests/faults/test_model.py): after an INSERT OR ROLLBACK conflict
    inside an async savepoint, leaving the savepoint raised RolledBack at the savepoint (sync:
    quiet, the transaction's end raises), or logged it as a failed savepoint rollback."""
    db.execute("INSERT INTO items(name) VALUES ('dup')")
    conflict = "INSERT OR ROLLBACK INTO items(name) VALUES ('dup')"
    with pytest.raises(litegate.RolledBack, match="did not commit"):
        with db.transaction() as tx:
            with contextlib.suppress(KeyError), tx.savepoint():
                with pytest.raises(sqlite3.IntegrityError):
                    tx.execute(conflict)
                if leave == "by-exception":
                    raise KeyError
    with pytest.raises(litegate.RolledBack):
        async with db.as_async().transaction() as atx:
            with contextlib.suppress(KeyError):
                async with atx.savepoint():
                    with pytest.raises(sqlite3.IntegrityError):
                        await atx.execute(conflict)
                    if leave == "by-exception":
                        raise KeyError
            reached = True  # the savepoint's end did not raise
    assert reached
    assert [r[0] for r in db.query("SELECT name FROM items")] == ["dup"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("block", ["snapshot", "transaction"])
def test_iteration_left_open_past_its_block_no_longer_pins_its_snapshot(
    db_path: str, readers: Any, block: str
) -> None:
    """Regression: an iterator of snap.iterate / tx.iterate still open when its block ended
    kept its cursor, whose statement kept its snapshot past the block's end: the next read on
    that reader missed later writes, and on the writer, once another process had written,
    every BEGIN IMMEDIATE failed (SQLITE_BUSY_SNAPSHOT) until Busy."""
    with litegate.connect(db_path, readers=readers, busy_timeout=1.0) as db:
        db.execute("CREATE TABLE t(x)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        with db.snapshot() if block == "snapshot" else db.transaction() as scope:
            rows = scope.iterate("SELECT x FROM t ORDER BY x", arraysize=1)
            assert next(rows)[0] == 0
        write_elsewhere(db_path, "INSERT INTO t VALUES (100)")
        assert db.query_value("SELECT count(*) FROM t") == 101
        db.execute("INSERT INTO t VALUES (101)")
        assert db.query_value("SELECT count(*) FROM t") == 102
        with pytest.raises(litegate.Misuse, match="not active"):
            next(rows)
