"""An async reader lease: a reader connection held by one asyncio task across several awaits
(snapshots, iterations). Point queries run inline on the loop under
:data:`~._inline.INLINE_BUDGET`; the rest on a reader thread pinned to this connection.

Shared with other threads: the in-flight job (handed to a reader thread; its ``finished``
event says when that thread is done with the connection). Everything else is its task's.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._statements import close_cursors, run_query
from .._types import Args, Bound, Params
from ._bridge import MISS, await_job, run_inline
from ._connection import begin_snapshot
from ._jobs import READ, AsyncJob
from ._pool import ReaderPool
from ._readers import ReaderThreads

__all__ = ("AsyncPooledRead",)

logger = logging.getLogger("litegate")
_INFLIGHT_WAIT = 30.0  # seconds a release waits for its interrupted query


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
        job = self._inflight
        if limit is None and (job is None or job.finished is None or job.finished.is_set()):
            # (Not while a cancelled query may still run on a reader thread: the inline guard's
            # set_progress_handler would wait for SQLite's connection mutex holding the GIL,
            # which that thread's progress handler needs before the mutex is let go -- the
            # whole process hung. run() waits for that thread in a thread.)
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

    def end(self) -> None:
        """:meth:`release` without awaiting, for a lease whose task runs none of its
        statements any more (the connection is closed with no loop running in the closing
        thread, or is collected): the reader goes back at once, or -- a job still on a reader
        thread, being interrupted -- once that ends (a helper thread waits for it).
        Idempotent, never blocks."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        job, self._inflight = self._inflight, None
        finished = None if job is None else job.finished
        if finished is None or finished.is_set():
            self._give_back(conn, ())
            return

        def when_finished() -> None:
            if not finished.wait(_INFLIGHT_WAIT):
                logger.error("litegate: an interrupted snapshot query did not finish")
            self._give_back(conn, ())  # (as release: given back even so)

        threading.Thread(target=when_finished, name="litegate-reader-back", daemon=True).start()

    def _give_back(self, conn: sqlite3.Connection, cursors: Sequence[sqlite3.Cursor]) -> None:
        # No reader thread uses the connection now: closing cursors here takes microseconds.
        # (They must be closed first: a statement left open keeps its snapshot after the
        # check-in's ROLLBACK, and the next borrower would read stale data.)
        close_cursors(conn, cursors)
        self._pool.release(conn)  # check-in rolls the read transaction back (fast)
