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
  loop iteration holds one slice of reads however many tasks read (see ``_Turns``).
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

import asyncio
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from time import perf_counter
from typing import Any, Self, TypeVar, TypeVarTuple, Unpack

from . import _args
from ._async_transaction import AsyncSavepoint, AsyncSnapshot, AsyncTransaction
from ._engine import INLINE_BUDGET, MISS, Engine
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

# Inline reads run on the loop without awaiting anything, so a task reading in a loop would keep
# the loop to itself: after each *slice* of inline reading it gives way. Giving way by a plain
# yield (asyncio.sleep(0)) leaves the task in the loop's ready queue, so with N tasks reading
# every loop iteration ran N slices before timers and I/O had their turn: the loop's lag was
# ~2.5 iterations (a timer's callback, then the task it wakes, each wait one), so 64 reading
# tasks made every other callback wait 20-60 ms even with 100 us slices (issue 11; measured
# with the loop's iterations timed). So a task whose slice is spent *parks* in the loop's
# queue of readers (_Turns, FIFO) and wakes the first one: one reader at a time reads inline,
# an iteration holds one slice however many tasks read, and a parked task costs nothing.
# The slice starts when a parked reader is woken; a task about to read after it is spent parks
# first, so a burst of tasks made ready at once reads one slice, then queues (parking after
# the read, each read once in the same iteration). Not yet: reads that waited for a reader to
# be opened for the loop retry inline in the engine, all in the iteration the open ends in
# (once per slot opened; 64 scans: ~5 ms).
# Its length: a round of the parked readers takes about _ROUND (a reader's wait for its next
# turn, so the p99 of reads at 64 tasks), within [_SLICE_MIN, _SLICE_MAX]: long enough that a
# park (~20k instructions, ~8 us: callgrind) costs little, short enough that a timer is late
# by at most a few slices. benchmarks/async_reads.py --src measures settings against each
# other. A round of 32 ms (0.5 ms slices up to 64 readers) gave point reads their least CPU
# but made every task wait a whole round every few reads: p99 35 ms for point reads and 44 ms
# for 100-row scans at 64 tasks, 3.7x and 2.1x aiosqlite's (each of whose calls waits for the
# 63 others, FIFO). With 8 ms (0.125 ms slices at 64 readers), in one interleaved run: point
# reads p99 10.6 ms (1.1x aiosqlite's), scans 17.5 ms (0.83x), the loop's lag p99 0.5-0.9 ms,
# at 3 % fewer point reads and 10 % fewer scans a second (issue 11).
_ROUND = 0.008
_SLICE_MAX = 0.000_5
_SLICE_MIN = 0.000_1


class _Turns:
    """One event loop's readers waiting for a turn to read inline again (loop thread only: one
    per thread, as a thread runs one loop at a time; replaced when it runs another loop).

    ``waiting``: the parked readers' futures, first come first woken (a cancelled one is
    skipped); ``woken``: one was woken and has not resumed yet; ``turn`` counts the wakes.
    Liveness: while ``waiting`` holds a live future, a woken reader is due to resume or a
    :meth:`fallback` is scheduled -- a resumed reader wakes the next one when it parks again,
    and if it never does (it stopped reading), its fallback a loop iteration later does."""

    __slots__ = ("loop", "turn", "waiting", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.woken = False
        self.turn = 0

    def wake_next(self) -> None:
        waiting = self.waiting
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                self.woken = True
                self.turn += 1
                return

    def fallback(self, turn: int) -> None:
        """Loop callback: nobody was woken since ``turn``: wake the next reader."""
        if self.turn == turn and not self.woken:
            self.wake_next()


_local = threading.local()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _loop_turns() -> _Turns:
    loop = asyncio.get_running_loop()
    turns: _Turns | None = getattr(_local, "turns", None)
    if turns is None or turns.loop is not loop:
        turns = _local.turns = _Turns(loop)
    return turns


async def _wait_turn() -> float:
    """Park until this task's turn to read inline again (after the readers parked before it);
    returns the slice it may read for."""
    turns = _loop_turns()
    fut = turns.loop.create_future()
    turns.waiting.append(fut)
    if not turns.woken:
        turns.wake_next()  # (the first parked: perhaps this task, resumed next iteration)
    try:
        if fut.done():  # it woke itself (nobody else parked): awaiting fut would not give way
            # A plain yield would put the task back in the ready queue ahead of the timers that
            # fall due meanwhile: they would wait for its next slice too (a lone task reading
            # or committing on the loop made a 1 ms ticker 1.3 ms late at p50). Resumed from a
            # callback instead, it runs one iteration later, after them.
            later = turns.loop.create_future()
            turns.loop.call_soon(_resolve, later)
            await later
        else:
            await fut
    finally:
        if not fut.cancelled():  # woken (then perhaps cancelled): the next one's turn is due
            turns.woken = False
            if turns.waiting:
                turns.loop.call_soon(turns.fallback, turns.turn)
    fit = _ROUND / (len(turns.waiting) + 1)
    return _SLICE_MAX if fit > _SLICE_MAX else _SLICE_MIN if fit < _SLICE_MIN else fit


class AsyncMethods(Facade):
    """The methods of :class:`~litegate.AsyncDatabase` (its docstring says what they promise)."""

    _close_hint = "use `await adb.close()` or `async with litegate.connect_async(...) as adb:`"

    def __init__(self, engine: Engine, *, owner: bool = True) -> None:
        super().__init__(engine, owner=owner)
        # When the current slice of inline reads began (see _SLICE): set by a reader woken from
        # _wait_turn. Shared by the tasks and loops using this facade without a lock: a
        # heuristic (a lost update only moves the next park a little).
        self._last_yield = 0.0
        self._slice = _SLICE_MAX

    # ---- writes ---------------------------------------------------------------------------
    async def execute(
        self, sql: str, params: Params = (), *, timeout: Wait = DEFAULT, time_limit: Limit = DEFAULT
    ) -> Result:
        """Run one write statement in its own (group-committed) transaction; returns after COMMIT."""
        if type(sql) is not str:
            _args.check_sql(sql)
        return await self._engine.write_async(
            run_execute, (sql, params), self._t(timeout), self._l(time_limit), sql
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
                self._slice = await _wait_turn()  # of tasks made ready at once reads a slice)
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
