"""Async transactions, savepoints and snapshots (the statements run on the writer thread or
on a reader, never on the loop, except point queries under the inline budget)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from ._bridge import (
    _MISS,
    _await_job,
    _borrow,
    _close_cursor,
    _fetch_page,
    _first_value,
    _lane_timeout,
    _never,
    _open_cursor,
    _run_inline,
    _submit,
    _uncancellable,
)
from ._config import DEFAULT
from ._connection import (
    BEGIN_READ,
    COMMIT,
    ROLLBACK,
    Params,
    Result,
    begin_immediate,
    end_transaction,
    run_execute,
    run_executemany,
    run_query,
    run_script,
)
from ._engine import Engine
from ._errors import Error, Misuse
from ._jobs import READ, AsyncJob, AsyncLaneHold
from ._pool import ReadPool

__all__ = ("AsyncSavepoint", "AsyncSnapshot", "AsyncTransaction")

logger = logging.getLogger("litegate")
_INFLIGHT_WAIT = 30.0  # seconds a snapshot's exit waits for its interrupted query

T = TypeVar("T")


class _AsyncReads:
    """Query methods shared by async transactions and snapshots: subclasses provide ``_run``."""

    _time_limit: float | None

    async def _run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        sql: str | None,
        time_limit: float | None,
    ) -> Any:
        raise NotImplementedError

    def _limit(self, time_limit: float | None) -> float | None:
        return self._time_limit if time_limit is DEFAULT else time_limit

    async def query(
        self, sql: str, params: Params = (), *, time_limit: float | None = DEFAULT
    ) -> list[Any]:
        """All rows of a query."""
        rows: list[Any] = await self._run(run_query, (sql, params), sql, self._limit(time_limit))
        return rows

    async def query_one(
        self, sql: str, params: Params = (), *, time_limit: float | None = DEFAULT
    ) -> Any:
        """The first row, or ``None``."""
        rows = await self.query(sql, params, time_limit=time_limit)
        return rows[0] if rows else None

    async def query_value(
        self, sql: str, params: Params = (), *, time_limit: float | None = DEFAULT
    ) -> Any:
        """The first column of the first row, or ``None``."""
        return _first_value(await self.query(sql, params, time_limit=time_limit))

    async def iterate(
        self, sql: str, params: Params = (), *, arraysize: int = 256
    ) -> AsyncIterator[Any]:
        """Stream rows, fetched ``arraysize`` at a time."""
        cursor = await self._run(_open_cursor, (sql, params), sql, None)
        try:
            while rows := await self._run(_fetch_page, (cursor, arraysize), None, None):
                for row in rows:
                    yield row
        finally:
            await self._run(_close_cursor, (cursor,), None, None)


class AsyncTransaction(_AsyncReads):
    """``async with adb.transaction() as tx:`` -- ``BEGIN IMMEDIATE`` on the write lane.

    Statements run on the writer thread. Commits when the block ends normally; rolls back when
    it raises or is cancelled, and frees the lane at once. ``tx.committed`` tells whether the
    COMMIT went through (useful when a cancellation arrived while it was being written).
    """

    def __init__(
        self,
        engine: Engine,
        timeout: float | None,
        time_limit: float | None,
        busy_timeout: float | None = None,
    ) -> None:
        self._engine = engine
        self._timeout = timeout
        self._time_limit = time_limit
        self._busy_timeout = engine.opts.busy_timeout if busy_timeout is None else busy_timeout
        self._hold: AsyncLaneHold | None = None
        self._active = False
        self._read_only = False  # a readers=0 snapshot: BEGIN DEFERRED, never commits
        self.committed = False

    async def __aenter__(self) -> Self:
        if self._hold is not None:
            raise Misuse("an AsyncTransaction can be entered only once")
        engine = self._engine
        engine.check()
        lane = engine.lane
        hold = self._hold = AsyncLaneHold(asyncio.get_running_loop(), lane.outbox)
        what = "the snapshot" if self._read_only else "the transaction"
        t0 = time.monotonic()
        try:
            await _submit(engine, hold, self._timeout)
            await _await_job(hold, self._timeout, lambda: _lane_timeout(engine, what, t0))
        except BaseException:
            if hold.state != AsyncJob.CANCELLED:
                hold.end()
            raise
        engine.counters.lane_wait.append(time.monotonic() - t0)
        try:
            if self._read_only:
                await self._op(_begin_read, (lane.guard,), None, None)
            else:
                args = (lane.guard, self._busy_timeout, engine.counters)
                await self._op(begin_immediate, args, None, None)
        except BaseException:
            hold.end()
            raise
        hold.txn_required = True
        self._active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        hold = self._hold
        assert hold is not None
        was_active, self._active = self._active, False
        try:
            if exc_type is None and was_active and not self._read_only:
                job = hold.submit(_commit, (self._engine.lane.guard,), None, None)
                try:
                    _, cancelled = await _uncancellable(job.future)
                except Misuse as err:  # the writer found the transaction already gone
                    raise Error(f"the transaction did not commit: {err}") from err
                self.committed = True
                if cancelled:
                    raise asyncio.CancelledError
        finally:
            hold.end()  # rolls back whatever is still open and frees the lane
            if not self._read_only:
                self._engine.counters.transactions += 1

    async def _op(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        sql: str | None,
        time_limit: float | None,
    ) -> Any:
        hold = self._hold
        assert hold is not None
        job = hold.submit(fn, args, sql, time_limit)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancel()
            raise

    async def _run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        sql: str | None,
        time_limit: float | None,
    ) -> Any:
        if not self._active:
            raise Misuse("the transaction is not active (use it inside its `async with` block)")
        # If SQLite rolled the transaction back (an interrupt, e.g. a cancelled statement, or
        # a failed one), the writer refuses this and every later operation (hold.lost).
        return await self._op(fn, args, sql, time_limit)

    async def execute(
        self, sql: str, params: Params = (), *, time_limit: float | None = DEFAULT
    ) -> Result:
        """Run one statement in the transaction."""
        result: Result = await self._run(run_execute, (sql, params), sql, self._limit(time_limit))
        return result

    async def executemany(
        self, sql: str, seq: Iterable[Params], *, time_limit: float | None = DEFAULT
    ) -> Result:
        """Run one statement for every parameter set."""
        rows = seq if isinstance(seq, list | tuple) else list(seq)
        result: Result = await self._run(run_executemany, (sql, rows), sql, self._limit(time_limit))
        return result

    async def executescript(self, script: str, *, time_limit: float | None = DEFAULT) -> None:
        """Run several statements inside this transaction."""
        await self._run(run_script, (script,), None, self._limit(time_limit))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(conn, *args)`` on the writer thread inside this transaction."""
        result: T = await self._run(fn, tuple(args), None, self._time_limit)
        return result

    def savepoint(self) -> AsyncSavepoint:
        """A nested block: rolled back alone if it raises."""
        return AsyncSavepoint(self)


def _commit(conn: sqlite3.Connection, guard: Any) -> None:
    try:
        end_transaction(conn, guard, COMMIT)
    except BaseException:
        end_transaction(conn, guard, ROLLBACK)
        raise


class AsyncSavepoint:
    """``async with tx.savepoint():`` -- SAVEPOINT/RELEASE, ROLLBACK TO on error."""

    _ids = iter(range(1, 1 << 62))

    def __init__(self, tx: AsyncTransaction) -> None:
        self._tx = tx
        self._name = f"litegate_asp_{next(AsyncSavepoint._ids)}"

    async def __aenter__(self) -> Self:
        await self._tx._run(_exec, (f"SAVEPOINT {self._name}",), None, None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx = self._tx
        hold = tx._hold
        if not tx._active or hold is None or hold.lost:
            return
        if exc_type is None:
            await tx._run(_exec, (f"RELEASE {self._name}",), None, None)
            return
        # Roll the savepoint back, never masking the original exception. On a cancellation
        # the operation is queued without waiting: the writer runs operations in order, so
        # whatever the block does next (the caller may catch a timeout) comes after it.
        try:
            job = hold.submit(_rollback_to, (self._name,), None, None)
            if exc_type is not asyncio.CancelledError:
                await job.future
        except Exception:
            logger.exception("litegate: rolling back savepoint %s failed", self._name)


def _exec(conn: sqlite3.Connection, sql: str) -> None:
    conn.execute(sql).close()


def _rollback_to(conn: sqlite3.Connection, name: str) -> None:
    if conn.in_transaction:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")


class AsyncSnapshot(_AsyncReads):
    """``async with adb.snapshot() as snap:`` -- several queries that see one committed state."""

    def __init__(self, engine: Engine, timeout: float | None, time_limit: float | None) -> None:
        self._engine = engine
        self._timeout = timeout
        self._time_limit = time_limit
        self._conn: sqlite3.Connection | None = None
        self._pool: ReadPool | None = None
        self._tx: AsyncTransaction | None = None
        self._inflight: AsyncJob | None = None  # the last query sent to a reader thread
        self._active = False

    async def __aenter__(self) -> Self:
        engine = self._engine
        engine.check()
        if engine.pool is None:  # readers=0: hold the lane, read on the writer
            tx = AsyncTransaction(engine, self._timeout, self._time_limit)
            tx._read_only = True
            await tx.__aenter__()
            self._tx = tx
        else:
            pool = self._pool = engine.borrow_pool
            conn = await _borrow(pool, self._timeout)
            try:
                _begin_pinned(conn)
            except BaseException:
                pool.release(conn)
                raise
            self._conn = conn
        self._active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        if self._tx is not None:
            await self._tx.__aexit__(exc_type, exc, tb)
        elif self._conn is not None and self._pool is not None:
            job, self._inflight = self._inflight, None
            if job is not None and job.finished is not None and not job.finished.is_set():
                # A cancelled query is being interrupted on a reader thread: the connection
                # is still in that thread's hands until it finishes (soon, interrupted).
                if not await asyncio.to_thread(job.finished.wait, _INFLIGHT_WAIT):
                    logger.error("litegate: an interrupted snapshot query did not finish")
            conn, self._conn = self._conn, None
            self._pool.release(conn)  # check-in rolls the read transaction back (fast)

    async def _run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        sql: str | None,
        time_limit: float | None,
    ) -> Any:
        if not self._active:
            raise Misuse("the snapshot is not active (use it inside its `async with` block)")
        if self._tx is not None:
            return await self._tx._op(fn, args, sql, time_limit)
        conn = self._conn
        assert conn is not None
        if time_limit is None and fn is run_query:
            result = _run_inline(conn, fn, args)
            if result is not _MISS:
                return result
        engine = self._engine
        job = AsyncJob(
            READ,
            fn,
            args,
            sql,
            time_limit,
            asyncio.get_running_loop(),
            engine.reader_threads.outbox,
        )
        job.pinned = conn
        job.finished = threading.Event()
        self._inflight = job
        engine.reader_threads.submit(job)
        return await _await_job(job, None, _never)


def _begin_read(conn: sqlite3.Connection, guard: Any) -> None:
    guard.permit()
    try:
        conn.execute(BEGIN_READ)
    finally:
        guard.revoke()
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()


def _begin_pinned(conn: sqlite3.Connection) -> None:
    conn.execute(BEGIN_READ)
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
