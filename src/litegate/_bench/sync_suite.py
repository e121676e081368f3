"""The sync suite: OS threads; litegate's ``Database`` against the folk remedies for sharing
sqlite3 between threads, plus a ceiling (bare group commit: writes and transfers).

Workloads: a 90/10 mix on 8 threads, single-row writes on 64 and interactive transfers on 8,
on a ``kv`` table of ``SYNC_ROWS`` rows, each at every chosen ``synchronous`` level. Ratios:
against the best remedy (mix, transfers) or the lock (writes); references: raw sqlite3 on one
thread running each workload, and the hand-off floor.

Threads: :func:`run_benchmark` blocks the caller's thread for the whole run (which must not be
running an event loop); ``progress`` is called from the caller's thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .contenders import (
    DEFAULT_POOL_SIZE,
    BareGroupCommit,
    Contender,
    Litegate,
    Locked,
    PerThread,
    QueuePool,
)
from .report import BenchResult, CaseResult, Layout, Ratio, Target, json_by_case
from .runner import THREADS
from .session import HANDOFF_FLOOR, Suite, meta, reference_name, run_suite
from .workloads import WORKLOADS, Case

__all__ = (
    "DEFAULT_SECONDS",
    "DEFAULT_SYNCHRONOUS",
    "SYNC_LAYOUT",
    "SYNC_ROWS",
    "SYNC_THREADS",
    "TARGETS",
    "run_benchmark",
    "sync_suite",
)

DEFAULT_SECONDS = 3.0
DEFAULT_SYNCHRONOUS: tuple[str, ...] = ("NORMAL", "FULL")
SYNC_ROWS = 100_000
"""``kv`` rows in the sync suite (the issue's thread mix ran on 100k rows)."""
SYNC_THREADS: dict[str, int] = {"mixed": 8, "writes": 64, "transfers": 8}
"""The sync suite's workloads and the threads each runs on."""
TARGETS: dict[tuple[str, str], float] = {
    ("mixed", "NORMAL"): 1.0,
    ("mixed", "FULL"): 1.5,
    ("transfers", "NORMAL"): 1.0,
    ("transfers", "FULL"): 2.0,
    ("writes", "FULL"): 10.0,
}
"""litegate's ops/s over the case's baseline, by (workload, synchronous)."""


def _contenders(pool_size: int) -> list[Callable[[], Contender]]:
    return [
        PerThread,
        lambda: QueuePool(pool_size),
        Locked,
        BareGroupCommit,
        lambda: Litegate(4),
        lambda: Litegate("per-thread"),
    ]


def _ratios(case: CaseResult) -> list[Ratio]:
    """Against the best remedy (mix, transfers) or the lock (writes)."""
    if case.workload.name == "writes":
        return [Ratio("ratio", "vs lock", 15, Locked.name)]
    remedies = [c for c in case.contenders if c.kind == "remedy"]
    best = max(remedies, key=lambda c: c.ops_per_s)
    return [Ratio("ratio", "vs best remedy", 15, best.name)]


def _ceiling_note(result: BenchResult, case: CaseResult) -> str:
    """What the machine allows against the case's baseline: the bare group commit, the
    hand-off floor (writes) or the raw single-thread reference (transfers)."""
    base = case.get(case.baseline)
    if base is None or not base.ops_per_s:
        return ""
    parts = [
        f"ceiling {c.name.removeprefix('ceiling: ')} = {c.ratios['ratio']:.2f}x"
        for c in case.contenders
        if c.kind == "ceiling" and c.ratios.get("ratio") is not None
    ]
    floor = next((r for r in result.reference if r.name == HANDOFF_FLOOR), None)
    if case.workload.name == "writes" and floor is not None:
        parts.append(f"hand-off floor = {floor.ops_per_s / base.ops_per_s:.2f}x")
    ref = case.reference
    if case.workload.name == "transfers" and ref is not None:
        parts.append(f"raw one-thread = {ref.ops_per_s / base.ops_per_s:.2f}x")
    return ", ".join(parts)


def _targets(result: BenchResult) -> list[Target]:
    out: list[Target] = []
    for case in result.cases:
        threshold = TARGETS.get((case.workload.name, case.synchronous))
        if threshold is None:
            continue
        note = _ceiling_note(result, case)
        for c in case.contenders:
            if c.kind == "litegate":
                out.append(
                    Target(
                        f"{case.label} {case.synchronous}",
                        c.name,
                        c.ratios.get("ratio"),
                        threshold,
                        note,
                        versus=case.baseline,
                    )
                )
    return out


def _heading(result: BenchResult) -> list[str]:
    m = result.meta
    return [
        f"litegate {m['litegate']} vs folk remedies: Python {m['python']}, SQLite {m['sqlite']}, "
        f"{m['cpus']} CPUs, WAL, synchronous={'/'.join(m['synchronous'])}, "
        f"{m['seconds']:g}s per contender, kv rows {m['rows']:,}, each run in a fresh "
        f"{'process' if m['isolate'] else 'copy of the file'}",
    ]


def _ceilings(result: BenchResult) -> list[str]:
    """How far the targets are from what this machine allows at all: the ceiling contender's
    ratio per case, and the hand-off floor against the lock (writes)."""
    out: list[str] = []
    for case in result.cases:
        note = _ceiling_note(result, case)
        if note:
            out.append(f"  {case.label} {case.synchronous} (vs {case.baseline}): {note}")
    return out


_REFERENCE = "reference (one thread, no sharing)"
# noun, name and errors column widths, reference title, heading, JSON layout, ceilings
SYNC_LAYOUT = Layout("thread", 28, 7, _REFERENCE, _heading, json_by_case, _ceilings)


def sync_suite(params: dict[str, Any]) -> Suite[Contender]:
    """The sync suite as :func:`.session.run_suite` runs it (``params``: ``pool_size``)."""
    return Suite(
        "sync",
        THREADS,
        _contenders(int(params.get("pool_size", DEFAULT_POOL_SIZE))),
        SYNC_THREADS["writes"],  # the hand-off floor: as many threads as the writes workload
        _ratios,
        _targets,
        SYNC_LAYOUT,
        params,
    )


def run_benchmark(
    *,
    seconds: float = DEFAULT_SECONDS,
    workloads: Sequence[str] = tuple(SYNC_THREADS),
    directory: str | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    seed: int = 1,
    reference: bool = True,
    progress: Callable[[str], None] | None = None,
    synchronous: Sequence[str] = DEFAULT_SYNCHRONOUS,
    rows: int = SYNC_ROWS,
    isolate: bool = True,
) -> BenchResult:
    """The sync suite: every contender on every named workload at every ``synchronous``
    level; blocks for about ``len(synchronous) * len(workloads) * 7 * seconds`` plus setup.

    :param directory: where the database file goes (default: a new temporary directory, removed
        afterwards)
    :param isolate: run each contender (and reference) in a fresh process
    :raises KeyError: an unknown workload name
    """
    modes = [m.upper() for m in synchronous]
    cases = [
        Case(WORKLOADS[name], SYNC_THREADS[name], name, mode, rows)
        for mode in modes
        for name in workloads
    ]
    refs = [Case(c.workload, 1, reference_name(c.label), c.synchronous, rows) for c in cases]
    info = meta(
        seconds,
        directory,
        pool_size=pool_size,
        synchronous=modes,
        rows=rows,
        isolate=isolate,
    )
    suite = sync_suite({"pool_size": pool_size})
    return run_suite(
        suite,
        cases,
        refs if reference else [],
        info,
        [],
        seconds,
        directory,
        seed,
        progress,
        isolate=isolate,
    )
