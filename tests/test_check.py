"""litegate._check: read-only inspection of a database file."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from litegate._check import check_database


def make_db(path: Path, *, wal: bool, rows: int = 10) -> None:
    with closing(sqlite3.connect(path)) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE INDEX items_name ON items (name)")
        conn.executemany(
            "INSERT INTO items (name) VALUES (?)", [(f"item {i:06d}",) for i in range(rows)]
        )
        conn.commit()


def fingerprint(path: Path) -> tuple[str, int, list[str]]:
    data = path.read_bytes()
    siblings = sorted(p.name for p in path.parent.iterdir())
    return hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns, siblings


@pytest.fixture
def live_writer(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A WAL database with an open connection, so the -wal file has frames."""
    path = tmp_path / "live.db"
    make_db(path, wal=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO items (name) VALUES ('more')")
    conn.commit()
    try:
        yield path, conn
    finally:
        conn.close()


def test_healthy_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    make_db(path, wal=True)
    before = fingerprint(path)
    report = check_database(path)
    assert fingerprint(path) == before  # nothing written, no -wal/-shm left behind
    assert report.ok
    assert report.journal_mode == "wal"
    assert report.integrity == ("ok",)
    assert report.integrity_check == "quick_check"
    assert report.page_size == 4096
    assert report.page_count is not None and report.page_count >= 2
    assert report.freelist_count == 0
    assert report.foreign_key_violations == ()
    assert report.wal is None
    assert {p.severity for p in report.problems} <= {"note"}


def test_wal_state_with_a_live_writer(live_writer: tuple[Path, sqlite3.Connection]) -> None:
    path, _conn = live_writer
    report = check_database(path, full=True)
    assert report.ok
    assert report.integrity_check == "integrity_check"
    assert report.wal is not None
    assert report.wal.size_bytes > 0
    assert report.wal.frames is not None and report.wal.frames >= 1
    assert report.wal.pending == report.wal.frames  # autocheckpoint is off


def test_rollback_journal_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_db(path, wal=False)
    before = fingerprint(path)
    report = check_database(path)
    assert fingerprint(path) == before
    assert not report.ok
    assert report.journal_mode == "delete"
    assert [p.code for p in report.problems if p.severity != "note"] == ["journal-mode"]
    assert "WAL" in report.problems[0].fix


def test_fix_switches_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_db(path, wal=False)
    report = check_database(path, fix=True)
    assert report.fixed == ("journal_mode set to WAL",)
    assert report.ok and report.journal_mode == "wal"
    assert check_database(path).journal_mode == "wal"


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 200)
    report = check_database(path)
    assert not report.ok
    assert [p.code for p in report.problems] == ["not-a-database"]
    assert report.journal_mode is None


def test_corrupted_pages(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    make_db(path, wal=False, rows=5000)
    data = bytearray(path.read_bytes())
    page = 4096
    for n in range(3, len(data) // page - 1, 2):  # trash every other page after the schema
        data[n * page + 8 : n * page + 200] = b"\xff" * 192
    path.write_bytes(bytes(data))
    report = check_database(path)
    assert not report.ok
    errors = [p for p in report.problems if p.severity == "error"]
    assert errors and errors[0].code in ("integrity", "unreadable")
    assert report.integrity != ("ok",)


def test_foreign_key_violations(tmp_path: Path) -> None:
    path = tmp_path / "fk.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, p REFERENCES parent(id))")
        conn.execute("INSERT INTO child VALUES (1, 99)")
        conn.commit()
    report = check_database(path)
    assert report.foreign_key_violations == (("child", 1, "parent", 0),)
    assert [p.code for p in report.problems if p.severity == "error"] == ["foreign-keys"]


def test_empty_file_is_a_note(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    report = check_database(path)
    assert report.ok
    assert [p.code for p in report.problems] == ["empty"]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check_database(tmp_path / "nope.db")
    with pytest.raises(IsADirectoryError):
        check_database(tmp_path)
    assert not (tmp_path / "nope.db").exists()


def test_report_is_frozen(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    make_db(path, wal=True)
    report = check_database(path)
    with pytest.raises(AttributeError):
        report.journal_mode = "delete"  # type: ignore[misc]
