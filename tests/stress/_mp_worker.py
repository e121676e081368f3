"""One writer process of test_multiprocess.

Usage: python _mp_worker.py DB_PATH PROC THREADS SECONDS MODE

Prints ``ready`` once connected, waits for a ``go`` line on stdin (so every process starts
together), runs for SECONDS, then prints one JSON line with what it saw. MODE:

``load``
    thread 0/1: ``db.execute`` (1 row); thread 2: ``db.executemany`` (5 rows); thread 3:
    ``db.transaction()`` (3 rows) followed by a read of its own row count, which must equal
    what it had acknowledged (read-your-writes through the read pool). Threads beyond 4 repeat
    the pattern. Rows are (proc, thread, seq) with seq 0, 1, 2, ... per thread.
``fair``
    every thread does single-row ``db.execute`` calls; reports the count and per-write latency.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback

import litegate

INSERT = "INSERT INTO w(proc, thread, seq, payload) VALUES (?, ?, ?, ?)"


def main() -> None:
    path, proc, nthreads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seconds, mode = float(sys.argv[4]), sys.argv[5]
    acked = [0] * nthreads
    writes = [0] * nthreads
    latencies: list[list[float]] = [[] for _ in range(nthreads)]
    errors: list[str] = []
    stale: list[str] = []
    start = threading.Event()
    abort = False

    def load(t: int, end: float) -> None:
        kind = t % 4
        n = 0
        while time.monotonic() < end:
            if kind in (0, 1):
                db.execute(INSERT, (proc, t, n, "x" * 40))
                n += 1
            elif kind == 2:
                db.executemany(INSERT, [(proc, t, n + k, "m" * 40) for k in range(5)])
                n += 5
            else:
                with db.transaction() as tx:
                    for k in range(3):
                        tx.execute(INSERT, (proc, t, n + k, "t" * 40))
                n += 3
                seen = db.query_value(
                    "SELECT count(*) FROM w WHERE proc = ? AND thread = ?", (proc, t)
                )
                if seen != n:
                    stale.append(f"thread {t}: read {seen} rows after {n} acknowledged")
            acked[t] = n
            writes[t] += 1

    def fair(t: int, end: float) -> None:
        n = 0
        lat = latencies[t]
        while True:
            t0 = time.perf_counter()
            if time.monotonic() >= end:
                break
            db.execute(INSERT, (proc, t, n, "f" * 40))
            lat.append(time.perf_counter() - t0)
            n += 1
            acked[t] = n
            writes[t] += 1

    def run(t: int) -> None:
        start.wait()
        if abort:
            return
        end = time.monotonic() + seconds
        try:
            (load if mode == "load" else fair)(t, end)
        except BaseException:
            errors.append(f"thread {t}: {traceback.format_exc()}")

    with litegate.connect(path, synchronous="FULL") as db:
        threads = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
        for th in threads:
            th.start()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        abort = sys.stdin.readline().strip() != "go"
        start.set()
        for th in threads:
            th.join()
        stats = db.stats()
    if abort:
        raise SystemExit("no go")
    all_lat = sorted(x for lat in latencies for x in lat)
    result = {
        "proc": proc,
        "acked": acked,
        "writes": sum(writes),
        "errors": errors,
        "stale": stale[:20],
        "stale_count": len(stale),
        "max_latency": all_lat[-1] if all_lat else 0.0,
        "p99_latency": all_lat[int(len(all_lat) * 0.99)] if all_lat else 0.0,
        "p50_latency": all_lat[len(all_lat) // 2] if all_lat else 0.0,
        "busy_retries": stats.busy_retries,
        "busy_timeouts": stats.busy_timeouts,
        "busy_wait_max_ms": stats.busy_wait_max_ms,
        "mean_batch": stats.mean_batch_size,
        "batches": stats.batches,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
