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
from threading import get_ident
from typing import Any, NoReturn, TypeVar

from .._errors import Busy, Misuse, RolledBack
from .._statements import (
    run_query,
)
from .._types import Args, Bound, Fn, Params
from ._authorizer import explain
from ._commit_gate import refused_error
from ._connection import begin_snapshot, run_limited
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
        try:  # (after SQLite rolled the transaction back, the commit gate refuses a write)
            result = fn(conn, *args) if limit is None else run_limited(conn, limit, sql, fn, *args)
        except sqlite3.DatabaseError as exc:
            self._failed(exc, conn, began)
        if began and not conn.in_transaction:
            # fn caught an error after which SQLite rolled the transaction back: whatever it
            # or a later statement does would run in autocommit mode. Never let it.
            self._rolled_back_under()
        return result

    def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        """The rows of a query: :meth:`run` of ``run_query``, flattened (one frame for every
        read of every transaction and snapshot: benchmarks/hot_paths.py)."""
        conn = self._conn
        if conn is None:
            raise _ended()
        if limit is not None:
            return self.run(run_query, (sql, params), sql, limit)
        began = self._began
        try:
            cur = conn.execute(sql, params)  # (run_query inlined)
            try:
                rows: list[Any] = cur.fetchall()
            finally:
                cur.close()
        except sqlite3.DatabaseError as exc:
            self._failed(exc, conn, began)
        if began and not conn.in_transaction:  # (as run's)
            self._rolled_back_under()
        return rows

    def _failed(
        self, exc: sqlite3.DatabaseError, conn: sqlite3.Connection, began: bool
    ) -> NoReturn:
        """A statement failed with ``exc``: raise what to tell the caller (the authorizer's or
        the commit gate's reason, if they refused it), the transaction marked lost if SQLite
        rolled it back."""
        if began and not _in_txn(conn):
            self._lost()  # (SQLite rolled it back with the error)
        err = refused_error(explain(exc), in_transaction=began)
        if err is exc:
            raise exc
        raise err from exc  # refused by the authorizer or the commit gate: say why

    def _rolled_back_under(self) -> NoReturn:
        """A statement succeeded, but SQLite rolled the transaction back (after an error its
        function caught): lost, and :class:`RolledBack`."""
        self._lost()
        raise _rolled_back()

    def _lost(self) -> None:
        """Hook: SQLite rolled the lease's write transaction back."""


class LaneLease(_Lease):
    """The write lane, held by the calling thread until its transaction's turn ends.

    With others waiting, a transaction's end hands the lane on without committing: its caller
    then waits for the group's shared COMMIT (:mod:`._group`). Where a COMMIT costs no fsync
    it commits first, then hands the lane on (nothing to share, a wake to save).
    """

    __slots__ = ("_began", "_busy_timeout", "_hold", "_lane", "_turn_over")

    def __init__(
        self, lane: WriteLane, conn: sqlite3.Connection, hold: LaneHold | None, busy_timeout: float
    ) -> None:
        self._conn = conn
        self._lane = lane
        self._hold = hold
        self._busy_timeout = busy_timeout
        self._began = False  # a write transaction was begun (its turn must end)
        self._turn_over = False  # its part is done: the lane was handed on or given back

    def begin(self, busy_timeout: float | None = None) -> None:
        """Join the open group (a savepoint) or ``BEGIN IMMEDIATE``, retrying while another
        process holds the write lock.

        :raises Busy: the lock stayed taken for ``busy_timeout`` (default: the database's)
        """
        if self._conn is None:  # (the conn property inlined: benchmarks/hot_paths.py)
            raise _ended()
        self._lane.start_turn(self._busy_timeout if busy_timeout is None else busy_timeout)
        self._began = True

    def settle(self) -> None:
        """Commit a group left open by the holder before (not begun: nothing of this lease's
        own is in it), so that the connection is outside any transaction: for statements
        SQLite runs only there (``VACUUM``, ``PRAGMA foreign_keys``)."""
        if self._lane.in_group:
            self._lane.commit_group()

    def run_alone(self, fn: Fn[T], args: Args, sql: str | None, limit: Bound) -> T:
        """A write of one statement, instead of :meth:`begin`, :meth:`run` and :meth:`commit`
        (then :meth:`release`): where a COMMIT costs no fsync, ``fn(conn, *args)`` in SQLite's
        autocommit mode, committed at the end of its own call
        (:meth:`~._lane.WriteLane.run_alone`): what the standard module does with
        ``isolation_level=None`` (an ``INSERT OR FAIL`` that fails keeps the rows it made
        before, as there). Elsewhere, or while another process holds the write lock (nothing
        ran), exactly those three. ``fn`` runs one statement to its end.

        :raises Misuse: this lease began a transaction
        """
        if self._conn is None:
            raise _ended()
        if self._began:
            raise Misuse("run_alone() is for a write outside a transaction")
        lane = self._lane
        if lane.commits_cheaply:
            try:
                result: T = lane.run_alone(run_limited, (limit, sql, fn, *args))
                return result
            except Busy:
                pass  # (nothing ran: BEGIN IMMEDIATE waits for the other process)
        self.begin()
        try:
            result = self.run(fn, args, sql, limit)
        except BaseException:
            self.rollback()
            raise
        self.commit()
        return result

    def begin_snapshot(self) -> None:
        """A read transaction pinned now (``readers=0`` snapshots); a group left open by the
        holder before is committed first."""
        conn = self.conn
        if self._lane.in_group:
            self._lane.commit_group()
        begin_snapshot(conn, self._lane.guard)

    def _lost(self) -> None:
        """SQLite rolled the shared transaction back: the group fails with it."""
        self._lane.lose_group("SQLite rolled it back after a failed statement")

    def commit(self) -> None:
        """End this transaction's part: with others waiting, hand the lane on and wait for
        the group's COMMIT; else COMMIT here (for the whole group). If the COMMIT fails, the
        transaction is rolled back and the error raised.

        :raises RolledBack: the group's shared transaction was lost (nothing committed)
        """
        if self._conn is None:
            raise _ended()
        lane = self._lane
        done = lane.commit_alone()  # the common case, in one call (benchmarks/hot_paths.py)
        if done is True:
            self._turn_over = True
            self._conn = None  # (given back: release has nothing left to do)
            self._began = False
            return
        if done is not False:  # its COMMIT failed: rolled back (release gives the lane back)
            self._turn_over = True
            raise done
        lane.release_turn()
        if lane.commits_cheaply:
            outcome = lane.commit_and_pass_on()
            self._turn_over = True
            if outcome is True:
                self._conn = None  # (the lane is the next holder's now)
                self._began = False
            elif outcome is not False:
                raise outcome
            return
        ticket = lane.hand_on()
        if ticket is not None:
            self._turn_over = True
            self._conn = None  # (the lane is the next holder's now)
            self._began = False
            lane.await_ticket(ticket)
            return
        error = lane.commit_group(own=True)
        self._turn_over = True
        if error is not None:
            raise error

    def rollback(self) -> None:
        """Undo this transaction's part (its savepoint, if it joined a group); never raises
        ``Exception``: a failure is logged (the connection is then checked at release)."""
        conn = self._conn
        if conn is None or self._turn_over:
            return
        try:
            self._undo()
        except Exception:
            logger.exception("litegate: rollback failed")

    def _undo(self) -> None:
        """Roll back this transaction's part, then hand the lane on or commit what the group
        holds of the others."""
        lane = self._lane
        lane.undo_turn()
        if lane.end_turn(None):
            self._turn_over = True
            self._conn = None
            self._began = False
            return
        lane.commit_group()  # (the others of the group, if any: their COMMIT)
        self._turn_over = True

    def release(self) -> None:
        """Give the lane back (unless it was handed on), undoing whatever of this
        transaction is still open. Idempotent, and safe to call again after an interrupt cut
        it short (the lane's give-back is idempotent)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        lane = self._lane
        if not lane.holds(get_ident()):
            return  # (handed on: an interrupt landed after the hand-over)
        try:
            try:
                open_txn = conn.in_transaction
            except sqlite3.ProgrammingError:  # closed by a function it was lent to
                open_txn = False
                lane.lose_group("a function closed the connection")
                lane.replace_closed()
            if not self._turn_over:
                if open_txn:
                    if self._began:  # a transaction's holder ends it itself: this is a bug
                        logger.error(
                            "litegate: a lane holder left a transaction open; rolling back"
                        )
                    self._undo()
                    if not lane.holds(get_ident()):
                        return
                elif self._began:
                    lane.lose_group("SQLite rolled the shared transaction back")
            if not lane.in_group and _in_txn(conn):
                lane.undo_turn()  # (left open by an interrupt: no group to keep it for)
        finally:
            self._began = False
            lane.give_back(self._hold)


def _in_txn(conn: sqlite3.Connection) -> bool:
    try:
        return conn.in_transaction
    except sqlite3.ProgrammingError:
        return False


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
