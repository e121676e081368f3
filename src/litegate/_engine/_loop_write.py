"""Lone writes run on the event loop itself, where a COMMIT costs no fsync.

At ``synchronous=NORMAL`` or ``OFF`` (WAL) a one-statement write's COMMIT only appends to the
WAL, so when a task writes alone it costs less to run the statement and its COMMIT on the loop
than to hand them to the writer thread and wait for the answer (one task's one-row writes:
0.144 ms p50 through the writer thread, against aiosqlite's 0.086 ms). Three rules keep the
loop free and group commit intact:

* **never long:** the statement runs under a budget of SQLite VM steps
  (:data:`~._async_lease.STEP_BUDGET`); one that runs past it is interrupted -- the statement
  is its whole transaction, so nothing of it is kept -- and queued for the writer thread, and
  its SQL text is remembered as slow (the lane's cost table, shared with async transactions):
  it goes to the writer thread from then on. SQLite's automatic checkpoint (it fsyncs) is held
  off for the COMMIT (:meth:`~._lane_turns.LaneTurns.take_here` says when one is due off the
  loop).
* **alone only:** a write first gives way to the loop once. If another write of this loop's
  tasks comes meanwhile (it is queued at once), or the lane is busy, it is queued as before:
  writes that arrive together are group-committed by the writer thread, which runs their
  COMMIT beside the loop.
* **nothing else changes:** errors are those of the queued path, a write is acknowledged only
  after its COMMIT returned, a cancellation while it gives way withdraws it (it never ran).

Shared state: the per-thread record of a write giving way (:class:`_Window`), written only by
the thread that runs the loop (a thread runs one loop at a time).
"""

from __future__ import annotations

import sqlite3
import threading
import types
from collections.abc import Generator
from typing import Any

from .._errors import RolledBack
from .._statements import run_execute
from .._types import Params
from ._async_lease import STEP_BUDGET
from ._batch import job_error
from ._bridge import MISS
from ._lane import WriteLane

__all__ = ("write_here",)

_SQLITE_INTERRUPT = 9
_COSTS_MAX = 4096  # SQL texts remembered (as the async transactions' cost table)


class _Window:
    """This thread's loop's write that is giving way (``open``), and whether another write came
    meanwhile (``crowded``: then both are queued, and group-committed)."""

    __slots__ = ("crowded", "open")

    def __init__(self) -> None:
        self.open = False
        self.crowded = False


_local = threading.local()


def _window() -> _Window:
    window: _Window | None = getattr(_local, "window", None)
    if window is None:
        window = _local.window = _Window()
    return window


@types.coroutine
def _give_way() -> Generator[None, None, None]:
    """Let every other ready callback of the loop run once (``asyncio.sleep(0)``)."""
    yield


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


async def write_here(lane: WriteLane, sql: str, params: Params) -> Any:
    """Loop thread, where the lane's COMMIT costs no fsync: run ``sql`` as its own transaction
    here, COMMIT included; :data:`MISS` if it must be queued for the writer thread instead (see
    the module). Raises what the queued write would raise."""
    window = _window()
    if window.open:  # another write gives way: both are queued (one yield per burst)
        window.crowded = True
        return MISS
    window.open, window.crowded = True, False
    try:
        await _give_way()
    finally:
        window.open = False
    costs = lane.costs
    if window.crowded or costs.get(sql, 0) > 0:
        return MISS
    conn = lane.take_here()
    if conn is None:
        return MISS
    budget = _Budget()
    try:
        conn.set_progress_handler(budget, STEP_BUDGET)
        try:
            result = run_execute(conn, sql, params)
        finally:
            conn.set_progress_handler(None, 0)
    except BaseException as exc:
        lane.end_here(False)
        if budget.n > 1 and isinstance(exc, sqlite3.OperationalError):
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_INTERRUPT:
                if len(costs) >= _COSTS_MAX:
                    costs.clear()
                costs[sql] = budget.n - 1  # (slow: the writer thread runs it from now on)
                return MISS
        err = job_error(exc) if isinstance(exc, Exception) else exc
        if err is exc:
            raise
        raise err from exc
    if not conn.in_transaction:  # (its statement ended the transaction: never acknowledged)
        lane.end_here(False)
        raise RolledBack("the write's statement ended its transaction; nothing was committed")
    error = lane.end_here(True)
    if error is not None:
        raise error
    return result
