"""The authorizers' policy: which PRAGMAs and ATTACHes user SQL may run on the engine's
connections, and the clear error a refusal becomes (issue 10, item 5)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import litegate
from helpers import write_elsewhere
from litegate._config import Synchronous
from litegate._engine._authorizer import (
    PRAGMAS_WITH_ARGUMENT,
    ReaderGuard,
    explain,
    first_word,
)
from litegate._engine._connection import TxnGuard

OK, DENY = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
PRAGMA, ATTACH, DETACH = sqlite3.SQLITE_PRAGMA, sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH


@pytest.mark.parametrize("guard", [TxnGuard(), ReaderGuard()], ids=["writer", "reader"])
def test_guards_refuse_state_changing_pragmas_and_attach(guard: Any) -> None:
    for name in ("journal_mode", "locking_mode", "query_only", "synchronous", "busy_timeout"):
        assert guard(PRAGMA, name, "1", None, None) == DENY, name
        assert guard(PRAGMA, name, None, None, None) == OK, name  # the read form
    for name in ("cache_size", "foreign_keys", "writable_schema", "Temp_Store", "mmap_size"):
        assert guard(PRAGMA, name, "0", "main", None) == DENY, name
    for name in PRAGMAS_WITH_ARGUMENT:
        assert guard(PRAGMA, name, "1", None, None) == OK, name
    assert guard(ATTACH, "other.db", None, None, None) == DENY
    assert guard(DETACH, "other", None, None, None) == DENY
    for action in (sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_INSERT):
        assert guard(action, "t", "x", "main", None) == OK


def test_the_writer_guard_permits_the_engines_own_statements_on_its_thread() -> None:
    guard = TxnGuard()
    guard.permit()
    try:
        assert guard(PRAGMA, "query_only", "1", None, None) == OK
        assert guard(sqlite3.SQLITE_TRANSACTION, "BEGIN", None, None, None) == OK
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(guard(PRAGMA, "query_only", "1")))
        t.start()
        t.join()
        assert seen == [DENY]  # not for another thread
    finally:
        guard.revoke()
    assert guard(PRAGMA, "query_only", "1", None, None) == DENY


def test_only_the_writer_guard_refuses_transaction_control() -> None:
    assert TxnGuard()(sqlite3.SQLITE_TRANSACTION, "COMMIT", None, None, None) == DENY
    # a reader's transactions are its borrower's own (snapshots begin one there)
    assert ReaderGuard()(sqlite3.SQLITE_TRANSACTION, "BEGIN", None, None, None) == OK


def test_explain_names_the_refusal_only_on_the_refusing_thread(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.set_authorizer(ReaderGuard())
    try:
        with pytest.raises(sqlite3.DatabaseError) as info:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        raw = info.value
        # another thread recorded no refusal: the error stays SQLite's own
        other: list[BaseException] = []
        t = threading.Thread(target=lambda: other.append(explain(raw)))
        t.start()
        t.join()
        assert other == [raw]
        err = explain(raw)
        assert isinstance(err, litegate.Refused)
        assert isinstance(err, sqlite3.DatabaseError)  # what the bare error was
        assert err.what == "PRAGMA locking_mode=EXCLUSIVE"
        assert err.sqlite_errorcode == 23 and err.__cause__ is raw
        assert explain(raw) is raw  # consumed: explained once
        not_auth = sqlite3.OperationalError("no such table: x")
        assert explain(not_auth) is not_auth
    finally:
        conn.close()


# ---- the failures the issue reports, each named after it -------------------------------
def _writes_work(db: litegate.Database, path: str) -> None:
    db.execute("INSERT INTO t VALUES (1)")
    assert db.query_value("SELECT count(*) FROM t") == 1
    write_elsewhere(path, timeout=1.0)  # and another connection can write too
    assert db.query_value("SELECT count(*) FROM t") == 2


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("PRAGMA locking_mode=EXCLUSIVE", id="locking_mode-blocked-every-write"),
        pytest.param("PRAGMA query_only=ON", id="query_only-broke-every-write"),
    ],
)
def test_state_pragma_through_execute_no_longer_breaks_later_writes(
    db_path: str, readers: Any, sql: str
) -> None:
    """Regression: after db.execute("PRAGMA locking_mode=EXCLUSIVE") every later write raised
    Busy for good; after "PRAGMA query_only=ON" every later write failed."""
    with litegate.connect(db_path, readers=readers) as db:
        db.execute("CREATE TABLE t(x)")
        with pytest.raises(litegate.Refused, match=sql.split()[1].split("=")[0]) as info:
            db.execute(sql)
        assert info.value.what == sql
        _writes_work(db, db_path)


def test_query_only_off_through_query_no_longer_makes_a_reader_writable(
    db_path: str, readers: Any
) -> None:
    with litegate.connect(db_path, readers=readers) as db:
        db.execute("CREATE TABLE t(x)")
        with pytest.raises(litegate.Refused, match="query_only"):
            db.query("PRAGMA query_only=OFF")
        if readers != 0:
            assert db.query_value("PRAGMA query_only") == 1
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                db.query("INSERT INTO t VALUES (1)")
        _writes_work(db, db_path)


def test_attach_through_query_is_refused_rather_than_attaching_one_reader(
    db_path: str, readers: Any, tmp_path: Path
) -> None:
    other = str(tmp_path / "other.db")
    with litegate.connect(db_path, readers=readers) as db:
        db.execute("CREATE TABLE t(x)")
        with pytest.raises(litegate.Refused, match="ATTACH") as info:
            db.query("ATTACH ? AS other", (other,))
        assert "on_connect" in str(info.value)  # says how to attach on every connection
        with pytest.raises(litegate.Refused, match="ATTACH"):
            db.execute("ATTACH ? AS other", (other,))
        assert [r[1] for r in db.query("PRAGMA database_list")] == ["main"]


def test_attach_on_every_connection_through_on_connect_still_works(
    db_path: str, readers: Any, tmp_path: Path
) -> None:
    other = str(tmp_path / "other.db")
    setup = sqlite3.connect(other)
    setup.execute("CREATE TABLE o(y)")
    setup.execute("INSERT INTO o VALUES (7)")
    setup.commit()
    setup.close()

    def attach(conn: sqlite3.Connection) -> None:
        conn.execute("ATTACH ? AS other", (other,))

    with litegate.connect(db_path, readers=readers, on_connect=attach) as db:
        assert db.query_value("SELECT y FROM other.o") == 7
        assert db.run_write(lambda c: c.execute("SELECT y FROM other.o").fetchone()[0]) == 7


def test_refused_pragma_in_a_transaction_leaves_it_usable(db_path: str, readers: Any) -> None:
    with litegate.connect(db_path, readers=readers) as db:
        db.execute("CREATE TABLE t(x)")
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(litegate.Refused, match="synchronous"):
                tx.execute("PRAGMA synchronous=OFF")
            tx.execute("INSERT INTO t VALUES (2)")
        assert db.query_value("SELECT count(*) FROM t") == 2


def test_migrations_still_set_user_version_and_may_defer_foreign_keys(
    db_path: str, readers: Any
) -> None:
    with litegate.connect(db_path, readers=readers) as db:
        version = db.migrate(
            [
                "CREATE TABLE p(id INTEGER PRIMARY KEY); "
                "CREATE TABLE c(p INTEGER REFERENCES p(id))",
                "PRAGMA defer_foreign_keys=ON; INSERT INTO c VALUES (1); INSERT INTO p VALUES (1)",
            ]
        )
        assert version == 2 and db.query_value("PRAGMA user_version") == 2
        with pytest.raises(litegate.MigrationError) as info:
            db.migrate([*["SELECT 1"] * 2, "PRAGMA foreign_keys=OFF"])
        assert isinstance(info.value.__cause__, litegate.Refused)
        assert "defer_foreign_keys" in str(info.value)  # says what works instead
        assert db.query_value("PRAGMA user_version") == 2


def test_refused_pragma_reaches_async_callers_as_refused(db_path: str, readers: Any) -> None:
    async def main() -> None:
        async with litegate.connect_async(db_path, readers=readers) as adb:
            await adb.execute("CREATE TABLE t(x)")
            with pytest.raises(litegate.Refused, match="locking_mode"):
                await adb.execute("PRAGMA locking_mode=EXCLUSIVE")
            with pytest.raises(litegate.Refused, match="query_only"):
                await adb.query("PRAGMA query_only=OFF")
            with pytest.raises(litegate.Refused, match="cache_size"):
                await adb.run_read(lambda c: c.execute("PRAGMA cache_size=1").fetchall())
            async with adb.transaction() as tx:
                with pytest.raises(litegate.Refused, match="ATTACH"):
                    await tx.execute("ATTACH ':memory:' AS m")
                await tx.execute("INSERT INTO t VALUES (1)")
            assert await adb.query_value("SELECT count(*) FROM t") == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    ("pragmas", "match"),
    [
        pytest.param({"journal_mode": "DELETE"}, "WAL mode", id="journal_mode"),
        pytest.param({"locking_mode": "EXCLUSIVE"}, "EXCLUSIVE", id="locking_mode"),
        pytest.param({"Query_Only": 0}, "query_only", id="query_only"),
        pytest.param({"synchronous": "OFF"}, "synchronous=", id="synchronous"),
        pytest.param({"busy_timeout": 10}, "busy_timeout=", id="busy_timeout"),
        pytest.param({"writable_schema": 1}, "corrupt", id="writable_schema"),
        pytest.param({"user_version": 3}, "migration", id="user_version"),
    ],
)
def test_connect_refuses_pragmas_the_engine_owns(
    db_path: str, pragmas: dict[str, Any], match: str
) -> None:
    """Regression: pragmas={"journal_mode": "DELETE"} silently left WAL (most transactions
    then failed with raw `database is locked`); {"locking_mode": "EXCLUSIVE"} failed the
    first write."""
    with pytest.raises(ValueError, match=match) as info:
        litegate.connect(db_path, pragmas=pragmas)
    assert repr(next(iter(pragmas))) in str(info.value)  # names the key


def test_connect_applies_tuning_pragmas_to_every_connection(db_path: str, readers: Any) -> None:
    tuning = {"mmap_size": 1 << 20, "cache_size": -2048, "foreign_keys": 0, "temp_store": 1}

    def settings(conn: sqlite3.Connection) -> list[Any]:
        return [conn.execute(f"PRAGMA {name}").fetchone()[0] for name in tuning]

    with litegate.connect(db_path, readers=readers, pragmas=tuning) as db:
        assert db.run_write(settings) == list(tuning.values())
        assert db.run_read(settings) == list(tuning.values())


SAVEPOINT_TEXTS = {  # (SQLite skips white space, ";" and comments before a statement)
    "SAVEPOINT x": "SAVEPOINT",
    "  release x": "RELEASE",
    "\nROLLBACK TO x": "ROLLBACK",
    "rollback": "ROLLBACK",
    "sAvEpOiNt x": "SAVEPOINT",
    "Release x": "RELEASE",
    ";SAVEPOINT x": "SAVEPOINT",
    "/* c */ RELEASE x": "RELEASE",
    "-- c\n ;; ROLLBACK TO x": "ROLLBACK",
    "\ufeffSAVEPOINT x": "SAVEPOINT",
}


@pytest.mark.parametrize(
    ("sql", "word"),
    [
        ("UPDATE t SET x = 1", "UPDATE T "),
        ("  ;\n-- a\n/* b */ savepoint a", "SAVEPOINT"),
        ("/* unterminated", ""),
        ("-- only a comment", ""),
        ("", ""),
        ("/**/rollback", "ROLLBACK"),
        ("\ufeff ROLLBACK TO a", "ROLLBACK "),
        ("\t\vsavepoint a", "SAVEPOINT"),
    ],
)
def test_first_word_skips_what_sqlite_skips(sql: str, word: str) -> None:
    assert first_word(sql) == word


@pytest.mark.parametrize("sql", list(SAVEPOINT_TEXTS))
def test_savepoint_statements_as_plain_writes_are_refused(db: litegate.Database, sql: str) -> None:
    """A plain write shares its transaction with other callers' writes: a SAVEPOINT left there,
    or a ROLLBACK TO, would span or undo theirs. Refused before anything runs."""
    db.execute("CREATE TABLE t(x)")
    verb = SAVEPOINT_TEXTS[sql]
    with pytest.raises(litegate.Refused, match=f"refused {verb} in a plain write") as info:
        db.execute(sql)
    assert info.value.what == verb
    assert info.value.sqlite_errorname == "SQLITE_AUTH"
    with pytest.raises(litegate.Refused, match="tx.savepoint"):
        db.executemany(sql, [(), ()])
    with pytest.raises(litegate.Refused, match=f"refused {verb}"):
        db.executescript(f"INSERT INTO t VALUES (0); {sql}; INSERT INTO t VALUES (0)")
    assert db.query_value("SELECT count(*) FROM t") == 0  # (nothing of the script ran)
    with db.transaction() as tx:  # (inside a transaction, savepoints are its own)
        tx.execute("SAVEPOINT x")
        tx.execute("INSERT INTO t VALUES (1)")
        tx.execute("ROLLBACK TO x")
        tx.execute("RELEASE x")
        tx.execute("INSERT INTO t VALUES (2)")
    assert db.query("SELECT x FROM t")[0]["x"] == 2
    assert db.query_value("SELECT count(*) FROM t") == 1


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_plain_rollback_to_can_no_longer_undo_another_acknowledged_write(
    db_path: str, synchronous: Synchronous
) -> None:
    """Regression: at FULL, SAVEPOINT x / INSERT / ROLLBACK TO x sent as three plain writes at
    once were group-committed together: the INSERT was acknowledged (rowid 1), then undone."""
    adb = await litegate.connect_async(db_path, synchronous=synchronous)
    try:
        await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        sp, insert, back = await asyncio.gather(
            adb.execute("SAVEPOINT x"),
            adb.execute("INSERT INTO t(v) VALUES (1)"),
            adb.execute("ROLLBACK TO x"),
            return_exceptions=True,
        )
        assert isinstance(sp, litegate.Refused) and isinstance(back, litegate.Refused)
        assert isinstance(insert, litegate.Result) and insert.lastrowid == 1
        assert await adb.query_value("SELECT count(*) FROM t") == 1
        for sql in SAVEPOINT_TEXTS:  # (known quick or not: refused all the same)
            with pytest.raises(litegate.Refused, match="in a plain write"):
                await adb.execute(sql, ())
            with pytest.raises(litegate.Refused, match="in a plain write"):
                await adb.executemany(sql, [()])
            with pytest.raises(litegate.Refused, match="in a plain write"):
                await adb.execute(sql, time_limit=1.0)
            with pytest.raises(litegate.Refused, match="in a plain write"):
                await adb.executescript(f"INSERT INTO t(v) VALUES (3);\n{sql}")
        async with adb.transaction() as tx:
            await tx.execute("SAVEPOINT y")
            await tx.execute("INSERT INTO t(v) VALUES (2)")
            await tx.execute("ROLLBACK TO y")
        assert await adb.query_value("SELECT count(*) FROM t") == 1
    finally:
        await adb.close()


async def test_a_run_write_function_cannot_roll_back_another_writes_work(db_path: str) -> None:
    """Regression: at FULL, run_write(SAVEPOINT sp) / an INSERT / run_write(ROLLBACK TO sp)
    queued together shared one group commit: the INSERT was acknowledged, then undone. Now a
    function sharing a group runs in a savepoint of its own: sp ends with it."""
    adb = await litegate.connect_async(db_path, synchronous="FULL")
    try:
        await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        for n in range(1, 4):
            done: tuple[Any, ...] = await asyncio.gather(
                adb.run_write(lambda c: c.execute("SAVEPOINT sp").close()),
                adb.execute(f"INSERT INTO t(v) VALUES ({n})"),  # (a new text: queued too)
                adb.run_write(lambda c: c.execute("ROLLBACK TO sp").close()),
                return_exceptions=True,
            )
            opened, insert, back = done
            assert opened is None and isinstance(insert, litegate.Result)
            if not isinstance(back, sqlite3.OperationalError):  # (it ran in a later group)
                assert back is None
            assert await adb.query_value("SELECT count(*) FROM t") == n
    finally:
        await adb.close()
