"""Async read tails: litegate ``AsyncDatabase`` against aiosqlite and raw sqlite3, interleaved.

Workloads on a 10k-row table ``kv(id, val, pad)``: point reads (``WHERE id = ?``) and 100-row
range scans (``WHERE id BETWEEN ? AND ? + 99``), with 1 and 64 asyncio tasks. Contenders:
litegate (``connect_async``, default options; one or more source trees with ``--src``),
aiosqlite (one connection, ``execute_fetchall``: one thread hop per call) and, as the
reference, raw ``sqlite3`` on one thread. Every case runs in a fresh subprocess; rounds
interleave the contenders so that a noisy neighbour hits them alike. For each case: ops/s,
latency p50/p99 (per call, as the task sees it), the event-loop lag p99/max measured by a
ticker task sleeping 1 ms, and the process's CPU time per operation (all threads: steadier
than ops/s when other jobs share the machine). Figures are medians over the rounds.

    python benchmarks/async_reads.py [--seconds 2] [--rounds 3] [--tasks 1,64]
        [--workloads point,scan] [--src NAME=PATH ...] [--json FILE]

``--src base=/tmp/base/src --src new=src`` compares two litegate trees in one run;
``--tune r4=_ROUND=0.004,_SLICE_MAX=0.001`` adds a contender (the last ``--src`` tree, or the
installed one) run with those inline-read turn settings of ``litegate._engine._turns`` (seconds): the
trade-off between the loop's lag and read throughput, interleaved in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = 10_000
SQL = {
    "point": "SELECT id, val, pad FROM kv WHERE id = ?",
    "scan": "SELECT id, val, pad FROM kv WHERE id BETWEEN ? AND ? + 99",
    "long": "SELECT id, val, pad FROM kv WHERE id BETWEEN ? AND ? + 1999",
}
LONG_EVERY = 16  # "mixed": every 16th task runs long scans, the others point reads
WARMUP = 0.3
TICK = 0.001


def make_db(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE kv (id INTEGER PRIMARY KEY, val INTEGER, pad TEXT)")
    rnd = random.Random(1)
    conn.executemany(
        "INSERT INTO kv VALUES (?, ?, ?)",
        ((i, rnd.randrange(1 << 30), "p" * 64 + str(i)) for i in range(1, ROWS + 1)),
    )
    conn.commit()
    conn.close()


def params(workload: str, rnd: random.Random) -> tuple[int, ...]:
    if workload == "point":
        return (rnd.randint(1, ROWS),)
    a = rnd.randint(1, ROWS - (99 if workload == "scan" else 1999))
    return (a, a)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# ---- child side ------------------------------------------------------------------------------
def run_raw(path: str, workload: str, seconds: float) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    sql, rnd = SQL[workload], random.Random(7)
    lat: list[float] = []
    end_warm = time.perf_counter() + WARMUP
    while time.perf_counter() < end_warm:
        conn.execute(sql, params(workload, rnd)).fetchall()
    t_start, cpu_start = time.perf_counter(), time.process_time()
    end = t_start + seconds
    now = t_start
    while now < end:
        p = params(workload, rnd)
        t0 = now
        rows = conn.execute(sql, p).fetchall()
        now = time.perf_counter()
        lat.append(now - t0)
        assert rows, p
    cpu = time.process_time() - cpu_start
    return {"ops": len(lat), "elapsed": now - t_start, "cpu": cpu, "lat": lat, "lags": []}


async def run_async(
    contender: str, path: str, workload: str, tasks: int, seconds: float
) -> dict[str, Any]:
    if contender == "aiosqlite":
        import aiosqlite

        db = await aiosqlite.connect(path)

        async def call(sql: str, p: tuple[int, ...]) -> Any:
            return await db.execute_fetchall(sql, p)

        async def close() -> None:
            await db.close()
    else:
        import litegate

        if contender.startswith("litegate@"):  # (--tune: tuning points, not options)
            from litegate._engine import _turns as _async

            for setting in contender.split("@", 1)[1].split(","):
                attr, value = setting.split("=")
                assert hasattr(_async, attr), attr
                setattr(_async, attr, float(value))
        adb = await litegate.connect_async(path)

        async def call(sql: str, p: tuple[int, ...]) -> Any:
            return await adb.query(sql, p)

        async def close() -> None:
            await adb.close()

    state = {"measure": False, "stop": False}
    lat: list[float] = []
    long_lat: list[float] = []
    lags: list[float] = []
    bad = 0

    async def worker(seed: int) -> None:
        nonlocal bad
        rnd = random.Random(seed)
        perf = time.perf_counter
        kind = workload
        if workload == "mixed":
            kind = "long" if seed % LONG_EVERY == LONG_EVERY - 1 else "point"
        sql, into = SQL[kind], (long_lat if kind == "long" and workload == "mixed" else lat)
        while not state["stop"]:
            p = params(kind, rnd)
            t0 = perf()
            rows = await call(sql, p)
            t1 = perf()
            if state["measure"]:
                into.append(t1 - t0)
                if not rows or rows[0][0] != p[0]:
                    bad += 1

    async def ticker() -> None:
        while not state["stop"]:
            t0 = time.perf_counter()
            await asyncio.sleep(TICK)
            if state["measure"]:
                lags.append(time.perf_counter() - t0 - TICK)

    jobs = [asyncio.create_task(worker(i)) for i in range(tasks)]
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(WARMUP)
    state["measure"] = True
    t_start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    state["measure"] = False
    elapsed, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    state["stop"] = True
    await asyncio.gather(*jobs, tick)
    await close()
    out = {"ops": len(lat), "elapsed": elapsed, "cpu": cpu, "lat": lat, "lags": lags, "bad": bad}
    if long_lat:
        out["long_ops"] = len(long_lat)
        out["long_p50"] = pct(long_lat, 0.5)
        out["long_p99"] = pct(long_lat, 0.99)
    return out


def child(argv: list[str]) -> None:
    contender, src, path, workload, tasks, seconds = argv
    if src:
        sys.path.insert(0, os.path.abspath(src))
    if contender == "raw":
        out = run_raw(path, "point" if workload == "mixed" else workload, float(seconds))
    else:
        out = asyncio.run(run_async(contender, path, workload, int(tasks), float(seconds)))
    lat, lags = out.pop("lat"), out.pop("lags")
    out["p50"] = pct(lat, 0.50)
    out["p99"] = pct(lat, 0.99)
    out["lag_p99"] = pct(lags, 0.99)
    out["lag_max"] = max(lags, default=0.0)
    json.dump(out, sys.stdout)


# ---- parent side -----------------------------------------------------------------------------
def run_case(contender: str, src: str, path: str, workload: str, tasks: int, sec: float) -> Any:
    cmd = [sys.executable, os.path.abspath(__file__), "--child"]
    cmd += [contender, src, path, workload, str(tasks), str(sec)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {contender} {workload} x{tasks} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", default="1,64")
    ap.add_argument("--workloads", default="point,scan,mixed", help="point,scan,long,mixed")
    ap.add_argument("--src", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--tune", action="append", default=[], metavar="NAME=ATTR=SECONDS,...")
    ap.add_argument("--no-aiosqlite", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    tasks = [int(t) for t in args.tasks.split(",")]
    workloads = args.workloads.split(",")
    srcs = [tuple(s.split("=", 1)) for s in args.src] or [("litegate", "")]
    contenders: list[tuple[str, str, str]] = [(n, "litegate", p) for n, p in srcs]
    for name, settings in (t.split("=", 1) for t in args.tune):
        contenders.append((name, f"litegate@{settings}", srcs[-1][1]))
    if not args.no_aiosqlite:
        contenders.append(("aiosqlite", "aiosqlite", ""))
    # (mixed needs LONG_EVERY tasks for one long reader; raw runs once per workload)
    cases = [(w, t) for w in workloads for t in tasks if w != "mixed" or t >= LONG_EVERY]
    raws = sorted({"point" if w == "mixed" else w for w, _ in cases})
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "reads.db")
        make_db(path)
        for rnd in range(args.rounds):
            order = list(contenders)
            random.Random(rnd).shuffle(order)
            for w in raws:
                results.setdefault(("raw", w, 1), []).append(
                    run_case("raw", "", path, w, 1, args.seconds)
                )
            for w, t in cases:
                for name, kind, src in order:
                    results.setdefault((name, w, t), []).append(
                        run_case(kind, src, path, w, t, args.seconds)
                    )
            sys.stderr.write(f"[async_reads] round {rnd + 1}/{args.rounds} done\n")

    def med(runs: list[dict[str, Any]], key: str) -> float:
        if key.endswith("ops"):
            return statistics.median(r[key] / r["elapsed"] for r in runs)
        return statistics.median(r[key] for r in runs)

    table = []
    print(
        f"{'contender':<12}{'workload':<11}{'tasks':>5}{'ops/s':>9}{'xraw':>6}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'p99/aio':>8}{'lag99 ms':>9}{'lagmax':>8}{'cpu us':>8}{'bad':>4}"
    )

    def show(name: str, w: str, t: int, runs: list[dict[str, Any]], pre: str, raw: float) -> None:
        aio = results.get(("aiosqlite", w, t))
        aio_p99 = med(aio, pre + "p99") if aio else 0.0
        row = {
            "contender": name,
            "workload": w + ("/long" if pre else ""),
            "tasks": t,
            "ops_s": med(runs, pre + "ops"),
            "x_raw": med(runs, pre + "ops") / raw if raw else 0.0,
            "p50_ms": med(runs, pre + "p50") * 1e3,
            "p99_ms": med(runs, pre + "p99") * 1e3,
            "p99_vs_aiosqlite": med(runs, pre + "p99") / aio_p99 if aio_p99 else 0.0,
            "lag_p99_ms": med(runs, "lag_p99") * 1e3,
            "lag_max_ms": med(runs, "lag_max") * 1e3,
            "cpu_us_per_op": statistics.median(r["cpu"] / max(r[pre + "ops"], 1) for r in runs)
            * 1e6,
            "bad": sum(r.get("bad", 0) for r in runs),
        }
        table.append(row)
        print(
            f"{name:<12}{row['workload']:<11}{t:>5}{row['ops_s']:>9.0f}{row['x_raw']:>6.2f}"
            f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['p99_vs_aiosqlite']:>8.2f}"
            f"{row['lag_p99_ms']:>9.2f}{row['lag_max_ms']:>8.1f}{row['cpu_us_per_op']:>8.1f}"
            f"{row['bad']:>4}"
        )

    for w, t in cases:
        raw_runs = results[("raw", "point" if w == "mixed" else w, 1)]
        raw = med(raw_runs, "ops")
        if t == min(tt for ww, tt in cases if ww == w):
            show("raw", w, 1, raw_runs, "", raw)
        for name, _, _ in contenders:
            show(name, w, t, results[(name, w, t)], "", raw)
        if w == "mixed":
            for name, _, _ in contenders:
                show(name, w, t, results[(name, w, t)], "long_", 0.0)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return 1 if any(r["bad"] for r in table) else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        sys.exit(main())
