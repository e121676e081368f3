"""The two suites: what each compares, against what, and the targets it reports.

* The **sync suite** (:func:`run_benchmark`): OS threads; litegate against the folk remedies
  for sharing sqlite3 between threads, plus a ceiling (bare group commit). Workloads ``mixed``
  on 8 threads and ``writes`` on 64; ratios against the best remedy (mixed) or the lock
  (writes); references: raw sqlite3 point reads and FULL commits, and the hand-off floor.
* The **async suite** (:func:`run_async_benchmark`): asyncio tasks; litegate's asyncio facade
  against aiosqlite (FULL and NORMAL; skipped, with a note, when not installed) and
  ``asyncio.to_thread`` over a locked connection. Workloads ``reads``, ``writes`` and
  ``mixed`` at every task count; ratios against raw sqlite3 on one thread running the same
  workload and against both aiosqlite contenders.

Both run through :func:`.runner.run_suite` and return a :class:`.report.BenchResult`.
Threads: both block the caller's thread for the whole run (which must not be running an
event loop); ``progress`` is called from the caller's thread only.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import litegate

from .contenders import (
    DEFAULT_POOL_SIZE,
    LITEGATE_READERS,
    Aiosqlite,
    AsyncContender,
    BareGroupCommit,
    Contender,
    Litegate,
    LitegateAsync,
    Locked,
    PerThread,
    QueuePool,
    ToThread,
    aiosqlite_version,
)
from .report import (
    BenchResult,
    CaseResult,
    Layout,
    Ratio,
    Target,
    json_by_case,
    json_by_workload,
    ratio,
)
from .runner import HANDOFF_FLOOR, REFERENCE_NAMES, TASKS, THREADS, Suite, run_suite
from .workloads import ROWS, WORKLOADS, Case

__all__ = (
    "AIOSQLITE_FULL",
    "AIOSQLITE_NORMAL",
    "ASYNC_LAYOUT",
    "ASYNC_WORKLOADS",
    "DEFAULT_ASYNC_SECONDS",
    "DEFAULT_SECONDS",
    "DEFAULT_TASKS",
    "LITEGATE",
    "SYNC_LAYOUT",
    "SYNC_THREADS",
    "TO_THREAD",
    "contender_names",
    "run_async_benchmark",
    "run_benchmark",
)

DEFAULT_SECONDS = 3.0
DEFAULT_ASYNC_SECONDS = 2.0
DEFAULT_TASKS: tuple[int, ...] = (1, 64)
SYNC_THREADS: dict[str, int] = {"mixed": 8, "writes": 64}
"""The sync suite's workloads and the threads each runs on."""
ASYNC_WORKLOADS: tuple[str, ...] = ("reads", "writes", "mixed")
"""The async suite's workloads; each runs at every task count."""

MIXED_TARGET = 1.5
WRITES_TARGET = 10.0
READS_VS_RAW_TARGET = 0.5
WRITES_VS_AIOSQLITE_FULL_TARGET = 10.0
WRITES_VS_AIOSQLITE_NORMAL_TARGET = 2.0
LATENCY_TARGET = 1.0

LITEGATE = LitegateAsync.name
AIOSQLITE_FULL = "aiosqlite FULL"
AIOSQLITE_NORMAL = "aiosqlite NORMAL"
TO_THREAD = "to_thread + Lock"


def _meta(seconds: float, directory: str | None, **params: Any) -> dict[str, Any]:
    return {
        "seconds": seconds,
        **params,
        "rows": ROWS,
        "journal_mode": "WAL",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "litegate": litegate.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "directory": directory or tempfile.gettempdir(),
    }


# ---- sync: threads against the folk remedies ------------------------------------------------
def _sync_contenders(pool_size: int) -> list[Callable[[], Contender]]:
    return [
        PerThread,
        lambda: QueuePool(pool_size),
        Locked,
        BareGroupCommit,
        lambda: Litegate(4),
        lambda: Litegate("per-thread"),
    ]


def _sync_ratios(case: CaseResult) -> list[Ratio]:
    """Against the best remedy (mixed) or the lock (writes)."""
    remedies = [c for c in case.contenders if c.kind == "remedy"]
    if case.workload.name == "mixed":
        best = max(remedies, key=lambda c: c.ops_per_s)
        return [Ratio("ratio", "vs best remedy", 15, best.name)]
    return [Ratio("ratio", "vs lock", 15, Locked.name)]


def _sync_targets(result: BenchResult) -> list[Target]:
    return [
        Target(
            case.label,
            c.name,
            c.ratios.get("ratio") or 0.0,
            MIXED_TARGET if case.workload.name == "mixed" else WRITES_TARGET,
            versus=case.baseline,
        )
        for case in result.cases
        for c in case.contenders
        if c.kind == "litegate"
    ]


def _sync_heading(result: BenchResult) -> list[str]:
    m = result.meta
    return [
        f"litegate {m['litegate']} vs folk remedies: Python {m['python']}, SQLite {m['sqlite']}, "
        f"{m['cpus']} CPUs, WAL + synchronous=FULL, {m['seconds']:g}s per contender",
    ]


def _sync_ceilings(result: BenchResult) -> list[str]:
    """How far the targets are from what this machine allows at all: the ceiling contender's
    ratio per workload, and the hand-off floor against the lock (writes)."""
    out: list[str] = []
    floor = next((r for r in result.reference if r.name == HANDOFF_FLOOR), None)
    for case in result.cases:
        base = case.get(case.baseline)
        for c in case.contenders:
            if c.kind == "ceiling" and c.ratios.get("ratio") is not None:
                out.append(
                    f"  {case.label}: {c.name} = {c.ratios['ratio']:.2f}x {case.baseline} "
                    "(the leanest threaded group commit, none of litegate's guarantees)"
                )
        if case.workload.name == "writes" and floor is not None and base and base.ops_per_s:
            out.append(
                f"  writes: {HANDOFF_FLOOR} = {floor.ops_per_s / base.ops_per_s:.2f}x "
                f"{case.baseline} (blocking and waking threads alone, before any SQL)"
            )
    return out


_SYNC_REFERENCE = "reference (one thread, no sharing)"
# noun, name and errors column widths, reference title, heading, JSON layout, ceilings
SYNC_LAYOUT = Layout(
    "thread", 28, 7, _SYNC_REFERENCE, _sync_heading, json_by_workload, _sync_ceilings
)


def run_benchmark(
    *,
    seconds: float = DEFAULT_SECONDS,
    workloads: Sequence[str] = ("mixed", "writes"),
    directory: str | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    seed: int = 1,
    reference: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """The sync suite: every contender on every named workload; blocks for about
    ``(len(workloads) * 6 + 3) * seconds`` plus setup.

    :param directory: where the database file goes (default: a new temporary directory, removed
        afterwards)
    :raises KeyError: an unknown workload name
    """
    cases = [Case(WORKLOADS[name], SYNC_THREADS[name], name) for name in workloads]
    suite = Suite(
        THREADS,
        _sync_contenders(pool_size),
        SYNC_THREADS["writes"],  # the hand-off floor: as many threads as the writes workload
        _sync_ratios,
        _sync_targets,
        SYNC_LAYOUT,
    )
    meta = _meta(seconds, directory, pool_size=pool_size, synchronous="FULL")
    references = ("reads", "writes") if reference else ()
    notes: list[str] = []
    return run_suite(suite, cases, references, meta, notes, seconds, directory, seed, progress)


# ---- async: tasks against aiosqlite and to_thread -------------------------------------------
def _async_contenders(with_aiosqlite: bool) -> list[Callable[[], AsyncContender]]:
    makers: list[Callable[[], AsyncContender]] = [LitegateAsync]
    if with_aiosqlite:
        makers += [lambda: Aiosqlite("FULL"), lambda: Aiosqlite("NORMAL")]
    makers.append(lambda: ToThread(Locked(), TO_THREAD))
    return makers


def contender_names(suite: str, *, with_aiosqlite: bool = True) -> list[str]:
    """The contenders' names of the ``"sync"`` or ``"async"`` suite, in the order they run
    (the sync suite's queue pool at its default size)."""
    makers: Sequence[Callable[[], Contender | AsyncContender]] = (
        _sync_contenders(DEFAULT_POOL_SIZE)
        if suite == "sync"
        else _async_contenders(with_aiosqlite)
    )
    return [make().name for make in makers]


def _async_ratios(case: CaseResult) -> list[Ratio]:
    raw = REFERENCE_NAMES.get(case.workload.name, "")
    return [
        Ratio("vs_raw", "vs raw", 7, raw),
        Ratio("vs_aiosqlite_full", "vs aio FULL", 11, AIOSQLITE_FULL),
        Ratio("vs_aiosqlite_normal", "vs aio NORMAL", 13, AIOSQLITE_NORMAL),
    ]


def _async_targets(result: BenchResult) -> list[Target]:
    out: list[Target] = []
    many = max(result.meta["tasks"])
    with_aio = result.meta["aiosqlite"] is not None
    no_aio = "aiosqlite not installed"
    names = {case.workload.name for case in result.cases}
    if "reads" in names:
        lg = result.find("reads", many, LITEGATE)
        ref = next((r for r in result.reference if r.workload == "reads"), None)
        out.append(
            Target(
                f"reads x{many}",
                f"{LITEGATE} ops/s vs {REFERENCE_NAMES['reads']} (one thread)",
                None if lg is None or ref is None else ratio(lg.ops_per_s, ref.ops_per_s),
                READS_VS_RAW_TARGET,
                "" if ref is not None else "no reference run",
            )
        )
    if "writes" in names:
        lg = result.find("writes", many, LITEGATE)
        for peer, threshold in (
            (AIOSQLITE_FULL, WRITES_VS_AIOSQLITE_FULL_TARGET),
            (AIOSQLITE_NORMAL, WRITES_VS_AIOSQLITE_NORMAL_TARGET),
        ):
            other = result.find("writes", many, peer)
            out.append(
                Target(
                    f"writes x{many}",
                    f"{LITEGATE} (FULL) ops/s vs {peer}",
                    None if lg is None or other is None else ratio(lg.ops_per_s, other.ops_per_s),
                    threshold,
                    "" if with_aio else no_aio,
                )
            )
    for case in result.cases:
        if case.workers == 1:
            out.append(_latency_target(case, no_aio if not with_aio else ""))
    return out


def _latency_target(case: CaseResult, skip_note: str) -> Target:
    """aiosqlite FULL's p50 over litegate's, one task (the p99 ratio goes into the note)."""
    lg, other = case.get(LITEGATE), case.get(AIOSQLITE_FULL)
    value = p99 = None
    if lg is not None and other is not None and lg.p50_ms > 0:
        value = round(other.p50_ms / lg.p50_ms, 2)
        p99 = round(other.p99_ms / lg.p99_ms, 2) if lg.p99_ms > 0 else None
    note = skip_note or (
        f"p50 {lg.p50_ms if lg else 0:.3f} vs {other.p50_ms if other else 0:.3f} "
        f"ms; p99 ratio {p99 if p99 is not None else '-'}x"
    )
    return Target(
        f"{case.workload.name} x1 latency",
        f"{AIOSQLITE_FULL} p50 / {LITEGATE} p50",
        value,
        LATENCY_TARGET,
        note,
    )


def _async_heading(result: BenchResult) -> list[str]:
    m = result.meta
    aio = f"aiosqlite {m['aiosqlite']}" if m["aiosqlite"] else "aiosqlite (not installed)"
    return [
        f"litegate {m['litegate']} async vs {aio} vs asyncio.to_thread: Python {m['python']}, "
        f"SQLite {m['sqlite']}, {m['cpus']} CPUs, WAL, {m['seconds']:g}s per contender",
        f"  {LITEGATE}: connect_async(readers={m['litegate_readers']}, synchronous=FULL); "
        f"aiosqlite: one connection, each write execute+commit under an asyncio.Lock; "
        f"{TO_THREAD}: one sqlite3 connection, synchronous=FULL",
    ]


_ASYNC_REFERENCE = "reference: raw synchronous sqlite3, one thread, no sharing (call-cost floor)"
# noun, name and errors column widths, reference title, heading, JSON layout (no ceilings)
ASYNC_LAYOUT = Layout("task", 18, 6, _ASYNC_REFERENCE, _async_heading, json_by_case)


def _parse_tasks(tasks: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(dict.fromkeys(int(n) for n in tasks))
    if not chosen or any(n < 1 for n in chosen):
        raise ValueError(f"tasks must be positive integers, got {list(tasks)}")
    return chosen


def run_async_benchmark(
    *,
    seconds: float = DEFAULT_ASYNC_SECONDS,
    tasks: Sequence[int] = DEFAULT_TASKS,
    workloads: Sequence[str] = ASYNC_WORKLOADS,
    directory: str | None = None,
    seed: int = 1,
    reference: bool = True,
    with_aiosqlite: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """The async suite: every contender on every named workload at every task count; blocks
    for about ``len(workloads) * (len(tasks) * 4 + 1) * seconds`` plus setup.

    :param directory: where the database file goes (default: a new temporary directory, removed
        afterwards)
    :param with_aiosqlite: include the aiosqlite contenders (skipped anyway when it is missing)
    :raises KeyError: an unknown workload name
    :raises ValueError: a task count < 1
    """
    counts = _parse_tasks(tasks)
    cases = [Case(WORKLOADS[name], n, f"{name} x{n}") for name in workloads for n in counts]
    aio_version = aiosqlite_version()
    notes: list[str] = []
    with_aio = with_aiosqlite and aio_version is not None
    if with_aiosqlite and aio_version is None:
        notes.append("aiosqlite is not installed: its contenders were skipped")
        if progress is not None:
            progress(notes[-1])
    # no hand-off floor: tasks wait on the loop, not by blocking threads
    suite = Suite(
        TASKS, _async_contenders(with_aio), None, _async_ratios, _async_targets, ASYNC_LAYOUT
    )
    meta = _meta(
        seconds,
        directory,
        tasks=list(counts),
        litegate_readers=LITEGATE_READERS,
        aiosqlite=aio_version if with_aio else None,
    )
    references = list(dict.fromkeys(workloads)) if reference else []
    return run_suite(suite, cases, references, meta, notes, seconds, directory, seed, progress)
