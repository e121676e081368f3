"""The asyncio facade's methods (:class:`~litegate.AsyncDatabase` adds ``as_sync``). No call
blocks the event loop.

How a call travels (through the engine interface):

* **writes** become jobs on the write lane (group commit); the writer thread answers finished
  jobs in batches, one ``call_soon_threadsafe`` per loop per batch. At synchronous NORMAL or
  OFF a lone write runs on the loop itself, COMMIT included (``_engine._loop_write``).
* **point reads** run *inline* on the loop thread when a reader is idle, under a small
  progress-handler budget (:data:`INLINE_BUDGET`; a stalled read gets ~1,000 more VM steps, up
  to 3 ms); a statement that exceeds it is interrupted and re-run on a reader thread, so the
  loop is never held for longer than that (one
  that a reader thread found longer than the budget goes straight there for a while). Tasks
  reading inline take turns: one at a time reads for a slice, the others wait parked, so a
  loop iteration holds one slice of reads however many tasks read (see ``_engine._turns``).
* **other reads** (user functions, iterations, long queries) go to reader threads, which take
  several waiting jobs per wake-up.
* **transactions** take the lane; their quick statements run on the loop, the others on
  the writer thread; the COMMIT too, unless it costs no fsync (synchronous NORMAL or OFF) and
  nobody waits for the lane after the task gave way once: then on the loop.

Cancellation: a job cancelled before it starts never runs; a running read is interrupted (its
reader is free at once); a running write of a group-commit batch finishes and its result is
dropped; a transaction left by cancellation or an exception rolls back and frees the lane
immediately. Once a transaction's COMMIT has been sent it is not interrupted: the block waits
for it, records ``tx.committed``, and then re-raises the cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from time import perf_counter
from typing import Any, Self, TypeVar, TypeVarTuple, Unpack

from . import _args
from ._args import limit_arg, timeout_arg
from ._async_transaction import AsyncSavepoint, AsyncSnapshot, AsyncTransaction
from ._engine import INLINE_BUDGET, MISS, Engine, wait_turn
from ._facade import Facade
from ._migrations import MIGRATION_BUSY_TIMEOUT, Migration, apply_migrations
from ._statements import Result, first_value, run_execute, run_executemany, run_query, run_script
from ._stats import Stats
from ._types import DEFAULT, ExcType, Limit, Params, ParamSeq, Tb, Wait

__all__ = (
    "INLINE_BUDGET",
    "AsyncMethods",
    "AsyncSavepoint",
    "AsyncSnapshot",
    "AsyncTransaction",
)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class AsyncMethods(Facade):
    """The methods of :class:`~litegate.AsyncDatabase` (its docstring says what they promise)."""

    _close_hint = "use `await adb.close()` or `async with litegate.connect_async(...) as adb:`"

    def __init__(self, engine: Engine, *, owner: bool = True) -> None:
        super().__init__(engine, owner=owner)
        # When the current slice of inline reads began, and its length: set by a reader woken
        # from wait_turn (_engine._turns). Shared by the tasks and loops using this facade
        # without a lock: a heuristic (a lost update only moves the next park a little).
        self._last_yield = 0.0
        self._slice = 0.0  # (the first read takes a turn: _last_yield is long past)

    # ---- writes ---------------------------------------------------------------------------
    async def execute(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Result:
        """Run one write statement in its own (group-committed) transaction; returns after COMMIT."""
        if type(sql) is not str:
            _args.check_sql(sql)
        # (_t and _l inlined: every async write runs this)
        return await self._engine.write_async(
            run_execute,
            (sql, params),
            self._timeout if timeout is DEFAULT else timeout_arg(timeout),
            self._time_limit if time_limit is DEFAULT else limit_arg(time_limit),
            sql,
        )

    async def executemany(
        self, sql: str, seq: ParamSeq, *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Result:
        """Run one statement for every parameter set, in one transaction."""
        _args.check_sql(sql)
        wait, limit = self._t(timeout), self._l(time_limit)  # (checked before seq is consumed)
        rows = _args.param_sets(seq)
        return await self._engine.write_async(run_executemany, (sql, rows), wait, limit, sql)

    async def executescript(
        self, script: str, *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> None:
        """Run several statements in one transaction (all or nothing)."""
        _args.check_sql(script, "script")
        await self._engine.write_async(
            run_script, (script,), self._t(timeout), self._l(time_limit), None
        )

    async def run_write(
        self,
        fn: Callable[[Any, Unpack[Ts]], T],
        *args: *Ts,
        timeout: Wait = DEFAULT,
        time_limit: Limit = DEFAULT,
    ) -> T:
        """Call ``fn(conn, *args)`` on the writer thread inside a group-committed transaction."""
        _args.check_callable(fn)
        return await self._engine.write_async(
            fn, tuple(args), self._t(timeout), self._l(time_limit), None
        )

    def transaction(
        self, *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> AsyncTransaction:
        """``async with adb.transaction() as tx:`` -- BEGIN IMMEDIATE on the lane."""
        return AsyncTransaction(self._engine, self._t(timeout), self._l(time_limit))

    async def migrate(
        self,
        migrations: Sequence[Migration],
        *,
        timeout: Wait = DEFAULT,
        busy_timeout: float = MIGRATION_BUSY_TIMEOUT,
    ) -> int:
        """Apply migrations past ``PRAGMA user_version`` in one transaction; returns the version
        (all or nothing; other processes wait up to ``busy_timeout`` for the one applying them)."""
        _args.check_migrations(migrations)
        busy = _args.check_seconds(busy_timeout, "busy_timeout")
        tx = AsyncTransaction(self._engine, self._t(timeout), None, busy)
        async with tx:
            _, after = await tx.run(apply_migrations, migrations)
        return int(after)

    # ---- reads ----------------------------------------------------------------------------
    async def query(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> list[Any]:
        """All rows of a read-only query.

        Runs inline on the loop when a reader is idle and the query finishes within
        :data:`INLINE_BUDGET`; otherwise on a reader thread. :raises PoolTimeout: no reader
        within ``timeout``; :raises TypeError, ValueError: a bad argument (README "Bad input")
        """
        if timeout is not DEFAULT:
            _args.timeout_arg(timeout)  # (checked even when the read runs inline and never waits)
        engine = self._engine
        limit = self._time_limit if time_limit is DEFAULT else _args.limit_arg(time_limit)
        if limit is None:
            if perf_counter() - self._last_yield > self._slice:  # (before the read: a burst
                self._slice = await wait_turn()  # of tasks made ready at once reads a slice)
                self._last_yield = perf_counter()
            try:
                rows: list[Any] = engine.query_inline(sql, params)
            except TypeError:
                if not isinstance(sql, str):  # (here, not up front: free on the hot path)
                    raise _args.not_a_str(sql) from None
                raise
            if rows is not MISS:
                return rows
        _args.check_sql(sql)  # (before it is queued for a reader thread)
        result: list[Any] = await engine.read_async(
            run_query, (sql, params), self._t(timeout), limit, sql
        )
        return result

    async def query_one(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Any:
        """The first row, or ``None``."""
        rows = await self.query(sql, params, timeout=timeout, time_limit=time_limit)
        return rows[0] if rows else None

    async def query_value(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Any:
        """The first column of the first row, or ``None``."""
        return first_value(await self.query(sql, params, timeout=timeout, time_limit=time_limit))

    async def run_read(
        self,
        fn: Callable[[Any, Unpack[Ts]], T],
        *args: *Ts,
        timeout: Wait = DEFAULT,
        time_limit: Limit = DEFAULT,
    ) -> T:
        """Call ``fn(conn, *args)`` with a read-only connection on a reader thread."""
        _args.check_callable(fn)
        return await self._engine.read_async(
            fn, tuple(args), self._t(timeout), self._l(time_limit), None
        )

    def iterate(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, arraysize: int = 256
    ) -> AsyncGenerator[Any, None]:
        """Stream rows (``async for``); holds a reader (readers=0: the lane) from the first row
        until it ends. Bad arguments raise here, not at the first row."""
        _args.check_sql(sql)
        _args.check_arraysize(arraysize)
        return self._iterate(sql, params, self._t(timeout), arraysize)

    async def _iterate(
        self, sql: str, params: Params, timeout: float | None, arraysize: int
    ) -> AsyncGenerator[Any, None]:
        async with self.snapshot(timeout=timeout, time_limit=None) as snap:
            # aclosing: left early (break, cancellation), the inner iteration ends here, inside
            # the snapshot, rather than whenever the garbage collector finalizes it
            async with aclosing(snap.iterate(sql, params, arraysize=arraysize)) as rows:
                async for row in rows:
                    yield row

    def snapshot(self, *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT) -> AsyncSnapshot:
        """``async with adb.snapshot() as snap:`` -- one consistent read state."""
        return AsyncSnapshot(self._engine, self._t(timeout), self._l(time_limit))

    # ---- the rest -------------------------------------------------------------------------
    async def stats(self) -> Stats:
        """Queue, batch, pool, latency, busy and WAL figures (never blocks)."""
        return self._engine.stats()

    async def close(self, timeout: float | None = None) -> None:
        """Drain queued writes, checkpoint, close (in a thread: the loop keeps running).
        :raises TypeError, ValueError: a bad ``timeout`` (checked first: nothing is closed)"""
        await self._engine.close_async(_args.check_close_timeout(timeout))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: ExcType, exc: BaseException | None, tb: Tb) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"<litegate.{type(self).__name__} {self.path!r} {'closed' if self.closed else 'open'}>"
        )
