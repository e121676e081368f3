"""What the contenders are asked to do: the schema, the seeded template file, the workloads
(operation mixes) and the check that a file holds exactly the acknowledged writes.

A :class:`Workload` is only an operation mix; how many workers run it (threads or tasks), at
which ``synchronous`` level and on how many rows is the :class:`Case`'s business, so both
suites share one set of workloads. Each worker draws its operations from :func:`operations`, a
generator seeded per worker, so every contender of a case sees the same sequence of keys and
operation kinds.

Threads: everything here is called from the harness's main thread (or a child process's),
except the generator returned by :func:`operations`, which one worker (thread or task) owns.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = (
    "ACCOUNTS",
    "BUSY_TIMEOUT",
    "Case",
    "DataCheck",
    "INSERT",
    "KIND_NAMES",
    "KINDS",
    "Op",
    "PAD",
    "READ",
    "ROWS",
    "SCAN",
    "SCAN_ROWS",
    "SLOW",
    "SQL_BALANCE",
    "SQL_CREDIT",
    "SQL_DEBIT",
    "SQL_INSERT",
    "SQL_READ",
    "SQL_SCAN",
    "SQL_SLOW",
    "SQL_UPDATE",
    "START_BALANCE",
    "TRANSFER",
    "UPDATE",
    "WORKLOADS",
    "Workload",
    "calibrate_slow",
    "check_data",
    "operations",
    "reset",
    "seed_template",
)

ROWS = 10_000
"""Rows seeded into ``kv`` by default (the async suite); point reads and updates pick one."""
PAD = "x" * 100
BUSY_TIMEOUT = 5.0
"""The remedies' busy timeout (``sqlite3.connect(timeout=5)``) and queue-pool wait."""
ACCOUNTS = 1_000
START_BALANCE = 1_000
"""``accounts`` rows and each one's opening balance: the balances always sum to the product."""
SCAN_ROWS = 100
MAX_AMOUNT = 100
"""A transfer moves 1..MAX_AMOUNT, so now and then a source cannot pay and nothing moves."""

_SCHEMA = """
CREATE TABLE kv(id INTEGER PRIMARY KEY, val INTEGER NOT NULL, pad TEXT NOT NULL);
CREATE TABLE events(id INTEGER PRIMARY KEY, kv_id INTEGER NOT NULL, worker INTEGER NOT NULL,
                    pad TEXT NOT NULL);
CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL,
                      moves INTEGER NOT NULL DEFAULT 0);
CREATE TABLE sink(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
"""
SQL_READ = "SELECT id, val, pad FROM kv WHERE id = ?"
SQL_SCAN = f"SELECT id, val, pad FROM kv WHERE id BETWEEN ? AND ? + {SCAN_ROWS - 1}"
SQL_UPDATE = "UPDATE kv SET val = val + 1 WHERE id = ?"
SQL_INSERT = "INSERT INTO events(kv_id, worker, pad) VALUES (?, ?, ?)"
SQL_BALANCE = "SELECT balance FROM accounts WHERE id = ?"
# ``moves`` counts the transfers that touched an account: sum(moves) / 2 = transfers applied.
SQL_DEBIT = "UPDATE accounts SET balance = balance - ?, moves = moves + 1 WHERE id = ?"
SQL_CREDIT = "UPDATE accounts SET balance = balance + ?, moves = moves + 1 WHERE id = ?"
SQL_SLOW = (
    "INSERT INTO sink(n) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
    "WHERE x < ?) SELECT count(*) FROM c"
)
"""One write statement that is slow by itself (counting ``?`` rows of a recursive CTE, in C,
without the GIL) and adds one row to ``sink``."""
_SQL_FOUND = (
    "SELECT (SELECT count(*) FROM events), (SELECT coalesce(sum(val), 0) FROM kv), "
    "(SELECT coalesce(sum(moves), 0) FROM accounts), (SELECT sum(balance) FROM accounts), "
    "(SELECT min(balance) FROM accounts), (SELECT count(*) FROM sink)"
)

# Operation kinds: indexes into a worker's tuple of calls and of latency lists (runner.py).
READ = 0
"""``contender.read(key)``"""
UPDATE = 1
"""``contender.write(SQL_UPDATE, (key,))``: one increment of ``kv.val``"""
INSERT = 2
"""``contender.write(SQL_INSERT, (key, worker, PAD))``: one row in ``events``"""
SCAN = 3
"""``contender.scan(low)``: ``SCAN_ROWS`` rows from ``low``"""
TRANSFER = 4
"""``contender.transfer(src, dst, amount)``: an interactive transaction; True if it moved"""
SLOW = 5
"""``contender.write(SQL_SLOW, (n,))``: one slow write statement in its own transaction"""
KINDS = 6
KIND_NAMES = ("read", "update", "insert", "scan", "transfer", "slow")

Op = tuple[int, tuple[Any, ...]]
"""``(kind, args)``: the contender call for ``kind``, with ``args``."""


@dataclass(frozen=True, slots=True)
class Workload:
    """What each worker does. ``shape`` picks the generator: ``point`` (``write_fraction`` of
    the operations are single-row write transactions, half UPDATE, half INSERT, the rest point
    reads), ``scan``, ``transfer`` or ``slow`` (worker 0 runs slow writes back to back, the
    others transfers)."""

    name: str
    write_fraction: float
    description: str
    shape: str = "point"


WORKLOADS: dict[str, Workload] = {
    "reads": Workload("reads", 0.0, "point reads by primary key"),
    "writes": Workload("writes", 1.0, "single-row write transactions"),
    "mixed": Workload("mixed", 0.10, "90% point reads / 10% single-row writes"),
    "scans": Workload("scans", 0.0, f"{SCAN_ROWS}-row range scans by primary key", "scan"),
    "transfers": Workload(
        "transfers",
        1.0,
        "interactive transfers (BEGIN IMMEDIATE, read 2 balances, update both, COMMIT)",
        "transfer",
    ),
    "slow-tx": Workload(
        "slow-tx",
        1.0,
        "one task runs a slow write statement back to back, the others transfers",
        "slow",
    ),
}


@dataclass(frozen=True, slots=True)
class Case:
    """One row block of a report: a workload run by ``workers`` concurrent threads or tasks at
    ``synchronous`` on a ``kv`` table of ``rows`` rows. ``label`` names it in the report
    (``"writes"``, or ``"writes x64"`` where a suite runs a workload at several worker counts);
    ``slow_rows`` sizes the slow statement of the ``slow`` shape."""

    workload: Workload
    workers: int
    label: str
    synchronous: str = "FULL"
    rows: int = ROWS
    slow_rows: int = 0


def operations(case: Case, seed: int, worker: int) -> Iterator[Op]:
    """Worker ``worker``'s endless stream of operations for ``case``, from its own seeded RNG."""
    rng = random.Random(seed * 1000 + worker)
    shape = case.workload.shape
    if shape == "scan":
        return _scans(rng, case.rows)
    if shape == "transfer" or (shape == "slow" and worker != 0):
        return _transfers(rng)
    if shape == "slow":
        return _slow(case.slow_rows)
    return _points(rng, case.workload.write_fraction, case.rows, worker)


def _points(rng: random.Random, write_fraction: float, rows: int, worker: int) -> Iterator[Op]:
    """A random key, then a write with probability ``write_fraction`` (UPDATE and INSERT
    alternate, UPDATE first), else a point read."""
    draw_key, draw, top = rng.randrange, rng.random, rows + 1  # locals: this is the hot loop
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


def _scans(rng: random.Random, rows: int) -> Iterator[Op]:
    draw_key, top = rng.randrange, max(2, rows - SCAN_ROWS + 2)
    while True:
        yield SCAN, (draw_key(1, top),)


def _transfers(rng: random.Random) -> Iterator[Op]:
    draw = rng.randrange
    while True:
        src = draw(1, ACCOUNTS + 1)
        dst = draw(1, ACCOUNTS)
        if dst >= src:  # distinct, uniform over the other accounts
            dst += 1
        yield TRANSFER, (src, dst, draw(1, MAX_AMOUNT + 1))


def _slow(n: int) -> Iterator[Op]:
    while True:
        yield SLOW, (SQL_SLOW, (n,))


def seed_template(path: str, rows: int = ROWS) -> None:
    """Create the seeded file every run starts from (``rows`` rows in ``kv``, ``ACCOUNTS``
    accounts, WAL, no WAL content left)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO kv(id, val, pad) VALUES (?, 0, ?)", ((i, PAD) for i in range(1, rows + 1))
        )
        conn.executemany(
            "INSERT INTO accounts(id, balance) VALUES (?, ?)",
            ((i, START_BALANCE) for i in range(1, ACCOUNTS + 1)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def calibrate_slow(path: str, at_least: float = 0.05) -> tuple[int, float]:
    """The CTE size that makes ``SQL_SLOW`` take about ``1.5 * at_least`` seconds here (at
    least ``at_least`` on a quiet machine), measured on a scratch copy next to ``path``.
    Returns (rows, seconds one run took). Blocks for a fraction of a second."""
    scratch = path + ".calibrate"
    shutil.copyfile(path, scratch)
    conn = sqlite3.connect(scratch, isolation_level=None)
    try:
        n, took = 20_000, 0.0
        while n < 50_000_000:
            t0 = time.perf_counter()
            conn.execute(SQL_SLOW, (n,))
            took = time.perf_counter() - t0
            if took >= at_least / 4:
                break
            n *= 4
        n = max(n, int(n * 1.5 * at_least / max(took, 1e-6)))
        t0 = time.perf_counter()
        conn.execute(SQL_SLOW, (n,))
        return n, time.perf_counter() - t0
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(scratch + suffix)
            except FileNotFoundError:
                pass


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
    """Does the file hold exactly the acknowledged writes, and do the accounts balance?"""

    ok: bool
    expected_inserts: int
    found_inserts: int
    expected_updates: int
    found_updates: int
    integrity: str
    expected_transfers: int = 0
    found_transfers: int = 0
    balance_sum: int = ACCOUNTS * START_BALANCE
    min_balance: int = START_BALANCE
    expected_slow: int = 0
    found_slow: int = 0

    @property
    def text(self) -> str:
        if self.ok:
            return "ok"
        parts = []
        if self.found_inserts != self.expected_inserts:
            parts.append(f"rows {self.found_inserts} != acked {self.expected_inserts}")
        if self.found_updates != self.expected_updates:
            parts.append(f"increments {self.found_updates} != acked {self.expected_updates}")
        if self.found_transfers != self.expected_transfers:
            parts.append(f"transfers {self.found_transfers} != acked {self.expected_transfers}")
        if self.balance_sum != ACCOUNTS * START_BALANCE:
            parts.append(f"balances sum to {self.balance_sum}, not {ACCOUNTS * START_BALANCE}")
        if self.min_balance < 0:
            parts.append(f"a balance is negative ({self.min_balance})")
        if self.found_slow != self.expected_slow:
            parts.append(f"slow writes {self.found_slow} != acked {self.expected_slow}")
        if self.integrity != "ok":
            parts.append(f"integrity: {self.integrity}")
        return "MISMATCH " + "; ".join(parts)


def check_data(
    path: str, inserts: int, updates: int, transfers: int = 0, slow: int = 0
) -> DataCheck:
    """Count what the file at ``path`` holds against the acknowledged ``inserts``, ``updates``,
    applied ``transfers`` and ``slow`` writes, and check the accounts' invariants (the sum is
    unchanged, no balance is negative) and integrity; blocks for up to ``BUSY_TIMEOUT`` if
    something still holds a lock."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
    try:
        ins, upd, moves, total, low, sink = conn.execute(_SQL_FOUND).fetchone()
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    check = DataCheck(
        ok=False,
        expected_inserts=inserts,
        found_inserts=ins,
        expected_updates=updates,
        found_updates=upd,
        integrity=str(integrity),
        expected_transfers=transfers,
        found_transfers=moves // 2 if moves % 2 == 0 else -moves,  # odd: half a transfer
        balance_sum=total,
        min_balance=low,
        expected_slow=slow,
        found_slow=sink,
    )
    check.ok = (
        ins == inserts
        and upd == updates
        and check.found_transfers == transfers
        and total == ACCOUNTS * START_BALANCE
        and low >= 0
        and sink == slow
        and integrity == "ok"
    )
    return check
