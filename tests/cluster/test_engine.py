"""The cluster engine's logic on a stand-in driver (tests/cluster/fake_driver.py): group
commit, a failing member replayed out of its group, failover retries, outcomes that are
unknown, timeouts, transactions and snapshots -- on every Python (tests/dqlite/ runs the
engine on a real 3-node cluster, Python 3.13)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import litegate
from litegate import Database
from litegate._cluster import ClusterEngine
from litegate._config import make_options

from .fake_driver import FakeDriver

URL = "dqlite://n1:9001,n2:9002,n3:9003/app"


@pytest.fixture
def fake(tmp_path: Path) -> FakeDriver:
    return FakeDriver(tmp_path)


def open_db(fake: FakeDriver, **options: object) -> Database:
    engine = ClusterEngine(
        make_options(URL, {"readers": 2, **options}),  # type: ignore[typeddict-item]
        sessions=fake.open_session,
        async_sessions=fake.open_async_session,
    )
    return Database(engine)


async def open_async_db(fake: FakeDriver) -> litegate.AsyncDatabase:
    """As ``connect_async`` does: the engine opened on a thread (it connects and starts its
    writer), never on the loop."""
    engine = await asyncio.to_thread(
        ClusterEngine,
        make_options(URL, {"readers": 2}),
        sessions=fake.open_session,
        async_sessions=fake.open_async_session,
    )
    return litegate.AsyncDatabase(engine)


@pytest.fixture
def db(fake: FakeDriver) -> Iterator[Database]:
    d = open_db(fake)
    d.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    yield d
    d.close()


def count(fake: FakeDriver) -> int:
    con = sqlite3.connect(fake.root / "app.db")
    try:
        n: int = con.execute("SELECT count(*) FROM t").fetchone()[0]
        return n
    finally:
        con.close()


def hold_lane(db: Database) -> tuple[threading.Event, threading.Thread]:
    """A transaction that holds the lane until the returned event is set (so that writes
    queue behind it and run as one group)."""
    entered, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with db.transaction():
                entered.set()
                release.wait(10)
        except (litegate.OutcomeUnknown, litegate.RolledBack):
            pass  # (a fault the test injected ended the chain it began: the test checks)

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(10)
    return release, t


def queue_writes(db: Database, values: list[object]) -> tuple[list[object], list[threading.Thread]]:
    out: list[object] = [None] * len(values)

    def write(i: int, v: object) -> None:
        try:
            out[i] = db.execute("INSERT INTO t(v) VALUES (?)", (v,))
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=write, args=(i, v)) for i, v in enumerate(values)]
    for t in threads:
        t.start()
    return out, threads


def wait_queued(db: Database, n: int) -> None:
    deadline = time.monotonic() + 10
    while db.stats().queue_depth < n:
        assert time.monotonic() < deadline, db.stats()
        time.sleep(0.005)


def test_writes_queued_together_commit_as_one_group(db: Database, fake: FakeDriver) -> None:
    release, holder = hold_lane(db)
    out, threads = queue_writes(db, list(range(20)))
    wait_queued(db, 20)
    commits = len(fake.sent)
    release.set()
    holder.join()
    for t in threads:
        t.join()
    sent = fake.sent[commits:]
    assert all(isinstance(r, litegate.Result) and r.rowcount == 1 for r in out), out
    # each caller's lastrowid is its own row's
    results = [r for r in out if isinstance(r, litegate.Result)]
    assert [db.query_value("SELECT v FROM t WHERE id = ?", (r.lastrowid,)) for r in results] == (
        list(range(20))
    )
    assert count(fake) == 20
    # the group: BEGIN, the table's facts, one 20-row INSERT, COMMIT (after the holder's)
    assert sent.count("BEGIN IMMEDIATE") == 1 and sent.count("COMMIT") == 2
    assert sum(s.startswith("INSERT") for s in sent) == 1, sent
    assert len(sent) <= 8, sent
    assert db.stats().max_batch_size == 20


def test_a_failing_write_is_answered_alone_and_its_group_commits(
    db: Database, fake: FakeDriver
) -> None:
    db.execute("INSERT INTO t(v) VALUES ('taken')")
    release, holder = hold_lane(db)
    out, threads = queue_writes(db, [1, 2, "taken", 3, 4])
    wait_queued(db, 5)
    release.set()
    holder.join()
    for t in threads:
        t.join()
    assert isinstance(out[2], sqlite3.IntegrityError)  # (the standard module's class)
    assert all(isinstance(out[i], litegate.Result) for i in (0, 1, 3, 4)), out
    assert count(fake) == 5  # 'taken' once, and the four others once each (replayed once)


def test_a_session_lost_before_commit_is_retried_and_applied_once(
    db: Database, fake: FakeDriver
) -> None:
    release, holder = hold_lane(db)
    out, threads = queue_writes(db, list(range(10)))
    wait_queued(db, 10)
    fake.fail("lost", "INSERT")  # (the session dies in the middle of the group)
    release.set()
    holder.join()
    for t in threads:
        t.join()
    assert all(isinstance(r, litegate.Result) for r in out), out
    assert count(fake) == 10
    assert len(fake.connects) >= 2  # (the writer reopened)


def test_a_commit_cut_off_is_reported_unknown_never_retried(db: Database, fake: FakeDriver) -> None:
    fake.fail("ambiguous", "COMMIT")
    with pytest.raises(litegate.OutcomeUnknown, match="may or may not"):
        db.execute("INSERT INTO t(v) VALUES (1)")
    assert count(fake) == 1  # it did commit; no second copy
    db.execute("INSERT INTO t(v) VALUES (2)")  # (the next write reopens)
    assert count(fake) == 2


def test_a_lost_commit_is_unknown_too(db: Database, fake: FakeDriver) -> None:
    fake.fail("lost", "COMMIT")
    with pytest.raises(litegate.OutcomeUnknown):
        db.execute("INSERT INTO t(v) VALUES (1)")
    assert count(fake) == 0  # (here it did not commit: the caller could not know)


def test_no_leader_within_the_timeout_is_unavailable_and_nothing_applied(
    db: Database, fake: FakeDriver
) -> None:
    fake.down |= {"n1:9001", "n2:9002", "n3:9003"}
    fake.kill_all()
    t0 = time.monotonic()
    with pytest.raises(litegate.Unavailable, match="no leader"):
        db.execute("INSERT INTO t(v) VALUES (1)", timeout=0.5)
    assert time.monotonic() - t0 < 3
    fake.down.clear()
    assert db.query_value("SELECT count(*) FROM t") == 0
    db.execute("INSERT INTO t(v) VALUES (1)")
    assert count(fake) == 1


def test_a_dead_seed_is_skipped(fake: FakeDriver) -> None:
    fake.down.add("n1:9001")
    d = open_db(fake)
    try:
        d.execute("CREATE TABLE t(v)")
        assert fake.connects[0] == "n2:9002"
    finally:
        d.close()


def test_connect_fails_fast_when_no_node_answers(fake: FakeDriver) -> None:
    fake.down |= {"n1:9001", "n2:9002", "n3:9003"}
    with pytest.raises(litegate.Unavailable, match=r"n1:9001: .*refused"):
        open_db(fake, timeout=0.3)


def test_transactions_commit_roll_back_and_nest(db: Database, fake: FakeDriver) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO t(v) VALUES (1)")
        assert tx.query_value("SELECT count(*) FROM t") == 1  # (its own write)
        with tx.savepoint():
            tx.execute("INSERT INTO t(v) VALUES (2)")
        with pytest.raises(KeyError), tx.savepoint():
            tx.execute("INSERT INTO t(v) VALUES (3)")
            raise KeyError
    with pytest.raises(KeyError), db.transaction() as tx:
        tx.execute("INSERT INTO t(v) VALUES (4)")
        raise KeyError
    assert sorted(r[0] for r in db.query("SELECT v FROM t")) == [1, 2]


def test_a_transaction_whose_session_dies_rolls_back(db: Database, fake: FakeDriver) -> None:
    with pytest.raises(litegate.RolledBack, match="nothing of it took effect"):
        with db.transaction() as tx:
            tx.execute("INSERT INTO t(v) VALUES (1)")
            fake.fail("lost", "INSERT")
            tx.execute("INSERT INTO t(v) VALUES (2)")
    assert count(fake) == 0
    db.execute("INSERT INTO t(v) VALUES (3)")
    assert count(fake) == 1


def test_a_transaction_commit_cut_off_is_unknown(db: Database, fake: FakeDriver) -> None:
    fake.fail("ambiguous", "COMMIT")
    with pytest.raises(litegate.OutcomeUnknown), db.transaction() as tx:
        tx.execute("INSERT INTO t(v) VALUES (1)")
    assert count(fake) == 1


def test_reads_retry_on_a_lost_session(db: Database, fake: FakeDriver) -> None:
    db.execute("INSERT INTO t(v) VALUES (1)")
    assert db.query_value("SELECT count(*) FROM t") == 1
    fake.fail("lost", "SELECT count")
    assert db.query_value("SELECT count(*) FROM t") == 1
    assert db.stats().reads == 2


def test_a_write_that_times_out_waiting_never_runs(db: Database, fake: FakeDriver) -> None:
    release, holder = hold_lane(db)
    with pytest.raises(litegate.WriteTimeout):
        db.execute("INSERT INTO t(v) VALUES (1)", timeout=0.2)
    release.set()
    holder.join()
    db.execute("INSERT INTO t(v) VALUES (2)")
    assert [r[0] for r in db.query("SELECT v FROM t")] == [2]


def test_readers_are_bounded(db: Database) -> None:
    with db.snapshot(), db.snapshot():
        with pytest.raises(litegate.PoolTimeout):
            db.query("SELECT 1", timeout=0.1)
    assert db.query_value("SELECT 1") == 1


def test_refused_statements_never_reach_the_cluster(db: Database, fake: FakeDriver) -> None:
    sent = fake.statements
    for sql in (
        "INSERT INTO t(v) VALUES (1) RETURNING id",
        "PRAGMA journal_mode=DELETE",
        "ATTACH 'x.db' AS x",
        "BEGIN",
    ):
        with pytest.raises(litegate.Refused):
            db.execute(sql)
    assert fake.statements == sent
    db.execute("INSERT INTO t(v) VALUES ('returning is fine in a string')")
    assert count(fake) == 1


def test_options_that_cannot_apply_are_refused(fake: FakeDriver) -> None:
    for bad in ({"readers": 0}, {"readers": "per-thread"}, {"time_limit": 1.0}):
        with pytest.raises(ValueError):
            open_db(fake, **bad)


def test_close_lets_queued_writes_finish(fake: FakeDriver) -> None:
    d = open_db(fake)
    d.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    out, threads = queue_writes(d, list(range(30)))
    for t in threads:
        t.join()
    d.close()
    assert count(fake) == 30
    with pytest.raises(litegate.Closed):
        d.execute("INSERT INTO t(v) VALUES (1)")


def test_threads_keep_an_invariant(db: Database) -> None:
    db.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER)")
    db.executemany("INSERT INTO acct(bal) VALUES (?)", [(100,)] * 10)

    def transfers(seed: int) -> None:
        for i in range(30):
            a, b = (seed + i) % 10 + 1, (seed + 3 * i + 1) % 10 + 1
            if a == b:
                continue
            with db.transaction() as tx:
                x = tx.query_value("SELECT bal FROM acct WHERE id = ?", (a,))
                tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (x - 1, a))
                y = tx.query_value("SELECT bal FROM acct WHERE id = ?", (b,))
                tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (y + 1, b))

    threads = [threading.Thread(target=transfers, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.query_value("SELECT sum(bal) FROM acct") == 1000
    assert db.stats().transactions >= 8 * 20


@pytest.mark.anyio
@pytest.mark.blocks_loop(
    "the engine's writer thread and the stand-in driver run Python beside the loop: under a "
    "loaded CI machine the GIL held the loop 30-40 ms once in a while; these test the engine's "
    "logic (tests/dqlite/ runs the real driver)"
)
async def test_async_writes_group_and_transactions_keep_an_invariant(fake: FakeDriver) -> None:
    adb = await open_async_db(fake)
    try:
        await adb.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER)")
        # The 64 writes queue behind a transaction that holds the lane (else, on a slow loop,
        # the writer thread may serve each alone before the next task has sent its own).
        held, go = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with adb.transaction() as tx:
                await tx.execute("SELECT 1")
                held.set()
                await go.wait()

        holder = asyncio.create_task(hold())
        await asyncio.wait_for(held.wait(), 10)
        writes = [
            asyncio.create_task(adb.execute("INSERT INTO acct(bal) VALUES (100)"))
            for _ in range(64)
        ]
        for _ in range(1000):
            if (await adb.stats()).queue_depth >= 64:
                break
            await asyncio.sleep(0.01)
        go.set()
        await asyncio.gather(holder, *writes)
        assert (await adb.stats()).max_batch_size > 1  # (64 tasks' writes grouped)

        async def transfer(i: int) -> None:
            a, b = i % 64 + 1, (i * 7 + 3) % 64 + 1
            if a == b:
                return
            async with adb.transaction() as tx:
                x = await tx.query_value("SELECT bal FROM acct WHERE id = ?", (a,))
                await tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (x - 1, a))
                y = await tx.query_value("SELECT bal FROM acct WHERE id = ?", (b,))
                await tx.execute("UPDATE acct SET bal = ? WHERE id = ?", (y + 1, b))

        await asyncio.gather(*(transfer(i) for i in range(200)))
        assert await adb.query_value("SELECT sum(bal) FROM acct") == 6400
        async with adb.snapshot() as snap:
            assert await snap.query_value("SELECT count(*) FROM acct") == 64
        ids = [r[0] async for r in adb.iterate("SELECT id FROM acct ORDER BY id", arraysize=10)]
        assert ids == list(range(1, 65))
        with pytest.raises(KeyError):
            async with adb.transaction() as tx:
                await tx.execute("UPDATE acct SET bal = 0")
                raise KeyError
        assert await adb.query_value("SELECT sum(bal) FROM acct") == 6400
    finally:
        await adb.close()


def test_migrations_keep_their_version_in_a_table(db: Database, fake: FakeDriver) -> None:
    """dqlite refuses to set ``PRAGMA user_version``: on a cluster the version is a row."""
    steps = ["CREATE TABLE a(x)", "CREATE TABLE b(y); INSERT INTO b VALUES (1)"]
    assert db.migrate(steps[:1]) == 1
    assert db.migrate(steps) == 2
    assert db.migrate(steps) == 2  # (each step applied once)
    assert db.query_value("SELECT count(*) FROM b") == 1
    assert db.query_value("PRAGMA user_version") == 2
    con = sqlite3.connect(fake.root / "app.db")
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 0  # (the file's own: unused)
        assert con.execute("SELECT v FROM litegate_user_version").fetchall() == [(2,)]
    finally:
        con.close()


def chain_of(db: Database, bodies: list[object]) -> list[object]:
    """A transaction holds the lane while one transaction per body queues for it; then they
    run one after another (a chain). A body is a value to insert, or an exception to raise
    after inserting ``-1``. Returns what each transaction's block ended with."""
    release, holder = hold_lane(db)
    out: list[object] = [None] * len(bodies)

    def run(i: int, body: object) -> None:
        try:
            with db.transaction() as tx:
                if isinstance(body, BaseException):
                    tx.execute("INSERT INTO t(v) VALUES (?)", (-1 - i,))
                    raise body
                tx.execute(f"INSERT INTO t(v) VALUES ({body})")  # (a fault can match it)
            out[i] = "committed"
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, b)) for i, b in enumerate(bodies)]
    for th in threads:
        th.start()
    wait_queued(db, len(bodies))
    release.set()
    holder.join()
    for th in threads:
        th.join()
    return out


def test_transactions_queued_together_share_one_commit(db: Database, fake: FakeDriver) -> None:
    before = len(fake.sent)
    out = chain_of(db, [1, 2, 3, 4, 5])
    assert out == ["committed"] * 5
    assert sorted(r[0] for r in db.query("SELECT v FROM t")) == [1, 2, 3, 4, 5]
    sent = fake.sent[before:]
    assert sent.count("COMMIT") < 6  # (the holder's and the five: fewer COMMITs than six)
    assert sent.count("SAVEPOINT litegate_member") >= 1
    assert db.stats().transactions == 6


def test_a_chained_transaction_that_fails_undoes_only_its_own_part(
    db: Database, fake: FakeDriver
) -> None:
    out = chain_of(db, [1, KeyError("b"), 3, ValueError("d"), 5])
    assert out[0] == out[2] == out[4] == "committed"
    assert isinstance(out[1], KeyError) and isinstance(out[3], ValueError)
    assert sorted(r[0] for r in db.query("SELECT v FROM t")) == [1, 3, 5]


def test_a_chain_whose_commit_is_cut_off_reports_every_member_unknown(
    db: Database, fake: FakeDriver
) -> None:
    fake.fail("ambiguous", "COMMIT", times=1)  # (the holder's COMMIT is the chain's too)
    out = chain_of(db, [1, 2, 3])
    unknown = [o for o in out if isinstance(o, litegate.OutcomeUnknown)]
    assert unknown and all(isinstance(o, litegate.OutcomeUnknown) or o == "committed" for o in out)
    present = {r[0] for r in db.query("SELECT v FROM t")}
    assert {v for v, o in zip([1, 2, 3], out, strict=True) if o == "committed"} <= present


def test_a_chain_whose_session_dies_rolls_every_member_back(db: Database, fake: FakeDriver) -> None:
    fake.fail("lost", "VALUES (3)")  # (the third member's statement: the chain is lost)
    out = chain_of(db, [1, 2, 3, 4])
    assert isinstance(out[2], litegate.RolledBack)
    committed = [v for v, o in zip([1, 2, 3, 4], out, strict=True) if o == "committed"]
    failed = [v for v, o in zip([1, 2, 3, 4], out, strict=True) if o != "committed"]
    assert all(isinstance(out[v - 1], litegate.RolledBack) for v in failed)
    assert sorted(r[0] for r in db.query("SELECT v FROM t")) == committed  # (no more, no less)


@pytest.mark.parametrize(
    ("ddl", "insert", "joined"),
    [
        ("CREATE TABLE r(id INTEGER PRIMARY KEY, v)", "INSERT INTO r(v) VALUES (?)", True),
        ('CREATE TABLE "odd name"(v)', 'INSERT INTO "odd name"(v) VALUES (?)', True),
        (  # (its rowid named: SQLite would not number the rows itself)
            "CREATE TABLE r(id INTEGER PRIMARY KEY, v)",
            "INSERT INTO r(id, v) VALUES (1000 - ?, ?)",
            False,
        ),
        (
            "CREATE TABLE r(id INTEGER PRIMARY KEY, v); CREATE TABLE log(x); "
            "CREATE TRIGGER tr AFTER INSERT ON r BEGIN INSERT INTO log VALUES (new.v); END",
            "INSERT INTO r(v) VALUES (?)",
            False,
        ),
        (
            "CREATE TABLE r(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
            "INSERT INTO r(k, v) VALUES ('k' || ?, ?)",
            False,
        ),
        (  # (its sequence is ahead of its rows: proven wrong after the write, then undone)
            "CREATE TABLE r(id INTEGER PRIMARY KEY AUTOINCREMENT, v); "
            "INSERT INTO r(v) VALUES (-1); DELETE FROM r",
            "INSERT INTO r(v) VALUES (?)",
            None,
        ),
    ],
)
def test_one_row_inserts_are_written_together_only_when_each_rowid_is_proven(
    fake: FakeDriver, ddl: str, insert: str, joined: bool | None
) -> None:
    """``joined``: the rows went in one statement; False: one by one; None: one statement
    was tried, proven wrong, rolled back, and the rows written one by one."""
    d = open_db(fake)
    try:
        d.executescript(ddl)
        release, holder = hold_lane(d)
        out: list[object] = [None] * 12

        def write(i: int) -> None:
            params = (i, i) if insert.count("?") == 2 else (i,)
            try:
                out[i] = d.execute(insert, params)
            except Exception as exc:
                out[i] = exc

        threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
        for th in threads:
            th.start()
        wait_queued(d, 12)
        before = len(fake.sent)
        release.set()
        holder.join()
        for th in threads:
            th.join()
        sent = fake.sent[before:]
        multi = [s for s in sent if s.startswith("INSERT") and "), (" in s]
        singles = [s for s in sent if s == insert]
        assert (len(multi), len(singles)) == {True: (1, 0), False: (0, 12), None: (1, 12)}[
            joined
        ], sent
        if joined is None:
            assert sent.index("ROLLBACK") > sent.index(multi[0])
        assert all(isinstance(r, litegate.Result) and r.rowcount == 1 for r in out), out
        table = insert.split("(")[0].split("INTO")[1].strip()
        if "WITHOUT" not in ddl:  # (each caller's lastrowid is its own row's)
            results = [r for r in out if isinstance(r, litegate.Result)]
            got = [
                d.query_value(f"SELECT v FROM {table} WHERE rowid = ?", (r.lastrowid,))
                for r in results
            ]
            assert got == list(range(12))
        assert d.query_value(f"SELECT count(*) FROM {table}") == 12
    finally:
        d.close()


@pytest.mark.anyio
@pytest.mark.blocks_loop(
    "the engine's writer thread and the stand-in driver run Python beside the loop: under a "
    "loaded CI machine the GIL held the loop 30-40 ms once in a while; these test the engine's "
    "logic (tests/dqlite/ runs the real driver)"
)
async def test_async_reads_run_on_the_loop_and_survive_a_lost_session(fake: FakeDriver) -> None:
    adb = await open_async_db(fake)
    try:
        await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        await adb.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(10)])
        threads = threading.active_count()
        rows = await asyncio.gather(
            *(adb.query_one("SELECT v FROM t WHERE id = ?", (i,)) for i in range(1, 11))
        )
        assert [r[0] for r in rows if r is not None] == list(range(10))
        assert 1 <= fake.async_opened <= 2  # (the loop's own sessions, at most readers=2)
        assert threading.active_count() == threads  # (no reader thread was started for them)
        fake.fail("lost", "SELECT count")
        assert await adb.query_value("SELECT count(*) FROM t") == 10  # (again, on another)
        with pytest.raises(litegate.Refused):
            await adb.query("SELECT 1 RETURNING x")
    finally:
        await adb.close()
    assert all(s.closed for s in fake.live)


def test_a_chain_that_sqlite_rolls_back_is_never_reported_committed(
    db: Database, fake: FakeDriver
) -> None:
    """A later transaction's ``INSERT OR ROLLBACK`` makes SQLite roll back the transaction the
    chain shares: the earlier one, waiting for the COMMIT, is told it did not commit; the later
    one is lost; the next one begins a chain of its own."""
    db.execute("INSERT INTO t(v) VALUES ('taken')")
    entered, release = threading.Event(), threading.Event()
    out: dict[str, object] = {}

    def first() -> None:
        try:
            with db.transaction() as tx:
                tx.execute("INSERT INTO t(v) VALUES ('first')")
                entered.set()
                release.wait(10)
            out["first"] = "committed"
        except BaseException as exc:
            out["first"] = exc

    def second() -> None:
        try:
            with db.transaction() as tx:
                try:
                    tx.execute("INSERT OR ROLLBACK INTO t(v) VALUES ('taken')")
                except sqlite3.IntegrityError:
                    pass  # (the app catches it and goes on)
                tx.execute("INSERT INTO t(v) VALUES ('second')")
            out["second"] = "committed"
        except BaseException as exc:
            out["second"] = exc

    def third() -> None:
        with db.transaction() as tx:
            tx.execute("INSERT INTO t(v) VALUES ('third')")
        out["third"] = "committed"

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert entered.wait(10)
    for n, fn in enumerate((second, third), start=1):
        threads.append(threading.Thread(target=fn))
        threads[-1].start()
        wait_queued(db, n)
    release.set()
    for th in threads:
        th.join()
    assert isinstance(out["first"], litegate.RolledBack), out
    assert isinstance(out["second"], litegate.RolledBack), out
    assert out["third"] == "committed"
    assert sorted(r[0] for r in db.query("SELECT v FROM t")) == ["taken", "third"]


def swallow(conn: sqlite3.Connection) -> None:
    """A function that swallows the rollback its ``INSERT OR ROLLBACK`` of the existing
    'taken' row caused, then writes on -- outside any transaction now."""
    try:
        conn.execute("INSERT OR ROLLBACK INTO t(v) VALUES ('taken')")
    except sqlite3.IntegrityError:
        pass
    conn.execute("INSERT INTO t(v) VALUES ('after')")


def test_a_write_function_that_swallows_a_rollback_is_reported_unknown(
    db: Database, fake: FakeDriver
) -> None:
    db.execute("INSERT INTO t(v) VALUES ('taken')")

    release, holder = hold_lane(db)
    out, threads = queue_writes(db, [1, 2])
    wait_queued(db, 2)
    result: list[BaseException] = []
    swallower = threading.Thread(
        target=lambda: result.append(
            pytest.raises(litegate.OutcomeUnknown, db.run_write, swallow).value
        )
    )
    swallower.start()
    wait_queued(db, 3)
    release.set()
    holder.join()
    swallower.join()
    for th in threads:
        th.join()
    assert len(result) == 1 and isinstance(result[0], litegate.OutcomeUnknown)
    assert all(isinstance(r, litegate.Result) for r in out), out
    assert sorted(str(r[0]) for r in db.query("SELECT v FROM t")) == ["1", "2", "after", "taken"]


@pytest.mark.anyio
@pytest.mark.blocks_loop(
    "the engine's writer thread and the stand-in driver run Python beside the loop: under a "
    "loaded CI machine the GIL held the loop 30-40 ms once in a while; these test the engine's "
    "logic (tests/dqlite/ runs the real driver)"
)
async def test_a_cancelled_async_write_still_queued_never_runs(fake: FakeDriver) -> None:
    adb = await open_async_db(fake)
    try:
        await adb.execute("CREATE TABLE t(v)")
        db = adb.as_sync()
        entered, release = threading.Event(), threading.Event()

        def holder() -> None:
            with db.transaction():
                entered.set()
                release.wait(10)

        th = threading.Thread(target=holder)
        th.start()
        await asyncio.to_thread(entered.wait, 10)
        task = asyncio.ensure_future(adb.execute("INSERT INTO t VALUES (1)"))
        await asyncio.to_thread(wait_queued, db, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.to_thread(th.join)
        await adb.execute("INSERT INTO t VALUES (2)")
        assert [r[0] for r in await adb.query("SELECT v FROM t")] == [2]  # (1 never ran)
    finally:
        await adb.close()
