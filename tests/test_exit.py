"""A program that never closes its database exits promptly (rc 0) and loses no acknowledged write:
the engine drains at interpreter exit."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

EXIT_TIMEOUT = 10.0

PRELUDE = """
import sys, threading, time
import litegate

path = sys.argv[1]
out = threading.Lock()

def ack(i):
    with out:
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()

db = litegate.connect(path, readers=READERS)
db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY)")
"""

# Non-daemon threads each write a fixed number of rows; the main thread then simply ends.
FINISHED_THREADS = """
def work(k):
    for n in range(PER_THREAD):
        i = k * 100000 + n
        db.execute("INSERT INTO t(id) VALUES (?)", (i,))
        ack(i)

threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
for th in threads:
    th.start()
for th in threads:
    th.join()
"""

# Non-daemon threads still writing when the main thread ends: the interpreter waits for them,
# then the engine drains at exit.
RUNNING_THREADS = """
def work(k):
    end = time.monotonic() + 0.5
    n = 0
    while time.monotonic() < end:
        i = k * 100000 + n
        db.execute("INSERT INTO t(id) VALUES (?)", (i,))
        ack(i)
        n += 1

for k in range(THREADS):
    threading.Thread(target=work, args=(k,)).start()
"""

# Daemon threads writing (and reading) flat out when the interpreter shuts down: the exit
# closes the engine under them. A write refused with Closed was not acknowledged.
DAEMON_THREADS = """
def work(k):
    n = 0
    try:
        while True:
            i = k * 100000 + n
            db.execute("INSERT INTO t(id) VALUES (?)", (i,))
            ack(i)
            n += 1
            if n % 7 == 0:
                db.query_value("SELECT count(*) FROM t")
    except litegate.Closed:
        pass

for k in range(THREADS):
    threading.Thread(target=work, args=(k,), daemon=True).start()
time.sleep(0.3)
"""

# The Database object is dropped without close (its __del__ starts the close).
DROPPED = """
for k in range(THREADS):
    for n in range(PER_THREAD):
        i = k * 100000 + n
        db.execute("INSERT INTO t(id) VALUES (?)", (i,))
        ack(i)
del db
import gc
gc.collect()
"""

SCENARIOS = {
    "finished-threads": FINISHED_THREADS,
    "running-threads": RUNNING_THREADS,
    "daemon-threads": DAEMON_THREADS,
    "dropped-database": DROPPED,
}


def _run(
    path: Path, body: str, readers: object, threads: int = 4, per_thread: int = 50
) -> tuple[subprocess.CompletedProcess[str], float]:
    script = textwrap.dedent(PRELUDE).replace("READERS", repr(readers)).replace(
        "PER_THREAD", str(per_thread)
    ) + textwrap.dedent(body).replace("THREADS", str(threads)).replace(
        "PER_THREAD", str(per_thread)
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    return proc, time.monotonic() - t0


def _rows(path: Path) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {r[0] for r in conn.execute("SELECT id FROM t")}
    finally:
        conn.close()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("readers", [2, "per-thread", 0], ids=lambda r: f"readers={r}")
def test_unclosed_database_drains_at_exit(tmp_path: Path, scenario: str, readers: object) -> None:
    path = tmp_path / "exit.db"
    proc, elapsed = _run(path, SCENARIOS[scenario], readers)
    assert proc.returncode == 0, f"rc={proc.returncode} after {elapsed:.1f}s\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    acked = [int(x) for x in lines]
    assert len(acked) == len(set(acked))
    assert acked, "no write was acknowledged"
    present = _rows(path)
    missing = set(acked) - present
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
    if scenario in ("finished-threads", "dropped-database"):
        expected = {k * 100000 + n for k in range(4) for n in range(50)}
        assert set(acked) == expected
        assert present == expected
    else:
        # A row is in the file only if its write committed; at most one unacknowledged
        # (in-flight) write per thread at exit.
        assert len(present - set(acked)) <= 4
    if scenario != "daemon-threads":  # (a daemon thread may still hold a reader snapshot)
        # The WAL was checkpointed and truncated by the close at exit.
        wal = Path(str(path) + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0, "the exit close did not checkpoint"


def test_exit_is_prompt_with_an_idle_unclosed_database(tmp_path: Path) -> None:
    """Nothing to drain: the (daemon) writer thread must not hold the interpreter up."""
    proc, elapsed = _run(tmp_path / "idle.db", "time.sleep(0.1)\n", 2)
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 5.0, f"exit took {elapsed:.1f}s"
    assert _rows(tmp_path / "idle.db") == set()
