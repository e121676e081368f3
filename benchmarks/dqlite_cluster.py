"""litegate on a dqlite cluster against the dqlite driver itself (issue 14's benchmark): one
3-node loopback cluster, the cases interleaved round by round, each in a fresh process.

Cases (``--tasks`` asyncio tasks, 64 by default; the driver's from benchmarks/dqlite_driver.py):

- ``insert/own``, ``insert/shared``: one-row autocommit INSERTs through ``dqlitedbapi.aio``,
  a connection per task / one shared (the driver's natural uses);
- ``lg/insert``: the same INSERTs through ``litegate.connect_async("dqlite://…")``:
  ``await adb.execute(...)``, group-committed (one Raft round per group);
- ``transfer``: read-modify-write transfers through the driver (``BEGIN``, ``SELECT``,
  ``UPDATE`` x2, ``COMMIT``), a connection per task (a transaction needs one);
- ``lg/transfer``: the same in ``async with adb.transaction()`` (chained: consecutive
  transactions share a COMMIT);
- ``ceil/transfer``: the ceiling of any design with one writer connection (as litegate's
  lane): the same transfers from one task straight on the driver's connection, chained as
  litegate chains them (a SAVEPOINT each, a COMMIT per 50 ms) -- every statement is a round
  trip, and one connection runs them one at a time;
- ``read``, ``lg/read``: point SELECTs by primary key from one task (latency);
- ``lg/failover`` (``--failover``, last, once): 64 tasks inserting while the leader is
  SIGKILLed: when writes resumed, p99/max latency over the failover, acknowledged writes
  checked present once.

Every acknowledged INSERT is counted back; the transfers' total is checked. Targets (issue 14):
``lg/insert`` >= 10x the driver's, ``lg/transfer`` >= 5x, ``lg/read`` p50 within 1.5x.

Usage: .venv-python3.13/bin/python benchmarks/dqlite_cluster.py [--seconds 5] [--rounds 2]
       [--tasks 64] [--cases ...] [--failover] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:
    import litegate
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import litegate

import dqlite_driver as driver  # noqa: E402  (benchmarks/: the driver's own cases)

from litegate._dqlite_cluster import Cluster, missing_binaries  # noqa: E402

CASES = (
    "insert/own",
    "insert/shared",
    "lg/insert",
    "transfer",
    "lg/transfer",
    "ceil/transfer",
    "read",
    "lg/read",
)
ACCOUNTS, START = driver.ACCOUNTS, driver.START_BALANCE


def _url(seeds: list[str], name: str) -> str:
    return f"dqlite://{','.join(seeds)}/{name}"


async def lg_insert(seeds: list[str], tasks: int, seconds: float) -> dict[str, Any]:
    async with litegate.connect_async(_url(seeds, f"lgins_{os.getpid()}"), readers=4) as adb:
        await adb.execute("CREATE TABLE kv(id INTEGER PRIMARY KEY, task INT NOT NULL, n INT)")
        lat: list[float] = []
        acked = 0
        errors: Counter[str] = Counter()

        async def body(i: int, deadline: float) -> None:
            nonlocal acked
            n = 0
            while time.monotonic() < deadline:
                t = time.perf_counter()
                try:
                    await adb.execute("INSERT INTO kv(task, n) VALUES (?, ?)", (i, n))
                except litegate.Error as e:
                    errors[type(e).__name__] += 1
                    continue
                lat.append(time.perf_counter() - t)
                acked += 1
                n += 1

        elapsed = await driver._run_tasks(tasks, seconds, body)
        rows = await adb.query_value("SELECT count(*) FROM kv")
        stats = await adb.stats()
    assert rows == acked, f"{acked} INSERTs acknowledged but {rows} rows"
    return driver._result(
        "lg/insert",
        acked,
        elapsed,
        lat,
        connections=5,
        errors=dict(errors),
        mean_group=stats.mean_batch_size,
    )


async def lg_transfer(seeds: list[str], tasks: int, seconds: float) -> dict[str, Any]:
    async with litegate.connect_async(_url(seeds, f"lgtr_{os.getpid()}"), readers=4) as adb:
        await adb.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INT NOT NULL)")
        await adb.executemany(
            "INSERT INTO acct VALUES (?, ?)", [(i, START) for i in range(ACCOUNTS)]
        )
        lat: list[float] = []
        done = 0
        errors: Counter[str] = Counter()

        async def body(i: int, deadline: float) -> None:
            nonlocal done
            rnd = random.Random(i)
            while time.monotonic() < deadline:
                a, b = rnd.sample(range(ACCOUNTS), 2)
                amount = rnd.randint(1, 10)
                t = time.perf_counter()
                try:
                    async with adb.transaction() as tx:
                        balance = await tx.query_value(
                            "SELECT balance FROM acct WHERE id = ?", (a,)
                        )
                        if balance >= amount:
                            await tx.execute(
                                "UPDATE acct SET balance = balance - ? WHERE id = ?", (amount, a)
                            )
                            await tx.execute(
                                "UPDATE acct SET balance = balance + ? WHERE id = ?", (amount, b)
                            )
                except litegate.Error as e:
                    errors[type(e).__name__ + ": " + str(e)[:60]] += 1
                    continue
                lat.append(time.perf_counter() - t)
                done += 1

        elapsed = await driver._run_tasks(tasks, seconds, body)
        total = await adb.query_value("SELECT sum(balance) FROM acct")
        stats = await adb.stats()
    assert total == ACCOUNTS * START, f"money created or lost: {total}"
    return driver._result(
        "lg/transfer",
        done,
        elapsed,
        lat,
        connections=5,
        errors=dict(errors),
        sum_ok=True,
        mean_group=stats.mean_batch_size,
    )


async def ceiling_transfer(seeds: list[str], seconds: float) -> dict[str, Any]:
    """What any design that runs the transfers one after another on one connection can do
    (as litegate's lane must: one writer): the driver's asyncio connection straight on the
    loop, no thread, the transfers chained as litegate chains them (a SAVEPOINT each, one
    COMMIT per 50 ms), the same statements. Not a design: nothing here is shared safely."""
    conn = await driver._connect(seeds[0], f"ceil_{os.getpid()}")
    await conn.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INT NOT NULL)")
    await conn.executemany("INSERT INTO acct VALUES (?, ?)", [(i, START) for i in range(ACCOUNTS)])
    rnd = random.Random(0)
    lat: list[float] = []
    start = time.perf_counter()
    deadline = time.monotonic() + seconds
    chain_t0 = None
    while time.monotonic() < deadline:
        a, b = rnd.sample(range(ACCOUNTS), 2)
        amount = rnd.randint(1, 10)
        t = time.perf_counter()
        if chain_t0 is None:
            await conn.execute("BEGIN IMMEDIATE")
            chain_t0 = t
        else:
            await conn.execute("SAVEPOINT m")
        cur = await conn.execute("SELECT balance FROM acct WHERE id = ?", (a,))
        (balance,) = await cur.fetchone()
        if balance >= amount:
            await conn.execute("UPDATE acct SET balance = balance - ? WHERE id = ?", (amount, a))
            await conn.execute("UPDATE acct SET balance = balance + ? WHERE id = ?", (amount, b))
        if time.perf_counter() - chain_t0 >= 0.05:
            await conn.execute("COMMIT")
            chain_t0 = None
        lat.append(time.perf_counter() - t)
    if chain_t0 is not None:
        await conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    cur = await conn.execute("SELECT sum(balance) FROM acct")
    (total,) = await cur.fetchone()
    await conn.close()
    assert total == ACCOUNTS * START
    return driver._result("ceil/transfer", len(lat), elapsed, lat, connections=1, sum_ok=True)


async def lg_read(seeds: list[str], seconds: float) -> dict[str, Any]:
    async with litegate.connect_async(_url(seeds, f"lgrd_{os.getpid()}"), readers=4) as adb:
        await adb.execute("CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        await adb.executemany("INSERT INTO kv VALUES (?, ?)", [(i, f"v{i}") for i in range(1000)])
        rnd = random.Random(0)
        lat: list[float] = []
        start = time.perf_counter()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            k = rnd.randrange(1000)
            t = time.perf_counter()
            v = await adb.query_value("SELECT v FROM kv WHERE id = ?", (k,))
            lat.append(time.perf_counter() - t)
            assert v == f"v{k}"
        elapsed = time.perf_counter() - start
    return driver._result("lg/read", len(lat), elapsed, lat, connections=1)


async def lg_failover(cluster: Cluster, tasks: int, seconds: float) -> dict[str, Any]:
    """64 tasks inserting tokens; the leader SIGKILLed after ``seconds / 2``."""
    url = _url(cluster.seeds, "lgfail")
    async with litegate.connect_async(url, readers=4, timeout=30.0) as adb:
        await adb.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, token TEXT NOT NULL)")
        acked: list[tuple[str, float, float]] = []  # token, start, end
        unknown: list[str] = []
        failed: Counter[str] = Counter()

        async def body(i: int, deadline: float) -> None:
            while time.monotonic() < deadline:
                token = uuid.uuid4().hex
                t = time.monotonic()
                try:
                    await adb.execute("INSERT INTO w(token) VALUES (?)", (token,))
                except litegate.OutcomeUnknown:
                    unknown.append(token)
                    continue
                except litegate.Error as e:
                    failed[type(e).__name__] += 1
                    continue
                acked.append((token, t, time.monotonic()))

        leader = cluster.leader()
        loop = asyncio.get_running_loop()
        killed_at = time.monotonic() + seconds / 2
        loop.call_later(seconds / 2, cluster.kill, leader)
        await driver._run_tasks(tasks, seconds + 10.0, body)
        ends = sorted(end for _, _, end in acked if end >= killed_at - 0.5)
        gaps = [(b - a, b) for a, b in zip(ends, ends[1:], strict=False) if b > killed_at]
        resumed = max(gaps)[1] if gaps else None  # (the end of the longest pause: the outage)
        window = [end - start for _, start, end in acked if start <= (resumed or 0) + 0.5]
        window = [x for x in window if x >= 0]
        rows = await adb.query("SELECT token, count(*) AS n FROM w GROUP BY token")
    present = {r["token"]: r["n"] for r in rows}
    missing = [t for t, _, _ in acked if present.get(t) != 1]
    doubled = [t for t, n in present.items() if n != 1]
    extra = set(present) - {t for t, _, _ in acked} - set(unknown)
    cluster.restart(leader)
    return {
        "case": "lg/failover",
        "acked": len(acked),
        "unknown": len(unknown),
        "failed": dict(failed),
        "resumed_after_s": None if resumed is None else round(resumed - killed_at, 2),
        "p99_ms_over_failover": round(driver._pct(window, 0.99), 1),
        "max_ms": round(max(window, default=0.0) * 1000, 1),
        "acked_missing": len(missing),
        "applied_twice": len(doubled),
        "unexplained_rows": len(extra),
    }


def child(case: str, seeds: list[str], tasks: int, seconds: float) -> dict[str, Any]:
    if case == "insert/own":
        return asyncio.run(driver.bench_insert(seeds, tasks, seconds, shared=False))
    if case == "insert/shared":
        return asyncio.run(driver.bench_insert(seeds, tasks, seconds, shared=True))
    if case == "transfer":
        return asyncio.run(driver.bench_transfer(seeds, tasks, seconds))
    if case == "read":
        return asyncio.run(driver.bench_read(seeds, seconds))
    if case == "lg/insert":
        return asyncio.run(lg_insert(seeds, tasks, seconds))
    if case == "lg/transfer":
        return asyncio.run(lg_transfer(seeds, tasks, seconds))
    if case == "lg/read":
        return asyncio.run(lg_read(seeds, seconds))
    if case == "ceil/transfer":
        return asyncio.run(ceiling_transfer(seeds, seconds))
    raise SystemExit(f"unknown case {case!r}")


def _median(results: list[dict[str, Any]], case: str, key: str) -> float:
    values = [r[key] for r in results if r["case"] == case]
    return statistics.median(values) if values else float("nan")


def summary(results: list[dict[str, Any]]) -> list[str]:
    def ratio(a: str, b: str) -> str:
        x, y = _median(results, a, "ops_per_s"), _median(results, b, "ops_per_s")
        return f"{x / y:.1f}x" if y else "n/a"

    lines = [
        f"lg/insert vs insert/own: {ratio('lg/insert', 'insert/own')}, vs insert/shared: "
        f"{ratio('lg/insert', 'insert/shared')} (target >= 10x)",
        f"lg/transfer vs transfer: {ratio('lg/transfer', 'transfer')} (target >= 5x); the "
        f"ceiling (one connection, chained, no thread): {ratio('ceil/transfer', 'transfer')}, "
        f"litegate {ratio('lg/transfer', 'ceil/transfer')} of it",
    ]
    a, b = _median(results, "lg/read", "p50_ms"), _median(results, "read", "p50_ms")
    lines.append(f"lg/read p50 {a:.3f} ms vs read {b:.3f} ms: {a / b:.2f}x (target <= 1.5x)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tasks", type=int, default=64)
    p.add_argument("--cases", type=lambda s: [c for c in s.split(",") if c], default=list(CASES))
    p.add_argument("--failover", action="store_true", help="end with lg/failover")
    p.add_argument("--json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--seeds", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.seeds.split(","), args.tasks, args.seconds)))
        return 0
    if driver.dq is None:
        print("dqlite-dbapi is not importable (Python >= 3.13 only): use .venv-python3.13")
        return 2
    if missing_binaries():
        print(f"not on PATH: {missing_binaries()}: run `make dqlite`")
        return 2
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="litegate-dqlite-bench-") as root:
        with Cluster(root) as cluster:
            for r in range(args.rounds):
                for case in args.cases:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", case, "--seeds",
                         ",".join(cluster.seeds), "--tasks", str(args.tasks),
                         "--seconds", str(args.seconds)],
                        capture_output=True, text=True, timeout=args.seconds * 6 + 120,
                    )  # fmt: skip
                    if out.returncode != 0:
                        print(out.stderr[-3000:], file=sys.stderr)
                        return 1
                    result = {**json.loads(out.stdout.strip().splitlines()[-1]), "round": r}
                    results.append(result)
                    print(driver._table([result]).splitlines()[-1], file=sys.stderr, flush=True)
            if args.failover:
                failover = asyncio.run(lg_failover(cluster, args.tasks, 2 * args.seconds))
                print(json.dumps(failover), file=sys.stderr)
                results.append(failover)
    table = [r for r in results if "ops_per_s" in r]
    print(driver._table(table))
    for line in summary(table):
        print(line)
    doc = {"benchmark": "dqlite_cluster", "tasks": args.tasks, "results": results}
    print(json.dumps(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
