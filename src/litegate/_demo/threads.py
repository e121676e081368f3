"""The demonstration: many threads share one litegate database and every invariant holds.

A bank of accounts with a constant total. Worker threads, all sharing one
:class:`litegate.Database`, mix four operations for a few seconds:

* **transfer**: ``with db.transaction() as tx:`` read both balances, update both (a
  read-modify-write that would lose money without real isolation);
* **read**: a point read of one balance (read pool, caller's thread);
* **insert**: a ledger row through ``db.execute`` (write lane, group commit);
* **snapshot**: ``with db.snapshot() as snap:`` two separate queries summing the two halves of
  the accounts; their sum must be the constant total.

Afterwards the file is reopened with plain sqlite3 and :func:`check_invariants` proves: the total
is unchanged, no balance went negative, the ledger holds exactly the acknowledged inserts, every
snapshot summed correctly, no operation failed, and the file passes ``PRAGMA integrity_check``.

Threads: :func:`run_demo` runs on the caller's thread, starts the workers and calls
``progress`` from the caller's thread only.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import litegate

from .._stats import percentile

__all__ = (
    "ACCOUNTS",
    "INITIAL_BALANCE",
    "OPS",
    "TOTAL",
    "Check",
    "DemoReport",
    "Observed",
    "check_invariants",
    "format_report",
    "run_demo",
)

ACCOUNTS = 100
INITIAL_BALANCE = 1_000
TOTAL = ACCOUNTS * INITIAL_BALANCE
"""The sum of all balances; transfers move money, never create or destroy it."""
DEFAULT_THREADS = 16
DEFAULT_SECONDS = 5.0
OPS = ("transfer", "read", "insert", "snapshot")
_WEIGHTS = (25, 45, 25, 5)  # percent of each operation, in OPS order
_HALF = ACCOUNTS // 2
_JOIN_GRACE = 30.0

_SCHEMA = """
CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE ledger(id INTEGER PRIMARY KEY, account INTEGER NOT NULL, amount INTEGER NOT NULL,
                    worker INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Observed:
    """What the run did and what the file holds afterwards."""

    final_total: int
    negative_balances: int
    ledger_rows: int
    acknowledged_inserts: int
    snapshots: int
    bad_snapshots: int
    errors: int
    integrity: str


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_invariants(observed: Observed, expected_total: int = TOTAL) -> list[Check]:
    """Judge a run: one :class:`Check` per invariant (all must be ``ok``)."""
    o = observed
    return [
        Check(
            "total balance unchanged",
            o.final_total == expected_total,
            f"{o.final_total} (expected {expected_total})",
        ),
        Check(
            "no negative balance",
            o.negative_balances == 0,
            f"{o.negative_balances} account(s) below zero",
        ),
        Check(
            "ledger rows == acknowledged inserts",
            o.ledger_rows == o.acknowledged_inserts,
            f"{o.ledger_rows} rows, {o.acknowledged_inserts} acknowledged",
        ),
        Check(
            "every snapshot summed to the total",
            o.bad_snapshots == 0 and o.snapshots > 0,
            f"{o.snapshots - o.bad_snapshots}/{o.snapshots} correct",
        ),
        Check("zero errors", o.errors == 0, f"{o.errors} error(s)"),
        Check("integrity_check", o.integrity == "ok", o.integrity),
    ]


class _Tally:
    """One worker's counts; written only by its thread."""

    __slots__ = ("bad_sums", "counts", "declined", "errors", "latency", "snapshots")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = {op: [] for op in OPS}
        self.errors: Counter[str] = Counter()
        self.declined = 0
        self.snapshots = 0
        self.bad_sums: list[int] = []


@dataclass(slots=True)
class DemoReport:
    threads: int
    seconds: float
    elapsed: float
    counts: dict[str, int]
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]
    declined: int
    errors: dict[str, int]
    bad_sums: list[int]
    stats: litegate.Stats
    observed: Observed
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _transfer(db: litegate.Database, rng: random.Random, tally: _Tally) -> None:
    src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)
    amount = rng.randint(1, 100)
    with db.transaction() as tx:
        a = tx.query_value("SELECT balance FROM accounts WHERE id = ?", (src,))
        b = tx.query_value("SELECT balance FROM accounts WHERE id = ?", (dst,))
        if a < amount:
            tally.declined += 1
            return
        tx.execute("UPDATE accounts SET balance = ? WHERE id = ?", (a - amount, src))
        tx.execute("UPDATE accounts SET balance = ? WHERE id = ?", (b + amount, dst))


def _read(db: litegate.Database, rng: random.Random, tally: _Tally) -> None:
    db.query_one("SELECT id, balance FROM accounts WHERE id = ?", (rng.randint(1, ACCOUNTS),))


def _insert(db: litegate.Database, rng: random.Random, tally: _Tally, worker: int) -> None:
    db.execute(
        "INSERT INTO ledger(account, amount, worker) VALUES (?, ?, ?)",
        (rng.randint(1, ACCOUNTS), rng.randint(-100, 100), worker),
    )


def _snapshot(db: litegate.Database, rng: random.Random, tally: _Tally) -> None:
    # Two separate statements: only a real snapshot makes them add up under concurrent transfers.
    with db.snapshot() as snap:
        low = snap.query_value("SELECT sum(balance) FROM accounts WHERE id <= ?", (_HALF,))
        high = snap.query_value("SELECT sum(balance) FROM accounts WHERE id > ?", (_HALF,))
    tally.snapshots += 1
    if low + high != TOTAL:
        tally.bad_sums.append(low + high)


def _work(
    db: litegate.Database,
    worker: int,
    seed: int,
    tally: _Tally,
    barrier: threading.Barrier,
    clock: list[float],
) -> None:
    rng = random.Random(seed * 1000 + worker)
    now = time.perf_counter
    try:
        barrier.wait()
        end = clock[1]
        while now() < end:
            op = rng.choices(OPS, _WEIGHTS)[0]
            t0 = now()
            try:
                if op == "transfer":
                    _transfer(db, rng, tally)
                elif op == "read":
                    _read(db, rng, tally)
                elif op == "insert":
                    _insert(db, rng, tally, worker)
                else:
                    _snapshot(db, rng, tally)
            except Exception as exc:
                tally.errors[f"{op}: {type(exc).__name__}: {str(exc)[:100]}"] += 1
                continue
            tally.latency[op].append(now() - t0)
            tally.counts[op] += 1
    except BaseException as exc:  # never lose a worker's failure
        tally.errors[f"worker crashed: {type(exc).__name__}: {exc}"] += 1


def _inspect(path: str, acknowledged: int, snapshots: int, bad: int, errors: int) -> Observed:
    """Read the closed file with plain sqlite3: what is really on disk."""
    conn = sqlite3.connect(path)
    try:
        total = conn.execute("SELECT coalesce(sum(balance), 0) FROM accounts").fetchone()[0]
        negative = conn.execute("SELECT count(*) FROM accounts WHERE balance < 0").fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return Observed(
        final_total=total,
        negative_balances=negative,
        ledger_rows=rows,
        acknowledged_inserts=acknowledged,
        snapshots=snapshots,
        bad_snapshots=bad,
        errors=errors,
        integrity=str(integrity),
    )


def run_demo(
    *,
    seconds: float = DEFAULT_SECONDS,
    threads: int = DEFAULT_THREADS,
    readers: Any = 4,
    seed: int | None = None,
    progress: Callable[[float, dict[str, int], int], None] | None = None,
) -> DemoReport:
    """Run the demonstration in a temporary directory; blocks for about ``seconds``.

    ``progress(elapsed, counts, errors)`` is called about twice a second from this thread.
    """
    seed = random.randrange(1 << 30) if seed is None else seed
    with tempfile.TemporaryDirectory(prefix="litegate-demo-") as tmp:
        path = os.path.join(tmp, "bank.db")
        tallies = [_Tally() for _ in range(threads)]
        clock = [0.0, 0.0]

        def start() -> None:  # runs once, when every worker is ready
            clock[0] = time.perf_counter()
            clock[1] = clock[0] + seconds

        with litegate.connect(path, readers=readers) as db:
            db.executescript(_SCHEMA)
            db.executemany(
                "INSERT INTO accounts(id, balance) VALUES (?, ?)",
                [(i, INITIAL_BALANCE) for i in range(1, ACCOUNTS + 1)],
            )
            barrier = threading.Barrier(threads + 1, action=start)
            workers = [
                threading.Thread(
                    target=_work,
                    args=(db, i, seed, tallies[i], barrier, clock),
                    name=f"demo-worker-{i}",
                    daemon=True,
                )
                for i in range(threads)
            ]
            for t in workers:
                t.start()
            barrier.wait(timeout=30.0)
            next_tick = clock[0] + 0.5
            give_up = clock[1] + _JOIN_GRACE
            for t in workers:
                while t.is_alive() and time.perf_counter() < give_up:
                    t.join(0.05)
                    now = time.perf_counter()
                    if progress is not None and now >= next_tick:
                        next_tick += 0.5
                        progress(
                            min(now - clock[0], seconds), _sum_counts(tallies), _errors(tallies)
                        )
            elapsed = time.perf_counter() - clock[0]
            hung = sum(t.is_alive() for t in workers)
            stats = db.stats()
        counts = _sum_counts(tallies)
        errors: Counter[str] = Counter()
        for tally in tallies:
            errors.update(tally.errors)
        if hung:
            errors[f"{hung} worker(s) still running {_JOIN_GRACE:g}s after the end"] += hung
        bad_sums = [s for tally in tallies for s in tally.bad_sums]
        observed = _inspect(
            path,
            acknowledged=counts["insert"],
            snapshots=sum(tally.snapshots for tally in tallies),
            bad=len(bad_sums),
            errors=sum(errors.values()),
        )
    lat = {op: [x for tally in tallies for x in tally.latency[op]] for op in OPS}
    return DemoReport(
        threads=threads,
        seconds=seconds,
        elapsed=elapsed,
        counts=counts,
        p50_ms={op: round(percentile(lat[op], 0.5) * 1000, 3) for op in OPS},
        p99_ms={op: round(percentile(lat[op], 0.99) * 1000, 3) for op in OPS},
        declined=sum(tally.declined for tally in tallies),
        errors=dict(errors.most_common(10)),
        bad_sums=bad_sums[:10],
        stats=stats,
        observed=observed,
        checks=check_invariants(observed),
    )


def _sum_counts(tallies: list[_Tally]) -> dict[str, int]:
    return {op: sum(t.counts[op] for t in tallies) for op in OPS}


def _errors(tallies: list[_Tally]) -> int:
    return sum(sum(t.errors.values()) for t in tallies)


def format_report(report: DemoReport) -> str:
    """The demo's summary: throughput per operation, engine stats, invariants, verdict."""
    r = report
    s = r.stats
    lines = [
        f"{r.threads} threads shared one litegate database for {r.elapsed:.1f}s "
        f"({ACCOUNTS} accounts, total {TOTAL})",
        "",
        f"  {'operation':<10} {'done':>9} {'ops/s':>9} {'p50 ms':>9} {'p99 ms':>9}",
    ]
    for op in OPS:
        n = r.counts[op]
        rate = n / r.elapsed if r.elapsed > 0 else 0.0
        lines.append(f"  {op:<10} {n:>9} {rate:>9,.0f} {r.p50_ms[op]:>9.3f} {r.p99_ms[op]:>9.3f}")
    total_ops = sum(r.counts.values())
    lines.append(f"  {'all':<10} {total_ops:>9} {total_ops / max(r.elapsed, 1e-9):>9,.0f}")
    lines.append(f"  ({r.declined} transfers declined for lack of funds: still correct outcomes)")
    lines += [
        "",
        "engine stats (db.stats())",
        f"  group commits {s.batches}, jobs {s.jobs_ok} ok / {s.jobs_failed} failed, "
        f"mean batch {s.mean_batch_size}, max batch {s.max_batch_size}",
        f"  write p50 {s.write_p50_ms} ms, p99 {s.write_p99_ms} ms; "
        f"read p50 {s.read_p50_ms} ms, p99 {s.read_p99_ms} ms",
        f"  transactions {s.transactions}, lane wait p99 {s.lane_wait_p99_ms} ms, "
        f"lane hold p99 {s.lane_hold_p99_ms} ms (max {s.lane_hold_max_ms} ms)",
        f"  readers {s.readers_mode} ({s.pool_open} open), pool waits {s.pool_waits}, "
        f"pool wait p99 {s.pool_wait_p99_ms} ms, checkpoints {s.checkpoints}, "
        f"busy retries {s.busy_retries}",
        "",
        "invariants (checked on the closed file with plain sqlite3)",
    ]
    for c in r.checks:
        lines.append(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
    for msg, n in r.errors.items():
        lines.append(f"  error x{n}: {msg}")
    if r.bad_sums:
        lines.append(f"  wrong snapshot sums (first {len(r.bad_sums)}): {r.bad_sums}")
    failed = [c.name for c in r.checks if not c.ok]
    lines.append("")
    if failed:
        lines.append(f"FAIL: {len(failed)} invariant(s) broken: {', '.join(failed)}")
    else:
        lines.append(f"PASS: all {len(r.checks)} invariants hold")
    return "\n".join(lines)
