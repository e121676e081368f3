"""The seed's store pattern on ``litegate.sqlite3`` against the standard module's remedies.

One store object is built at startup; 64 asyncio tasks call its methods through
``asyncio.to_thread``: point reads (70%), one-row inserts (20%) and read-modify-write transfers
between two accounts (10%). The same store code runs on:

- ``litegate``: ``import litegate.sqlite3 as sqlite3``, one shared connection, no lock;
- ``lock``: the standard module, one connection (``check_same_thread=False``) behind a
  ``threading.Lock``;
- ``per_thread``: the standard module, a connection per thread (``threading.local``),
  ``timeout=5``, transfers in ``BEGIN IMMEDIATE``;
- ``litegate_api`` (for reference, not a peer): the same store rewritten on litegate's own API
  (``db.query_one``, ``db.execute``, ``db.transaction()``): the engine's cost without the
  drop-in's;
- ``one_writer`` (for reference, not a peer): the standard module in litegate's shape at no
  cost of its own -- one writer connection behind a ``threading.Lock`` for the writes and
  transfers, a read-only connection per thread for the reads: what any engine with one
  writer and a read pool can reach here, the ceiling of litegate's design on this workload.

All in WAL mode, at synchronous NORMAL and FULL; each case in a fresh process on a fresh file,
the cases interleaved. Afterwards: the balances keep their sum, every acknowledged insert is
there with its own rowid. Reports ops/s, p50/p99 per operation, errors, event-loop lag p99.

    python benchmarks/dropin_store.py [--seconds 3] [--rounds 2] [--tasks 64]
                                      [--synchronous normal,full] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

try:
    import litegate  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

CASES = ("litegate", "lock", "per_thread", "litegate_api", "one_writer")
ACCOUNTS = 1000
ITEMS = 10_000


class Store:
    """The store users write: methods over one connection (or one per thread)."""

    def __init__(self, case: str, path: str, synchronous: str) -> None:
        self.db: Any = None
        if case == "litegate_api":
            import litegate

            self.db = litegate.connect(path, synchronous=synchronous, row_factory=None)
            self.db.executescript(
                """
                CREATE TABLE IF NOT EXISTS account(id INTEGER PRIMARY KEY, balance INTEGER);
                CREATE TABLE IF NOT EXISTS item(id INTEGER PRIMARY KEY, owner INTEGER, note TEXT);
                """
            )
            self.db.executemany("INSERT INTO account(balance) VALUES (?)", [(100,)] * ACCOUNTS)
            self.db.executemany(
                "INSERT INTO item(owner, note) VALUES (?, ?)",
                [(i % 64, "x" * 40) for i in range(ITEMS)],
            )
            self.case = case
            return
        if case == "litegate":
            import litegate.sqlite3 as sqlite3

            self._sqlite3: Any = sqlite3
            options: dict[str, Any] = {"synchronous": synchronous}
            if os.environ.get("LITEGATE_READERS"):  # (to explore: readers=N or per-thread)
                r = os.environ["LITEGATE_READERS"]
                options["readers"] = r if r == "per-thread" else int(r)
            self._con = sqlite3.connect(path, isolation_level=None, litegate=options)
        else:
            import sqlite3

            self._sqlite3 = sqlite3
            self._con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._con.execute("PRAGMA journal_mode=WAL")
        self.case = case
        self._path = path
        self._synchronous = synchronous
        self._lock = threading.Lock() if case in ("lock", "one_writer") else None
        self._local = threading.local()
        self._con.execute(f"PRAGMA synchronous={synchronous}")
        self._con.executescript(
            """
            CREATE TABLE IF NOT EXISTS account(id INTEGER PRIMARY KEY, balance INTEGER);
            CREATE TABLE IF NOT EXISTS item(id INTEGER PRIMARY KEY, owner INTEGER, note TEXT);
            """
        )
        con = self._con
        con.execute("BEGIN")
        con.executemany("INSERT INTO account(balance) VALUES (?)", [(100,)] * ACCOUNTS)
        con.executemany(
            "INSERT INTO item(owner, note) VALUES (?, ?)",
            [(i % 64, "x" * 40) for i in range(ITEMS)],
        )
        con.execute("COMMIT")

    def _conn(self) -> Any:
        if self.case != "per_thread":
            return self._con
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._sqlite3.connect(self._path, isolation_level=None, timeout=5)
            con.execute(f"PRAGMA synchronous={self._synchronous}")
            self._local.con = con
        return con

    def _locked(self, fn: Any, *args: Any) -> Any:
        if self._lock is None:
            return fn(self._conn(), *args)
        with self._lock:
            return fn(self._con, *args)

    def get(self, item_id: int) -> Any:
        if self.db is not None:
            return self.db.query_one("SELECT owner, note FROM item WHERE id = ?", (item_id,))
        if self.case == "one_writer":  # (a reader of this thread's own, no lock)
            con = getattr(self._local, "con", None)
            if con is None:
                con = self._sqlite3.connect(self._path, isolation_level=None)
                con.execute("PRAGMA query_only=ON")
                self._local.con = con
            return con.execute("SELECT owner, note FROM item WHERE id = ?", (item_id,)).fetchone()
        return self._locked(
            lambda c: c.execute("SELECT owner, note FROM item WHERE id = ?", (item_id,)).fetchone()
        )

    def add(self, owner: int) -> int:
        if self.db is not None:
            rowid: int = self.db.execute(
                "INSERT INTO item(owner, note) VALUES (?, 'new')", (owner,)
            ).lastrowid
            return rowid

        def insert(c: Any) -> int:
            cur = c.execute("INSERT INTO item(owner, note) VALUES (?, 'new')", (owner,))
            rowid: int = cur.lastrowid
            return rowid

        result: int = self._locked(insert)
        return result

    def transfer(self, a: int, b: int) -> None:
        if self.db is not None:
            with self.db.transaction() as tx:
                x = tx.query_value("SELECT balance FROM account WHERE id = ?", (a,))
                tx.execute("UPDATE account SET balance = ? WHERE id = ?", (x - 1, a))
                y = tx.query_value("SELECT balance FROM account WHERE id = ?", (b,))
                tx.execute("UPDATE account SET balance = ? WHERE id = ?", (y + 1, b))
            return

        def move(c: Any) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                (x,) = c.execute("SELECT balance FROM account WHERE id = ?", (a,)).fetchone()
                c.execute("UPDATE account SET balance = ? WHERE id = ?", (x - 1, a))
                (y,) = c.execute("SELECT balance FROM account WHERE id = ?", (b,)).fetchone()
                c.execute("UPDATE account SET balance = ? WHERE id = ?", (y + 1, b))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

        self._locked(move)

    def check(self, added: list[tuple[int, int]]) -> dict[str, Any]:
        if self.db is not None:
            total = self.db.query_value("SELECT sum(balance) FROM account")
            owners = dict(self.db.query(f"SELECT id, owner FROM item WHERE id > {ITEMS}"))
        else:
            con = self._con
            total = con.execute("SELECT sum(balance) FROM account").fetchone()[0]
            owners = dict(con.execute(f"SELECT id, owner FROM item WHERE id > {ITEMS}").fetchall())
        wrong = sum(1 for owner, rowid in added if owners.get(rowid) != owner)
        return {"sum_off_by": total - 100 * ACCOUNTS, "inserts_wrong_or_missing": wrong}


def _switches() -> int:
    """Context switches of this process's threads so far (Linux; 0 elsewhere)."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.endswith("ctxt_switches:\t" + line.split("\t")[-1]) and "ctxt" in line:
                        total += int(line.split()[-1])
    except OSError:
        return 0
    return total


def run_case(case: str, synchronous: str, seconds: float, tasks: int) -> dict[str, Any]:
    scratch = tempfile.mkdtemp(prefix="lg-store-")
    atexit.register(shutil.rmtree, scratch, True)  # (the case runs in a process of its own)
    path = os.path.join(scratch, "store.db")
    store = Store(case, path, synchronous)
    latencies: dict[str, list[float]] = {"get": [], "add": [], "transfer": []}
    errors: dict[str, int] = {}
    added: list[tuple[int, int]] = []
    lags: list[float] = []

    reads, adds = (float(x) for x in os.environ.get("LITEGATE_STORE_MIX", "0.7,0.2").split(","))

    async def task(i: int, deadline: float) -> None:
        rnd = random.Random(i)
        while time.perf_counter() < deadline:
            r = rnd.random()
            t0 = time.perf_counter()
            try:
                if r < reads:
                    op = "get"
                    await asyncio.to_thread(store.get, rnd.randrange(1, ITEMS + 1))
                elif r < reads + adds:
                    op = "add"
                    rowid = await asyncio.to_thread(store.add, i)
                    added.append((i, rowid))
                else:
                    op = "transfer"
                    a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
                    await asyncio.to_thread(store.transfer, a, b)
            except Exception as exc:
                kind = "database is locked" if "locked" in str(exc) else type(exc).__name__
                errors[kind] = errors.get(kind, 0) + 1
                continue
            latencies[op].append(time.perf_counter() - t0)

    async def lag_probe(deadline: float) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t0 - 0.005)

    async def main() -> float:
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(lag_probe(deadline), *(task(i, deadline) for i in range(tasks)))
        return time.perf_counter() - t0

    cpu0, switches0 = time.process_time(), _switches()
    elapsed = asyncio.run(main())
    cpu, switches = time.process_time() - cpu0, _switches() - switches0
    out: dict[str, Any] = {"case": case, "synchronous": synchronous}
    done = sum(len(v) for v in latencies.values())
    out["ops_per_s"] = done / elapsed
    out["cpu_us_per_op"] = 1e6 * cpu / max(done, 1)
    out["switches_per_op"] = switches / max(done, 1)
    for op, lat in latencies.items():
        lat.sort()
        out[f"{op}_p50_ms"] = 1000 * statistics.median(lat) if lat else None
        out[f"{op}_p99_ms"] = 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None
    lags.sort()
    out["loop_lag_p99_ms"] = 1000 * lags[int(0.99 * (len(lags) - 1))] if lags else None
    out["errors"] = errors
    out.update(store.check(added))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--synchronous", default="normal,full")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # (a child: one case, JSON out)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.synchronous, args.seconds, args.tasks)))
        return 0
    results: list[dict[str, Any]] = []
    syncs = args.synchronous.upper().split(",")
    for sync in syncs:
        for _ in range(args.rounds):
            for case in CASES:  # interleaved, each in a fresh process
                cmd = [sys.executable, __file__, "--case", case, "--synchronous", sync]
                cmd += ["--seconds", str(args.seconds), "--tasks", str(args.tasks)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append(r)
                print(
                    f"{sync:6} {case:10} {r['ops_per_s']:8.0f} ops/s"
                    f"  get p50/p99 {r['get_p50_ms']:.2f}/{r['get_p99_ms']:.2f} ms"
                    f"  add {r['add_p50_ms']:.2f}/{r['add_p99_ms']:.2f}"
                    f"  transfer {r['transfer_p50_ms']:.2f}/{r['transfer_p99_ms']:.2f}"
                    f"  lag p99 {r['loop_lag_p99_ms']:.2f} ms  errors {r['errors'] or 0}"
                    f"  sum off {r['sum_off_by']}  bad inserts {r['inserts_wrong_or_missing']}",
                    flush=True,
                )
    print()
    ok = True
    for sync in syncs:
        med = {
            c: statistics.median(
                r["ops_per_s"] for r in results if r["case"] == c and r["synchronous"] == sync
            )
            for c in CASES
        }
        # Each ratio is taken within a round (its cases ran back to back) and the median of
        # the rounds' ratios reported: this machine's speed drifts from round to round, and a
        # ratio of medians taken from different rounds mixes the drift in.
        rounds = [r for r in results if r["synchronous"] == sync]
        per_round = [
            {r["case"]: r["ops_per_s"] for r in rounds[i : i + len(CASES)]}
            for i in range(0, len(rounds), len(CASES))
        ]

        ratio, ceiling, design = (
            statistics.median(o[c] / max(o["lock"], o["per_thread"]) for o in per_round)
            for c in ("litegate", "litegate_api", "one_writer")
        )
        of_design = statistics.median(o["litegate"] / o["one_writer"] for o in per_round)
        clean = all(
            not r["errors"] and not r["sum_off_by"] and not r["inserts_wrong_or_missing"]
            for r in results
            if r["case"] == "litegate" and r["synchronous"] == sync
        )
        verdict = "PASS" if ratio >= 1.0 and clean else "FAIL"
        ok = ok and verdict == "PASS"
        print(
            f"{verdict} {sync}: litegate {med['litegate']:.0f} ops/s, lock {med['lock']:.0f}, "
            f"per-thread {med['per_thread']:.0f}: {ratio:.2f}x the best (target >= 1x, "
            f"no errors, invariants kept: {'yes' if clean else 'NO'}); litegate's own API "
            f"{med['litegate_api']:.0f} ops/s, {ceiling:.2f}x; one writer + a reader per "
            f"thread at no cost of its own {med['one_writer']:.0f} ops/s, {design:.2f}x (the "
            f"design's ceiling here; litegate {of_design:.2f}x of it). Ratios: the median of "
            f"the rounds' own; ops/s: medians"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
