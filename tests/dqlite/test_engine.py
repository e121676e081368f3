"""litegate's own API on a real 3-node dqlite cluster (``dqlite://`` URLs): the same
``Database``/``AsyncDatabase`` calls as on a file, group commit over Raft, statements that would
crash a node refused, and failover -- the leader SIGKILLed under a steady write load from
threads and tasks: writes resume, every acknowledged write is there once, nothing is applied
twice; a follower killed; the whole cluster restarted under the same ``Database``."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

import litegate
from litegate._dqlite_cluster import Cluster

# The election after a leader's death takes ~5 s (dqlite-demo's timeouts); the engine's writes
# wait for the new leader within their timeout, so the tests give them room for it.
FAILOVER_TIMEOUT = 30.0
RESUME_BOUND = 20.0  # seconds from the kill to the first write acknowledged again (measured: below)


def url(cluster: Cluster, name: str) -> str:
    return f"dqlite://{','.join(cluster.seeds)}/{name}"


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  [dqlite engine] {line}")


def fresh_name() -> str:
    return "t" + uuid.uuid4().hex[:12]


def test_the_database_api_on_a_cluster(cluster: Cluster) -> None:
    with litegate.connect(url(cluster, fresh_name()), readers=2) as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        r = db.execute("INSERT INTO t(v) VALUES (?)", ("a",))
        assert (r.rowcount, r.lastrowid) == (1, 1)
        db.executemany("INSERT INTO t(v) VALUES (?)", [("b",), ("c",)])
        row = db.query_one("SELECT id, v FROM t WHERE v = ?", ("b",))
        assert row is not None and (row["id"], row["v"]) == (
            2,
            "b",
        )  # (rows by name, as sqlite3.Row)
        assert [tuple(x) for x in db.iterate("SELECT v FROM t ORDER BY id")] == [
            ("a",),
            ("b",),
            ("c",),
        ]
        with db.transaction() as tx:
            tx.execute("UPDATE t SET v = 'A' WHERE id = 1")
            assert tx.query_value("SELECT v FROM t WHERE id = 1") == "A"
            with pytest.raises(KeyError), tx.savepoint():
                tx.execute("DELETE FROM t")
                raise KeyError
        with pytest.raises(ZeroDivisionError), db.transaction() as tx:
            tx.execute("DELETE FROM t")
            raise ZeroDivisionError
        assert db.query_value("SELECT group_concat(v, '') FROM t") == "Abc"
        with db.snapshot() as snap:
            assert snap.query_value("SELECT count(*) FROM t") == 3
        assert db.run_write(lambda conn: conn.execute("DELETE FROM t WHERE id = 3").rowcount) == 1
        with pytest.raises(litegate.Misuse, match="time_limit"):
            db.query("SELECT 1", time_limit=1.0)
        stats = db.stats()
        assert stats.readers_mode == "dqlite" and stats.jobs_ok >= 4


def test_sqlite_errors_are_the_standard_classes(cluster: Cluster) -> None:
    import sqlite3

    with litegate.connect(url(cluster, fresh_name()), readers=1) as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            db.query("SELECT * FROM nope")


def test_statements_that_crash_a_node_are_refused_and_the_nodes_live(cluster: Cluster) -> None:
    pids = sorted(cluster.pids)
    with litegate.connect(url(cluster, fresh_name()), readers=1) as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        for sql in (
            "INSERT INTO t(v) VALUES (1) RETURNING id",
            "PRAGMA journal_mode=DELETE",
            "ATTACH DATABASE 'x.db' AS x",
        ):
            with pytest.raises(litegate.Refused):
                db.execute(sql)
        with pytest.raises(litegate.Refused), db.transaction() as tx:
            tx.execute("UPDATE t SET v = 1 RETURNING id")
        db.execute("INSERT INTO t(v) VALUES (1)")
        assert db.query_value("SELECT count(*) FROM t") == 1
    time.sleep(0.3)
    assert all(n.alive for n in cluster.running) and sorted(cluster.pids) == pids


def test_migrations_on_a_cluster(cluster: Cluster) -> None:
    with litegate.connect(url(cluster, fresh_name()), readers=1) as db:
        steps = ["CREATE TABLE a(x)", "CREATE TABLE b(y); INSERT INTO b VALUES (1)"]
        assert db.migrate(steps) == 2
        assert db.query_value("SELECT y FROM b") == 1
        assert db.migrate(steps) == 2  # (applied once)


def test_threads_transfers_keep_the_sum(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with litegate.connect(url(cluster, fresh_name()), readers=2) as db:
        db.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER)")
        db.executemany("INSERT INTO acct(bal) VALUES (?)", [(100,)] * 20)
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            try:
                for i in range(15):
                    a, b = (seed * 7 + i) % 20 + 1, (seed * 3 + i * 5 + 1) % 20 + 1
                    if a == b:
                        continue
                    with db.transaction() as tx:
                        x = tx.query_value("SELECT bal FROM acct WHERE id = ?", (a,))
                        tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (x - 1, a))
                        y = tx.query_value("SELECT bal FROM acct WHERE id = ?", (b,))
                        tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (y + 1, b))
            except BaseException as exc:  # (reported below)
                errors.append(exc)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert db.query_value("SELECT sum(bal) FROM acct") == 2000
        report(capsys, f"8 threads x 15 transfers: {time.perf_counter() - t0:.2f} s, 0 errors")


def test_two_engines_share_one_database_as_two_app_servers_would(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two engines on one database (each app server has its own: its own writer session, so
    the leader serializes their transactions): transfers and inserts from both at once, no
    error, the sum kept, every acknowledged insert there once under the rowid it was given."""
    name = fresh_name()
    with litegate.connect(url(cluster, name)) as a, litegate.connect(url(cluster, name)) as b:
        a.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER)")
        a.execute("CREATE TABLE log(who TEXT, n INTEGER)")
        a.executemany("INSERT INTO acct(bal) VALUES (?)", [(100,)] * 10)
        errors: list[BaseException] = []
        acked: list[tuple[int | None, str, int]] = []

        def worker(db: litegate.Database, who: str) -> None:
            try:
                for i in range(60):
                    if i % 3 == 0:
                        x, y = i % 10 + 1, (i + 3) % 10 + 1
                        with db.transaction() as tx:
                            bal = tx.query_value("SELECT bal FROM acct WHERE id = ?", (x,))
                            tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (bal - 1, x))
                            tx.execute("UPDATE acct SET bal = bal + 1 WHERE id = ?", (y,))
                    else:
                        done = db.execute("INSERT INTO log(who, n) VALUES (?, ?)", (who, i))
                        acked.append((done.lastrowid, who, i))
            except BaseException as exc:  # (reported below)
                errors.append(exc)

        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=worker, args=(db, f"{tag}{k}"))
            for k in range(3)
            for db, tag in ((a, "a"), (b, "b"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert a.query_value("SELECT sum(bal) FROM acct") == 1000
        # (each with the rowid its caller was told: many came from multi-row INSERTs)
        assert sorted(map(tuple, b.query("SELECT rowid, who, n FROM log"))) == sorted(acked)
        report(capsys, f"two engines x 3 threads x 60 writes: {time.perf_counter() - t0:.2f} s")


async def test_tasks_write_in_groups_and_keep_invariants(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    async with litegate.connect_async(url(cluster, fresh_name()), readers=2) as adb:
        await adb.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER)")
        await adb.execute("CREATE TABLE item(id INTEGER PRIMARY KEY, task INTEGER, n INTEGER)")
        await adb.executemany("INSERT INTO acct(bal) VALUES (?)", [(100,)] * 64)
        t0 = time.perf_counter()

        async def writer(task: int) -> list[int]:
            return [
                (await adb.execute("INSERT INTO item(task, n) VALUES (?, ?)", (task, n))).lastrowid
                or 0
                for n in range(10)
            ]

        rowids = await asyncio.gather(*(writer(t) for t in range(64)))
        writes_s = time.perf_counter() - t0
        flat = [r for ids in rowids for r in ids]
        assert len(set(flat)) == 640
        got = {
            (r["task"], r["n"]): r["id"] for r in await adb.query("SELECT id, task, n FROM item")
        }
        assert got == {(t, n): rowids[t][n] for t in range(64) for n in range(10)}
        stats = await adb.stats()
        assert stats.max_batch_size > 1

        async def transfer(i: int) -> None:
            a, b = i % 64 + 1, (i * 7 + 3) % 64 + 1
            if a != b:
                async with adb.transaction() as tx:
                    x = await tx.query_value("SELECT bal FROM acct WHERE id = ?", (a,))
                    await tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (x - 1, a))
                    y = await tx.query_value("SELECT bal FROM acct WHERE id = ?", (b,))
                    await tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (y + 1, b))

        await asyncio.gather(*(transfer(i) for i in range(128)))
        assert await adb.query_value("SELECT sum(bal) FROM acct") == 6400
        report(
            capsys,
            f"64 tasks x 10 writes: {640 / writes_s:.0f} writes/s, "
            f"mean group {stats.mean_batch_size}",
        )


class Load:
    """Writes from threads and asyncio tasks, each with a token of its own, recording which
    were acknowledged, which failed, which ended unknown, and when."""

    def __init__(self, db: litegate.Database) -> None:
        self.db = db
        self.acked: list[tuple[str, float]] = []  # (token, when acknowledged)
        self.unknown: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def one(self) -> None:
        token = uuid.uuid4().hex
        t0 = time.monotonic()
        try:
            self.db.execute("INSERT INTO w(token) VALUES (?)", (token,), timeout=FAILOVER_TIMEOUT)
        except litegate.OutcomeUnknown:
            with self._lock:
                self.unknown.append(token)
            return
        except Exception as exc:  # (counted: the test says which)
            with self._lock:
                self.failed.append((token, f"{type(exc).__name__}: {exc}"))
            return
        now = time.monotonic()
        with self._lock:
            self.acked.append((token, now))
            self.latencies.append((t0, now - t0))

    def thread(self) -> None:
        while not self.stop.is_set():
            self.one()
            time.sleep(0.005)

    async def task(self, adb: litegate.AsyncDatabase) -> None:
        while not self.stop.is_set():
            token = uuid.uuid4().hex
            t0 = time.monotonic()
            try:
                await adb.execute(
                    "INSERT INTO w(token) VALUES (?)", (token,), timeout=FAILOVER_TIMEOUT
                )
            except litegate.OutcomeUnknown:
                self.unknown.append(token)
                continue
            except Exception as exc:  # (counted)
                self.failed.append((token, f"{type(exc).__name__}: {exc}"))
                continue
            now = time.monotonic()
            with self._lock:
                self.acked.append((token, now))
                self.latencies.append((t0, now - t0))
            await asyncio.sleep(0.005)

    def check(self, db: litegate.Database) -> dict[str, int]:
        """Every acknowledged write is there once; nothing is there twice; what is there
        beyond the acknowledged ones ended unknown."""
        rows = db.query("SELECT token, count(*) AS n FROM w GROUP BY token")
        present = {r["token"]: r["n"] for r in rows}
        acked = {t for t, _ in self.acked}
        assert [t for t in acked if present.get(t) != 1] == []
        assert [t for t, n in present.items() if n != 1] == []  # (no write applied twice)
        assert set(present) - acked <= set(self.unknown)
        return {"acked": len(acked), "unknown": len(self.unknown), "present": len(present)}


def run_load(db: litegate.Database, action: Any, settle: float) -> tuple[Load, float]:
    """A steady load (4 threads and 16 tasks on a loop thread) for ``settle`` seconds, then
    ``action()``, then until writes have been acknowledged again for ``settle`` seconds."""
    load = Load(db)
    threads = [threading.Thread(target=load.thread) for _ in range(4)]

    def loop() -> None:
        async def main() -> None:
            adb = db.as_async()
            await asyncio.gather(*(load.task(adb) for _ in range(16)))

        asyncio.run(main())

    threads.append(threading.Thread(target=loop))
    for t in threads:
        t.start()
    try:
        time.sleep(settle)
        t_action = time.monotonic()
        action()
        deadline = t_action + RESUME_BOUND + settle
        while time.monotonic() < deadline:
            after = [when for _, when in load.acked if when > t_action + 0.05]
            if after and time.monotonic() - min(after) > settle:
                break
            time.sleep(0.05)
    finally:
        load.stop.set()
        for t in threads:
            t.join(FAILOVER_TIMEOUT + 10)
    return load, t_action


def resumed_after(acks: list[float], killed_at: float) -> float | None:
    """Seconds from the kill to the end of the outage: the longest pause between two
    acknowledgements from the kill on (writes in flight at the kill may still be answered
    by the old leader just after it)."""
    around = [w for w in acks if w >= killed_at - 0.5]
    gaps = [(b - a, b) for a, b in zip(around, around[1:], strict=False) if b > killed_at]
    return max(gaps)[1] - killed_at if gaps else None


def _p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))] if values else 0.0


def test_leader_killed_under_load(
    fresh_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    db = litegate.connect(url(fresh_cluster, "fail"), readers=2, timeout=FAILOVER_TIMEOUT)
    try:
        db.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, token TEXT)")
        leader = fresh_cluster.leader()
        load, killed_at = run_load(db, lambda: fresh_cluster.kill(leader), settle=1.0)
        resume = resumed_after(sorted(when for _, when in load.acked), killed_at)
        assert resume is not None, f"no write acknowledged after the kill: {load.failed[:3]}"
        assert resume < RESUME_BOUND
        counts = load.check(db)
        assert load.failed == []  # (within their timeout every write waited for the new leader)
        during = [s for t0, s in load.latencies if killed_at - 1 <= t0 <= killed_at + resume]
        report(
            capsys,
            f"leader killed: writes resumed after {resume:.2f} s; {counts}; "
            f"p99 latency over the failover {_p99(during) * 1000:.0f} ms, "
            f"max {max(during, default=0) * 1000:.0f} ms; stats {db.stats().jobs_failed} failed",
        )
        fresh_cluster.restart(leader)  # (the killed node rejoins and catches up)
        fresh_cluster.wait_voters(3)
        assert db.query_value("SELECT count(*) FROM w") == counts["present"]
    finally:
        db.close()


def test_follower_killed_under_load(
    fresh_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    db = litegate.connect(url(fresh_cluster, "fol"), readers=2, timeout=FAILOVER_TIMEOUT)
    try:
        db.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, token TEXT)")
        follower = fresh_cluster.followers()[0]
        load, killed_at = run_load(db, lambda: fresh_cluster.kill(follower), settle=1.0)
        counts = load.check(db)
        assert load.failed == [] and load.unknown == []
        worst = max((s for t0, s in load.latencies if t0 >= killed_at - 1), default=0.0)
        assert worst < 2.0  # (no interruption beyond a moment: the leader keeps its quorum)
        report(capsys, f"follower killed: {counts}; worst latency after {worst * 1000:.0f} ms")
    finally:
        db.close()


def test_whole_cluster_restart_under_one_database(fresh_cluster: Cluster) -> None:
    db = litegate.connect(url(fresh_cluster, "all"), readers=2, timeout=FAILOVER_TIMEOUT)
    try:
        db.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, token TEXT)")
        db.executemany("INSERT INTO w(token) VALUES (?)", [(str(i),) for i in range(100)])
        db.execute("DELETE FROM w WHERE id % 10 = 0")
        expected = [tuple(r) for r in db.query("SELECT id, token FROM w ORDER BY id")]
        assert len(expected) == 90
        fresh_cluster.stop()
        fresh_cluster.start()  # (on the same data directories)
        # (the engine reconnected; every row as it was)
        assert [tuple(r) for r in db.query("SELECT id, token FROM w ORDER BY id")] == expected
        db.execute("INSERT INTO w(token) VALUES ('after')")
        assert db.query_value("SELECT count(*) FROM w") == 91
    finally:
        db.close()
