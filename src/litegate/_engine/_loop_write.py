"""Lone writes run on the event loop itself, where a COMMIT costs no fsync.

At ``synchronous=NORMAL`` or ``OFF`` (WAL) a one-statement write's COMMIT only appends to the
WAL, so when a task writes alone it costs less to run the statement and its COMMIT on the loop
than to hand them to the writer thread and wait for the answer (one task's one-row writes:
0.144 ms p50 through the writer thread, against aiosqlite's 0.086 ms). Three rules keep the
loop free and group commit intact:

* **never long:** only a SQL text known to be quick runs here: its first run is measured on
  the writer thread (VM steps and CPU time: the lane's cost table, shared with async
  transactions), and one with a large text or blob parameter is not run here at all. Here it
  runs under a budget of SQLite VM steps (:data:`~._costs.STEP_BUDGET`): one that runs
  past it is interrupted -- the statement is its whole transaction, so nothing of it is kept
  -- and queued for the writer thread; one that took over :data:`SLOW_SECONDS` of CPU all the
  same (a statement whose work is one VM step, e.g. ``zeroblob(?)``) becomes unknown again: its
  next run is measured on the writer thread (CPU time, not wall time: the loop thread waits for
  the GIL after each step while other threads run, up to the 5 ms switch interval, and a quick
  text must not lose the loop for that; and a one-off slow run only costs one measurement). Either
  way its text goes to the writer thread from then on. SQLite's automatic checkpoint (it
  fsyncs) is held off for the COMMIT (:meth:`~._lane_turns.LaneTurns.take_here` says when one
  is due off the loop).
* **alone only:** a write first gives way to the loop once. If another write of this loop's
  tasks comes meanwhile, both go to this loop's write group (:mod:`._loop_group`: their
  statements on the loop, its one COMMIT on the writer thread, beside the loop; 64 tasks of
  one-row writes: 1.2-1.3x as many a second as queued whole for the writer thread, each
  handed over and answered). If the lane is busy, the write is queued as before.
* **nothing else changes:** errors are those of the queued path, a write is acknowledged only
  after its COMMIT returned, a cancellation while it gives way withdraws it (it never ran).

Shared state: the per-loop record of a write giving way (:class:`_Window`), kept per thread
and written only by the thread running that loop (a thread runs one loop at a time).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from .._errors import RolledBack
from .._statements import run_execute
from .._types import Args, Bound, Params
from ._authorizer import refuse_plain_savepoint, refuse_plain_savepoints
from ._batch import job_error
from ._bridge import give_way
from ._costs import (
    STEP_BUDGET,
    clocks,
    forget_cost,
    large_params,
    measured,
    ran_slow,
    record_cost,
)
from ._jobs import WRITE
from ._lane import WriteLane
from ._loop_group import write_grouped
from ._turns import of_this_loop

__all__ = ("CROWDED", "write_cheap", "write_other")

_SQLITE_INTERRUPT = 9

LaneJob = Callable[[int, Callable[..., Any], Args, Bound, Bound, "str | None", str], Awaitable[Any]]


class _Window:
    """A loop's write that is giving way (``open``), and whether another write came meanwhile
    (``crowded``: then both go to the loop's write group, :mod:`._loop_group`)."""

    __slots__ = ("crowded", "loop", "open")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # (weak: see of_this_loop)
        self.open = False
        self.crowded = False


def _window() -> _Window:
    return of_this_loop(_Window, "window")


class _Budget:
    """A progress handler (called every STEP_BUDGET VM steps) that interrupts the statement at
    its second call: SQLite counts a cached statement's steps across its runs, so a quick run
    may call it once."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return 1 if self.n > 1 else 0


async def write_cheap(
    lane: WriteLane, lane_job: LaneJob, sql: str, params: Params, timeout: Bound
) -> Any:
    """An async one-statement write (no time limit) where the lane's COMMIT costs no fsync:
    here on the loop when it can (see the module), else queued for the writer thread through
    ``lane_job`` -- measured there if its SQL text is new. Raises what the queued write would
    raise."""
    window = _window()
    if window.open:  # another write gives way: both go to the loop's group (one yield per burst)
        window.crowded = True
        cost = lane.costs.get(sql)  # (read without the lane: a stale value picks a path)
        if cost == 0:
            return CROWDED
    else:
        window.open, window.crowded = True, False
        try:
            await give_way()
        finally:
            window.open = False
        cost = lane.costs.get(sql)
        if cost == 0:
            if window.crowded:
                return CROWDED
            if not large_params(params):
                result = _run_here(lane, sql, params)
                if result is not _AGAIN:
                    return result
                cost = 1
    if cost != 0:  # (a savepoint text is never measured quick: see refuse_plain_savepoint)
        refuse_plain_savepoint(sql)
    if cost is None:  # new: measured on the writer thread (steps and CPU time)
        args: Args = (run_execute, lane.costs, sql, params)
        return await lane_job(WRITE, measured, args, timeout, None, sql, "the write")
    return await lane_job(WRITE, run_execute, (sql, params), timeout, None, sql, "the write")


async def write_other(
    lane: WriteLane,
    lane_job: LaneJob,
    latency: deque[float],
    fn: Callable[..., Any],
    args: Args,
    timeout: Bound,
    time_limit: Bound,
    sql: str | None,
) -> Any:
    """An async write that :func:`~._loop_group.write_grouped` is not called for (it is for
    every one-statement write where a COMMIT fsyncs): a one-statement write where it does not
    (:func:`write_cheap`: alone, on the loop; with others, ``write_grouped`` after all), the
    others queued for the writer thread through ``lane_job``. Its time, when it succeeds, goes
    to ``latency``."""
    t0 = perf_counter()
    if fn is run_execute and time_limit is None:  # (its COMMIT costs no fsync)
        result = await write_cheap(lane, lane_job, args[0], args[1], timeout)
        if result is CROWDED:
            return await write_grouped(lane, lane_job, args[0], args[1], timeout, latency, t0)
    else:
        refuse_plain_savepoints(fn, args)
        result = await lane_job(WRITE, fn, args, timeout, time_limit, sql, "the write")
    latency.append(perf_counter() - t0)
    return result


_AGAIN: Any = object()  # _run_here: it ran too long here; queue it
CROWDED: Any = object()  # write_cheap: writes came together; this loop's write group takes it


def _run_here(lane: WriteLane, sql: str, params: Params) -> Any:
    """Loop thread: ``sql`` as its own transaction on the idle lane, here. ``_AGAIN`` (queue
    it) if the lane is busy, or if it ran past the step budget (interrupted: rolled back)."""
    try:
        conn = lane.take_here()
        if conn is None:
            return _AGAIN
        budget = _Budget()
        started = clocks()
        conn.set_progress_handler(budget, STEP_BUDGET)
        try:
            result = run_execute(conn, sql, params)
        except BaseException as exc:
            conn.set_progress_handler(None, 0)
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if budget.n > 1 and code == _SQLITE_INTERRUPT:
                record_cost(lane.costs, sql, budget.n)  # (slow: the writer runs it after)
                lane.end_here(False, failed=False)
                return _AGAIN
            lane.end_here(False)
            err = job_error(exc) if isinstance(exc, Exception) else exc
            if err is exc:
                raise
            raise err from exc
        conn.set_progress_handler(None, 0)
        if ran_slow(started):  # (one heavy step? measured off the loop next time)
            forget_cost(lane.costs, sql)
        if not conn.in_transaction:  # (its statement ended the transaction)
            lane.end_here(False)
            raise RolledBack("the write's statement ended its transaction; nothing was committed")
        error = lane.end_here(True)
    except BaseException:
        lane.abandon_here()  # (an interrupt between the steps above: never strand the lane)
        raise
    if error is not None:
        raise error
    return result
