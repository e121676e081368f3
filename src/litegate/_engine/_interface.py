"""The engine interface: the one door between the facades and an engine.

``Database``, ``AsyncDatabase``, transactions, snapshots, migrations and the Starlette/FastAPI
helpers use an engine only through these protocols. :class:`~._local.LocalEngine` (a write lane
plus a read pool, in this process) implements them; a second backend (a dqlite cluster) will
implement them too. A job is a function ``fn(conn, *args)``; the engine decides on which
connection and thread it runs, and when its caller is answered.

=================================  ======================================  ==================
method                             what it does                            blocks / raises
=================================  ======================================  ==================
**writes**
``write(fn, args, timeout,         runs the job in the next group commit;  waits <= timeout
time_limit, sql)``                 returns its result after the COMMIT     for the lane:
                                                                           WriteTimeout; Busy;
                                                                           QueryTimeout;
                                                                           RolledBack; Closed
``await write_async(...)``         the same for an asyncio caller          never blocks the
                                                                           loop; same errors
**the lane, held (a lease)**
``lease(timeout, what, holder)``   the write lane for this thread:         waits <= timeout:
                                   a :class:`WriteLease`; the writer       WriteTimeout;
                                   connection is reachable only through    Misuse if this
                                   it while it is live                     thread holds it
``await lease_async(timeout,       the lane for an asyncio task: an        never blocks the
what)``                            :class:`AsyncWriteLease`: quick         loop
                                   statements on the loop, the rest and
                                   every COMMIT off it
``recover(holder)``                after an interrupt (Ctrl-C) escaped     never waits for
                                   ``lease`` or a release on this thread:  the lane
                                   give the lane back if ``holder`` still
                                   holds it; idempotent
**reads**
``query(sql, params, timeout,      a read-only query on a reader (the      waits <= timeout
time_limit, first)``               read hot path)                          for a reader:
                                                                           PoolTimeout
``read(fn, args, timeout,          the job on a read-only connection       as ``query``
time_limit, sql)``
``query_inline(sql, params,        loop thread: the rows (``fn``'s result,  never longer than
fn=run_query, extra=())``          ``fn(conn, sql, params, *extra)``), if  INLINE_BUDGET;
                                   an idle reader ran it within            never waits
                                   ``INLINE_BUDGET``; else ``MISS``
``await read_async(...)``          the job on a reader thread (offload)    never blocks the
                                                                           loop
``borrow(timeout, what)``          a reader held across calls: a           as ``query``
                                   :class:`ReadLease` (snapshots,
                                   iterations)
``await borrow_async(timeout,      the same for a task: an                 never blocks the
what)``                            :class:`AsyncReadLease`                 loop
**lifecycle and stats**
``check()``                        raises Closed after close               --
``close(timeout)``, ``await        drain queued writes, checkpoint,        <= timeout
close_async(timeout)``             close; idempotent
``start_close()``                  begin closing; never blocks nor waits   --
                                   for a lock (it runs from ``__del__``)
``stats()``                        a frozen :class:`~litegate.Stats`       never blocks
``opts``, ``closed``,              options; closed yet; open and owned     --
``open_in_this_process``           by this process (not a fork's copy)
=================================  ======================================  ==================

``timeout`` is in seconds (``None``: no bound) and bounds waiting for a connection;
``time_limit`` bounds a statement's run (interrupted: :class:`~litegate.QueryTimeout`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from .._config import Options
from .._statements import Result
from .._stats import Stats
from .._types import Args, Bound, Fn, Params

__all__ = ("AsyncReadLease", "AsyncWriteLease", "Engine", "ReadLease", "WriteLease")

T = TypeVar("T")


class ReadLease(Protocol):
    """A connection held by the calling thread until :meth:`release` (a reader, or with
    ``readers=0`` the lane)."""

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection. :raises Misuse: the lease was released"""

    @property
    def in_transaction(self) -> bool: ...

    def run(self, fn: Fn[T], args: Args, sql: str | None, limit: Bound) -> T:
        """``fn(conn, *args)`` under the time limit ``limit``."""

    def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        """The rows of a query under the time limit ``limit`` (as :meth:`run` of
        ``run_query``)."""

    def begin_snapshot(self) -> None:
        """Open a read transaction and pin its snapshot now."""

    def release(self) -> None:
        """Give the connection back (rolling back what is open). Idempotent."""


class WriteLease(ReadLease, Protocol):
    """The write lane held by the calling thread: no other writer runs until :meth:`release`
    (or until its transaction's end hands the lane on: group commit)."""

    def begin(self, busy_timeout: float | None = None) -> None:
        """``BEGIN IMMEDIATE``, or join the open group (waits <= ``busy_timeout`` for another
        process: Busy)."""

    def run_alone(self, fn: Fn[T], args: Args, sql: str | None, limit: Bound) -> T:
        """Instead of :meth:`begin`, :meth:`run` and :meth:`commit`, for a job of one
        statement run to its end: the statement's effect in SQLite's autocommit mode, at the
        least cost the engine has (where a COMMIT costs no fsync, SQLite's own autocommit: the
        lane is held across one call, not three)."""

    def settle(self) -> None:
        """Before :meth:`begin` only: commit a group the lane was handed on with, so that the
        connection is outside any transaction (for ``VACUUM`` and the like)."""

    def commit(self) -> None:
        """End the transaction; returns after the (shared) ``COMMIT``; on failure rolled back
        and raised (RolledBack for a group lost by another's failure)."""

    def rollback(self) -> None:
        """Undo the transaction's own part (a failure is logged, never raised)."""


class AsyncReadLease(Protocol):
    """A connection held by one asyncio task across awaits, until :meth:`release`."""

    async def begin_snapshot(self) -> None: ...

    async def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        """The rows of a query (inline on the loop when it fits the budget)."""

    async def run(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        """``fn(conn, *args)`` off the loop; a cancellation interrupts it."""

    async def release(self, cursors: Sequence[sqlite3.Cursor] = ()) -> None:
        """Close ``cursors`` (iterations left open), then give the connection back. Idempotent."""

    def end(self) -> None:
        """Give the connection back (undoing what is open) without awaiting, once its task
        runs no more of its statements. Idempotent, never blocks."""


class AsyncWriteLease(AsyncReadLease, Protocol):
    """The write lane held by one asyncio task: quick statements run on the loop, the rest
    (and the COMMIT, shared by a group) off it, in order."""

    committed: bool

    @property
    def lost(self) -> bool:
        """SQLite rolled the transaction back; later operations raise RolledBack."""

    async def begin(self, busy_timeout: float | None = None) -> None: ...

    async def execute(self, sql: str, params: Params, limit: Bound) -> Result:
        """One write statement's ``Result`` (``run`` of ``run_execute``: its fast path)."""

    def post(self, fn: Callable[..., Any], args: Args) -> Any:
        """Send an operation without waiting for it (it runs after those sent before); its
        outcome, if never awaited, is not logged."""

    async def commit(self) -> None:
        """``COMMIT``, not interrupted once sent (a cancellation is re-raised after it;
        ``committed`` tells whether it took effect). :raises RolledBack: it was gone"""

    def end(self) -> None:
        """Give the lane back, rolling back what is open. Idempotent, never blocks."""


class Engine(Protocol):
    """What a facade may use of an engine (see the module docstring's table)."""

    opts: Options

    @property
    def closed(self) -> bool: ...

    @property
    def open_in_this_process(self) -> bool: ...

    def check(self) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...

    async def close_async(self, timeout: float | None = None) -> None: ...

    def start_close(self) -> None: ...

    def stats(self) -> Stats: ...

    def recover(self, holder: object) -> None:
        """After an exception (Ctrl-C) escaped :meth:`lease` or a lease's release on the
        calling thread: give back the write lane if ``holder`` still holds it. Idempotent."""

    def write(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T: ...

    def write_async(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> Awaitable[T]:
        """To await (an implementation may be a coroutine function, or return one)."""

    def lease(
        self,
        timeout: Bound,
        what: str = ...,
        holder: object = None,
    ) -> WriteLease:
        """``holder``: who asks (for :meth:`recover`; if it is collected while it still holds
        the lane -- its block was left without its end, e.g. by Ctrl-C -- the lane is rolled
        back and given back)."""

    async def lease_async(self, timeout: Bound, what: str = ...) -> AsyncWriteLease: ...

    def query(
        self, sql: str, params: Params, timeout: Bound, time_limit: Bound, first: bool
    ) -> Any: ...

    def read(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T: ...

    def query_inline(
        self, sql: str, params: Params, fn: Fn[Any] = ..., extra: Args = ()
    ) -> Any: ...

    async def read_async(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T: ...

    def borrow(self, timeout: Bound, what: str = ...) -> ReadLease: ...

    async def borrow_async(self, timeout: Bound, what: str = ...) -> AsyncReadLease: ...
