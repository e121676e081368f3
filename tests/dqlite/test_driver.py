"""The engine's sessions on the real dqlite driver (litegate/_cluster/_driver.py): a statement
sent the direct way (the driver's client layer, once its text passed the DB-API cursor) gives
what the cursor gives -- values of every wire type, ``description``, ``rowcount``,
``lastrowid``, rows made by the row factory, the same errors -- and is taken where it applies."""

from __future__ import annotations

import datetime
import sqlite3
import uuid
from typing import Any

import pytest

from litegate._cluster._driver import DriverAsyncSession, load_driver
from litegate._cluster._link import Outcome
from litegate._dqlite_cluster import Cluster

pytestmark = pytest.mark.anyio


def as_tuples(out: Outcome) -> tuple[Any, ...]:
    return (out.description, [tuple(r) for r in out.rows], out.rowcount, out.lastrowid)


async def open_session(cluster: Cluster, row_factory: Any) -> DriverAsyncSession:
    _, open_async = load_driver()
    session = open_async(
        cluster.seeds[0],
        "d" + uuid.uuid4().hex[:12],
        timeout=5.0,
        busy_timeout=5.0,
        row_factory=row_factory,
    )
    assert isinstance(session, DriverAsyncSession)
    await session.connect()
    return session


@pytest.mark.parametrize("row_factory", [None, sqlite3.Row], ids=["tuples", "rows"])
async def test_the_direct_way_gives_what_the_cursor_gives(
    cluster: Cluster, row_factory: Any
) -> None:
    s = await open_session(cluster, row_factory)
    try:
        await s.run(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, i INTEGER, r REAL, x TEXT, b BLOB, "
            "d DATETIME, f BOOLEAN)",
            (),
            False,
        )
        row = (7, 2.5, "text", b"\x00\x01", "2026-12-03 10:11:12", True)
        insert = "INSERT INTO t(i, r, x, b, d, f) VALUES (?, ?, ?, ?, ?, ?)"
        select = "SELECT id, i, r, x, b, d, f, NULL AS n FROM t WHERE i >= ? ORDER BY id"
        update = "UPDATE t SET r = r + ? WHERE i >= ?"
        await s.run("BEGIN IMMEDIATE", (), False)
        first = [
            as_tuples(await s.run(insert, row, False)),
            as_tuples(await s.run(select, (0,), False)),
            as_tuples(await s.run(update, (1.0, 0), False)),
        ]
        before = s.direct_runs
        again = [
            as_tuples(await s.run(insert, row, False)),
            as_tuples(await s.run(select, (0,), False)),
            as_tuples(await s.run(update, (1.0, 0), False)),
        ]
        assert s.direct_runs == before + 3  # (the second time, each went the direct way)
        assert again[0][1:3] == first[0][1:3] and again[0][3] == first[0][3] + 1  # (next rowid)
        assert again[2] == (None, [], 2, None) and first[2] == (None, [], 1, None)
        rows = again[1][1]
        assert again[1][0] == first[1][0]  # (description: names and type codes alike)
        was = first[1][1][0]
        assert len(rows) == 2 and rows[0][2] == was[2] + 1.0  # (the first UPDATE's)
        assert rows[0][:2] + rows[0][3:] == was[:2] + was[3:]
        assert isinstance(rows[0][5], datetime.datetime) and rows[0][6] is True
        assert rows[0][7] is None
        if row_factory is not None:  # (rows by name, as the cursor's)
            out = await s.run(select, (0,), False)
            assert out.rows[0]["x"] == "text" and out.rows[1]["i"] == 7
        with pytest.raises(Exception) as direct_error:  # (a constraint: the cursor's class)
            await s.run("INSERT INTO t(id, i) VALUES (?, ?)", (1, 0), False)
        await s.run("COMMIT", (), False)
        with pytest.raises(Exception) as cursor_error:
            await s.run("INSERT INTO t(id, i) VALUES (?, ?)", (1, 0), False)
        assert type(direct_error.value) is type(cursor_error.value)
        assert "IntegrityError" in type(direct_error.value).__name__
        before = s.direct_runs
        out = await s.run(select, (0,), False)  # (a read in autocommit: direct too)
        assert s.direct_runs == before + 1 and len(out.rows) == 2
        await s.run("INSERT INTO t(i) VALUES (?)", (9,), False)  # (a write outside: the cursor)
        await s.run("INSERT INTO t(i) VALUES (?)", (9,), False)
        assert s.direct_runs == before + 1
        await s.run("BEGIN IMMEDIATE", (), False)  # (savepoints in it: the direct way too)
        before = s.direct_runs
        for _ in range(2):
            await s.run("SAVEPOINT sp", (), False)
            await s.run("INSERT INTO t(i) VALUES (?)", (8,), False)
            await s.run("ROLLBACK TO sp", (), False)
            await s.run("RELEASE sp", (), False)
        assert s.in_transaction and s.direct_runs == before + 5  # (the second round: all 4)
        await s.run("COMMIT", (), False)
        assert not s.in_transaction
        assert (await s.run("SELECT count(*) FROM t WHERE i = ?", (8,), False)).rows[0][0] == 0
        before = s.direct_runs
        await s.run("BEGIN DEFERRED", (), False)  # (a read transaction: a write in it may
        await s.run("INSERT INTO t(i) VALUES (?)", (9,), False)  # meet busy: the cursor's way)
        await s.run("COMMIT", (), False)
        assert s.direct_runs == before
        before = s.direct_runs
        with pytest.raises(Exception, match="(?i)binding|parameter"):
            await s.run(select, (0, 1), False)  # (another count of parameters: the cursor's check)
        assert s.direct_runs == before
    finally:
        await s.close()
