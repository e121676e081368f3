"""Multi-process write fairness: litegate versus plain per-thread sqlite3 connections.

Workload (the acceptance workload of the fairness issue): P processes x T threads, each thread
doing single-row INSERTs into one WAL file for S seconds, synchronous=FULL. Every process
reports its write count and per-write latency; printed per backend: per-process counts, the
min/max count ratio (1.0 = perfectly fair) and the worst single-write latency.

* ``litegate``: one ``litegate.connect`` per process, threads call ``db.execute``.
* ``sqlite3``: one ``sqlite3.connect(timeout=5)`` per thread, each INSERT its own (autocommit)
  transaction, so waiting for the lock is left to SQLite's busy handler.

Usage::

    python benchmarks/multiprocess_fairness.py [--procs 4] [--threads 2] [--seconds 4]
        [--backend litegate|sqlite3|both] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

INSERT = "INSERT INTO w(proc, thread, seq, payload) VALUES (?, ?, ?, ?)"
SCHEMA = (
    "CREATE TABLE w(proc INTEGER NOT NULL, thread INTEGER NOT NULL, seq INTEGER NOT NULL, "
    "payload TEXT, PRIMARY KEY (proc, thread, seq))"
)


# ---- worker process -------------------------------------------------------------------------
def worker(path: str, backend: str, proc: int, nthreads: int, seconds: float) -> None:
    counts = [0] * nthreads
    latencies: list[list[float]] = [[] for _ in range(nthreads)]
    errors: list[str] = []
    start = threading.Event()
    db: Any = None

    if backend == "litegate":
        import litegate

        db = litegate.connect(path, synchronous="FULL")

        def make_write(t: int) -> Any:
            def write(n: int) -> None:
                db.execute(INSERT, (proc, t, n, "f" * 40))

            return write, None

    else:

        def make_write(t: int) -> Any:
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")

            def write(n: int) -> None:
                conn.execute(INSERT, (proc, t, n, "f" * 40))

            return write, conn

    def run(t: int) -> None:
        write, conn = make_write(t)
        start.wait()
        end = time.monotonic() + seconds
        lat = latencies[t]
        n = 0
        try:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    write(n)
                except sqlite3.OperationalError as exc:  # e.g. "database is locked"
                    errors.append(f"{type(exc).__name__}: {exc}")
                    lat.append(time.perf_counter() - t0)
                    continue
                except Exception as exc:  # litegate.Busy, WriteTimeout, ...
                    errors.append(f"{type(exc).__name__}: {exc}")
                    lat.append(time.perf_counter() - t0)
                    continue
                lat.append(time.perf_counter() - t0)
                n += 1
                counts[t] = n
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    print("ready", flush=True)
    sys.stdin.readline()
    start.set()
    for th in threads:
        th.join()
    if db is not None:
        db.close()
    flat = sorted(x for lat in latencies for x in lat)
    print(
        json.dumps(
            {
                "proc": proc,
                "writes": sum(counts),
                "errors": len(errors),
                "error_kinds": sorted({e.split(":", 1)[0] for e in errors}),
                "max": flat[-1] if flat else 0.0,
                "p99": flat[int(len(flat) * 0.99)] if flat else 0.0,
                "p50": flat[len(flat) // 2] if flat else 0.0,
            }
        ),
        flush=True,
    )


# ---- driver ---------------------------------------------------------------------------------
def run_backend(
    backend: str, procs: int, nthreads: int, seconds: float, directory: str
) -> dict[str, Any]:
    path = os.path.join(directory, f"fair-{backend}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(SCHEMA)
    conn.close()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                path,
                backend,
                str(p),
                str(nthreads),
                str(seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(procs)
    ]
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line != "ready\n":
            raise RuntimeError(f"{backend} worker failed to start: {line!r}")
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + 120)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT count(*) FROM w").fetchone()[0]
    conn.close()
    counts = [r["writes"] for r in reports]
    return {
        "backend": backend,
        "procs": procs,
        "threads": nthreads,
        "seconds": seconds,
        "counts": counts,
        "rows": rows,
        "total": sum(counts),
        "ratio": min(counts) / max(counts) if max(counts) else 0.0,
        "worst_latency": max(r["max"] for r in reports),
        "p99_latency": max(r["p99"] for r in reports),
        "p50_latency": sorted(r["p50"] for r in reports)[len(reports) // 2],
        "errors": sum(r["errors"] for r in reports),
        "error_kinds": sorted({k for r in reports for k in r["error_kinds"]}),
    }


def show(res: dict[str, Any]) -> None:
    print(
        f"{res['backend']:>8}: {res['procs']} procs x {res['threads']} threads, "
        f"{res['seconds']:g}s, single-row writes"
    )
    print(
        f"          per-process writes: {res['counts']}  (total {res['total']}, rows {res['rows']})"
    )
    print(f"          min/max ratio:      {res['ratio']:.3f}  (criterion >= 0.333)")
    print(
        f"          worst latency:      {res['worst_latency'] * 1000:.1f} ms  "
        f"(criterion <= 250 ms; p99 {res['p99_latency'] * 1000:.1f} ms, "
        f"median p50 {res['p50_latency'] * 1000:.2f} ms)"
    )
    print(f"          errors:             {res['errors']} {res['error_kinds'] or ''}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        path, backend, proc, nthreads, seconds = argv[1:6]
        worker(path, backend, int(proc), int(nthreads), float(seconds))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--backend", choices=("litegate", "sqlite3", "both"), default="both")
    ap.add_argument("--dir", default=None, help="where to put the database files")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)
    backends = ("litegate", "sqlite3") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        results = []
        for backend in backends:
            res = run_backend(backend, args.procs, args.threads, args.seconds, directory)
            show(res)
            results.append(res)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
