"""Async transactions, savepoints and snapshots, over the engine's async leases (statements run
on the writer thread or a reader, never on the loop, except point queries under the inline
budget). Each object belongs to the task that entered it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, Self, TypeVar

from . import _statements as stmt
from ._args import check_arraysize, check_callable, check_sql, limit_arg, param_sets
from ._engine import AsyncReadLease, AsyncWriteLease, Engine
from ._errors import Misuse, RolledBack
from ._statements import Result
from ._transaction import OpenCursors, TransactionBase
from ._types import DEFAULT, Args, Bound, ExcType, Limit, Params, ParamSeq, Tb

__all__ = ("AsyncSavepoint", "AsyncSnapshot", "AsyncTransaction")

logger = logging.getLogger("litegate")

T = TypeVar("T")


class _AsyncReads(OpenCursors):
    """Query methods shared by async transactions and snapshots, over an async lease. The
    cursors of iterations still open are closed on the connection's thread before the block
    gives it back (see :class:`OpenCursors`)."""

    _time_limit: float | None
    _lease: AsyncReadLease | None
    _active = False  # inside the block (the lease is live)

    def _live(self) -> AsyncReadLease:
        """The live lease. :raises Misuse: outside the block"""
        lease = self._lease
        if lease is None or not self._active:
            raise self._inactive()
        return lease

    def _inactive(self) -> Misuse:
        """The error of a statement outside the block."""
        raise NotImplementedError

    def _limit(self, time_limit: Limit) -> float | None:
        return self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)

    async def _run(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        return await self._live().run(fn, args, sql, limit)

    # (query, query_one and query_value each await the lease directly, and compute the limit
    # and check the lease inline rather than through _limit and _live: a coroutine and a call
    # less per statement, on the path every ORM's transaction takes -- _limit called there
    # measured +4,900 instructions a transfer, benchmarks/hot_paths.py atx)
    async def query(
        self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT
    ) -> list[Any]:
        """All rows of a query."""
        if type(sql) is not str:
            check_sql(sql)
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        lease = self._lease
        if lease is None or not self._active:
            raise self._inactive()
        return await lease.query(sql, params, limit)

    async def query_one(self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT) -> Any:
        """The first row, or ``None``."""
        if type(sql) is not str:
            check_sql(sql)
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        lease = self._lease
        if lease is None or not self._active:
            raise self._inactive()
        rows = await lease.query(sql, params, limit)
        return rows[0] if rows else None

    async def query_value(
        self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT
    ) -> Any:
        """The first column of the first row, or ``None``."""
        if type(sql) is not str:
            check_sql(sql)
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        lease = self._lease
        if lease is None or not self._active:
            raise self._inactive()
        rows = await lease.query(sql, params, limit)
        return rows[0][0] if rows else None  # (stmt.first_value, inlined)

    def iterate(
        self, sql: str, params: Params = (), *, arraysize: int = 256
    ) -> AsyncGenerator[Any, None]:
        """Stream rows, fetched ``arraysize`` at a time. Bad arguments raise here, not at the
        first row."""
        check_sql(sql)
        check_arraysize(arraysize)
        return self._iterate(sql, params, arraysize)

    async def _iterate(self, sql: str, params: Params, arraysize: int) -> AsyncGenerator[Any, None]:
        cursor = await self._run(stmt.open_cursor, (sql, params), sql, None)
        cursors = self._track(cursor)
        try:
            while rows := await self._run(stmt.fetch_page, (cursor, arraysize), None, None):
                for row in rows:
                    yield row
        finally:
            if cursor in cursors:  # else the block has ended and closed it
                await self._run(stmt.close_cursor, (cursor,), None, None)
                cursors.discard(cursor)


class AsyncTransaction(TransactionBase, _AsyncReads):
    """``async with adb.transaction() as tx:`` -- ``BEGIN IMMEDIATE`` on the write lane.

    Quick statements run on the loop, the others on the writer thread, as does a COMMIT that
    fsyncs or is shared with a group. Commits when the block ends normally; rolls back when
    it raises or is cancelled, and frees the lane at once. ``tx.committed`` tells whether the
    COMMIT went through (useful when a cancellation arrived while it was being written). If
    SQLite rolls the transaction back (an interrupted or failed statement, e.g. a cancelled
    one), later statements and the block's end raise :class:`RolledBack`.
    """

    _lease: AsyncWriteLease | None = None  # (class defaults: no __init__ of its own)
    committed = False

    async def __aenter__(self) -> Self:
        if self._entered:
            raise Misuse("an AsyncTransaction can be entered only once")
        lease = await self._engine.lease_async(self._timeout, "the transaction")
        self._entered = True  # (not before: a timed-out enter may be retried)
        try:
            await lease.begin(self._busy_timeout)
        except BaseException:
            lease.end()
            raise
        self._lease = lease
        self._active = True
        return self

    async def __aexit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        lease = self._lease
        assert lease is not None
        was_active, self._active = self._active, False
        try:
            if self._cursors:  # closed on the writer before the COMMIT / rollback (in order)
                left = self._open_cursors()
                lease.post(stmt.close_cursors, (left,))  # (never awaited)
            if exc_type is None and was_active:
                try:
                    await lease.commit()
                finally:
                    self.committed = lease.committed
        finally:
            lease.end()  # rolls back whatever is still open and frees the lane

    def _live(self) -> AsyncWriteLease:
        lease = self._lease
        if not self._active or lease is None:
            raise self._inactive()
        # If SQLite rolled the transaction back (an interrupt, e.g. a cancelled statement, or
        # a failed one), the writer refuses this and every later operation (RolledBack).
        return lease

    def _inactive(self) -> Misuse:
        return Misuse("the transaction is not active (use it inside its `async with` block)")

    async def execute(
        self, sql: str, params: Params = (), *, time_limit: Limit = DEFAULT
    ) -> Result:
        """Run one statement in the transaction."""
        if type(sql) is not str:
            check_sql(sql)
        limit = self._time_limit if time_limit is DEFAULT else limit_arg(time_limit)
        lease = self._lease  # (_live inlined, as in query)
        if lease is None or not self._active:
            raise self._inactive()
        return await lease.execute(sql, params, limit)

    async def executemany(self, sql: str, seq: ParamSeq, *, time_limit: Limit = DEFAULT) -> Result:
        """Run one statement for every parameter set."""
        check_sql(sql)
        limit = self._limit(time_limit)  # (checked before seq is consumed)
        rows = param_sets(seq)
        result: Result = await self._run(stmt.run_executemany, (sql, rows), sql, limit)
        return result

    async def executescript(self, script: str, *, time_limit: Limit = DEFAULT) -> None:
        """Run several statements inside this transaction."""
        check_sql(script, "script")
        await self._run(stmt.run_script, (script,), None, self._limit(time_limit))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(conn, *args)`` on the writer thread inside this transaction."""
        check_callable(fn)
        result: T = await self._run(fn, tuple(args), None, self._time_limit)
        return result

    def savepoint(self) -> AsyncSavepoint:
        """A nested block: rolled back alone if it raises."""
        return AsyncSavepoint(self)


class AsyncSavepoint:
    """``async with tx.savepoint():`` -- SAVEPOINT/RELEASE, ROLLBACK TO on error."""

    _ids = iter(range(1, 1 << 62))

    def __init__(self, tx: AsyncTransaction) -> None:
        self._tx = tx
        self._name = f"litegate_asp_{next(AsyncSavepoint._ids)}"

    async def __aenter__(self) -> Self:
        await self._tx.run(stmt.exec_sql, f"SAVEPOINT {self._name}")
        return self

    async def __aexit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        tx = self._tx
        lease = tx._lease
        if not tx._active or lease is None or lease.lost:
            return
        if exc_type is None:
            try:
                await tx.run(stmt.exec_sql, f"RELEASE {self._name}")
            except RolledBack:
                pass  # SQLite ended the whole transaction: as in sync, the block's end says so
            return
        # Roll the savepoint back, never masking the original exception. On a cancellation
        # the operation is queued without waiting: the writer runs operations in order, so
        # whatever the block does next (the caller may catch a timeout) comes after it.
        try:
            future = lease.post(stmt.rollback_to_savepoint, (self._name,))
            if exc_type is not asyncio.CancelledError:
                await future
        except RolledBack:
            pass  # nothing left to undo: SQLite rolled the whole transaction back
        except Exception:
            logger.exception("litegate: rolling back savepoint %s failed", self._name)


class AsyncSnapshot(_AsyncReads):
    """``async with adb.snapshot() as snap:`` -- several queries that see one committed state."""

    def __init__(self, engine: Engine, timeout: Bound, time_limit: Bound) -> None:
        self._engine = engine
        self._timeout = timeout
        self._time_limit = time_limit
        self._lease: AsyncReadLease | None = None
        self._cursors = None

    async def __aenter__(self) -> Self:
        lease = await self._engine.borrow_async(self._timeout, "the snapshot")
        try:
            await lease.begin_snapshot()
        except BaseException:
            await lease.release()
            raise
        self._lease = lease
        self._active = True
        return self

    async def __aexit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        lease, self._lease = self._lease, None
        self._active = False
        if lease is not None:
            await lease.release(self._open_cursors() if self._cursors else ())

    def _inactive(self) -> Misuse:
        return Misuse("the snapshot is not active (use it inside its `async with` block)")
