"""How long a group-committed transaction's acknowledgement waits (issue 11's bound).

For each transaction: the time from the end of its block (its work is done) until its caller
is answered (the shared COMMIT returned). Without grouping that is one COMMIT; in a group it
also covers the transactions run after it, bounded by ``group_wait`` (the group's age) plus
the rest of the one running when the bound passes. The "slow" runs make one transaction in 50
hold the lane for 20 ms inside its block, to show that part of the bound.

Usage: python benchmarks/group_ack.py [--seconds 2] [--synchronous normal,full]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import threading
import time

import litegate

ACCOUNTS = 1000
SLOW_EVERY, SLOW_FOR = 50, 0.020


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else 0.0


def _setup(path: str, sync: str, group_wait: float) -> litegate.Database:
    db = litegate.connect(path, synchronous=sync, group_wait=group_wait)
    db.execute("CREATE TABLE IF NOT EXISTS a(id INTEGER PRIMARY KEY, b INT NOT NULL)")
    db.executemany("INSERT OR IGNORE INTO a VALUES (?, 1000)", [(i,) for i in range(ACCOUNTS)])
    return db


async def _async_run(db: litegate.Database, seconds: float, slow: bool) -> list[float]:
    adb = db.as_async()
    waits: list[float] = []
    stop = time.monotonic() + seconds

    async def worker(w: int) -> None:
        rng = random.Random(w)
        n = 0
        while time.monotonic() < stop:
            x, y = rng.sample(range(ACCOUNTS), 2)
            tx = adb.transaction()
            await tx.__aenter__()
            await tx.execute("UPDATE a SET b = b - 1 WHERE id = ?", (x,))
            await tx.execute("UPDATE a SET b = b + 1 WHERE id = ?", (y,))
            n += 1
            if slow and n % SLOW_EVERY == w % SLOW_EVERY:
                await asyncio.sleep(SLOW_FOR)  # a transaction that holds the lane, awaiting
            t0 = time.perf_counter()
            await tx.__aexit__(None, None, None)
            waits.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(w) for w in range(64)))
    return waits


def _thread_run(db: litegate.Database, seconds: float, slow: bool) -> list[float]:
    waits: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(w: int) -> None:
        rng = random.Random(w)
        n = 0
        mine: list[float] = []
        while time.monotonic() < stop:
            x, y = rng.sample(range(ACCOUNTS), 2)
            tx = db.transaction()
            tx.__enter__()
            tx.execute("UPDATE a SET b = b - 1 WHERE id = ?", (x,))
            tx.execute("UPDATE a SET b = b + 1 WHERE id = ?", (y,))
            n += 1
            if slow and n % SLOW_EVERY == w % SLOW_EVERY:
                time.sleep(SLOW_FOR)
            t0 = time.perf_counter()
            tx.__exit__(None, None, None)
            mine.append(time.perf_counter() - t0)
        with lock:
            waits.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return waits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--synchronous", default="normal,full")
    args = ap.parse_args()
    print(
        f"{'sync':6} {'callers':10} {'group_wait':>10} {'slow':>5} {'txn/s':>8} "
        f"{'mean group':>10} {'ack p50 ms':>10} {'p99':>8} {'max':>8}"
    )
    for sync in args.synchronous.split(","):
        for kind in ("64 tasks", "8 threads"):
            for group_wait in (0.0, 0.005):
                for slow in (False, True):
                    with tempfile.TemporaryDirectory() as d:
                        db = _setup(os.path.join(d, "g.db"), sync.upper(), group_wait)
                        before = db.stats()
                        t0 = time.perf_counter()
                        if kind == "64 tasks":
                            waits = asyncio.run(_async_run(db, args.seconds, slow))
                        else:
                            waits = _thread_run(db, args.seconds, slow)
                        took = time.perf_counter() - t0
                        st = db.stats()
                        total = db.query_value("SELECT sum(b) FROM a")
                        db.close()
                    assert total == ACCOUNTS * 1000, total
                    commits = max(1, st.batches - before.batches)
                    print(
                        f"{sync:6} {kind:10} {group_wait * 1000:>8g}ms {str(slow):>5} "
                        f"{len(waits) / took:>8,.0f} {len(waits) / commits:>10.1f} "
                        f"{statistics.median(waits) * 1000:>10.3f} {_pct(waits, 0.99):>8.3f} "
                        f"{max(waits) * 1000:>8.3f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
