"""Read-only locations, as a user file permissions apply to.

Each scenario runs in a forked child that, when the tests run as root (root ignores
permissions), first drops to ``nobody`` (:mod:`forked`); what the child imports lazily must be
imported here first (``nobody`` may not read the interpreter's own library).

What litegate promises for a database this process cannot write (``mode=ro``, a 0444 file, a
read-only directory or file system):

* it opens whenever plain sqlite3 can read it -- the journal mode is left alone (a
  rollback-journal file in a read-only directory is not switched to WAL), and a WAL file that
  plain sqlite3 cannot open either fails at open with the same error;
* reads work; every write fails with SQLite's own ``sqlite3.OperationalError`` ("attempt to
  write a readonly database"), in the sync and the async facade;
* it is said once, at open: a WARNING when nothing asked for it, INFO for ``mode=ro``;
* closing is quick: the final checkpoint, which can never succeed, is not retried (it was,
  for 2 s).
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401 - asyncio.to_thread imports it lazily
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from dbfiles import wal_snapshot
from forked import NOBODY, LogRecords, drop_privileges, reachable_dir, run_forked

import litegate

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns when a process with threads forks; the children run one scenario.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

ROWS = [1, 2, 3]
# The bug closed a read-only WAL database in 2.0 s (retried checkpoints); fixed, it takes
# milliseconds. The bound leaves room for a loaded machine and still catches the retries.
QUICK_CLOSE = 1.5
READONLY = "attempt to write a readonly database"


def _make(path: Path, *, wal: bool, keep_wal: bool = False) -> None:
    """A database with ``t(x)`` = ROWS, made as the test's own user. ``keep_wal``: the rows are
    only in its -wal (with a -shm), as a killed writer leaves them; else it is closed (no -wal,
    no -shm)."""

    def build(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t(x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(x,) for x in ROWS])

    if keep_wal:
        wal_snapshot(path, build)
        return
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        build(conn)
    finally:
        conn.close()


def _give(path: Path) -> None:
    """Make ``path`` the unprivileged child's own (when we are root and it is someone else)."""
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)


def _error(exc: BaseException) -> tuple[str, str, int | None]:
    return type(exc).__name__, str(exc), getattr(exc, "sqlite_errorcode", None)


def _use(target: str, uri: bool, readers: Any, facade: str) -> dict[str, Any]:
    """In the child: open ``target`` with litegate, read, try writes, close. Returns what
    happened (errors as ``(type, message, sqlite code)``)."""
    out: dict[str, Any] = {}
    with LogRecords() as logs:
        if facade == "async":
            asyncio.run(_use_async(target, uri, readers, out))
        else:
            try:
                db = litegate.connect(target, uri=uri, readers=readers)
            except Exception as exc:
                out["open_error"] = _error(exc)
                return out
            try:
                out["rows"] = [r[0] for r in db.query("SELECT x FROM t ORDER BY x")]
                out["mode"] = db.query_value("PRAGMA journal_mode")
                for what, write in (
                    ("execute", lambda: db.execute("INSERT INTO t VALUES (4)")),
                    ("run_write", lambda: db.run_write(lambda c: c.execute("DELETE FROM t"))),
                    ("transaction", lambda: _transaction(db)),
                ):
                    try:
                        write()
                        out[what] = None
                    except Exception as exc:
                        out[what] = _error(exc)
                out["rows_after"] = [r[0] for r in db.query("SELECT x FROM t ORDER BY x")]
            finally:
                start = time.monotonic()
                db.close()
                out["close_seconds"] = time.monotonic() - start
    out["logs"] = logs.records
    return out


def _transaction(db: litegate.Database) -> None:
    with db.transaction() as tx:
        assert tx.query_value("SELECT count(*) FROM t") == len(ROWS)
        tx.execute("UPDATE t SET x = x + 10")


async def _use_async(target: str, uri: bool, readers: Any, out: dict[str, Any]) -> None:
    try:
        adb = await litegate.connect_async(target, uri=uri, readers=readers)
    except Exception as exc:
        out["open_error"] = _error(exc)
        return
    try:
        out["rows"] = [r[0] for r in await adb.query("SELECT x FROM t ORDER BY x")]
        out["mode"] = await adb.query_value("PRAGMA journal_mode")
        try:
            await adb.execute("INSERT INTO t VALUES (4)")
            out["execute"] = None
        except Exception as exc:
            out["execute"] = _error(exc)
        try:
            async with adb.transaction() as tx:
                await tx.execute("UPDATE t SET x = x + 10")
            out["transaction"] = None
        except Exception as exc:
            out["transaction"] = _error(exc)
        out["rows_after"] = [r[0] for r in await adb.query("SELECT x FROM t ORDER BY x")]
    finally:
        start = time.monotonic()
        await adb.close()
        out["close_seconds"] = time.monotonic() - start


def _as_nobody(
    target: str, *, uri: bool = False, readers: Any = 2, facade: str = "sync"
) -> dict[str, Any]:
    def scenario() -> dict[str, Any]:
        drop_privileges()
        plain: Any
        try:  # what plain sqlite3 makes of it, for comparison
            conn = sqlite3.connect(target, uri=uri)
            try:
                plain = [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            plain = _error(exc)
        return {"plain": plain, **_use(target, uri, readers, facade)}

    return run_forked(scenario)


def _read_only_warnings(out: dict[str, Any], level: str) -> list[str]:
    return [m for lvl, m in out["logs"] if lvl == level and "is read-only" in m]


def _assert_read_only_use(out: dict[str, Any], mode: str) -> None:
    """Opened, read, every write refused by SQLite, nothing changed, closed quickly."""
    assert "open_error" not in out, out
    assert out.get("plain", ROWS) == ROWS
    assert out["rows"] == ROWS and out["rows_after"] == ROWS
    assert out["mode"] == mode
    for what in ("execute", "run_write", "transaction"):
        if what in out:
            kind, message, code = out[what]
            assert (kind, message) == ("OperationalError", READONLY), (what, out[what])
            assert code is not None and code & 0xFF == sqlite3.SQLITE_READONLY
    assert out["close_seconds"] < QUICK_CLOSE, out["close_seconds"]


@pytest.mark.parametrize("readers", [2, "per-thread", 0])
@pytest.mark.parametrize("how", ["path", "mode=ro"])
def test_rollback_journal_database_in_read_only_directory_opens_read_only(
    how: str, readers: Any
) -> None:
    """(Found: litegate insisted on switching it to WAL, so it could not be opened at all,
    not even with ``?mode=ro``, while plain sqlite3 read it.)"""
    with reachable_dir() as base:
        d = base / "ro"
        d.mkdir()
        db = d / "app.db"
        _make(db, wal=False)
        d.chmod(0o555)  # nobody can create a journal or a -wal here
        _give(db)  # the file itself is writable: only the directory is not
        target = f"file:{db}?mode=ro" if how == "mode=ro" else str(db)
        out = _as_nobody(target, uri=how == "mode=ro", readers=readers)
        assert sorted(os.listdir(d)) == ["app.db"]
    _assert_read_only_use(out, "delete")
    if how == "mode=ro":  # asked for: said at INFO, not warned about
        assert not _read_only_warnings(out, "WARNING"), out["logs"]
        assert len(_read_only_warnings(out, "INFO")) == 1, out["logs"]
    else:
        (warning,) = _read_only_warnings(out, "WARNING")
        assert "directory is not writable" in warning


@pytest.mark.parametrize("facade", ["sync", "async"])
@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback-journal"])
def test_a_0444_file_is_warned_about_once_at_open(wal: bool, facade: str) -> None:
    """(Found: a 0444 file opened with no word; the first write failed much later.)"""
    with reachable_dir() as base:
        d = base / "mine"
        d.mkdir()
        _give(d)  # the directory is writable: -wal and -shm can be made
        db = d / "app.db"
        _make(db, wal=wal)
        db.chmod(0o444)
        out = _as_nobody(str(db), facade=facade)
        conn = sqlite3.connect(db)  # nothing was changed
        try:
            assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == ROWS
        finally:
            conn.close()
    _assert_read_only_use(out, "wal" if wal else "delete")
    # Once, at open: not again for each refused write (three of them) or each reader.
    (warning,) = _read_only_warnings(out, "WARNING")
    assert "may not write the file" in warning and "attempt to write a readonly" in warning


@pytest.mark.parametrize("facade", ["sync", "async"])
def test_closing_a_read_only_wal_database_is_quick(facade: str) -> None:
    """(Found: close() retried the final checkpoint of a ``mode=ro`` WAL database for 2 s.)
    Runs as whoever runs the tests: ``mode=ro`` is read-only for root too."""
    with reachable_dir() as base:
        db = base / "app.db"
        _make(db, wal=True, keep_wal=True)  # a checkpoint would have to write the database
        out = run_forked(lambda: _use(f"file:{db}?mode=ro", True, 2, facade))
        assert os.path.getsize(f"{db}-wal") > 0  # still there: nothing was checkpointed
    _assert_read_only_use(out, "wal")
    assert not _read_only_warnings(out, "WARNING")


@pytest.mark.parametrize("query", ["mode=ro", "immutable=1"])
def test_a_database_opened_read_only_on_purpose_is_used_as_it_is(
    tmp_path: Path, query: str
) -> None:
    """``mode=ro`` or ``immutable=1`` on a rollback-journal file, as whoever runs the tests
    (root too): left as it is and said at INFO only. (Found: with ``mode=ro`` the switch to
    WAL failed the open; with ``immutable=1`` a warning blamed WAL mode, not read-only use.)"""
    db = tmp_path / "app.db"
    _make(db, wal=False)
    before = db.read_bytes()
    out = _use(f"file:{db}?{query}", True, 2, "sync")
    _assert_read_only_use(out, "delete")
    assert not _read_only_warnings(out, "WARNING")
    (info,) = _read_only_warnings(out, "INFO")
    assert f"opened with {query}" in info
    assert db.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["app.db"]


def test_wal_database_in_read_only_directory_fails_at_open_like_plain_sqlite3() -> None:
    """With no -shm and no way to create one, plain sqlite3 cannot read a WAL database either:
    the same error at open, and the directory is left as it was."""
    with reachable_dir() as base:
        d = base / "ro"
        d.mkdir()
        db = d / "app.db"
        _make(db, wal=True)
        before = db.read_bytes()
        out = _as_nobody(str(db))
        assert sorted(os.listdir(d)) == ["app.db"] and db.read_bytes() == before
    assert out["open_error"] == out["plain"], out
    assert out["open_error"][0] == "OperationalError"


def test_writable_wal_files_in_read_only_directory_are_not_read_only() -> None:
    """No false alarm: a WAL database whose -wal and -shm exist and are writable works in a
    read-only directory (nothing has to be created there)."""
    with reachable_dir() as base:
        d = base / "ro"
        d.mkdir()
        db = d / "app.db"
        _make(db, wal=True, keep_wal=True)
        for name in os.listdir(d):
            _give(d / name)

        def scenario() -> tuple[list[tuple[str, str]], list[int], float]:
            drop_privileges()
            with LogRecords() as logs:
                db_ = litegate.connect(db)
                try:
                    db_.execute("INSERT INTO t VALUES (4)")
                    rows = [r[0] for r in db_.query("SELECT x FROM t ORDER BY x")]
                finally:
                    start = time.monotonic()
                    db_.close()
            return logs.records, rows, time.monotonic() - start

        records, rows, close_seconds = run_forked(scenario)
    assert rows == [*ROWS, 4]
    assert not [m for _, m in records if "read-only" in m], records
    assert close_seconds < QUICK_CLOSE
