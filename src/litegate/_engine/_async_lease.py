"""Async leases: a connection held by one asyncio task across several awaits.

* :class:`AsyncLaneLease` -- the write lane, for an async transaction (or, with ``readers=0``,
  a snapshot). Its operations run on the writer thread, one at a time in the order sent, while
  the writer parks in the hold (:class:`~._jobs.AsyncLaneHold`); the loop never runs them.
* :class:`AsyncPooledRead` -- a reader kept across awaits (snapshots, iterations): point
  queries run inline on the loop under :data:`~._bridge.INLINE_BUDGET`, the rest on a reader
  thread pinned to this connection.

A lease belongs to the task that took it. Shared with other threads: the hold's operation queue
(a ``SimpleQueue``, guarded by the hold) and, for a pooled read, the in-flight job (handed to a
reader thread; its ``finished`` event says when that thread is done with the connection).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._errors import RolledBack
from .._statements import close_cursors, run_query
from .._types import Args, Bound, Params
from ._bridge import MISS, await_job, run_inline, uncancellable
from ._connection import (
    TxnGuard,
    begin_immediate,
    begin_snapshot,
    commit_or_rollback,
)
from ._counters import Counters
from ._jobs import READ, AsyncJob, AsyncLaneHold
from ._pool import ReaderPool
from ._readers import ReaderThreads

__all__ = ("AsyncLaneLease", "AsyncPooledRead")

logger = logging.getLogger("litegate")
_INFLIGHT_WAIT = 30.0  # seconds a release waits for its interrupted query


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve an unawaited operation's outcome (unretrieved, asyncio logs it at ERROR)."""
    if not fut.cancelled():
        fut.exception()


class AsyncLaneLease:
    """The write lane, held for an asyncio task until :meth:`end`."""

    __slots__ = ("_began", "_busy_timeout", "_counters", "_guard", "_hold", "committed")

    def __init__(
        self, hold: AsyncLaneHold, guard: TxnGuard, counters: Counters, busy_timeout: float
    ) -> None:
        self._hold = hold
        self._guard = guard
        self._counters = counters
        self._busy_timeout = busy_timeout
        self._began = False
        self.committed = False  # the COMMIT went through (set even if cancelled meanwhile)

    @property
    def lost(self) -> bool:
        """SQLite rolled the transaction back: every later operation raises RolledBack."""
        return self._hold.lost

    async def begin(self, busy_timeout: float | None = None) -> None:
        """``BEGIN IMMEDIATE`` on the writer (retrying while another process holds the lock).

        :raises Busy: the lock stayed taken for ``busy_timeout`` (default: the database's)
        """
        timeout = self._busy_timeout if busy_timeout is None else busy_timeout
        await self.run(begin_immediate, (self._guard, timeout, self._counters), None, None)
        self._began = True
        self._hold.txn_required = True

    async def begin_snapshot(self) -> None:
        """A read transaction pinned now (``readers=0`` snapshots)."""
        await self.run(begin_snapshot, (self._guard,), None, None)
        self._hold.txn_required = True

    def post(self, fn: Callable[..., Any], args: Args) -> asyncio.Future[Any]:
        """Send ``fn(conn, *args)`` without waiting: it runs after everything sent before it.

        :raises Misuse: the lease has ended
        """
        return self._hold.submit(fn, args, None, None).future

    async def run(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        """``fn(conn, *args)`` on the writer thread; a cancellation interrupts it (SQLite then
        rolls the transaction back: :attr:`lost`).

        :raises RolledBack: SQLite had already rolled the transaction back
        :raises Misuse: the lease has ended
        """
        return await await_job(self._hold.submit(fn, args, sql, limit), None)

    async def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        rows: list[Any] = await self.run(run_query, (sql, params), sql, limit)
        return rows

    async def commit(self) -> None:
        """``COMMIT`` on the writer. Not interrupted once sent: a cancellation meanwhile is
        re-raised after it finished, with :attr:`committed` telling whether it took effect.

        :raises RolledBack: the transaction was already gone (nothing committed)
        """
        job = self._hold.submit(commit_or_rollback, (self._guard,), None, None)
        try:
            _, cancelled = await uncancellable(job.future)
        except RolledBack as err:
            raise RolledBack(f"the transaction did not commit: {err}") from err
        self.committed = True
        if cancelled:
            raise asyncio.CancelledError

    def end(self) -> None:
        """Give the lane back; the writer rolls back whatever is still open. Idempotent, never
        blocks, safe at any point (also when the lease was never granted)."""
        if self._began:
            self._began = False
            self._counters.transactions += 1  # before the end: the lane is still ours
        self._hold.end()

    async def release(self, cursors: Sequence[sqlite3.Cursor] = ()) -> None:
        """Close ``cursors`` on the writer, then give the lane back (never blocks)."""
        if cursors:  # (ops run in order: before the end)
            self.post(close_cursors, (cursors,)).add_done_callback(_consume)
        self.end()


class AsyncPooledRead:
    """A reader held across awaits by one task until :meth:`release`."""

    __slots__ = ("_conn", "_inflight", "_pool", "_readers")

    def __init__(self, pool: ReaderPool, conn: sqlite3.Connection, readers: ReaderThreads) -> None:
        self._pool = pool
        self._conn: sqlite3.Connection | None = conn
        self._readers = readers
        self._inflight: AsyncJob | None = None  # the last job sent to a reader thread

    def _live(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the reader lease has ended")  # pragma: no cover - facade checks
        return conn

    async def begin_snapshot(self) -> None:
        """A read transaction pinned now (BEGIN and one page read: runs on the loop)."""
        begin_snapshot(self._live(), None)

    async def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        """The rows of a query: inline when it fits the budget, else on a reader thread."""
        if limit is None:
            rows: list[Any] = run_inline(self._live(), run_query, (sql, params))
            if rows is not MISS:
                return rows
        result: list[Any] = await self.run(run_query, (sql, params), sql, limit)
        return result

    async def run(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        """``fn(conn, *args)`` on a reader thread (this connection); cancellation interrupts."""
        conn = self._live()
        previous = self._inflight
        if previous is not None and previous.finished is not None:
            # A cancelled (interrupted) job may still be on a reader thread: one user of the
            # connection at a time, so wait for it (it ends soon: it was interrupted).
            if not previous.finished.is_set():
                await asyncio.to_thread(previous.finished.wait, _INFLIGHT_WAIT)
        job = AsyncJob(READ, fn, args, sql, limit, asyncio.get_running_loop(), self._readers.outbox)
        job.pinned = conn
        job.finished = threading.Event()
        self._readers.submit(job)
        self._inflight = job  # (after submit: a job refused with Closed never runs)
        return await await_job(job, None)

    async def release(self, cursors: Sequence[sqlite3.Cursor] = ()) -> None:
        """Close ``cursors``, then give the reader back, once no reader thread uses it any
        more. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        job, self._inflight = self._inflight, None
        if job is not None and job.finished is not None and not job.finished.is_set():
            # A cancelled query is being interrupted on a reader thread: the connection is
            # still in that thread's hands until it finishes (soon, interrupted).
            waiter = asyncio.ensure_future(asyncio.to_thread(job.finished.wait, _INFLIGHT_WAIT))
            try:
                finished = await asyncio.shield(waiter)
            except asyncio.CancelledError:  # give it back when the thread is done with it
                waiter.add_done_callback(lambda _: self._give_back(conn, cursors))
                raise
            if not finished:
                logger.error("litegate: an interrupted snapshot query did not finish")
        self._give_back(conn, cursors)

    def _give_back(self, conn: sqlite3.Connection, cursors: Sequence[sqlite3.Cursor]) -> None:
        # No reader thread uses the connection now: closing cursors here takes microseconds.
        # (They must be closed first: a statement left open keeps its snapshot after the
        # check-in's ROLLBACK, and the next borrower would read stale data.)
        close_cursors(conn, cursors)
        self._pool.release(conn)  # check-in rolls the read transaction back (fast)
