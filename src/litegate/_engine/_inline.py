"""The inline budget: how long a read may run on the event loop's thread before it is
interrupted and sent to a reader thread, and the progress handler that enforces it.

A reader of the bounded pool keeps its handler (an :class:`InlineGuard`) installed between
inline reads -- installing and removing a handler each time was ~2,000 of a point read's
~30,000 instructions (callgrind) -- and has it removed before it is lent to anything else
(:mod:`._pool`): a handler left on a reader thread's connection would take the GIL every
``PROGRESS_STEPS`` VM steps of its reads. Other connections (the writer, a read lease's
reader) get a guard for one call (:func:`~._bridge.run_inline`).
"""

from __future__ import annotations

import math
import sqlite3
from time import perf_counter
from typing import Any, TypeVar

from .._types import Args, Fn
from ._authorizer import reraise

__all__ = ("INLINE_BUDGET", "MISS", "PROGRESS_STEPS", "InlineGuard", "interrupted", "run_inline")

T = TypeVar("T")

INLINE_BUDGET = 0.001
"""Seconds a read may run inline on the event loop before it is moved to a reader thread (if it
is long: a read stalled past it is given ~1,000 more VM steps, up to ``_HARD_BUDGET``)."""
PROGRESS_STEPS = 100
# Past the budget, a read is interrupted only once it has also run this many more progress
# calls (x PROGRESS_STEPS VM steps: ~0.03-0.15 ms of work), or when it reaches _HARD_BUDGET.
# Over the budget in wall time is as often a stall as a long statement: the loop thread waited
# for the GIL (each progress call and each row takes it back from the reader and writer
# threads) or was descheduled. Interrupting a stalled read gains the loop nothing -- the time is
# gone -- and its re-run on a reader thread competes with the loop for the GIL row by row,
# waiting up to a switch interval (5 ms) for each: offloaded 100-row scans took 50-170 ms at 64
# tasks, and the loop waited too (issue 11: 40-100 misses in 2 s before, 0-8 after).
_LONG_CALLS = 10
_HARD_BUDGET = 0.003
_SQLITE_INTERRUPT = 9
MISS: Any = object()
"""What an inline run returns for a statement that ran over the budget (interrupted)."""


class InlineGuard:
    """A connection's progress handler for inline reads: :meth:`over` is installed with
    ``PROGRESS_STEPS``; :meth:`arm` starts a read's budget. Fields: the thread running the
    connection's statement of the moment (the loop's), as the connection's borrower."""

    __slots__ = ("calls", "deadline", "hard")

    def __init__(self) -> None:
        self.deadline = self.hard = math.inf  # (unarmed: never over)
        self.calls = 0

    def arm(self) -> None:
        start = perf_counter()  # (perf_counter: fine-grained on every OS)
        self.deadline, self.hard, self.calls = start + INLINE_BUDGET, start + _HARD_BUDGET, 0

    def over(self) -> bool:
        if perf_counter() < self.deadline:
            return False
        self.calls += 1
        return self.calls > _LONG_CALLS or perf_counter() > self.hard


def interrupted(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` is SQLite's SQLITE_INTERRUPT (the guard stopped the statement)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_INTERRUPT


def run_inline(conn: sqlite3.Connection, fn: Fn[T], args: Args) -> T:
    """Run ``fn(conn, *args)`` on the loop thread within INLINE_BUDGET; MISS if it ran over
    (it was interrupted: a read, so nothing of it remains)."""
    guard = InlineGuard()
    guard.arm()
    conn.set_progress_handler(guard.over, PROGRESS_STEPS)
    try:
        return fn(conn, *args)
    except sqlite3.DatabaseError as exc:
        if interrupted(exc):
            result: T = MISS
            return result
        reraise(exc)  # a refused PRAGMA or ATTACH: say so
    finally:
        conn.set_progress_handler(None, 0)
