"""``AsyncDatabase``: the asyncio facade over the same engine. No call blocks the event loop.

How a call travels:

* **writes** become jobs on the write lane (group commit); the writer thread answers finished
  jobs in batches, one ``call_soon_threadsafe`` per loop per batch.
* **point reads** run *inline* on the loop thread when a reader is idle, under a small
  progress-handler budget (:data:`INLINE_BUDGET`); a statement that exceeds it is interrupted
  and re-run on a reader thread, so the loop is never held for longer than the budget.
* **other reads** (user functions, iterations, long queries) go to reader threads, which take
  several waiting jobs per wake-up.
* **transactions** take the lane; their statements run on the writer thread.

Cancellation: a job cancelled before it starts never runs; a running read is interrupted (its
reader is free at once); a running write of a group-commit batch finishes and its result is
dropped; a transaction left by cancellation or an exception rolls back and frees the lane
immediately. Once a transaction's COMMIT has been sent it is not interrupted: the block waits
for it, records ``tx.committed``, and then re-raises the cancellation.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, TypeVarTuple, Unpack

from ._config import DEFAULT, Options
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
from ._errors import Error, Misuse, PoolTimeout, WriteTimeout
from ._jobs import READ, WRITE, AsyncJob, AsyncLaneHold
from ._migrations import MIGRATION_BUSY_TIMEOUT, Migration, apply_migrations
from ._pool import ReadPool
from ._stats import Stats

__all__ = ("INLINE_BUDGET", "AsyncDatabase", "AsyncSnapshot", "AsyncTransaction", "connect_async")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

INLINE_BUDGET = 0.001
"""Seconds a read may run inline on the event loop before it is moved to a reader thread."""
_YIELD_EVERY = 0.002  # inline reads give other tasks a turn at least this often
_PROGRESS_STEPS = 100
_SQLITE_INTERRUPT = 9
_MISS: Any = object()


def _run_inline(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """Run ``fn(conn, *args)`` on the loop thread within INLINE_BUDGET; _MISS if it ran over."""
    deadline = time.monotonic() + INLINE_BUDGET
    conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    try:
        return fn(conn, *args)
    except sqlite3.OperationalError as exc:
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_INTERRUPT:
            result: T = _MISS
            return result
        raise
    finally:
        conn.set_progress_handler(None, 0)


def _expire(job: AsyncJob, make_error: Callable[[], BaseException]) -> None:
    """Loop thread (timer): a job still queued at its timeout is withdrawn and fails."""
    if job.withdraw() and not job.future.done():
        job.future.set_exception(make_error())


async def _await_job(
    job: AsyncJob, timeout: float | None, make_error: Callable[[], BaseException]
) -> Any:
    """Await a queued job: ``timeout`` bounds the wait before it starts; cancellation withdraws
    it (or interrupts a running read)."""
    handle = None if timeout is None else job.loop.call_later(timeout, _expire, job, make_error)
    try:
        return await job.future
    except asyncio.CancelledError:
        job.cancel()
        raise
    finally:
        if handle is not None:
            handle.cancel()


async def _uncancellable(fut: asyncio.Future[T]) -> tuple[T, bool]:
    """Wait for ``fut`` even if the task is cancelled meanwhile; returns (result, cancelled)."""
    cancelled = False
    while True:
        try:
            return await asyncio.shield(fut), cancelled
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                return fut.result(), True
            cancelled = True


def _first_value(rows: list[Any]) -> Any:
    return rows[0][0] if rows else None


def _fetch_page(conn: sqlite3.Connection, cursor: sqlite3.Cursor, n: int) -> list[Any]:
    return cursor.fetchmany(n)


def _open_cursor(conn: sqlite3.Connection, sql: str, params: Params) -> sqlite3.Cursor:
    return conn.execute(sql, params)


def _close_cursor(conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
    cursor.close()


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
        self._aborted: str | None = None
        self.committed = False

    async def __aenter__(self) -> Self:
        if self._hold is not None:
            raise Misuse("an AsyncTransaction can be entered only once")
        engine = self._engine
        engine.check()
        loop = asyncio.get_running_loop()
        lane = engine.lane
        hold = self._hold = AsyncLaneHold(loop, lane.outbox)
        t0 = time.monotonic()
        try:
            await _submit(engine, hold, self._timeout)
            await _await_job(
                hold, self._timeout, lambda: _lane_timeout(engine, "the transaction", t0)
            )
        except BaseException:
            if hold.state != AsyncJob.CANCELLED:
                hold.end()
            raise
        engine.counters.lane_wait.append(time.monotonic() - t0)
        try:
            await self._op(
                begin_immediate, (lane.guard, self._busy_timeout, engine.counters), None, None
            )
        except BaseException:
            hold.end()
            raise
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
            if exc_type is None and was_active:
                if self._aborted:
                    raise Error(f"the transaction did not commit: {self._aborted}")
                job = hold.submit(_commit, (self._engine.lane.guard,), None, None)
                _, cancelled = await _uncancellable(job.future)
                self.committed = True
                if cancelled:
                    raise asyncio.CancelledError
        finally:
            hold.end()  # rolls back whatever is still open and frees the lane
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
        if self._aborted:
            raise Misuse(f"the transaction was already rolled back: {self._aborted}")
        try:
            return await self._op(fn, args, sql, time_limit)
        except Exception:
            if not await self._op(_in_transaction, (), None, None):
                self._aborted = (
                    "SQLite rolled the whole transaction back after a failed statement; leave "
                    "the block and start again"
                )
            raise

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


def _in_transaction(conn: sqlite3.Connection) -> bool:
    return conn.in_transaction


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
        if not tx._active or tx._aborted:
            return
        if exc_type is None:
            await tx._run(_exec, (f"RELEASE {self._name}",), None, None)
        elif exc_type is asyncio.CancelledError:
            return  # the whole transaction is being abandoned and rolls back
        else:
            await tx._run(_rollback_to, (self._name,), None, None)


def _exec(conn: sqlite3.Connection, sql: str) -> None:
    conn.execute(sql).close()


def _rollback_to(conn: sqlite3.Connection, name: str) -> None:
    if conn.in_transaction:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")


def _lane_timeout(engine: Engine, what: str, t0: float) -> WriteTimeout:
    lane = engine.lane
    return WriteTimeout(
        f"{what} did not get the write lane within {time.monotonic() - t0:.2f}s "
        f"({lane.depth} job(s) queued; {lane._hold_text()}). Raise timeout=, or keep "
        "transactions short"
    )


async def _submit(engine: Engine, job: AsyncJob, timeout: float | None) -> None:
    """Queue a lane job without blocking the loop (a full queue is waited for in a thread)."""
    if engine.lane.try_submit(job):
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        await asyncio.to_thread(engine.lane.submit, job, deadline)
    except asyncio.CancelledError:
        job.cancel()  # if the thread still queues it, the writer skips it
        raise


class AsyncSnapshot(_AsyncReads):
    """``async with adb.snapshot() as snap:`` -- several queries that see one committed state."""

    def __init__(self, engine: Engine, timeout: float | None, time_limit: float | None) -> None:
        self._engine = engine
        self._timeout = timeout
        self._time_limit = time_limit
        self._conn: sqlite3.Connection | None = None
        self._pool: ReadPool | None = None
        self._tx: AsyncTransaction | None = None
        self._active = False

    async def __aenter__(self) -> Self:
        engine = self._engine
        engine.check()
        if engine.pool is None:  # readers=0: hold the lane, read on the writer
            tx = AsyncTransaction(engine, self._timeout, self._time_limit)
            # take the lane but begin a read transaction instead of BEGIN IMMEDIATE
            loop = asyncio.get_running_loop()
            hold = tx._hold = AsyncLaneHold(loop, engine.lane.outbox)
            t0 = time.monotonic()
            try:
                await _submit(engine, hold, self._timeout)
                await _await_job(
                    hold, self._timeout, lambda: _lane_timeout(engine, "the snapshot", t0)
                )
                await tx._op(_begin_read, (engine.lane.guard,), None, None)
            except BaseException:
                if hold.state != AsyncJob.CANCELLED:
                    hold.end()
                raise
            tx._active = True
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
            assert self._tx._hold is not None
            self._tx._hold.end()
        elif self._conn is not None and self._pool is not None:
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
        engine.reader_threads.submit(job)
        return await _await_job(job, None, _never)


def _never() -> BaseException:  # pragma: no cover - only used without a timeout
    return AssertionError("unreachable")


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


async def _borrow(pool: ReadPool, timeout: float | None) -> sqlite3.Connection:
    """A reader kept across awaits: an idle one at once, else waited for in a thread."""
    conn = pool.try_acquire()
    if conn is not None:
        return conn
    deadline = None if timeout is None else time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, pool.acquire, deadline)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        # the thread may still get one: give it back when it does
        fut.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() else pool.release(f.result())
        )
        raise


class AsyncDatabase:
    """The asyncio facade. Same methods as :class:`Database`, as coroutines; never blocks the
    event loop. Usable from several event loops (in different threads) at once, and together
    with a sync :class:`Database` on the same engine (:meth:`Database.as_async`)."""

    def __init__(self, engine: Engine, *, owner: bool = True) -> None:
        self._engine = engine
        self._owner = owner
        self._last_yield = 0.0

    def _t(self, timeout: float | None) -> float | None:
        return self._engine.opts.timeout if timeout is DEFAULT else timeout

    def _l(self, time_limit: float | None) -> float | None:
        return self._engine.opts.time_limit if time_limit is DEFAULT else time_limit

    @property
    def path(self) -> str:
        return self._engine.opts.path

    @property
    def options(self) -> Options:
        return self._engine.opts

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def as_sync(self) -> Any:
        """A sync :class:`Database` on the same engine (closing it is the owner's job)."""
        from ._database import Database

        return Database(self._engine, owner=False)

    # ---- writes ---------------------------------------------------------------------------
    async def _write(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        timeout: float | None,
        time_limit: float | None,
        sql: str | None,
    ) -> T:
        engine = self._engine
        engine.check()
        t0 = time.perf_counter()
        lane = engine.lane
        timeout = self._t(timeout)
        job = AsyncJob(
            WRITE, fn, args, sql, self._l(time_limit), asyncio.get_running_loop(), lane.outbox
        )
        await _submit(engine, job, timeout)
        m0 = time.monotonic()
        result: T = await _await_job(job, timeout, lambda: _lane_timeout(engine, "the write", m0))
        engine.counters.write_latency.append(time.perf_counter() - t0)
        return result

    async def execute(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> Result:
        """Run one write statement in its own (group-committed) transaction; returns after COMMIT."""
        result: Result = await self._write(run_execute, (sql, params), timeout, time_limit, sql)
        return result

    async def executemany(
        self,
        sql: str,
        seq: Iterable[Params],
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> Result:
        """Run one statement for every parameter set, in one transaction."""
        rows = seq if isinstance(seq, list | tuple) else list(seq)
        result: Result = await self._write(run_executemany, (sql, rows), timeout, time_limit, sql)
        return result

    async def executescript(
        self, script: str, *, timeout: float | None = DEFAULT, time_limit: float | None = DEFAULT
    ) -> None:
        """Run several statements in one transaction (all or nothing)."""
        await self._write(run_script, (script,), timeout, time_limit, None)

    async def run_write(
        self,
        fn: Callable[[Any, Unpack[Ts]], T],
        *args: *Ts,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> T:
        """Call ``fn(conn, *args)`` on the writer thread inside a group-committed transaction."""
        return await self._write(fn, tuple(args), timeout, time_limit, None)

    def transaction(
        self, *, timeout: float | None = DEFAULT, time_limit: float | None = DEFAULT
    ) -> AsyncTransaction:
        """``async with adb.transaction() as tx:`` -- BEGIN IMMEDIATE on the lane."""
        return AsyncTransaction(self._engine, self._t(timeout), self._l(time_limit))

    async def migrate(
        self,
        migrations: Sequence[Migration],
        *,
        timeout: float | None = DEFAULT,
        busy_timeout: float = MIGRATION_BUSY_TIMEOUT,
    ) -> int:
        """Apply migrations past ``PRAGMA user_version`` in one transaction; returns the version
        (all or nothing; other processes wait up to ``busy_timeout`` for the one applying them)."""
        tx = AsyncTransaction(self._engine, self._t(timeout), None, busy_timeout)
        async with tx:
            _, after = await tx.run(apply_migrations, migrations)
        return int(after)

    # ---- reads ----------------------------------------------------------------------------
    async def _read(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        timeout: float | None,
        time_limit: float | None,
        sql: str | None,
    ) -> T:
        engine = self._engine
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        timeout = self._t(timeout)
        if engine.pool is None:
            lane = engine.lane
            job = AsyncJob(READ, fn, args, sql, time_limit, loop, lane.outbox)
            await _submit(engine, job, timeout)
            m0 = time.monotonic()
            result: T = await _await_job(
                job, timeout, lambda: _lane_timeout(engine, "the read", m0)
            )
        else:
            readers = engine.reader_threads
            job = AsyncJob(READ, fn, args, sql, time_limit, loop, readers.outbox)
            job.deadline = None if timeout is None else time.monotonic() + timeout
            readers.submit(job)
            result = await _await_job(job, timeout, lambda: _pool_timeout(engine, timeout))
        c = engine.counters
        c.reads += 1
        c.read_latency.append(time.perf_counter() - t0)
        return result

    async def query(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> list[Any]:
        """All rows of a read-only query.

        Runs inline on the loop when a reader is idle and the query finishes within
        :data:`INLINE_BUDGET`; otherwise on a reader thread. :raises PoolTimeout: no reader
        within ``timeout``
        """
        engine = self._engine
        engine.check()
        limit = self._l(time_limit)
        pool = engine.pool
        if pool is not None and limit is None:
            conn = pool.try_acquire()
            if conn is not None:
                t0 = time.perf_counter()
                try:
                    rows = _run_inline(conn, run_query, (sql, params))
                finally:
                    pool.release(conn)
                if rows is not _MISS:
                    c = engine.counters
                    c.reads += 1
                    now = time.perf_counter()
                    c.read_latency.append(now - t0)
                    if now - self._last_yield > _YIELD_EVERY:
                        self._last_yield = now
                        await asyncio.sleep(0)
                    return rows
        result: list[Any] = await self._read(run_query, (sql, params), timeout, limit, sql)
        return result

    async def query_one(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> Any:
        """The first row, or ``None``."""
        rows = await self.query(sql, params, timeout=timeout, time_limit=time_limit)
        return rows[0] if rows else None

    async def query_value(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> Any:
        """The first column of the first row, or ``None``."""
        return _first_value(await self.query(sql, params, timeout=timeout, time_limit=time_limit))

    async def run_read(
        self,
        fn: Callable[[Any, Unpack[Ts]], T],
        *args: *Ts,
        timeout: float | None = DEFAULT,
        time_limit: float | None = DEFAULT,
    ) -> T:
        """Call ``fn(conn, *args)`` with a read-only connection on a reader thread."""
        self._engine.check()
        return await self._read(fn, tuple(args), timeout, self._l(time_limit), None)

    async def iterate(
        self,
        sql: str,
        params: Params = (),
        *,
        timeout: float | None = DEFAULT,
        arraysize: int = 256,
    ) -> AsyncIterator[Any]:
        """Stream rows (``async for``); holds a reader (readers=0: the lane) until it ends."""
        async with self.snapshot(timeout=timeout, time_limit=None) as snap:
            async for row in snap.iterate(sql, params, arraysize=arraysize):
                yield row

    def snapshot(
        self, *, timeout: float | None = DEFAULT, time_limit: float | None = DEFAULT
    ) -> AsyncSnapshot:
        """``async with adb.snapshot() as snap:`` -- one consistent read state."""
        return AsyncSnapshot(self._engine, self._t(timeout), self._l(time_limit))

    # ---- the rest -------------------------------------------------------------------------
    async def stats(self) -> Stats:
        """Queue, batch, pool, latency, busy and WAL figures (never blocks)."""
        return self._engine.stats()

    async def close(self, timeout: float | None = None) -> None:
        """Drain queued writes, checkpoint, close (in a thread: the loop keeps running)."""
        if self._engine.closed:
            return
        await asyncio.to_thread(self._engine.close, timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<litegate.AsyncDatabase {self.path!r} {'closed' if self.closed else 'open'}>"

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is None or not self._owner or engine.closed or engine._pid != os.getpid():
            return
        warnings.warn(
            f"litegate database {engine.opts.name!r} was never closed; use "
            "`await adb.close()` or `async with litegate.connect_async(...) as adb:`",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        engine.start_close()


def _pool_timeout(engine: Engine, timeout: float | None) -> PoolTimeout:
    pool = engine.pool
    size = getattr(pool, "size", 0)
    return PoolTimeout(
        f"no reader served this read within {timeout}s: pool size {size}, "
        f"{engine.reader_threads.depth} async read(s) queued, "
        f"{getattr(pool, 'in_use', 0)} reader(s) in use. Raise readers= or timeout="
    )


class _Connector(Awaitable[AsyncDatabase]):
    """``await litegate.connect_async(...)`` or ``async with litegate.connect_async(...)``."""

    def __init__(self, opts: Options) -> None:
        self._opts = opts
        self._db: AsyncDatabase | None = None

    async def _open(self) -> AsyncDatabase:
        engine = await asyncio.to_thread(Engine, self._opts)  # opening files never blocks the loop
        return AsyncDatabase(engine)

    def __await__(self) -> Generator[Any, None, AsyncDatabase]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncDatabase:
        self._db = await self._open()
        return self._db

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            await self._db.close()


def connect_async(path: str | os.PathLike[str], **options: Any) -> _Connector:
    """Open a database for asyncio code: ``adb = await litegate.connect_async("app.db")`` or
    ``async with litegate.connect_async("app.db") as adb:``. Options as :func:`connect`.
    The files are opened in a worker thread, so the event loop is never blocked."""
    from ._database import _options

    return _Connector(_options(path, **options))
