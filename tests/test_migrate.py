"""litegate.migrate: ordered steps, all or nothing, exactly once across processes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import litegate
from litegate.migrate import current_version, migrate, migrate_async

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import litegate
    from litegate.migrate import migrate

    def log(conn, version, pause=0.0):
        time.sleep(pause)  # keep the write lock a while: the others must wait, not re-apply
        conn.execute("INSERT INTO applied(version, pid) VALUES (?, ?)", (version, os.getpid()))

    STEPS = [
        lambda c: (c.execute("CREATE TABLE applied(version INT, pid INT)"), log(c, 1)),
        lambda c: log(c, 2, 0.3),
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)",
        lambda c: (c.execute("INSERT INTO docs(body) VALUES ('seed')"), log(c, 4)),
    ]
    go = sys.argv[2]
    while not os.path.exists(go):  # start together
        time.sleep(0.001)
    with litegate.connect(sys.argv[1]) as db:
        print(migrate(db, STEPS), flush=True)
    """
)


def test_four_processes_starting_at_once_apply_each_step_exactly_once(tmp_path: Path) -> None:
    db_path = tmp_path / "m.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db_path), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        time.sleep(0.5)  # let every child import litegate and reach the start line
        go.write_text("go")
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "4"
    conn = sqlite3.connect(db_path)
    try:
        applied = conn.execute("SELECT version, pid FROM applied ORDER BY version").fetchall()
        assert [v for v, _ in applied] == [1, 2, 4]  # each logged step ran exactly once
        assert len({pid for _, pid in applied}) == 1  # all by the one process that won the race
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM docs").fetchone()[0] == 1
    finally:
        conn.close()


async def test_sync_and_async_forms(db_path: str) -> None:
    steps: list[litegate.Migration] = ["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"]

    def sync_first() -> None:
        with litegate.connect(db_path) as db:
            assert current_version(db) == 0
            assert migrate(db, steps[:1]) == 1
            assert current_version(db) == 1

    def sync_after() -> None:
        with litegate.connect(db_path) as db:
            assert db.query_value("SELECT count(*) FROM t") == 1
            with pytest.raises(litegate.MigrationError, match="failed"):
                migrate(db, [*steps, "INSERT INTO t VALUES (2)", "BOGUS"])
            assert current_version(db) == 2
            assert db.query_value("SELECT count(*) FROM t") == 1  # step 3 was rolled back with 4

    await asyncio.to_thread(sync_first)  # the sync form runs off the loop, as in an app
    async with litegate.connect_async(db_path) as adb:
        assert await migrate_async(adb, steps) == 2
    await asyncio.to_thread(sync_after)
