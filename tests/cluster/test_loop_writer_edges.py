"""Edges of the write lane lent to an event loop (litegate/_cluster/_loop_writer.py): the
error paths the everyday tests (test_loop_writer.py) do not reach.

Two stand-ins: :class:`Script`, the stand-in driver's sessions with a hook per statement (it
fails, loses its session, waits at a gate, or is answered late), under a real
:class:`ClusterEngine`; and :class:`Lane`, the engine's side of a loan played by the test, for
races between a loop's writer and the engine's writer thread. Each test checks what the
caller gets, that nothing is committed that must not be (the stand-in's file is read
directly), that the lane is given back, and it bounds every wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from time import monotonic
from typing import Any

import pytest

import litegate
from litegate._cluster import ClusterAddress, ClusterEngine, Outcome
from litegate._cluster._loop_writer import LaneLoan, LoopLease, LoopWriter, _LoopSession
from litegate._config import make_options
from litegate._engine import Counters

from . import fake_driver
from .fake_driver import FakeDriver, FakeSession
from .test_engine import URL, hold_lane
from .test_loop_writer import insert_in_transaction

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.blocks_loop(
        "the stand-in driver runs each statement on SQLite on the loop (and the tests read its "
        "file there): these test the loop writer's logic, not the loop's latency"
    ),
]

ADDRESS = ClusterAddress(("n1:9001",), "app")
SETTINGS: dict[str, Any] = {"timeout": 5.0, "busy_timeout": 5.0, "row_factory": None}
BOUND = 10.0  # (a wait no test reaches: one that does has hung)
CLOSE_WAIT = 0.05  # (a close's wait for open transactions, meant to run out)

Run = Callable[[], Outcome]
Action = Callable[["Hooked", Run], Awaitable[Outcome]]


# ---- the stand-ins ----------------------------------------------------------------------------


class Script:
    """The loop's sessions (an ``OpenAsyncSession``: the stand-in driver's, each statement
    through :meth:`on`'s hooks) and what the test does to them."""

    def __init__(self, fake: FakeDriver) -> None:
        self.fake = fake
        self.sessions: list[Hooked] = []
        self._hooks: list[tuple[Callable[[str], bool], list[int], Action]] = []

    def on(self, match: str, action: Action, *, skip: int = 0, exact: bool = False) -> None:
        """The next statement whose text contains (``exact``: is) ``match``, after ``skip``
        such, goes through ``action`` (once)."""

        def matches(sql: str) -> bool:
            return sql == match if exact else match in sql

        self._hooks.append((matches, [skip], action))

    def action(self, sql: str) -> Action | None:
        for hook in self._hooks:
            matches, skip, action = hook
            if matches(sql):
                if skip[0] == 0:
                    self._hooks.remove(hook)
                    return action
                skip[0] -= 1
        return None

    def open_session(
        self, seed: str, name: str, *, timeout: float, busy_timeout: float, row_factory: Any
    ) -> Hooked:
        inner = self.fake.open_session(
            seed, name, timeout=timeout, busy_timeout=busy_timeout, row_factory=row_factory
        )
        session = Hooked(self, inner)
        self.sessions.append(session)
        return session


class Hooked:
    """An ``AsyncSession``: a :class:`FakeSession` whose statements go through the script."""

    def __init__(self, script: Script, inner: FakeSession) -> None:
        self.script = script
        self.inner = inner

    @property
    def closed(self) -> bool:
        return self.inner.closed

    @property
    def in_transaction(self) -> bool:
        return self.inner.in_transaction

    async def connect(self) -> None:
        self.inner.connect()

    async def run(self, sql: str, params: Any, many: bool) -> Outcome:
        action = self.script.action(sql)

        def go() -> Outcome:
            return self.inner.run(sql, params, many)

        return go() if action is None else await action(self, go)

    async def close(self) -> None:
        self.inner.close()

    def force_close(self) -> None:
        self.inner.force_close()


def lose() -> Action:
    """The session dies before the statement reaches the server (nothing of it happens)."""

    async def act(session: Hooked, go: Run) -> Outcome:
        session.inner.force_close()
        raise fake_driver.OperationalError("Connection reset by peer")

    return act


def fail(message: str) -> Action:
    """The server refuses the statement; the session lives on."""

    async def act(session: Hooked, go: Run) -> Outcome:
        raise fake_driver.OperationalError(message, code=1)

    return act


def held(gate: asyncio.Event, reached: asyncio.Event) -> Action:
    """The statement waits at ``gate`` before it reaches the server."""

    async def act(session: Hooked, go: Run) -> Outcome:
        reached.set()
        await gate.wait()
        return go()

    return act


def answered_late(ran: asyncio.Event, gate: asyncio.Event) -> Action:
    """The statement runs on the server now; its answer arrives once ``gate`` opens."""

    async def act(session: Hooked, go: Run) -> Outcome:
        out = go()
        ran.set()
        await gate.wait()
        return out

    return act


def slow(turns: int) -> Action:
    """The statement reaches the server after the loop turned ``turns`` times."""

    async def act(session: Hooked, go: Run) -> Outcome:
        for _ in range(turns):
            await asyncio.sleep(0)
        return go()

    return act


def rolled_back_first() -> Action:
    """SQLite had rolled the transaction back before this statement (behind the writer's
    back: nothing the writer saw failed)."""

    async def act(session: Hooked, go: Run) -> Outcome:
        session.inner.run("ROLLBACK", (), False)
        return go()

    return act


class Lane:
    """The engine's side of a loan (``_loop_writer.Lane``), the writer thread's part played by
    the test: a loan is granted when queued (``at_once``) or by :func:`grant`; ``full``: the
    next queueing that may not wait finds the queue full."""

    def __init__(self, *, at_once: bool = True, full: bool = False) -> None:
        self.counters = Counters()
        self.loans: list[LaneLoan] = []
        self.at_once = at_once
        self.full = full
        self.waited_on: list[str] = []  # threads that queued a loan waiting for room
        self.executor = cf.ThreadPoolExecutor(2, thread_name_prefix="lane-stand-in")

    def queue_loan(self, loan: LaneLoan, wait: bool) -> bool:
        if not wait and self.full:
            self.full = False
            return False
        if wait:
            self.waited_on.append(threading.current_thread().name)
        self.loans.append(loan)
        if self.at_once:
            grant(loan)
        return True

    def lane_wanted(self) -> bool:
        return False

    def beside(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        return self.executor.submit(fn, *args)


def grant(loan: LaneLoan) -> bool:
    """The lane lent, as the engine's writer thread lends it (False: its loop gave up)."""
    if not loan.granted.set_running_or_notify_cancel():
        return False
    loan.granted.set_result(None)
    return True


@pytest.fixture
def fake(tmp_path: Path) -> FakeDriver:
    return FakeDriver(tmp_path)


@pytest.fixture
def script(fake: FakeDriver) -> Script:
    return Script(fake)


@pytest.fixture
def lane() -> Iterator[Lane]:
    stand_in = Lane()
    yield stand_in
    stand_in.executor.shutdown(wait=False, cancel_futures=True)


def writer_on(lane: Lane, script: Script) -> LoopWriter:
    """A loop writer for the running loop, on ``lane`` (chains grow old only by their size)."""
    return LoopWriter(
        lane, script.open_session, ADDRESS, SETTINGS, pragmas={}, chain_age=30.0, max_batch=100
    )


def stored(fake: FakeDriver) -> list[object]:
    """What is committed in the stand-in's file (read directly, past the engine)."""
    with contextlib.closing(sqlite3.connect(fake.root / "app.db")) as db:
        return sorted((r[0] for r in db.execute("SELECT v FROM t")), key=str)


async def until(check: Callable[[], bool]) -> None:
    """Let the loop (and the threads) run until ``check()`` holds, within BOUND."""
    stop = monotonic() + BOUND
    while not check():
        assert monotonic() < stop, "the condition never held"
        await asyncio.sleep(0.001)


async def open_adb(
    script: Script, **options: object
) -> tuple[ClusterEngine, litegate.AsyncDatabase]:
    """An engine whose loops' sessions are the script's (its threads' are the stand-in
    driver's, unhooked), its facade, and table ``t``."""
    engine = await asyncio.to_thread(
        ClusterEngine,
        make_options(URL, {"readers": 1, **options}),  # type: ignore[typeddict-item]
        sessions=script.fake.open_session,
        async_sessions=script.open_session,
    )
    adb = litegate.AsyncDatabase(engine)
    await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    return engine, adb


def make_table(fake: FakeDriver) -> None:
    with contextlib.closing(sqlite3.connect(fake.root / "app.db")) as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")


async def chain(adb: litegate.AsyncDatabase, bodies: list[object]) -> list[object]:
    """A holder's transaction (it inserts 'holder') keeps the loop's turn while one transaction
    per body waits for it; then they run one after another (a chain). A body is a value to
    insert, or an exception to raise after inserting ``-i``. What each block ended with,
    the holder's first ("committed", or the exception)."""
    held, go = asyncio.Event(), asyncio.Event()
    out: list[object] = [None] * (len(bodies) + 1)

    async def run(i: int, body: object) -> None:
        try:
            async with adb.transaction() as tx:
                if i == 0:
                    await tx.execute("INSERT INTO t(v) VALUES ('holder')")
                    held.set()
                    await go.wait()
                elif isinstance(body, BaseException):
                    await tx.execute("INSERT INTO t(v) VALUES (?)", (-i,))
                    raise body
                else:
                    await tx.execute(f"INSERT INTO t(v) VALUES ({body})")
            out[i] = "committed"
        except BaseException as exc:
            out[i] = exc

    holder = asyncio.create_task(run(0, None))
    await asyncio.wait_for(held.wait(), BOUND)
    tasks = [asyncio.create_task(run(i, b)) for i, b in enumerate(bodies, 1)]
    await asyncio.sleep(0)  # (each runs up to its wait for the turn)
    go.set()
    await asyncio.wait_for(asyncio.gather(holder, *tasks), BOUND)
    return out


# ---- a statement function's view of the loop's session ---------------------------------------


async def test_a_statement_function_run_on_its_own_loop_is_refused_not_deadlocked(
    script: Script,
) -> None:
    session = script.open_session("n1:9001", "app", **SETTINGS)
    await session.connect()
    view = _LoopSession(session, asyncio.get_running_loop(), 1.0)
    with pytest.raises(RuntimeError, match="ran on its loop"):
        view.run("SELECT 1", (), False)  # (waiting here for its own loop would never end)
    assert script.fake.sent == []
    session.force_close()


async def test_a_function_statement_that_outlasts_its_wait_gives_up_the_session(
    script: Script,
) -> None:
    """The statement's round trip outlasts its wait: the thread gets ``TimeoutError``, the
    request still on the loop is cancelled, and the session -- its request half-answered --
    is closed (never reused)."""
    reached, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(session: Hooked, go: Run) -> Outcome:
        reached.set()
        try:
            await asyncio.sleep(BOUND)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return go()

    script.on("INSERT", stuck)
    session = script.open_session("n1:9001", "app", **SETTINGS)
    await session.connect()
    view = _LoopSession(session, asyncio.get_running_loop(), 0.05)
    t0 = monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.to_thread(view.run, "INSERT INTO t(v) VALUES (1)", (), False)
    assert monotonic() - t0 < BOUND / 2
    await asyncio.wait_for(cancelled.wait(), BOUND)
    assert session.closed and view.closed
    assert script.fake.sent == []  # (it never reached the server)


# ---- turns -------------------------------------------------------------------------------------


async def test_a_closed_writer_refuses_turns_and_asks_for_no_lane(
    lane: Lane, script: Script
) -> None:
    writer = writer_on(lane, script)
    writer.abandon()
    with pytest.raises(litegate.Closed):
        await asyncio.wait_for(writer.turn(monotonic() + 1.0, "the transaction"), BOUND)
    assert lane.loans == []


async def test_tasks_cancelled_while_waiting_for_a_turn_leave_the_line(
    lane: Lane, script: Script
) -> None:
    """One cancelled and settled: its place in line is gone. One cancelled as the turn passes
    (its task not resumed yet): skipped, the next in line gets the turn. The lane, lent once,
    goes back when nobody waits."""
    writer = writer_on(lane, script)
    deadline = monotonic() + BOUND
    await asyncio.wait_for(writer.turn(deadline, "first"), BOUND)
    waiting = [asyncio.create_task(writer.turn(deadline, name)) for name in ("b", "c", "d")]
    await until(lambda: len(writer._turns) == 3)
    waiting[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    assert len(writer._turns) == 2  # (its waiter left the line)
    waiting[1].cancel()
    writer.turn_done()  # (the first is done while c's cancellation is under way)
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]
    await asyncio.wait_for(waiting[2], BOUND)  # (d has the turn)
    assert not writer._turns and not lane.loans[0].returned.is_set()
    writer.turn_done()
    assert lane.loans[0].returned.is_set() and len(lane.loans) == 1


async def test_a_turn_given_as_its_task_is_cancelled_passes_on(lane: Lane, script: Script) -> None:
    writer = writer_on(lane, script)
    deadline = monotonic() + BOUND
    await asyncio.wait_for(writer.turn(deadline, "first"), BOUND)
    given, next_one = (asyncio.create_task(writer.turn(deadline, n)) for n in ("b", "c"))
    await until(lambda: len(writer._turns) == 2)
    writer.turn_done()  # (b's turn...)
    given.cancel()  # (...as b is cancelled, before it resumed)
    with pytest.raises(asyncio.CancelledError):
        await given
    await asyncio.wait_for(next_one, BOUND)  # (passed on, not lost with b)
    writer.turn_done()
    assert lane.loans[0].returned.is_set()


async def test_a_full_engine_queue_is_waited_for_on_a_thread_not_the_loop(
    lane: Lane, script: Script
) -> None:
    lane.full = True
    writer = writer_on(lane, script)
    await asyncio.wait_for(writer.turn(monotonic() + BOUND, "the transaction"), BOUND)
    assert len(lane.waited_on) == 1 and lane.waited_on[0] != threading.current_thread().name
    writer.turn_done()
    assert lane.loans[0].returned.is_set()


@pytest.mark.parametrize(
    "granted", [pytest.param(True, id="granted"), pytest.param(False, id="queued")]
)
async def test_an_ask_cancelled_by_its_loops_shutdown_never_keeps_the_lane(
    lane: Lane, script: Script, granted: bool
) -> None:
    """The loop shuts down (its tasks are cancelled) while its loan is queued -- withdrawn,
    never lent -- or just as the writer thread lends it -- given straight back. The task
    waiting for a turn is told; the cancellation ends the asking task."""
    lane.at_once = False
    writer = writer_on(lane, script)
    waiting = asyncio.create_task(writer.turn(monotonic() + BOUND, "the transaction"))
    await until(lambda: bool(lane.loans))
    loan = lane.loans[0]
    (ask,) = writer._tasks
    if granted:
        assert grant(loan)  # (lent: its answer on its way to the loop...)
    ask.cancel()  # (...as the loop's shutdown cancels every task)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(ask, BOUND)
    with pytest.raises(litegate.Closed):
        await asyncio.wait_for(waiting, BOUND)
    if granted:
        assert loan.returned.is_set()  # (the writer thread serves the next)
    else:
        assert loan.granted.cancelled() and not grant(loan)  # (skipped by the writer thread)


async def test_a_loan_granted_after_its_writer_closed_is_given_back_at_once(
    lane: Lane, script: Script
) -> None:
    lane.at_once = False
    writer = writer_on(lane, script)
    waiting = asyncio.create_task(writer.turn(monotonic() + BOUND, "the transaction"))
    await until(lambda: bool(lane.loans))
    await asyncio.wait_for(writer.close(), BOUND)  # (while its loan is queued)
    with pytest.raises(litegate.Closed):
        await asyncio.wait_for(waiting, BOUND)
    loan = lane.loans[0]
    assert grant(loan)  # (the writer thread reaches it only now)
    await until(loan.returned.is_set)  # (given back: the writer thread is not held)
    assert script.sessions == []  # (and nothing was opened for it)


# ---- a writer abandoned under a transaction ----------------------------------------------------


@pytest.mark.parametrize("late", ["BEGIN IMMEDIATE", "'late'"], ids=["begin", "statement"])
async def test_an_answer_that_arrives_after_the_writer_was_abandoned_never_commits(
    lane: Lane, script: Script, late: str
) -> None:
    """The engine takes the lane back (its session dropped: the cluster rolls back) while a
    statement's answer is on its way to the loop: the statement itself succeeded, but the
    transaction's COMMIT is refused (``RolledBack``), nothing of it is stored, the lane is
    back, and the abandoned writer keeps no chain."""
    make_table(script.fake)
    writer = writer_on(lane, script)
    deadline = monotonic() + BOUND
    await asyncio.wait_for(writer.turn(deadline, "the transaction"), BOUND)
    lease = LoopLease(writer, deadline)
    ran, gate = asyncio.Event(), asyncio.Event()
    script.on(late, answered_late(ran, gate))
    step: asyncio.Future[Any] = asyncio.ensure_future(lease.begin())
    if late == "'late'":
        await asyncio.wait_for(step, BOUND)
        step = asyncio.ensure_future(lease.execute("INSERT INTO t(v) VALUES ('late')", (), None))
    await asyncio.wait_for(ran.wait(), BOUND)  # (it ran on the server; the answer is on its way)
    gate.set()
    writer.abandon()  # (before the loop reads the answer)
    await asyncio.wait_for(step, BOUND)
    with pytest.raises(litegate.RolledBack):
        await asyncio.wait_for(lease.commit(), BOUND)
    lease.end()
    assert lane.loans[0].returned.is_set()
    assert stored(script.fake) == []
    assert writer._chain is None


async def test_a_step_cancelled_under_its_caller_answers_it_and_cuts_the_session(
    lane: Lane, script: Script
) -> None:
    """The loop's shutdown cancels a transaction's step (its task) before its caller: the
    caller is answered (cancelled, never left waiting), the session -- its request cut off
    midway -- is dropped, and the transaction is lost: its COMMIT is ``RolledBack``."""
    make_table(script.fake)
    writer = writer_on(lane, script)
    deadline = monotonic() + BOUND
    await asyncio.wait_for(writer.turn(deadline, "the transaction"), BOUND)
    lease = LoopLease(writer, deadline)
    await asyncio.wait_for(lease.begin(), BOUND)
    reached, gate = asyncio.Event(), asyncio.Event()
    script.on("'cut'", held(gate, reached))
    caller = asyncio.ensure_future(lease.execute("INSERT INTO t(v) VALUES ('cut')", (), None))
    await asyncio.wait_for(reached.wait(), BOUND)
    step = lease._tail
    assert step is not None
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, BOUND)
    assert script.sessions[0].closed
    with pytest.raises(litegate.RolledBack):
        await asyncio.wait_for(lease.commit(), BOUND)
    lease.end()
    await until(lane.loans[0].returned.is_set)
    assert stored(script.fake) == []


def test_ending_a_lease_from_a_thread_as_its_loop_closes_abandons_the_writer(
    lane: Lane, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``end()`` from a thread finds the loop running, and the loop closes before the end is
    handed to it (the race is simulated: a closed loop that still says it runs): the writer
    is abandoned there -- its session dropped, nothing stored, the lane back."""
    make_table(script.fake)
    loop = asyncio.new_event_loop()

    async def begun() -> tuple[LoopWriter, LoopLease]:
        writer = writer_on(lane, script)
        deadline = monotonic() + BOUND
        await writer.turn(deadline, "the transaction")
        lease = LoopLease(writer, deadline)
        await lease.begin()
        await lease.execute("INSERT INTO t(v) VALUES ('left open')", (), None)
        return writer, lease

    try:
        _, lease = loop.run_until_complete(asyncio.wait_for(begun(), BOUND))
    finally:
        loop.close()
    monkeypatch.setattr(loop, "is_running", lambda: True)
    ender = threading.Thread(target=lease.end)
    ender.start()
    ender.join(BOUND)
    assert lane.loans[0].returned.is_set()
    assert all(s.closed for s in script.sessions)
    assert stored(script.fake) == []


async def test_a_released_lease_closes_its_cursors_and_refuses_more(script: Script) -> None:
    engine, adb = await open_adb(script)
    try:

        class Cursor:
            closed = False

            def close(self) -> None:
                self.closed = True

        lease = await engine.lease_async(BOUND)
        await lease.begin()
        await lease.execute("INSERT INTO t(v) VALUES ('released')", (), None)
        cursor = Cursor()
        await lease.release([cursor])
        assert lease.ended
        await until(lambda: cursor.closed)
        with pytest.raises(litegate.Misuse):
            await lease.execute("INSERT INTO t(v) VALUES ('after its end')", (), None)
        await asyncio.wait_for(insert_in_transaction(adb, "next"), BOUND)  # (the turn passed on)
        assert stored(script.fake) == ["next"]
    finally:
        await adb.close()


# ---- faults inside a chain, on an engine -------------------------------------------------------


async def test_a_commit_that_finds_its_transaction_gone_is_reported_unknown(script: Script) -> None:
    """SQLite had rolled the chain's transaction back unseen: its COMMIT finds none open. What
    ran may have been written in autocommit since, so every member is told ``OutcomeUnknown``
    (never "committed", never a plain "rolled back"); the next transaction goes on."""
    _, adb = await open_adb(script, group_wait=30.0)
    try:
        script.on("COMMIT", rolled_back_first())
        out = await chain(adb, [1, 2])
        assert all(isinstance(o, litegate.OutcomeUnknown) for o in out), out
        assert isinstance(out[0], BaseException)
        assert isinstance(out[0].__cause__, sqlite3.OperationalError)
        await asyncio.wait_for(insert_in_transaction(adb, "next"), BOUND)
        assert stored(script.fake) == ["next"]
    finally:
        await adb.close()


async def test_a_savepoint_lost_as_a_transaction_joins_the_chain_loses_only_the_chain(
    script: Script,
) -> None:
    """The holder's COMMIT waits in the chain; the next rolls back its part; the third opens its
    own savepoint and finds the session dead: the chain (the holder's part) is lost and the
    holder told, and the third begins a chain of its own on a new session."""
    _, adb = await open_adb(script, group_wait=30.0)
    try:
        script.on("SAVEPOINT litegate_member", lose(), skip=1)  # (the holder's commit opens one)
        out = await chain(adb, [KeyError("b"), 3])
        assert isinstance(out[0], litegate.RolledBack), out
        assert isinstance(out[1], KeyError) and out[2] == "committed", out
        assert stored(script.fake) == [3]
    finally:
        await adb.close()


async def test_a_savepoint_the_server_refuses_drops_the_chain_and_the_next_begins_anew(
    script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    _, adb = await open_adb(script, group_wait=30.0)
    try:
        script.on("SAVEPOINT litegate_member", fail("too many savepoints"))
        out = await chain(adb, [2])
        assert isinstance(out[0], litegate.RolledBack) and out[1] == "committed", out
        assert stored(script.fake) == [2]
        assert "SAVEPOINT on" in caplog.text and "the chain is dropped" in caplog.text
    finally:
        await adb.close()


async def test_a_rollback_to_the_server_refuses_drops_the_chain_not_the_next(
    script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing transaction's part cannot be undone alone: the chain it may still be in is
    dropped with the session (the holder told), the failing one gets its own error, and the
    next begins anew -- its part alone is stored."""
    _, adb = await open_adb(script, group_wait=30.0)
    try:
        script.on("ROLLBACK TO litegate_member", fail("disk I/O error"))
        out = await chain(adb, [KeyError("b"), 3])
        assert isinstance(out[0], litegate.RolledBack), out
        assert isinstance(out[1], KeyError) and out[2] == "committed", out
        assert stored(script.fake) == [3]
        assert "ROLLBACK TO on" in caplog.text
    finally:
        await adb.close()


@pytest.mark.parametrize("then", ["commit", "function"])
async def test_after_sqlite_rolled_a_transaction_back_nothing_more_of_it_runs_or_commits(
    script: Script, then: str
) -> None:
    """``INSERT OR ROLLBACK`` fails and SQLite rolls the transaction back; the caller catches
    the error and goes on: a statement function is refused before it runs (it would write in
    autocommit), and the block's COMMIT is ``RolledBack``."""
    _, adb = await open_adb(script)
    try:
        await adb.execute("INSERT INTO t(v) VALUES ('taken')")
        ran: list[str] = []

        def writes(conn: sqlite3.Connection) -> None:
            ran.append("fn")
            conn.execute("INSERT INTO t(v) VALUES ('by fn')")

        with pytest.raises(litegate.RolledBack):
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('mine')")
                with pytest.raises(sqlite3.IntegrityError):
                    await tx.execute("INSERT OR ROLLBACK INTO t(v) VALUES ('taken')")
                if then == "function":
                    await tx.run(writes)
        assert ran == []
        await asyncio.wait_for(insert_in_transaction(adb, "next"), BOUND)
        assert stored(script.fake) == ["next", "taken"]
    finally:
        await adb.close()


async def test_a_function_after_the_session_died_is_rolled_back_not_run(script: Script) -> None:
    _, adb = await open_adb(script)
    try:
        with pytest.raises(litegate.RolledBack):
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('before')")
                script.fake.kill_all()  # (the leader crashed between two statements)
                with pytest.raises(litegate.RolledBack):
                    await tx.executemany("INSERT INTO t(v) VALUES (?)", [("many",)])
        await asyncio.wait_for(insert_in_transaction(adb, "next"), BOUND)  # (a new session)
        assert stored(script.fake) == ["next"]
    finally:
        await adb.close()


async def test_a_session_lost_while_checking_a_failed_statement_tells_the_chain_at_once(
    script: Script,
) -> None:
    """A statement fails; checking whether the chain's transaction survived finds the session
    dead: the transactions waiting in the chain are told at once (not at the next COMMIT),
    the caller gets its own error, and its block's end is ``RolledBack``."""
    _, adb = await open_adb(script, group_wait=30.0)
    try:
        await adb.execute("INSERT INTO t(v) VALUES ('taken')")
        script.on("BEGIN", lose(), exact=True)
        held, go = asyncio.Event(), asyncio.Event()
        holder_out: list[object] = []

        async def holder() -> None:
            try:
                async with adb.transaction() as tx:
                    await tx.execute("INSERT INTO t(v) VALUES ('holder')")
                    held.set()
                    await go.wait()
                holder_out.append("committed")
            except BaseException as exc:
                holder_out.append(exc)

        async def second() -> None:
            async with adb.transaction() as tx:  # (its turn comes once the holder commits)
                await tx.execute("INSERT INTO t(v) VALUES ('second')")
                with pytest.raises(sqlite3.IntegrityError):
                    await tx.execute("INSERT INTO t(v) VALUES ('taken')")
                await until(lambda: bool(holder_out))  # (told now, while this one goes on)
                assert isinstance(holder_out[0], litegate.RolledBack), holder_out

        first = asyncio.create_task(holder())
        await asyncio.wait_for(held.wait(), BOUND)
        then = asyncio.create_task(second())
        await asyncio.sleep(0)  # (it waits for its turn)
        go.set()
        with pytest.raises(litegate.RolledBack):
            await asyncio.wait_for(then, BOUND)
        await asyncio.wait_for(first, BOUND)
        await asyncio.wait_for(insert_in_transaction(adb, "next"), BOUND)
        assert stored(script.fake) == ["next", "taken"]
    finally:
        await adb.close()


@pytest.mark.parametrize("how", ["rolled back", "swallowed by a function", "still open"])
async def test_a_chain_whose_check_fails_is_dropped_never_reported_committed(
    script: Script, how: str
) -> None:
    """A statement fails -- SQLite rolled the chain's transaction back with it (``INSERT OR
    ROLLBACK``, caught by the app or swallowed by a function), or kept it open (a plain
    constraint error) -- and the check that tells which (a ``BEGIN``) fails with an error
    of its own: unknown whether a transaction is open, the chain is dropped with the session
    (fail closed). Else, rolled back, the next member's SAVEPOINT would begin a new
    transaction and the chain's COMMIT report the lost parts committed. The caller gets its
    own error, not the check's; its block's end ``RolledBack`` -- ``OutcomeUnknown`` after a
    function that swallowed the rollback (it may have written outside the transaction)."""
    _, adb = await open_adb(script, group_wait=30.0)
    try:
        await adb.execute("INSERT INTO t(v) VALUES ('taken')")
        script.on("BEGIN", fail("disk I/O error"), exact=True)
        held, go = asyncio.Event(), asyncio.Event()
        out: dict[str, object] = {}
        failing = "INSERT INTO t(v) VALUES ('taken')"
        if how != "still open":
            failing = failing.replace("INSERT", "INSERT OR ROLLBACK")

        def swallows(conn: sqlite3.Connection) -> None:
            with contextlib.suppress(sqlite3.IntegrityError):
                conn.execute(failing)

        async def attempt(name: str) -> None:
            try:
                async with adb.transaction() as tx:
                    if name == "holder":
                        await tx.execute("INSERT INTO t(v) VALUES ('holder')")
                        held.set()
                        await go.wait()
                    elif name == "failing" and how == "swallowed by a function":
                        await tx.run(swallows)
                    elif name == "failing":
                        try:
                            await tx.execute(failing)
                        except sqlite3.Error as exc:  # (the app catches it and goes on)
                            out["its error"] = exc
                    else:
                        await tx.execute("INSERT INTO t(v) VALUES ('next')")
                out[name] = "committed"
            except BaseException as exc:
                out[name] = exc

        holder = asyncio.create_task(attempt("holder"))
        await asyncio.wait_for(held.wait(), BOUND)
        others = [asyncio.create_task(attempt(n)) for n in ("failing", "next")]
        await asyncio.sleep(0)  # (they wait for their turns)
        go.set()
        await asyncio.wait_for(asyncio.gather(holder, *others), BOUND)
        assert isinstance(out["holder"], litegate.RolledBack), out
        if how == "swallowed by a function":
            assert isinstance(out["failing"], litegate.OutcomeUnknown), out
        else:
            assert isinstance(out["its error"], sqlite3.IntegrityError), out
            assert isinstance(out["failing"], litegate.RolledBack), out
        assert out["next"] == "committed", out
        assert stored(script.fake) == ["next", "taken"]
    finally:
        await adb.close()


async def test_operations_sent_without_waiting_run_in_the_order_sent(script: Script) -> None:
    """Three statements sent at once, the first slow to reach the server: each runs after the
    one before."""
    _, adb = await open_adb(script)
    try:
        script.on("'first'", slow(5))
        async with adb.transaction() as tx:
            await asyncio.wait_for(
                asyncio.gather(
                    *(tx.execute(f"INSERT INTO t(v) VALUES ('{v}')") for v in ("first", "2", "3"))
                ),
                BOUND,
            )
        with contextlib.closing(sqlite3.connect(script.fake.root / "app.db")) as db:
            assert [r[0] for r in db.execute("SELECT v FROM t ORDER BY id")] == ["first", "2", "3"]
    finally:
        await adb.close()


# ---- a snapshot on the lane --------------------------------------------------------------------


async def test_a_snapshot_on_the_lane_survives_its_failed_statement_and_rolls_back_at_its_end(
    script: Script,
) -> None:
    """A snapshot is never chained: a failed statement sends no check of a chain and leaves it
    usable; its end without a COMMIT rolls it back, so the next transaction can begin."""
    engine, adb = await open_adb(script)
    try:
        await insert_in_transaction(adb, "before")
        lease = await engine.lease_async(BOUND)
        try:
            await lease.begin_snapshot()
            sent = len(script.fake.sent)
            with pytest.raises(sqlite3.OperationalError):
                await lease.query("SELECT v FROM missing", (), None)
            assert script.fake.sent[sent:] == ["SELECT v FROM missing"]  # (no BEGIN: no chain)
            assert [r[0] for r in await lease.query("SELECT v FROM t", (), None)] == ["before"]
        finally:
            lease.end()
        await asyncio.wait_for(insert_in_transaction(adb, "after"), BOUND)
        assert "ROLLBACK" in script.fake.sent[sent:]
        assert stored(script.fake) == ["after", "before"]
    finally:
        await adb.close()


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        pytest.param("gone", litegate.RolledBack, id="session-gone-before"),
        pytest.param("lost", litegate.OutcomeUnknown, id="lost-during"),
    ],
)
async def test_a_snapshot_whose_commit_is_lost_is_never_reported_committed(
    script: Script, fault: str, error: type[Exception]
) -> None:
    engine, adb = await open_adb(script)
    try:
        lease = await engine.lease_async(BOUND)
        try:
            await lease.begin_snapshot()
            await lease.query("SELECT count(*) FROM t", (), None)
            if fault == "gone":
                script.fake.kill_all()  # (the leader crashed after the read)
            else:
                script.on("COMMIT", lose())
            with pytest.raises(error):
                await asyncio.wait_for(lease.commit(), BOUND)
            assert not lease.committed
        finally:
            lease.end()
        await asyncio.wait_for(insert_in_transaction(adb, "next"), BOUND)  # (the lane moved on)
        assert stored(script.fake) == ["next"]
    finally:
        await adb.close()


async def test_a_snapshot_begun_after_close_took_the_lane_back_sends_nothing(
    script: Script,
) -> None:
    """As a transaction's BEGIN (test_loop_writer.py): the turn was given, ``close(timeout)``
    took the lane back, and the snapshot's BEGIN is refused -- never sent on a new session."""
    engine = await asyncio.to_thread(
        ClusterEngine,
        make_options(URL, {"readers": 1}),
        sessions=script.fake.open_session,
        async_sessions=script.open_session,
    )
    lease = await engine.lease_async(BOUND)
    await asyncio.to_thread(engine.close, CLOSE_WAIT)
    await until(lambda: not engine._writer.is_alive())  # (the loop ran the writer's abandon)
    sent = len(script.fake.sent)
    with pytest.raises(litegate.Closed):
        await asyncio.wait_for(lease.begin_snapshot(), BOUND)
    lease.end()
    assert script.fake.sent[sent:] == [] and script.sessions == []


# ---- closing, and a loop's shutdown ------------------------------------------------------------


@pytest.mark.parametrize("then", ["own error", "commit"])  # (a next statement: test_loop_writer)
async def test_closing_on_the_loop_with_a_transaction_midway_ends_it_and_frees_the_lane(
    script: Script, then: str
) -> None:
    """``await adb.close(timeout)`` on the loop whose task holds a transaction: once the
    engine's close gives up waiting, the loop's writer drops its session (rolled back) and
    gives the lane back. The block's end then fails (``RolledBack``), or the block leaves
    with its own error, which reaches the caller unchanged; nothing of it is stored."""
    engine, adb = await open_adb(script)
    inside, go = asyncio.Event(), asyncio.Event()
    outcome: list[object] = []

    async def midway() -> None:
        try:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES ('midway')")
                inside.set()
                await go.wait()
                if then == "own error":
                    raise KeyError("the block's own")
            outcome.append("committed")
        except BaseException as exc:
            outcome.append(exc)

    task = asyncio.create_task(midway())
    try:
        await asyncio.wait_for(inside.wait(), BOUND)
        await asyncio.wait_for(adb.close(timeout=CLOSE_WAIT), BOUND)
        await until(lambda: not engine._writer.is_alive())  # (the lane came back to it)
        go.set()
        await asyncio.wait_for(task, BOUND)
    finally:
        await adb.close(timeout=CLOSE_WAIT)
    assert len(outcome) == 1, outcome
    expected = KeyError if then == "own error" else litegate.RolledBack
    assert isinstance(outcome[0], expected), outcome
    assert stored(script.fake) == []


async def test_closing_from_a_thread_tells_the_chain_and_the_tasks_in_line(script: Script) -> None:
    """Closing while a transaction waits in the chain for its COMMIT, another holds the turn,
    and a third waits for one: the first is told it did not commit, the third that the
    database is closed, the second fails at its next statement; nothing is stored."""
    engine, adb = await open_adb(script, group_wait=30.0)
    first_in, go_first, second_in, go_second = (asyncio.Event() for _ in range(4))
    outcome: dict[str, object] = {}

    async def attempt(name: str, entered: asyncio.Event | None, go: asyncio.Event | None) -> None:
        try:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO t(v) VALUES (?)", (name,))
                if entered is not None and go is not None:
                    entered.set()
                    await go.wait()
                    await tx.execute("INSERT INTO t(v) VALUES (?)", (name + " again",))
            outcome[name] = "committed"
        except BaseException as exc:
            outcome[name] = exc

    try:
        first = asyncio.create_task(attempt("first", first_in, go_first))
        await asyncio.wait_for(first_in.wait(), BOUND)
        second = asyncio.create_task(attempt("second", second_in, go_second))
        await asyncio.sleep(0)  # (it waits for its turn)
        go_first.set()  # (the first commits into the chain; the second gets the turn)
        await asyncio.wait_for(second_in.wait(), BOUND)
        third = asyncio.create_task(attempt("third", None, None))
        await asyncio.sleep(0)
        assert not first.done() and not third.done()
        await asyncio.to_thread(engine.close, CLOSE_WAIT)
        await asyncio.wait_for(asyncio.gather(first, third), BOUND)
        go_second.set()
        await asyncio.wait_for(second, BOUND)
    finally:
        await adb.close(timeout=CLOSE_WAIT)
    assert isinstance(outcome["first"], litegate.RolledBack), outcome
    assert isinstance(outcome["second"], litegate.Error), outcome
    assert isinstance(outcome["third"], litegate.Closed), outcome
    assert stored(script.fake) == []


def _shut_down_midway(script: Script, engine: ClusterEngine, where: str) -> list[object]:
    """A loop whose task is in a transaction, held ``where``, ends (``asyncio.run``
    cancels what is left): what the task's block ended with, then ``tx.committed``."""
    adb = litegate.AsyncDatabase(engine)
    outcome: list[object] = []

    async def main() -> None:
        reached, gate = asyncio.Event(), asyncio.Event()  # (the gate never opens)
        if where in ("statement", "function"):
            script.on("'midway'", held(gate, reached))
        elif where == "commit":
            script.on("COMMIT", held(gate, reached))

        def writes(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t(v) VALUES ('midway')")

        async def transaction() -> None:
            tx = adb.transaction()
            try:
                async with tx:
                    if where == "function":
                        await tx.run(writes)
                    else:
                        await tx.execute("INSERT INTO t(v) VALUES ('midway')")
            except BaseException as exc:
                outcome.extend((exc, tx.committed))
                raise
            outcome.extend(("committed", tx.committed))

        midway = asyncio.create_task(transaction())
        if where == "lane":
            await until(engine.lane_wanted)  # (its loan queued behind the thread's hold)
        else:
            await asyncio.wait_for(reached.wait(), BOUND)
        assert not midway.done()

    asyncio.run(main())
    return outcome


@pytest.mark.parametrize("where", ["statement", "function", "commit", "lane"])
def test_a_loop_that_ends_midway_commits_nothing_and_gives_the_lane_back(
    script: Script, where: str
) -> None:
    """The loop ends while its task's statement, its statement function, or its chain's
    COMMIT is on the way to the server, or while its loan is still queued: the cancelled
    step drops the loop's session (nothing of it commits), the task is cancelled (never told
    it committed), and a thread's write gets the lane at once."""
    engine = ClusterEngine(
        make_options(URL, {"readers": 1, "hold_warn": 0.1}),
        sessions=script.fake.open_session,
        async_sessions=script.open_session,
    )
    db = litegate.Database(engine)
    try:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
        release, holder = hold_lane(db) if where == "lane" else (None, None)
        outcome = _shut_down_midway(script, engine, where)
        if release is not None and holder is not None:
            release.set()
            holder.join(BOUND)
        t0 = time.monotonic()
        db.execute("INSERT INTO t(v) VALUES ('next')", timeout=BOUND)
        assert time.monotonic() - t0 < BOUND / 3
        assert isinstance(outcome[0], asyncio.CancelledError) and outcome[1] is False, outcome
        assert all(s.closed for s in script.sessions)
        assert stored(script.fake) == ["next"]
    finally:
        db.close()


def test_a_function_raising_system_exit_fails_its_transaction_not_the_loop(
    script: Script,
) -> None:
    """A ``SystemExit`` from a statement function (on one of the engine's threads) reaches its
    caller, as any error of the function's: it must not escape the event loop (as it would
    from a task of the loop writer's own) and end the program's ``asyncio.run``."""
    engine = ClusterEngine(
        make_options(URL, {"readers": 1}),
        sessions=script.fake.open_session,
        async_sessions=script.open_session,
    )
    db = litegate.Database(engine)
    try:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
        adb = litegate.AsyncDatabase(engine)

        def exits(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t(v) VALUES ('exits')")
            raise SystemExit(3)

        async def main() -> object:
            code: object = None
            try:
                async with adb.transaction() as tx:
                    await tx.run(exits)
            except SystemExit as exc:
                code = exc.code
            await insert_in_transaction(adb, "next")
            return code

        try:
            code = asyncio.run(asyncio.wait_for(main(), BOUND))
        except SystemExit:
            pytest.fail("a statement function's SystemExit escaped the event loop")
        assert code == 3
        assert stored(script.fake) == ["next"]
    finally:
        db.close()


def test_a_stopped_loop_whose_transaction_was_ended_from_a_thread_writes_again(
    script: Script,
) -> None:
    engine = ClusterEngine(
        make_options(URL, {"readers": 1}),
        sessions=script.fake.open_session,
        async_sessions=script.open_session,
    )
    db = litegate.Database(engine)
    loop = asyncio.new_event_loop()
    try:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
        adb = litegate.AsyncDatabase(engine)

        async def left_open() -> Any:
            lease = await engine.lease_async(BOUND)
            await lease.begin()
            await lease.execute("INSERT INTO t(v) VALUES ('left open')", (), None)
            return lease

        lease = loop.run_until_complete(asyncio.wait_for(left_open(), BOUND))
        ender = threading.Thread(target=lease.end)  # (a close() elsewhere, a __del__ ...)
        ender.start()
        ender.join(BOUND)
        db.execute("INSERT INTO t(v) VALUES ('thread')", timeout=BOUND)  # (the lane came back)
        loop.run_until_complete(asyncio.wait_for(insert_in_transaction(adb, "again"), BOUND))
        assert stored(script.fake) == ["again", "thread"]
    finally:
        loop.close()
        db.close()
