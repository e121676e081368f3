"""Database files as faults leave them: copies of a database with its -wal and -shm, and a
database whose last commits are only in its -wal (as a killed writer leaves it)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

__all__ = ("SUFFIXES", "copy_db", "remove_db", "wal_snapshot")

SUFFIXES = ("", "-wal", "-shm")


def copy_db(src: str | Path, dst: str | Path) -> None:
    """Copy a database and whichever of its -wal and -shm exist (removing the destination's
    own first, so no stale -wal is paired with the copy)."""
    remove_db(dst)
    for suffix in SUFFIXES:
        if os.path.exists(f"{src}{suffix}"):
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")


def remove_db(path: str | Path) -> None:
    for suffix in SUFFIXES:
        try:
            os.remove(f"{path}{suffix}")
        except FileNotFoundError:
            pass


def wal_snapshot(path: Path, build: Callable[[sqlite3.Connection], None]) -> None:
    """Make at ``path`` a WAL database whose commits made by ``build`` are only in the -wal:
    the files are copied while the connection that wrote them is open (closing it would
    checkpoint them into the database and delete the -wal)."""
    scratch = path.with_name(path.name + ".scratch")
    remove_db(scratch)
    conn = sqlite3.connect(scratch, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        build(conn)
        copy_db(scratch, path)
    finally:
        conn.close()
        remove_db(scratch)
