"""The sync facade: API behaviour in every read mode, errors, lifecycle, the store pattern."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import litegate
from helpers import wait_for


def test_execute_returns_result_after_commit(db: litegate.Database, db_path: str) -> None:
    res = db.execute("INSERT INTO items(name, qty) VALUES (?, ?)", ("a", 3))
    assert res.rowcount == 1
    assert res.lastrowid == 1
    assert res.rows == []
    # Durable and visible to an independent connection the moment execute returned.
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("SELECT name, qty FROM items").fetchall() == [("a", 3)]
    finally:
        other.close()


def test_returning_rows(db: litegate.Database) -> None:
    res = db.execute("INSERT INTO items(name) VALUES ('x'), ('y') RETURNING id, name")
    assert [tuple(r) for r in res.rows] == [(1, "x"), (2, "y")]


def test_executemany_and_queries(db: litegate.Database) -> None:
    res = db.executemany(
        "INSERT INTO items(name, qty) VALUES (?, ?)", [(f"n{i}", i) for i in range(10)]
    )
    assert res.rowcount == 10
    rows = db.query("SELECT name, qty FROM items WHERE qty >= ? ORDER BY qty", (7,))
    assert [(r["name"], r["qty"]) for r in rows] == [("n7", 7), ("n8", 8), ("n9", 9)]
    row = db.query_one("SELECT * FROM items WHERE name = :n", {"n": "n3"})
    assert row is not None and row["qty"] == 3 and dict(row) == {"id": 4, "name": "n3", "qty": 3}
    assert row.keys() == ["id", "name", "qty"] and row[1] == "n3"
    assert db.query_one("SELECT * FROM items WHERE qty > 100") is None
    assert db.query_value("SELECT sum(qty) FROM items") == 45
    assert db.query_value("SELECT qty FROM items WHERE qty > 100") is None
    assert [r[0] for r in db.iterate("SELECT qty FROM items ORDER BY qty", arraysize=3)] == list(
        range(10)
    )


def test_executemany_accepts_a_generator(db: litegate.Database) -> None:
    db.executemany("INSERT INTO items(name) VALUES (?)", ((f"g{i}",) for i in range(5)))
    assert db.query_value("SELECT count(*) FROM items") == 5


def test_executescript_is_atomic(db: litegate.Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        db.executescript(
            """
            INSERT INTO items(name) VALUES ('s1');  -- a comment; with a semicolon
            INSERT INTO items(name) VALUES ('s;2');
            INSERT INTO items(name) VALUES ('s1');
            """
        )
    assert db.query_value("SELECT count(*) FROM items") == 0
    db.executescript(
        "INSERT INTO items(name) VALUES ('ok1'); INSERT INTO items(name) VALUES ('ok;2')"
    )
    assert db.query_value("SELECT group_concat(name, '|') FROM items") == "ok1|ok;2"


def test_run_write_and_run_read(db: litegate.Database) -> None:
    def add(conn: sqlite3.Connection, name: str, qty: int) -> int:
        cur = conn.execute("INSERT INTO items(name, qty) VALUES (?, ?)", (name, qty))
        conn.execute("UPDATE items SET qty = qty * 2 WHERE id = ?", (cur.lastrowid,))
        return int(cur.lastrowid or 0)

    rowid = db.run_write(add, "w", 21)
    assert (
        db.run_read(
            lambda c, i: c.execute("SELECT qty FROM items WHERE id=?", (i,)).fetchone()[0], rowid
        )
        == 42
    )


def test_run_write_failure_rolls_back_only_that_job(db: litegate.Database) -> None:
    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items(name) VALUES ('half')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        db.run_write(half)
    assert db.query_value("SELECT count(*) FROM items") == 0
    db.execute("INSERT INTO items(name) VALUES ('after')")
    assert db.query_value("SELECT count(*) FROM items") == 1


def test_run_write_runs_in_callers_context(db: litegate.Database) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    var.set("req-42")
    assert db.run_write(lambda conn: var.get()) == "req-42"
    assert db.run_read(lambda conn: var.get()) == "req-42"


def test_invalid_sql_leaves_every_connection_usable(db: litegate.Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        db.execute("INSERT INTO nowhere VALUES (1) garbage")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        db.query("SELECT * FROM nowhere")
    db.execute("INSERT INTO items(name) VALUES ('x')")
    assert db.query_value("SELECT count(*) FROM items") == 1


def test_constraint_violation_passes_through_unchanged(db: litegate.Database) -> None:
    db.execute("INSERT INTO items(name) VALUES ('dup')")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute("INSERT INTO items(name) VALUES ('dup')")
    db.execute("INSERT INTO items(name) VALUES ('next')")
    assert db.query_value("SELECT count(*) FROM items") == 2


@pytest.mark.parametrize("readers", [2, "per-thread"], ids=["readers=2", "per-thread"])
def test_write_on_a_reader_is_refused(db: litegate.Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.query("INSERT INTO items(name) VALUES ('sneaky')")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.run_read(lambda c: c.execute("DELETE FROM items"))
    assert db.query_value("SELECT count(*) FROM items") == 0
    db.execute("INSERT INTO items(name) VALUES ('fine')")
    assert db.query_value("SELECT count(*) FROM items") == 1


def test_user_transaction_control_in_a_job_is_refused(db: litegate.Database) -> None:
    with pytest.raises(litegate.Refused, match="refused COMMIT"):
        db.execute("COMMIT")
    with pytest.raises(litegate.Refused, match="refused COMMIT"):
        db.run_write(lambda c: c.commit() if c.in_transaction else c.execute("BEGIN"))
    db.execute("INSERT INTO items(name) VALUES ('still fine')")
    assert db.query_value("SELECT count(*) FROM items") == 1


def test_use_after_close_raises_closed(db_path: str, readers: Any) -> None:
    db = litegate.connect(db_path, readers=readers)
    db.execute("CREATE TABLE t(x)")
    db.close()
    db.close()  # idempotent
    assert db.closed
    for call in (
        lambda: db.execute("INSERT INTO t VALUES (1)"),
        lambda: db.query("SELECT 1"),
        lambda: db.run_read(lambda c: 1),
        lambda: db.transaction().__enter__(),
        lambda: db.snapshot().__enter__(),
        lambda: list(db.iterate("SELECT 1")),
    ):
        with pytest.raises(litegate.Closed):
            call()


def test_close_checkpoints_the_wal(db_path: str) -> None:
    db = litegate.connect(db_path)
    db.execute("CREATE TABLE t(x)")
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    db.close()
    wal = Path(db_path + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1000
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_connection_pragmas(db: litegate.Database) -> None:
    assert db.run_write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
    assert db.run_write(lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]) == 1
    assert db.run_read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    if db.options.readers != 0:
        assert db.run_read(lambda c: c.execute("PRAGMA query_only").fetchone()[0]) == 1


def test_synchronous_normal_is_selectable(db_path: str) -> None:
    with litegate.connect(db_path, synchronous="NORMAL") as db:
        assert db.run_write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 1


def test_memory_database_is_shared_by_all_callers() -> None:
    with litegate.connect(":memory:") as db:
        assert db.options.readers == 0
        db.execute("CREATE TABLE t(x)")
        threads = [
            threading.Thread(target=lambda i=i: db.execute("INSERT INTO t VALUES (?)", (i,)))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert db.query_value("SELECT sum(x) FROM t") == sum(range(8))
        with db.snapshot() as snap:
            assert snap.query_value("SELECT count(*) FROM t") == 8


def test_memory_database_rejects_a_read_pool() -> None:
    with pytest.raises(ValueError, match="readers must be 0"):
        litegate.connect(":memory:", readers=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"readers": -1}, "readers", id="negative-readers"),
        pytest.param({"readers": "many"}, "readers", id="bad-readers"),
        pytest.param({"synchronous": "SOMETIMES"}, "synchronous", id="bad-sync"),
        pytest.param({"timeout": -1}, "timeout", id="negative-timeout"),
        pytest.param({"queue_size": 0}, "queue_size", id="zero-queue"),
        pytest.param({"pragmas": {"x; DROP": 1}}, "pragma", id="bad-pragma"),
    ],
)
def test_invalid_options_are_refused(db_path: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        litegate.connect(db_path, **kwargs)


def test_unclosed_database_warns(db_path: str) -> None:
    db = litegate.connect(db_path)
    db.execute("CREATE TABLE t(x)")
    engine = db._engine
    with pytest.warns(ResourceWarning, match="never closed"):
        del db
        gc.collect()
    engine.close(timeout=5)
    assert engine.closed


class Store:
    """The pattern users write: built in the main thread, called from worker threads."""

    def __init__(self, path: str, readers: Any) -> None:
        self.db = litegate.connect(path, readers=readers)
        self.db.migrate(["CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT, status TEXT)"])

    def add(self, body: str) -> int:
        return int(
            self.db.execute("INSERT INTO docs(body, status) VALUES (?, 'new')", (body,)).lastrowid
            or 0
        )

    def status_counts(self) -> dict[str, int]:
        return {
            r["status"]: r["n"]
            for r in self.db.query("SELECT status, count(*) AS n FROM docs GROUP BY status")
        }


@pytest.mark.blocks_loop("the scenario: a sync Database opened and closed on the loop thread")
async def test_store_built_in_main_thread_works_from_to_thread_and_threads(
    db_path: str, readers: Any
) -> None:
    store = Store(db_path, readers)  # built on the test's (loop) thread, on purpose
    try:
        ids = await asyncio.gather(*(asyncio.to_thread(store.add, f"doc{i}") for i in range(50)))
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for i in range(25):
                    store.add(f"t{k}-{i}")
                    store.status_counts()
            except BaseException as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            await asyncio.to_thread(t.join)
        assert errors == []
        assert sorted(ids) == sorted(set(ids)) and len(ids) == 50
        assert await asyncio.to_thread(store.status_counts) == {"new": 150}
    finally:
        await asyncio.to_thread(store.db.close)


def test_engine_connections_are_exempt_from_the_misuse_detector(db_path: str) -> None:
    """litegate hands its connections between threads on purpose (serialised by the lane and
    the pool); the runtime detector watches user connections only."""
    from litegate import debug

    debug.enable()
    try:
        with litegate.connect(db_path) as db:
            db.execute("CREATE TABLE t(x)")
            threads = [
                threading.Thread(target=lambda i=i: db.execute("INSERT INTO t VALUES (?)", (i,)))
                for i in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert db.query_value("SELECT count(*) FROM t") == 8
            assert db.run_write(debug.origin) is None  # the writer connection
    finally:
        debug.disable()


# ---- regressions found by review, each named after the failure it pins ----------------
def test_database_call_inside_run_write_is_misuse_not_a_deadlock(tmp_path: Path) -> None:
    with litegate.connect(str(tmp_path / "r.db")) as db:
        db.execute("CREATE TABLE t(x)")
        t0 = time.monotonic()
        with pytest.raises(litegate.Misuse, match="run_write"):
            db.run_write(lambda conn: db.execute("INSERT INTO t VALUES (1)"), timeout=None)
        assert db.run_write(lambda conn: db.query_value("SELECT 7")) == 7  # a pool read is fine
        assert time.monotonic() - t0 < 1
    with litegate.connect(str(tmp_path / "r0.db"), readers=0) as db:
        with pytest.raises(litegate.Misuse, match="run_write"):
            db.run_write(lambda conn: db.query_value("SELECT 1"), timeout=None)


_FINALIZER_SCRIPT = """
import faulthandler, gc, os, sys, tempfile, time, warnings
faulthandler.dump_traceback_later(20, exit=True)
import litegate
from litegate._engine import _fork, _lane
warnings.simplefilter("ignore", ResourceWarning)
d = tempfile.mkdtemp()
case = sys.argv[1]
gc.disable()
db = litegate.connect(os.path.join(d, "a.db"))
db.execute("CREATE TABLE t(x)")
view = db.as_async().as_sync()  # keeps the engine in use after its owner is garbage
engine = view._engine
db.cycle = db
del db  # the owner facade is cyclic garbage: the collector will run its finaliser
if case == "lane-lock":  # collected while this thread holds the lane's lock
    real = _lane.WriteLane._take_queued
    _lane.WriteLane._take_queued = lambda self, limit: (gc.collect(), real(self, limit))[1]
    view.execute("INSERT INTO t VALUES (1)")
elif case == "registry-lock":  # collected while this thread holds the fork registry's lock
    class Registry(type(_fork._registry)):
        def add(self, item):
            gc.collect()
            return super().add(item)
    _fork._registry = Registry(list(_fork._registry))
    litegate.connect(os.path.join(d, "b.db")).close()
elif case == "fork":  # collected inside fork()'s hooks
    gc.enable()
    gc.set_threshold(1, 1, 1)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    gc.set_threshold(700, 10, 10)
deadline = time.monotonic() + 10
while not engine.closed and time.monotonic() < deadline:
    gc.collect()
    time.sleep(0.01)
print("closed" if engine.closed else "open")
"""


@pytest.mark.parametrize("case", ["lane-lock", "registry-lock", "fork"])
def test_an_unclosed_database_finalised_anywhere_never_deadlocks_and_closes(case: str) -> None:
    """Regression: Database.__del__ took engine, lane and fork-registry locks, so a garbage
    collection that ran while the same thread held one of them deadlocked it (in connect(),
    in fork(), in a write). The finaliser now takes no lock; the writer closes the engine."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _FINALIZER_SCRIPT, case],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "closed", out.stdout + out.stderr[-3000:]


def test_an_unclosed_database_is_closed_even_while_its_engine_lock_is_taken(
    db_path: str,
) -> None:
    """Regression: the finaliser gave up when the engine's lock was taken (by lazy set-up on
    another thread), and the engine stayed open until exit."""
    db = litegate.connect(db_path)
    engine = db._engine
    inside, leave = threading.Event(), threading.Event()

    def lazy_setup() -> None:
        with engine._lock:  # type: ignore[attr-defined]
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=lazy_setup)
    t.start()
    assert inside.wait(10)
    with pytest.warns(ResourceWarning, match="never closed"):
        del db
        gc.collect()
    leave.set()
    t.join(10)
    wait_for(lambda: engine.closed, what="the engine to close")
