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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, TypeVarTuple, Unpack

from ._async_transaction import AsyncSavepoint, AsyncSnapshot, AsyncTransaction
from ._bridge import (
    _MISS,
    _YIELD_EVERY,
    INLINE_BUDGET,
    _await_job,
    _first_value,
    _lane_timeout,
    _run_inline,
    _submit,
)
from ._config import DEFAULT, Options
from ._connection import (
    Params,
    Result,
    run_execute,
    run_executemany,
    run_query,
    run_script,
)
from ._engine import Engine
from ._errors import PoolTimeout
from ._facade import Facade
from ._jobs import READ, WRITE, AsyncJob
from ._migrations import MIGRATION_BUSY_TIMEOUT, Migration, apply_migrations
from ._stats import Stats

__all__ = (
    "INLINE_BUDGET",
    "AsyncDatabase",
    "AsyncSavepoint",
    "AsyncSnapshot",
    "AsyncTransaction",
    "connect_async",
)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class AsyncDatabase(Facade):
    """The asyncio facade. Same methods as :class:`Database`, as coroutines; never blocks the
    event loop. Usable from several event loops (in different threads) at once, and together
    with a sync :class:`Database` on the same engine (:meth:`Database.as_async`)."""

    _close_hint = "use `await adb.close()` or `async with litegate.connect_async(...) as adb:`"

    def __init__(self, engine: Engine, *, owner: bool = True) -> None:
        super().__init__(engine, owner=owner)
        self._last_yield = 0.0

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
