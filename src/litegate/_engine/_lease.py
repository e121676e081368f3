"""Sync leases: a connection held by one thread across several statements.

* :class:`LaneLease` -- the write lane, for an interactive transaction (or, with
  ``readers=0``, a snapshot or an iteration). The writer connection is reachable only through
  a live lease: after :meth:`LaneLease.release`, :attr:`~LaneLease.conn` raises.
* :class:`PooledRead` -- a reader borrowed from the pool (snapshots, iterations).
* :class:`NestedRead` -- with ``readers=0``, an iteration inside the caller's own transaction
  reads on the connection the caller already holds.

A lease belongs to the thread that took it (nothing here is shared between threads: the lease
object is its holder's alone, and the lane or pool it came from does its own locking).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TypeVar

from .._errors import Misuse, RolledBack
from .._types import Args, Bound, Fn
from ._authorizer import explain
from ._batch import is_open_in_transaction
from ._commit_gate import refused_error
from ._connection import (
    begin_immediate,
    begin_snapshot,
    commit_or_rollback,
    rollback,
    run_limited,
)
from ._counters import Counters
from ._jobs import LaneHold
from ._lane import WriteLane
from ._pool import ReaderPool

__all__ = ("LaneLease", "NestedRead", "PooledRead")

logger = logging.getLogger("litegate")

T = TypeVar("T")


def _rolled_back() -> RolledBack:
    return RolledBack(
        "a function caught an error after which SQLite rolled the whole transaction back; "
        "nothing of it will commit. Let such errors propagate"
    )


def _ended() -> Misuse:
    return Misuse("this connection lease has ended (use it inside its block)")


class _Lease:
    """What every sync lease has: the connection while live, statements under a time limit."""

    __slots__ = ("_conn",)
    _conn: sqlite3.Connection | None  # (each subclass sets it first thing: no super() call)
    _began = False  # a write transaction was begun (LaneLease: a slot)

    @property
    def conn(self) -> sqlite3.Connection:
        """The leased connection. :raises Misuse: the lease was released"""
        conn = self._conn
        if conn is None:
            raise _ended()
        return conn

    @property
    def live(self) -> bool:
        return self._conn is not None

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        return conn is not None and conn.in_transaction

    def run(self, fn: Fn[T], args: Args, sql: str | None, limit: Bound) -> T:
        """``fn(conn, *args)`` on the leased connection, interrupted after ``limit`` seconds
        (:class:`~litegate.QueryTimeout`)."""
        conn = self._conn  # (the conn property inlined: this runs once per statement)
        if conn is None:
            raise _ended()
        began = self._began
        if began and not conn.in_transaction:
            raise _rolled_back()  # (a statement now would run in autocommit mode: never)
        try:
            result = fn(conn, *args) if limit is None else run_limited(conn, limit, sql, fn, *args)
        except sqlite3.DatabaseError as exc:
            err = refused_error(explain(exc), in_transaction=began)
            if err is exc:
                raise
            raise err from exc  # refused by the authorizer or the commit gate: say why
        if began and not conn.in_transaction:
            # fn caught an error after which SQLite rolled the transaction back: whatever it
            # or a later statement does would run in autocommit mode. Never let it.
            raise _rolled_back()
        return result


class LaneLease(_Lease):
    """The write lane, held by the calling thread until :meth:`release`."""

    __slots__ = ("_began", "_busy_timeout", "_counters", "_hold", "_lane")

    def __init__(
        self,
        lane: WriteLane,
        conn: sqlite3.Connection,
        hold: LaneHold | None,
        counters: Counters,
        busy_timeout: float,
    ) -> None:
        self._conn = conn
        self._lane = lane
        self._hold = hold
        self._counters = counters
        self._busy_timeout = busy_timeout
        self._began = False  # a write transaction was begun (counted at release)

    def begin(self, busy_timeout: float | None = None) -> None:
        """``BEGIN IMMEDIATE``, retrying while another process holds the write lock.

        :raises Busy: the lock stayed taken for ``busy_timeout`` (default: the database's)
        """
        timeout = self._busy_timeout if busy_timeout is None else busy_timeout
        begin_immediate(self.conn, self._lane.guard, timeout, self._counters)
        self._began = True

    def begin_snapshot(self) -> None:
        """A read transaction pinned now (``readers=0`` snapshots)."""
        begin_snapshot(self.conn, self._lane.guard)

    def commit(self) -> None:
        """``COMMIT``; if it fails, the transaction is rolled back and the error raised."""
        commit_or_rollback(self.conn, self._lane.guard)

    def rollback(self) -> None:
        """``ROLLBACK`` (nothing when no transaction is open); never raises ``Exception``:
        a failure is logged (the connection is then checked at release)."""
        conn = self._conn
        if conn is None:
            return
        try:
            rollback(conn, self._lane.guard)
        except Exception:
            logger.exception("litegate: rollback failed")

    def release(self) -> None:
        """Give the lane back, rolling back whatever is still open. Idempotent, and safe to
        call again after an interrupt cut it short (the lane's give-back is idempotent)."""
        conn, self._conn = self._conn, None
        try:
            if conn is not None and is_open_in_transaction(conn):
                if self._began:  # a transaction's holder ends it itself: this is a bug
                    logger.error("litegate: a lane holder left a transaction open; rolling back")
                rollback(conn, self._lane.guard)
        finally:
            try:
                if self._began:
                    self._began = False
                    self._counters.transactions += 1  # (still holding the lane: its guard)
            finally:
                self._lane.give_back(self._hold)


class PooledRead(_Lease):
    """A reader borrowed from a pool by the calling thread until :meth:`release`."""

    __slots__ = ("_pool",)

    def __init__(self, pool: ReaderPool, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._pool = pool

    def begin_snapshot(self) -> None:
        """A read transaction pinned now: every later query sees this state."""
        begin_snapshot(self.conn, None)

    def release(self) -> None:
        """Give the reader back (its check-in rolls back a read transaction). Idempotent."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool.release(conn)


class NestedRead(_Lease):
    """``readers=0``, inside the caller's own transaction: reads on the connection it holds
    (its transaction sees its own writes). Releasing it releases nothing."""

    __slots__ = ()

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def begin_snapshot(self) -> None:
        raise Misuse(
            "db.snapshot() inside a transaction with readers=0 would wait for the "
            "transaction; read through the transaction object instead"
        )

    def release(self) -> None:
        self._conn = None
