"""The cluster engine's edges on the stand-in driver: sessions lost at each step of a write, a
transaction or a read; commits refused; queues and lanes that time out; close while work is
queued or a transaction is open; cancelled asyncio callers; arguments refused. Each test checks
what the caller is told (the exact error class), what is in the database afterwards
(acknowledged writes present once, the others absent), that the lane or the reader is given
back (the next operation proceeds at once) and that nothing waits without a bound."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import litegate
from litegate import AsyncDatabase, Database
from litegate._cluster import ClusterEngine
from litegate._cluster import _engine as engine_module
from litegate._config import make_options
from litegate._statements import run_execute

from .fake_driver import FakeDriver, FakeSession, OperationalError
from .test_engine import URL, open_db, swallow, wait_queued

SEEDS = {"n1:9001", "n2:9002", "n3:9003"}
BOUND = 5.0  # (seconds: any wait of a test longer than this is a hang)

BLOCKS_LOOP = pytest.mark.blocks_loop(
    "the engine's writer thread and the stand-in driver run Python beside the loop (and a "
    "test here blocks it on purpose); these test the engine's logic"
)


class Faults(FakeDriver):
    """The stand-in with this file's extra faults (its users elsewhere are unchanged):

    - a ``match`` that starts with ``=`` matches a statement's whole text only (``"=BEGIN"``
      is the engine's transaction probe, not ``BEGIN IMMEDIATE``);
    - :meth:`hook` runs a function when a statement matches, before it is run: it may sleep
      (a statement held up), raise (the driver's error, the session kept) or return
      ``"lost"``;
    - the sessions opened for event loops are kept in ``loop_sessions``.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.loop_sessions: list[FakeSession] = []

    def hook(self, match: str, fn: Callable[[], str | None], times: int = 1) -> None:
        with self._lock:
            self._faults.append([fn, match, times])

    def _fault(self, sql: str) -> str | None:
        with self._lock:
            for f in self._faults:
                match = str(f[1])
                hit = sql == match[1:] if match.startswith("=") else match in sql
                if hit and f[2] > 0:
                    f[2] -= 1
                    kind = f[0]
                    break
            else:
                return None
        if callable(kind):
            result: str | None = kind()  # (outside the driver's lock: it may sleep)
            return result
        return str(kind)

    def open_async_session(self, seed: str, name: str, **settings: Any) -> Any:
        session = super().open_async_session(seed, name, **settings)
        with self._lock:
            self.loop_sessions.append(session._session)
        return session


class Background:
    """``fn()`` on a thread of its own; :meth:`outcome` is its result or the exception it
    raised, waited for with a bound (a caller that hangs fails the test)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._out: list[object] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self._out.append(fn())
        except BaseException as exc:
            self._out.append(exc)

    def outcome(self, seconds: float = BOUND) -> object:
        self._thread.join(seconds)
        assert not self._thread.is_alive(), f"still waiting after {seconds} s"
        return self._out[0]


def bounded(fn: Callable[[], object], seconds: float = BOUND) -> object:
    """``fn()``'s result or exception, failing the test if it takes over ``seconds``."""
    return Background(fn).outcome(seconds)


@pytest.fixture
def fake(tmp_path: Path) -> Faults:
    return Faults(tmp_path)


@pytest.fixture
def db(fake: Faults) -> Iterator[Database]:
    d = open_db(fake)
    d.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    yield d
    d.close(timeout=5)


def values(fake: FakeDriver, table: str = "t") -> list[Any]:
    """The table's ``v`` column in rowid order, read from the file itself."""
    con = sqlite3.connect(fake.root / "app.db")
    try:
        return [r[0] for r in con.execute(f"SELECT v FROM {table} ORDER BY rowid")]
    finally:
        con.close()


def engine_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("litegate-dqlite")}


def assert_threads_end(before: set[threading.Thread], seconds: float = 3.0) -> None:
    """Every engine thread started since ``before`` ends (the reader threads of a closed
    engine end once idle: a bounded wait)."""
    deadline = time.monotonic() + seconds
    for t in engine_threads() - before:
        t.join(max(deadline - time.monotonic(), 0.0))
    left = [t.name for t in engine_threads() - before if t.is_alive()]
    assert not left, left


def transaction(
    db: Database, sql: str, *, hold: threading.Event | None = None, raise_: bool = False
) -> tuple[threading.Event, Background]:
    """A transaction on its own thread: it runs ``sql``, then (``hold``) waits for the event
    with the lane held, then raises ``KeyError`` (``raise_``) or commits. Returns an event set
    once ``sql`` ran, and the thread: its outcome is ``"committed"`` or the exception."""
    ran = threading.Event()

    def body() -> str:
        with db.transaction() as tx:
            tx.execute(sql)
            ran.set()
            if hold is not None:
                assert hold.wait(5)
            if raise_:
                raise KeyError(sql)
        return "committed"

    return ran, Background(body)


def holder(db: Database, sql: str) -> tuple[threading.Event, Background]:
    """A transaction that runs ``sql`` and holds the lane until the returned event is set."""
    release = threading.Event()
    ran, th = transaction(db, sql, hold=release)
    assert ran.wait(5)
    return release, th


# ---- single writes: the group ------------------------------------------------------------------


def test_a_lone_write_whose_session_dies_before_its_statement_ran_is_applied_once(
    db: Database, fake: Faults
) -> None:
    db.execute("INSERT INTO t(v) VALUES (1)")
    fake.fail("lost", "UPDATE")
    result = db.execute("UPDATE t SET v = v + 1")
    assert isinstance(result, litegate.Result) and result.rowcount == 1
    assert values(fake) == [2]  # (run again on a reopened session: once)
    assert len(fake.connects) >= 2


def test_a_write_whose_deadline_passed_when_its_session_died_is_unavailable_the_rest_retried(
    db: Database, fake: Faults
) -> None:
    """A write still running at its deadline when the session dies is not run again (its
    caller has given up: Unavailable, nothing applied); the rest of its group is."""
    release, lane = holder(db, "INSERT INTO t(v) VALUES ('holder')")

    def slow(conn: sqlite3.Connection) -> None:
        time.sleep(0.15)  # (past its 0.1 s deadline, already running)
        conn.execute("INSERT INTO t(v) VALUES ('slow')")

    late = Background(lambda: db.run_write(slow, timeout=0.1))
    wait_queued(db, 1)
    insert = functools.partial(db.execute, "INSERT INTO t(v) VALUES (?)")
    others = [Background(functools.partial(insert, (v,))) for v in (1, 2)]
    wait_queued(db, 3)
    fake.fail("lost", "'slow'")
    release.set()
    assert lane.outcome() == "committed"
    assert isinstance(late.outcome(), litegate.Unavailable)
    assert all(isinstance(o.outcome(), litegate.Result) for o in others)
    assert sorted(map(str, values(fake))) == ["1", "2", "holder"]


def test_a_group_whose_commit_is_refused_acknowledges_no_write_and_the_lane_goes_on(
    fake: Faults,
) -> None:
    """A deferred foreign key fails the group's COMMIT: every write of the group gets that
    error, none is applied, and the writer's transaction is rolled back for the next group."""
    db = open_db(fake, pragmas={"foreign_keys": "ON"})
    try:
        db.executescript(
            "CREATE TABLE p(id INTEGER PRIMARY KEY, v);"
            "CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER REFERENCES p(id)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )
        release, lane = holder(db, "SELECT 1")
        good = Background(lambda: db.execute("INSERT INTO p(id, v) VALUES (1, 1)"))
        wait_queued(db, 1)
        orphan = Background(lambda: db.execute("INSERT INTO c(v) VALUES (99)"))
        wait_queued(db, 2)
        release.set()
        assert lane.outcome() == "committed"
        for write in (good, orphan):
            out = write.outcome()
            assert isinstance(out, sqlite3.IntegrityError), out
        assert values(fake, "p") == values(fake, "c") == []
        out = bounded(lambda: db.execute("INSERT INTO p(id, v) VALUES (2, 2)", timeout=1))
        assert isinstance(out, litegate.Result), out  # (the next group began: none left open)
        assert values(fake, "p") == [2]
    finally:
        db.close(timeout=5)


def test_a_write_function_whose_transaction_check_fails_gets_that_error_and_applies_nothing(
    db: Database, fake: Faults
) -> None:
    def fn(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t(v) VALUES ('fn')")

    def io_error() -> None:
        raise OperationalError("disk I/O error", code=10)

    fake.hook("=BEGIN", io_error)  # (the probe after a function: is the transaction open?)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        db.run_write(fn)
    assert values(fake) == []
    db.execute("INSERT INTO t(v) VALUES ('next')", timeout=1)
    assert values(fake) == ["next"]


def test_a_write_function_whose_session_dies_at_the_check_after_it_is_written_once(
    db: Database, fake: Faults
) -> None:
    def fn(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t(v) VALUES ('fn')")
        return "done"

    fake.fail("lost", "=BEGIN")
    assert db.run_write(fn) == "done"
    assert values(fake) == ["fn"]


def test_a_full_queue_times_out_a_write_that_then_never_runs(fake: Faults) -> None:
    db = open_db(fake, queue_size=1)
    try:
        db.execute("CREATE TABLE t(v)")
        release, lane = holder(db, "SELECT 1")
        queued = Background(lambda: db.execute("INSERT INTO t VALUES ('queued')"))
        wait_queued(db, 1)
        t0 = time.monotonic()
        with pytest.raises(litegate.WriteTimeout, match="queue"):
            db.execute("INSERT INTO t VALUES ('no room')", timeout=0.1)
        assert time.monotonic() - t0 < 2
        release.set()
        assert lane.outcome() == "committed"
        assert isinstance(queued.outcome(), litegate.Result)
        assert values(fake) == ["queued"]
    finally:
        db.close(timeout=5)


# ---- close ---------------------------------------------------------------------------------


def test_close_answers_writes_still_queued_after_its_timeout_with_closed_and_never_runs_them(
    fake: Faults,
) -> None:
    """close(timeout) while a transaction holds the lane: a write queued, another waiting
    for room in the queue -- both told ``Closed`` once close returns (not run later, when the
    transaction ends)."""
    before = engine_threads()
    db = open_db(fake, queue_size=1)
    db.execute("CREATE TABLE t(v)")
    release, lane = holder(db, "INSERT INTO t VALUES ('held')")
    queued = Background(lambda: db.execute("INSERT INTO t VALUES ('queued')", timeout=None))
    wait_queued(db, 1)
    no_room = Background(lambda: db.execute("INSERT INTO t VALUES ('no room')", timeout=None))
    time.sleep(0.05)  # (let it wait for room; told Closed either way)
    t0 = time.monotonic()
    db.close(timeout=0.2)
    assert time.monotonic() - t0 < 2
    assert isinstance(no_room.outcome(1), litegate.Closed)
    assert isinstance(queued.outcome(1), litegate.Closed)
    release.set()
    assert lane.outcome() == "committed"  # (a transaction under way ends as its holder says)
    assert values(fake) == ["held"]
    assert_threads_end(before)
    assert all(s.closed for s in fake.live)


def test_close_without_a_timeout_is_bounded_while_another_thread_holds_the_lane(
    fake: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``close()`` waits at most max(``timeout`` option, 5 s) (shortened here), as on a file --
    not an hour -- for a transaction another thread keeps open."""
    monkeypatch.setattr(engine_module, "_CLOSE_WAIT", 0.2)
    before = engine_threads()
    db = open_db(fake, timeout=0.1)
    db.execute("CREATE TABLE t(v)")
    release, lane = holder(db, "INSERT INTO t VALUES (1)")
    t0 = time.monotonic()
    assert bounded(db.close, 3) is None
    assert 0.15 < time.monotonic() - t0 < 2
    release.set()
    assert lane.outcome() == "committed"
    assert_threads_end(before)


def test_a_read_waiting_for_a_reader_is_told_closed_when_the_database_closes(
    fake: Faults,
) -> None:
    before = engine_threads()
    db = open_db(fake, readers=1)
    db.execute("CREATE TABLE t(v)")
    with db.snapshot() as snap:
        assert snap.query_value("SELECT count(*) FROM t") == 0
        waiting = Background(lambda: db.query_value("SELECT count(*) FROM t", timeout=5))
        deadline = time.monotonic() + 5
        while db.stats().pool_waits < 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        db.close(timeout=1)
        assert isinstance(waiting.outcome(1), litegate.Closed)
    assert all(s.closed for s in fake.live)  # (the snapshot's reader closed at its release)
    assert_threads_end(before)


# ---- transactions ----------------------------------------------------------------------------


def test_a_transaction_with_no_leader_in_time_is_unavailable_and_frees_the_lane(
    db: Database, fake: Faults
) -> None:
    fake.down |= SEEDS
    fake.kill_all()
    t0 = time.monotonic()
    out = bounded(lambda: db.transaction(timeout=0.3).__enter__())
    assert isinstance(out, litegate.Unavailable), out
    assert time.monotonic() - t0 < 3
    fake.down.clear()
    db.execute("INSERT INTO t(v) VALUES (1)", timeout=2)
    with db.transaction(timeout=1) as tx:
        tx.execute("INSERT INTO t(v) VALUES (2)")
    assert values(fake) == [1, 2]


def test_a_transaction_that_gave_up_waiting_never_runs_nor_delays_the_commit_before_it(
    fake: Faults,
) -> None:
    """Its withdrawn request stays queued: the transaction before it, committing, sees it as
    one that will join its chain -- and must still be answered once the writer skips it."""
    db = open_db(fake, group_wait=5.0)
    try:
        db.execute("CREATE TABLE t(v)")
        release, first = holder(db, "INSERT INTO t VALUES ('first')")
        with pytest.raises(litegate.WriteTimeout), db.transaction(timeout=0.1) as tx:
            tx.execute("INSERT INTO t VALUES ('late')")
        release.set()
        assert first.outcome() == "committed"
        db.execute("INSERT INTO t VALUES ('next')", timeout=1)
        assert values(fake) == ["first", "next"]
    finally:
        db.close(timeout=5)


def test_a_transaction_held_past_hold_warn_is_reported_once_and_still_commits(
    fake: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    db = open_db(fake, hold_warn=0.05)
    try:
        db.execute("CREATE TABLE t(v)")
        with caplog.at_level(logging.WARNING, logger="litegate"), db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
            time.sleep(0.15)
        assert values(fake) == [1]
        assert db.stats().long_holds == 1
        held = [r for r in caplog.records if "has held the write lane" in r.getMessage()]
        assert len(held) == 1
    finally:
        db.close(timeout=5)


def test_a_begin_whose_session_died_is_retried_and_the_transaction_commits(
    db: Database, fake: Faults
) -> None:
    fake.fail("lost", "=BEGIN IMMEDIATE")
    with db.transaction() as tx:
        tx.execute("INSERT INTO t(v) VALUES (1)")
    assert values(fake) == [1]


def test_a_transaction_sqlite_rolled_back_whose_error_was_caught_is_rolled_back_at_commit(
    db: Database, fake: Faults
) -> None:
    """``INSERT OR ROLLBACK`` ends the whole transaction; the block catches the error and
    leaves normally: it is told ``RolledBack`` (never "committed"), nothing of it applied."""
    db.execute("INSERT INTO t(v) VALUES ('taken')")
    with pytest.raises(litegate.RolledBack), db.transaction() as tx:
        tx.execute("INSERT INTO t(v) VALUES ('before')")
        with pytest.raises(sqlite3.IntegrityError):
            tx.execute("INSERT OR ROLLBACK INTO t(v) VALUES ('taken')")
    assert values(fake) == ["taken"]
    with db.transaction(timeout=1) as tx:
        tx.execute("INSERT INTO t(v) VALUES ('next')")
    assert values(fake) == ["taken", "next"]


def test_a_transaction_function_that_swallows_a_rollback_and_writes_on_is_unknown(
    db: Database, fake: Faults
) -> None:
    db.execute("INSERT INTO t(v) VALUES ('taken')")

    with pytest.raises(litegate.OutcomeUnknown), db.transaction() as tx:
        tx.execute("INSERT INTO t(v) VALUES ('before')")
        tx.run(swallow)
    assert values(fake) == ["taken", "after"]  # ('before' was rolled back; 'after' is why)


def test_chained_transactions_past_max_batch_each_commit(fake: Faults) -> None:
    db = open_db(fake, group_wait=5.0, max_batch=2)
    try:
        db.execute("CREATE TABLE t(v)")
        release, first = holder(db, "INSERT INTO t VALUES (0)")
        queued = []
        for v in (1, 2, 3):
            queued.append(transaction(db, f"INSERT INTO t VALUES ({v})")[1])
            wait_queued(db, v)
        release.set()
        assert [th.outcome() for th in (first, *queued)] == ["committed"] * 4
        assert values(fake) == [0, 1, 2, 3]
        assert db.stats().max_batch_size <= 2  # (no chain longer than max_batch)
    finally:
        db.close(timeout=5)


def test_a_chain_whose_joiner_finds_the_session_lost_is_rolled_back_and_the_joiner_commits(
    fake: Faults,
) -> None:
    db = open_db(fake, group_wait=5.0)
    try:
        db.execute("CREATE TABLE t(v)")
        release, first = holder(db, "INSERT INTO t VALUES ('first')")
        _, second = transaction(db, "INSERT INTO t VALUES ('second')")
        wait_queued(db, 1)
        fake.fail("lost", "SAVEPOINT litegate_member")
        release.set()
        assert isinstance(first.outcome(), litegate.RolledBack)
        assert second.outcome() == "committed"
        assert values(fake) == ["second"]
    finally:
        db.close(timeout=5)


def test_a_chained_transaction_whose_rollback_is_cut_off_rolls_its_chain_back(
    fake: Faults,
) -> None:
    """The session dies at a chained transaction's ``ROLLBACK TO``: the transaction before it,
    waiting for the chain's COMMIT, is told ``RolledBack``; the failing one gets its own
    error; the next begins a chain of its own and commits."""
    db = open_db(fake, group_wait=5.0)
    try:
        db.execute("CREATE TABLE t(v)")
        release, first = holder(db, "INSERT INTO t VALUES ('first')")
        _, failing = transaction(db, "INSERT INTO t VALUES ('failing')", raise_=True)
        wait_queued(db, 1)
        _, third = transaction(db, "INSERT INTO t VALUES ('third')")
        wait_queued(db, 2)
        fake.fail("lost", "ROLLBACK TO litegate_member")
        release.set()
        assert isinstance(first.outcome(), litegate.RolledBack)
        assert isinstance(failing.outcome(), KeyError)
        assert third.outcome() == "committed"
        assert values(fake) == ["third"]
    finally:
        db.close(timeout=5)


def test_a_chain_whose_commit_is_refused_is_rolled_back_and_the_lane_goes_on(
    fake: Faults,
) -> None:
    db = open_db(fake, pragmas={"foreign_keys": "ON"}, group_wait=5.0)
    try:
        db.executescript(
            "CREATE TABLE p(id INTEGER PRIMARY KEY, v);"
            "CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER REFERENCES p(id)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )
        release, first = holder(db, "INSERT INTO p(id, v) VALUES (1, 1)")
        _, orphan = transaction(db, "INSERT INTO c(v) VALUES (99)")
        wait_queued(db, 1)
        with pytest.raises(litegate.WriteTimeout), db.transaction(timeout=0.1):
            pass  # (withdrawn, still queued: the chain's COMMIT comes from the writer's loop)
        release.set()
        for th in (first, orphan):
            out = th.outcome()
            assert isinstance(out, litegate.RolledBack), out
            assert isinstance(out.__cause__, sqlite3.IntegrityError)
        assert values(fake, "p") == values(fake, "c") == []
        db.execute("INSERT INTO p(id, v) VALUES (2, 2)", timeout=1)
        assert values(fake, "p") == [2]
    finally:
        db.close(timeout=5)


def test_a_lease_request_interrupted_while_queued_never_takes_the_lane(
    db: Database, fake: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine level (no holder to recover it): Ctrl-C while a lease waits for the lane. Its
    request is withdrawn, or -- granted meanwhile -- ended: the lane is not held by nobody."""
    release, lane = holder(db, "SELECT 1")
    real = engine_module._wait

    def interrupted(fut: Any, deadline: float, what: str) -> Any:
        monkeypatch.setattr(engine_module, "_wait", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_module, "_wait", interrupted)
    engine = cast(ClusterEngine, db._engine)
    with pytest.raises(KeyboardInterrupt):
        engine.lease(5.0)
    release.set()
    assert lane.outcome() == "committed"
    db.execute("INSERT INTO t(v) VALUES (1)", timeout=1)
    assert values(fake) == [1]


def test_a_lease_used_after_its_end_is_refused_at_once(fake: Faults) -> None:
    """Engine level: a statement sent after the lease's COMMIT would wait for a writer that
    no longer reads them (an hour): it is refused with ``Misuse``, as a read lease after its
    release is."""
    engine = ClusterEngine(make_options(URL, {"readers": 1}), sessions=fake.open_session)
    db = Database(engine)
    try:
        db.execute("CREATE TABLE t(v)")
        lease = engine.lease(1.0)
        lease.begin()
        assert lease.in_transaction and lease.conn is not None
        lease.run(run_execute, ("INSERT INTO t VALUES (1)", ()), None, None)
        with pytest.raises(litegate.Misuse):
            lease.run(run_execute, ("INSERT INTO t VALUES (2)", ()), None, 1.0)  # (time_limit)
        lease.commit()
        out = bounded(lambda: lease.run(run_execute, ("INSERT INTO t VALUES (3)", ()), None, None))
        assert isinstance(out, litegate.Misuse)
        with pytest.raises(litegate.Misuse):
            _ = lease.conn
        lease.release()
        assert values(fake) == [1]
        read = engine.borrow(1.0)
        assert read.query("SELECT v FROM t", (), None)[0][0] == 1
        read.release()
        with pytest.raises(litegate.Misuse):
            _ = read.conn
        assert db.query_value("SELECT count(*) FROM t", timeout=1) == 1  # (reader given back)
    finally:
        db.close(timeout=5)


# ---- reads ---------------------------------------------------------------------------------


def test_a_failing_read_gives_its_reader_back(fake: Faults) -> None:
    db = open_db(fake, readers=1)
    try:
        for _ in range(3):
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                db.query("SELECT * FROM missing")
        assert db.query_value("SELECT 1", timeout=0.5) == 1
        assert db.stats().pool_in_use == 0
    finally:
        db.close(timeout=5)


def test_a_reader_given_back_wakes_the_read_waiting_for_it_at_once(fake: Faults) -> None:
    """The idle writer thread waits on the same condition as a read waiting for a reader:
    giving the reader back must wake the read (``notify()`` woke the writer instead, and the
    read slept to its deadline -- an hour with ``timeout=None``)."""
    db = open_db(fake, readers=1)
    try:
        db.execute("CREATE TABLE t(v)")
        with db.snapshot():
            waiting = Background(lambda: db.query_value("SELECT count(*) FROM t", timeout=3))
            deadline = time.monotonic() + 5
            while db.stats().pool_waits < 1:
                assert time.monotonic() < deadline
                time.sleep(0.005)
        t0 = time.monotonic()
        assert waiting.outcome() == 0
        assert time.monotonic() - t0 < 1
    finally:
        db.close(timeout=5)


def test_a_reader_that_cannot_reach_a_leader_frees_its_place_in_the_pool(fake: Faults) -> None:
    db = open_db(fake, readers=1)
    try:
        assert db.query_value("SELECT 1") == 1
        fake.down |= SEEDS
        fake.kill_all()
        for _ in range(2):  # (the second would find the pool full if the first kept its place)
            with pytest.raises(litegate.Unavailable):
                db.query_value("SELECT 1", timeout=0.1)
        fake.down.clear()
        assert db.query_value("SELECT 1", timeout=1) == 1
        stats = db.stats()
        assert stats.pool_open == 1 and stats.pool_in_use == 0
    finally:
        db.close(timeout=5)


def test_a_read_whose_session_dies_after_its_deadline_is_unavailable(
    db: Database, fake: Faults
) -> None:
    calls = []

    def slow(conn: sqlite3.Connection) -> int:
        calls.append(1)
        time.sleep(0.15)
        value: int = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        return value

    with db.snapshot():  # (two readers open, then idle: a retry would find one at once)
        assert db.query_value("SELECT 1") == 1
    fake.fail("lost", "SELECT count")
    with pytest.raises(litegate.Unavailable):
        db.run_read(slow, timeout=0.1)
    assert len(calls) == 1  # (not run again past its deadline)
    assert db.query_value("SELECT count(*) FROM t", timeout=1) == 0


def test_a_snapshot_sees_one_state_while_writes_commit(db: Database, fake: Faults) -> None:
    db.execute("INSERT INTO t(v) VALUES (1)")
    with db.snapshot() as snap:
        assert snap.query_value("SELECT count(*) FROM t") == 1
        db.execute("INSERT INTO t(v) VALUES (2)")
        assert snap.query("SELECT v FROM t")[0][0] == 1
        assert snap.query_value("SELECT count(*) FROM t") == 1  # (its own state)
    assert db.query_value("SELECT count(*) FROM t") == 2


def test_a_snapshot_or_iteration_begun_after_the_leader_was_lost_runs_on_a_reopened_reader(
    db: Database, fake: Faults
) -> None:
    """A reader idle in the pool when the leader was lost: the first statement of a snapshot
    or an iteration finds its session dead. Nothing has run yet: it is reopened, as a read's
    is -- never the engine's internal ``LinkLost``."""
    db.execute("INSERT INTO t(v) VALUES (1)")
    assert db.query_value("SELECT count(*) FROM t") == 1  # (a reader is idle now)
    fake.kill_all()
    with db.snapshot() as snap:
        assert snap.query_value("SELECT count(*) FROM t") == 1
    fake.kill_all()
    assert [r[0] for r in db.iterate("SELECT v FROM t")] == [1]
    fake.down |= SEEDS
    fake.kill_all()
    with pytest.raises(litegate.Unavailable):
        with db.snapshot(timeout=0.2):
            pass
    fake.down.clear()
    assert db.query_value("SELECT count(*) FROM t", timeout=1) == 1
    assert db.stats().pool_in_use == 0


def test_a_snapshot_whose_session_dies_midway_is_rolled_back_and_its_reader_given_back(
    fake: Faults,
) -> None:
    db = open_db(fake, readers=1)
    try:
        db.execute("CREATE TABLE t(v)")
        with pytest.raises(litegate.RolledBack), db.snapshot() as snap:
            assert snap.query_value("SELECT count(*) FROM t") == 0
            fake.kill_all()
            snap.query_value("SELECT count(*) FROM t")  # (its state is gone: not run again)
        assert db.query_value("SELECT count(*) FROM t", timeout=1) == 0
    finally:
        db.close(timeout=5)


# ---- arguments and options -----------------------------------------------------------------


def test_a_time_limit_is_refused_per_call_and_sends_nothing(db: Database, fake: Faults) -> None:
    sent = fake.statements
    for call in (
        lambda: db.execute("INSERT INTO t(v) VALUES (1)", time_limit=1.0),
        lambda: db.query("SELECT 1", time_limit=1.0),
        lambda: db.run_read(lambda conn: None, time_limit=1.0),
    ):
        with pytest.raises(litegate.Misuse, match="time_limit"):
            call()
    assert fake.statements == sent
    with db.transaction() as tx:
        with pytest.raises(litegate.Misuse, match="time_limit"):
            tx.execute("INSERT INTO t(v) VALUES (1)", time_limit=1.0)
        tx.execute("INSERT INTO t(v) VALUES (2)")
    with db.snapshot() as snap, pytest.raises(litegate.Misuse, match="time_limit"):
        snap.query("SELECT 1", time_limit=1.0)
    assert values(fake) == [2]


@pytest.mark.parametrize("option", [{"detect_types": sqlite3.PARSE_DECLTYPES}, {"uri": True}])
def test_options_of_a_local_file_are_refused(fake: Faults, option: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="do not apply"):
        open_db(fake, **option)
    assert fake.connects == []


def test_without_sessions_given_the_engine_opens_the_drivers(
    fake: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        engine_module, "load_driver", lambda: (fake.open_session, fake.open_async_session)
    )
    db = Database(ClusterEngine(make_options(URL, {"readers": 1})))
    try:
        db.execute("CREATE TABLE t(v)")
        assert fake.connects == ["n1:9001"]
    finally:
        db.close(timeout=5)


# ---- asyncio callers ---------------------------------------------------------------------------


async def open_async(fake: FakeDriver, loop_sessions: bool = True, **options: Any) -> AsyncDatabase:
    """An engine opened on a thread; ``loop_sessions=False``: no sessions for event loops (an
    asyncio transaction is then served by the writer thread, a read by a reader thread)."""
    engine = await asyncio.to_thread(
        ClusterEngine,
        make_options(URL, {"readers": 1, **options}),  # type: ignore[typeddict-item]
        sessions=fake.open_session,
        async_sessions=fake.open_async_session if loop_sessions else None,
    )
    return AsyncDatabase(engine)


@pytest.mark.anyio
@BLOCKS_LOOP
async def test_an_async_write_that_gets_no_lane_or_queue_room_in_time_never_runs(
    fake: Faults,
) -> None:
    adb = await open_async(fake, queue_size=1)
    db = adb.as_sync()
    try:
        await adb.execute("CREATE TABLE t(v)")
        release, lane = await asyncio.to_thread(holder, db, "SELECT 1")
        with pytest.raises(litegate.WriteTimeout):
            await adb.execute("INSERT INTO t VALUES ('no lane')", timeout=0.1)
        queued = asyncio.ensure_future(adb.execute("INSERT INTO t VALUES ('queued')"))
        await asyncio.to_thread(wait_queued, db, 1)
        with pytest.raises(litegate.WriteTimeout, match="queue"):
            await adb.execute("INSERT INTO t VALUES ('no room')", timeout=0.1)
        cancelled = asyncio.ensure_future(adb.execute("INSERT INTO t VALUES ('cancelled')"))
        await asyncio.sleep(0.05)  # (waiting for room on a thread)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        with pytest.raises(litegate.WriteTimeout):  # (its loop's request for the lane: no room)
            async with adb.transaction(timeout=0.1) as tx:
                await tx.execute("INSERT INTO t VALUES ('no turn')")
        release.set()
        assert await asyncio.to_thread(lane.outcome) == "committed"
        assert isinstance(await asyncio.wait_for(queued, 5), litegate.Result)
        await adb.execute("INSERT INTO t VALUES ('next')", timeout=1)
        async with adb.transaction(timeout=1) as tx:  # (the loop's late grant was given back)
            await tx.execute("INSERT INTO t VALUES ('last')")
        assert values(fake) == ["queued", "next", "last"]  # (the cancelled one never ran)
    finally:
        await adb.close(timeout=5)


@pytest.mark.anyio
@BLOCKS_LOOP
async def test_async_transactions_on_the_writer_thread_tell_loss_and_cancellation_truly(
    fake: Faults,
) -> None:
    """Without sessions for event loops an asyncio transaction is served by the writer thread
    (:class:`AsyncClusterLease`): a lost session rolls it back and refuses its later
    statements; a task cancelled during its COMMIT learns whether it committed."""
    adb = await open_async(fake, loop_sessions=False, group_wait=0)
    try:
        await adb.execute("CREATE TABLE t(v UNIQUE)")
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES ('a')")
            assert await tx.query_value("SELECT count(*) FROM t") == 1
        with pytest.raises(litegate.RolledBack):
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ('b')")
                fake.fail("lost", "'c'")
                with pytest.raises(litegate.RolledBack):
                    await tx.execute("INSERT INTO t VALUES ('c')")
                await tx.execute("INSERT INTO t VALUES ('d')")  # (refused: it is lost)
        with pytest.raises(litegate.RolledBack):  # (SQLite rolled it back; the block went on)
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES ('b')")
                with pytest.raises(sqlite3.IntegrityError):
                    await tx.execute("INSERT OR ROLLBACK INTO t VALUES ('a')")
        assert values(fake) == ["a"]

        in_commit, go = threading.Event(), threading.Event()

        def held_commit() -> None:
            in_commit.set()
            assert go.wait(5)

        fake.hook("=COMMIT", held_commit)
        txn = adb.transaction()

        async def body() -> None:
            async with txn:
                await txn.execute("INSERT INTO t VALUES ('e')")

        task = asyncio.ensure_future(body())
        assert await asyncio.to_thread(in_commit.wait, 5)
        task.cancel()  # (while its COMMIT is under way)
        for _ in range(3):
            await asyncio.sleep(0)
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, BOUND)
        assert txn.committed is True  # (it did commit: a caller told otherwise might repeat it)
        assert values(fake) == ["a", "e"]
        release, lane = await asyncio.to_thread(holder, adb.as_sync(), "SELECT 1")
        with pytest.raises(litegate.WriteTimeout):
            async with adb.transaction(timeout=0.1):
                pass  # (never entered: a thread holds the lane)
        release.set()
        assert await asyncio.to_thread(lane.outcome) == "committed"
        async with adb.transaction(timeout=1) as tx:  # (the withdrawn request was skipped)
            await tx.execute("INSERT INTO t VALUES ('f')")
        assert values(fake) == ["a", "e", "f"]
    finally:
        await adb.close(timeout=5)


@pytest.mark.anyio
@BLOCKS_LOOP
async def test_an_async_statement_cancelled_before_it_started_never_runs(fake: Faults) -> None:
    """Engine level, a thread-served asyncio lease: statements are sent in order; one whose
    caller is cancelled while an earlier one runs is withdrawn (the writer skips it); the
    lease then ends and the lane is free. Its leases refuse use after their end."""
    adb = await open_async(fake, loop_sessions=False)
    engine = adb.as_sync()._engine
    try:
        await adb.execute("CREATE TABLE t(v)")
        lease = await engine.lease_async(1.0)
        await lease.begin()
        started, go = threading.Event(), threading.Event()

        def slow(conn: sqlite3.Connection) -> None:
            started.set()
            assert go.wait(5)
            conn.execute("INSERT INTO t VALUES ('slow')")

        first = lease.post(slow, ())
        assert await asyncio.to_thread(started.wait, 5)
        second = asyncio.ensure_future(
            lease.execute("INSERT INTO t VALUES ('cancelled')", (), None)
        )
        await asyncio.sleep(0)  # (sent: queued behind the first)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        go.set()
        await asyncio.wait_for(first, BOUND)
        rows = await asyncio.wait_for(lease.query("SELECT v FROM t", (), None), BOUND)
        assert [r[0] for r in rows] == ["slow"]
        await asyncio.wait_for(lease.commit(), BOUND)
        assert lease.committed
        await lease.release()
        with pytest.raises(litegate.Misuse):
            await lease.execute("SELECT 1", (), None)
        read = await engine.borrow_async(1.0)
        assert [r[0] for r in await read.query("SELECT v FROM t", (), None)] == ["slow"]
        await read.release()
        with pytest.raises(litegate.Misuse):
            await read.query("SELECT 1", (), None)
        await adb.execute("INSERT INTO t VALUES ('next')", timeout=1)
        assert values(fake) == ["slow", "next"]
        assert (
            await adb.run_read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0])
            == 2
        )
    finally:
        await adb.close(timeout=5)


@pytest.mark.anyio
@BLOCKS_LOOP
async def test_an_async_snapshot_cancelled_while_waiting_for_a_reader_gives_it_back(
    fake: Faults,
) -> None:
    adb = await open_async(fake)
    engine = adb.as_sync()._engine
    try:
        await adb.execute("CREATE TABLE t(v)")
        held = await asyncio.to_thread(engine.borrow, 1.0)  # (the only reader)

        async def snap() -> Any:
            async with adb.snapshot(timeout=5) as s:
                return await s.query_value("SELECT count(*) FROM t")

        task = asyncio.ensure_future(snap())
        for _ in range(1000):  # (bounded: 5 s)
            if (await adb.stats()).pool_waits >= 1:
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(held.release)  # (now the cancelled borrow gets it: given back)
        async with adb.snapshot(timeout=1) as s:
            assert await s.query_value("SELECT count(*) FROM t") == 0
        for _ in range(200):
            if (await adb.stats()).pool_in_use == 0:
                break
            await asyncio.sleep(0.005)
        assert (await adb.stats()).pool_in_use == 0
    finally:
        await adb.close(timeout=5)


@pytest.mark.anyio
@BLOCKS_LOOP
async def test_an_async_snapshot_begun_after_the_leader_was_lost_runs_on_a_reopened_reader(
    fake: Faults,
) -> None:
    adb = await open_async(fake)
    try:
        await adb.execute("CREATE TABLE t(v)")
        async with adb.snapshot() as s:
            assert await s.query_value("SELECT count(*) FROM t") == 0
        fake.kill_all()
        async with adb.snapshot() as s:
            assert await s.query_value("SELECT count(*) FROM t") == 0
        with pytest.raises(litegate.RolledBack):
            async with adb.snapshot() as s:
                fake.kill_all()
                await s.query_value("SELECT count(*) FROM t")
    finally:
        await adb.close(timeout=5)


@pytest.mark.anyio
@BLOCKS_LOOP
async def test_an_async_snapshot_open_when_the_database_closes_is_told_closed(
    fake: Faults,
) -> None:
    """Its statements after the close are refused with ``Closed`` (not the reader threads'
    ``RuntimeError``: they are gone), and its reader is closed at its end."""
    adb = await open_async(fake)
    await adb.execute("CREATE TABLE t(v)")
    with pytest.raises(litegate.Closed):
        async with adb.snapshot() as s:
            assert await s.query_value("SELECT count(*) FROM t") == 0
            await adb.close(timeout=5)
            assert adb.closed
            await s.query_value("SELECT count(*) FROM t")
    assert all(session.closed for session in fake.live)


@pytest.mark.anyio
@BLOCKS_LOOP
async def test_closing_on_the_loop_that_holds_the_lane_takes_it_back_at_once(
    fake: Faults,
) -> None:
    """A sync ``close()`` called on the event loop whose task holds the lane (the task cannot
    run while it waits): the loop's session is dropped, its transaction rolled back, and close
    returns at once -- no thread left."""
    before = engine_threads()
    adb = await open_async(fake)
    await adb.execute("CREATE TABLE t(v)")
    inside, go = asyncio.Event(), asyncio.Event()

    async def txn() -> None:
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            inside.set()
            await go.wait()

    task = asyncio.ensure_future(txn())
    await asyncio.wait_for(inside.wait(), 5)
    t0 = time.monotonic()
    adb.as_sync().close(timeout=3)
    assert time.monotonic() - t0 < 1.5
    go.set()
    with pytest.raises(litegate.RolledBack):  # (its COMMIT finds its chain gone: nothing applied)
        await asyncio.wait_for(task, BOUND)
    await adb.close()
    assert values(fake) == []
    assert all(s.closed for s in fake.live)
    await asyncio.to_thread(assert_threads_end, before)


# ---- event loops that end ------------------------------------------------------------------


def test_a_loop_that_ended_has_its_sessions_dropped_when_another_loop_comes(
    db: Database, fake: Faults
) -> None:
    adb = db.as_async()

    async def use(v: int) -> Any:
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO t(v) VALUES (?)", (v,))
        return await adb.query_value("SELECT count(*) FROM t")

    assert asyncio.run(use(1)) == 1
    first = list(fake.loop_sessions)
    assert first and not any(s.closed for s in first)  # (kept while nothing else comes)
    assert asyncio.run(use(2)) == 2
    assert all(s.closed for s in first)  # (the ended loop's writer and reader sessions)
    assert values(fake) == [1, 2]


def test_a_loop_that_ended_while_asking_for_the_lane_is_skipped_when_its_turn_comes(
    db: Database, fake: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    release, lane = holder(db, "SELECT 1")

    async def late() -> None:
        with pytest.raises(litegate.WriteTimeout):
            async with db.as_async().transaction(timeout=0.1) as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('late')")

    asyncio.run(late())  # (its loop ends with its request for the lane still queued)
    with caplog.at_level(logging.WARNING, logger="litegate"):
        release.set()
        assert lane.outcome() == "committed"
        db.execute("INSERT INTO t(v) VALUES ('next')", timeout=1)
    assert values(fake) == ["next"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
