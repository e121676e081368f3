"""A whole suite: the references, the hand-off floor and every contender on every case, each
run on a fresh copy of its seeded file and (by default) in a fresh process.

Within a case the contenders run one after another, so they share the machine's mood of that
moment (interleaved: each case rotates which contender goes first, so none is always the one
after the seeding or the one before a pause). The raw single-thread reference of a case runs in
the same rotation (measured once per suite, it read 103.5k and 62.9k point reads/s minutes
apart in one run, and every "vs raw" ratio swung with it). The references and the thread
hand-off floor relate the figures to what the machine allows at all.

Threads: :func:`run_suite` blocks the caller's thread (which must not be running an event
loop); ``progress`` is called from the caller's thread only (a child process writes its own
progress to the shared stderr).
"""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import tempfile
import threading
import time
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

import litegate

from .contenders import ALL_SHAPES, Raw
from .isolate import RunSpec, case_to_dict, run_in_child
from .report import BenchResult, CaseResult, ContenderResult, Layout, Ratio, Reference, Target
from .runner import GRACE, THREADS, C, Driver, ms, quiet, run_case
from .workloads import Case, reset, seed_template

__all__ = (
    "HANDOFF_FLOOR",
    "meta",
    "REFERENCE_NAMES",
    "Suite",
    "handoff_floor",
    "reference_name",
    "run_suite",
)

HANDOFF_FLOOR = "thread hand-off floor (64 threads, no SQL)"
REFERENCE_NAMES = {
    "reads": "raw sqlite3 point read",
    "writes": "raw sqlite3 single-row commit",
    "mixed": "raw sqlite3 90/10 mix",
    "scans": "raw sqlite3 100-row scan",
    "transfers": "raw sqlite3 transfer",
}
"""The raw single-thread reference of each workload that has one (``slow-tx`` has none)."""


def meta(seconds: float, directory: str | None, **params: Any) -> dict[str, Any]:
    """What a result records about the run and the machine."""
    return {
        "seconds": seconds,
        **params,
        "journal_mode": "WAL",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "litegate": litegate.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "directory": directory or tempfile.gettempdir(),
    }


def reference_name(workload: str) -> str:
    return REFERENCE_NAMES.get(workload, f"raw sqlite3 {workload}")


def handoff_floor(threads: int, seconds: float) -> tuple[int, float, list[float]]:
    """The floor for any write path that acknowledges each write to a blocked thread.

    ``threads`` threads each hand a no-op to one worker thread and block until it answers
    (the worker takes every waiting request per wake-up, like a group commit with free
    commits). No SQLite at all: what remains is CPython's cost of blocking and waking threads
    under the GIL. Blocks for about ``seconds``. Returns (hand-offs, elapsed, latencies).
    """
    queue_: deque[Any] = deque()
    cond = threading.Condition()
    start = time.perf_counter()
    stop = start + seconds
    counts = [0] * threads
    lats: list[list[float]] = [[] for _ in range(threads)]
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            with cond:
                while not queue_ and not done.is_set():
                    cond.wait(0.1)
                jobs = list(queue_)
                queue_.clear()
            for lock in jobs:
                lock.release()

    def caller(i: int) -> None:
        n = 0
        clock = time.perf_counter
        lat = lats[i]
        while (t0 := clock()) < stop:
            lock = allocate_lock()
            lock.acquire()
            with cond:
                queue_.append(lock)
                if len(queue_) == 1:
                    cond.notify()
            lock.acquire()
            lat.append(clock() - t0)
            n += 1
        counts[i] = n

    w = threading.Thread(target=worker, name="bench-handoff-worker", daemon=True)
    w.start()
    ts = [
        threading.Thread(target=caller, args=(i,), name=f"bench-handoff-{i}", daemon=True)
        for i in range(threads)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + GRACE)
    elapsed = time.perf_counter() - start
    done.set()
    w.join(1.0)
    return sum(counts), elapsed, [x for lat in lats for x in lat]


def _floor(threads: int, seconds: float) -> Reference:
    n, elapsed, lat = handoff_floor(threads, seconds)
    ops_per_s = round(n / elapsed, 1) if elapsed > 0 else 0.0
    return Reference("", HANDOFF_FLOOR, n, ops_per_s, ms(lat, 0.5), ms(lat, 0.99))


# ---- a suite ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Suite(Generic[C]):
    """What a suite compares and how: its name (``sync``/``async``, how a child process
    rebuilds it, with ``params``), its driver and contenders, the hand-off floor's thread
    count (``None``: no floor), the ratio columns of a case, its targets and its layout."""

    name: str
    driver: Driver[C]
    contenders: Sequence[Callable[[], C]]
    floor_threads: int | None
    ratios: Callable[[CaseResult], list[Ratio]]
    targets: Callable[[BenchResult], list[Target]]
    layout: Layout
    params: dict[str, Any] = field(default_factory=dict)


class _Files:
    """The seeded templates (one per ``kv`` row count, made on first use) and the run file,
    in one temporary directory."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.path = os.path.join(tmp, "bench.db")
        self._templates: dict[int, str] = {}

    def template(self, rows: int) -> str:
        if rows not in self._templates:
            template = os.path.join(self.tmp, f"template-{rows}.db")
            seed_template(template, rows)
            self._templates[rows] = template
        return self._templates[rows]

    def fresh(self, rows: int) -> str:
        reset(self.template(rows), self.path)
        return self.path


def _one(
    suite: Suite[C],
    index: int,
    case: Case,
    files: _Files,
    seconds: float,
    seed: int,
    isolate: bool,
    progress: Callable[[str], None],
) -> ContenderResult:
    """Contender ``index`` of ``suite`` (``-1``: the raw reference) on ``case``, on a fresh
    file, in a child process when ``isolate``."""
    path = files.fresh(case.rows)
    ref = reference_name(case.workload.name) if index < 0 else ""
    contender: Any = Raw(ref) if index < 0 else suite.contenders[index]()
    if isolate:  # the child builds its own; this one only names the result if the child dies
        spec = RunSpec(
            suite.name, index, case_to_dict(case), path, seconds, seed, suite.params, ref
        )
        return run_in_child(spec, contender.name, contender.kind)
    driver: Any = THREADS if index < 0 else suite.driver
    return run_case(contender, case, driver, path, seconds, seed, progress)


def _reference(
    ref_case: Case,
    case: Case,
    files: _Files,
    seconds: float,
    seed: int,
    isolate: bool,
    suite: Suite[Any],
) -> Reference:
    """Raw sqlite3 on one thread, the workload's operation mix at the case's ``synchronous``,
    run in ``case``'s rotation.

    :raises RuntimeError: an operation failed (nothing shares the file, so none should)
    """
    r = _one(suite, -1, ref_case, files, seconds, seed, isolate, quiet)
    if r.errors or not r.data.ok:
        raise RuntimeError(f"reference {r.name!r} failed: {r.error_samples}, data {r.data.text}")
    return Reference(
        ref_case.workload.name,
        r.name,
        r.ops,
        r.ops_per_s,
        r.p50_ms,
        r.p99_ms,
        ref_case.synchronous,
        case.label,
    )


def run_suite(
    suite: Suite[C],
    cases: Sequence[Case],
    references: Sequence[Case],
    meta: dict[str, Any],
    notes: list[str],
    seconds: float,
    directory: str | None,
    seed: int,
    progress: Callable[[str], None] | None,
    *,
    isolate: bool = True,
) -> BenchResult:
    """Run the suite's floor (when there are references), then every contender that can on
    every case, with the case's reference (raw sqlite3 on one thread: the case in
    ``references`` of the same workload and ``synchronous``) in the same rotation, each on a
    fresh copy of the seeded file in a new temporary directory under ``directory``
    (removed afterwards), each in a fresh process when ``isolate``. Blocks for about
    ``seconds`` per reference and per contender and case, plus setup.

    :raises RuntimeError: a reference run failed
    """
    progress = progress or quiet
    by_case = {(r.workload.name, r.synchronous): r for r in references}
    tmp = tempfile.mkdtemp(prefix="litegate-bench-", dir=directory)
    try:
        files = _Files(tmp)
        refs: list[Reference] = []
        floor: list[Reference] = []
        if references and suite.floor_threads:
            progress(f"reference: {HANDOFF_FLOOR}, {seconds:g}s")
            floor.append(_floor(suite.floor_threads, seconds))
        results: list[CaseResult] = []
        for n, case in enumerate(cases):
            ref_case = by_case.get((case.workload.name, case.synchronous))
            able = [
                i
                for i, make in enumerate(suite.contenders)
                if case.workload.shape in getattr(make(), "shapes", ALL_SHAPES)
            ] + ([-1] if ref_case is not None else [])
            order = able[n % len(able) :] + able[: n % len(able)] if able else []
            runs: dict[int, ContenderResult] = {}
            ref: Reference | None = None
            for i in order:
                if i >= 0:
                    runs[i] = _one(suite, i, case, files, seconds, seed, isolate, progress)
                    continue
                if ref_case is None:  # -1 is in the rotation only with a reference
                    continue
                progress(
                    f"reference {case.workload.name} {case.synchronous}: raw sqlite3 on one "
                    f"thread, {seconds:g}s"
                )
                ref = _reference(ref_case, case, files, seconds, seed, isolate, suite)
                refs.append(ref)
            result = CaseResult(
                case.workload,
                case.workers,
                case.label,
                [runs[i] for i in able if i >= 0],
                synchronous=case.synchronous,
                reference=ref,
            )
            result.set_ratios(suite.ratios(result), ([ref] if ref else []) + floor)
            results.append(result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    refs.extend(floor)
    out = BenchResult(suite.layout, meta, refs, results, [], notes)
    out.targets = suite.targets(out)
    return out
