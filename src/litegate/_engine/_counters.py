"""The engine's live counters, and who may write each.

Shared fields and their guards (the whole contract; :meth:`Counters.figures`, for an engine's
``stats()``, reads every field without a lock, so a snapshot may be a moment stale, never
torn):

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

Read counts are not here: they are counted per connection by whoever holds it (a pool's record
of a reader, updated by its borrower at release; the lane's ``reads``, by the lane holder), and
:meth:`LocalEngine.stats` sums them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .._stats import percentile

__all__ = ("WINDOW", "Counters", "ms")

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

    def figures(self) -> dict[str, Any]:
        """The :class:`~litegate.Stats` fields these counters give (the rest are the engine's:
        queue, pool, mode), read without a lock as the module docstring says."""
        sizes = list(self.batch_sizes)
        holds = list(self.lane_holds)
        return {
            "batches": self.batches,
            "jobs_ok": self.jobs_ok,
            "jobs_failed": self.jobs_failed,
            "max_batch_size": self.max_batch,
            "mean_batch_size": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
            "write_p50_ms": ms(self.write_latency, 0.5),
            "write_p99_ms": ms(self.write_latency, 0.99),
            "read_p50_ms": ms(self.read_latency, 0.5),
            "read_p99_ms": ms(self.read_latency, 0.99),
            "transactions": self.transactions,
            "lane_wait_p50_ms": ms(self.lane_wait, 0.5),
            "lane_wait_p99_ms": ms(self.lane_wait, 0.99),
            "lane_hold_p99_ms": ms(holds, 0.99),
            "lane_hold_max_ms": round(max(holds, default=0.0) * 1000.0, 3),
            "long_holds": self.long_holds,
            "busy_retries": self.busy_retries,
            "busy_timeouts": self.busy_timeouts,
            "busy_wait_max_ms": round(self.busy_wait_max * 1000.0, 3),
            "checkpoints": self.checkpoints,
            "wal_bytes": self.wal_bytes,
            "wal_warnings": self.wal_warnings,
        }


def ms(samples: Any, q: float) -> float:
    """The q-quantile of ``samples`` (seconds), in milliseconds."""
    return round(percentile(list(samples), q) * 1000.0, 3)
