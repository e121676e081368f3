"""8 threads, 90% point reads / 10% one-row writes: litegate against the folk remedies.

The workload of litegate issue 11 (point 3): a 100k-row ``kv`` table in WAL mode; each thread
loops over point reads (``SELECT val FROM kv WHERE id = ?``) and, one op in ten, a one-row
write in its own transaction (half ``UPDATE kv SET val = val + 1 WHERE id = ?``, half
``INSERT``). Every case runs in a fresh subprocess on its own copy of one seeded file, and the
cases are interleaved round by round (the machine is shared: compare ratios within a run).

Contenders: ``lg`` (``litegate.connect``, default readers), ``lg-pt`` (``readers="per-thread"``),
``per-thread`` (a sqlite3 connection per thread), ``lock`` (one connection behind a
``threading.Lock``) and ``raw`` (one thread, one connection: the reference ceiling).
``--src DIR`` (repeatable) runs the litegate contenders against other source trees too,
for a before/after in one run::

    python benchmarks/sync_mix.py [--seconds 3] [--rounds 3] [--sync NORMAL --sync FULL]
        [--threads 8] [--case lg --case lock ...] [--src /tmp/before/src --src src]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROWS = 100_000
READ = "SELECT val FROM kv WHERE id = ?"
UPDATE = "UPDATE kv SET val = val + 1 WHERE id = ?"
INSERT = "INSERT INTO kv(val) VALUES (?)"
CASES = ("lg", "lg-pt", "per-thread", "lock", "raw")
WARMUP = 0.5


# ---- the child: one case, one process ------------------------------------------------------
def _plain(path: str, sync: str, *, shared: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=not shared)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    return conn


def _plain_write(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(sql, params)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _ops(case: str, path: str, sync: str) -> tuple[Any, Any, Any]:
    """(read(key), write(sql, params), close()) for ``case``; callable from any thread."""
    if case in ("lg", "lg-pt"):
        import litegate

        opts: dict[str, Any] = {"synchronous": sync}
        if case == "lg-pt":
            opts["readers"] = "per-thread"
        opts.update(json.loads(os.environ.get("SYNC_MIX_LG_OPTS", "{}")))  # (experiments)
        db = litegate.connect(path, **opts)
        query_one, execute = db.query_one, db.execute
        return (lambda key: query_one(READ, (key,))), execute, db.close
    if case == "per-thread":
        local = threading.local()
        conns: list[sqlite3.Connection] = []

        def conn() -> sqlite3.Connection:
            c: sqlite3.Connection | None = getattr(local, "conn", None)
            if c is None:
                c = local.conn = _plain(path, sync, shared=True)
                conns.append(c)
            return c

        def pt_close() -> None:
            for c in conns:
                c.close()

        return (
            lambda key: conn().execute(READ, (key,)).fetchone(),
            lambda sql, params: _plain_write(conn(), sql, params),
            pt_close,
        )
    one = _plain(path, sync, shared=True)
    if case == "raw":
        return (
            (lambda key: one.execute(READ, (key,)).fetchone()),
            (lambda sql, params: _plain_write(one, sql, params)),
            one.close,
        )
    lock = threading.Lock()

    def read(key: int) -> Any:
        with lock:
            return one.execute(READ, (key,)).fetchone()

    def write(sql: str, params: tuple[Any, ...]) -> None:
        with lock:
            _plain_write(one, sql, params)

    return read, write, one.close


def child(
    case: str, path: str, sync: str, threads: int, seconds: float, write_share: float
) -> dict[str, Any]:
    read, write, close = _ops(case, path, sync)
    if case == "raw":
        threads = 1
    measuring = threading.Event()
    stop = threading.Event()
    results: list[tuple[int, int, list[float], list[float]]] = []
    ready = threading.Barrier(threads + 1)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        reads: list[float] = []
        writes: list[float] = []
        nr = nw = 0
        clock = time.perf_counter
        ready.wait()
        while not stop.is_set():
            on = measuring.is_set()
            if rnd.random() >= write_share:
                key = rnd.randrange(1, ROWS + 1)
                t0 = clock()
                read(key)
                if on:
                    reads.append(clock() - t0)
                    nr += 1
            else:
                if rnd.random() < 0.5:
                    sql, params = UPDATE, (rnd.randrange(1, ROWS + 1),)
                else:
                    sql, params = INSERT, (rnd.randrange(1_000_000),)
                t0 = clock()
                write(sql, params)
                if on:
                    writes.append(clock() - t0)
                    nw += 1
        results.append((nr, nw, reads, writes))

    pool = [threading.Thread(target=worker, args=(1000 + i,)) for i in range(threads)]
    for t in pool:
        t.start()
    ready.wait()
    time.sleep(WARMUP)
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    measuring.set()
    t0 = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - t0
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    for t in pool:
        t.join()
    close()
    reads = sorted(x for r in results for x in r[2])
    writes = sorted(x for r in results for x in r[3])

    def pct(xs: list[float], q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3, 3) if xs else 0.0

    n_reads = sum(r[0] for r in results)
    n_writes = sum(r[1] for r in results)
    n = max(1, n_reads + n_writes)
    return {
        "ops": n / elapsed,
        # CPU microseconds and context switches per op: what the cores did for each op
        "cpu_us": round((u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime) * 1e6 / n, 2),
        "sys_us": round((u1.ru_stime - u0.ru_stime) * 1e6 / n, 2),
        "cs": round((u1.ru_nvcsw - u0.ru_nvcsw + u1.ru_nivcsw - u0.ru_nivcsw) / n, 2),
        "read_p50": pct(reads, 0.5),
        "read_p99": pct(reads, 0.99),
        "write_p50": pct(writes, 0.5),
        "write_p99": pct(writes, 0.99),
    }


# ---- the parent: seed once, run every case in a fresh process, interleaved -------------------
def seed(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE kv(id INTEGER PRIMARY KEY, val INTEGER NOT NULL)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO kv(val) VALUES (?)", ((i,) for i in range(ROWS)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def run_case(
    label: str,
    case: str,
    src: str | None,
    seed_path: str,
    sync: str,
    args: argparse.Namespace,
    lg_opts: str = "{}",
) -> dict[str, Any]:
    work = tempfile.mkdtemp(prefix="sync_mix-")
    try:
        path = os.path.join(work, "kv.db")
        shutil.copyfile(seed_path, path)
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = src
        env["SYNC_MIX_LG_OPTS"] = lg_opts
        cmd = [sys.executable, os.path.abspath(__file__), "--child", case, path, sync]
        cmd += [str(args.threads), str(args.seconds), str(args.writes)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{label} failed:\n{out.stderr}")
        result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        case, path, sync, threads, seconds, writes = argv[1:7]
        result = child(case, path, sync, int(threads), float(seconds), float(writes))
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--writes", type=float, default=0.1, help="share of writes (0.1)")
    parser.add_argument("--sync", action="append", choices=("NORMAL", "FULL", "OFF"))
    parser.add_argument("--case", action="append", choices=CASES)
    parser.add_argument("--src", action="append", help="a litegate src dir (repeatable)")
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='one more litegate contender: NAME=JSON options, e.g. lg-mmap=\'{"pragmas": '
        '{"mmap_size": 268435456}}\' (repeatable; runs this tree)',
    )
    args = parser.parse_args(argv)
    cases = args.case or list(CASES)
    srcs: list[str | None] = [os.path.abspath(s) for s in args.src] if args.src else [None]
    contenders: list[tuple[str, str, str | None, str]] = []
    for case in cases:
        if case.startswith("lg"):
            for i, src in enumerate(srcs):
                contenders.append((case if len(srcs) == 1 else f"{case}#{i}", case, src, "{}"))
        else:
            contenders.append((case, case, None, "{}"))
    for variant in args.variant:
        name, _, opts = variant.partition("=")
        contenders.append((name, "lg", None, opts or "{}"))
    seed_dir = tempfile.mkdtemp(prefix="sync_mix-seed-")
    seed_path = os.path.join(seed_dir, "seed.db")
    seed(seed_path)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for r in range(args.rounds):
            for sync in args.sync or ["NORMAL", "FULL"]:
                order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
                for label, case, src, lg_opts in order:
                    res = run_case(label, case, src, seed_path, sync, args, lg_opts)
                    runs.setdefault((sync, label), []).append(res)
                    print(
                        f"round {r + 1} {sync:<6} {label:<12} {res['ops']:>9,.0f} ops/s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(seed_dir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{s}/{label}": v for (s, label), v in runs.items()}, f, indent=1)
    for sync in args.sync or ["NORMAL", "FULL"]:
        print(
            f"\nsynchronous={sync}  ({args.threads} threads, median of {args.rounds} rounds; "
            "ratios: median of per-round ratios)"
        )
        head = f"{'contender':<13}{'ops/s':>9}{'rd p50':>8}{'rd p99':>8}{'wr p50':>8}{'wr p99':>8}"
        head += f"{'cpu us':>8}{'sys us':>8}{'cs/op':>7}"
        print(head + f"{'/per-thr':>9}{'/lock':>7}")
        med = {
            label: statistics.median(x["ops"] for x in runs[(sync, label)])
            for label, *_ in contenders
        }
        for label, *_ in contenders:
            xs = runs[(sync, label)]
            fig = [statistics.median(x[k] for x in xs) for k in ("read_p50", "read_p99")]
            fig += [statistics.median(x[k] for x in xs) for k in ("write_p50", "write_p99")]
            fig += [statistics.median(x[k] for x in xs) for k in ("cpu_us", "sys_us", "cs")]
            ratios = ""
            for ref in ("per-thread", "lock"):
                if ref not in med:
                    ratios += f"{'':>9}"
                    continue
                # the median of per-round ratios: each pair ran minutes apart at most
                pairs = zip(xs, runs[(sync, ref)], strict=True)
                ratio = statistics.median(a["ops"] / b["ops"] for a, b in pairs)
                ratios += f"{ratio:>8.2f}x"
            print(
                f"{label:<13}{med[label]:>9,.0f}"
                + "".join(f"{v:>8.3f}" for v in fig[:4])
                + "".join(f"{v:>8.1f}" for v in fig[4:6])
                + f"{fig[6]:>7.2f}"
                + ratios
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
