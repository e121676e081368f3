"""An aiosqlite-style app on aiosqlite and on ``litegate.aio``: the same code, one run.

The app's four parts ("users", "orders", "audit", "reports") each open their own connection to
one file at startup, as apps do, and set it up there (``PRAGMA journal_mode=WAL``, ``PRAGMA
synchronous=...``). Then 64 asyncio tasks -- task ``i`` on part ``i % 4``'s connection --
loop over a mix: point reads (70%), one-row inserts committed at once (20%) and
read-modify-write transfers between two accounts (10%: ``BEGIN IMMEDIATE``, ``SELECT``,
``UPDATE``, ``SELECT``, ``UPDATE``, ``commit()``; ``rollback()`` on an error). The app code is
the same for both cases; it imports its module as ``aiosqlite``:

- ``aiosqlite``: ``import aiosqlite`` (0.22), ``timeout=5`` (its busy timeout);
- ``litegate.aio``: ``import litegate.aio as aiosqlite``. The one line that differs is the
  connect call's ``litegate={"synchronous": ...}``: the shared engine's setting is chosen when
  it opens (the app's ``PRAGMA synchronous`` is accepted when it asks for that value).

aiosqlite's default ``isolation_level`` ("") opens an implicit transaction before an insert,
and a connection's transaction is every task's on it: another task's statements run inside a
transfer, its ``commit()`` commits the transfer half-done, its ``rollback()`` undoes inserts
already acknowledged, its ``BEGIN`` fails inside the open one; and while a connection has a
read open (a transaction that has read, or another task's cursor not yet closed) a write on
it that meets another connection's lock fails with ``database is locked`` at once: SQLite
does not call the busy handler there (``timeout`` does not help). That is what apps sharing a
connection between tasks do; the benchmark counts it rather than hiding it: errors by kind
(``database is locked`` among them) and, afterwards, read on a connection of its own, the
invariants -- the balances keep their sum, every acknowledged insert is there with its own
rowid. Reads use aiosqlite's documented idiom, ``async with db.execute(...) as cursor`` then
``fetchone()`` (three calls into aiosqlite's thread; ``execute_fetchall`` would be one).

A third case, ``ceiling``, measures what bounds every design that runs the app's statements on
the event loop's thread, as litegate.aio does: the same app with the standard module called
straight on the loop behind aiosqlite-style coroutines that give way only between
transactions, taking turns on the loop as litegate.aio's reads do (so nothing is interleaved
or locked and the loop's lag stays within the target; at synchronous=NORMAL in every round, since a COMMIT that fsyncs
there would stall the loop). Its ops/s over aiosqlite's is the most any such design can reach.

Each case in a fresh process on a fresh file, the cases interleaved round by round, at
synchronous NORMAL and FULL. Reports ops/s (completed operations), p50/p99 per operation,
errors, invariants, event-loop lag p99, CPU per operation (and how busy the event loop's
thread was: 100% means the loop is the bottleneck), and the ratio litegate.aio/aiosqlite per
round. Target (issue 13): >= 5x aiosqlite, zero errors, invariants kept, loop lag p99 <= 2 ms.
``--begin deferred`` makes the transfers begin with a plain ``BEGIN``; the environment
variable ``LITEGATE_APP_MIX=reads,inserts`` (default ``0.7,0.2``) changes the mix.

    python benchmarks/aio_app.py [--seconds 3] [--rounds 2] [--tasks 64]
                                 [--synchronous normal,full] [--begin immediate] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from time import perf_counter
from typing import Any

try:
    import litegate  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from litegate._engine import wait_turn

CASES = ("aiosqlite", "litegate.aio", "ceiling")
PARTS = ("users", "orders", "audit", "reports")
ACCOUNTS = 1000
ITEMS = 10_000
LAG_TARGET_MS = 2.0
RATIO_TARGET = 5.0


class _Result:
    """``ceiling``'s answer to ``execute``: awaitable or an async context manager, as
    aiosqlite's ``Result`` (the cost an aiosqlite-style API puts on every statement)."""

    __slots__ = ("_coro", "_cur")

    def __init__(self, coro: Any) -> None:
        self._coro = coro

    def __await__(self) -> Any:
        return self._coro.__await__()

    async def __aenter__(self) -> Any:
        self._cur = await self._coro
        return self._cur

    async def __aexit__(self, *exc: object) -> None:
        await self._cur.close()


class _Cursor:
    __slots__ = ("_cur",)

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid

    async def fetchone(self) -> Any:
        return self._cur.fetchone()

    async def close(self) -> None:
        self._cur.close()


# The ceiling takes turns on the loop as litegate.aio's reads do (its _turns module: one
# task's slice per loop iteration, 0.1-0.5 ms, then it parks behind the others) -- without
# that, 64 tasks that each give way every slice keep every timer waiting for all 64 slices
# (a plain sleep(0) here: the loop's lag p99 was 100-130 ms).
_slice = 0.0
_given_way = 0.0


class _OnTheLoop:
    """``ceiling``: the app's calls run straight on the event loop's thread with the standard
    module, nothing in between but aiosqlite-style coroutines that give way to the loop only
    between transactions, taking turns as litegate.aio's reads do (what keeps the loop's lag
    within the target) -- so a transfer is never interleaved and nothing is ever locked. Not
    a design (a COMMIT that fsyncs would stall the loop, so it runs at synchronous=NORMAL
    whatever the round's setting): the most operations per second one loop's thread can do
    with this app's statements while staying responsive, the ceiling of every design that
    runs them there, litegate.aio's included."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False)

    def execute(self, sql: str, params: Any = ()) -> _Result:
        return _Result(self._execute(sql, params))

    async def _execute(self, sql: str, params: Any) -> _Cursor:
        global _given_way, _slice
        if sql.startswith("PRAGMA synchronous"):
            sql = "PRAGMA synchronous=NORMAL"
        if not self._conn.in_transaction and perf_counter() - _given_way > _slice:
            _slice = await wait_turn()  # (between transactions only: none is interleaved)
            _given_way = perf_counter()
        return _Cursor(self._conn.execute(sql, params))

    async def executescript(self, script: str) -> None:
        self._conn.executescript(script)

    async def executemany(self, sql: str, rows: Any) -> None:
        self._conn.executemany(sql, rows)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()


class _Ceiling:
    """The ``ceiling`` case's module: ``connect`` as aiosqlite's (awaited here)."""

    @staticmethod
    async def connect(path: str, **_: Any) -> _OnTheLoop:
        return _OnTheLoop(path)


class App:
    """The app: its parts' connections and what its tasks do with them. Nothing here knows
    which module ``aiosqlite`` is but the connect options."""

    def __init__(self, aiosqlite: Any, path: str, synchronous: str, begin: str) -> None:
        self.aiosqlite = aiosqlite
        self.path = path
        self.synchronous = synchronous
        self.begin = begin
        self.conns: list[Any] = []

    async def start(self, engine_options: dict[str, Any]) -> None:
        for _part in PARTS:  # (each part opens its own, at startup)
            db = await self.aiosqlite.connect(self.path, timeout=5, **engine_options)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={self.synchronous}")
            self.conns.append(db)
        users = self.conns[0]
        await users.executescript(
            """
            CREATE TABLE IF NOT EXISTS account(id INTEGER PRIMARY KEY, balance INTEGER);
            CREATE TABLE IF NOT EXISTS item(id INTEGER PRIMARY KEY, owner INTEGER, note TEXT);
            """
        )
        await users.executemany("INSERT INTO account(balance) VALUES (?)", [(100,)] * ACCOUNTS)
        await users.executemany(
            "INSERT INTO item(owner, note) VALUES (?, ?)",
            [(i % 64, "x" * 40) for i in range(ITEMS)],
        )
        await users.commit()

    async def get(self, db: Any, item_id: int) -> Any:
        async with db.execute("SELECT owner, note FROM item WHERE id = ?", (item_id,)) as cur:
            return await cur.fetchone()

    async def add(self, db: Any, owner: int) -> int:
        try:
            async with db.execute(
                "INSERT INTO item(owner, note) VALUES (?, 'new')", (owner,)
            ) as cur:
                rowid: int = cur.lastrowid
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        return rowid

    async def transfer(self, db: Any, a: int, b: int) -> None:
        try:
            await db.execute(self.begin)
            async with db.execute("SELECT balance FROM account WHERE id = ?", (a,)) as cur:
                (x,) = await cur.fetchone()
            await db.execute("UPDATE account SET balance = ? WHERE id = ?", (x - 1, a))
            async with db.execute("SELECT balance FROM account WHERE id = ?", (b,)) as cur:
                (y,) = await cur.fetchone()
            await db.execute("UPDATE account SET balance = ? WHERE id = ?", (y + 1, b))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    async def stop(self) -> None:
        for db in self.conns:
            await db.close()


def check(path: str, added: list[tuple[int, int]]) -> dict[str, Any]:
    """The invariants, read on a connection of its own once the app has closed its."""
    con = sqlite3.connect(path)
    try:
        total = con.execute("SELECT sum(balance) FROM account").fetchone()[0]
        owners = dict(con.execute(f"SELECT id, owner FROM item WHERE id > {ITEMS}").fetchall())
    finally:
        con.close()
    wrong = sum(1 for owner, rowid in added if owners.get(rowid) != owner)
    return {"sum_off_by": total - 100 * ACCOUNTS, "inserts_wrong_or_missing": wrong}


def _switches() -> int:
    """Context switches of this process's threads so far (Linux; 0 elsewhere)."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches:" in line:
                        total += int(line.split()[-1])
    except OSError:
        return 0
    return total


def _kind(exc: BaseException) -> str:
    msg = str(exc)
    if "locked" in msg:
        return "database is locked"
    return f"{type(exc).__name__}: {msg[:60]}"


def _pct(values: list[float], q: float) -> float | None:
    return 1000 * values[int(q * (len(values) - 1))] if values else None


def run_case(case: str, synchronous: str, seconds: float, tasks: int, begin: str) -> dict[str, Any]:
    scratch = tempfile.mkdtemp(prefix="lg-aio-app-")
    atexit.register(shutil.rmtree, scratch, True)  # (the case runs in a process of its own)
    path = os.path.join(scratch, "app.db")
    # ("import aiosqlite" / "import litegate.aio as aiosqlite" / the ceiling's stand-in)
    module = _Ceiling() if case == "ceiling" else importlib.import_module(case)
    engine_options = {"litegate": {"synchronous": synchronous}} if case == "litegate.aio" else {}
    app = App(module, path, synchronous, begin)
    latencies: dict[str, list[float]] = {"get": [], "add": [], "transfer": []}
    errors: dict[str, int] = {}
    samples: dict[str, str] = {}  # (a kind's first message, in full)
    failed_s = 0.0
    added: list[tuple[int, int]] = []
    lags: list[float] = []
    reads, adds = (float(x) for x in os.environ.get("LITEGATE_APP_MIX", "0.7,0.2").split(","))

    async def task(i: int, deadline: float) -> None:
        nonlocal failed_s
        db = app.conns[i % len(app.conns)]
        rnd = random.Random(i)
        while time.perf_counter() < deadline:
            r = rnd.random()
            t0 = time.perf_counter()
            try:
                if r < reads:
                    op = "get"
                    await app.get(db, rnd.randrange(1, ITEMS + 1))
                elif r < reads + adds:
                    op = "add"
                    rowid = await app.add(db, i)
                    added.append((i, rowid))
                else:
                    op = "transfer"
                    a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
                    await app.transfer(db, a, b)
            except Exception as exc:
                kind = _kind(exc)
                errors[kind] = errors.get(kind, 0) + 1
                samples.setdefault(kind, f"{op}: {type(exc).__name__}: {str(exc)[:300]}")
                failed_s += time.perf_counter() - t0
                continue
            latencies[op].append(time.perf_counter() - t0)

    async def lag_probe(deadline: float) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t0 - 0.005)

    async def main() -> tuple[float, float, int, float]:
        await app.start(engine_options)
        cpu0, switches0, loop0 = time.process_time(), _switches(), time.thread_time()
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(lag_probe(deadline), *(task(i, deadline) for i in range(tasks)))
        elapsed = time.perf_counter() - t0
        cpu, switches = time.process_time() - cpu0, _switches() - switches0
        loop_cpu = time.thread_time() - loop0  # (the event loop's thread alone)
        await app.stop()
        return elapsed, cpu, switches, loop_cpu

    elapsed, cpu, switches, loop_cpu = asyncio.run(main())
    out: dict[str, Any] = {"case": case, "synchronous": synchronous, "begin": begin}
    done = sum(len(v) for v in latencies.values())
    out["ops_per_s"] = done / elapsed
    out["ops"] = done
    out["cpu_us_per_op"] = 1e6 * cpu / max(done, 1)
    out["switches_per_op"] = switches / max(done, 1)
    out["loop_thread_busy"] = loop_cpu / elapsed  # (1.0: the loop's thread is the bottleneck)
    for op, lat in latencies.items():
        lat.sort()
        out[f"{op}_n"] = len(lat)
        out[f"{op}_p50_ms"] = _pct(lat, 0.5)
        out[f"{op}_p99_ms"] = _pct(lat, 0.99)
    lags.sort()
    out["loop_lag_p99_ms"] = _pct(lags, 0.99)
    out["errors"] = errors
    out["error_samples"] = samples
    out["task_time_in_failed_ops"] = failed_s / (tasks * elapsed)
    out.update(check(path, added))
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _line(sync: str, r: dict[str, Any]) -> str:
    errors = sum(r["errors"].values())
    kinds = "; ".join(f"{k} x{n}" for k, n in sorted(r["errors"].items(), key=lambda e: -e[1]))
    return (
        f"{sync:6} {r['case']:12} {r['ops_per_s']:8.0f} ops/s"
        f"  get p50/p99 {_ms(r['get_p50_ms'])}/{_ms(r['get_p99_ms'])} ms"
        f"  add {_ms(r['add_p50_ms'])}/{_ms(r['add_p99_ms'])}"
        f"  transfer {_ms(r['transfer_p50_ms'])}/{_ms(r['transfer_p99_ms'])}"
        f"  lag p99 {_ms(r['loop_lag_p99_ms'])} ms"
        f"  cpu {r['cpu_us_per_op']:.0f} us/op (loop thread {100 * r['loop_thread_busy']:.0f}%"
        f" busy)  switches {r['switches_per_op']:.1f}/op"
        f"  sum off {r['sum_off_by']}  bad inserts {r['inserts_wrong_or_missing']}"
        f"  errors {errors}"
        + (
            f" ({kinds}; {100 * r['task_time_in_failed_ops']:.0f}% of task time in failed ops)"
            if errors
            else ""
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--synchronous", default="normal,full")
    parser.add_argument(
        "--begin",
        default="immediate",
        choices=("immediate", "deferred"),
        help="how the transfers begin: BEGIN IMMEDIATE (default, the SQLite idiom for a "
        "read-modify-write) or a plain BEGIN",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # (a child: one case, JSON out)
    args = parser.parse_args(argv)
    begin = "BEGIN IMMEDIATE" if args.begin == "immediate" else "BEGIN"
    if args.case:
        out = run_case(args.case, args.synchronous, args.seconds, args.tasks, begin)
        print(json.dumps(out))
        return 0
    results: list[dict[str, Any]] = []
    syncs = args.synchronous.upper().split(",")
    for sync in syncs:
        for _ in range(args.rounds):
            for case in CASES:  # interleaved, each in a fresh process
                cmd = [sys.executable, __file__, "--case", case, "--synchronous", sync]
                cmd += ["--seconds", str(args.seconds), "--tasks", str(args.tasks)]
                cmd += ["--begin", args.begin]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append(r)
                print(_line(sync, r), flush=True)
                if case == "litegate.aio":  # (its errors in full: each is a bug to look at)
                    for sample in r["error_samples"].values():
                        print(f"       {case} error: {sample}", flush=True)
    print()
    ok = True
    for sync in syncs:
        rounds = [r for r in results if r["synchronous"] == sync]
        med = {
            c: statistics.median(r["ops_per_s"] for r in rounds if r["case"] == c) for c in CASES
        }
        # Each ratio is taken within a round (its cases ran back to back) and the median of
        # the rounds' ratios reported: this machine's speed drifts from round to round.
        per_round = [
            {r["case"]: r for r in rounds[i : i + len(CASES)]}
            for i in range(0, len(rounds), len(CASES))
        ]
        ratios = [o["litegate.aio"]["ops_per_s"] / o["aiosqlite"]["ops_per_s"] for o in per_round]
        ratio = statistics.median(ratios)
        ceiling = statistics.median(
            o["ceiling"]["ops_per_s"] / o["aiosqlite"]["ops_per_s"] for o in per_round
        )
        share = statistics.median(
            o["litegate.aio"]["ops_per_s"] / o["ceiling"]["ops_per_s"] for o in per_round
        )
        lg = [o["litegate.aio"] for o in per_round]
        ai = [o["aiosqlite"] for o in per_round]
        lag = statistics.median(r["loop_lag_p99_ms"] for r in lg)
        lag_worst = max(r["loop_lag_p99_ms"] for r in lg)
        lg_errors = sum(sum(r["errors"].values()) for r in lg)
        lg_locked = sum(r["errors"].get("database is locked", 0) for r in lg)
        ai_errors = sum(sum(r["errors"].values()) for r in ai)
        ai_locked = sum(r["errors"].get("database is locked", 0) for r in ai)
        kept = all(not r["sum_off_by"] and not r["inserts_wrong_or_missing"] for r in lg)
        ai_broken = sum(1 for r in ai if r["sum_off_by"] or r["inserts_wrong_or_missing"])
        verdict = (
            "PASS"
            if ratio >= RATIO_TARGET and not lg_errors and kept and lag <= LAG_TARGET_MS
            else "FAIL"
        )
        ok = ok and verdict == "PASS"
        print(
            f"{verdict} {sync}: litegate.aio {med['litegate.aio']:.0f} ops/s, aiosqlite "
            f"{med['aiosqlite']:.0f}: {ratio:.2f}x (rounds: "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + f"; target >= {RATIO_TARGET:g}x); litegate.aio errors {lg_errors} (database is "
            f"locked {lg_locked}), invariants kept: {'yes' if kept else 'NO'}, loop lag p99 "
            f"{lag:.2f} ms (worst round {lag_worst:.2f}; target <= {LAG_TARGET_MS:g}); "
            f"aiosqlite errors {ai_errors} (database is locked {ai_locked}), invariants broken "
            f"in {ai_broken} of {len(ai)} runs. Ceiling (the app's statements straight on the "
            f"loop, {med['ceiling']:.0f} ops/s): {ceiling:.2f}x aiosqlite; litegate.aio makes "
            f"{100 * share:.0f}% of it. Ratios: the median of the rounds' own; ops/s and lag: "
            "medians"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
