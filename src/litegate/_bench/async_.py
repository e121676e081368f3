"""Async benchmark harness: litegate's asyncio facade against the usual asyncio ways to use
SQLite, same workload, one run.

Contenders (each on a fresh copy of the same seeded file, WAL):

* ``litegate async``: ``await litegate.connect_async(path, readers=4, synchronous="FULL")``;
  ``adb.query_one`` for reads, ``adb.execute`` for writes (group-committed);
* ``aiosqlite FULL`` / ``aiosqlite NORMAL``: one aiosqlite connection (its own thread),
  ``synchronous`` as named. Reads: ``execute_fetchall`` (one round trip). Each write is its own
  transaction, ``execute`` + ``commit``, under an ``asyncio.Lock`` so that tasks sharing the
  connection do not interleave their transactions (without it, one task's COMMIT would commit
  other tasks' half-done work). Skipped, with a note, when aiosqlite is not installed;
* ``to_thread + Lock``: ``asyncio.to_thread`` over one ``check_same_thread=False`` sqlite3
  connection guarded by a ``threading.Lock``; ``synchronous=FULL``; each write is
  ``BEGIN IMMEDIATE`` ... ``COMMIT``.

The reference is raw synchronous ``sqlite3`` on one thread with no sharing at all: the Python
call-cost floor every contender pays on top of.

Workloads: point reads by primary key, single-row write transactions (half UPDATE, half INSERT)
and a 90/10 mix, each with 1 and 64 concurrent tasks (``tasks=``). An error counts as an error
and the operation is not counted as done; after each run the file is checked: rows inserted and
increments applied must equal the writes that were acknowledged.

Threads: :func:`run_async_benchmark` runs on the caller's thread (one fresh event loop per run,
via :func:`asyncio.run`); ``progress`` is called from the caller's thread only. It must not be
called from a running event loop.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import litegate

from . import (
    PAD,
    ROWS,
    SQL_INSERT,
    SQL_READ,
    SQL_UPDATE,
    DataCheck,
    _error_key,
    _ms,
    _open_plain,
    _plain_read,
    _plain_write,
    _reset,
    _seed_template,
    _summary,
    _timed,
    _Worker,
)

if TYPE_CHECKING:
    import aiosqlite

__all__ = (
    "ASYNC_WORKLOADS",
    "DEFAULT_ASYNC_SECONDS",
    "DEFAULT_TASKS",
    "AsyncBenchResult",
    "AsyncContenderResult",
    "AsyncReference",
    "AsyncTarget",
    "AsyncWorkload",
    "AsyncWorkloadResult",
    "aiosqlite_version",
    "contender_names",
    "format_async_report",
    "run_async_benchmark",
)

DEFAULT_ASYNC_SECONDS = 2.0
DEFAULT_TASKS: tuple[int, ...] = (1, 64)
LITEGATE_READERS = 4
READS_VS_RAW_TARGET = 0.5
WRITES_VS_AIOSQLITE_FULL_TARGET = 10.0
WRITES_VS_AIOSQLITE_NORMAL_TARGET = 2.0
LATENCY_TARGET = 1.0
_GRACE = 60.0  # seconds past the run's end before an unfinished task counts as hung

LITEGATE = "litegate async"
AIOSQLITE_FULL = "aiosqlite FULL"
AIOSQLITE_NORMAL = "aiosqlite NORMAL"
TO_THREAD = "to_thread + Lock"


@dataclass(frozen=True, slots=True)
class AsyncWorkload:
    """What each task does: ``write_fraction`` of its operations are single-row write
    transactions (half UPDATE, half INSERT), the rest point reads by primary key."""

    name: str
    write_fraction: float
    description: str


ASYNC_WORKLOADS: dict[str, AsyncWorkload] = {
    "reads": AsyncWorkload("reads", 0.0, "point reads by primary key"),
    "writes": AsyncWorkload("writes", 1.0, "single-row write transactions"),
    "mixed": AsyncWorkload("mixed", 0.10, "90% point reads / 10% single-row writes"),
}


def aiosqlite_version() -> str | None:
    """The installed aiosqlite version, or ``None`` when it cannot be imported."""
    try:
        import aiosqlite
    except ImportError:
        return None
    return str(getattr(aiosqlite, "__version__", "?"))


# ---- contenders ---------------------------------------------------------------------------
class AsyncContender:
    """One way of using the database from asyncio. All methods run on the event loop."""

    name = "?"
    kind = "peer"

    async def open(self, path: str) -> None:
        raise NotImplementedError

    async def read(self, key: int) -> Any:
        raise NotImplementedError

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        raise NotImplementedError

    async def close(self) -> dict[str, Any]:
        """Close everything; returns extra figures for the report."""
        return {}


class LitegateAsync(AsyncContender):
    """litegate's facade: inline point reads, group-committed writes."""

    kind = "litegate"
    name = LITEGATE

    async def open(self, path: str) -> None:
        self._db = await litegate.connect_async(path, readers=LITEGATE_READERS, synchronous="FULL")

    async def read(self, key: int) -> Any:
        return await self._db.query_one(SQL_READ, (key,))

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await self._db.execute(sql, params)

    async def close(self) -> dict[str, Any]:
        s = await self._db.stats()
        await self._db.close()
        return {
            "batches": s.batches,
            "mean_batch_size": s.mean_batch_size,
            "max_batch_size": s.max_batch_size,
            "jobs_failed": s.jobs_failed,
            "busy_retries": s.busy_retries,
        }


class Aiosqlite(AsyncContender):
    """One aiosqlite connection; each write its own transaction under an ``asyncio.Lock``."""

    def __init__(self, synchronous: str) -> None:
        self.synchronous = synchronous
        self.name = f"aiosqlite {synchronous}"

    async def open(self, path: str) -> None:
        import aiosqlite

        self._lock = asyncio.Lock()
        conn = await aiosqlite.connect(path, timeout=5.0)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except BaseException:
            await conn.close()
            raise
        self._conn: aiosqlite.Connection = conn

    async def read(self, key: int) -> Any:
        rows = await self._conn.execute_fetchall(SQL_READ, (key,))
        return next(iter(rows), None)

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        async with self._lock:
            try:
                await self._conn.execute(sql, params)
                await self._conn.commit()
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.rollback()
                raise

    async def close(self) -> dict[str, Any]:
        await self._conn.close()
        return {"connections": 1}


class ToThreadLocked(AsyncContender):
    """``asyncio.to_thread`` over one shared sqlite3 connection behind a ``threading.Lock``."""

    name = TO_THREAD

    async def open(self, path: str) -> None:
        self._conn = await asyncio.to_thread(_open_plain, path, check_same_thread=False)
        self._lock = threading.Lock()

    def _read(self, key: int) -> Any:
        with self._lock:
            return _plain_read(self._conn, key)

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            _plain_write(self._conn, sql, params)

    async def read(self, key: int) -> Any:
        return await asyncio.to_thread(self._read, key)

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await asyncio.to_thread(self._write, sql, params)

    async def close(self) -> dict[str, Any]:
        self._conn.close()
        return {"connections": 1}


def _contenders(with_aiosqlite: bool) -> list[Callable[[], AsyncContender]]:
    makers: list[Callable[[], AsyncContender]] = [LitegateAsync]
    if with_aiosqlite:
        makers += [lambda: Aiosqlite("FULL"), lambda: Aiosqlite("NORMAL")]
    makers.append(ToThreadLocked)
    return makers


def contender_names(with_aiosqlite: bool = True) -> list[str]:
    """The contenders' names, in the order they run."""
    names = [LITEGATE]
    if with_aiosqlite:
        names += [AIOSQLITE_FULL, AIOSQLITE_NORMAL]
    return [*names, TO_THREAD]


# ---- results ------------------------------------------------------------------------------
@dataclass(slots=True)
class AsyncContenderResult:
    name: str
    kind: str
    workload: str
    tasks: int
    elapsed_s: float
    ops: int
    reads: int
    writes: int
    errors: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    read_p50_ms: float
    read_p99_ms: float
    write_p50_ms: float
    write_p99_ms: float
    error_samples: dict[str, int]
    data: DataCheck
    extra: dict[str, Any] = field(default_factory=dict)
    vs_raw: float | None = None
    vs_aiosqlite_full: float | None = None
    vs_aiosqlite_normal: float | None = None


@dataclass(slots=True)
class AsyncWorkloadResult:
    workload: AsyncWorkload
    tasks: int
    contenders: list[AsyncContenderResult]

    def get(self, name: str) -> AsyncContenderResult | None:
        return next((c for c in self.contenders if c.name == name), None)


@dataclass(slots=True)
class AsyncReference:
    workload: str
    name: str
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(slots=True)
class AsyncTarget:
    """``ratio >= threshold`` passes; ``ratio is None`` means skipped (``note`` says why)."""

    name: str
    subject: str
    ratio: float | None
    threshold: float
    note: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= self.threshold

    @property
    def text(self) -> str:
        if self.ratio is None:
            return f"SKIP  {self.name}: {self.subject} (target >= {self.threshold:g}x; {self.note})"
        verdict = "PASS" if self.passed else "FAIL"
        note = f"; {self.note}" if self.note else ""
        return (
            f"{verdict}  {self.name}: {self.subject} = {self.ratio:.2f}x "
            f"(target >= {self.threshold:g}x{note})"
        )


@dataclass(slots=True)
class AsyncBenchResult:
    meta: dict[str, Any]
    reference: list[AsyncReference]
    workloads: list[AsyncWorkloadResult]
    targets: list[AsyncTarget]
    notes: list[str]

    def find(self, workload: str, tasks: int, name: str) -> AsyncContenderResult | None:
        for w in self.workloads:
            if w.workload.name == workload and w.tasks == tasks:
                return w.get(name)
        return None

    def problems(self, kind: str | None = None) -> list[str]:
        """Data mismatches of any contender and litegate's errors (``kind``: only that kind)."""
        out: list[str] = []
        for w in self.workloads:
            for c in w.contenders:
                if kind is not None and c.kind != kind:
                    continue
                where = f"{w.workload.name} x{w.tasks}: {c.name}"
                if not c.data.ok:
                    out.append(f"{where}: data {c.data.text}")
                if c.kind == "litegate" and c.errors:
                    out.append(f"{where}: {c.errors} error(s)")
        return out

    @property
    def ok(self) -> bool:
        """No target failed (skipped ones do not count), no litegate error or data mismatch."""
        return all(t.passed is not False for t in self.targets) and not self.problems("litegate")

    def as_dict(self) -> dict[str, Any]:
        workloads = []
        for w in self.workloads:
            contenders = []
            for c in w.contenders:
                d = asdict(c)
                d["data"]["text"] = c.data.text
                contenders.append(d)
            workloads.append(
                {"workload": asdict(w.workload), "tasks": w.tasks, "contenders": contenders}
            )
        return {
            "meta": self.meta,
            "reference": [asdict(r) for r in self.reference],
            "workloads": workloads,
            "targets": [asdict(t) | {"passed": t.passed, "text": t.text} for t in self.targets],
            "notes": self.notes,
            "problems": self.problems(),
            "ok": self.ok,
        }


# ---- the run ------------------------------------------------------------------------------
_Tally = _Worker  # per-task tallies: the same counters (one event loop, no locking)


async def _task(
    contender: AsyncContender,
    workload: AsyncWorkload,
    index: int,
    seed: int,
    tally: _Tally,
    end: float,
) -> None:
    rng = random.Random(seed * 1000 + index)
    clock = time.perf_counter
    write_fraction = workload.write_fraction
    writes_done = 0
    while clock() < end:
        key = rng.randrange(1, ROWS + 1)
        if rng.random() < write_fraction:
            is_insert = writes_done % 2 == 1
            writes_done += 1
            t0 = clock()
            try:
                if is_insert:
                    await contender.write(SQL_INSERT, (key, index, PAD))
                else:
                    await contender.write(SQL_UPDATE, (key,))
            except Exception as exc:
                tally.errors += 1
                tally.samples[_error_key(exc)] += 1
                continue
            tally.write_lat.append(clock() - t0)
            if is_insert:
                tally.inserts += 1
            else:
                tally.updates += 1
        else:
            t0 = clock()
            try:
                await contender.read(key)
            except Exception as exc:
                tally.errors += 1
                tally.samples[_error_key(exc)] += 1
                continue
            tally.read_lat.append(clock() - t0)
            tally.reads += 1


async def _drive(
    contender: AsyncContender,
    workload: AsyncWorkload,
    tasks: int,
    path: str,
    seconds: float,
    seed: int,
    label: str,
    progress: Callable[[str], None],
) -> tuple[list[_Tally], float, int, dict[str, Any]]:
    """Open, run ``tasks`` tasks for ``seconds``, close; (tallies, elapsed, hung, extra)."""
    await contender.open(path)
    tallies = [_Tally() for _ in range(tasks)]
    hung = 0
    extra: dict[str, Any] = {}
    try:
        start = time.perf_counter()
        end = start + seconds
        running = [
            asyncio.create_task(_task(contender, workload, i, seed, tallies[i], end))
            for i in range(tasks)
        ]
        pending: set[asyncio.Task[None]] = set(running)
        give_up = end + _GRACE
        while pending:
            now = time.perf_counter()
            if now >= give_up:
                break
            _, pending = await asyncio.wait(pending, timeout=min(1.0, give_up - now))
            now = time.perf_counter()
            if pending and now < end:
                done = sum(t.ops for t in tallies)
                progress(f"{label}: {now - start:.0f}/{seconds:g}s, {done} ops")
        elapsed = time.perf_counter() - start
        hung = len(pending)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        for t in running:
            if t.done() and not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                assert exc is not None
                tallies[running.index(t)].errors += 1
                tallies[running.index(t)].samples["task crashed: " + _error_key(exc)] += 1
    finally:
        extra = await contender.close()
    return tallies, elapsed, hung, extra


def _run_one(
    contender: AsyncContender,
    workload: AsyncWorkload,
    tasks: int,
    path: str,
    seconds: float,
    seed: int,
    progress: Callable[[str], None],
) -> AsyncContenderResult:
    label = f"{workload.name} x{tasks}: {contender.name}"
    progress(f"{label}: running {tasks} task(s) for {seconds:g}s")
    tallies, elapsed, hung, extra = asyncio.run(
        _drive(contender, workload, tasks, path, seconds, seed, label, progress)
    )
    note = f"{hung} task(s) still running {_GRACE:g}s after the end"
    result = AsyncContenderResult(
        name=contender.name,
        kind=contender.kind,
        workload=workload.name,
        tasks=tasks,
        extra=extra,
        **_summary(tallies, hung, note, elapsed, path),
    )
    progress(
        f"{label}: {result.ops_per_s:,.0f} ops/s, p50 {result.p50_ms:.3f} ms, "
        f"p99 {result.p99_ms:.3f} ms, {result.errors} errors, data {result.data.text}"
    )
    return result


_REFERENCE_NAMES = {
    "reads": "raw sqlite3 point read",
    "writes": "raw sqlite3 FULL single-row commit",
    "mixed": "raw sqlite3 90/10 mix (FULL)",
}


def _reference(
    workload: AsyncWorkload, template: str, path: str, seconds: float, seed: int
) -> AsyncReference:
    """Raw synchronous sqlite3 on one thread (WAL, FULL), the workload's operation mix."""
    _reset(template, path)
    rng = random.Random(seed)
    conn = _open_plain(path)
    writes_done = 0

    def op(_: int) -> None:
        nonlocal writes_done
        key = rng.randrange(1, ROWS + 1)
        if rng.random() < workload.write_fraction:
            writes_done += 1
            if writes_done % 2 == 0:
                _plain_write(conn, SQL_INSERT, (key, 0, PAD))
            else:
                _plain_write(conn, SQL_UPDATE, (key,))
        else:
            _plain_read(conn, key)

    try:
        n, elapsed, lat = _timed(seconds, op)
    finally:
        conn.close()
    return AsyncReference(
        workload=workload.name,
        name=_REFERENCE_NAMES.get(workload.name, f"raw sqlite3 {workload.name}"),
        ops=n,
        ops_per_s=round(n / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=_ms(lat, 0.5),
        p99_ms=_ms(lat, 0.99),
    )


def _ratio(a: float, b: float | None) -> float | None:
    return round(a / b, 2) if b else None


def _targets(
    result_refs: list[AsyncReference],
    workloads: list[AsyncWorkloadResult],
    tasks: Sequence[int],
    with_aiosqlite: bool,
) -> list[AsyncTarget]:
    out: list[AsyncTarget] = []
    many = max(tasks)
    no_aio = "aiosqlite not installed"

    def find(workload: str, n: int, name: str) -> AsyncContenderResult | None:
        for w in workloads:
            if w.workload.name == workload and w.tasks == n:
                return w.get(name)
        return None

    names = {w.workload.name for w in workloads}
    if "reads" in names:
        lg = find("reads", many, LITEGATE)
        ref = next((r for r in result_refs if r.workload == "reads"), None)
        out.append(
            AsyncTarget(
                f"reads x{many}",
                f"{LITEGATE} ops/s vs {_REFERENCE_NAMES['reads']} (one thread)",
                None if lg is None or ref is None else _ratio(lg.ops_per_s, ref.ops_per_s),
                READS_VS_RAW_TARGET,
                "" if ref is not None else "no reference run",
            )
        )
    if "writes" in names:
        lg = find("writes", many, LITEGATE)
        for peer, threshold in (
            (AIOSQLITE_FULL, WRITES_VS_AIOSQLITE_FULL_TARGET),
            (AIOSQLITE_NORMAL, WRITES_VS_AIOSQLITE_NORMAL_TARGET),
        ):
            other = find("writes", many, peer)
            out.append(
                AsyncTarget(
                    f"writes x{many}",
                    f"{LITEGATE} (FULL) ops/s vs {peer}",
                    None if lg is None or other is None else _ratio(lg.ops_per_s, other.ops_per_s),
                    threshold,
                    "" if with_aiosqlite else no_aio,
                )
            )
    if 1 in tasks:
        for w in workloads:
            if w.tasks != 1:
                continue
            lg = w.get(LITEGATE)
            other = w.get(AIOSQLITE_FULL)
            ratio = p99 = None
            if lg is not None and other is not None and lg.p50_ms > 0:
                ratio = round(other.p50_ms / lg.p50_ms, 2)
                p99 = round(other.p99_ms / lg.p99_ms, 2) if lg.p99_ms > 0 else None
            note = (
                no_aio
                if not with_aiosqlite
                else f"p50 {lg.p50_ms if lg else 0:.3f} vs {other.p50_ms if other else 0:.3f} "
                f"ms; p99 ratio {p99 if p99 is not None else '-'}x"
            )
            out.append(
                AsyncTarget(
                    f"{w.workload.name} x1 latency",
                    f"{AIOSQLITE_FULL} p50 / {LITEGATE} p50",
                    ratio,
                    LATENCY_TARGET,
                    note,
                )
            )
    return out


def _parse_tasks(tasks: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(dict.fromkeys(int(n) for n in tasks))
    if not chosen or any(n < 1 for n in chosen):
        raise ValueError(f"tasks must be positive integers, got {list(tasks)}")
    return chosen


def run_async_benchmark(
    *,
    seconds: float = DEFAULT_ASYNC_SECONDS,
    tasks: Sequence[int] = DEFAULT_TASKS,
    workloads: Sequence[str] = ("reads", "writes", "mixed"),
    directory: str | None = None,
    seed: int = 1,
    reference: bool = True,
    with_aiosqlite: bool = True,
    progress: Callable[[str], None] | None = None,
) -> AsyncBenchResult:
    """Run every contender on every named workload at every task count; blocks for about
    ``len(workloads) * (len(tasks) * 4 + 1) * seconds`` plus setup.

    :param directory: where the database file goes (default: a new temporary directory, removed
        afterwards)
    :param with_aiosqlite: include the aiosqlite contenders (skipped anyway when it is missing)
    :raises KeyError: an unknown workload name
    :raises ValueError: a task count < 1
    """
    report = progress or (lambda _msg: None)
    chosen = [ASYNC_WORKLOADS[name] for name in workloads]
    counts = _parse_tasks(tasks)
    aio_version = aiosqlite_version()
    notes: list[str] = []
    with_aio = with_aiosqlite and aio_version is not None
    if with_aiosqlite and aio_version is None:
        notes.append("aiosqlite is not installed: its contenders were skipped")
        report(notes[-1])
    tmp = tempfile.mkdtemp(prefix="litegate-abench-", dir=directory)
    try:
        template = os.path.join(tmp, "template.db")
        path = os.path.join(tmp, "bench.db")
        _seed_template(template)
        refs: list[AsyncReference] = []
        if reference:
            for workload in chosen:
                report(f"reference {workload.name}: raw sqlite3 on one thread, {seconds:g}s")
                refs.append(_reference(workload, template, path, seconds, seed))
        results: list[AsyncWorkloadResult] = []
        for workload in chosen:
            ref = next((r for r in refs if r.workload == workload.name), None)
            for n in counts:
                runs: list[AsyncContenderResult] = []
                for make in _contenders(with_aio):
                    _reset(template, path)
                    runs.append(_run_one(make(), workload, n, path, seconds, seed, report))
                wr = AsyncWorkloadResult(workload, n, runs)
                full, normal = wr.get(AIOSQLITE_FULL), wr.get(AIOSQLITE_NORMAL)
                for c in runs:
                    c.vs_raw = _ratio(c.ops_per_s, ref.ops_per_s if ref else None)
                    c.vs_aiosqlite_full = _ratio(c.ops_per_s, full.ops_per_s if full else None)
                    c.vs_aiosqlite_normal = _ratio(
                        c.ops_per_s, normal.ops_per_s if normal else None
                    )
                results.append(wr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {
        "seconds": seconds,
        "tasks": list(counts),
        "rows": ROWS,
        "journal_mode": "WAL",
        "litegate_readers": LITEGATE_READERS,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "litegate": litegate.__version__,
        "aiosqlite": aio_version if with_aio else None,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "directory": directory or tempfile.gettempdir(),
    }
    targets = _targets(refs, results, counts, with_aio)
    return AsyncBenchResult(meta, refs, results, targets, notes)


# ---- report -------------------------------------------------------------------------------
def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_async_report(result: AsyncBenchResult) -> str:
    """The results as a text table, one block per workload and task count, then the targets."""
    m = result.meta
    aio = f"aiosqlite {m['aiosqlite']}" if m["aiosqlite"] else "aiosqlite (not installed)"
    lines = [
        f"litegate {m['litegate']} async vs {aio} vs asyncio.to_thread: Python {m['python']}, "
        f"SQLite {m['sqlite']}, {m['cpus']} CPUs, WAL, {m['seconds']:g}s per contender",
        f"  {LITEGATE}: connect_async(readers={m['litegate_readers']}, synchronous=FULL); "
        f"aiosqlite: one connection, each write execute+commit under an asyncio.Lock; "
        f"{TO_THREAD}: one sqlite3 connection, synchronous=FULL",
    ]
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.reference:
        lines.append("")
        lines.append("reference: raw synchronous sqlite3, one thread, no sharing (call-cost floor)")
        for r in result.reference:
            lines.append(
                f"  {r.name:<36} {r.ops_per_s:>10,.0f} ops/s  p50 {r.p50_ms:7.3f} ms"
                f"  p99 {r.p99_ms:7.3f} ms"
            )
    for w in result.workloads:
        lines.append("")
        task_word = "task" if w.tasks == 1 else "tasks"
        lines.append(
            f"workload {w.workload.name} x{w.tasks}: {w.tasks} {task_word}, "
            f"{w.workload.description}"
        )
        lines.append(
            f"  {'contender':<18} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
            f"{'vs raw':>7} {'vs aio FULL':>11} {'vs aio NORMAL':>13}  data"
        )
        for c in w.contenders:
            lines.append(
                f"  {c.name:<18} {c.ops_per_s:>10,.0f} {c.p50_ms:>8.3f} {c.p99_ms:>8.3f} "
                f"{c.errors:>6} {_x(c.vs_raw):>7} {_x(c.vs_aiosqlite_full):>11} "
                f"{_x(c.vs_aiosqlite_normal):>13}  {c.data.text}"
            )
        for c in w.contenders:
            if c.kind == "litegate" and c.writes and c.extra:
                lines.append(
                    f"  ({c.name}: {c.extra.get('batches', 0)} commits, mean batch "
                    f"{c.extra.get('mean_batch_size', 0)}, max {c.extra.get('max_batch_size', 0)})"
                )
        for c in w.contenders:
            for msg, n in c.error_samples.items():
                lines.append(f"  ! {c.name}: {n}x {msg}")
    lines.append("")
    lines.append("targets")
    for t in result.targets:
        lines.append(f"  {t.text}")
    for p in result.problems():
        lines.append(f"  PROBLEM  {p}")
    return "\n".join(lines)
