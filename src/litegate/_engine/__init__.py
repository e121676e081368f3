"""The engine: who owns each connection, which thread uses it, and how calls reach it.

Facades see only the interface (:mod:`._interface`); everything else in this package is the
local implementation, :class:`LocalEngine`. The data flow, in the spirit of CPython's
``concurrent/futures/process.py``::

  caller threads                          write lane (_lane and its layers, _batch)
  ──────────────                          ───────────────────────────────────────────────
  Database.execute ─ write ─► lane.call ─┬─ lane idle: run the job here, plus what queued,
                                         │  as one group commit (BEGIN IMMEDIATE ... COMMIT)
                                         └─ lane busy: Job ─► _queue ─► writer thread takes
                                            a batch, group-commits it, releases each
                                            Job.done after the COMMIT
  Transaction ─ lease ─► lane.take ─┬─ idle: the caller's thread holds the writer conn
                                    └─ busy: LaneHold ─► _queue ─► the holder before hands
                                       the lane on (or the writer thread grants it)
  group commit (_group): a transaction ending while another waits hands the lane on with the
  SQLite transaction open (each joiner in its own SAVEPOINT); the last COMMITs for all and
  answers every member's ticket

  asyncio tasks (loop thread)
  ───────────────────────────
  AsyncDatabase.execute ─ write_async ─┬─ NORMAL/OFF, alone, lane idle: run and COMMIT on
                                       │  the loop (_loop_write: lane.take_here/end_here)
                                       └─ else AsyncJob ─► _queue ─► writer group-commits ─►
      outbox ─► flush: one call_soon_threadsafe per loop per batch ─► futures resolved
  AsyncTransaction ─ lease_async ─┬─ idle: taken on the loop at once (the loop's tenure)
                                  ├─ held by a task of the same loop: a LaneTurn waits in
                                  │  that hold's ``waiting``; the lane goes from task to task
                                  │  there, no lock, no thread (lane.queue_turn, _hand_turn);
                                  │  turns left when the lane leaves the loop queue for it
                                  └─ busy elsewhere: AsyncLaneHold ─► _queue ─► handed on (on
                                     the same loop: its future resolved directly) or granted
      quick statements run on the loop; others go to the writer thread (lane._ops), which
      also runs the group's COMMIT when the lane is handed to it (at NORMAL/OFF the COMMIT
      runs on the loop: alone, lane.commit_here; a group whose every part was light on a
      loop, lane.commit_group_here, which hands the lane straight to the next waiter)

  read pool (_pool) and reader threads (_readers)
  ───────────────────────────────────────────────
  Database.query ─ query ─► pool.query: borrow a reader on the caller's thread, run, give back
  AsyncDatabase.query ─ query_inline ─► an idle reader, on the loop, within INLINE_BUDGET
                      └ (MISS) read_async ─► once more inline a turn later, else
                        ReaderThreads queue ─► a reader thread borrows, runs, and answers via
                        its outbox (and marks a query over the budget: SlowStatements, whose
                        next calls MISS at once)
  snapshots, iterations ─ borrow / borrow_async ─► one reader held across calls
  readers=0: every read is a lane job (a READ Job / AsyncJob), run outside any transaction

Who owns what: the writer connection belongs to the lane holder of the moment (the writer
thread, a direct caller, or a lease holder); a reader belongs to its borrower until returned;
futures are resolved only on their own loop. Each module states, in a table, who writes each
shared field and what guards it. ``fork()`` and exit are handled in :mod:`._fork`.
"""

from __future__ import annotations

from .._config import Options
from ._authorizer import PRAGMA_READS_WITH_ARGUMENT, use_authorizer
from ._authorizer import explain as explain_refusal
from ._bridge import INLINE_BUDGET, MISS
from ._counters import Counters
from ._fork import live
from ._interface import AsyncReadLease, AsyncWriteLease, Engine, ReadLease, WriteLease
from ._local import LocalEngine
from ._turns import wait_turn

__all__ = (
    "wait_turn",
    "INLINE_BUDGET",
    "PRAGMA_READS_WITH_ARGUMENT",
    "MISS",
    "AsyncReadLease",
    "AsyncWriteLease",
    "Counters",
    "Engine",
    "LocalEngine",
    "ReadLease",
    "WriteLease",
    "explain_refusal",
    "live",
    "open_engine",
    "use_authorizer",
)


def open_engine(opts: Options) -> Engine:
    """The engine for ``opts`` (today: always a :class:`LocalEngine`). Blocks while the
    writer connection is opened (at most ``busy_timeout`` if another process initialises the
    file). :raises ValueError: an invalid option :raises sqlite3.Error: cannot be opened"""
    return LocalEngine(opts)
