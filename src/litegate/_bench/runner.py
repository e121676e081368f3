"""The runner: drives contenders through cases on OS threads or asyncio tasks, one design.

A suite is a list of cases, a list of contenders and a :class:`Driver`. For every case, every
contender runs on a fresh copy of the seeded file: the driver opens it, starts
``case.workers`` workers (:class:`Threads`: OS threads released together by a barrier;
:class:`Tasks`: tasks on a fresh event loop per run, via :func:`asyncio.run`), each running
its own seeded stream of operations until the deadline, and closes it. Each worker keeps a
:class:`Tally`; the summary, the data check and the result are the same for both drivers.
References (raw sqlite3 on one thread) run through the same path with the :class:`Raw`
contender; the thread hand-off floor runs no SQL at all.

Threads: :func:`run_suite` runs on the caller's thread (which must not be running an event
loop) and starts the workers; ``progress`` is called from the caller's thread only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from _thread import allocate_lock
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .._stats import percentile
from .contenders import AsyncContender, Contender, Raw
from .report import BenchResult, CaseResult, ContenderResult, Layout, Ratio, Reference, Target
from .workloads import (
    INSERT,
    READ,
    UPDATE,
    WORKLOADS,
    Case,
    Op,
    Workload,
    check_data,
    operations,
    reset,
    seed_template,
)

__all__ = (
    "Driver",
    "HANDOFF_FLOOR",
    "REFERENCE_NAMES",
    "Suite",
    "TASKS",
    "THREADS",
    "Tally",
    "Tasks",
    "Threads",
    "handoff_floor",
    "run_case",
    "run_suite",
)

_GRACE = 60.0  # seconds past the run's end before a worker counts as hung
HANDOFF_FLOOR = "thread hand-off floor (64 threads, no SQL)"

C = TypeVar("C", Contender, AsyncContender)


def _ms(samples: list[float], q: float) -> float:
    return round(percentile(samples, q) * 1000.0, 3)


def _error_key(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:80]}"


def _quiet(message: str) -> None:
    pass


class Tally:
    """One worker's counts: a latency list per operation kind (its length is the count of
    that kind done), errors and error samples. Written only by its worker; the main thread
    reads it for progress and after the run."""

    __slots__ = ("errors", "lat", "samples")

    def __init__(self) -> None:
        self.lat: tuple[list[float], ...] = ([], [], [])  # by kind: READ, UPDATE, INSERT
        self.errors = 0
        self.samples: Counter[str] = Counter()

    @property
    def ops(self) -> int:
        return sum(len(lat) for lat in self.lat)

    def fail(self, exc: BaseException, where: str = "") -> None:
        self.errors += 1
        self.samples[where + _error_key(exc)] += 1


# ---- the worker loop, in its two flavours ---------------------------------------------------
def _loop_state(contender: Contender | AsyncContender, tally: Tally) -> tuple[Any, Any, Any]:
    """The call per operation kind, the latency lists and the clock: what a worker loop binds
    to locals before it starts."""
    return (contender.read, contender.write, contender.write), tally.lat, time.perf_counter


def _work(contender: Contender, ops: Iterator[Op], tally: Tally, end: float) -> None:
    """Run ``ops`` on ``contender`` until ``end`` (the thread flavour)."""
    calls, lat, clock = _loop_state(contender, tally)
    while clock() < end:
        kind, args = next(ops)
        t0 = clock()
        try:
            calls[kind](*args)
        except Exception as exc:
            tally.fail(exc)
        else:
            lat[kind].append(clock() - t0)


async def _awork(contender: AsyncContender, ops: Iterator[Op], tally: Tally, end: float) -> None:
    """Run ``ops`` on ``contender`` until ``end`` (the task flavour), then ``worker_exit``."""
    calls, lat, clock = _loop_state(contender, tally)
    try:
        while clock() < end:
            kind, args = next(ops)
            t0 = clock()
            try:
                await calls[kind](*args)
            except Exception as exc:
                tally.fail(exc)
            else:
                lat[kind].append(clock() - t0)
    finally:
        await contender.worker_exit()


def _thread_main(
    contender: Contender, ops: Iterator[Op], tally: Tally, go: threading.Barrier, clock: list[float]
) -> None:
    try:
        go.wait()
        _work(contender, ops, tally, clock[1])
    except BaseException as exc:  # never lose a worker's failure (pytest turns it into errors)
        tally.fail(exc, "worker crashed: ")
    finally:
        try:
            contender.worker_exit()
        except Exception as exc:
            tally.fail(exc, "worker_exit: ")


# ---- drivers ----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Run:
    elapsed: float
    hung: int  # workers still running ``_GRACE`` seconds after the end
    extra: dict[str, Any]


class _Crew:
    """The workers of one run: each one's operation stream and tally; it reports progress
    about once a second while the run lasts (called from the driving thread)."""

    def __init__(
        self, case: Case, seconds: float, seed: int, label: str, progress: Callable[[str], None]
    ) -> None:
        self.ops = [operations(case.workload, seed, i) for i in range(case.workers)]
        self.tallies = [Tally() for _ in range(case.workers)]
        self.seconds, self.label, self.progress = seconds, label, progress
        self.start = self.next = self.end = 0.0

    def begin(self, start: float) -> None:
        self.start, self.next, self.end = start, start + 1.0, start + self.seconds

    def tick(self, now: float) -> None:
        if self.next <= now < self.end:
            self.next += 1.0
            done = sum(t.ops for t in self.tallies)
            self.progress(f"{self.label}: {now - self.start:.0f}/{self.seconds:g}s, {done} ops")


class Driver(Generic[C]):
    """Runs one contender on one case: opens it on ``path``, runs the crew's workers for
    ``crew.seconds``, closes it. ``noun`` names a worker in the report."""

    noun = "worker"

    def run(self, contender: C, case: Case, path: str, crew: _Crew) -> _Run:
        raise NotImplementedError


class Threads(Driver[Contender]):
    """OS threads, started together by a barrier; blocks until they end (or ``_GRACE``
    seconds past the end, after which the stragglers count as hung errors and the contender
    is left open, since they may still be using it)."""

    noun = "thread"

    def run(self, contender: Contender, case: Case, path: str, crew: _Crew) -> _Run:
        clock = [0.0, 0.0]

        def start() -> None:  # runs in one thread when every worker is ready
            clock[0] = time.perf_counter()
            clock[1] = clock[0] + crew.seconds

        contender.open(path, case)
        barrier = threading.Barrier(case.workers + 1, action=start)
        threads = [
            threading.Thread(
                target=_thread_main,
                args=(contender, ops, tally, barrier, clock),
                name=f"bench-{case.workload.name}-{i}",
                daemon=True,
            )
            for i, (ops, tally) in enumerate(zip(crew.ops, crew.tallies, strict=True))
        ]
        hung = 0
        try:
            for t in threads:
                t.start()
            barrier.wait(timeout=30.0)
            crew.begin(clock[0])
            give_up = clock[1] + _GRACE
            for t in threads:
                while t.is_alive() and time.perf_counter() < give_up:
                    t.join(0.1)
                    crew.tick(time.perf_counter())
            hung = sum(t.is_alive() for t in threads)
            elapsed = time.perf_counter() - clock[0]
        finally:
            extra = contender.close() if not hung else {"hung_threads": hung}
        return _Run(elapsed, hung, extra)


class Tasks(Driver[AsyncContender]):
    """Tasks on a fresh event loop (:func:`asyncio.run`); blocks until they end. Tasks still
    running ``_GRACE`` seconds past the end are cancelled and count as hung errors."""

    noun = "task"

    def run(self, contender: AsyncContender, case: Case, path: str, crew: _Crew) -> _Run:
        return asyncio.run(self._run(contender, path, crew, case))

    async def _run(self, contender: AsyncContender, path: str, crew: _Crew, case: Case) -> _Run:
        await contender.open(path, case)
        hung = 0
        try:
            start = time.perf_counter()
            crew.begin(start)
            end = start + crew.seconds
            running = [
                asyncio.create_task(_awork(contender, ops, tally, end))
                for ops, tally in zip(crew.ops, crew.tallies, strict=True)
            ]
            pending: set[asyncio.Task[None]] = set(running)
            give_up = end + _GRACE
            while pending and (now := time.perf_counter()) < give_up:
                _, pending = await asyncio.wait(pending, timeout=min(1.0, give_up - now))
                crew.tick(time.perf_counter())
            elapsed = time.perf_counter() - start
            hung = len(pending)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            for task, tally in zip(running, crew.tallies, strict=True):
                if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                    tally.fail(exc, "task crashed: ")
        finally:
            extra = await contender.close()
        return _Run(elapsed, hung, extra)


THREADS = Threads()
TASKS = Tasks()


# ---- one run, its summary, the references -----------------------------------------------------
def _workers(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _result(
    contender: Contender | AsyncContender, case: Case, crew: _Crew, run: _Run, path: str, noun: str
) -> ContenderResult:
    """Totals, latency percentiles, error samples and the data check of one run."""
    tallies = crew.tallies
    reads, updates, inserts = (
        [x for t in tallies for x in t.lat[k]] for k in (READ, UPDATE, INSERT)
    )
    write_lat = updates + inserts
    all_lat = reads + write_lat
    samples: Counter[str] = Counter()
    for t in tallies:
        samples.update(t.samples)
    if run.hung:
        samples[f"{run.hung} {noun}(s) still running {_GRACE:g}s after the end"] += run.hung
    elapsed = run.elapsed
    return ContenderResult(
        name=contender.name,
        kind=contender.kind,
        workload=case.workload.name,
        workers=case.workers,
        elapsed_s=round(elapsed, 3),
        ops=len(all_lat),
        reads=len(reads),
        writes=len(write_lat),
        errors=sum(t.errors for t in tallies) + run.hung,
        ops_per_s=round(len(all_lat) / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=_ms(all_lat, 0.5),
        p99_ms=_ms(all_lat, 0.99),
        read_p50_ms=_ms(reads, 0.5),
        read_p99_ms=_ms(reads, 0.99),
        write_p50_ms=_ms(write_lat, 0.5),
        write_p99_ms=_ms(write_lat, 0.99),
        error_samples=dict(samples.most_common(5)),
        data=check_data(path, len(inserts), len(updates)),
        extra=run.extra,
    )


def run_case(
    contender: C,
    case: Case,
    driver: Driver[C],
    path: str,
    seconds: float,
    seed: int,
    progress: Callable[[str], None],
) -> ContenderResult:
    """Run ``contender`` on ``case`` for ``seconds`` (the file at ``path`` must be fresh);
    blocks for about ``seconds`` plus open, close and the data check."""
    label = f"{case.label}: {contender.name}"
    progress(f"{label}: running {_workers(case.workers, driver.noun)} for {seconds:g}s")
    crew = _Crew(case, seconds, seed, label, progress)
    run = driver.run(contender, case, path, crew)
    result = _result(contender, case, crew, run, path, driver.noun)
    progress(
        f"{label}: {result.ops_per_s:,.0f} ops/s, p50 {result.p50_ms:.3f} ms, "
        f"p99 {result.p99_ms:.3f} ms, {result.errors} errors, data {result.data.text}"
    )
    return result


REFERENCE_NAMES = {
    "reads": "raw sqlite3 point read",
    "writes": "raw sqlite3 FULL single-row commit",
    "mixed": "raw sqlite3 90/10 mix (FULL)",
}


def _reference(workload: Workload, path: str, seconds: float, seed: int) -> Reference:
    """Raw sqlite3 on one thread (WAL, FULL), the workload's operation mix.

    :raises RuntimeError: an operation failed (nothing shares the file, so none should)
    """
    name = REFERENCE_NAMES.get(workload.name, f"raw sqlite3 {workload.name}")
    case = Case(workload, 1, workload.name)
    r = run_case(Raw(name), case, THREADS, path, seconds, seed, _quiet)
    if r.errors or not r.data.ok:
        raise RuntimeError(f"reference {name!r} failed: {r.error_samples}, data {r.data.text}")
    return Reference(workload.name, name, r.ops, r.ops_per_s, r.p50_ms, r.p99_ms)


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
        t.join(seconds + _GRACE)
    elapsed = time.perf_counter() - start
    done.set()
    w.join(1.0)
    return sum(counts), elapsed, [x for lat in lats for x in lat]


def _floor(threads: int, seconds: float) -> Reference:
    n, elapsed, lat = handoff_floor(threads, seconds)
    ops_per_s = round(n / elapsed, 1) if elapsed > 0 else 0.0
    return Reference("", HANDOFF_FLOOR, n, ops_per_s, _ms(lat, 0.5), _ms(lat, 0.99))


# ---- a suite ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Suite(Generic[C]):
    """What a suite compares and how: its driver and contenders, the hand-off floor's thread
    count (``None``: no floor), the ratio columns of a case, its targets and its layout."""

    driver: Driver[C]
    contenders: Sequence[Callable[[], C]]
    floor_threads: int | None
    ratios: Callable[[CaseResult], list[Ratio]]
    targets: Callable[[BenchResult], list[Target]]
    layout: Layout


def run_suite(
    suite: Suite[C],
    cases: Sequence[Case],
    references: Sequence[str],
    meta: dict[str, Any],
    notes: list[str],
    seconds: float,
    directory: str | None,
    seed: int,
    progress: Callable[[str], None] | None,
) -> BenchResult:
    """Run the references (raw sqlite3 on each named workload, then the suite's floor; none
    when ``references`` is empty), then every contender on every case, each on a fresh copy
    of the seeded file in a new temporary directory under ``directory`` (removed afterwards).
    Blocks for about ``seconds`` per reference and per contender and case, plus setup.

    :raises RuntimeError: a reference run failed
    """
    progress = progress or _quiet
    tmp = tempfile.mkdtemp(prefix="litegate-bench-", dir=directory)
    try:
        template = os.path.join(tmp, "template.db")
        path = os.path.join(tmp, "bench.db")
        seed_template(template)
        refs: list[Reference] = []
        for name in references:
            progress(f"reference {name}: raw sqlite3 on one thread, {seconds:g}s")
            reset(template, path)
            refs.append(_reference(WORKLOADS[name], path, seconds, seed))
        if references and suite.floor_threads:
            progress(f"reference: {HANDOFF_FLOOR}, {seconds:g}s")
            refs.append(_floor(suite.floor_threads, seconds))
        results: list[CaseResult] = []
        for case in cases:
            runs: list[ContenderResult] = []
            for make in suite.contenders:
                reset(template, path)
                runs.append(run_case(make(), case, suite.driver, path, seconds, seed, progress))
            result = CaseResult(case.workload, case.workers, case.label, runs)
            result.set_ratios(suite.ratios(result), refs)
            results.append(result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = BenchResult(suite.layout, meta, refs, results, [], notes)
    out.targets = suite.targets(out)
    return out
