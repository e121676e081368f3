"""The async suite: asyncio tasks; litegate's asyncio facade and its sync ``Database`` behind
``asyncio.to_thread`` against aiosqlite (skipped, with a note, when not installed), a locked
connection behind ``to_thread`` and a connection per executor thread behind ``to_thread``.

Workloads: point reads, one-row writes, a 90/10 mix, 100-row range scans and interactive
transfers at every task count, and ``slow-tx`` (one task runs a slow write statement back to
back while the others transfer) at every task count above one; each at every chosen
``synchronous`` level. Every row reports the event loop's lag (a 1 ms ticker's lateness).
Ratios: against raw sqlite3 on one thread running the same workload, aiosqlite, and the best
peer.

Threads: :func:`run_async_benchmark` blocks the caller's thread for the whole run (which must
not be running an event loop); ``progress`` is called from the caller's thread only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from .acontenders import (
    LITEGATE_READERS,
    Aiosqlite,
    AsyncContender,
    BareAsyncGroupCommit,
    LitegateAsync,
    ToThread,
    aiosqlite_version,
)
from .async_targets import (
    AIOSQLITE,
    BARE_TO_THREAD,
    LITEGATE,
    LITEGATE_TO_THREAD,
    TO_THREAD,
    TO_THREAD_PER_THREAD,
    async_targets,
)
from .contenders import BareGroupCommit, Litegate, Locked, PerThread
from .report import BenchResult, CaseResult, Layout, Ratio, json_by_case
from .runner import TASKS
from .session import Suite, meta, reference_name, run_suite
from .sync_suite import DEFAULT_SYNCHRONOUS, sync_suite
from .workloads import ROWS, WORKLOADS, Case, calibrate_slow, seed_template

__all__ = (
    "ASYNC_LAYOUT",
    "ASYNC_WORKLOADS",
    "DEFAULT_ASYNC_SECONDS",
    "DEFAULT_TASKS",
    "SLOW_AT_LEAST",
    "async_suite",
    "contender_names",
    "run_async_benchmark",
)

DEFAULT_ASYNC_SECONDS = 2.0
DEFAULT_TASKS: tuple[int, ...] = (1, 64)
ASYNC_WORKLOADS: tuple[str, ...] = ("reads", "writes", "mixed", "scans", "transfers", "slow-tx")
"""The async suite's workloads; each runs at every task count (``slow-tx`` above one)."""
SLOW_AT_LEAST = 0.05
"""The slow statement of ``slow-tx`` is sized to take at least this long (seconds)."""


def _contenders(with_aiosqlite: bool) -> list[Callable[[], AsyncContender]]:
    makers: list[Callable[[], AsyncContender]] = [
        LitegateAsync,
        lambda: ToThread(Litegate(LITEGATE_READERS), LITEGATE_TO_THREAD, "litegate"),
    ]
    if with_aiosqlite:
        makers.append(Aiosqlite)
    makers += [
        lambda: ToThread(Locked(), TO_THREAD),
        lambda: ToThread(PerThread(), TO_THREAD_PER_THREAD),
        BareAsyncGroupCommit,
        # the seed's pattern's own ceiling: the leanest thread-side group commit of
        # transactions, behind to_thread like litegate's Database
        lambda: ToThread(BareGroupCommit(), BARE_TO_THREAD, "ceiling", frozenset({"transfer"})),
    ]
    return makers


def _ratios(case: CaseResult) -> list[Ratio]:
    peers = [c for c in case.contenders if c.kind == "peer"]
    best = max(peers, key=lambda c: c.ops_per_s).name if peers else ""
    return [
        Ratio("vs_raw", "vs raw", 7, reference_name(case.workload.name)),
        Ratio("vs_aiosqlite", "vs aio", 7, AIOSQLITE),
        Ratio("vs_best_peer", "vs best peer", 12, best),
    ]


def _heading(result: BenchResult) -> list[str]:
    m = result.meta
    aio = f"aiosqlite {m['aiosqlite']}" if m["aiosqlite"] else "aiosqlite (not installed)"
    lines = [
        f"litegate {m['litegate']} async vs {aio} vs asyncio.to_thread: Python {m['python']}, "
        f"SQLite {m['sqlite']}, {m['cpus']} CPUs, WAL, "
        f"synchronous={'/'.join(m['synchronous'])}, {m['seconds']:g}s per contender, "
        f"kv rows {m['rows']:,}, each run in a fresh "
        f"{'process' if m['isolate'] else 'copy of the file'}",
        f"  {LITEGATE}: connect_async(readers={m['litegate_readers']}); {LITEGATE_TO_THREAD}: "
        f"a Database built at startup, every call via asyncio.to_thread; {AIOSQLITE}: one "
        "connection, isolation_level=None, writes and transfers under an asyncio.Lock; "
        f"{TO_THREAD}: one sqlite3 connection + threading.Lock; {TO_THREAD_PER_THREAD}: "
        "a threading.local connection per executor thread; ceiling: bare group commit: "
        "statements on the loop, a shared COMMIT on one thread, no guarantees (not a peer); "
        f"{BARE_TO_THREAD} (transfers): transactions taking turns on one connection through a "
        "threading.Lock, the last of a group running its COMMIT, no guarantees (not a peer)",
        "  lag: how late a 1 ms asyncio.sleep ticker woke (p99, max; ms) while the row ran",
    ]
    if m.get("slow_rows"):
        lines.append(
            f"  slow-tx: the slow statement counts {m['slow_rows']:,} CTE rows "
            f"({m['slow_ms']:.0f} ms alone when calibrated)"
        )
    return lines


_REFERENCE = "reference: raw synchronous sqlite3, one thread, no sharing (call-cost floor)"
# noun, name and errors column widths, reference title, heading, JSON layout, no ceilings, lag
ASYNC_LAYOUT = Layout("task", 28, 6, _REFERENCE, _heading, json_by_case, lag=True)


def async_suite(params: dict[str, Any]) -> Suite[AsyncContender]:
    """The async suite as :func:`.session.run_suite` runs it (``params``: ``aiosqlite``)."""
    # no hand-off floor: tasks wait on the loop, not by blocking threads
    return Suite(
        "async",
        TASKS,
        _contenders(bool(params.get("aiosqlite", True))),
        None,
        _ratios,
        async_targets,
        ASYNC_LAYOUT,
        params,
    )


def contender_names(suite: str, *, with_aiosqlite: bool = True) -> list[str]:
    """The contenders' names of the ``"sync"`` or ``"async"`` suite, in report order (the
    sync suite's queue pool at its default size)."""
    if suite == "sync":
        return [make().name for make in sync_suite({}).contenders]
    return [make().name for make in _contenders(with_aiosqlite)]


def _parse_tasks(tasks: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(dict.fromkeys(int(n) for n in tasks))
    if not chosen or any(n < 1 for n in chosen):
        raise ValueError(f"tasks must be positive integers, got {list(tasks)}")
    return chosen


def _calibrate(directory: str | None) -> tuple[int, float]:
    tmp = tempfile.mkdtemp(prefix="litegate-bench-calibrate-", dir=directory)
    try:
        path = os.path.join(tmp, "calibrate.db")
        seed_template(path, 10)
        return calibrate_slow(path, SLOW_AT_LEAST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    synchronous: Sequence[str] = DEFAULT_SYNCHRONOUS,
    isolate: bool = True,
) -> BenchResult:
    """The async suite: every contender on every named workload at every task count and
    ``synchronous`` level; blocks for about ``len(synchronous) * len(workloads) *
    (len(tasks) * 6 + 1) * seconds`` plus setup.

    :param directory: where the database file goes (default: a new temporary directory, removed
        afterwards)
    :param with_aiosqlite: include the aiosqlite contender (skipped anyway when it is missing)
    :param isolate: run each contender (and reference) in a fresh process
    :raises KeyError: an unknown workload name
    :raises ValueError: a task count < 1
    """
    counts = _parse_tasks(tasks)
    modes = [m.upper() for m in synchronous]
    unknown = [name for name in workloads if name not in WORKLOADS]
    if unknown:  # before anything runs
        raise KeyError(f"unknown workload(s): {', '.join(unknown)}")
    slow_rows, slow_s = _calibrate(directory) if "slow-tx" in workloads else (0, 0.0)
    cases = [
        Case(WORKLOADS[name], n, f"{name} x{n}", mode, ROWS, slow_rows)
        for mode in modes
        for name in workloads
        for n in counts
        if name != "slow-tx" or n > 1
    ]
    aio_version = aiosqlite_version()
    notes: list[str] = []
    with_aio = with_aiosqlite and aio_version is not None
    if with_aiosqlite and aio_version is None:
        notes.append("aiosqlite is not installed: its contender was skipped")
        if progress is not None:
            progress(notes[-1])
    if "slow-tx" in workloads and max(counts) < 2:
        notes.append("slow-tx needs 2 tasks or more: skipped")
    refs = [
        Case(WORKLOADS[name], 1, reference_name(name), mode, ROWS)
        for mode in modes
        for name in dict.fromkeys(workloads)
        if name != "slow-tx"
    ]
    info = meta(
        seconds,
        directory,
        tasks=list(counts),
        synchronous=modes,
        rows=ROWS,
        isolate=isolate,
        litegate_readers=LITEGATE_READERS,
        aiosqlite=aio_version if with_aio else None,
        slow_rows=slow_rows,
        slow_ms=round(slow_s * 1000.0, 1),
    )
    suite = async_suite({"aiosqlite": with_aio})
    return run_suite(
        suite,
        cases,
        refs if reference else [],
        info,
        notes,
        seconds,
        directory,
        seed,
        progress,
        isolate=isolate,
    )
