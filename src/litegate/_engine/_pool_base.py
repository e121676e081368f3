"""What both shapes of read pool share: the interface the engine uses (:class:`ReaderPool`),
the general :meth:`~ReaderPool.query` and :meth:`~ReaderPool.run` over ``acquire`` and
``release`` (:class:`Borrowing`), and how a returned reader is made clean or closed. The
shapes: :mod:`._pool` (a bounded pool) and :mod:`._pool_per_thread` (one reader per thread).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from typing import Any, Protocol, TypeVar

from .._statements import fetch
from .._types import Args, Bound, Fn, Params
from ._connection import ROLLBACK, run_limited

T = TypeVar("T")

__all__ = ("Borrowing", "ReaderPool", "checkin", "close_quietly")

logger = logging.getLogger("litegate")


class ReaderPool(Protocol):
    """What the engine needs of a read pool (both shapes implement it)."""

    mode: str
    size: int
    waits: int
    timeouts: int
    wait_times: deque[float]

    @property
    def open_count(self) -> int: ...
    @property
    def in_use(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def reads(self) -> int: ...

    def acquire(self, timeout: Bound) -> sqlite3.Connection:
        """Borrow a reader, waiting up to ``timeout`` seconds (``None``: no bound).

        :raises PoolTimeout: none became free in time
        :raises Closed: the pool is closed
        """

    def try_acquire(self) -> sqlite3.Connection | None:
        """An idle reader at once, or None (never blocks, never opens a connection)."""

    def release(self, conn: sqlite3.Connection, reads: int = 0) -> None:
        """Give a borrowed reader back (rolled back first if a transaction is open), adding
        ``reads`` to the reads made on it."""

    def query(self, sql: str, params: Params, timeout: Bound, first: bool) -> Any:
        """Borrow, run one query (its rows, or ``first``: its first row or None), give back."""

    def run(self, fn: Fn[T], args: Args, timeout: Bound) -> T:
        """Borrow, ``fn(conn, *args)`` (as :func:`~._connection.run_limited` with no time
        limit), give back."""

    def longest_holder(self) -> tuple[int, float] | None:
        """(thread ident, monotonic time since) of the reader held longest, or None."""

    def close(self) -> None: ...

    def quiesce(self, deadline: float) -> bool:
        """Before fork: stop new borrows until :meth:`resume`; True if no reader is in use
        (waiting until ``deadline`` for that)."""

    def resume(self) -> None: ...

    def abandon(self) -> list[sqlite3.Connection]:
        """After fork, in the child: forget every connection without closing it."""


def close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except Exception:  # close errors are logged, never raised
        logger.exception("litegate: closing a reader failed")


def checkin(conn: sqlite3.Connection) -> bool:
    """Make a returned reader clean; False if it is broken and must be discarded: its
    ROLLBACK failed, or the function it was lent to closed it (``ProgrammingError``: its
    caller got :class:`~litegate.Misuse` from ``run_limited``). (Time limits clear their own
    progress handler.)"""
    try:
        if conn.in_transaction:
            conn.execute(ROLLBACK)
        return True
    except sqlite3.Error:
        return False


class Borrowing:
    """:meth:`query` over a pool's ``acquire`` and ``release``: the general way, when the
    pool's one-frame fast path does not apply."""

    def acquire(self, timeout: Bound) -> sqlite3.Connection:
        raise NotImplementedError

    def release(self, conn: sqlite3.Connection, reads: int = 0) -> None:
        raise NotImplementedError

    def run(self, fn: Fn[T], args: Args, timeout: Bound) -> T:
        conn = self.acquire(timeout)
        reads = 0
        try:
            result = run_limited(conn, None, None, fn, *args)
            reads = 1
            return result
        finally:
            self.release(conn, reads)

    def query(self, sql: str, params: Params, timeout: Bound, first: bool) -> Any:
        return self.run(fetch, (sql, params, first), timeout)
