"""Benchmark harness: litegate against the folk remedies for sharing sqlite3 between threads.

Every contender runs the same workload, for the same time, on the same database file, reset
before each run to a byte-identical seeded copy (WAL, ``synchronous=FULL``). The remedies are
written plainly and correctly:

* ``sqlite3 per-thread``: one connection per thread (``threading.local``), ``timeout=5``;
* ``sqlite3 queue pool``: a ``queue.Queue`` of N connections (``check_same_thread=False``);
* ``sqlite3 + Lock``: one connection behind a ``threading.Lock``.

Each remedy write is its own ``BEGIN IMMEDIATE`` ... ``COMMIT``; an error (``database is
locked`` included) counts as an error and the operation is not counted as done. After each run
the file is checked: the rows inserted and the increments applied must equal the writes that
were acknowledged.

Threads: :func:`run_benchmark` runs on the caller's thread and starts the worker threads of each
contender; ``progress`` is called from the caller's thread only.
"""

from __future__ import annotations

import os
import platform
import queue
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from _thread import allocate_lock
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import litegate

from .._config import Readers
from .._stats import percentile

__all__ = (
    "CONTENDERS",
    "WORKLOADS",
    "BenchResult",
    "ContenderResult",
    "DataCheck",
    "ReferenceResult",
    "Target",
    "Workload",
    "WorkloadResult",
    "format_report",
    "run_benchmark",
)

ROWS = 10_000
"""Rows seeded into ``kv``; point reads and updates pick a random one."""
PAD = "x" * 100
BUSY_TIMEOUT = 5.0
"""The remedies' busy timeout (``sqlite3.connect(timeout=5)``) and queue-pool wait."""
DEFAULT_SECONDS = 3.0
DEFAULT_POOL_SIZE = 4
MIXED_TARGET = 1.5
WRITES_TARGET = 10.0
_JOIN_GRACE = 60.0  # seconds past the run's end before a worker counts as hung

_SCHEMA = """
CREATE TABLE kv(id INTEGER PRIMARY KEY, val INTEGER NOT NULL, pad TEXT NOT NULL);
CREATE TABLE events(id INTEGER PRIMARY KEY, kv_id INTEGER NOT NULL, worker INTEGER NOT NULL,
                    pad TEXT NOT NULL);
"""
SQL_READ = "SELECT id, val, pad FROM kv WHERE id = ?"
SQL_UPDATE = "UPDATE kv SET val = val + 1 WHERE id = ?"
SQL_INSERT = "INSERT INTO events(kv_id, worker, pad) VALUES (?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Workload:
    """What each thread does: ``write_fraction`` of its operations are single-row write
    transactions (half UPDATE, half INSERT), the rest point reads by primary key."""

    name: str
    threads: int
    write_fraction: float
    description: str


WORKLOADS: dict[str, Workload] = {
    "mixed": Workload("mixed", 8, 0.10, "8 threads, 90% point reads / 10% single-row writes"),
    "writes": Workload("writes", 64, 1.0, "64 threads, single-row write transactions"),
}


# ---- contenders ---------------------------------------------------------------------------
def _open_plain(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A plain sqlite3 connection as the folk remedies open it: WAL, FULL, busy timeout 5 s,
    explicit transactions (``isolation_level=None``)."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=check_same_thread
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def _plain_read(conn: sqlite3.Connection, key: int) -> Any:
    return conn.execute(SQL_READ, (key,)).fetchone()


def _plain_write(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    """One write in its own transaction. On any error the transaction is rolled back."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


class Contender:
    """One way of sharing the database. ``read``/``write`` are called from worker threads;
    ``thread_exit`` from each worker before it ends; ``open``/``close`` from the main thread."""

    name = "?"
    kind = "remedy"

    def open(self, path: str, threads: int) -> None:
        raise NotImplementedError

    def read(self, key: int) -> Any:
        raise NotImplementedError

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def thread_exit(self) -> None:
        """Release what this worker thread opened."""

    def close(self) -> dict[str, Any]:
        """Close everything; returns extra figures for the report."""
        return {}


class PerThread(Contender):
    """Remedy (a): a connection per thread, in a ``threading.local``."""

    name = "sqlite3 per-thread"

    def open(self, path: str, threads: int) -> None:
        self._path = path
        self._local = threading.local()
        self._opened = 0
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _open_plain(self._path)
            with self._lock:
                self._opened += 1
        return conn

    def read(self, key: int) -> Any:
        return _plain_read(self._conn(), key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        _plain_write(self._conn(), sql, params)

    def thread_exit(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def close(self) -> dict[str, Any]:
        return {"connections": self._opened}


class QueuePool(Contender):
    """Remedy (b): a ``queue.Queue`` of N shared connections."""

    def __init__(self, size: int = DEFAULT_POOL_SIZE) -> None:
        self.size = size
        self.name = f"sqlite3 queue pool({size})"

    def open(self, path: str, threads: int) -> None:
        self._all = [_open_plain(path, check_same_thread=False) for _ in range(self.size)]
        self._q: queue.Queue[sqlite3.Connection] = queue.Queue()
        for conn in self._all:
            self._q.put(conn)

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._q.get(timeout=BUSY_TIMEOUT)
        except queue.Empty:
            raise TimeoutError(f"no pooled connection within {BUSY_TIMEOUT}s") from None
        try:
            yield conn
        finally:
            self._q.put(conn)

    def read(self, key: int) -> Any:
        with self._borrow() as conn:
            return _plain_read(conn, key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._borrow() as conn:
            _plain_write(conn, sql, params)

    def close(self) -> dict[str, Any]:
        for conn in self._all:
            conn.close()
        return {"connections": self.size}


class Locked(Contender):
    """Remedy (c): one connection behind a ``threading.Lock``."""

    name = "sqlite3 + Lock"

    def open(self, path: str, threads: int) -> None:
        self._conn = _open_plain(path, check_same_thread=False)
        self._lock = threading.Lock()

    def read(self, key: int) -> Any:
        with self._lock:
            return _plain_read(self._conn, key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            _plain_write(self._conn, sql, params)

    def close(self) -> dict[str, Any]:
        self._conn.close()
        return {"connections": 1}


class Litegate(Contender):
    """litegate: ``db.query_one`` for reads, ``db.execute`` for writes (group commit)."""

    kind = "litegate"

    def __init__(self, readers: Readers = 4) -> None:
        self.readers = readers
        self.name = f"litegate readers={readers}"

    def open(self, path: str, threads: int) -> None:
        self._db = litegate.connect(path, readers=self.readers, synchronous="FULL")

    def read(self, key: int) -> Any:
        return self._db.query_one(SQL_READ, (key,))

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        self._db.execute(sql, params)

    def close(self) -> dict[str, Any]:
        s = self._db.stats()
        self._db.close()
        return {
            "batches": s.batches,
            "mean_batch_size": s.mean_batch_size,
            "max_batch_size": s.max_batch_size,
            "jobs_failed": s.jobs_failed,
            "pool_waits": s.pool_waits,
            "busy_retries": s.busy_retries,
        }


class BareGroupCommit(PerThread):
    """Not a remedy but a ceiling: the leanest group commit Python allows, with none of
    litegate's guarantees (no per-job isolation, no bounded queue, no timeouts, no
    cancellation, no transactions, no stats). Reads use a connection per thread; writes go to
    a deque that one writer thread drains into ``BEGIN IMMEDIATE`` ... ``COMMIT`` batches,
    waking each caller by its own raw lock. What it reaches on a machine shows how far a
    target is from what any thread-acknowledging design written in Python can do there.
    """

    name = "ceiling: bare group commit"
    kind = "ceiling"

    def open(self, path: str, threads: int) -> None:
        super().open(path, threads)
        self._writer = _open_plain(path, check_same_thread=False)
        self._queue: deque[list[Any]] = deque()
        self._bell = allocate_lock()
        self._bell.acquire()
        self._sleeping = False
        self._stop = False
        self._thread = threading.Thread(target=self._drain, name="bench-bare-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        queue_, conn = self._queue, self._writer
        while not self._stop:
            if not queue_:
                self._sleeping = True
                if not queue_:
                    self._bell.acquire(timeout=0.05)
                self._sleeping = False
                continue
            jobs = []
            while queue_:
                jobs.append(queue_.popleft())
            try:
                conn.execute("BEGIN IMMEDIATE")
                for job in jobs:
                    conn.execute(job[1], job[2])
                conn.execute("COMMIT")
            except BaseException as exc:  # the whole batch fails; nothing is acknowledged
                if conn.in_transaction:
                    conn.rollback()
                for job in jobs:
                    job[3] = exc
            for job in jobs:
                job[0].release()

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        done = allocate_lock()
        done.acquire()
        job: list[Any] = [done, sql, params, None]  # lock, sql, params, error
        self._queue.append(job)
        if self._sleeping:
            try:
                self._bell.release()
            except RuntimeError:  # rung already
                pass
        done.acquire()
        error: BaseException | None = job[3]
        if error is not None:
            raise error

    def close(self) -> dict[str, Any]:
        self._stop = True
        self._thread.join(5.0)
        self._writer.close()
        return super().close()


def _default_contenders(pool_size: int) -> list[Callable[[], Contender]]:
    return [
        PerThread,
        lambda: QueuePool(pool_size),
        Locked,
        BareGroupCommit,
        lambda: Litegate(4),
        lambda: Litegate("per-thread"),
    ]


CONTENDERS: tuple[str, ...] = (
    "sqlite3 per-thread",
    f"sqlite3 queue pool({DEFAULT_POOL_SIZE})",
    "sqlite3 + Lock",
    "ceiling: bare group commit",
    "litegate readers=4",
    "litegate readers=per-thread",
)
"""Names of the default contenders, in the order they run."""


# ---- results ------------------------------------------------------------------------------
@dataclass(slots=True)
class DataCheck:
    """Does the file hold exactly the acknowledged writes?"""

    ok: bool
    expected_inserts: int
    found_inserts: int
    expected_updates: int
    found_updates: int
    integrity: str

    @property
    def text(self) -> str:
        if self.ok:
            return "ok"
        parts = []
        if self.found_inserts != self.expected_inserts:
            parts.append(f"rows {self.found_inserts} != acked {self.expected_inserts}")
        if self.found_updates != self.expected_updates:
            parts.append(f"increments {self.found_updates} != acked {self.expected_updates}")
        if self.integrity != "ok":
            parts.append(f"integrity: {self.integrity}")
        return "MISMATCH " + "; ".join(parts)


@dataclass(slots=True)
class ContenderResult:
    name: str
    kind: str
    workload: str
    threads: int
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
    ratio: float | None = None


@dataclass(slots=True)
class Target:
    workload: str
    contender: str
    baseline: str
    ratio: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.ratio >= self.threshold

    @property
    def text(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{verdict}  {self.workload}: {self.contender} = {self.ratio:.2f}x {self.baseline} "
            f"(target >= {self.threshold:g}x)"
        )


@dataclass(slots=True)
class WorkloadResult:
    workload: Workload
    baseline_label: str
    baseline: str
    contenders: list[ContenderResult]
    targets: list[Target]


@dataclass(slots=True)
class ReferenceResult:
    name: str
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(slots=True)
class BenchResult:
    meta: dict[str, Any]
    reference: list[ReferenceResult]
    workloads: list[WorkloadResult]

    @property
    def targets(self) -> list[Target]:
        return [t for w in self.workloads for t in w.targets]

    def problems(self, kind: str | None = None) -> list[str]:
        """Data mismatches of any contender and litegate's errors (``kind``: only that kind)."""
        out: list[str] = []
        for w in self.workloads:
            for c in w.contenders:
                if kind is not None and c.kind != kind:
                    continue
                if not c.data.ok:
                    out.append(f"{w.workload.name}: {c.name}: data {c.data.text}")
                if c.kind == "litegate" and c.errors:
                    out.append(f"{w.workload.name}: {c.name}: {c.errors} error(s)")
        return out

    @property
    def ok(self) -> bool:
        """Every target met, no litegate error and no litegate data mismatch."""
        return all(t.passed for t in self.targets) and not self.problems("litegate")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "meta": self.meta,
            "reference": [asdict(r) for r in self.reference],
            "workloads": {},
            "targets": [asdict(t) | {"passed": t.passed} for t in self.targets],
            "problems": self.problems(),
            "ok": self.ok,
        }
        for w in self.workloads:
            contenders = []
            for c in w.contenders:
                d = asdict(c)
                d["data"]["text"] = c.data.text
                contenders.append(d)
            out["workloads"][w.workload.name] = {
                "workload": asdict(w.workload),
                "baseline": w.baseline,
                "contenders": contenders,
            }
        return out


# ---- the run ------------------------------------------------------------------------------
def _ms(samples: list[float], q: float) -> float:
    return round(percentile(samples, q) * 1000.0, 3)


class _Worker:
    """Per-thread (or per-task) tallies; written only by their thread, read by the main thread
    for progress."""

    __slots__ = ("errors", "inserts", "read_lat", "reads", "samples", "updates", "write_lat")

    def __init__(self) -> None:
        self.reads = 0
        self.updates = 0
        self.inserts = 0
        self.errors = 0
        self.read_lat: list[float] = []
        self.write_lat: list[float] = []
        self.samples: Counter[str] = Counter()

    @property
    def ops(self) -> int:
        return self.reads + self.updates + self.inserts


def _summary(
    tallies: Sequence[Any], hung: int, hung_note: str, elapsed: float, path: str
) -> dict[str, Any]:
    """What both harnesses report of a contender's run: totals, latency percentiles, error
    samples and the data check. ``tallies`` have reads/inserts/updates/errors/samples and
    read_lat/write_lat (the sync harness's per-thread and the async one's per-task tallies)."""
    reads = sum(t.reads for t in tallies)
    inserts = sum(t.inserts for t in tallies)
    updates = sum(t.updates for t in tallies)
    errors = sum(t.errors for t in tallies) + hung
    samples: Counter[str] = Counter()
    for t in tallies:
        samples.update(t.samples)
    if hung:
        samples[hung_note] += hung
    read_lat = [x for t in tallies for x in t.read_lat]
    write_lat = [x for t in tallies for x in t.write_lat]
    all_lat = read_lat + write_lat
    ops = reads + inserts + updates
    return {
        "elapsed_s": round(elapsed, 3),
        "ops": ops,
        "reads": reads,
        "writes": inserts + updates,
        "errors": errors,
        "ops_per_s": round(ops / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": _ms(all_lat, 0.5),
        "p99_ms": _ms(all_lat, 0.99),
        "read_p50_ms": _ms(read_lat, 0.5),
        "read_p99_ms": _ms(read_lat, 0.99),
        "write_p50_ms": _ms(write_lat, 0.5),
        "write_p99_ms": _ms(write_lat, 0.99),
        "error_samples": dict(samples.most_common(5)),
        "data": _check_data(path, inserts, updates),
    }


def _error_key(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:80]}"


def _work(
    contender: Contender,
    workload: Workload,
    index: int,
    seed: int,
    tally: _Worker,
    barrier: threading.Barrier,
    clock: list[float],
) -> None:
    rng = random.Random(seed * 1000 + index)
    clock_fn = time.perf_counter
    write_fraction = workload.write_fraction
    writes_done = 0
    try:
        barrier.wait()
        end = clock[1]
        while clock_fn() < end:
            key = rng.randrange(1, ROWS + 1)
            if rng.random() < write_fraction:
                is_insert = writes_done % 2 == 1
                writes_done += 1
                t0 = clock_fn()
                try:
                    if is_insert:
                        contender.write(SQL_INSERT, (key, index, PAD))
                    else:
                        contender.write(SQL_UPDATE, (key,))
                except Exception as exc:
                    tally.errors += 1
                    tally.samples[_error_key(exc)] += 1
                    continue
                tally.write_lat.append(clock_fn() - t0)
                if is_insert:
                    tally.inserts += 1
                else:
                    tally.updates += 1
            else:
                t0 = clock_fn()
                try:
                    contender.read(key)
                except Exception as exc:
                    tally.errors += 1
                    tally.samples[_error_key(exc)] += 1
                    continue
                tally.read_lat.append(clock_fn() - t0)
                tally.reads += 1
    except BaseException as exc:  # never lose a worker's failure (pytest turns it into errors)
        tally.errors += 1
        tally.samples["worker crashed: " + _error_key(exc)] += 1
    finally:
        try:
            contender.thread_exit()
        except Exception as exc:
            tally.errors += 1
            tally.samples["thread_exit: " + _error_key(exc)] += 1


def _seed_template(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO kv(id, val, pad) VALUES (?, 0, ?)", ((i, PAD) for i in range(1, ROWS + 1))
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _reset(template: str, path: str) -> None:
    """Make ``path`` a fresh copy of the seeded template (no WAL, no shm)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    shutil.copyfile(template, path)


def _check_data(path: str, inserts: int, updates: int) -> DataCheck:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
    try:
        found_inserts = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        found_updates = conn.execute("SELECT coalesce(sum(val), 0) FROM kv").fetchone()[0]
        integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        conn.close()
    return DataCheck(
        ok=found_inserts == inserts and found_updates == updates and integrity == "ok",
        expected_inserts=inserts,
        found_inserts=found_inserts,
        expected_updates=updates,
        found_updates=found_updates,
        integrity=str(integrity),
    )


def _run_one(
    contender: Contender,
    workload: Workload,
    path: str,
    seconds: float,
    seed: int,
    progress: Callable[[str], None],
) -> ContenderResult:
    label = f"{workload.name}: {contender.name}"
    progress(f"{label}: running {workload.threads} threads for {seconds:g}s")
    clock = [0.0, 0.0]

    def start() -> None:  # runs in one thread when every worker is ready
        clock[0] = time.perf_counter()
        clock[1] = clock[0] + seconds

    contender.open(path, workload.threads)
    tallies = [_Worker() for _ in range(workload.threads)]
    barrier = threading.Barrier(workload.threads + 1, action=start)
    threads = [
        threading.Thread(
            target=_work,
            args=(contender, workload, i, seed, tallies[i], barrier, clock),
            name=f"bench-{workload.name}-{i}",
            daemon=True,
        )
        for i in range(workload.threads)
    ]
    hung = 0
    try:
        for t in threads:
            t.start()
        barrier.wait(timeout=30.0)
        next_report = clock[0] + 1.0
        give_up = clock[1] + _JOIN_GRACE
        for t in threads:
            while t.is_alive() and time.perf_counter() < give_up:
                t.join(0.1)
                now = time.perf_counter()
                if now >= next_report and now < clock[1]:
                    next_report += 1.0
                    done = sum(w.ops for w in tallies)
                    progress(f"{label}: {now - clock[0]:.0f}/{seconds:g}s, {done} ops")
        hung = sum(t.is_alive() for t in threads)
        elapsed = time.perf_counter() - clock[0]
    finally:
        extra = contender.close() if not hung else {"hung_threads": hung}
    note = f"{hung} worker thread(s) still running {_JOIN_GRACE:g}s after the end"
    result = ContenderResult(
        name=contender.name,
        kind=contender.kind,
        workload=workload.name,
        threads=workload.threads,
        extra=extra,
        **_summary(tallies, hung, note, elapsed, path),
    )
    progress(
        f"{label}: {result.ops_per_s:,.0f} ops/s, p99 {result.p99_ms:.2f} ms, "
        f"{result.errors} errors, data {result.data.text}"
    )
    return result


def _timed(seconds: float, op: Callable[[int], object]) -> tuple[int, float, list[float]]:
    """Call ``op(i)`` for ``seconds``; returns (calls, elapsed, latencies)."""
    lat: list[float] = []
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    n = 0
    while (t0 := clock()) < end:
        op(n)
        lat.append(clock() - t0)
        n += 1
    return n, clock() - start, lat


def handoff_floor(threads: int, seconds: float) -> tuple[int, float, list[float]]:
    """The floor for any write path that acknowledges each write to a blocked thread.

    ``threads`` threads each hand a no-op to one worker thread and block until it answers
    (the worker takes every waiting request per wake-up, like a group commit with free
    commits). No SQLite at all: what remains is CPython's cost of blocking and waking threads
    under the GIL. Returns (hand-offs, elapsed, latencies).
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
        t.join(seconds + _JOIN_GRACE)
    elapsed = time.perf_counter() - start
    done.set()
    w.join(1.0)
    return sum(counts), elapsed, [x for lat in lats for x in lat]


HANDOFF_FLOOR = "thread hand-off floor (64 threads, no SQL)"


def _reference(path: str, seconds: float, seed: int) -> list[ReferenceResult]:
    """Raw sqlite3 on one thread: point reads, then FULL single-row commits."""
    rng = random.Random(seed)
    conn = _open_plain(path)

    def read(_: int) -> None:
        _plain_read(conn, rng.randrange(1, ROWS + 1))

    def write(i: int) -> None:
        key = rng.randrange(1, ROWS + 1)
        if i % 2:
            _plain_write(conn, SQL_INSERT, (key, 0, PAD))
        else:
            _plain_write(conn, SQL_UPDATE, (key,))

    out: list[ReferenceResult] = []
    try:
        for name, op in (
            ("raw sqlite3 point read", read),
            ("raw sqlite3 FULL single-row commit", write),
        ):
            out.append(_reference_result(name, *_timed(seconds, op)))
    finally:
        conn.close()
    out.append(
        _reference_result(HANDOFF_FLOOR, *handoff_floor(WORKLOADS["writes"].threads, seconds))
    )
    return out


def _reference_result(name: str, n: int, elapsed: float, lat: list[float]) -> ReferenceResult:
    return ReferenceResult(
        name=name,
        ops=n,
        ops_per_s=round(n / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=_ms(lat, 0.5),
        p99_ms=_ms(lat, 0.99),
    )


def _targets(workload: Workload, results: list[ContenderResult], baseline: str) -> list[Target]:
    threshold = MIXED_TARGET if workload.name == "mixed" else WRITES_TARGET
    return [
        Target(workload.name, c.name, baseline, c.ratio or 0.0, threshold)
        for c in results
        if c.kind == "litegate"
    ]


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
    """Run every contender on every named workload; blocks for about
    ``(len(workloads) * 5 + 2) * seconds`` plus setup.

    :param directory: where the database file goes (default: a new temporary directory, removed
        afterwards)
    :raises KeyError: an unknown workload name
    """
    report = progress or (lambda _msg: None)
    chosen = [WORKLOADS[name] for name in workloads]
    tmp = tempfile.mkdtemp(prefix="litegate-bench-", dir=directory)
    try:
        template = os.path.join(tmp, "template.db")
        path = os.path.join(tmp, "bench.db")
        _seed_template(template)
        refs: list[ReferenceResult] = []
        if reference:
            report(f"reference: raw sqlite3 on one thread, {seconds:g}s per op kind")
            _reset(template, path)
            refs = _reference(path, seconds, seed)
        results: list[WorkloadResult] = []
        for workload in chosen:
            runs: list[ContenderResult] = []
            for make in _default_contenders(pool_size):
                _reset(template, path)
                runs.append(_run_one(make(), workload, path, seconds, seed, report))
            remedies = [c for c in runs if c.kind == "remedy"]
            if workload.name == "mixed":
                base = max(remedies, key=lambda c: c.ops_per_s)
                label = "best remedy"
            else:
                base = next(c for c in remedies if c.name == Locked.name)
                label = "lock"
            for c in runs:
                c.ratio = round(c.ops_per_s / base.ops_per_s, 2) if base.ops_per_s else 0.0
            results.append(
                WorkloadResult(
                    workload, label, base.name, runs, _targets(workload, runs, base.name)
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {
        "seconds": seconds,
        "pool_size": pool_size,
        "rows": ROWS,
        "synchronous": "FULL",
        "journal_mode": "WAL",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "litegate": litegate.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "directory": directory or tempfile.gettempdir(),
    }
    return BenchResult(meta, refs, results)


# ---- report -------------------------------------------------------------------------------
def _ceiling_lines(result: BenchResult) -> list[str]:
    """How far the targets are from what this machine allows at all: the ceiling contender's
    ratio per workload, and the hand-off floor against the lock (writes)."""
    out: list[str] = []
    floor = next((r for r in result.reference if r.name == HANDOFF_FLOOR), None)
    for w in result.workloads:
        base = next((c for c in w.contenders if c.name == w.baseline), None)
        for c in w.contenders:
            if c.kind == "ceiling" and c.ratio is not None:
                out.append(
                    f"  {w.workload.name}: {c.name} = {c.ratio:.2f}x {w.baseline} "
                    "(the leanest threaded group commit, none of litegate's guarantees)"
                )
        if w.workload.name == "writes" and floor is not None and base and base.ops_per_s:
            out.append(
                f"  writes: {HANDOFF_FLOOR} = {floor.ops_per_s / base.ops_per_s:.2f}x "
                f"{w.baseline} (blocking and waking threads alone, before any SQL)"
            )
    return ["", "ceilings on this machine", *out] if out else []


def format_report(result: BenchResult) -> str:
    """The results as a text table, one block per workload, then the target lines."""
    m = result.meta
    lines = [
        f"litegate {m['litegate']} vs folk remedies: Python {m['python']}, SQLite {m['sqlite']}, "
        f"{m['cpus']} CPUs, WAL + synchronous=FULL, {m['seconds']:g}s per contender",
    ]
    if result.reference:
        lines.append("")
        lines.append("reference (one thread, no sharing)")
        for r in result.reference:
            lines.append(
                f"  {r.name:<36} {r.ops_per_s:>10,.0f} ops/s  p50 {r.p50_ms:7.3f} ms"
                f"  p99 {r.p99_ms:7.3f} ms"
            )
    for w in result.workloads:
        lines.append("")
        lines.append(f"workload {w.workload.name}: {w.workload.description}")
        ratio_head = f"vs {w.baseline_label}"
        lines.append(
            f"  {'contender':<28} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
            f"{ratio_head:>15}  data"
        )
        for c in w.contenders:
            ratio = "" if c.ratio is None else f"{c.ratio:.2f}x"
            lines.append(
                f"  {c.name:<28} {c.ops_per_s:>10,.0f} {c.p50_ms:>8.3f} {c.p99_ms:>8.3f} "
                f"{c.errors:>7} {ratio:>15}  {c.data.text}"
            )
        for c in w.contenders:
            if c.kind == "litegate" and c.extra:
                lines.append(
                    f"  ({c.name}: {c.extra.get('batches', 0)} commits, mean batch "
                    f"{c.extra.get('mean_batch_size', 0)}, max {c.extra.get('max_batch_size', 0)})"
                )
        for c in w.contenders:
            for msg, n in c.error_samples.items():
                lines.append(f"  ! {c.name}: {n}x {msg}")
    lines.extend(_ceiling_lines(result))
    lines.append("")
    lines.append("targets")
    for t in result.targets:
        lines.append(f"  {t.text}")
    for p in result.problems():
        lines.append(f"  PROBLEM  {p}")
    return "\n".join(lines)
