"""``litegate.sqlite3``: one connection object shared by threads, each with a transaction of its
own. Each test checks an invariant that a shared standard connection breaks."""

from __future__ import annotations

import asyncio
import gc
import random
import sqlite3 as std
import threading
import time
from pathlib import Path

import pytest

import litegate.sqlite3 as sqlite3


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "app.db")


def _accounts(con: sqlite3.Connection, n: int = 10, balance: int = 100) -> None:
    con.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)")
    con.executemany("INSERT INTO acct(bal) VALUES (?)", [(balance,)] * n)
    con.commit()


def _run_threads(n: int, fn: object) -> list[BaseException]:
    errors: list[BaseException] = []

    def main(i: int) -> None:
        try:
            fn(i)  # type: ignore[operator]
        except BaseException as exc:  # (reported by the test)
            errors.append(exc)

    threads = [threading.Thread(target=main, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_another_threads_commit_never_commits_mine(path: str) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(x)")
    mine = threading.Event()
    theirs_done = threading.Event()

    def mine_thread() -> None:
        con.execute("INSERT INTO t VALUES ('mine')")  # legacy: opens this thread's transaction
        assert con.in_transaction
        mine.set()
        assert theirs_done.wait(10)
        con.rollback()

    def their_thread() -> None:
        assert mine.wait(10)
        assert not con.in_transaction  # (this thread has none)
        con.commit()  # a no-op here: it must not commit the other thread's insert
        theirs_done.set()

    assert not _run_threads(2, lambda i: (mine_thread if i == 0 else their_thread)())
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    con.close()


def test_a_transaction_reads_its_own_writes_others_do_not(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    _accounts(con, 1)
    inside = threading.Event()
    checked = threading.Event()
    seen: dict[str, object] = {}

    def writer() -> None:
        con.execute("BEGIN")
        con.execute("UPDATE acct SET bal = 5")
        seen["own"] = con.execute("SELECT bal FROM acct").fetchone()[0]
        inside.set()
        assert checked.wait(10)
        con.execute("COMMIT")

    def reader() -> None:
        assert inside.wait(10)
        seen["other"] = con.execute("SELECT bal FROM acct").fetchone()[0]
        checked.set()

    assert not _run_threads(2, lambda i: (writer if i == 0 else reader)())
    assert seen == {"own": 5, "other": 100}
    assert con.execute("SELECT bal FROM acct").fetchone() == (5,)
    con.close()


@pytest.mark.parametrize("style", ["begin", "with", "autocommit_false", "savepoint"])
def test_read_modify_write_transfers_keep_the_sum(path: str, style: str) -> None:
    """8 threads move money between accounts with a read, then a computed write: a lost
    update (two transactions reading the same balance) would change the sum."""
    kwargs: dict[str, object] = {"timeout": 30}
    if style == "begin":
        kwargs["isolation_level"] = None
    if style == "autocommit_false":
        kwargs["autocommit"] = False
    con = sqlite3.connect(path, **kwargs)  # type: ignore[arg-type]
    _accounts(con)
    moved = [0] * 8

    def transfer(con: sqlite3.Connection, a: int, b: int) -> None:
        (x,) = con.execute("SELECT bal FROM acct WHERE id = ?", (a,)).fetchone()
        con.execute("UPDATE acct SET bal = ? WHERE id = ?", (x - 1, a))
        (y,) = con.execute("SELECT bal FROM acct WHERE id = ?", (b,)).fetchone()
        con.execute("UPDATE acct SET bal = ? WHERE id = ?", (y + 1, b))

    def worker(i: int) -> None:
        rnd = random.Random(i)
        for _ in range(100):
            a, b = rnd.sample(range(1, 11), 2)
            if style == "begin":
                con.execute("BEGIN")
                transfer(con, a, b)
                con.execute("COMMIT")
            elif style == "with":
                with con:
                    # legacy: the SELECT would run outside the transaction; take it first
                    con.execute("UPDATE acct SET bal = bal WHERE id = ?", (a,))
                    transfer(con, a, b)
            elif style == "autocommit_false":
                transfer(con, a, b)
                con.commit()
            else:
                con.execute("SAVEPOINT t")
                transfer(con, a, b)
                con.execute("RELEASE t")  # (the outermost: commits)
            moved[i] += 1

    assert not _run_threads(8, worker)
    assert sum(moved) == 800
    assert con.execute("SELECT count(*), sum(bal) FROM acct").fetchone() == (10, 1000)
    con.close()


@pytest.mark.parametrize(
    "level, synchronous", [("", "FULL"), (None, "NORMAL"), (None, "FULL"), ("", "NORMAL")]
)
def test_the_seed_pattern_through_to_thread_loses_nothing(
    path: str, level: str | None, synchronous: str
) -> None:
    """A store built at startup, called through asyncio.to_thread by 64 coroutines: every
    insert committed, every rowid handed back is the caller's own row -- in a transaction of
    the thread's (legacy ``isolation_level``) and as a write alone (``None``: at NORMAL
    committed by SQLite's autocommit under the lane, at FULL a group-committed lane job)."""

    class Store:
        def __init__(self) -> None:
            options = {"synchronous": synchronous}
            self.con = sqlite3.connect(path, isolation_level=level, litegate=options)
            self.con.execute("CREATE TABLE item(id INTEGER PRIMARY KEY, owner INTEGER)")

        def add(self, owner: int) -> int:
            cur = self.con.execute("INSERT INTO item(owner) VALUES (?)", (owner,))
            self.con.commit()
            rowid = cur.lastrowid
            assert rowid is not None
            return rowid

    store = Store()

    async def main() -> list[tuple[int, int]]:
        async def one(owner: int) -> list[tuple[int, int]]:
            return [(owner, await asyncio.to_thread(store.add, owner)) for _ in range(5)]

        results = await asyncio.gather(*(one(i) for i in range(64)))
        return [pair for r in results for pair in r]

    pairs = asyncio.run(main())
    rows = dict(store.con.execute("SELECT id, owner FROM item").fetchall())
    assert len(rows) == 320
    assert all(rows[rowid] == owner for owner, rowid in pairs)
    store.con.close()


def test_a_wait_is_bounded_by_timeout(path: str) -> None:
    con = sqlite3.connect(path, timeout=0.3, isolation_level=None)
    con.execute("CREATE TABLE t(x)")
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        con.execute("BEGIN")
        con.execute("INSERT INTO t VALUES (1)")
        held.set()
        assert release.wait(10)
        con.execute("COMMIT")

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        t0 = time.monotonic()
        with pytest.raises(std.OperationalError, match="database is locked"):
            con.execute("INSERT INTO t VALUES (2)")
        assert 0.25 < time.monotonic() - t0 < 3
    finally:
        release.set()
        t.join(10)
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    con.close()


def test_a_thread_that_ends_inside_its_transaction_gives_the_lane_back(path: str) -> None:
    con = sqlite3.connect(path, timeout=10)
    con.execute("CREATE TABLE t(x)")

    def leaves_it_open() -> None:
        con.execute("INSERT INTO t VALUES ('lost')")  # never committed

    t = threading.Thread(target=leaves_it_open)
    t.start()
    t.join(10)
    del t
    gc.collect()
    con.execute("INSERT INTO t VALUES ('kept')")  # (would wait for the lane forever)
    con.commit()
    assert con.execute("SELECT x FROM t").fetchall() == [("kept",)]
    con.close()


def test_abandoned_cursors_pin_no_reader(path: str) -> None:
    con = sqlite3.connect(path, timeout=2, litegate={"readers": 1})
    _accounts(con)
    cursors = [con.execute("SELECT * FROM acct") for _ in range(20)]
    for cur in cursors:
        assert cur.fetchone() is not None  # half read, never closed
    assert con.execute("SELECT count(*) FROM acct").fetchone() == (10,)
    con.execute("UPDATE acct SET bal = 0")
    con.commit()
    assert cursors[0].fetchone() == (2, 100)  # (its own rows, fetched when it executed)
    con.close()


def test_connections_to_one_file_share_an_engine(path: str) -> None:
    a = sqlite3.connect(path, litegate={"synchronous": "NORMAL"})
    b = sqlite3.connect(path)  # (no options: the open engine's)
    with pytest.raises(std.ProgrammingError, match="synchronous"):
        sqlite3.connect(path, litegate={"synchronous": "FULL"})
    a.execute("CREATE TABLE t(x)")
    assert b.execute("PRAGMA synchronous").fetchone() == (1,)
    # One thread, two connections: the second waits for the first's transaction, bounded
    a.execute("INSERT INTO t VALUES (1)")
    b.execute("PRAGMA user_version")  # (a read: fine)
    with pytest.raises(std.OperationalError, match="database is locked"):
        b.execute("INSERT INTO t VALUES (2)")
    a.commit()
    b.execute("INSERT INTO t VALUES (2)")
    b.commit()
    assert a.execute("SELECT count(*) FROM t").fetchone() == (2,)
    a.close()
    b.close()


def test_memory_databases_keep_their_meaning() -> None:
    a = sqlite3.connect(":memory:")
    b = sqlite3.connect(":memory:")
    a.execute("CREATE TABLE t(x)")
    with pytest.raises(std.OperationalError, match="no such table"):
        b.execute("SELECT * FROM t")
    uri = "file:shared_lg?mode=memory&cache=shared"
    c = sqlite3.connect(uri, uri=True)
    d = sqlite3.connect(uri, uri=True)
    c.execute("CREATE TABLE t(x)")
    c.execute("INSERT INTO t VALUES (1)")
    c.commit()
    errors = _run_threads(4, lambda i: d.execute("SELECT x FROM t").fetchall() == [(1,)] or 1 / 0)
    assert not errors
    for con in (a, b, c, d):
        con.close()


def test_functions_run_on_readers_and_the_writer(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.create_function("twice", 1, lambda x: 2 * x, deterministic=True)
    con.create_collation("backwards", lambda a, b: (a < b) - (a > b))
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES (twice(21))")
    assert con.execute("SELECT twice(x) FROM t").fetchone() == (84,)
    con.execute("CREATE TABLE names(n TEXT)")
    con.executemany("INSERT INTO names VALUES (?)", [("a",), ("c",), ("b",)])
    by = [r[0] for r in con.execute("SELECT n FROM names ORDER BY n COLLATE backwards")]
    assert by == ["c", "b", "a"]

    def from_thread(i: int) -> None:
        assert con.execute("SELECT twice(?)", (i,)).fetchone() == (2 * i,)

    assert not _run_threads(4, from_thread)
    con.close()


def test_errors_are_the_standard_classes(path: str) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(x UNIQUE)")
    con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(std.IntegrityError):
        con.execute("INSERT INTO t VALUES (1)")
    assert sqlite3.IntegrityError is std.IntegrityError
    con.rollback()
    with pytest.raises(std.OperationalError, match="no transaction is active"):
        con.execute("COMMIT")
    con.close()
    with pytest.raises(std.ProgrammingError, match="closed database"):
        con.execute("SELECT 1")


def test_a_conflict_rollback_ends_the_threads_transaction(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("CREATE TABLE t(x UNIQUE ON CONFLICT ROLLBACK)")
    con.execute("BEGIN")
    con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(std.IntegrityError):
        con.execute("INSERT INTO t VALUES (1)")  # SQLite rolls the whole transaction back
    assert not con.in_transaction
    con.execute("INSERT INTO t VALUES (2)")  # the lane is free again
    assert con.execute("SELECT x FROM t").fetchall() == [(2,)]
    con.close()


def test_detect_types_and_vacuum(path: str) -> None:
    con = sqlite3.connect(path, detect_types=sqlite3.PARSE_COLNAMES)
    assert con.execute('SELECT 1 AS "x [flag]"').description[0][0] == "x"
    con.execute("CREATE TABLE t(x)")
    con.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,)] * 200)
    con.commit()
    con.execute("DELETE FROM t")
    con.commit()
    con.execute("VACUUM")
    assert con.execute("PRAGMA freelist_count").fetchone() == (0,)
    con.close()


def test_a_plain_path_with_uri_true_shares_the_engine(path: str) -> None:
    a = sqlite3.connect(path)
    # (Django passes uri=True with a plain path; this one is spelt differently)
    b = sqlite3.connect(path.replace("app.db", "./app.db"), uri=True)
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES (1)")  # a's open transaction holds the lane ...
    with pytest.raises(std.OperationalError, match="database is locked: .*this thread"):
        b.execute("INSERT INTO t VALUES (2)")  # ... of the one engine both share
    a.commit()
    a.close()
    b.close()


def test_a_returning_write_whose_rows_fail_to_fetch_keeps_later_writes(path: str) -> None:
    """At NORMAL a write alone is committed by SQLite as it ends. One whose RETURNING rows
    fail to fetch (not UTF-8) is closed there and then -- left open, it would hold the
    writer's transaction unseen while its error lives, and the writes after it would be
    acknowledged, then rolled back. An error that quotes "busy" in a row's text is not
    taken for another process's lock: the function in it runs once."""
    con = sqlite3.connect(path, isolation_level=None, litegate={"synchronous": "NORMAL"})
    con.execute("CREATE TABLE t(x)")
    calls: list[int] = []

    def f(x: int) -> int:
        calls.append(x)
        return x

    con.create_function("f", 1, f)
    with pytest.raises(std.OperationalError, match="UTF-8") as kept:  # (the error lives on)
        con.execute("INSERT INTO t VALUES (f(0)) RETURNING 'busy ' || CAST(x'ff' AS TEXT)")
    assert calls == [0]
    for i in range(1, 4):
        con.execute("INSERT INTO t VALUES (?)", (i,))
    other = std.connect(path)
    try:
        assert other.execute("SELECT count(*) FROM t").fetchone() == (4,)
    finally:
        other.close()
    assert kept.value is not None
    con.close()


def test_interrupt_reaches_a_read_running_outside_a_transaction(path: str) -> None:
    """``interrupt()`` from another thread stops a long read that runs on a reader (the read
    hot path), as it stops one on the standard module's connection."""
    con = sqlite3.connect(path, isolation_level=None)
    outcome: list[BaseException | None] = []
    long_read = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
        "SELECT count(*) FROM c"
    )

    def reader() -> None:
        try:
            con.execute(long_read).fetchone()
            outcome.append(None)
        except BaseException as exc:  # (reported below)
            outcome.append(exc)

    t = threading.Thread(target=reader, daemon=True)  # (daemon: a failure hangs nothing)
    t.start()
    deadline = time.monotonic() + 10
    while t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
        con.interrupt()
    t.join(5)
    assert not t.is_alive(), "the read was never interrupted"
    assert len(outcome) == 1 and isinstance(outcome[0], std.OperationalError)
    assert "interrupted" in str(outcome[0])
    assert con.execute("SELECT 1").fetchone() == (1,)  # the reader serves again
    con.close()
