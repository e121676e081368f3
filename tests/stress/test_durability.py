"""Durability under SIGKILL: every write a caller saw acknowledged survives a crash.

A child process (``_durability_child.py``) writes from several threads with
``synchronous=FULL`` and prints each id only after its write returned. The parent kills it with
SIGKILL after a random number of acknowledgements, then checks a copy of the crashed files
(database + WAL, as the kill left them): ``PRAGMA integrity_check`` is ``ok``, every
acknowledged id is there, and each thread's rows form a gap-free prefix at most one write
ahead of its acknowledgements. The next round's child reopens (and recovers) the original
crashed files, so rounds also exercise WAL recovery by litegate itself.

Short form: 6 rounds. ``LITEGATE_STRESS=long``: 30 rounds.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.stress

CHILD = Path(__file__).with_name("_durability_child.py")
THREADS = 4
LONG = os.environ.get("LITEGATE_STRESS", "").strip().lower() == "long"
ROUNDS = 30 if LONG else 10
MAX_ACKS = 5000 if LONG else 2000
ROUND_TIMEOUT = 30.0


class _Reader:
    """Collects complete stdout lines of a child on a thread (so the parent can time out)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.eof = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):  # a line cut by the kill was never fully acknowledged
                break
            with self.cond:
                self.lines.append(raw.decode().strip())
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.lines) < n and not self.eof:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return len(self.lines) >= n


def _round_ids(acks: list[str]) -> list[int]:
    assert acks and acks[0] == "ready", f"child did not start: {acks[:3]!r}"
    return [int(x) for x in acks[1:]]


def _check_copy(db: Path, scratch: Path) -> tuple[set[int], str]:
    """Copy the crashed files and open the copy with plain sqlite3 (hot WAL recovery)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    copy = scratch / db.name
    for suffix in ("", "-wal"):
        src = Path(str(db) + suffix)
        if src.exists():
            shutil.copyfile(src, str(copy) + suffix)
    conn = sqlite3.connect(copy)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        present = {row[0] for row in conn.execute("SELECT id FROM acks")}
    finally:
        conn.close()
    return present, "; ".join(str(r[0]) for r in integrity)


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("LITEGATE_STRESS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    db = tmp_path / "durable.db"
    all_acked: set[int] = set()
    report: list[str] = []
    for rnd in range(ROUNDS):
        kind = rng.random()
        if kind < 0.2:
            target = rng.randint(1, 5)  # kill right after start-up
        elif kind < 0.4:
            target = rng.randint(6, 100)
        else:
            target = rng.randint(100, MAX_ACKS)
        pause = rnd % 2
        err_path = tmp_path / f"child{rnd}.err"
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(db), str(rnd), str(THREADS), str(pause)],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        reader = _Reader(proc)
        try:
            reached = reader.wait_for(target + 1, ROUND_TIMEOUT)  # +1: the "ready" line
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            reader.thread.join(10)
            assert proc.stdout is not None
            proc.stdout.close()
        stderr = err_path.read_text()
        ctx = f"seed={seed} round={rnd} target={target} pause={pause}"
        assert reached, (
            f"child produced {len(reader.lines)} lines in {ROUND_TIMEOUT}s ({ctx}):\n{stderr}"
        )
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, stderr)
        assert "Traceback" not in stderr, f"{ctx}:\n{stderr}"
        acked = _round_ids(reader.lines)
        assert len(acked) == len(set(acked)), f"an id was acknowledged twice ({ctx})"
        all_acked.update(acked)

        present, integrity = _check_copy(db, tmp_path / "check")
        assert integrity == "ok", f"integrity_check: {integrity} ({ctx})"
        missing = all_acked - present
        assert not missing, (
            f"{len(missing)} acknowledged ids lost, e.g. {sorted(missing)[:10]} ({ctx})"
        )

        # Each thread writes serially: its rows are a prefix 0..k-1, at most one write (two
        # rows for the transaction thread) past what it acknowledged.
        for t in range(THREADS):
            base = (rnd * 100 + t) * 1_000_000
            rows = sorted(i - base for i in present if base <= i < base + 1_000_000)
            acks = sorted(i - base for i in acked if base <= i < base + 1_000_000)
            assert rows == list(range(len(rows))), f"thread {t} has gaps: {rows[:20]} ({ctx})"
            assert acks == list(range(len(acks))), f"thread {t} acks not a prefix ({ctx})"
            slack = 2 if t == 0 else 1
            assert len(acks) <= len(rows) <= len(acks) + slack, (t, len(acks), len(rows), ctx)
        report.append(f"round {rnd}: target={target} acked={len(acked)} rows={len(present)}")

    # The original files, recovered by a last litegate-free open.
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        present = {row[0] for row in conn.execute("SELECT id FROM acks")}
    finally:
        conn.close()
    assert not (all_acked - present)
    print(f"durability seed={seed}\n" + "\n".join(report))
