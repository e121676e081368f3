"""Counters (mutable, each written by the thread that owns it) and the public Stats snapshot."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ._connection import BusyCounter

__all__ = ("Counters", "Stats", "percentile")

_WINDOW = 4096  # latency samples kept per kind (the most recent ones)


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of samples, nearest-rank; 0.0 when empty."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


class Counters(BusyCounter):
    """Live counters. Writer-thread fields are written only by the writer; ``deque.append`` is
    atomic under the GIL, so readers of a snapshot see a consistent-enough picture without locks.
    """

    __slots__ = (
        "batch_sizes",
        "batches",
        "checkpoints",
        "jobs_failed",
        "jobs_ok",
        "lane_holds",
        "lane_wait",
        "long_holds",
        "max_batch",
        "read_latency",
        "reads",
        "transactions",
        "wal_bytes",
        "wal_warnings",
        "write_latency",
    )

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0
        self.jobs_ok = 0
        self.jobs_failed = 0
        self.max_batch = 0
        self.batch_sizes: deque[int] = deque(maxlen=_WINDOW)
        self.write_latency: deque[float] = deque(maxlen=_WINDOW)
        self.read_latency: deque[float] = deque(maxlen=_WINDOW)
        self.lane_wait: deque[float] = deque(maxlen=_WINDOW)
        self.lane_holds: deque[float] = deque(maxlen=_WINDOW)
        self.reads = 0
        self.transactions = 0
        self.long_holds = 0
        self.checkpoints = 0
        self.wal_bytes = 0
        self.wal_warnings = 0


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of one engine's activity. Times are in milliseconds.

    Percentiles cover the most recent samples (a window of a few thousand).
    """

    queue_depth: int
    queue_capacity: int
    batches: int
    jobs_ok: int
    jobs_failed: int
    max_batch_size: int
    mean_batch_size: float
    write_p50_ms: float
    write_p99_ms: float
    read_p50_ms: float
    read_p99_ms: float
    reads: int
    transactions: int
    lane_wait_p50_ms: float
    lane_wait_p99_ms: float
    lane_hold_p99_ms: float
    lane_hold_max_ms: float
    long_holds: int
    readers_mode: str
    pool_size: int
    pool_open: int
    pool_in_use: int
    pool_waiting: int
    pool_waits: int
    pool_timeouts: int
    pool_wait_p99_ms: float
    busy_retries: int
    busy_timeouts: int
    busy_wait_max_ms: float
    checkpoints: int
    wal_bytes: int
    wal_warnings: int

    def as_dict(self) -> dict[str, float | int | str]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
