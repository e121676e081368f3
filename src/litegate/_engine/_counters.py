"""The engine's live counters, and who may write each.

Shared fields and their guards (the whole contract; :meth:`LocalEngine.stats` reads every field
without a lock, so a snapshot may be a moment stale, never torn):

===========================  ==========================================  ========================
field                        written by                                  guard
===========================  ==========================================  ========================
batches, jobs_ok,            the lane holder, in a group commit          the lane (one holder at
jobs_failed, max_batch,                                                  a time, handed over
batch_sizes                                                              under ``WriteLane._lock``)
busy_retries,                the lane holder, in ``begin_immediate``     the lane
busy_timeouts,
busy_wait_max
checkpoints, wal_bytes,      the lane holder (checkpoints, WAL checks)   the lane
wal_warnings
transactions                 a lease holder, releasing its lease         the lane
long_holds                   the writer thread                           single writer
write_latency, read_latency  any caller thread, the loop thread          ``deque.append`` (docu-
lane_wait, lane_holds        the writer thread, lease takers             mented thread-safe)
===========================  ==========================================  ========================

Read counts are not here: each :class:`~._connection.EngineConnection` counts the reads made on
it by whoever holds it (see its docstring), and the pools sum them.
"""

from __future__ import annotations

from collections import deque

__all__ = ("WINDOW", "Counters")

WINDOW = 4096
"""Latency samples kept per kind (the most recent ones)."""


class Counters:
    """Live counters of one engine; see the module docstring for who writes each field."""

    __slots__ = (
        "batch_sizes",
        "batches",
        "busy_retries",
        "busy_timeouts",
        "busy_wait_max",
        "checkpoints",
        "jobs_failed",
        "jobs_ok",
        "lane_holds",
        "lane_wait",
        "long_holds",
        "max_batch",
        "read_latency",
        "transactions",
        "wal_bytes",
        "wal_warnings",
        "write_latency",
    )

    def __init__(self) -> None:
        self.batches = 0
        self.jobs_ok = 0
        self.jobs_failed = 0
        self.max_batch = 0
        self.batch_sizes: deque[int] = deque(maxlen=WINDOW)
        self.busy_retries = 0
        self.busy_timeouts = 0
        self.busy_wait_max = 0.0
        self.checkpoints = 0
        self.wal_bytes = 0
        self.wal_warnings = 0
        self.transactions = 0
        self.long_holds = 0
        self.write_latency: deque[float] = deque(maxlen=WINDOW)
        self.read_latency: deque[float] = deque(maxlen=WINDOW)
        self.lane_wait: deque[float] = deque(maxlen=WINDOW)
        self.lane_holds: deque[float] = deque(maxlen=WINDOW)
