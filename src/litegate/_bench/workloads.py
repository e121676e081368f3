"""What the contenders are asked to do: the schema, the seeded template file, the workloads
(operation mixes) and the check that a file holds exactly the acknowledged writes.

A :class:`Workload` is only an operation mix; how many workers run it (threads or tasks) is
the :class:`Case`'s business, so both suites share one set of workloads. Each worker draws its
operations from :func:`operations`, a generator seeded per worker, so every contender of a
case sees the same sequence of keys and operation kinds.

Threads: everything here is called from the harness's main thread, except the generator
returned by :func:`operations`, which one worker (thread or task) owns.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = (
    "BUSY_TIMEOUT",
    "Case",
    "DataCheck",
    "INSERT",
    "Op",
    "PAD",
    "READ",
    "ROWS",
    "SQL_INSERT",
    "SQL_READ",
    "SQL_UPDATE",
    "UPDATE",
    "WORKLOADS",
    "Workload",
    "check_data",
    "operations",
    "reset",
    "seed_template",
)

ROWS = 10_000
"""Rows seeded into ``kv``; point reads and updates pick a random one."""
PAD = "x" * 100
BUSY_TIMEOUT = 5.0
"""The remedies' busy timeout (``sqlite3.connect(timeout=5)``) and queue-pool wait."""

_SCHEMA = """
CREATE TABLE kv(id INTEGER PRIMARY KEY, val INTEGER NOT NULL, pad TEXT NOT NULL);
CREATE TABLE events(id INTEGER PRIMARY KEY, kv_id INTEGER NOT NULL, worker INTEGER NOT NULL,
                    pad TEXT NOT NULL);
"""
SQL_READ = "SELECT id, val, pad FROM kv WHERE id = ?"
SQL_UPDATE = "UPDATE kv SET val = val + 1 WHERE id = ?"
SQL_INSERT = "INSERT INTO events(kv_id, worker, pad) VALUES (?, ?, ?)"
_SQL_FOUND = "SELECT (SELECT count(*) FROM events), (SELECT coalesce(sum(val), 0) FROM kv)"

# Operation kinds: indexes into a worker's tuple of calls and of latency lists (runner.py).
READ = 0
"""``contender.read(key)``"""
UPDATE = 1
"""``contender.write(SQL_UPDATE, (key,))``: one increment of ``kv.val``"""
INSERT = 2
"""``contender.write(SQL_INSERT, (key, worker, PAD))``: one row in ``events``"""

Op = tuple[int, tuple[Any, ...]]
"""``(kind, args)``: the contender call for ``kind``, with ``args``."""


@dataclass(frozen=True, slots=True)
class Workload:
    """What each worker does: ``write_fraction`` of its operations are single-row write
    transactions (half UPDATE, half INSERT), the rest point reads by primary key."""

    name: str
    write_fraction: float
    description: str


WORKLOADS: dict[str, Workload] = {
    "reads": Workload("reads", 0.0, "point reads by primary key"),
    "writes": Workload("writes", 1.0, "single-row write transactions"),
    "mixed": Workload("mixed", 0.10, "90% point reads / 10% single-row writes"),
}


@dataclass(frozen=True, slots=True)
class Case:
    """One row block of a report: a workload run by ``workers`` concurrent threads or tasks.
    ``label`` names it in the report (``"writes"``, or ``"writes x64"`` where a suite runs a
    workload at several worker counts)."""

    workload: Workload
    workers: int
    label: str


def operations(workload: Workload, seed: int, worker: int) -> Iterator[Op]:
    """Worker ``worker``'s endless stream of operations, from its own seeded RNG: a random key,
    then a write with probability ``write_fraction`` (UPDATE and INSERT alternate, UPDATE
    first), else a point read."""
    rng = random.Random(seed * 1000 + worker)
    draw_key, draw, top = rng.randrange, rng.random, ROWS + 1  # locals: this is the hot loop
    write_fraction = workload.write_fraction
    inserting = False
    while True:
        key = draw_key(1, top)
        if draw() >= write_fraction:
            yield READ, (key,)
        elif inserting:
            yield INSERT, (SQL_INSERT, (key, worker, PAD))
            inserting = False
        else:
            yield UPDATE, (SQL_UPDATE, (key,))
            inserting = True


def seed_template(path: str) -> None:
    """Create the seeded file every run starts from (``ROWS`` rows in ``kv``, WAL, no WAL
    content left)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO kv(id, val, pad) VALUES (?, 0, ?)", ((i, PAD) for i in range(1, ROWS + 1))
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def reset(template: str, path: str) -> None:
    """Make ``path`` a fresh copy of the seeded template (no WAL, no shm)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    shutil.copyfile(template, path)


@dataclass(slots=True)
class DataCheck:
    """Does the file hold exactly the acknowledged writes?"""

    ok: bool
    expected_inserts: int
    found_inserts: int
    expected_updates: int
    found_updates: int
    integrity: str

    @property
    def text(self) -> str:
        if self.ok:
            return "ok"
        parts = []
        if self.found_inserts != self.expected_inserts:
            parts.append(f"rows {self.found_inserts} != acked {self.expected_inserts}")
        if self.found_updates != self.expected_updates:
            parts.append(f"increments {self.found_updates} != acked {self.expected_updates}")
        if self.integrity != "ok":
            parts.append(f"integrity: {self.integrity}")
        return "MISMATCH " + "; ".join(parts)


def check_data(path: str, inserts: int, updates: int) -> DataCheck:
    """Count what the file at ``path`` holds against the acknowledged ``inserts`` and
    ``updates``; blocks for up to ``BUSY_TIMEOUT`` if something still holds a lock."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
    try:
        found_inserts, found_updates = conn.execute(_SQL_FOUND).fetchone()
        (integrity,) = conn.execute("PRAGMA quick_check").fetchone()
    finally:
        conn.close()
    return DataCheck(
        ok=found_inserts == inserts and found_updates == updates and integrity == "ok",
        expected_inserts=inserts,
        found_inserts=found_inserts,
        expected_updates=updates,
        found_updates=found_updates,
        integrity=str(integrity),
    )
