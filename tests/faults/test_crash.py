"""Crash durability: SIGKILL at random moments during mixed sync/async write load.

A child process (``_crash_child.py``) writes with ``synchronous=FULL`` from sync threads
(single writes, group-committed together, and transactions) and asyncio tasks (the same two
kinds), and prints each id only after its write or transaction returned. The parent kills it
with SIGKILL at a random moment (a random number of acknowledgements, then a random delay),
then checks a copy of the crashed files (database + WAL as the kill left them, opened by plain
sqlite3, which recovers the WAL):

* ``PRAGMA integrity_check`` is ``ok``;
* every id acknowledged in any round so far is there;
* no transaction is half-applied: each has both of its rows, the balances are exactly what
  the recorded moves explain, and their sum is unchanged;
* each writer's rows are a gap-free prefix, at most one write ahead of what it acknowledged.

The next round's child reopens (and recovers) the crashed originals through litegate, and the
last check reads them through litegate too. Rounds alternate one engine for both facades
(``db.as_async()``, so async and thread jobs share group commits) with two engines on the
file (``litegate.connect_async``), and busy writers with pausing ones (kills near idle
checkpoints).

SIGKILL tests the process dying, not the machine: the kernel still writes the page cache out,
so fsync is not exercised. ``synchronous=FULL`` is what makes an acknowledged write survive
a power loss too; with ``synchronous=NORMAL`` a power loss may drop the last commits (never
corrupt the file), while a process crash loses nothing either way.

Short form (``make test``): 5 kills. ``LITEGATE_STRESS=long`` (``make soak``): 100 kills.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from _crash_child import (
    ACCOUNTS,
    ASYNC_SINGLE,
    ASYNC_TX,
    START_BALANCE,
    SYNC_SINGLE,
    SYNC_TX,
    WRITERS,
)
from dbfiles import copy_db

import litegate

pytestmark = pytest.mark.stress

CHILD = Path(__file__).with_name("_crash_child.py")
LONG = os.environ.get("LITEGATE_STRESS", "").strip().lower() == "long"
KILLS = 100 if LONG else 5
MAX_ACKS = 5000 if LONG else 2000
ROUND_TIMEOUT = 60.0
KINDS = {
    "sync single": SYNC_SINGLE,
    "sync transaction": SYNC_TX,
    "async single": ASYNC_SINGLE,
    "async transaction": ASYNC_TX,
}


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


@dataclass
class Seen:
    """What a database holds, for the checks."""

    integrity: list[str]
    acks: set[int]  # ids of single writes
    moves: dict[int, set[int]]  # transaction id -> its parts present
    balances: dict[int, int]
    deltas: dict[int, int]  # account -> sum of its recorded moves

    @property
    def ids(self) -> set[int]:
        return self.acks | set(self.moves)


def _seen(conn: sqlite3.Connection) -> Seen:
    moves: dict[int, set[int]] = defaultdict(set)
    deltas: dict[int, int] = defaultdict(int)
    for tx, part, account, delta in conn.execute("SELECT tx, part, account, delta FROM moves"):
        moves[tx].add(part)
        deltas[account] += delta
    return Seen(
        integrity=[r[0] for r in conn.execute("PRAGMA integrity_check")],
        acks={r[0] for r in conn.execute("SELECT id FROM acks")},
        moves=dict(moves),
        balances=dict(conn.execute("SELECT id, balance FROM accounts").fetchall()),
        deltas=dict(deltas),
    )


def _check(seen: Seen, acked: dict[int, set[int]], ctx: str) -> None:
    """``acked``: round -> ids acknowledged in it (every round so far)."""
    assert seen.integrity == ["ok"], f"integrity_check: {seen.integrity[:5]} ({ctx})"
    every = set().union(*acked.values())
    missing = every - seen.ids
    assert not missing, f"{len(missing)} acknowledged ids lost, e.g. {sorted(missing)[:10]} ({ctx})"
    half = {tx: parts for tx, parts in seen.moves.items() if parts != {1, 2}}
    assert not half, f"half-applied transactions: {list(half.items())[:10]} ({ctx})"
    assert len(seen.balances) == ACCOUNTS, ctx
    assert sum(seen.balances.values()) == ACCOUNTS * START_BALANCE, (seen.balances, ctx)
    for account, balance in seen.balances.items():
        assert balance == START_BALANCE + seen.deltas.get(account, 0), (account, ctx)
    # Each writer works serially: its ids are a prefix 0..k-1, at most one (the write in
    # flight at the kill) past what it acknowledged.
    present, acknowledged = _by_writer(seen.ids), _by_writer(every)
    for rnd in acked:
        for w in range(WRITERS):
            rows = sorted(present.get(rnd * 100 + w, []))
            acks = sorted(acknowledged.get(rnd * 100 + w, []))
            assert rows == list(range(len(rows))), f"writer {w} round {rnd} has gaps ({ctx})"
            assert acks == list(range(len(acks))), f"writer {w} round {rnd} acks ({ctx})"
            assert len(acks) <= len(rows) <= len(acks) + 1, (w, rnd, len(acks), len(rows), ctx)


def _by_writer(ids: set[int]) -> dict[int, list[int]]:
    """``round * 100 + writer`` -> the numbers ``n`` of its ids (see ``_crash_child.ident``)."""
    out: dict[int, list[int]] = defaultdict(list)
    for i in ids:
        out[i // 1_000_000].append(i % 1_000_000)
    return out


def _check_copy(db: Path, scratch: Path, acked: dict[int, set[int]], ctx: str) -> Seen:
    """Copy the crashed database and WAL and check them, read by plain sqlite3 (which
    recovers the WAL). The -shm is left behind: the copy rebuilds it, as after a reboot."""
    copy = scratch / db.name
    copy_db(db, copy)
    Path(f"{copy}-shm").unlink(missing_ok=True)
    conn = sqlite3.connect(copy)
    try:
        seen = _seen(conn)
    finally:
        conn.close()
    _check(seen, acked, ctx)
    return seen


def _target(rng: random.Random, rnd: int) -> int:
    """How many acknowledgements before the kill: some right after start-up (during the
    recovery of the previous crash and the schema set-up), most under full load."""
    kind = rnd % 5
    if kind == 0:
        return rng.randint(1, 5)
    if kind == 1:
        return rng.randint(6, 100)
    return rng.randint(300, MAX_ACKS)


def _kill_round(db: Path, rnd: int, target: int, delay: float, err_path: Path) -> list[int]:
    """Run a child until ``target`` acknowledgements (+ ``delay`` s), SIGKILL it; returns the
    ids it acknowledged."""
    engines = "two" if (rnd // 2) % 2 else "shared"
    pause = str(rnd % 2)
    ctx = f"round={rnd} target={target} engines={engines} pause={pause}"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(rnd), engines, pause],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    reader = _Reader(proc)
    try:
        reached = reader.wait_for(target + 1, ROUND_TIMEOUT)  # +1: the "ready" line
        if reached:
            time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.thread.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
    stderr = err_path.read_text()
    assert reached, (
        f"child produced {len(reader.lines)} lines in {ROUND_TIMEOUT}s ({ctx}):\n{stderr}"
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, stderr)
    assert "Traceback" not in stderr, f"{ctx}:\n{stderr}"
    lines = reader.lines
    assert lines and lines[0] == "ready", f"child did not start: {lines[:3]!r} ({ctx})"
    ids = [int(x) for x in lines[1:]]
    assert len(ids) == len(set(ids)), f"an id was acknowledged twice ({ctx})"
    return ids


def test_acknowledged_writes_and_whole_transactions_survive_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("LITEGATE_STRESS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    db = tmp_path / "durable.db"
    scratch = tmp_path / "check"
    scratch.mkdir()
    acked: dict[int, set[int]] = {}
    report: list[str] = []
    for rnd in range(KILLS):
        target = _target(rng, rnd)
        ids = _kill_round(db, rnd, target, rng.uniform(0.0, 0.02), tmp_path / f"child{rnd}.err")
        acked[rnd] = set(ids)
        ctx = f"seed={seed} round={rnd} target={target}"
        seen = _check_copy(db, scratch, acked, ctx)
        report.append(
            f"round {rnd}: target={target} acknowledged={len(ids)} "
            f"rows={len(seen.acks)} transactions={len(seen.moves)}"
        )

    # Every kind of writer was acknowledged (the load was mixed), counted over the rounds.
    everything = set().union(*acked.values())
    by_kind = {
        kind: sum(1 for i in everything if (i // 1_000_000) % 100 in ws)
        for kind, ws in KINDS.items()
    }
    assert all(by_kind.values()), by_kind
    # The crashed originals, recovered and read by litegate itself.
    with litegate.connect(db, readers=1) as final:
        _check(final.run_read(_seen), acked, f"seed={seed} final, through litegate")
    total = sum(len(ids) for ids in acked.values())
    print(
        f"crash durability seed={seed}: {KILLS} kills, {total} acknowledged ids checked {by_kind}\n"
        + "\n".join(report)
    )
