"""How far litegate's async transaction path is from the leanest code with the same structure.

``litegate bench``'s ``ceiling: bare group commit`` runs each transfer with no ``await`` inside,
so no task ever holds the lane across an await: no savepoint, no hand-off, no guard. This model
keeps the structure litegate's async transactions need and nothing else:

* the lane held by one task across its awaits, handed to the next waiting task in FIFO order
  (one future per waiter);
* ``BEGIN IMMEDIATE`` for a group's first transaction, a ``SAVEPOINT`` for each one joining it,
  released at its end; a failing one undoes only its savepoint;
* each statement awaited (a coroutine per call) under a progress handler counting its VM steps
  (litegate's guard against a slow statement on the loop);
* a transaction that hands the lane on waits for the group's COMMIT on a future of its own; the
  last one COMMITs (on the loop: ``synchronous=NORMAL``, where a COMMIT does not fsync) and
  answers them all.

What it leaves out -- lane timeouts, cancellation safety, other threads and processes sharing
the lane, interrupt repair, stats -- costs a bounded amount per transaction, not a multiple.
64 tasks run transfers between 1,000 accounts (the bench's workload; the sum is checked)::

    python benchmarks/lean_async_tx.py                 # wall clock, 3 interleaved rounds
    python benchmarks/lean_async_tx.py --instructions  # callgrind: instructions per transfer
    python benchmarks/lean_async_tx.py --bytecodes 30  # Python bytecodes per transfer, and
                                                       # the 30 functions that run the most

Bytecodes are counted with ``sys.settrace`` (``f_trace_opcodes``), every thread, over 2,000
transfers run after 2,000 untraced ones on the same database (every SQL text known): a
deterministic count that says *where* the instructions go, function by function, which
callgrind (C functions only) cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import Any

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
try:
    import litegate  # noqa: F401  (the model uses litegate's step counter too)
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, SRC)

from litegate._config import DEFAULT_GROUP_WAIT  # noqa: E402
from litegate._engine._bridge import give_way as _give_way  # noqa: E402
from litegate._engine._costs import Steps as _Steps  # noqa: E402

BALANCE = "SELECT balance FROM accounts WHERE id = ?"
DEBIT = "UPDATE accounts SET balance = balance - ?, moves = moves + 1 WHERE id = ?"
CREDIT = "UPDATE accounts SET balance = balance + ?, moves = moves + 1 WHERE id = ?"
ACCOUNTS, START = 1000, 1000


class LeanLane:
    """The write lane of one loop (every field: the loop thread's)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.held = False
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.group: list[asyncio.Future[None]] | None = None  # members awaiting the COMMIT
        self.commits = 0

    def hand_on(self) -> None:
        if self.waiting:
            self.waiting.popleft().set_result(None)
        else:
            self.held = False


class LeanTransaction:
    def __init__(self, lane: LeanLane) -> None:
        self.lane = lane
        self.joined = False

    async def __aenter__(self) -> LeanTransaction:
        lane = self.lane
        if lane.held:
            fut = asyncio.get_running_loop().create_future()
            lane.waiting.append(fut)
            await fut  # (granted: the lane stays held)
        lane.held = True
        if lane.group is not None:
            lane.conn.execute("SAVEPOINT lean_tx")
            self.joined = True
        else:
            lane.conn.execute("BEGIN IMMEDIATE")
            lane.group = []
        return self

    def _guarded(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        conn = self.lane.conn
        conn.set_progress_handler(_Steps(), 10_000)
        try:
            return conn.execute(sql, params)
        finally:
            conn.set_progress_handler(None, 0)

    async def query_value(self, sql: str, params: tuple[Any, ...]) -> Any:
        rows = self._guarded(sql, params).fetchall()
        return rows[0][0] if rows else None

    async def execute(self, sql: str, params: tuple[Any, ...]) -> int:
        return self._guarded(sql, params).rowcount

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        lane, conn = self.lane, self.lane.conn
        if exc_type is None:
            if self.joined:
                conn.execute("RELEASE lean_tx")
        elif self.joined:  # (only its own part is undone; the group goes on)
            conn.execute("ROLLBACK TO lean_tx")
            conn.execute("RELEASE lean_tx")
        else:  # (the group's first: the model rolls the whole group back)
            conn.execute("ROLLBACK")
            lost, lane.group = lane.group or [], None
            for member in lost:
                member.set_exception(RuntimeError("the group was rolled back"))
            lane.hand_on()
            return
        if not lane.waiting:
            await _give_way()  # (others of the loop ask for the lane now: they join)
        group = lane.group
        assert group is not None
        if lane.waiting and len(group) < 64:
            if exc_type is not None:  # (nothing of it to commit: it only hands the lane on)
                lane.hand_on()
                return
            fut = asyncio.get_running_loop().create_future()
            group.append(fut)  # (a member: answered after the group's COMMIT)
            lane.hand_on()
            await fut
            return
        conn.execute("COMMIT")
        lane.commits += 1
        lane.group = None
        for member in group:
            member.set_result(None)
        lane.hand_on()


def _prepare(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER, moves INTEGER)")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, ?, 0)", [(i, START) for i in range(1, ACCOUNTS + 1)]
    )
    conn.close()


async def _run(
    mode: str,
    tasks: int,
    seconds: float,
    count: int,
    group_wait: float = DEFAULT_GROUP_WAIT,
    directory: str | None = None,
    traced: Callable[[Callable[[], Any]], Any] | None = None,
) -> tuple[int, float]:
    """Transfers done and seconds taken (``count`` > 0: exactly that many, untimed).
    ``traced``: ``count`` transfers run first, then ``traced(run)`` runs ``count`` more (it
    returns ``run()``'s awaitable: it traces them)."""
    scratch = tempfile.mkdtemp(dir=directory)
    atexit.register(shutil.rmtree, scratch, True)  # (the case runs in a process of its own)
    path = os.path.join(scratch, "lean.db")
    _prepare(path)
    if mode == "litegate":
        import litegate

        db = await litegate.connect_async(
            path, readers=4, synchronous="NORMAL", group_wait=group_wait
        )
        transaction: Callable[[], Any] = db.transaction
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        lane = LeanLane(conn)

        def transaction() -> LeanTransaction:
            return LeanTransaction(lane)

    done = [0]
    end = time.perf_counter() + seconds

    def more() -> bool:
        return done[0] < count if count else time.perf_counter() < end

    async def worker(w: int) -> None:
        rnd = random.Random(w)
        while more():
            a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
            async with transaction() as tx:
                balance = await tx.query_value(BALANCE, (a,))
                await tx.query_value(BALANCE, (b,))
                if balance >= 5:
                    await tx.execute(DEBIT, (5, a))
                    await tx.execute(CREDIT, (5, b))
            done[0] += 1

    def run() -> Any:
        return asyncio.gather(*(worker(w) for w in range(tasks)))

    if traced is not None:
        await run()
        done[0] = 0
        await traced(run)
    t0 = time.perf_counter()
    if traced is None:
        await run()
    elapsed = time.perf_counter() - t0
    if mode == "litegate":
        total = await db.query_value("SELECT sum(balance) FROM accounts")
        await db.close()
    else:
        total = conn.execute("SELECT sum(balance) FROM accounts").fetchone()[0]
        conn.close()
    if total != ACCOUNTS * START:
        raise SystemExit(f"{mode}: the balances sum to {total}, not {ACCOUNTS * START}")
    return done[0], elapsed


def _child(mode: str, tasks: int, seconds: float, count: int) -> str:
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONHASHSEED": "0"}
    argv = [sys.executable, __file__, "--child", mode, str(tasks), str(seconds), str(count)]
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, timeout=600
    ).stdout


def _lift_clocks() -> None:
    """In a child run under valgrind only (~50x slower; see hot_paths.py): the clock-based
    budgets would fire at random and send statements to the writer thread; lifted, the path is
    a full-speed run's and the count repeats. (Process-wide: never in a process that runs
    anything else.)"""
    from litegate._engine import _costs, _inline

    _inline.INLINE_BUDGET = _inline._HARD_BUDGET = _costs.SLOW_SECONDS = 1e9


def _instructions(mode: str, tasks: int, n: int) -> int:
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONHASHSEED": "0"}
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        mode,
        str(tasks),
        "0",
        str(n),
        "lift",  # (the clocks, and the group's age bound, a clock too: groups as at full speed)
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=900)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def _bytecodes(mode: str, tasks: int, n: int, top: int) -> list[str]:
    """This process (a child: it lifts the clocks): bytecodes per transfer, in total and in
    the ``top`` functions that ran the most."""
    import threading
    from collections import Counter

    _lift_clocks()
    counts: Counter[tuple[str, int, str]] = Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(os.path.basename(code.co_filename), code.co_firstlineno, code.co_name)] += 1
        return tracer

    async def traced(run: Callable[[], Any]) -> None:
        sys.settrace(tracer)
        threading.settrace(tracer)
        try:
            await run()
        finally:
            sys.settrace(None)
            threading.settrace(None)  # type: ignore[arg-type]

    asyncio.run(_run(mode, tasks, 0, n, 60.0, traced=traced))
    lines = [f"{mode}: {sum(counts.values()) / n:,.0f} bytecodes per transfer"]
    for (name, line, func), c in counts.most_common(top):
        lines.append(f"  {c / n:7.1f}  {name}:{line} {func}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--bytecodes-child"]:
        print("\n".join(_bytecodes(args[1], int(args[2]), int(args[3]), int(args[4]))))
        return 0
    if args[:1] == ["--child"]:
        mode, tasks, seconds, count = args[1], int(args[2]), float(args[3]), int(args[4])
        lift = args[5:6] == ["lift"]
        if lift:
            _lift_clocks()
        wait = 60.0 if lift else DEFAULT_GROUP_WAIT
        n, elapsed = asyncio.run(_run(mode, tasks, seconds, count, wait))
        print(f"{n} {elapsed}")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument(
        "--bytecodes", type=int, metavar="TOP", help="count bytecodes; show the TOP functions"
    )
    opts = parser.parse_args(args)
    modes = ("litegate", "lean")
    if opts.bytecodes is not None:  # (each in a fresh process)
        env = {**os.environ, "PYTHONPATH": SRC, "PYTHONHASHSEED": "0"}
        for mode in modes:
            argv = [sys.executable, __file__, "--bytecodes-child", mode, str(opts.tasks)]
            argv += ["2000", str(opts.bytecodes)]
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            print(out.stdout, end="", flush=True)
        return 0
    if opts.instructions:  # (all threads; the difference of 3,000 and 1,000 transfers)
        for mode in modes:
            per = _instructions(mode, opts.tasks, 3000) - _instructions(mode, opts.tasks, 1000)
            print(f"{mode:9} {per // 2000:>9,} instructions per transfer", flush=True)
        return 0
    for r in range(opts.rounds):  # interleaved, each run in a fresh process
        line = []
        for mode in modes:
            done, took = _child(mode, opts.tasks, opts.seconds, 0).split()
            line.append(f"{mode} {int(done) / float(took):>8,.0f} tx/s")
        print(f"round {r + 1}: " + "   ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
