"""A loop's tenure of the write lane (``litegate._engine._lane_turns``): while a task of a loop
holds the lane, the loop's other tasks wait for a *turn* behind it -- no lock, no thread -- and
it is handed from task to task there; when the lane leaves the loop (to a thread, another loop
or the writer thread) the turns still waiting queue for it. These tests pin what must hold:
nothing lost or applied twice, every wait bounded and cancellable, threads not starved, and
the lane free afterwards."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import litegate

ACCOUNTS, START = 16, 1000


async def _open(db_path: str, **opts: Any) -> litegate.AsyncDatabase:
    adb = await litegate.connect_async(db_path, **opts)
    await adb.executescript(
        "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0));"
        "CREATE TABLE log(who TEXT)"
    )
    await adb.executemany(
        "INSERT INTO accounts VALUES (?, ?)", [(i, START) for i in range(ACCOUNTS)]
    )
    return adb


async def _transfer(adb: litegate.AsyncDatabase, a: int, b: int, who: str) -> None:
    async with adb.transaction() as tx:
        balance = await tx.query_value("SELECT balance FROM accounts WHERE id = ?", (a,))
        await asyncio.sleep(0)  # (the others of the loop ask for the lane meanwhile)
        if balance >= 1:
            await tx.execute("UPDATE accounts SET balance = balance - 1 WHERE id = ?", (a,))
            await tx.execute("UPDATE accounts SET balance = balance + 1 WHERE id = ?", (b,))
        await tx.execute("INSERT INTO log VALUES (?)", (who,))
    assert tx.committed


async def _check(adb: litegate.AsyncDatabase, logged: int) -> None:
    assert await adb.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START
    assert await adb.query_value("SELECT count(*) FROM log") == logged
    async with adb.transaction(timeout=5) as tx:  # the lane is free
        await tx.execute("INSERT INTO log VALUES ('after')")


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_tasks_and_threads_sharing_the_lane_lose_nothing_and_all_finish(
    db_path: str, synchronous: str
) -> None:
    """32 tasks of the loop take turns on the lane among themselves while 3 threads queue for
    it: every transfer commits once (the sum is kept, every log row is there), and each
    thread gets the lane within its timeout although the loop's tasks keep coming."""
    adb = await _open(db_path, synchronous=synchronous, max_batch=8)
    db = adb.as_sync()
    tasks, per_task, threads, per_thread = 32, 20, 3, 20

    def thread_work(t: int) -> None:
        for i in range(per_thread):
            with db.transaction(timeout=10) as tx:
                a, b = (t + i) % ACCOUNTS, (t + 2 * i + 1) % ACCOUNTS
                if tx.query_value("SELECT balance FROM accounts WHERE id = ?", (a,)) >= 1:
                    tx.execute("UPDATE accounts SET balance = balance - 1 WHERE id = ?", (a,))
                    tx.execute("UPDATE accounts SET balance = balance + 1 WHERE id = ?", (b,))
                tx.execute("INSERT INTO log VALUES (?)", (f"thread{t}",))

    async def task_work(w: int) -> None:
        for i in range(per_task):
            await _transfer(adb, (w + i) % ACCOUNTS, (w * 7 + i + 1) % ACCOUNTS, f"task{w}")

    try:
        await asyncio.gather(
            *(task_work(w) for w in range(tasks)),
            *(asyncio.to_thread(thread_work, t) for t in range(threads)),
        )
        await _check(adb, tasks * per_task + threads * per_thread)
        stats = await adb.stats()
        assert stats.mean_batch_size > 1  # (turns shared groups)
    finally:
        await adb.close()


async def _hold_lane(adb: litegate.AsyncDatabase, inside: asyncio.Event, go: asyncio.Event) -> None:
    async with adb.transaction() as tx:
        await tx.execute("INSERT INTO log VALUES ('holder')")
        inside.set()
        await go.wait()


async def test_a_turn_waits_no_longer_than_its_timeout(db_path: str) -> None:
    adb = await _open(db_path)
    inside, go = asyncio.Event(), asyncio.Event()
    try:
        holder = asyncio.create_task(_hold_lane(adb, inside, go))
        await inside.wait()

        async def attempt() -> None:
            async with adb.transaction(timeout=0.05) as tx:
                await tx.execute("INSERT INTO log VALUES ('timed out')")

        t0 = time.monotonic()
        with pytest.raises(litegate.WriteTimeout):
            await asyncio.wait_for(attempt(), timeout=5)  # (unbounded: TimeoutError instead)
        assert time.monotonic() - t0 < 2.0
        later = asyncio.create_task(_transfer(adb, 0, 1, "later"))  # (queued behind it)
        await asyncio.sleep(0.01)
        go.set()
        await asyncio.wait_for(asyncio.gather(holder, later), timeout=10)
        await _check(adb, 2)
    finally:
        await adb.close()


async def test_a_waiting_turn_cancelled_never_runs_and_the_next_gets_the_lane(
    db_path: str,
) -> None:
    adb = await _open(db_path)
    inside, go = asyncio.Event(), asyncio.Event()
    try:
        holder = asyncio.create_task(_hold_lane(adb, inside, go))
        await inside.wait()
        doomed = asyncio.create_task(_transfer(adb, 0, 1, "doomed"))
        nxt = asyncio.create_task(_transfer(adb, 1, 2, "next"))
        await asyncio.sleep(0.01)
        doomed.cancel()
        go.set()
        await asyncio.wait_for(asyncio.gather(holder, nxt), timeout=10)
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await adb.query_value("SELECT count(*) FROM log WHERE who = 'doomed'") == 0
        await _check(adb, 2)
    finally:
        await adb.close()


async def test_a_turn_handed_on_to_a_task_cancelled_before_it_ran_goes_on_at_once(
    db_path: str,
) -> None:
    """The holder hands the lane to the first waiting task, which is cancelled in the same
    loop iteration, before it runs: its turn ends at once and the lane goes on to the next
    waiting task (no hang, nothing of the cancelled one applied). (group_wait: a group open
    long enough for the lane to be handed on within it, not to go to the writer thread.)"""
    adb = await _open(db_path, group_wait=30.0)
    inside, go = asyncio.Event(), asyncio.Event()
    try:
        holder_done = asyncio.Event()

        async def holder() -> None:
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO log VALUES ('holder')")
                inside.set()
                await go.wait()
                # (runs before the woken waiter: callbacks run in the order scheduled, and the
                # hand-off at this block's end schedules the waiter's wake-up after it)
                asyncio.get_running_loop().call_soon(first.cancel)
            holder_done.set()

        h = asyncio.create_task(holder())
        await inside.wait()
        first = asyncio.create_task(_transfer(adb, 0, 1, "first"))
        second = asyncio.create_task(_transfer(adb, 1, 2, "second"))
        await asyncio.sleep(0.01)
        assert (await adb.stats()).queue_depth == 2
        go.set()
        await asyncio.wait_for(asyncio.gather(h, second), timeout=10)
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await adb.query_value("SELECT count(*) FROM log WHERE who = 'first'") == 0
        await _check(adb, 2)
    finally:
        await adb.close()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_turns_waiting_when_the_lane_leaves_the_loop_queue_for_it(
    db_path: str, synchronous: str
) -> None:
    """A task holds the lane, tasks of its loop wait for turns, then a thread queues: when the
    group's bound (max_batch=2) ends the group, the lane goes to the thread (queued first) and
    the waiting turns queue behind it, each getting the lane after it. (The order asserted is
    the order the transactions' bodies ran in: at FULL the thread and the next task may share
    a group, and then both are answered by the same COMMIT.)"""
    adb = await _open(db_path, synchronous=synchronous, max_batch=2, group_wait=30.0)
    db = adb.as_sync()
    inside, go = asyncio.Event(), asyncio.Event()
    order: list[str] = []
    lock = threading.Lock()

    def thread_tx() -> None:
        with db.transaction(timeout=10) as tx:
            with lock:
                order.append("thread")
            tx.execute("INSERT INTO log VALUES ('thread')")

    async def task_tx(name: str) -> None:
        async with adb.transaction() as tx:
            with lock:
                order.append(name)
            await tx.execute("INSERT INTO log VALUES (?)", (name,))
        assert tx.committed

    try:
        holder = asyncio.create_task(_hold_lane(adb, inside, go))
        await inside.wait()
        turns = [asyncio.create_task(task_tx(f"t{i}")) for i in range(4)]
        await asyncio.sleep(0.01)
        th = asyncio.ensure_future(asyncio.to_thread(thread_tx))
        deadline = time.monotonic() + 5
        while (await adb.stats()).queue_depth < 5:
            assert time.monotonic() < deadline, "the thread never queued"
            await asyncio.sleep(0.002)
        go.set()
        await asyncio.wait_for(asyncio.gather(holder, th, *turns), timeout=10)
        # the holder and t0 shared a group (max_batch=2); then the thread, queued first
        assert order == ["t0", "thread", "t1", "t2", "t3"], order
        await _check(adb, 6)
    finally:
        await adb.close()


async def test_after_a_group_commits_on_the_loop_the_lane_goes_on_to_the_next_turn_there(
    db_path: str, commits_here: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group ends (max_batch=2) and commits on the loop with a task of the loop still
    waiting and nothing queued: the lane goes on to that task on the loop (a new group), not
    back through the lane's queue -- nothing is spilled."""
    from litegate._engine import _lane_turns

    spilled: list[object] = []
    real = _lane_turns.LaneTurns._spill_locked

    def spy(self: Any, hold: Any) -> None:
        spilled.append(hold)
        real(self, hold)

    adb = await _open(db_path, synchronous="NORMAL", max_batch=2, group_wait=30.0)
    inside, go = asyncio.Event(), asyncio.Event()
    try:
        for who in ("warm", "warm"):  # (every text known quick: the parts are light)
            await _transfer(adb, 0, 1, who)
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO log VALUES ('holder')")
        commits_here.clear()
        monkeypatch.setattr(_lane_turns.LaneTurns, "_spill_locked", spy)
        holder = asyncio.create_task(_hold_lane(adb, inside, go))
        await inside.wait()
        turns = [asyncio.create_task(_transfer(adb, i, i + 1, f"t{i}")) for i in range(2)]
        await asyncio.sleep(0.01)
        go.set()
        await asyncio.wait_for(asyncio.gather(holder, *turns), timeout=10)
        assert spilled == []
        assert len(commits_here) == 2  # (holder + t0 as a group, then t1: both on the loop)
        await _check(adb, 7)
    finally:
        await adb.close()


async def test_turns_waiting_when_the_writer_thread_has_stopped_fail_with_closed(
    db_path: str,
) -> None:
    """The writer thread stopped (as it does when the lane cannot continue: it fails what is
    queued, and nothing queued later would ever be served) while a task held the lane and
    others waited for turns: when the lane leaves the loop, those turns fail with Closed at
    once instead of waiting in a queue nobody serves until their timeout; the holder's group,
    which nobody will commit, is lost (RolledBack), and a statement that needs the writer
    thread fails with Closed instead of waiting for ever."""
    adb = await _open(db_path, synchronous="FULL", max_batch=1, group_wait=30.0, timeout=30)
    lane = adb._engine._lane  # type: ignore[attr-defined]
    inside, go = asyncio.Event(), asyncio.Event()
    try:
        holder = asyncio.create_task(_hold_lane(adb, inside, go))
        await inside.wait()
        turns = [asyncio.create_task(_transfer(adb, i, i + 1, f"t{i}")) for i in range(2)]
        await asyncio.sleep(0.01)
        with lane._lock:
            lane._stopped = True  # (what the writer sets as it fails the queue and stops)
        go.set()
        t0 = time.monotonic()
        with pytest.raises(litegate.RolledBack):
            await asyncio.wait_for(holder, timeout=10)  # (nobody would commit its group)
        for t in turns:
            with pytest.raises(litegate.Closed):
                await asyncio.wait_for(t, timeout=10)
        assert time.monotonic() - t0 < 5.0
        with pytest.raises(litegate.RolledBack):  # (its COMMIT too: nobody would run it)
            async with adb.transaction(timeout=5) as tx:  # (the lane was given back)
                with pytest.raises(litegate.Closed):
                    await tx.executemany("INSERT INTO log VALUES (?)", [("w",)])  # (writer's)
        with lane._lock:
            lane._stopped = False  # (so that close() finds the writer it expects)
        assert await adb.query_value("SELECT count(*) FROM log") == 0
    finally:
        await adb.close()


class _Interrupt(BaseException):
    """Stands for a KeyboardInterrupt landing on the loop's thread."""


def _interrupt_once(
    real: Callable[..., Any], caller: str, fired: list[Any], depth: int = 1
) -> Callable[..., Any]:
    """A stand-in for the method ``real`` that raises :class:`_Interrupt` at its first line
    the first time it is called from ``caller`` (``depth`` frames up), noting its first
    argument (or True) in ``fired``; else it calls ``real``."""

    def stand_in(self: Any, *args: Any) -> Any:
        if not fired and sys._getframe(depth).f_code.co_name == caller:
            fired.append(args[0] if args else True)
            raise _Interrupt
        return real(self, *args)

    return stand_in


async def test_a_turn_whose_wait_is_interrupted_is_never_handed_the_lane(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt (not a cancellation) ends a task's wait for a turn while the turn is still
    waiting: the holder's end must not hand the lane to it -- nobody would ever end that turn,
    and the holder's own COMMIT (shared with it) would never be answered."""
    from litegate._engine import _bridge

    adb = await _open(db_path, group_wait=30.0)
    inside, go = asyncio.Event(), asyncio.Event()
    real = _bridge._timeouts

    def interrupted(loop: asyncio.AbstractEventLoop) -> Any:
        monkeypatch.setattr(_bridge, "_timeouts", real)
        raise _Interrupt  # (in the wait, once the turn is queued)

    try:
        holder = asyncio.create_task(_hold_lane(adb, inside, go))
        await inside.wait()
        monkeypatch.setattr(_bridge, "_timeouts", interrupted)
        with pytest.raises(_Interrupt):
            async with adb.transaction(timeout=5) as tx:
                await tx.execute("INSERT INTO log VALUES ('interrupted')")
        go.set()
        await asyncio.wait_for(holder, timeout=5)
        await _check(adb, 1)
    finally:
        await adb.close()


async def test_an_interrupt_as_a_rolled_back_transaction_gives_the_lane_back_frees_it(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt lands as a rolled-back async transaction gives the lane back, before the
    lane is released: the lane must still be freed (the lease's end hands it to the writer
    thread), not left held by a lease that has ended -- which it was while the hold's
    ``turn`` was cleared before the release (every later writer timed out)."""
    from litegate._engine import _lane_state

    adb = await _open(db_path)
    real = _lane_state.LaneState._release_locked
    interrupted: list[Any] = []
    release = _interrupt_once(real, "give_back_async", interrupted)  # (at its first line)

    try:
        monkeypatch.setattr(_lane_state.LaneState, "_release_locked", release)
        with pytest.raises(_Interrupt):
            async with adb.transaction() as tx:
                await tx.execute("INSERT INTO log VALUES ('undone')")
                raise ValueError("roll back")
        monkeypatch.setattr(_lane_state.LaneState, "_release_locked", real)
        assert interrupted
        async with adb.transaction(timeout=5) as tx:  # (WriteTimeout: the lane was stranded)
            await tx.execute("INSERT INTO log VALUES ('next')")
        assert await adb.query_value("SELECT group_concat(who) FROM log") == "next"
    finally:
        await adb.close()


async def _held_with_one_queued(
    adb: litegate.AsyncDatabase, inside: asyncio.Event, go: asyncio.Event, th: threading.Thread
) -> asyncio.Task[None]:
    """A task of this loop holds the lane (until ``go``); ``th`` (another loop's transaction)
    is started and has queued for it. Returns the holder's task."""
    holder = asyncio.create_task(_hold_lane(adb, inside, go))
    await inside.wait()
    th.start()
    deadline = time.monotonic() + 5
    while (await adb.stats()).queue_depth < 1:
        assert time.monotonic() < deadline, "the other loop never queued"
        await asyncio.sleep(0.002)
    return holder


async def test_an_interrupt_passing_the_lane_to_a_holder_that_gave_up_still_commits_the_group(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction of this loop ends with another loop's transaction queued: the lane is
    being passed to it when an interrupt lands, and meanwhile that other task gives up (it is
    cancelled). Nobody gets the lane from the pass-on, so the interrupted transaction's end
    must hand it to the writer thread, which commits the open group: no lane left held by an
    ended lease, no write lost (it was, while the hold's ``turn`` was cleared first)."""
    from litegate._engine import _lane_turns

    adb = await _open(db_path, group_wait=30.0)
    db = adb.as_sync()
    inside, go = asyncio.Event(), asyncio.Event()
    other: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []
    outcome: list[str] = []

    def other_loop() -> None:
        async def transaction() -> None:
            task = asyncio.current_task()
            assert task is not None
            other.append((asyncio.get_running_loop(), task))
            try:
                async with db.as_async().transaction(timeout=10) as tx:
                    await tx.execute("INSERT INTO log VALUES ('other')")
                outcome.append("ok")
            except asyncio.CancelledError:
                outcome.append("cancelled")

        asyncio.run(transaction())

    real_assign = _lane_turns.LaneTurns._assign_locked
    real_after = _lane_turns.LaneTurns._after_interrupted_pass
    claimed: list[Any] = []
    assign = _interrupt_once(real_assign, "_pass_on", claimed)  # (at its first line)

    def after(self: Any, hold: Any, *args: Any) -> None:
        if claimed and hold is claimed[0]:  # (its task gives up now, the lane's lock free)
            loop, task = other[0]
            loop.call_soon_threadsafe(task.cancel)
            deadline = time.monotonic() + 5
            while not hold.abandoned and time.monotonic() < deadline:
                time.sleep(0.001)
            assert hold.abandoned
        real_after(self, hold, *args)

    th = threading.Thread(target=other_loop)
    try:
        holder = await _held_with_one_queued(adb, inside, go, th)
        monkeypatch.setattr(_lane_turns.LaneTurns, "_assign_locked", assign)
        monkeypatch.setattr(_lane_turns.LaneTurns, "_after_interrupted_pass", after)
        go.set()
        with pytest.raises(_Interrupt):
            await holder
        monkeypatch.setattr(_lane_turns.LaneTurns, "_assign_locked", real_assign)
        monkeypatch.setattr(_lane_turns.LaneTurns, "_after_interrupted_pass", real_after)
        await asyncio.to_thread(th.join, 10)
        assert claimed and outcome == ["cancelled"]
        async with adb.transaction(timeout=5) as tx:  # (WriteTimeout: the lane was stranded)
            await tx.execute("INSERT INTO log VALUES ('next')")
        # the interrupted transaction's outcome was unknown to it; its group was committed
        assert await adb.query_value("SELECT group_concat(who, ',') FROM log") == "holder,next"
    finally:
        go.set()
        await adb.close()


async def test_a_holder_that_gave_the_lane_back_during_an_interrupted_pass_is_not_granted_again(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane has been assigned to another loop's transaction when an interrupt lands (as
    it is being told), and that transaction's task is cancelled at once: it gives the lane
    back. The recovery must not assign it to that hold again -- nobody would ever end it, and
    every later transaction of that loop queued a turn behind it and timed out."""
    from litegate._engine import _lane_turns

    adb = await _open(db_path, group_wait=30.0)
    db = adb.as_sync()
    lane = db._engine._lane  # type: ignore[attr-defined]
    inside, go = asyncio.Event(), asyncio.Event()
    other: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []
    outcome: list[str] = []
    again = threading.Event()

    def other_loop() -> None:
        async def transaction(who: str, timeout: float) -> None:
            async with db.as_async().transaction(timeout=timeout) as tx:
                await tx.execute("INSERT INTO log VALUES (?)", (who,))

        async def first() -> None:
            task = asyncio.current_task()
            assert task is not None
            other.append((asyncio.get_running_loop(), task))
            try:
                await transaction("other", 10)
                outcome.append("ok")
            except asyncio.CancelledError:
                outcome.append("cancelled")

        async def run() -> None:
            await asyncio.create_task(first())
            await asyncio.to_thread(again.wait, 10)
            try:  # (the same loop, later: a turn behind a hold granted again never came)
                await transaction("other-again", 5)
                outcome.append("again ok")
            except litegate.WriteTimeout:
                outcome.append("again WriteTimeout")

        asyncio.run(run())

    real_announce = _lane_turns.LaneTurns._announce
    told: list[Any] = []

    def announce(self: Any, hold: Any) -> None:
        if not told and sys._getframe(1).f_code.co_name == "_pass_on":
            told.append(hold)  # (assigned: its task is cancelled now and gives the lane back)
            loop, task = other[0]
            loop.call_soon_threadsafe(task.cancel)
            deadline = time.monotonic() + 5
            while lane._async_holder is hold and time.monotonic() < deadline:
                time.sleep(0.001)
            assert lane._async_holder is not hold
            raise _Interrupt
        real_announce(self, hold)

    th = threading.Thread(target=other_loop)
    try:
        holder = await _held_with_one_queued(adb, inside, go, th)
        monkeypatch.setattr(_lane_turns.LaneTurns, "_announce", announce)
        go.set()
        with pytest.raises(_Interrupt):
            await holder
        monkeypatch.setattr(_lane_turns.LaneTurns, "_announce", real_announce)
        again.set()
        await asyncio.to_thread(th.join, 15)
        assert told and outcome == ["cancelled", "again ok"], outcome
        async with adb.transaction(timeout=5) as tx:
            await tx.execute("INSERT INTO log VALUES ('next')")
        # (the group the holder left open was committed by the writer thread when the
        # cancelled transaction gave the lane back)
        logged = await adb.query_value("SELECT group_concat(who, ',') FROM log")
        assert sorted(logged.split(",")) == ["holder", "next", "other-again"]
    finally:
        go.set()
        again.set()
        await adb.close()


@pytest.mark.parametrize("at", ["_spill_locked", "_lane_left"])
async def test_an_interrupt_as_the_lane_leaves_the_loop_still_queues_its_waiting_turns(
    db_path: str, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    """A group on the loop ends (max_batch=2) with a thread queued and tasks of the loop
    waiting for turns; the lane goes to the thread, and an interrupt lands as the waiting turns
    are moved to the queue (``_spill_locked``), or just before, the lane assigned to the thread
    (``_lane_left``): the lane still reaches the thread, and every waiting turn gets it after
    (none left behind in a loop the lane has left: they waited for their timeout)."""
    from litegate._engine import _lane_turns

    adb = await _open(db_path, synchronous="NORMAL", max_batch=2, group_wait=30.0)
    db = adb.as_sync()
    for _ in range(2):  # (every text known quick: the group commits on the loop)
        await _transfer(adb, 0, 1, "warm")
        async with adb.transaction() as tx:
            await tx.execute("INSERT INTO log VALUES ('holder')")
    inside, go = asyncio.Event(), asyncio.Event()
    interrupted: list[Any] = []
    # (_pass_on -> _lane_left -> _spill_locked: the interrupt at the first line of either)
    stand_in = _interrupt_once(
        getattr(_lane_turns.LaneTurns, at),
        "_pass_on",
        interrupted,
        2 if at == "_spill_locked" else 1,
    )

    def thread_tx() -> None:
        with db.transaction(timeout=10) as tx:
            tx.execute("INSERT INTO log VALUES ('thread')")

    async def attempt(name: str) -> str:
        try:
            await _transfer(adb, 2, 3, name)
        except _Interrupt:  # (the one whose hand-off was interrupted: its outcome is unknown)
            return "interrupted"
        return "ok"

    try:
        holder = asyncio.create_task(_hold_lane(adb, inside, go))
        await inside.wait()
        th = asyncio.ensure_future(asyncio.to_thread(thread_tx))
        deadline = time.monotonic() + 5
        while (await adb.stats()).queue_depth < 1:
            assert time.monotonic() < deadline, "the thread never queued"
            await asyncio.sleep(0.002)
        turns = [asyncio.create_task(attempt(f"t{i}")) for i in range(3)]
        await asyncio.sleep(0.01)
        monkeypatch.setattr(_lane_turns.LaneTurns, at, stand_in)
        go.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*turns), timeout=10)
        await asyncio.wait_for(asyncio.gather(holder, th), timeout=10)
        assert interrupted and outcomes.count("interrupted") == 1, outcomes
        assert outcomes.count("ok") == 2, outcomes
        assert await adb.query_value("SELECT count(*) FROM log WHERE who = 'thread'") == 1
    finally:
        await adb.close()
