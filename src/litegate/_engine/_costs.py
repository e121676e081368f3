"""What a write statement costs: the measure that keeps a slow one off the event loop.

A write statement runs on the loop only when its SQL text is known to be quick: every run is
measured -- in SQLite VM steps (a progress handler counting every :data:`STEP_BUDGET`) and in
its thread's CPU time -- and the most a text took is kept in the lane's cost table (written
by the lane holder, or on its behalf; see :mod:`._lane_state`). A text never seen, or one that
last ran slow, is measured on the writer thread. Used by async transactions
(:mod:`._async_lease`) and by lone async writes (:mod:`._loop_write`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from time import perf_counter, thread_time
from typing import Any

from ._authorizer import first_word

__all__ = (
    "LARGE_VALUE",
    "SLOW_SECONDS",
    "SMALL_TYPES",
    "STEP_BUDGET",
    "Steps",
    "clocks",
    "forget_cost",
    "large_params",
    "measured",
    "ran_slow",
    "record_cost",
)


class Steps:
    """A progress handler that counts how often it was called (every STEP_BUDGET steps)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return 0  # (never interrupts)


def record_cost(costs: dict[str, int], sql: str, calls: int) -> None:
    """Remember how many step budgets ``sql`` took at most (0: quick). SQLite counts a cached
    statement's steps across its runs, so a quick run may still call the handler once: one
    call is less than two budgets (quick); two or more, at least one budget (slow)."""
    n = calls - 1 if calls > 1 else 0
    if len(costs) >= _COSTS_MAX:
        costs.clear()
    if n > costs.get(sql, -1):
        costs[sql] = n


def clocks() -> tuple[float, float]:
    """This thread's wall and CPU clocks now, for :func:`ran_slow`."""
    return perf_counter(), thread_time()


def ran_slow(started: tuple[float, float]) -> bool:
    """Did the run begun at ``started`` (:func:`clocks`) take over :data:`SLOW_SECONDS` of
    this thread's CPU? CPU time never exceeds wall time, so the CPU clock (a syscall) is read
    again only once the wall time is over: one syscall less per quick run."""
    return perf_counter() - started[0] > SLOW_SECONDS and thread_time() - started[1] > SLOW_SECONDS


def forget_cost(costs: dict[str, int], sql: str) -> None:
    """A text thought quick took over :data:`SLOW_SECONDS` of CPU in few VM steps (one heavy
    step, as ``zeroblob(?)``; or a one-off: a page fault, the tracer of a debugger or of
    coverage): unknown again, so its next run is measured on the writer thread -- kept off the
    loop while it stays heavy, back on it once it is quick again."""
    costs.pop(sql, None)


def large_params(params: Any) -> bool:
    """Has a write a text or blob parameter of :data:`LARGE_VALUE` or more (never on the
    loop: binding and writing it is one VM step however long it takes)?"""
    for v in _param_values(params):
        if isinstance(v, _SIZED) and len(v) >= LARGE_VALUE:
            return True
    return False


SMALL_TYPES = frozenset({int, float, type(None)})
"""Parameter types whose values are never large (a tuple of only these needs no length check)."""
_SIZED = (str, bytes, bytearray, memoryview)  # (a tuple: ``str | bytes ...`` is built per call)


def _param_values(params: Any) -> Any:
    """The parameter values of ``params`` (a sequence, or a dict of named ones)."""
    return params.values() if isinstance(params, dict) else params


def measured(
    conn: sqlite3.Connection, fn: Callable[..., Any], costs: dict[str, int], sql: str, *rest: Any
) -> Any:
    """Writer thread (the lane holder, for an async caller): run a write, measuring how many
    SQLite VM steps and how much of this thread's CPU time it took (the lane's cost table:
    written by the lane holder or on its behalf only). Steps and CPU time, not wall time:
    neither grows while the thread waits for the GIL or a core. Time catches a statement
    whose work is one VM step (``DROP TABLE``, ``DELETE`` of a whole table, a huge blob):
    such a run leaves the text unknown (measured again when it next runs)."""
    steps = Steps()
    t0 = thread_time()
    conn.set_progress_handler(steps, STEP_BUDGET)
    try:
        result = fn(conn, sql, *rest)
    finally:
        conn.set_progress_handler(None, 0)
    if (steps.n > 1 or thread_time() - t0 <= SLOW_SECONDS) and not _controls(sql):
        record_cost(costs, sql, steps.n)
    # else few steps but long: left unknown, so measured again next time (a first run also
    # parses the schema and prepares the statement; a heavy one stays off the loop)
    return result


def _controls(sql: str) -> bool:
    """Is ``sql`` a transaction-control statement (``SAVEPOINT``, ``RELEASE``, ``ROLLBACK``,
    ...)? Such a text is never judged quick: on the loop it would run inside a group of other
    writes (:mod:`._loop_group`), where ``ROLLBACK TO`` could undo theirs. (Its first word,
    past white space, ``;`` and comments: :func:`~._authorizer.first_word`.)"""
    return first_word(sql).startswith(_CONTROL_WORDS)


_CONTROL_WORDS = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT", "END")

SLOW_SECONDS = 0.001
"""A write statement that took this much of its thread's CPU time is slow: it runs on the
writer thread from then on (CPU time: waiting for the GIL or a core does not count)."""
LARGE_VALUE = 65536
"""A text or blob parameter this long or longer keeps a write off the loop."""
STEP_BUDGET = 10_000
"""SQLite VM steps: a write statement whose SQL text has never taken more than one budget
(counted to within one: see :func:`record_cost`) runs on the loop. 10,000 steps are some
0.05-0.2 ms here; a point UPDATE or INSERT takes a few dozen."""
_COSTS_MAX = 4096  # SQL texts remembered (then forgotten all at once: measured again)
