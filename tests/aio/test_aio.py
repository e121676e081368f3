"""litegate.aio: aiosqlite's API on the shared engine, transactions per task."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import litegate.aio as aiosqlite
import litegate.sqlite3 as dropin


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "t.db")


async def _table(db: aiosqlite.Connection) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
    await db.commit()


async def test_connections_to_one_file_share_one_engine(path: str) -> None:
    async with aiosqlite.connect(path) as a, aiosqlite.connect(Path(path)) as b:
        assert a.engine is b.engine
        await _table(a)
        await b.execute("INSERT INTO t(v) VALUES ('from b')")
        await b.commit()
        assert await a.execute_fetchall("SELECT v FROM t") == [("from b",)]
        sync = await asyncio.to_thread(dropin.connect, path)
        try:  # (litegate.sqlite3's connections share it too)
            rows = await asyncio.to_thread(lambda: sync.execute("SELECT v FROM t").fetchall())
            assert rows == [("from b",)]
        finally:
            await asyncio.to_thread(sync.close)


async def test_another_tasks_commit_does_not_commit_this_tasks_transaction(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        inserted, decided = asyncio.Event(), asyncio.Event()

        async def writer() -> None:
            await db.execute("INSERT INTO t(v) VALUES ('mine')")  # (implicit BEGIN)
            assert db.in_transaction
            inserted.set()
            await decided.wait()
            await db.rollback()
            assert not db.in_transaction

        async def other() -> None:
            await inserted.wait()
            assert not db.in_transaction  # (the writer's transaction is not this task's)
            await db.commit()  # (nothing of its own to commit)
            decided.set()

        await asyncio.gather(writer(), other())
        assert await db.execute_fetchall("SELECT v FROM t") == []


async def test_read_modify_write_by_64_tasks_loses_no_update(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await db.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, n INTEGER)")
        await db.execute("INSERT INTO c VALUES (1, 0)")
        await db.commit()

        async def bump() -> None:
            for _ in range(5):
                await db.execute("UPDATE c SET n = n WHERE id = 1")  # (opens the transaction)
                (n,) = (await db.execute_fetchall("SELECT n FROM c WHERE id = 1"))[0]
                await asyncio.sleep(0)  # (another task runs between the read and the write)
                await db.execute("UPDATE c SET n = ? WHERE id = 1", (n + 1,))
                await db.commit()

        await asyncio.gather(*(bump() for _ in range(64)))
        assert await db.execute_fetchall("SELECT n FROM c") == [(320,)]


async def test_a_task_started_inside_a_transaction_runs_in_it(path: str) -> None:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await _table(db)
        await db.execute("BEGIN")
        await asyncio.gather(
            *(db.execute("INSERT INTO t(v) VALUES (?)", (str(i),)) for i in range(8))
        )
        assert db.in_transaction
        await db.execute("ROLLBACK")
        assert await db.execute_fetchall("SELECT count(*) FROM t") == [(0,)]


async def test_a_task_that_ends_with_its_transaction_open_has_it_rolled_back(path: str) -> None:
    async with aiosqlite.connect(path) as db, aiosqlite.connect(path, timeout=2) as other:
        await _table(db)

        async def forgets() -> None:
            await db.execute("INSERT INTO t(v) VALUES ('forgotten')")

        with pytest.warns(ResourceWarning, match="rolled back"):
            await asyncio.create_task(forgets())
            await asyncio.sleep(0)  # (the task's done callbacks run)
        t0 = time.monotonic()
        await other.execute("INSERT INTO t(v) VALUES ('next')")  # (the lane is free)
        await other.commit()
        assert time.monotonic() - t0 < 1.0
        assert await db.execute_fetchall("SELECT v FROM t") == [("next",)]


async def test_a_cancelled_task_gives_the_lane_back(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        began = asyncio.Event()

        async def slow() -> None:
            await db.execute("INSERT INTO t(v) VALUES ('cancelled')")
            began.set()
            await asyncio.sleep(60)

        task = asyncio.create_task(slow())
        await began.wait()
        task.cancel()
        with pytest.warns(ResourceWarning, match="rolled back"):
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)
        await db.execute("INSERT INTO t(v) VALUES ('after')")
        await db.commit()
        assert await db.execute_fetchall("SELECT v FROM t") == [("after",)]


async def test_a_wait_for_the_lane_is_bounded_by_timeout(path: str) -> None:
    async with aiosqlite.connect(path) as db, aiosqlite.connect(path, timeout=0.3) as other:
        await _table(db)
        await db.execute("INSERT INTO t(v) VALUES ('held')")  # (this task holds the lane)

        async def write() -> None:
            await other.execute("INSERT INTO t(v) VALUES ('waits')")

        t0 = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            await asyncio.create_task(write())
        assert 0.25 < time.monotonic() - t0 < 3.0
        await db.commit()


async def test_reads_in_a_transaction_see_its_writes_and_others_do_not(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        go = asyncio.Event()

        async def outside() -> list[object]:  # (started before the transaction: not in it)
            await go.wait()
            return list(await db.execute_fetchall("SELECT v FROM t"))

        other = asyncio.create_task(outside())
        await db.execute("INSERT INTO t(v) VALUES ('new')")
        assert await db.execute_fetchall("SELECT v FROM t") == [("new",)]
        go.set()
        assert await other == []  # (a snapshot without the uncommitted row)
        assert await asyncio.create_task(outside()) == [("new",)]  # (a child: in it)
        await db.commit()


async def test_each_task_gets_its_own_rowids(path: str) -> None:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE item(id INTEGER PRIMARY KEY, owner INTEGER)")

        async def add(owner: int) -> list[tuple[int, int]]:
            got = []
            for _ in range(10):
                (rowid,) = await db.execute_insert("INSERT INTO item(owner) VALUES (?)", (owner,))
                cur = await db.execute("INSERT INTO item(owner) VALUES (?)", (owner,))
                got += [(rowid, owner), (cur.lastrowid, owner)]
            return got

        results = await asyncio.gather(*(add(i) for i in range(32)))
        stored = dict(await db.execute_fetchall("SELECT id, owner FROM item"))
        claimed = [pair for got in results for pair in got]
        assert len(stored) == len(claimed) == 640
        assert all(stored[rowid] == owner for rowid, owner in claimed)


async def test_errors_are_the_standard_modules_classes(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        await db.execute("INSERT INTO t VALUES (1, 'a')")
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute("INSERT INTO t VALUES (1, 'b')")
        await db.rollback()
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.execute("SELECT * FROM missing")
        assert aiosqlite.IntegrityError is sqlite3.IntegrityError
        assert aiosqlite.Row is sqlite3.Row


async def test_rows_description_and_factories(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        await db.executemany("INSERT INTO t(v) VALUES (?)", [("a",), ("b",), ("c",)])
        await db.commit()
        db.row_factory = aiosqlite.Row
        async with db.execute("SELECT id, v FROM t ORDER BY id") as cur:
            assert [d[0] for d in cur.description] == ["id", "v"]
            assert [dict(r) async for r in cur] == [
                {"id": 1, "v": "a"},
                {"id": 2, "v": "b"},
                {"id": 3, "v": "c"},
            ]
        empty = await db.execute("SELECT id, v FROM t WHERE id < 0")
        assert [d[0] for d in empty.description] == ["id", "v"]
        assert await empty.fetchall() == []
        returning = await db.execute("INSERT INTO t(v) VALUES ('d') RETURNING id, v")
        assert [tuple(r) for r in await returning.fetchall()] == [(4, "d")]
        assert [d[0] for d in returning.description] == ["id", "v"]
        await db.commit()
        db.text_factory = bytes
        assert [tuple(r) for r in await db.execute_fetchall("SELECT v FROM t WHERE id = 1")] == [
            (b"a",)
        ]


async def test_in_memory_databases_are_each_their_own(tmp_path: Path) -> None:
    async with aiosqlite.connect(":memory:") as a, aiosqlite.connect(":memory:") as b:
        await a.execute("CREATE TABLE t(x)")
        await a.execute("INSERT INTO t VALUES (1)")
        await a.commit()
        assert await a.execute_fetchall("SELECT x FROM t") == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await b.execute("SELECT x FROM t")


async def test_close_rolls_back_every_task_and_leaves_no_thread(path: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    assert not [t for t in threading.enumerate() if "litegate" in t.name]  # (a fresh file)
    db = await aiosqlite.connect(path)
    await _table(db)
    holding = asyncio.Event()

    async def holds() -> None:
        await db.execute("INSERT INTO t(v) VALUES ('open')")
        holding.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(holds())
    await holding.wait()
    await db.close()  # (rolls back the other task's transaction; the engine closes)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ValueError, match="no active connection"):
        await db.execute("SELECT 1")
    left = [  # (the engine's writer and reader threads; the loop's executor is the loop's)
        t for t in threading.enumerate() if t.ident not in before and "litegate" in t.name
    ]
    assert left == [], left
    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT count(*) FROM t").fetchone() == (0,)
    finally:
        check.close()


async def test_pragma_settings_follow_the_dropin_rules(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        cur = await db.execute("PRAGMA journal_mode=WAL")  # (what the engine has: accepted)
        assert await cur.fetchall() == [("wal",)]
        with pytest.raises(sqlite3.NotSupportedError, match="shares one engine"):
            await db.execute("PRAGMA journal_size_limit=16384")


async def test_functions_are_registered_on_the_engine(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        await db.create_function("twice", 1, lambda x: 2 * x, deterministic=True)
        await db.execute("INSERT INTO t(id, v) VALUES (twice(21), 'x')")
        await db.commit()
        assert await db.execute_fetchall("SELECT twice(id) FROM t") == [(84,)]


async def test_savepoints_nest_and_release_of_the_outermost_commits(path: str) -> None:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await _table(db)
        await db.execute("SAVEPOINT outer_sp")
        await db.execute("INSERT INTO t(v) VALUES ('kept')")
        await db.execute("SAVEPOINT inner_sp")
        await db.execute("INSERT INTO t(v) VALUES ('undone')")
        await db.execute("ROLLBACK TO inner_sp")
        await db.execute("RELEASE inner_sp")
        assert db.in_transaction
        await db.execute("RELEASE outer_sp")  # (the outermost: commits, gives the lane back)
        assert not db.in_transaction
        async with aiosqlite.connect(path, timeout=1) as other:
            await other.execute("INSERT INTO t(v) VALUES ('other')")
            await other.commit()
        rows = await db.execute_fetchall("SELECT v FROM t ORDER BY id")
        assert rows == [("kept",), ("other",)]
        await db.execute("BEGIN")
        await db.execute("SAVEPOINT sp")
        await db.execute("INSERT INTO t(v) VALUES ('in begin')")
        await db.execute("RELEASE sp")
        assert db.in_transaction  # (inside BEGIN a RELEASE only releases)
        await db.execute("ROLLBACK")
        assert await db.execute_fetchall("SELECT count(*) FROM t") == [(2,)]


async def test_per_task_off_makes_transactions_the_connections(path: str) -> None:
    async with aiosqlite.connect(path) as db, aiosqlite.connect(path) as other:
        await _table(db)
        db.per_task = False
        assert not db.per_task
        # a statement in a task of its own (asyncio.wait_for on 3.11, shield, gather): its
        # transaction is the connection's, not that task's, and the caller commits it
        await asyncio.wait_for(
            asyncio.ensure_future(db.execute("INSERT INTO t(v) VALUES ('a')")), 5
        )
        await asyncio.gather(
            *(db.execute("INSERT INTO t(v) VALUES (?)", (str(i),)) for i in range(4))
        )
        assert db.in_transaction
        with pytest.raises(sqlite3.ProgrammingError, match="per_task"):
            db.per_task = True
        assert not other.in_transaction  # (another connection's transactions stay apart)
        await db.commit()
        assert await other.execute_fetchall("SELECT count(*) FROM t") == [(5,)]
        db.per_task = True
        assert db.per_task


async def test_close_while_a_task_waits_for_the_lane_leaves_the_lane_free(path: str) -> None:
    async with aiosqlite.connect(path, timeout=2) as keep:
        await _table(keep)
        conn = await aiosqlite.connect(path, timeout=2)
        holding = asyncio.Event()

        async def holder() -> None:
            await conn.execute("INSERT INTO t(v) VALUES ('held')")
            holding.set()
            await asyncio.sleep(60)

        async def waiter() -> None:  # (waits for the lane while close() runs)
            await conn.execute("INSERT INTO t(v) VALUES ('waited')")
            await asyncio.sleep(60)

        h = asyncio.create_task(holder())
        await holding.wait()
        w = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
        await conn.close()  # (rolls the holder's transaction back)
        with pytest.raises(ValueError, match="no active connection"):
            await w  # (it got the lane from close's rollback: given back, and it fails)
        t0 = time.monotonic()
        await keep.execute("INSERT INTO t(v) VALUES ('other')")  # (the lane is free)
        await keep.commit()
        assert time.monotonic() - t0 < 1.0
        h.cancel()
        with pytest.raises(asyncio.CancelledError):
            await h
        assert await keep.execute_fetchall("SELECT v FROM t") == [("other",)]


async def test_a_query_classified_as_a_write_keeps_its_description(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        await db.execute("INSERT INTO t(v) VALUES ('a-b')")
        await db.commit()
        db.row_factory = aiosqlite.Row
        sql = "WITH c AS (SELECT v FROM t) SELECT replace(v, '-', '_') AS w FROM c"
        for _ in range(2):  # (outside a transaction, then inside one)
            cur = await db.execute(sql)
            assert [d[0] for d in cur.description] == ["w"]
            assert [dict(r) for r in await cur.fetchall()] == [{"w": "a_b"}]
            await db.execute("UPDATE t SET v = v")  # (opens the task's transaction)
        await db.rollback()


async def test_per_task_off_opens_one_transaction_for_concurrent_statements(path: str) -> None:
    async with aiosqlite.connect(path, timeout=2) as db, aiosqlite.connect(path) as other:
        await _table(db)
        db.per_task = False
        await other.execute("INSERT INTO t(v) VALUES ('busy')")  # (the lane is taken)
        release = asyncio.get_running_loop().call_later(0.1, asyncio.ensure_future, other.commit())
        try:
            results = await asyncio.gather(
                db.execute("INSERT INTO t(v) VALUES ('1')"),
                db.execute("INSERT INTO t(v) VALUES ('2')"),
            )
        finally:
            release.cancel()
        assert all(isinstance(r, aiosqlite.Cursor) for r in results)
        await db.commit()
        assert await db.execute_fetchall("SELECT count(*) FROM t") == [(3,)]


async def test_lastrowid_is_the_tasks_own_after_an_insert_that_inserted_nothing(
    path: str,
) -> None:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, k TEXT UNIQUE)")
        (first,) = await db.execute_insert("INSERT INTO u(k) VALUES ('a')")

        async def elsewhere() -> None:  # (another task inserts on the shared writer)
            for i in range(5):
                await db.execute("INSERT INTO u(k) VALUES (?)", (f"x{i}",))

        await asyncio.create_task(elsewhere())
        cur = await db.execute("INSERT OR IGNORE INTO u(k) VALUES ('a')")
        assert cur.rowcount == 0
        assert cur.lastrowid == first  # (not the other task's last row)


async def test_connection_pragmas_inside_a_transaction_and_on_memory(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        await db.execute("INSERT INTO t(v) VALUES ('x')")
        await db.execute("PRAGMA busy_timeout = 1000")  # (accepted, as litegate.sqlite3 does)
        await db.execute("PRAGMA journal_mode = WAL")
        await db.rollback()
    async with aiosqlite.connect(":memory:") as mem:
        await mem.execute("CREATE TABLE p(id INTEGER PRIMARY KEY)")
        await mem.execute("CREATE TABLE c(p INTEGER REFERENCES p(id))")
        await mem.execute("PRAGMA foreign_keys = ON")  # (this database's, not another's)
        assert await mem.execute_fetchall("PRAGMA foreign_keys") == [(1,)]
        with pytest.raises(sqlite3.IntegrityError):
            await mem.execute("INSERT INTO c VALUES (42)")


async def test_connecting_to_an_open_engine_takes_no_thread(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a thread's start holds the loop until the thread runs: 31 ms under load in CI; so does
    # realpath's system calls, each giving up the GIL: 43 ms)
    first = await aiosqlite.connect(path)
    calls: list[object] = []
    real = asyncio.to_thread

    async def counted(fn: object, *args: object, **kwargs: object) -> object:
        calls.append(fn)
        return await real(fn, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "to_thread", counted)
    for _ in range(3):
        db = await aiosqlite.connect(path)
        assert db.engine is first.engine
        await db.close()
    assert calls == []
    await first.close()  # (the last: closes the engine, in a thread)
    assert len(calls) == 1


async def test_a_task_started_before_its_starters_transaction_reads_inline_outside_it(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child holds its starter's context from before the starter's transaction: its
    reads are outside that transaction, on the fast path (inline), not on a reader thread."""
    from litegate._engine._local import LocalEngine

    async with aiosqlite.connect(path, litegate={"readers": 2}) as db:
        await _table(db)
        await db.execute("INSERT INTO t(v) VALUES ('committed')")
        await db.commit()
        seen: list[str] = []
        real = LocalEngine.query_inline

        def spy(self: LocalEngine, sql: str, *args: object) -> object:
            seen.append(sql)
            return real(self, sql, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(LocalEngine, "query_inline", spy)
        go = asyncio.Event()

        async def child() -> list[tuple[str]]:
            await go.wait()
            rows: list[tuple[str]] = list(await db.execute_fetchall("SELECT v FROM t"))
            assert not db.in_transaction
            return rows

        task = asyncio.create_task(child())
        await db.execute("INSERT INTO t(v) VALUES ('open')")  # (the starter's transaction)
        seen.clear()
        go.set()
        assert await task == [("committed",)]  # (not the starter's uncommitted row)
        assert seen == ["SELECT v FROM t"]
        await db.rollback()


async def test_a_cursor_of_a_connection_never_opened_says_so(path: str) -> None:
    db = aiosqlite.connect(path)  # (never awaited)
    with pytest.raises(ValueError, match="closed"):
        await aiosqlite.Cursor(db).fetchone()
    with pytest.raises(ValueError, match="closed"):
        await aiosqlite.Cursor(db).fetchall()


def test_stop_with_no_loop_gives_a_snapshots_reader_back(path: str) -> None:
    """A task's read-only snapshot holds a reader; ``stop()`` from a thread with no loop
    running gives it back (before, the release needed a loop and the reader stayed lent)."""
    box: dict[str, object] = {}

    async def start() -> None:
        db = await aiosqlite.connect(path, litegate={"readers": 1})
        await _table(db)
        held = asyncio.Event()

        async def holder() -> None:
            db.read_only = True
            await db.execute("BEGIN")
            await db.execute_fetchall("SELECT * FROM t")
            assert db.in_transaction
            held.set()
            await asyncio.sleep(3600)

        box["task"] = asyncio.create_task(holder())
        await held.wait()
        box["db"] = db

    loop = asyncio.new_event_loop()
    other = dropin.connect(path, timeout=1, litegate={"readers": 1})  # (one engine: one reader)
    try:
        loop.run_until_complete(start())
        db = box["db"]
        assert isinstance(db, aiosqlite.Connection)
        db.stop()  # (no loop runs in this thread now)
        assert other.execute("SELECT count(*) FROM t").fetchone() == (0,)  # (the reader)
    finally:
        task = box.get("task")
        if isinstance(task, asyncio.Task):
            task.cancel()
            loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
        other.close()


async def test_a_with_clauses_insert_sets_the_tasks_last_row_id(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await _table(db)
        await db.execute("INSERT INTO t(v) VALUES ('one')")
        await db.commit()
        sql = "WITH x AS (SELECT 'two') INSERT INTO t(v) SELECT * FROM x"
        assert await db.execute_insert(sql) == (2,)
        assert not db.in_transaction  # (no implicit transaction, as sqlite3's)

        async def other() -> None:
            await db.execute("INSERT INTO t(v) VALUES ('three')")
            await db.commit()

        await asyncio.create_task(other())
        cur = await db.execute("WITH x AS (SELECT 1) UPDATE t SET v = 'x' WHERE id IN x")
        assert cur.lastrowid == 2  # (not the other task's row 3)
