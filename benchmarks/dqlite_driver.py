"""The dqlite driver's own baseline (issue 14): what ``dqlitedbapi.aio`` does on a fresh 3-node
loopback cluster, before litegate is put in front of it.

Cases, each run for ``--seconds`` by ``--tasks`` asyncio tasks (one task for ``read``):

- ``insert/own``: one-row autocommit INSERTs, each task on its own connection (seeds spread
  over the nodes). This is the driver's natural use for concurrent tasks: a connection
  serialises its operations behind an internal lock, and a transaction needs a connection of
  its own.
- ``insert/shared``: the same on one shared connection (its lock queues the tasks).
- ``transfer``: read-modify-write transfers between accounts on own connections
  (``BEGIN; SELECT; UPDATE; UPDATE; COMMIT``, the driver turns BEGIN into BEGIN IMMEDIATE),
  errors counted by type; the total balance is checked afterwards.
- ``read``: point SELECTs by primary key from one task (latency).

Every INSERT acknowledged is counted back from the table afterwards. Needs Python >= 3.13
with ``dqlite-dbapi`` (``make venv PYTHON=python3.13``) and go-dqlite (``make dqlite``).

Usage: .venv-python3.13/bin/python benchmarks/dqlite_driver.py [--seconds 5] [--tasks 64]
       [--cases insert/own,insert/shared,transfer,read] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import litegate  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from litegate._dqlite_cluster import Cluster, missing_binaries

try:
    import dqlitedbapi.aio as dq
except ImportError:
    dq = None

ACCOUNTS = 1000
START_BALANCE = 1000
CASES = ("insert/own", "insert/shared", "transfer", "read")


def _pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (seconds) in milliseconds."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def _result(case: str, done: int, elapsed: float, lat: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "case": case,
        "ops": done,
        "seconds": round(elapsed, 3),
        "ops_per_s": round(done / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_pct(lat, 0.50), 3),
        "p99_ms": round(_pct(lat, 0.99), 3),
        **extra,
    }


async def _connect(seed: str, database: str) -> Any:
    return await dq.aconnect(seed, database=database)


async def _run_tasks(
    n: int, seconds: float, body: Callable[[int, float], Awaitable[None]]
) -> float:
    """Run ``body(i, deadline)`` in ``n`` tasks; return the wall time."""
    start = time.perf_counter()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(body(i, deadline) for i in range(n)))
    return time.perf_counter() - start


async def bench_insert(
    seeds: list[str], tasks: int, seconds: float, shared: bool
) -> dict[str, Any]:
    db = f"ins_{'shared' if shared else 'own'}_{os.getpid()}"
    setup = await _connect(seeds[0], db)
    await setup.execute(
        "CREATE TABLE kv(id INTEGER PRIMARY KEY, task INT NOT NULL, n INT NOT NULL)"
    )
    conns = [setup] if shared else [await _connect(seeds[i % len(seeds)], db) for i in range(tasks)]
    lat: list[float] = []
    acked = 0
    errors: Counter[str] = Counter()

    async def body(i: int, deadline: float) -> None:
        nonlocal acked
        conn = conns[0 if shared else i]
        n = 0
        while time.monotonic() < deadline:
            t = time.perf_counter()
            try:
                await conn.execute("INSERT INTO kv(task, n) VALUES (?, ?)", (i, n))
            except dq.Error as e:
                errors[type(e).__name__] += 1
                continue
            lat.append(time.perf_counter() - t)
            acked += 1
            n += 1

    elapsed = await _run_tasks(tasks, seconds, body)
    cur = await setup.execute("SELECT count(*) FROM kv")
    (rows,) = await cur.fetchone()
    for c in {id(c): c for c in conns}.values():
        await c.close()
    assert rows == acked, f"{acked} INSERTs acknowledged but {rows} rows"
    case = "insert/shared" if shared else "insert/own"
    return _result(case, acked, elapsed, lat, connections=len(conns), errors=dict(errors))


async def bench_transfer(seeds: list[str], tasks: int, seconds: float) -> dict[str, Any]:
    db = f"transfer_{os.getpid()}"
    setup = await _connect(seeds[0], db)
    await setup.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INT NOT NULL)")
    await setup.executemany(
        "INSERT INTO acct VALUES (?, ?)", [(i, START_BALANCE) for i in range(ACCOUNTS)]
    )
    conns = [await _connect(seeds[i % len(seeds)], db) for i in range(tasks)]
    lat: list[float] = []
    done = 0
    errors: Counter[str] = Counter()

    async def body(i: int, deadline: float) -> None:
        nonlocal done
        rnd = random.Random(i)
        conn = conns[i]
        while time.monotonic() < deadline:
            a, b = rnd.sample(range(ACCOUNTS), 2)
            amount = rnd.randint(1, 10)
            t = time.perf_counter()
            try:
                await conn.execute("BEGIN")
                cur = await conn.execute("SELECT balance FROM acct WHERE id = ?", (a,))
                (balance,) = await cur.fetchone()
                if balance >= amount:
                    await conn.execute(
                        "UPDATE acct SET balance = balance - ? WHERE id = ?", (amount, a)
                    )
                    await conn.execute(
                        "UPDATE acct SET balance = balance + ? WHERE id = ?", (amount, b)
                    )
                await conn.commit()
            except dq.Error as e:
                errors[type(e).__name__ + ": " + str(e)[:60]] += 1
                if not conn.closed:
                    await conn.rollback()
                continue
            lat.append(time.perf_counter() - t)
            done += 1

    elapsed = await _run_tasks(tasks, seconds, body)
    cur = await setup.execute("SELECT sum(balance), min(balance) FROM acct")
    total, lowest = await cur.fetchone()
    for c in [setup, *conns]:
        await c.close()
    assert total == ACCOUNTS * START_BALANCE, f"money created or lost: {total}"
    assert lowest >= 0
    return _result(
        "transfer", done, elapsed, lat, connections=tasks, errors=dict(errors), sum_ok=True
    )


async def bench_read(seeds: list[str], seconds: float) -> dict[str, Any]:
    db = f"read_{os.getpid()}"
    conn = await _connect(seeds[0], db)
    await conn.execute("CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    await conn.executemany("INSERT INTO kv VALUES (?, ?)", [(i, f"v{i}") for i in range(1000)])
    rnd = random.Random(0)
    lat: list[float] = []
    start = time.perf_counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        k = rnd.randrange(1000)
        t = time.perf_counter()
        cur = await conn.execute("SELECT v FROM kv WHERE id = ?", (k,))
        row = await cur.fetchone()
        lat.append(time.perf_counter() - t)
        assert row == (f"v{k}",)
    elapsed = time.perf_counter() - start
    await conn.close()
    return _result("read", len(lat), elapsed, lat, connections=1)


def _table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'case':<14} {'ops':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}  conns  errors"]
    for r in results:
        errs = sum(r.get("errors", {}).values())
        lines.append(
            f"{r['case']:<14} {r['ops']:>7} {r['ops_per_s']:>9.1f} {r['p50_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f}  {r['connections']:>5}  {errs}"
        )
    return "\n".join(lines)


async def _main(args: argparse.Namespace, seeds: list[str]) -> list[dict[str, Any]]:
    results = []
    for case in args.cases:
        if case == "insert/own":
            results.append(await bench_insert(seeds, args.tasks, args.seconds, shared=False))
        elif case == "insert/shared":
            results.append(await bench_insert(seeds, args.tasks, args.seconds, shared=True))
        elif case == "transfer":
            results.append(await bench_transfer(seeds, args.tasks, args.seconds))
        elif case == "read":
            results.append(await bench_read(seeds, args.seconds))
        print(_table(results[-1:]).splitlines()[-1], file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="length of each case (default 5)")
    p.add_argument("--tasks", type=int, default=64, help="concurrent tasks (default 64)")
    p.add_argument(
        "--cases",
        type=lambda s: [c for c in s.split(",") if c],
        default=list(CASES),
        help=f"comma-separated subset of {','.join(CASES)}",
    )
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    unknown = set(args.cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases: {sorted(unknown)}")
    if dq is None:
        print("dqlite-dbapi is not importable (Python >= 3.13 only): use .venv-python3.13")
        return 2
    if missing_binaries():
        print(f"not on PATH: {missing_binaries()}: run `make dqlite`")
        return 2
    with tempfile.TemporaryDirectory(prefix="litegate-dqlite-bench-") as root:
        with Cluster(root) as cluster:
            results = asyncio.run(_main(args, cluster.seeds))
    versions = {"dqlite-dbapi": dq.__version__, "python": sys.version.split()[0]}
    print(_table(results))
    doc = {"benchmark": "dqlite_driver", "tasks": args.tasks, **versions, "results": results}
    print(json.dumps(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
