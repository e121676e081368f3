"""Several processes writing one file at once: nothing lost, nothing failed, nobody starved.

Short form: load 3 s, fairness 4 s. ``LITEGATE_STRESS=long``: 30 s and 20 s.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.stress

WORKER = Path(__file__).with_name("_mp_worker.py")
LONG = os.environ.get("LITEGATE_STRESS", "").strip().lower() == "long"
LOAD_SECONDS = 30.0 if LONG else 3.0
FAIR_SECONDS = 20.0 if LONG else 4.0

SCHEMA = """
CREATE TABLE w(
    proc INTEGER NOT NULL, thread INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT,
    PRIMARY KEY (proc, thread, seq)
);
"""


def _prepare(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
    finally:
        conn.close()


def run_workers(
    db: Path, procs: int, threads: int, seconds: float, mode: str
) -> list[dict[str, Any]]:
    """Start the workers, release them together, return their JSON reports (by proc)."""
    _prepare(db)
    children = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(db), str(p), str(threads), str(seconds), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(procs)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == "ready\n", (
                f"worker did not start: {line!r} {child.stderr and child.stderr.read()}"
            )
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = []
        deadline = time.monotonic() + seconds + 60
        for child in children:
            out, err = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert child.returncode == 0, f"worker exited {child.returncode}:\n{err}"
            assert "Traceback" not in err, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()


class MachineStalls:
    """Measures, beside the workers, what no scheduling of the write lock can hide: the longest
    fsync of the disk the database is on (a COMMIT at FULL holds the lock through one) and the
    longest a thread here woke late from a 2 ms sleep (a lock holder can be descheduled as long).
    A writer that waits behind such a stall waits for the machine, not for unfairness."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "fsync-probe"
        self._stop = threading.Event()
        self.fsync_max = 0.0  # (written by the probe thread only; read after join)
        self.wake_late_max = 0.0
        self._thread = threading.Thread(target=self._probe, name="stall-probe", daemon=True)

    def __enter__(self) -> MachineStalls:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _probe(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            block = b"p" * 4096
            while not self._stop.is_set():
                t0 = time.perf_counter()
                os.pwrite(fd, block, 0)
                os.fsync(fd)
                t1 = time.perf_counter()
                time.sleep(0.002)
                t2 = time.perf_counter()
                self.fsync_max = max(self.fsync_max, t1 - t0)
                self.wake_late_max = max(self.wake_late_max, t2 - t1 - 0.002)
        finally:
            os.close(fd)

    @property
    def worst(self) -> float:
        return max(self.fsync_max, self.wake_late_max)

    def __str__(self) -> str:
        return (
            f"machine, same run: longest fsync {self.fsync_max * 1000:.1f}ms, "
            f"longest late wake-up {self.wake_late_max * 1000:.1f}ms"
        )


def _summary(reports: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"proc {r['proc']}: writes={r['writes']} rows={sum(r['acked'])} "
        f"max={r['max_latency'] * 1000:.1f}ms p99={r['p99_latency'] * 1000:.1f}ms "
        f"p50={r['p50_latency'] * 1000:.2f}ms busy_retries={r['busy_retries']} "
        f"busy_wait_max={r['busy_wait_max_ms']}ms mean_batch={r['mean_batch']}"
        for r in reports
    )


def test_four_processes_four_threads_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "mp.db"
    procs, threads = 4, 4
    reports = run_workers(db, procs, threads, LOAD_SECONDS, "load")
    print(_summary(reports))
    errors = [e for r in reports for e in r["errors"]]
    assert not errors, "\n".join(errors)
    stale = [s for r in reports for s in r["stale"]]
    assert not stale, f"{sum(r['stale_count'] for r in reports)} stale reads, e.g. {stale[:5]}"

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        total = conn.execute("SELECT count(*) FROM w").fetchone()[0]
        per = {
            (p, t): (n, lo, hi)
            for p, t, n, lo, hi in conn.execute(
                "SELECT proc, thread, count(*), min(seq), max(seq) FROM w GROUP BY proc, thread"
            )
        }
    finally:
        conn.close()
    acked_total = sum(sum(r["acked"]) for r in reports)
    assert total == acked_total, f"{total} rows in the file, {acked_total} writes acknowledged"
    for r in reports:
        p = r["proc"]
        for t, n in enumerate(r["acked"]):
            assert n > 0, f"process {p} thread {t} never got a write through"
            # (proc, thread, seq) is the primary key: count + min + max pin down 0..n-1.
            assert per.get((p, t)) == (n, 0, n - 1), (p, t, per.get((p, t)), n)
    assert len(per) == procs * threads


def test_fairness_and_latency_across_processes(tmp_path: Path) -> None:
    """The acceptance criteria: with 4 processes x 2 threads of single-row writes, the slowest
    process gets at least 1/3 of the fastest's writes and no write waits more than 0.25 s
    (beyond the longest fsync or late wake-up the machine itself had in the same run)."""
    db = tmp_path / "fair.db"
    with MachineStalls(tmp_path) as stalls:
        reports = run_workers(db, 4, 2, FAIR_SECONDS, "fair")
    summary = f"{_summary(reports)}\n{stalls}"
    print(summary)
    errors = [e for r in reports for e in r["errors"]]
    assert not errors, "\n".join(errors)
    counts = [r["writes"] for r in reports]
    conn = sqlite3.connect(db)
    try:
        total = conn.execute("SELECT count(*) FROM w").fetchone()[0]
    finally:
        conn.close()
    assert total == sum(counts)
    ratio = min(counts) / max(counts)
    worst = max(r["max_latency"] for r in reports)
    assert ratio >= 1 / 3, f"unfair: min/max writes = {ratio:.3f} {counts}\n{summary}"
    # 250 ms beyond the longest stall of the machine itself in the same run (a few ms on a
    # quiet one; a CI run once saw every process wait ~290 ms behind one holder's COMMIT).
    limit = 0.25 + stalls.worst
    assert worst <= limit, (
        f"a write waited {worst * 1000:.0f} ms (> {limit * 1000:.0f} ms: 250 ms + the "
        f"machine's longest stall)\n{summary}"
    )
