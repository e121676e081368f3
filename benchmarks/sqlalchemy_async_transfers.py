"""SQLAlchemy asyncio ORM read-modify-write transfers on 64 tasks: ``sqlite+litegate_async://``
against SQLAlchemy's own ``sqlite+aiosqlite://`` dialect (its defaults, and in WAL mode), the
same code.

A fourth case, ``orm_ceiling``, bounds them all: the same transfers with SQLAlchemy's
synchronous ORM, one thread, no event loop, at synchronous=OFF (``run_ceiling``).

Each transfer is one AsyncSession transaction: load two accounts, move 1 between them, and bump
a shared counter row (read, add 1, write back). Afterwards the sum of the balances must be
unchanged, each balance must equal what the committed transfers make it, and the counter must
equal the transfers that committed: the difference is the updates lost. Every case runs in a
fresh process on a fresh file, the cases interleaved.

    python benchmarks/sqlalchemy_async_transfers.py [--seconds 4] [--tasks 64] [--rounds 2]
                                                    [--synchronous full,normal] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from sqlalchemy import Integer, String, create_engine, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

CASES = ("litegate_async", "aiosqlite", "aiosqlite_wal", "orm_ceiling")
ACCOUNTS = 100
BALANCE = 1000


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    balance: Mapped[int] = mapped_column(Integer)


class Counter(Base):
    __tablename__ = "counter"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


def _engine(case: str, path: str, synchronous: str) -> AsyncEngine:
    if case == "litegate_async":
        return create_async_engine(
            f"sqlite+litegate_async:///{path}",
            connect_args={"litegate": {"synchronous": synchronous}},
        )
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _: Any) -> None:
        if case == "aiosqlite_wal":
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute(f"PRAGMA synchronous={synchronous}")

    return engine


async def run_case(case: str, synchronous: str, seconds: float, tasks: int) -> dict[str, Any]:
    """One case in this process (call it in a fresh one)."""
    scratch = tempfile.mkdtemp(prefix="lg-saa-")
    atexit.register(shutil.rmtree, scratch, True)  # (the case runs in a process of its own)
    path = os.path.join(scratch, "bench.db")
    engine = _engine(case, path, synchronous)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as s, s.begin():
        s.add_all([Account(id=i, balance=BALANCE) for i in range(1, ACCOUNTS + 1)])
        s.add(Counter(name="transfers", value=0))

    committed: list[tuple[int, int]] = []
    errors: dict[str, int] = {}
    latencies: list[float] = []
    start = asyncio.Event()
    deadline = 0.0

    async def worker(i: int) -> None:
        rnd = random.Random(i)
        await start.wait()
        while time.perf_counter() < deadline:
            a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
            t0 = time.perf_counter()
            try:
                async with AsyncSession(engine) as s, s.begin():
                    x = await s.get(Account, a)
                    y = await s.get(Account, b)
                    c = await s.get(Counter, "transfers")
                    assert x is not None and y is not None and c is not None
                    x.balance -= 1
                    y.balance += 1
                    c.value += 1
            except Exception as exc:
                kind = "database is locked" if "locked" in str(exc) else type(exc).__name__
                errors[kind] = errors.get(kind, 0) + 1
                continue
            latencies.append(time.perf_counter() - t0)
            committed.append((a, b))

    running = [asyncio.create_task(worker(i)) for i in range(tasks)]
    await asyncio.sleep(0)
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*running)
    elapsed = time.perf_counter() - t0
    async with AsyncSession(engine) as s:
        total = await s.scalar(select(func.sum(Account.balance)))
        rows = (await s.execute(select(Account.id, Account.balance))).all()
        counter = await s.get(Counter, "transfers")
        assert counter is not None
        counted = counter.value
    await engine.dispose()
    expected = dict.fromkeys(range(1, ACCOUNTS + 1), BALANCE)
    for a, b in committed:
        expected[a] -= 1
        expected[b] += 1
    done = len(committed)
    lat = sorted(latencies)
    return {
        "case": case,
        "synchronous": synchronous,
        "tasks": tasks,
        "transfers_per_s": done / elapsed,
        "committed": done,
        "errors": errors,
        "lost_updates": done - counted,
        "balances_off": sum(1 for r in rows if r.balance != expected[r.id]),
        "sum_off_by": (total or 0) - ACCOUNTS * BALANCE,
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
    }


def run_ceiling(seconds: float) -> dict[str, Any]:
    """``orm_ceiling``: the same transfers with SQLAlchemy's synchronous ORM on its default
    ``sqlite://`` dialect, one thread, one after another, at synchronous=OFF -- no event
    loop, no greenlet, no waiting, no fsync: what the ORM's own work per transfer allows. Every
    asyncio dialect runs this ORM code and more on its one loop, so none can go faster."""
    scratch = tempfile.mkdtemp(prefix="lg-saa-")
    atexit.register(shutil.rmtree, scratch, True)  # (the case runs in a process of its own)
    path = os.path.join(scratch, "bench.db")
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Account(id=i, balance=BALANCE) for i in range(1, ACCOUNTS + 1)])
        s.add(Counter(name="transfers", value=0))
    rnd = random.Random(0)
    latencies: list[float] = []
    committed: list[tuple[int, int]] = []
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
        t0 = time.perf_counter()
        with Session(engine) as s, s.begin():
            x, y = s.get(Account, a), s.get(Account, b)
            c = s.get(Counter, "transfers")
            assert x is not None and y is not None and c is not None
            x.balance -= 1
            y.balance += 1
            c.value += 1
        latencies.append(time.perf_counter() - t0)
        committed.append((a, b))
    elapsed = time.perf_counter() - start
    with Session(engine) as s:
        total = s.scalar(select(func.sum(Account.balance)))
        counter = s.get(Counter, "transfers")
        assert counter is not None
        counted = counter.value
    engine.dispose()
    lat = sorted(latencies)
    return {
        "case": "orm_ceiling",
        "synchronous": "OFF",
        "tasks": 1,
        "transfers_per_s": len(committed) / elapsed,
        "committed": len(committed),
        "errors": {},
        "lost_updates": len(committed) - counted,
        "balances_off": 0,
        "sum_off_by": (total or 0) - ACCOUNTS * BALANCE,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
    }


def _line(r: dict[str, Any]) -> str:
    errors = sum(r["errors"].values())
    locked = r["errors"].get("database is locked", 0)
    invariant = "kept" if r["sum_off_by"] == 0 and r["balances_off"] == 0 else "BROKEN"
    return (
        f"{r['synchronous']:6} {r['case']:14} {r['transfers_per_s']:7.0f}/s"
        f"  p50 {r['p50_ms'] or 0:7.2f} ms  p99 {r['p99_ms'] or 0:8.2f} ms"
        f"  errors {errors} (locked {locked})  lost updates {r['lost_updates']}"
        f"  invariant {invariant} (sum off by {r['sum_off_by']},"
        f" {r['balances_off']} balances off)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--synchronous", default="full,normal")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # (a child: one case, JSON out)
    args = parser.parse_args(argv)
    if args.case == "orm_ceiling":
        print(json.dumps(run_ceiling(args.seconds)))
        return 0
    if args.case:
        out = asyncio.run(run_case(args.case, args.synchronous, args.seconds, args.tasks))
        print(json.dumps(out))
        return 0
    results: list[dict[str, Any]] = []
    syncs = args.synchronous.upper().split(",")
    for sync in syncs:
        for _ in range(args.rounds):
            for case in CASES:  # interleaved, each in a fresh process
                cmd = [sys.executable, __file__, "--case", case, "--synchronous", sync]
                cmd += ["--seconds", str(args.seconds), "--tasks", str(args.tasks)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r["round_of"] = sync  # (the ceiling runs at OFF in every round)
                results.append(r)
                print(_line(r), flush=True)
    print()
    for sync in syncs:
        med = {
            c: statistics.median(
                r["transfers_per_s"] for r in results if r["case"] == c and r["round_of"] == sync
            )
            for c in CASES
        }
        best_peer = max(med["aiosqlite"], med["aiosqlite_wal"])
        print(
            f"{sync}: litegate_async {med['litegate_async']:.0f}/s, aiosqlite "
            f"{med['aiosqlite']:.0f}/s, aiosqlite WAL {med['aiosqlite_wal']:.0f}/s: "
            f"{med['litegate_async'] / med['aiosqlite']:.2f}x sqlite+aiosqlite://, "
            f"{med['litegate_async'] / best_peer:.2f}x the better of the two. Ceiling (the "
            f"synchronous ORM alone, one thread, no fsync: {med['orm_ceiling']:.0f}/s): "
            f"{med['orm_ceiling'] / med['aiosqlite']:.2f}x sqlite+aiosqlite://; litegate_async "
            f"makes {100 * med['litegate_async'] / med['orm_ceiling']:.0f}% of it"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
