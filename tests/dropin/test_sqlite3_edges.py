"""``litegate.sqlite3`` at its edges: each test is a case a review reproduced against the first
version (a lane left held, a write silently dropped, an error where sqlite3 has none)."""

from __future__ import annotations

import gc
import logging
import sqlite3 as std
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

import litegate.sqlite3 as sqlite3
from helpers import wait_for
from litegate._engine import live
from litegate._engine._lane_writer import LaneWriter


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "edges.db")


def _other_thread_writes(con: sqlite3.Connection) -> str:
    """A write from another thread (bounded by the connection's timeout)."""
    out: list[str] = []

    def write() -> None:
        try:
            con.execute("INSERT INTO t VALUES ('other')")
            con.commit()
            out.append("ok")
        except std.Error as exc:
            out.append(f"{type(exc).__name__}: {exc}")

    t = threading.Thread(target=write)
    t.start()
    t.join(30)
    return out[0] if out else "hung"


def test_executescript_opens_no_implicit_transaction(path: str) -> None:
    con = sqlite3.connect(path, timeout=1)
    con.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    assert not con.in_transaction
    assert _other_thread_writes(con) == "ok"
    con.close()


def test_a_failed_savepoint_leaves_no_transaction(path: str) -> None:
    con = sqlite3.connect(path, timeout=1, isolation_level=None)
    con.execute("CREATE TABLE t(x)")
    con.set_authorizer(lambda action, *_: std.SQLITE_DENY if action == std.SQLITE_SAVEPOINT else 0)
    with pytest.raises(std.DatabaseError):
        con.execute("SAVEPOINT s")
    con.set_authorizer(None)
    assert not con.in_transaction
    assert _other_thread_writes(con) == "ok"
    con.close()


def test_commit_ends_an_implicit_transaction_after_autocommit_changed(path: str) -> None:
    con = sqlite3.connect(path, timeout=1)
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES (1)")  # legacy: this thread's implicit transaction
    switched = threading.Thread(target=lambda: setattr(con, "autocommit", True))
    switched.start()
    switched.join(10)
    con.commit()  # (ends it, though the mode is autocommit now)
    assert not con.in_transaction
    assert _other_thread_writes(con) == "ok"
    assert con.execute("SELECT count(*) FROM t").fetchone() == (2,)
    con.close()


def test_close_from_another_thread_frees_the_lane_at_the_owners_next_call(path: str) -> None:
    keep = sqlite3.connect(path, timeout=1)  # (keeps the engine open)
    keep.execute("CREATE TABLE t(x)")
    con = sqlite3.connect(path, timeout=1)
    con.execute("INSERT INTO t VALUES (1)")  # this thread's transaction, left open
    closer = threading.Thread(target=con.close)
    closer.start()
    closer.join(10)
    with pytest.raises(std.ProgrammingError, match="closed"):
        con.commit()  # (refused: closed; its transaction rolled back on the way)
    assert _other_thread_writes(keep) == "ok"
    assert keep.execute("SELECT x FROM t").fetchall() == [("other",)]
    keep.close()


def test_a_read_only_thread_that_dies_gives_its_reader_back(path: str) -> None:
    con = sqlite3.connect(path, timeout=1, litegate={"readers": 1})
    con.execute("CREATE TABLE t(x)")
    con.commit()

    def reads_and_dies() -> None:
        con.read_only = True
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM t").fetchone()  # (never ends its transaction)

    t = threading.Thread(target=reads_and_dies)
    t.start()
    t.join(10)
    del t
    gc.collect()
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)  # (the one reader)
    con.close()


@pytest.mark.parametrize("where", [":memory:", "file"])
def test_a_read_only_transaction_refuses_writes(path: str, where: str) -> None:
    con = sqlite3.connect(path if where == "file" else ":memory:", isolation_level=None)
    con.execute("CREATE TABLE t(x)")
    con.read_only = True
    con.execute("BEGIN")
    with pytest.raises(std.OperationalError, match="readonly"):
        con.execute("INSERT INTO t VALUES (1)")
    con.execute("COMMIT")
    con.read_only = False
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    con.close()


def test_a_raising_trace_callback_is_ignored_as_sqlite3_does(path: str) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(x)")
    con.set_trace_callback(lambda sql: 1 / 0)
    with con:
        con.execute("INSERT INTO t VALUES (1)")
    assert not con.in_transaction
    con.set_trace_callback(None)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)
    con.close()


def test_a_failed_write_logs_nothing(path: str, caplog: pytest.LogCaptureFixture) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("CREATE TABLE t(x UNIQUE)")
    con.execute("INSERT INTO t VALUES (1)")
    with caplog.at_level(logging.WARNING, logger="litegate"):
        for _ in range(3):
            with pytest.raises(std.IntegrityError):
                con.execute("INSERT INTO t VALUES (1)")
    assert caplog.records == []
    con.close()


def test_foreign_keys_switch_under_concurrent_writes(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None, litegate={"pragmas": {"foreign_keys": 1}})
    con.execute("CREATE TABLE t(x)")
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            con.execute("INSERT INTO t VALUES (1)")

    t = threading.Thread(target=writer)
    t.start()
    try:
        for i in range(40):  # (each must act: the lane may come with a group still open)
            con.execute(f"PRAGMA foreign_keys = {i % 2}")
            assert con.execute("PRAGMA foreign_keys").fetchone() == (i % 2,)
    finally:
        stop.set()
        t.join(10)
    con.close()


def test_registering_a_function_again_replaces_it(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("CREATE TABLE t(x)")
    for n in (1, 2, 3):
        con.create_function("f", 0, lambda n=n: n)
    assert con.execute("SELECT f()").fetchone() == (3,)  # (a reader)
    con.execute("BEGIN")
    assert con.execute("SELECT f()").fetchone() == (3,)  # (the writer)
    con.execute("COMMIT")
    con.close()


def test_transaction_control_text_is_checked(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(std.OperationalError):
        con.execute("BEGIN nonsense")
    with pytest.raises(std.ProgrammingError):
        con.execute("BEGIN; DROP TABLE x")
    assert not con.in_transaction
    con.close()


def test_autocommit_false_release_keeps_the_transaction(path: str) -> None:
    con = sqlite3.connect(path, autocommit=False)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.execute("SAVEPOINT a")
    con.execute("INSERT INTO t VALUES (1)")
    con.execute("RELEASE a")  # (with autocommit=False a transaction is always open)
    con.rollback()
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    con.close()


def test_a_function_removed_by_another_method_can_come_back(path: str) -> None:
    class Count:
        def __init__(self) -> None:
            self.n = 0

        def step(self, _: object) -> None:
            self.n += 1

        def finalize(self) -> int:
            return self.n

    con = sqlite3.connect(path)
    con.create_aggregate("cnt", 1, Count)
    con.create_function("cnt", 1, None)  # (the same SQLite slot: removed)
    con.create_aggregate("cnt", 1, Count)
    assert con.execute("SELECT cnt(x) FROM (SELECT 1 AS x)").fetchone() == (1,)
    con.close()


def test_a_limit_on_one_connection_does_not_reach_transaction_control(
    path: str, tmp_path: Path
) -> None:
    other = sqlite3.connect(str(tmp_path / "other.db"))
    other.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 1)  # (its own statements only)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    con.execute("SAVEPOINT s")
    con.execute("COMMIT")
    other.close()
    con.close()


def test_vacuum_finds_its_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    con = sqlite3.connect("rel.db")
    con.execute("CREATE TABLE t(x)")
    con.commit()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    con.execute("VACUUM")
    assert not (tmp_path / "elsewhere" / "rel.db").exists()
    con.close()


@pytest.mark.parametrize("text", ["PRAGMA foreign_keys = 1 -- on", "PRAGMA foreign_keys(1)"])
def test_pragma_setting_forms(path: str, text: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(text)
    assert con.execute("PRAGMA foreign_keys").fetchone() == (1,)
    con.close()


def test_a_with_clauses_insert_sets_the_threads_last_row_id_as_sqlite3_does(path: str) -> None:
    """``WITH … INSERT`` opens no implicit transaction (as in the standard module) and sets
    ``lastrowid``; a ``WITH … UPDATE`` or an insert of nothing leaves the thread's as it was,
    and another thread's insert does not change it."""
    con = sqlite3.connect(path)
    std_con = std.connect(":memory:")
    try:
        for c in (con, std_con):
            c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
            c.execute("INSERT INTO t(v) VALUES (1)")
            c.commit()
            cur = c.execute("WITH x AS (SELECT 5) INSERT INTO t(v) SELECT * FROM x")
            assert (cur.lastrowid, c.in_transaction) == (2, False)

        def insert() -> None:
            con.execute("INSERT INTO t(v) VALUES (3)")
            con.commit()

        other = threading.Thread(target=insert)
        other.start()
        other.join(10)
        cur = con.execute("WITH x AS (SELECT 5 WHERE 0) INSERT INTO t(v) SELECT * FROM x")
        assert cur.lastrowid == 2  # (inserted nothing; the other thread's row 3 is not ours)
        cur = con.execute("WITH x AS (SELECT 1) UPDATE t SET v = 9 WHERE id IN x")
        assert cur.lastrowid == 2
        assert con.execute("SELECT count(*) FROM t").fetchone() == (3,)
    finally:
        con.close()
        std_con.close()


def test_a_dropped_connection_lets_go_of_the_file_before_it_is_opened_again(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a connection dropped without close() (``__del__``) closed its engine later,
    on the writer thread; a test suite that then deleted the file and connected again found
    its new table gone ("no such table") or "locking protocol": the old engine's late close
    checkpointed into and removed the new file's WAL. The standard module closes a dropped
    connection at once; connect() now waits for the old engine first. (The writer's shutdown
    is slowed down here as a loaded machine slows it.)"""
    shutdown = LaneWriter._shutdown

    def slow_shutdown(self: LaneWriter) -> None:
        time.sleep(0.1)
        shutdown(self)

    monkeypatch.setattr(LaneWriter, "_shutdown", slow_shutdown)
    for i in range(4):
        con = sqlite3.connect(path, timeout=0)
        con.execute("CREATE TABLE t(x)")
        con.execute("INSERT INTO t VALUES (?)", (i,))
        con.commit()
        con.execute("UPDATE t SET x = -1")  # (left open: dropped with the connection)
        with warnings.catch_warnings():  # (3.13+: "unclosed database", as sqlite3 warns)
            warnings.simplefilter("ignore", ResourceWarning)
            del con
            gc.collect()
        Path(path).unlink()
        again = sqlite3.connect(path, timeout=0)
        try:
            again.execute("CREATE TABLE t(x)")
            again.execute("INSERT INTO t VALUES (?)", (i,))
            again.commit()
            time.sleep(0.2)  # (the old engine's late close, if it was late, is over)
            assert again.execute("SELECT x FROM t").fetchall() == [(i,)]
        finally:
            again.close()
        check = std.connect(path)  # (what is in the file once every connection closed)
        try:
            assert check.execute("SELECT x FROM t").fetchall() == [(i,)]
        finally:
            check.close()
        Path(path).unlink()


@pytest.mark.skipif(sys.version_info < (3, 13), reason="sqlite3 warns of unclosed ones since 3.13")
def test_a_dropped_connection_lets_go_even_when_its_warning_is_an_error(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (3.13, warnings as errors, as this suite runs): the "unclosed database"
    warning raised out of ``__del__`` before the engine was let go of; it stayed open with the
    dropped connection's transaction, and the thread's next connection to the file was refused
    every write (the thread still held the lane)."""
    seen: list[type[BaseException]] = []  # (only the type: its traceback holds the connection)
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.execute("INSERT INTO t VALUES (1)")  # (left open: dropped with the connection)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del con
        gc.collect()
    assert seen == [ResourceWarning]
    wait_for(lambda: not [e for e in live() if e.open_in_this_process], what="its engine to close")
    again = sqlite3.connect(path)
    try:
        again.execute("INSERT INTO t VALUES (2)")
        again.commit()
        assert again.execute("SELECT x FROM t").fetchall() == [(2,)]
    finally:
        again.close()
