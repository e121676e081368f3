"""Plain sqlite3, as the folk remedies use it: opening a connection and the operations, each
written plainly and correctly (explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``, rollback on any
error). The remedies and the references share them, so they differ only in how they share the
connection.

Threads: each function runs on the thread that calls it, on a connection that thread may use.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from .workloads import (
    BUSY_TIMEOUT,
    SQL_BALANCE,
    SQL_CREDIT,
    SQL_DEBIT,
    SQL_READ,
    SQL_SCAN,
)

__all__ = (
    "MAX_RETRIES",
    "open_plain",
    "plain_read",
    "plain_scan",
    "plain_transfer",
    "plain_write",
    "retrying",
    "transfer_body",
)

MAX_RETRIES = 10
T = TypeVar("T")


def open_plain(
    path: str, synchronous: str = "FULL", *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """A plain sqlite3 connection as the folk remedies open it: WAL, ``synchronous`` as
    given, busy timeout 5 s, explicit transactions (``isolation_level=None``)."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=check_same_thread
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def plain_read(conn: sqlite3.Connection, key: int) -> Any:
    return conn.execute(SQL_READ, (key,)).fetchone()


def plain_scan(conn: sqlite3.Connection, low: int) -> list[Any]:
    return conn.execute(SQL_SCAN, (low, low)).fetchall()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.rollback()


def plain_write(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    """One write in its own transaction. On any error the transaction is rolled back."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def plain_transfer(conn: sqlite3.Connection, src: int, dst: int, amount: int) -> bool:
    """One interactive transfer: ``BEGIN IMMEDIATE``, read both balances, move ``amount`` if
    the source has it, ``COMMIT``. True when money moved."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        moved = transfer_body(conn, src, dst, amount)
        conn.execute("COMMIT")
        return moved
    except BaseException:
        _rollback(conn)
        raise


def transfer_body(conn: sqlite3.Connection, src: int, dst: int, amount: int) -> bool:
    """A transfer's statements, inside a transaction someone else began: read both
    balances, move ``amount`` if the source has it. True when money moved."""
    (balance,) = conn.execute(SQL_BALANCE, (src,)).fetchone()
    conn.execute(SQL_BALANCE, (dst,)).fetchone()
    moved: bool = balance >= amount
    if moved:
        conn.execute(SQL_DEBIT, (amount, src))
        conn.execute(SQL_CREDIT, (amount, dst))
    return moved


def retrying(fn: Callable[[], T], count: Callable[[], None]) -> T:
    """``fn()``, run again (up to ``MAX_RETRIES`` times) when it fails with ``database is
    locked`` (the busy timeout ran out); ``count()`` is called once per retry. What a careful
    user of several connections writes; any other error propagates at once."""
    tries = 0
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc) or tries >= MAX_RETRIES:
                raise
            tries += 1
            count()
