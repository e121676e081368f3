"""One loop's reader sessions (litegate/_cluster/_loop_readers.py), on a stand-in whose
statements wait at a gate the test holds: tasks really contend for a pool of one or two
sessions. Waiters are served in turn and time out at their deadline; a session handed to a
waiter that is cancelled meanwhile goes on to the next; a session lost mid-read is replaced
within the deadline; a cancelled read's session is dropped; closing or abandoning the pool
ends every session and opens none after."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from time import monotonic
from typing import Any

import pytest

from litegate import Closed, PoolTimeout, Refused, Unavailable
from litegate._cluster import ClusterAddress, Outcome
from litegate._cluster._loop_readers import AsyncLink, LoopReaders

from .fake_driver import OperationalError

pytestmark = pytest.mark.anyio

ADDRESS = ClusterAddress(("n1:9001", "n2:9002"), "app")
SETTINGS: dict[str, Any] = {"timeout": 5.0, "busy_timeout": 5.0, "row_factory": None}
LONG = 5.0  # (a deadline no test reaches: a test that waits for it has failed)


class Cluster:
    """The stand-in sessions' factory (an ``OpenAsyncSession``) and what the test controls:
    ``gate``, at which every statement waits while it is clear; ``connecting``, at which every
    connect (and close) waits; ``down``, seeds that refuse; ``die``, how many of the next
    statements find their session dead. Seed ``broken:1`` fails before a session exists;
    ``rude:1``'s sessions fail to close."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []  # every session opened, in order
        self.sent: list[str] = []  # statements, as they reached their session
        self.entered: asyncio.Queue[Session] = asyncio.Queue()  # (the session of each)
        self.gate = asyncio.Event()
        self.gate.set()
        self.connecting = asyncio.Event()
        self.connecting.set()
        self.down: set[str] = set()
        self.die = 0

    def open_session(
        self, seed: str, name: str, *, timeout: float, busy_timeout: float, row_factory: Any
    ) -> Session:
        if seed == "broken:1":
            raise OSError("no such host")
        session = Session(self, len(self.sessions) + 1, seed)
        self.sessions.append(session)
        return session

    def live(self) -> list[Session]:
        return [s for s in self.sessions if not s.closed]


class Session:
    """An ``AsyncSession``: a statement's rows say which session answered it."""

    def __init__(self, cluster: Cluster, number: int, seed: str) -> None:
        self.cluster = cluster
        self.number = number
        self.seed = seed
        self.closed = False
        self.in_transaction = False
        self.force_closed = False  # force_close() was called
        self.closing = False  # close() was called
        self.closed_politely = False  # close() was awaited to the end

    async def connect(self) -> None:
        if self.seed in self.cluster.down:
            self.closed = True
            raise ConnectionRefusedError(f"{self.seed} refused the connection")
        await self.cluster.connecting.wait()

    async def run(self, sql: str, params: Any, many: bool) -> Outcome:
        cluster = self.cluster
        if self.closed:
            raise ConnectionError("the session is closed")
        cluster.sent.append(sql)
        cluster.entered.put_nowait(self)
        await cluster.gate.wait()
        if cluster.die > 0:
            cluster.die -= 1
            self.closed = True
        if self.closed:  # (it died, or was dropped, while the statement was under way)
            raise ConnectionResetError("Connection reset by peer")
        if "missing" in sql:
            raise OperationalError(f"no such table: missing ({sql})", code=1)
        if sql == "ROLLBACK":
            self.in_transaction = False
        return Outcome(None, [(self.number, sql)], -1, None)

    async def close(self) -> None:
        self.closing = True
        await self.cluster.connecting.wait()  # (a word to the server)
        if self.seed == "rude:1":
            raise ConnectionResetError("Connection reset by peer")
        self.closed = True
        self.closed_politely = True

    def force_close(self) -> None:
        self.closed = True
        self.force_closed = True


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


async def until(check: Callable[[], bool]) -> None:
    """Let the loop run until ``check()`` holds (a handshake, not a timed wait)."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("the tasks never got there")


def pool_of(cluster: Cluster, size: int) -> LoopReaders:
    return LoopReaders(cluster.open_session, ADDRESS, size, dict(SETTINGS))


def answered_by(out: Outcome) -> int:
    """The number of the session that answered."""
    return int(out.rows[0][0])


async def test_waiters_are_served_in_arrival_order(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    cluster.gate.clear()
    tasks = [asyncio.create_task(pool.query("SELECT 'first'", (), monotonic() + LONG))]
    await cluster.entered.get()
    for n in range(4):
        tasks.append(asyncio.create_task(pool.query(f"SELECT {n}", (), monotonic() + LONG)))
        await until(lambda: len(pool._waiters) == len(tasks) - 1)  # (each in line in turn)
    cluster.gate.set()
    outs = await asyncio.gather(*tasks)
    assert cluster.sent == ["SELECT 'first'", "SELECT 0", "SELECT 1", "SELECT 2", "SELECT 3"]
    assert [answered_by(o) for o in outs] == [1] * 5  # (one session, handed down the line)
    assert len(cluster.sessions) == 1 and pool._idle and not pool._waiters


async def test_two_sessions_at_most_and_both_reused(cluster: Cluster) -> None:
    pool = pool_of(cluster, 2)
    cluster.gate.clear()
    tasks = [
        asyncio.create_task(pool.query(f"SELECT {n}", (), monotonic() + LONG)) for n in range(6)
    ]
    await until(lambda: len(cluster.sent) == 2 and len(pool._waiters) == 4)
    cluster.gate.set()
    outs = await asyncio.gather(*tasks)
    assert len(cluster.sessions) == 2
    assert sorted({answered_by(o) for o in outs}) == [1, 2]
    assert sorted(cluster.sent) == [f"SELECT {n}" for n in range(6)]
    assert len(pool._idle) == 2 and not pool._waiters


async def test_a_waiter_times_out_at_its_deadline(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    cluster.gate.clear()
    holder = asyncio.create_task(pool.query("SELECT 'held'", (), monotonic() + LONG))
    await cluster.entered.get()
    t0 = monotonic()
    with pytest.raises(PoolTimeout):
        await pool.query("SELECT 'late'", (), t0 + 0.1)
    waited = monotonic() - t0
    assert 0.09 <= waited < 1.0, waited
    assert not pool._waiters  # (it left the line)
    cluster.gate.set()
    assert answered_by(await holder) == 1
    assert answered_by(await pool.query("SELECT 'next'", (), monotonic() + LONG)) == 1
    assert len(cluster.sessions) == 1 and "SELECT 'late'" not in cluster.sent


async def test_a_session_handed_to_a_cancelled_waiter_goes_to_the_next(
    cluster: Cluster,
) -> None:
    pool = pool_of(cluster, 1)
    link = await pool._borrow(monotonic() + LONG)
    first = asyncio.create_task(pool.query("SELECT 'cancelled'", (), monotonic() + LONG))
    await until(lambda: len(pool._waiters) == 1)
    second = asyncio.create_task(pool.query("SELECT 'next'", (), monotonic() + 1.0))
    await until(lambda: len(pool._waiters) == 2)
    pool._give_back(link)  # (handed to the first waiter ...)
    first.cancel()  # (... which is cancelled before it could take it)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert answered_by(await second) == 1  # (the same session, passed on)
    assert cluster.sent == ["SELECT 'next'"]
    assert len(cluster.sessions) == 1 and not cluster.sessions[0].closed
    assert pool._idle == [link] and pool._all == {link}


async def test_a_session_handed_to_a_cancelled_last_waiter_goes_back_idle(
    cluster: Cluster,
) -> None:
    pool = pool_of(cluster, 1)
    link = await pool._borrow(monotonic() + LONG)
    waiter = asyncio.create_task(pool.query("SELECT 'cancelled'", (), monotonic() + LONG))
    await until(lambda: len(pool._waiters) == 1)
    pool._give_back(link)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool._idle == [link] and not pool._waiters
    assert answered_by(await pool.query("SELECT 'next'", (), monotonic() + LONG)) == 1
    assert len(cluster.sessions) == 1


async def test_room_handed_to_a_cancelled_waiter_goes_to_the_next(cluster: Cluster) -> None:
    """A session given back dead leaves room for a new one: the waiter told so is cancelled
    at that moment, and the next waiter opens it (instead of waiting for its deadline)."""
    pool = pool_of(cluster, 1)
    link = await pool._borrow(monotonic() + LONG)
    first = asyncio.create_task(pool.query("SELECT 'cancelled'", (), monotonic() + LONG))
    await until(lambda: len(pool._waiters) == 1)
    second = asyncio.create_task(pool.query("SELECT 'next'", (), monotonic() + 1.0))
    await until(lambda: len(pool._waiters) == 2)
    link.drop()
    pool._give_back(link)  # (room for one, told to the first waiter ...)
    first.cancel()  # (... cancelled before it could open it)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert answered_by(await second) == 2
    assert cluster.sent == ["SELECT 'next'"]
    assert [s.number for s in cluster.live()] == [2] and pool._all == set(pool._idle)


@pytest.mark.blocks_loop(
    "the test holds the loop past a waiter's deadline, so that the session is handed to it "
    "as its deadline passes"
)
async def test_a_session_handed_as_the_waiter_times_out_is_not_lost(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    link = await pool._borrow(monotonic() + LONG)
    waiter = asyncio.create_task(pool.query("SELECT 'late'", (), monotonic() + 0.02))
    await until(lambda: len(pool._waiters) == 1)
    time.sleep(0.03)  # noqa: ASYNC251 (its deadline passes; its timer has not run yet)
    pool._give_back(link)
    try:
        got: Outcome | PoolTimeout = await waiter
    except PoolTimeout as exc:
        got = exc
    # Either it took the session in time or it timed out and the session went back: in
    # both cases the session is the pool's, and the next read gets it.
    assert isinstance(got, PoolTimeout) or answered_by(got) == 1
    assert answered_by(await pool.query("SELECT 'next'", (), monotonic() + LONG)) == 1
    assert len(cluster.sessions) == 1 and pool._idle == [link] and not pool._waiters


@pytest.mark.blocks_loop(
    "the test holds the loop past a waiter's deadline, so that the session is handed over "
    "just after the waiter's timer ran"
)
async def test_a_session_handed_just_after_a_waiter_timed_out_goes_to_the_next(
    cluster: Cluster,
) -> None:
    pool = pool_of(cluster, 1)
    link = await pool._borrow(monotonic() + LONG)
    late = asyncio.create_task(pool.query("SELECT 'late'", (), monotonic() + 0.02))
    await until(lambda: len(pool._waiters) == 1)
    on_time = asyncio.create_task(pool.query("SELECT 'next'", (), monotonic() + LONG))
    await until(lambda: len(pool._waiters) == 2)
    time.sleep(0.03)  # noqa: ASYNC251 (the first waiter's deadline passes)
    # Run after its timer (due earlier), before its task has seen the timeout.
    asyncio.get_running_loop().call_later(0, pool._give_back, link)
    with pytest.raises(PoolTimeout):
        await late
    assert answered_by(await on_time) == 1
    assert cluster.sent == ["SELECT 'next'"]
    assert len(cluster.sessions) == 1 and pool._idle == [link] and not pool._waiters


async def test_a_session_lost_mid_read_is_replaced_within_the_deadline(
    cluster: Cluster,
) -> None:
    pool = pool_of(cluster, 1)
    cluster.gate.clear()
    read = asyncio.create_task(pool.query("SELECT 1", (), monotonic() + LONG))
    lost = await cluster.entered.get()
    cluster.die = 1  # (the leader goes while the statement is under way)
    cluster.gate.set()
    assert answered_by(await read) == 2
    assert cluster.sent == ["SELECT 1", "SELECT 1"]
    assert lost.closed and lost.force_closed
    assert [s.number for s in cluster.live()] == [2] and len(pool._all) == 1


async def test_a_session_lost_past_the_deadline_is_unavailable(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    cluster.gate.clear()
    deadline = monotonic() + 0.05
    read = asyncio.create_task(pool.query("SELECT 1", (), deadline))
    lost = await cluster.entered.get()
    await asyncio.sleep(max(deadline - monotonic(), 0) + 0.01)
    cluster.die = 1
    cluster.gate.set()
    with pytest.raises(Unavailable, match="the leader was lost"):
        await read
    assert cluster.sessions == [lost] and lost.closed  # (none opened past the deadline)
    assert not pool._all and not pool._idle


async def test_a_waiter_opens_the_session_a_lost_one_leaves_room_for(
    cluster: Cluster,
) -> None:
    pool = pool_of(cluster, 1)
    link = await pool._borrow(monotonic() + LONG)
    waiter = asyncio.create_task(pool.query("SELECT 'waiting'", (), monotonic() + 1.0))
    await until(lambda: len(pool._waiters) == 1)
    link.drop()
    pool._give_back(link)
    assert answered_by(await waiter) == 2
    assert [s.number for s in cluster.live()] == [2] and pool._all == set(pool._idle)


async def test_a_cancelled_read_drops_its_session(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    cluster.gate.clear()
    read = asyncio.create_task(pool.query("SELECT 'cut'", (), monotonic() + LONG))
    session = await cluster.entered.get()
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    assert session.force_closed  # (its answer may be half-read: the session is not reused)
    assert not pool._all and not pool._idle
    cluster.gate.set()
    assert answered_by(await pool.query("SELECT 'next'", (), monotonic() + LONG)) == 2


async def test_a_read_cancelled_while_its_session_opens_leaves_none_open(
    cluster: Cluster,
) -> None:
    pool = pool_of(cluster, 1)
    cluster.connecting.clear()
    read = asyncio.create_task(pool.query("SELECT 1", (), monotonic() + LONG))
    await until(lambda: len(cluster.sessions) == 1)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    assert cluster.sessions[0].force_closed and not cluster.live()
    assert not pool._all
    cluster.connecting.set()
    assert answered_by(await pool.query("SELECT 1", (), monotonic() + LONG)) == 2


async def test_a_waiter_is_woken_when_opening_a_session_fails(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    cluster.connecting.clear()
    opening = asyncio.create_task(pool.query("SELECT 'a'", (), monotonic() + LONG))
    await until(lambda: len(cluster.sessions) == 1)
    waiter = asyncio.create_task(pool.query("SELECT 'b'", (), monotonic() + LONG))
    await until(lambda: len(pool._waiters) == 1)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    cluster.connecting.set()
    assert answered_by(await waiter) == 2
    assert [s.number for s in cluster.live()] == [2]


async def test_close_closes_every_session(cluster: Cluster) -> None:
    pool = pool_of(cluster, 2)
    cluster.gate.clear()
    reads = [asyncio.create_task(pool.query("SELECT 1", (), monotonic() + LONG)) for _ in "ab"]
    await until(lambda: len(cluster.sent) == 2)
    cluster.gate.set()
    await asyncio.gather(*reads)
    await pool.close()
    assert len(cluster.sessions) == 2
    assert all(s.closed_politely and not s.force_closed for s in cluster.sessions)
    assert not pool._all and not pool._idle
    with pytest.raises(Closed):
        await pool.query("SELECT 1", (), monotonic() + LONG)
    assert len(cluster.sessions) == 2


async def test_close_cancelled_drops_the_sessions_it_did_not_close(cluster: Cluster) -> None:
    pool = pool_of(cluster, 2)
    cluster.gate.clear()
    reads = [asyncio.create_task(pool.query("SELECT 1", (), monotonic() + LONG)) for _ in "ab"]
    await until(lambda: len(cluster.sent) == 2)
    cluster.gate.set()
    await asyncio.gather(*reads)
    cluster.connecting.clear()  # (the server does not answer the close)
    closing = asyncio.create_task(pool.close())
    await until(lambda: any(s.closing for s in cluster.sessions))
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert not cluster.live()
    assert all(s.force_closed for s in cluster.sessions)


async def test_abandon_force_closes_every_session(cluster: Cluster) -> None:
    pool = pool_of(cluster, 2)
    cluster.gate.clear()
    reads = [asyncio.create_task(pool.query("SELECT 1", (), monotonic() + LONG)) for _ in "ab"]
    await until(lambda: len(cluster.sent) == 2)
    cluster.gate.set()
    await asyncio.gather(*reads)
    pool.abandon()
    assert len(cluster.sessions) == 2
    assert all(s.force_closed and not s.closed_politely for s in cluster.sessions)
    assert not pool._all and not pool._idle


@pytest.mark.parametrize("how", ["close", "abandon"])
async def test_reads_under_way_when_the_pool_ends_open_no_new_session(
    cluster: Cluster, how: str
) -> None:
    """The engine closes: the pool's sessions end under the read that holds one and the
    task that waits for one. Neither opens a session afterwards (nobody would close it):
    both fail with Closed, well before their deadline."""
    pool = pool_of(cluster, 1)
    cluster.gate.clear()
    reading = asyncio.create_task(pool.query("SELECT 'reading'", (), monotonic() + LONG))
    await cluster.entered.get()
    waiting = asyncio.create_task(pool.query("SELECT 'waiting'", (), monotonic() + LONG))
    await until(lambda: len(pool._waiters) == 1)
    t0 = monotonic()
    if how == "close":
        await pool.close()
    else:
        pool.abandon()
    cluster.gate.set()
    for task in (reading, waiting):
        with pytest.raises(Closed):
            await task
    assert monotonic() - t0 < 1.0
    assert len(cluster.sessions) == 1 and not cluster.live()
    assert not pool._all and not pool._idle and not pool._waiters


async def test_a_session_opened_as_the_pool_closes_is_dropped(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    cluster.connecting.clear()
    read = asyncio.create_task(pool.query("SELECT 1", (), monotonic() + LONG))
    await until(lambda: len(cluster.sessions) == 1)
    pool.abandon()
    cluster.connecting.set()
    with pytest.raises(Closed):
        await read
    assert not cluster.live() and not pool._all


async def test_a_query_error_gives_the_session_back(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    with pytest.raises(Refused):
        await pool.query("BEGIN", (), monotonic() + LONG)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await pool.query("SELECT * FROM missing", (), monotonic() + LONG)
    assert answered_by(await pool.query("SELECT 1", (), monotonic() + LONG)) == 1
    assert len(cluster.sessions) == 1 and len(pool._idle) == 1 and not cluster.sessions[0].closed


async def test_a_session_that_died_idle_is_replaced(cluster: Cluster) -> None:
    pool = pool_of(cluster, 1)
    assert answered_by(await pool.query("SELECT 1", (), monotonic() + LONG)) == 1
    cluster.sessions[0].closed = True  # (the server closed it meanwhile)
    assert answered_by(await pool.query("SELECT 2", (), monotonic() + LONG)) == 2
    assert cluster.sent == ["SELECT 1", "SELECT 2"] and len(pool._all) == 1


# ---- AsyncLink ---------------------------------------------------------------------------------


async def test_link_opens_through_the_seeds_that_answer(cluster: Cluster) -> None:
    address = ClusterAddress(("broken:1", "n1:9001", "n2:9002"), "app")
    cluster.down = {"n1:9001"}
    link = AsyncLink(cluster.open_session, address, dict(SETTINGS))
    assert await link.open(monotonic() + LONG, 0) == 2
    assert [s.seed for s in cluster.live()] == ["n2:9002"] and link.is_open
    assert cluster.sessions[0].force_closed  # (the refused one)


async def test_link_tries_the_seeds_again_until_one_answers(cluster: Cluster) -> None:
    cluster.down = {"n1:9001", "n2:9002"}
    link = AsyncLink(cluster.open_session, ADDRESS, dict(SETTINGS))
    opening = asyncio.create_task(link.open(monotonic() + LONG, 0))
    await until(lambda: len(cluster.sessions) == 2)
    cluster.down = set()  # (during the pause between rounds)
    assert await opening == 0
    assert [s.number for s in cluster.live()] == [3]


async def test_link_open_gives_up_at_the_deadline(cluster: Cluster) -> None:
    cluster.down = {"n1:9001", "n2:9002"}
    link = AsyncLink(cluster.open_session, ADDRESS, dict(SETTINGS))
    with pytest.raises(Unavailable, match="refused the connection"):
        await link.open(monotonic() + 0.03, 0)
    assert not cluster.live() and not link.is_open


async def test_link_rollback(cluster: Cluster) -> None:
    link = AsyncLink(cluster.open_session, ADDRESS, dict(SETTINGS))
    await link.rollback()  # (no session: nothing to do)
    await link.open(monotonic() + LONG, 0)
    session = cluster.sessions[0]
    await link.rollback()  # (no transaction: nothing sent)
    assert cluster.sent == []
    session.in_transaction = True
    await link.rollback()
    assert cluster.sent == ["ROLLBACK"] and link.is_open and not link.in_transaction
    session.in_transaction = True
    cluster.die = 1
    await link.rollback()  # (lost: dropped, the cluster rolls back)
    assert session.force_closed and not link.is_open


async def test_link_close_that_fails_drops_the_session(cluster: Cluster) -> None:
    link = AsyncLink(cluster.open_session, ClusterAddress(("rude:1",), "app"), dict(SETTINGS))
    await link.open(monotonic() + LONG, 0)
    await link.close()
    assert cluster.sessions[0].force_closed and not link.is_open
    await link.close()  # (again: nothing left to close)


def test_abandon_once_the_loop_closed_drops_every_session() -> None:
    """The engine abandons the pool of a loop closed with a task still waiting in line."""
    cluster = Cluster()
    loop = asyncio.new_event_loop()

    async def waiting() -> tuple[LoopReaders, asyncio.Task[Outcome]]:
        pool = pool_of(cluster, 1)
        await pool._borrow(monotonic() + LONG)
        task = asyncio.create_task(pool.query("SELECT 1", (), monotonic() + LONG))
        await until(lambda: len(pool._waiters) == 1)
        return pool, task

    pool, task = loop.run_until_complete(waiting())
    loop.close()
    pool.abandon()
    assert len(cluster.sessions) == 1 and not cluster.live()
    assert not pool._all and not pool._waiters
    task.get_coro().close()  # (it can never run again)
    task._log_destroy_pending = False  # type: ignore[attr-defined]
