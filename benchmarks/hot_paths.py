"""Instructions per operation on litegate's hot paths, counted with valgrind's callgrind.

Wall-clock figures swing by 2x on a shared 2-core machine; instruction counts do not (the same
binary, inputs and environment give the same count -- once the clocks litegate steers by are
lifted: see the child). Each case runs in a fresh process at
N=1000 and N=3000 operations; the difference over 2000 is the cost of one operation, start-up
excluded. Compare trees by pointing ``--src`` at several checkouts' ``src`` directories::

    python benchmarks/hot_paths.py                         # this tree
    python benchmarks/hot_paths.py --src old/src --src src # an A/B, interleaved per case

Cases (one thread or one task, ``synchronous=OFF`` so fsync is not counted; a write is a
one-row UPDATE; a transaction reads a row then updates it):
``read``, ``read-pt`` (``readers="per-thread"``), ``write``, ``tx``, and their async forms
``aread``, ``awrite``, ``atx``, and ``atx64`` (the transaction from 64 tasks at once: queued
for the lane, handed it in turn, group-committed; its count varies ~1 % with the thread
schedule); and the floor: ``plain-read`` and ``plain-write`` do the same on one plain sqlite3
connection (``BEGIN IMMEDIATE``, the UPDATE, ``COMMIT``).

The hand-inlined copies on the hot paths name this benchmark in a comment beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CASES = (
    "read",
    "read-pt",
    "write",
    "tx",
    "aread",
    "awrite",
    "atx",
    "atx64",
    "plain-read",
    "plain-write",
)

_CHILD = r"""
import asyncio, atexit, os, shutil, sqlite3, sys, tempfile
import litegate
from litegate._engine import _costs, _inline

# Under valgrind everything runs ~50x slower, so the clock-based budgets that keep slow work off
# the loop (1 ms) would fire at random and send statements to the writer thread: the counts
# would swing with the machine's speed. Lifted, every run takes the path a full-speed run takes.
_inline.INLINE_BUDGET = _inline._HARD_BUDGET = _costs.SLOW_SECONDS = 1e9

case, n = sys.argv[1], int(sys.argv[2])
scratch = tempfile.mkdtemp()
atexit.register(shutil.rmtree, scratch, True)  # (the case runs in a process of its own)
path = os.path.join(scratch, "h.db")
db = litegate.connect(  # (group_wait: the group's age bound, a clock, lifted likewise)
    path, readers="per-thread" if case == "read-pt" else 4, synchronous="OFF", group_wait=60.0
)
db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
db.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(1000)])
READ, UPDATE = "SELECT v FROM t WHERE id = ?", "UPDATE t SET v = ? WHERE id = ?"


def plain() -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    for i in range(n):
        key = (i % 1000 + 1,)
        if case == "plain-read":
            conn.execute(READ, key).fetchone()
        else:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE t SET v = v + 1 WHERE id = ?", key)
            conn.execute("COMMIT")
    conn.close()


def sync() -> None:
    for i in range(n):
        key = (i % 1000 + 1,)
        if case in ("read", "read-pt"):
            db.query_one(READ, key)
        elif case == "write":
            db.execute("UPDATE t SET v = v + 1 WHERE id = ?", key)
        else:
            with db.transaction() as tx:
                tx.execute(UPDATE, (tx.query_value(READ, key) + 1, key[0]))


async def many() -> None:
    adb = db.as_async()

    async def worker(w: int) -> None:
        for i in range(w, n, 64):
            key = (i % 1000 + 1,)
            async with adb.transaction() as tx:
                await tx.execute(UPDATE, (await tx.query_value(READ, key) + 1, key[0]))

    await asyncio.gather(*(worker(w) for w in range(64)))


async def tasks() -> None:
    adb = db.as_async()
    for i in range(n):
        key = (i % 1000 + 1,)
        if case == "aread":
            await adb.query_one(READ, key)
        elif case == "awrite":
            await adb.execute("UPDATE t SET v = v + 1 WHERE id = ?", key)
        else:
            async with adb.transaction() as tx:
                await tx.execute(UPDATE, (await tx.query_value(READ, key) + 1, key[0]))


if case.startswith("plain"):
    plain()
elif case == "atx64":
    asyncio.run(many())
elif case.startswith("a"):
    asyncio.run(tasks())
else:
    sync()
db.close()
"""


def count(src: str, case: str, n: int) -> int:
    env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _CHILD,
            case,
            str(n),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def per_op(src: str, case: str) -> int:
    return (count(src, case, 3000) - count(src, case, 1000)) // 2000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", help="a src/ directory (repeatable)")
    parser.add_argument("--case", action="append", choices=CASES, help="(repeatable)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    srcs = args.src or [str(Path(__file__).resolve().parents[1] / "src")]
    print("case      " + "".join(f"{Path(s).resolve().parent.name[:14]:>16}" for s in srcs))
    for case in args.case or CASES:
        figures = [per_op(src, case) for src in srcs]
        print(f"{case:<10}" + "".join(f"{f:>16,}" for f in figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
