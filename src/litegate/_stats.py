"""The public :class:`Stats` snapshot, and :func:`percentile` (used by the engine and the tools)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("Stats", "percentile")


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of samples, nearest-rank; 0.0 when empty."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


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
