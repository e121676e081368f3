"""Hostile PRAGMAs and ATTACH through every entry point (issue 10, item 5).

For each entry point that runs user SQL -- sync and async, statements and callbacks, the writer
and the readers -- every state-changing PRAGMA and ATTACH/DETACH is refused with
:class:`litegate.Refused` naming it, and every read-only form is answered as SQLite answers it.
After each statement the engine must be whole: it serves a known query and a write, the
writer is still in WAL mode, unlocked and writable, every reader of the pool is still there,
read-only and unattached, and another connection -- another process, at the end -- can still
write (no exclusive lock left behind). ``connect(pragmas=...)`` refuses the settings the engine
owns up front and applies the tuning ones to every connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import pytest

import litegate
from helpers import write_elsewhere

Entry = Callable[[litegate.Database, str], Any]


# ---- the entry points: each returns the statement's rows (None: it cannot return rows) ----
def _execute(db: litegate.Database, sql: str) -> Any:
    return db.execute(sql).rows


def _executescript(db: litegate.Database, sql: str) -> Any:
    db.executescript(f"INSERT INTO t VALUES (-1); {sql};")  # all or nothing
    return None


def _tx_execute(db: litegate.Database, sql: str) -> Any:
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (-1)")  # rolled back with the block if sql fails
        return tx.execute(sql).rows


def _snapshot_query(db: litegate.Database, sql: str) -> Any:
    with db.snapshot() as snap:
        return snap.query(sql)


async def _atx_execute(adb: litegate.AsyncDatabase, sql: str) -> Any:
    async with adb.transaction() as tx:
        await tx.execute("INSERT INTO t VALUES (-1)")
        return (await tx.execute(sql)).rows


async def _aiterate(adb: litegate.AsyncDatabase, sql: str) -> Any:
    async with aclosing(adb.iterate(sql)) as rows:
        return [row async for row in rows]


async def _aexecute(adb: litegate.AsyncDatabase, sql: str) -> Any:
    return (await adb.execute(sql)).rows


def _on_loop(fn: Callable[[litegate.AsyncDatabase, str], Any]) -> Entry:
    """An async entry point, called from this thread on a fresh loop (same engine)."""
    return lambda db, sql: asyncio.run(fn(db.as_async(), sql))


def _fetch(sql: str) -> Callable[[sqlite3.Connection], list[Any]]:
    return lambda conn: [tuple(row) for row in conn.execute(sql)]


# name -> (entry point, runs on the writer even with a read pool)
ENTRIES: dict[str, tuple[Entry, bool]] = {
    "db.execute": (_execute, True),
    "db.executescript": (_executescript, True),
    "db.run_write": (lambda db, sql: db.run_write(_fetch(sql)), True),
    "tx.execute": (_tx_execute, True),
    "db.query": (lambda db, sql: db.query(sql), False),
    "db.run_read": (lambda db, sql: db.run_read(_fetch(sql)), False),
    "db.iterate": (lambda db, sql: list(db.iterate(sql)), False),
    "snapshot.query": (_snapshot_query, False),
    "adb.execute": (_on_loop(_aexecute), True),
    "adb.run_write": (_on_loop(lambda adb, sql: adb.run_write(_fetch(sql))), True),
    "atx.execute": (_on_loop(_atx_execute), True),
    "adb.query": (_on_loop(lambda adb, sql: adb.query(sql)), False),
    "adb.run_read": (_on_loop(lambda adb, sql: adb.run_read(_fetch(sql))), False),
    "adb.iterate": (_on_loop(_aiterate), False),
}

# (statement, what Refused.what starts with)
REFUSED = [
    ("PRAGMA locking_mode=EXCLUSIVE", "PRAGMA locking_mode"),
    ("PRAGMA query_only=ON", "PRAGMA query_only"),
    ("PRAGMA query_only=OFF", "PRAGMA query_only"),
    ("PRAGMA journal_mode=DELETE", "PRAGMA journal_mode"),
    ("pragma Main.Journal_Mode = memory", "PRAGMA journal_mode"),
    ("PRAGMA synchronous=OFF", "PRAGMA synchronous"),
    ("PRAGMA busy_timeout=0", "PRAGMA busy_timeout"),
    ("PRAGMA foreign_keys=OFF", "PRAGMA foreign_keys"),
    ("PRAGMA cache_size=10", "PRAGMA cache_size"),
    ("PRAGMA temp_store=FILE", "PRAGMA temp_store"),
    ("PRAGMA wal_autocheckpoint=0", "PRAGMA wal_autocheckpoint"),
    ("PRAGMA writable_schema=ON", "PRAGMA writable_schema"),
    ("PRAGMA read_uncommitted(1)", "PRAGMA read_uncommitted"),
    ("ATTACH ':memory:' AS other", "ATTACH"),
    ("DETACH main", "DETACH"),
]

BUSY_TIMEOUT = 2.0
# (statement, expected first value of the first row; for the writer, for a reader)
READS: list[tuple[str, Any, Any]] = [
    ("PRAGMA journal_mode", "wal", "wal"),
    ("PRAGMA main.locking_mode", "normal", "normal"),
    ("PRAGMA query_only", 0, 1),
    ("PRAGMA busy_timeout", 0, int(BUSY_TIMEOUT * 1000)),
    ("PRAGMA table_info(t)", 0, 0),
    ("SELECT name FROM pragma_table_info('t')", "x", "x"),
    ("PRAGMA integrity_check", "ok", "ok"),
    ("PRAGMA quick_check(1)", "ok", "ok"),
    ("PRAGMA foreign_key_check", None, None),
    ("PRAGMA user_version", 0, 0),
    ("SELECT name FROM pragma_database_list WHERE seq = 0", "main", "main"),
]


def _open(path: str, readers: Any, **kw: Any) -> litegate.Database:
    db = litegate.connect(path, readers=readers, busy_timeout=BUSY_TIMEOUT, **kw)
    db.execute("CREATE TABLE IF NOT EXISTS t(x)")
    return db


def _state(conn: sqlite3.Connection) -> tuple[Any, ...]:
    return tuple(
        conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "locking_mode", "query_only", "busy_timeout")
    ) + (_attached(conn.execute("PRAGMA database_list").fetchall()),)


def _attached(database_list: list[Any]) -> list[str]:
    return [row[1] for row in database_list if row[1] != "temp"]  # (temp: made on first use)


def assert_whole(db: litegate.Database, path: str) -> None:
    """The engine serves a query and a write; writer and readers are as litegate set them."""
    before = db.query_value("SELECT count(*) FROM t")
    db.execute("INSERT INTO t VALUES (1)")
    assert db.query_value("SELECT count(*) FROM t") == before + 1
    assert db.run_write(_state) == ("wal", "normal", 0, 0, ["main"])
    reader_state = ("wal", "normal", 1, int(BUSY_TIMEOUT * 1000), ["main"])
    readers = db.options.readers
    if readers == "per-thread":
        assert db.run_read(_state) == reader_state
    elif readers:
        snaps = [db.snapshot() for _ in range(readers)]  # every reader of the pool at once
        for snap in snaps:
            snap.__enter__()
        try:
            for snap in snaps:
                state = tuple(snap.query_value(f"PRAGMA {name}") for name in _STATE_NAMES)
                names = _attached(snap.query("PRAGMA database_list"))
                assert (*state, names) == reader_state
            assert db.stats().pool_open == readers
        finally:
            for snap in snaps:
                snap.__exit__(None, None, None)
    write_elsewhere(path, timeout=BUSY_TIMEOUT)  # another connection can write
    assert db.query_value("SELECT count(*) FROM t") == before + 2


_STATE_NAMES = ("journal_mode", "locking_mode", "query_only", "busy_timeout")


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_state_changing_pragmas_and_attach_are_refused(
    db_path: str, readers: Any, entry: str
) -> None:
    call, _ = ENTRIES[entry]
    with _open(db_path, readers) as db:
        for sql, what in REFUSED:
            before = db.query_value("SELECT count(*) FROM t")
            with pytest.raises(litegate.Refused) as info:
                call(db, sql)
            assert info.value.what is not None and info.value.what.startswith(what), sql
            assert what.split()[-1] in str(info.value)  # the message names it
            assert db.query_value("SELECT count(*) FROM t") == before, sql  # nothing applied
            assert_whole(db, db_path)


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_read_only_pragmas_are_answered(db_path: str, readers: Any, entry: str) -> None:
    call, on_writer = ENTRIES[entry]
    reader = not on_writer and readers != 0
    with _open(db_path, readers) as db:
        for sql, writer_value, reader_value in READS:
            rows = call(db, sql)
            if rows is not None:  # (executescript returns none)
                expected = reader_value if reader else writer_value
                assert (rows[0][0] if rows else None) == expected, sql
        assert_whole(db, db_path)


@pytest.mark.parametrize("entry", [name for name, (_, writer) in ENTRIES.items() if writer])
def test_database_values_and_operations_still_run_as_writes(
    db_path: str, readers: Any, entry: str
) -> None:
    call, _ = ENTRIES[entry]
    with _open(db_path, readers) as db:
        for i, sql in enumerate(
            ["PRAGMA user_version=7", "PRAGMA application_id=42", "PRAGMA defer_foreign_keys=ON"]
        ):
            call(db, sql)
            assert db.query_value("PRAGMA user_version") == 7, sql
            if i:
                assert db.query_value("PRAGMA application_id") == 42
        call(db, "PRAGMA optimize")
        call(db, "PRAGMA incremental_vacuum(1)")
        assert_whole(db, db_path)


@pytest.mark.parametrize(
    "pragma",
    [
        pytest.param({"journal_mode": "DELETE"}, id="journal_mode"),
        pytest.param({"journal_mode": "wal"}, id="journal_mode-wal"),
        pytest.param({"locking_mode": "EXCLUSIVE"}, id="locking_mode"),
        pytest.param({"query_only": 1}, id="query_only"),
        pytest.param({"QUERY_ONLY": 0}, id="query_only-off"),
        pytest.param({"synchronous": "OFF"}, id="synchronous"),
        pytest.param({"busy_timeout": 100}, id="busy_timeout"),
        pytest.param({"writable_schema": 1}, id="writable_schema"),
        pytest.param({"schema_version": 3}, id="schema_version"),
        pytest.param({"user_version": 3}, id="user_version"),
        pytest.param({"application_id": 3}, id="application_id"),
        pytest.param({"incremental_vacuum": 3}, id="incremental_vacuum"),
        pytest.param({"main.cache_size": 3}, id="schema-prefix"),
    ],
)
def test_connect_refuses_dangerous_pragmas(
    db_path: str, readers: Any, pragma: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="pragma") as info:
        litegate.connect(db_path, readers=readers, pragmas=pragma)
    assert repr(next(iter(pragma))) in str(info.value)
    with _open(db_path, readers) as db:  # the file was left as it was
        assert db.query_value("PRAGMA journal_mode") == "wal"
        assert_whole(db, db_path)


TUNING: list[dict[str, Any]] = [
    {"mmap_size": 1 << 20},
    {"cache_size": -4096},
    {"temp_store": "FILE"},
    {"foreign_keys": 0},
    {"wal_autocheckpoint": 100},
    {"journal_size_limit": 1 << 20},
    {"cache_spill": 0},
    {"automatic_index": 0},
    {"case_sensitive_like": 1},
    {"recursive_triggers": 1},
    {"secure_delete": 1},
    {"trusted_schema": 0},
]


@pytest.mark.parametrize("pragma", TUNING, ids=[next(iter(p)) for p in TUNING])
def test_connect_applies_tuning_pragmas_and_the_engine_stays_whole(
    db_path: str, readers: Any, pragma: dict[str, Any]
) -> None:
    ((name, value),) = pragma.items()
    readable = name != "case_sensitive_like"  # (a write-only PRAGMA)
    with _open(db_path, readers, pragmas=pragma) as db:
        if readable:
            expected = db.run_write(_fetch(f"PRAGMA {name}"))
            assert expected == db.run_read(_fetch(f"PRAGMA {name}"))
            if isinstance(value, int):
                assert expected == [(value,)]
        else:
            assert db.query_value("SELECT 'A' LIKE 'a'") == 0  # case-sensitive on readers
            assert db.run_write(_fetch("SELECT 'A' LIKE 'a'")) == [(0,)]
        assert_whole(db, db_path)


_OTHER_PROCESS = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=5.0)
conn.execute("INSERT INTO t VALUES (3)")
conn.commit()
print(conn.execute("SELECT count(*) FROM t WHERE x = 3").fetchone()[0])
"""


def test_another_process_can_write_after_every_refusal(db_path: str, readers: Any) -> None:
    with _open(db_path, readers) as db:
        for call, _ in ENTRIES.values():
            for sql, _what in REFUSED:
                with pytest.raises(litegate.Refused):
                    call(db, sql)
        done = subprocess.run(
            [sys.executable, "-c", _OTHER_PROCESS, db_path],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.strip() == "1"
        assert db.query_value("SELECT count(*) FROM t WHERE x = 3") == 1
        assert_whole(db, db_path)
