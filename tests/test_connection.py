from __future__ import annotations

import sqlite3

import pytest

from litegate._engine import _connection
from litegate._statements import split_script


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param("SELECT 1; SELECT 2;", ["SELECT 1;", " SELECT 2;"], id="two"),
        pytest.param(
            "INSERT INTO t VALUES ('a;b');", ["INSERT INTO t VALUES ('a;b');"], id="string"
        ),
        pytest.param("SELECT 1 -- no; end\n;", ["SELECT 1 -- no; end\n;"], id="line-comment"),
        pytest.param("SELECT 1; /* trailing */ ", ["SELECT 1;"], id="trailing-comment"),
        pytest.param("SELECT 1", ["SELECT 1"], id="no-semicolon"),
        pytest.param(";;  ;", [], id="empty"),
        pytest.param(
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; DELETE FROM u; END; SELECT 2;",
            [
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; DELETE FROM u; END;",
                " SELECT 2;",
            ],
            id="trigger",
        ),
    ],
)
def test_split_script(script: str, expected: list[str]) -> None:
    assert list(split_script(script)) == expected


def test_txn_guard_permits_only_the_permitting_thread() -> None:
    import sqlite3
    import threading

    from litegate._engine._connection import TxnGuard

    guard = TxnGuard()
    assert guard(sqlite3.SQLITE_TRANSACTION) == sqlite3.SQLITE_DENY
    assert guard(sqlite3.SQLITE_SAVEPOINT) == sqlite3.SQLITE_OK
    guard.permit()
    assert guard(sqlite3.SQLITE_TRANSACTION) == sqlite3.SQLITE_OK
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(guard(sqlite3.SQLITE_TRANSACTION)))
    t.start()
    t.join()
    assert seen == [sqlite3.SQLITE_DENY]  # another thread cannot ride on our permission
    guard.revoke()
    assert guard(sqlite3.SQLITE_TRANSACTION) == sqlite3.SQLITE_DENY


def test_reader_snapshot_does_not_revoke_the_writers_commit(tmp_path: object) -> None:
    """Regression: a snapshot on a reader reset the writer's guard, so a concurrent COMMIT on
    the writer could fail with 'not authorized' (seen as HTTP 500s in the store app e2e)."""
    import threading
    from pathlib import Path

    import litegate

    with litegate.connect(str(Path(str(tmp_path)) / "g.db")) as db:
        db.execute("CREATE TABLE t(x)")
        guard = db._engine._lane.guard  # type: ignore[attr-defined]
        guard.permit()  # as the writer does between BEGIN and COMMIT
        try:
            t = threading.Thread(
                target=lambda: db.snapshot().__enter__().__exit__(None, None, None)
            )
            t.start()
            t.join()
            assert guard._allowed == threading.get_ident()
        finally:
            guard.revoke()


def test_busy_is_told_by_sqlite_code_not_by_text() -> None:
    """An error the sqlite3 module raises itself has no code, and its text may quote a row's
    data ("Could not decode to UTF-8 column ... with text 'busy ...'"): never taken for
    another process's lock (a write taken for one is run again)."""
    assert not _connection.is_busy(sqlite3.OperationalError("text 'database is locked, busy'"))
    con = sqlite3.connect(":memory:")
    try:
        con.execute("SELECT CAST(x'ff' AS TEXT)").fetchall()
    except sqlite3.OperationalError as exc:
        assert not _connection.is_busy(exc)
    else:
        raise AssertionError("the decode error was expected")
    finally:
        con.close()
