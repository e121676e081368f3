"""Corrupt, truncated and foreign database files; damaged or missing -wal and -shm files.

What must hold: a file that is not a database (or whose schema cannot be read) fails at open
with sqlite3's own ``sqlite3.DatabaseError`` -- the same message plain sqlite3 gives when it
reads it -- leaving the file byte for byte as it was, with no -wal or -shm beside it and no
thread or engine behind. A damaged page fails the statements that read it, not the engine,
and is not made worse. Damage to the -wal or -shm gives exactly what plain sqlite3 reads from
an identical copy, and the files litegate leaves behind are intact.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import sqlite3
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbfiles import SUFFIXES, copy_db, wal_snapshot

import litegate

ROWS = 2000  # ~60 pages of t: a scan crosses many of them


def _fill(conn: sqlite3.Connection) -> None:
    """One transaction (``conn`` is in autocommit mode): tables ``u`` (5 rows) and ``t``."""
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO u(v) VALUES (?)", [(f"u{i}",) for i in range(5)])
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t(v) VALUES (?)", [("x" * 100,) for _ in range(ROWS)])
    conn.execute("COMMIT")


def _database(path: Path) -> None:
    """A valid rollback-journal database (as many users' files are before litegate sees them)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _fill(conn)
    finally:
        conn.close()


def _garbage(n: int, seed: int = 10) -> bytes:
    return random.Random(seed).randbytes(n)


def _zip(path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "not a database\n" * 1000)
    path.write_bytes(buf.getvalue())


def _bad_header(path: Path) -> None:
    _database(path)
    with open(path, "r+b") as f:
        f.write(b"SQLite format 2\x00")  # the magic string of another format


def _truncated(cut: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        _database(path)
        os.truncate(path, os.path.getsize(path) // 2 + cut)

    return make


UNOPENABLE: list[Any] = [
    pytest.param(lambda p: p.write_text("id,name\n1,hello\n" * 500), id="text"),
    pytest.param(_zip, id="zip"),
    pytest.param(lambda p: p.write_bytes(_garbage(64 * 1024)), id="random-bytes"),
    pytest.param(_bad_header, id="bad-header"),
    pytest.param(_truncated(0), id="truncated-at-page"),
    pytest.param(_truncated(123), id="truncated-mid-page"),
]


def _plain_error(path: Path) -> tuple[str, str]:
    """What plain sqlite3 raises reading a copy of ``path`` (through a table scan)."""
    copy = path.with_name("plain-" + path.name)
    copy_db(path, copy)
    conn = sqlite3.connect(copy)
    try:
        conn.execute("SELECT count(*) FROM t").fetchall()
    except sqlite3.Error as exc:
        return type(exc).__name__, str(exc)
    finally:
        conn.close()
    raise AssertionError("plain sqlite3 read the file")


async def _open_async(path: Path) -> None:
    adb = await litegate.connect_async(path, readers=2)
    await adb.close()  # (not reached: the open fails)


@pytest.mark.parametrize("facade", ["sync", "async"])
@pytest.mark.parametrize("make", UNOPENABLE)
def test_unreadable_file_fails_at_open_and_is_left_as_it_was(
    tmp_path: Path, make: Callable[[Path], None], facade: str
) -> None:
    path = tmp_path / "app.db"
    make(path)
    before = path.read_bytes()
    expected = _plain_error(path)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        if facade == "async":
            asyncio.run(_open_async(path))
        else:
            litegate.connect(path, readers=2)
    assert (type(caught.value).__name__, str(caught.value)) == expected
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted(["app.db", "plain-app.db"])


def _damage_page(path: Path) -> None:
    """Overwrite one leaf page of ``t`` (in the middle of the file) with garbage whose first
    byte is no valid page type, so every scan of ``t`` reports it."""
    conn = sqlite3.connect(path)
    try:
        page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        pages: int = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    with open(path, "r+b") as f:
        f.seek(pages // 2 * page_size)
        f.write(b"\x00" + _garbage(page_size - 1))


def _integrity(path: Path) -> list[str]:
    """``PRAGMA integrity_check``'s findings (or the error that stopped it)."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [f"{type(exc).__name__}: {exc}"]
    finally:
        conn.close()


def test_damaged_page_fails_its_statements_not_the_engine_and_is_not_made_worse(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    _database(path)
    _damage_page(path)
    problems = _integrity(path)
    assert problems != ["ok"]
    before = path.read_bytes()
    with litegate.connect(path, readers=2) as db:
        for _ in range(2):  # the reader that met the damage stays usable
            with pytest.raises(sqlite3.DatabaseError, match="database disk image is malformed"):
                db.query("SELECT count(*), sum(length(v)) FROM t")
            assert [r[0] for r in db.query("SELECT v FROM u ORDER BY id")] == [
                f"u{i}" for i in range(5)
            ]
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            db.execute("UPDATE t SET v = 'y'")  # a write that reads the page fails alone
        assert db.query_value("SELECT count(*) FROM u") == 5
    # Not made worse: what the integrity check finds is unchanged, and so is every byte but the
    # 100-byte header (litegate switched the file to WAL there).
    assert _integrity(path) == problems
    after = path.read_bytes()
    assert after[100:] == before[100:]
    with litegate.connect(path) as db:  # and writes elsewhere still work
        db.execute("INSERT INTO u(v) VALUES ('new')")
        assert db.query_value("SELECT count(*) FROM u") == 6


def _with_wal(path: Path) -> None:
    """Every commit in the -wal only: an early table, then ``u`` and ``t``, then one more row."""

    def build(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE early(x)")
        _fill(conn)
        conn.execute("INSERT INTO t(v) VALUES ('last')")

    wal_snapshot(path, build)


def _overwrite(suffix: str, start: int, length: int | None = None) -> Callable[[Path], None]:
    """Garbage over ``length`` bytes (to the end if None) of the -wal or -shm from ``start``
    (from the end if negative)."""

    def damage(path: Path) -> None:
        name = f"{path}{suffix}"
        data = bytearray(Path(name).read_bytes())
        begin = start % len(data)
        end = len(data) if length is None else begin + length
        data[begin:end] = _garbage(end - begin)
        Path(name).write_bytes(bytes(data))

    return damage


def _truncate(suffix: str, keep: float) -> Callable[[Path], None]:
    return lambda path: os.truncate(
        f"{path}{suffix}", int(os.path.getsize(f"{path}{suffix}") * keep)
    )


def _remove(suffix: str) -> Callable[[Path], None]:
    return lambda path: os.remove(f"{path}{suffix}")


SIDE_FILE_DAMAGE: list[Any] = [
    pytest.param(_overwrite("-wal", 0), id="wal-garbage"),
    pytest.param(_overwrite("-wal", 0, 32), id="wal-header"),
    pytest.param(_overwrite("-wal", -3000, 1000), id="wal-last-frames"),
    pytest.param(_truncate("-wal", 0.5), id="wal-truncated"),
    pytest.param(_truncate("-wal", 0.0), id="wal-empty"),
    pytest.param(_remove("-wal"), id="wal-missing"),
    pytest.param(_overwrite("-shm", 0), id="shm-garbage"),
    pytest.param(_truncate("-shm", 0.01), id="shm-truncated"),
    pytest.param(_remove("-shm"), id="shm-missing"),
    pytest.param(lambda path: None, id="intact"),
]


QUERIES = (
    "SELECT group_concat(name) FROM (SELECT name FROM sqlite_schema ORDER BY 1)",
    "SELECT count(*) FROM t",
    "SELECT max(id) FROM t",
)


def _outcome(read: Callable[[str], Any]) -> list[Any]:
    """What a reader sees: the tables, t's row count and last id, or the error each raised."""
    seen: list[Any] = []
    for sql in QUERIES:
        try:
            seen.append(read(sql))
        except sqlite3.Error as exc:
            seen.append(f"{type(exc).__name__}: {exc}")
    return seen


@pytest.mark.parametrize("damage", SIDE_FILE_DAMAGE)
def test_damaged_wal_or_shm_reads_as_plain_sqlite3_does(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    ours, plain = tmp_path / "ours.db", tmp_path / "plain.db"
    _with_wal(ours)
    damage(ours)
    copy_db(ours, plain)  # the same damaged files for both
    assert [os.path.exists(f"{ours}{s}") for s in SUFFIXES] == [
        os.path.exists(f"{plain}{s}") for s in SUFFIXES
    ]
    conn = sqlite3.connect(plain)
    try:
        expected = _outcome(lambda sql: conn.execute(sql).fetchone()[0])
    finally:
        conn.close()
    with litegate.connect(ours, readers=2) as db:
        seen = _outcome(db.query_value)
        assert seen == expected
        # The engine works on what it recovered: a write, then a read of it.
        db.execute("CREATE TABLE IF NOT EXISTS after(x)")
        db.execute("INSERT INTO after VALUES (1)")
        assert db.query_value("SELECT count(*) FROM after") == 1
    # What litegate left is intact and holds what it read, plus its own write.
    assert _integrity(ours) == ["ok"]
    conn = sqlite3.connect(ours)
    try:
        assert conn.execute("SELECT count(*) FROM after").fetchone()[0] == 1
        left = _outcome(lambda sql: conn.execute(sql).fetchone()[0])
        assert left[1:] == seen[1:]  # t as read (the tables now include "after")
    finally:
        conn.close()
