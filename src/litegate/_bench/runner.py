"""The runner: drives one contender through one case on OS threads or asyncio tasks, one
design for both.

The driver opens the contender on a fresh copy of the seeded file, starts ``case.workers``
workers (:class:`Threads`: OS threads released together by a barrier; :class:`Tasks`: tasks on
a fresh event loop per run, via :func:`asyncio.run`, next to a ticker that measures how late
the loop wakes it), each running its own seeded stream of operations until the deadline, and
closes it. Each worker keeps a :class:`Tally`; the summary, the data check and the result are
the same for both drivers (:func:`run_case`). :mod:`.session` runs whole suites, each run in a
fresh process.

Threads: :func:`run_case` runs on the caller's thread (which must not be running an event
loop) and starts the workers; ``progress`` is called from the caller's thread only.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .._stats import percentile
from .acontenders import AsyncContender
from .contenders import Contender
from .report import ContenderResult
from .workloads import (
    INSERT,
    KIND_NAMES,
    KINDS,
    READ,
    SCAN,
    SLOW,
    TRANSFER,
    UPDATE,
    Case,
    Op,
    check_data,
    operations,
)

__all__ = (
    "Driver",
    "GRACE",
    "TASKS",
    "THREADS",
    "TICK",
    "Tally",
    "Tasks",
    "Threads",
    "ms",
    "quiet",
    "run_case",
)

GRACE = 60.0  # seconds past the run's end before a worker counts as hung
TICK = 0.001
"""The lag ticker's sleep: it asks to wake every millisecond and records how late it woke."""

C = TypeVar("C", Contender, AsyncContender)


def ms(samples: list[float], q: float) -> float:
    return round(percentile(samples, q) * 1000.0, 3)


def _error_key(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:80]}"


def quiet(message: str) -> None:
    pass


class Tally:
    """One worker's counts: a latency list per operation kind (its length is the count of
    that kind done), the transfers that moved money, errors and error samples. Written only
    by its worker; the main thread reads it for progress and after the run."""

    __slots__ = ("errors", "lat", "moved", "samples")

    def __init__(self) -> None:
        self.lat: tuple[list[float], ...] = tuple([] for _ in range(KINDS))
        self.moved = 0
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
    """The call per operation kind (indexed like :data:`.workloads.KIND_NAMES`), the latency
    lists and the clock: what a worker loop binds to locals before it starts."""
    c = contender
    calls = (c.read, c.write, c.write, c.scan, c.transfer, c.write)
    return calls, tally.lat, time.perf_counter


def _work(contender: Contender, ops: Iterator[Op], tally: Tally, end: float) -> None:
    """Run ``ops`` on ``contender`` until ``end`` (the thread flavour)."""
    calls, lat, clock = _loop_state(contender, tally)
    while clock() < end:
        kind, args = next(ops)
        t0 = clock()
        try:
            out = calls[kind](*args)
        except Exception as exc:
            tally.fail(exc)
        else:
            lat[kind].append(clock() - t0)
            if out is True:  # only transfer returns a bool; True: money moved
                tally.moved += 1


async def _awork(contender: AsyncContender, ops: Iterator[Op], tally: Tally, end: float) -> None:
    """Run ``ops`` on ``contender`` until ``end`` (the task flavour), then ``worker_exit``."""
    calls, lat, clock = _loop_state(contender, tally)
    try:
        while clock() < end:
            kind, args = next(ops)
            t0 = clock()
            try:
                out = await calls[kind](*args)
            except Exception as exc:
                tally.fail(exc)
            else:
                lat[kind].append(clock() - t0)
                if out is True:
                    tally.moved += 1
    finally:
        await contender.worker_exit()


async def _tick(lags: list[float], end: float) -> None:
    """Sleep ``TICK`` in a loop until ``end``, recording each wake's lateness: how long the
    loop was busy elsewhere (a blocked loop shows here as one long lateness)."""
    clock, sleep = time.perf_counter, asyncio.sleep
    while (t0 := clock()) < end:
        await sleep(TICK)
        lags.append(max(0.0, clock() - t0 - TICK))


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
    hung: int  # workers still running ``GRACE`` seconds after the end
    extra: dict[str, Any]
    lags: list[float] | None = None  # the ticker's lateness samples (tasks only)


class _Crew:
    """The workers of one run: each one's operation stream and tally; it reports progress
    about once a second while the run lasts (called from the driving thread)."""

    def __init__(
        self, case: Case, seconds: float, seed: int, label: str, progress: Callable[[str], None]
    ) -> None:
        self.ops = [operations(case, seed, i) for i in range(case.workers)]
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
    """OS threads, started together by a barrier; blocks until they end (or ``GRACE``
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
            give_up = clock[1] + GRACE
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
    """Tasks on a fresh event loop (:func:`asyncio.run`) next to the lag ticker; blocks until
    they end. Tasks still running ``GRACE`` seconds past the end are cancelled and count as
    hung errors."""

    noun = "task"

    def run(self, contender: AsyncContender, case: Case, path: str, crew: _Crew) -> _Run:
        return asyncio.run(self._run(contender, path, crew, case))

    async def _run(self, contender: AsyncContender, path: str, crew: _Crew, case: Case) -> _Run:
        await contender.open(path, case)
        hung = 0
        lags: list[float] = []
        try:
            start = time.perf_counter()
            crew.begin(start)
            end = start + crew.seconds
            ticker = asyncio.create_task(_tick(lags, end))
            running = [
                asyncio.create_task(_awork(contender, ops, tally, end))
                for ops, tally in zip(crew.ops, crew.tallies, strict=True)
            ]
            pending: set[asyncio.Task[None]] = set(running)
            give_up = end + GRACE
            while pending and (now := time.perf_counter()) < give_up:
                _, pending = await asyncio.wait(pending, timeout=min(1.0, give_up - now))
                crew.tick(time.perf_counter())
            elapsed = time.perf_counter() - start
            hung = len(pending)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            await ticker
            for task, tally in zip(running, crew.tallies, strict=True):
                if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                    tally.fail(exc, "task crashed: ")
        finally:
            extra = await contender.close()
        return _Run(elapsed, hung, extra, lags)


THREADS = Threads()
TASKS = Tasks()


# ---- one run and its summary ------------------------------------------------------------------
def _workers(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _result(
    contender: Contender | AsyncContender, case: Case, crew: _Crew, run: _Run, path: str, noun: str
) -> ContenderResult:
    """Totals, latency percentiles (all, by read/write, by kind), loop lag, error samples and
    the data check of one run."""
    tallies = crew.tallies
    by_kind = [[x for t in tallies for x in t.lat[k]] for k in range(KINDS)]
    reads = by_kind[READ] + by_kind[SCAN]
    write_lat = by_kind[UPDATE] + by_kind[INSERT] + by_kind[TRANSFER] + by_kind[SLOW]
    all_lat = reads + write_lat
    samples: Counter[str] = Counter()
    for t in tallies:
        samples.update(t.samples)
    if run.hung:
        samples[f"{run.hung} {noun}(s) still running {GRACE:g}s after the end"] += run.hung
    elapsed = run.elapsed
    moved = sum(t.moved for t in tallies)
    data = check_data(path, len(by_kind[INSERT]), len(by_kind[UPDATE]), moved, len(by_kind[SLOW]))
    kinds = {
        KIND_NAMES[k]: {"ops": len(lat), "p50_ms": ms(lat, 0.5), "p99_ms": ms(lat, 0.99)}
        for k, lat in enumerate(by_kind)
        if lat
    }
    lags = run.lags
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
        p50_ms=ms(all_lat, 0.5),
        p99_ms=ms(all_lat, 0.99),
        read_p50_ms=ms(reads, 0.5),
        read_p99_ms=ms(reads, 0.99),
        write_p50_ms=ms(write_lat, 0.5),
        write_p99_ms=ms(write_lat, 0.99),
        error_samples=dict(samples.most_common(5)),
        data=data,
        extra=run.extra,
        synchronous=case.synchronous,
        by_kind=kinds,
        lag_p99_ms=None if lags is None else ms(lags, 0.99),
        lag_max_ms=None if lags is None else round(max(lags, default=0.0) * 1000.0, 3),
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
    label = f"{case.label} {case.synchronous}: {contender.name}"
    progress(f"{label}: running {_workers(case.workers, driver.noun)} for {seconds:g}s")
    crew = _Crew(case, seconds, seed, label, progress)
    run = driver.run(contender, case, path, crew)
    result = _result(contender, case, crew, run, path, driver.noun)
    lag = "" if result.lag_p99_ms is None else f", lag p99 {result.lag_p99_ms:.2f} ms"
    progress(
        f"{label}: {result.ops_per_s:,.0f} ops/s, p50 {result.p50_ms:.3f} ms, "
        f"p99 {result.p99_ms:.3f} ms{lag}, {result.errors} errors, data {result.data.text}"
    )
    return result
