"""SQLAlchemy ORM read-modify-write transfers on 8 threads: ``sqlite+litegate://`` against
SQLAlchemy's own ``sqlite://`` dialect (its defaults, and in WAL mode), the same code.

Each transfer is one ORM Session transaction: load two accounts, move 1 between them, and bump
a shared counter row (read, add 1, write back). Afterwards the sum of the balances must be
unchanged and the counter must equal the transfers that committed: the difference is the
updates lost. Every case runs in a fresh process on a fresh file, the cases interleaved.

    python benchmarks/sqlalchemy_transfers.py [--seconds 4] [--threads 8] [--rounds 2]
                                              [--synchronous full,normal] [--json FILE]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from sqlalchemy import Integer, String, create_engine, event, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

CASES = ("litegate", "sqlite", "sqlite_wal")
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


def _engine(case: str, path: str, synchronous: str) -> Any:
    if case == "litegate":
        return create_engine(
            f"sqlite+litegate:///{path}",
            connect_args={"litegate": {"synchronous": synchronous}},
        )
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _: Any) -> None:
        if case == "sqlite_wal":
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute(f"PRAGMA synchronous={synchronous}")

    return engine


def run_case(case: str, synchronous: str, seconds: float, threads: int) -> dict[str, Any]:
    """One case in this process (call it in a fresh one)."""
    scratch = tempfile.mkdtemp(prefix="lg-sa-")
    atexit.register(shutil.rmtree, scratch, True)  # (the case runs in a process of its own)
    path = os.path.join(scratch, "bench.db")
    engine = _engine(case, path, synchronous)
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Account(id=i, balance=BALANCE) for i in range(1, ACCOUNTS + 1)])
        s.add(Counter(name="transfers", value=0))

    committed = [0] * threads
    errors: dict[str, int] = {}
    latencies: list[list[float]] = [[] for _ in range(threads)]
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    deadline = 0.0

    def worker(i: int) -> None:
        rnd = random.Random(i)
        start.wait()
        while time.perf_counter() < deadline:
            a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
            t0 = time.perf_counter()
            try:
                with Session(engine) as s, s.begin():
                    x = s.get(Account, a)
                    y = s.get(Account, b)
                    c = s.get(Counter, "transfers")
                    assert x is not None and y is not None and c is not None
                    x.balance -= 1
                    y.balance += 1
                    c.value += 1
            except Exception as exc:
                kind = "database is locked" if "locked" in str(exc) else type(exc).__name__
                with lock:
                    errors[kind] = errors.get(kind, 0) + 1
                continue
            latencies[i].append(time.perf_counter() - t0)
            committed[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    deadline = time.perf_counter() + seconds
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    with Session(engine) as s:
        total = s.scalar(select(func.sum(Account.balance)))
        counter = s.get(Counter, "transfers")
        assert counter is not None
        counted = counter.value
    engine.dispose()
    done = sum(committed)
    lat = sorted(x for per in latencies for x in per)
    return {
        "case": case,
        "synchronous": synchronous,
        "transfers_per_s": done / elapsed,
        "committed": done,
        "errors": errors,
        "lost_updates": done - counted,
        "sum_off_by": (total or 0) - ACCOUNTS * BALANCE,
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--synchronous", default="full,normal")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # (a child: one case, JSON out)
    args = parser.parse_args(argv)
    if args.case:
        out = run_case(args.case, args.synchronous, args.seconds, args.threads)
        print(json.dumps(out))
        return 0
    results: list[dict[str, Any]] = []
    for sync in args.synchronous.upper().split(","):
        for _ in range(args.rounds):
            for case in CASES:  # interleaved, each in a fresh process
                cmd = [sys.executable, __file__, "--case", case, "--synchronous", sync]
                cmd += ["--seconds", str(args.seconds), "--threads", str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                r = results[-1]
                print(
                    f"{sync:6} {case:11} {r['transfers_per_s']:8.0f}/s  p50 {r['p50_ms']:.2f} ms"
                    f"  p99 {r['p99_ms']:.2f} ms  errors {r['errors'] or 0}"
                    f"  lost updates {r['lost_updates']}  sum off by {r['sum_off_by']}",
                    flush=True,
                )
    print()
    for sync in args.synchronous.upper().split(","):
        med = {
            c: statistics.median(
                r["transfers_per_s"] for r in results if r["case"] == c and r["synchronous"] == sync
            )
            for c in CASES
        }
        best_peer = max(med["sqlite"], med["sqlite_wal"])
        print(
            f"{sync}: litegate {med['litegate']:.0f}/s, sqlite:// {med['sqlite']:.0f}/s, "
            f"sqlite:// WAL {med['sqlite_wal']:.0f}/s: {med['litegate'] / med['sqlite']:.2f}x "
            f"sqlite://, {med['litegate'] / best_peer:.2f}x the better of the two"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
