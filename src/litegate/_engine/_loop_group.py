"""One-statement async writes group-committed from the event loop: every one where a COMMIT
fsyncs, and those that come together where it does not (:mod:`._loop_write` runs a lone one
there, statement and COMMIT).

At ``synchronous=FULL`` a write's COMMIT (its fsync) must run off the loop, but its statement
need not: handing every statement to the writer thread and its answer back costs more than the
statement (64 tasks of one-row writes: ~930 Python bytecodes a write, ~280 of them on the
writer thread; this way ~570, ~10 on the writer thread, and 1.3-1.5x as many writes a
second). So a known-quick write runs its statement on the loop, into a group the loop holds
the lane for:

* the first write of a loop iteration that finds the lane idle takes it on the loop
  (``BEGIN IMMEDIATE``, never waiting: :meth:`~._lane_loop.LaneLoop.take_group_here`) and
  schedules the group's end (``call_soon``); every write of this loop that runs before that
  end joins it -- its statement run here at once, no turn to wait for (it has no ``await``
  inside) -- and waits for the group's COMMIT;
* at the end the lane goes to the writer thread, which COMMITs the group and answers every
  write (one hop for the whole group: :meth:`~._lane_loop.LaneLoop.hand_group_here`); writes
  of this loop that come while that COMMIT runs wait for it, then start the next group;
* the rules of lone loop writes (:mod:`._loop_write`) keep the loop free: only a SQL text
  measured quick on the writer thread runs here (the lane's cost table), none with a large
  parameter, and never a transaction-control text (a ``ROLLBACK TO`` would undo the others:
  ``_costs.measured`` never judges one quick); each run is counted (VM steps, CPU time) and a
  text that ran slow goes to the writer thread from then on. A statement here is never
  interrupted (SQLite would roll the whole group back);
* nothing of a failed write is kept: a statement that fails here may leave part of its work
  in the shared transaction (``OR FAIL``), so the group is rolled back, the failing write
  raises its error, and every other write of the group runs again, queued for the writer
  thread (as the writer's own group commit does, :func:`~._batch.group_commit`); the text is
  measured on the writer thread next time. If the COMMIT fails, every write of the group
  fails with an error saying so (none is acknowledged) -- unless a deferred constraint failed
  there: then each runs again, queued, and only the guilty one fails (alone: its own error);
* the group's bounds are the lane's (``max_batch``; ``group_wait`` bounds how long it stays
  open for the writes of the last COMMIT still being answered, a chunk per iteration;
  ``group_wait=0`` turns loop groups off); it ends with the loop iteration it began in, so a
  task that blocks the loop in that iteration holds the lane (and the file's write lock) as
  long. Anything else that wants the lane meanwhile -- a thread, a transaction, a write that
  is not known quick -- queues, and is served when the group's COMMIT is done; a thread about
  to wait for any lane, or to fork, ends its loop's groups first
  (:func:`~._lane_state.end_groups_here`), and a function of a grouped statement that calls
  the database is refused (it would wait for its own statement).
* a task writing alone (``_SOLO`` groups of one write in a row) gains nothing from a group:
  its writes go to the writer thread whole (statement and COMMIT, the queued path: one
  hand-off either way, and less work on the loop) until one comes while another of the loop's
  is queued;
* if the loop is closed before the group's end, the writer thread takes the lane back and
  commits the group (:meth:`~._lane_writer.LaneWriter._watch_hold`); a loop stopped but not
  closed keeps the lane until it runs again.

A cancelled write that is in a group stays in it (a started write finishes; its result is
dropped), unless the group is rolled back for another write's failure (then it is not run
again). Shared state: the per-loop record of the group (:class:`_LoopGroup`), kept per
thread and per lane (``lane.loop_groups``) and used only by the thread running that loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import weakref
from asyncio import Future as _Future
from asyncio import get_running_loop
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from sys import getsizeof
from time import monotonic, perf_counter, thread_time
from typing import Any

from .._errors import RolledBack
from .._statements import run_execute
from .._types import Args, Bound, Params
from . import _costs
from ._authorizer import refuse_plain_savepoint
from ._batch import copy_error, job_error
from ._costs import (
    LARGE_VALUE,
    SMALL_TYPES,
    STEP_BUDGET,
    Steps,
    forget_cost,
    large_params,
    record_cost,
)
from ._group import Group
from ._jobs import WRITE, AsyncTicket
from ._lane import WriteLane

__all__ = ("write_grouped",)

LaneJob = Callable[[int, Callable[..., Any], Args, Bound, Bound, "str | None", str], Awaitable[Any]]


_QUICK_TYPES = SMALL_TYPES | {str, bytes}
"""Parameter types whose size ``sys.getsizeof`` tells (not a memoryview's: its buffer's)."""
_ANSWER_CHUNK = 16  # a group's writes answered per loop iteration (as _jobs._DELIVER_CHUNK)


class _Again(Exception):
    """A write's answer when the group it joined was rolled back for another's failure: it
    runs again, queued (never raised to a caller)."""


class _LoopGroup:
    """A loop's write group on one lane: the one open (``group``, with the writer connection
    ``conn``, its writes' futures and results ``joined``, the step counter ``steps``, and this
    thread's CPU and wall clocks ``cpu0``, ``wall0`` when it began), whether its COMMIT is under
    way (``committing``), the writes waiting for that (``waiters``), and whether the writes of
    the last COMMIT are still being answered (``answering``). The loop thread's only."""

    __slots__ = (
        "answering",
        "committing",
        "conn",
        "cpu0",
        "group",
        "joined",
        "loop",
        "queued",
        "running",
        "solo",
        "steps",
        "thread",
        "waiters",
        "wall0",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # (weak: see of_this_loop)
        self.thread = threading.current_thread()  # (the record's: it lives in a thread-local)
        self.group: Group | None = None
        self.conn: sqlite3.Connection | None = None
        self.joined: list[tuple[asyncio.Future[Any], Any]] = []
        self.committing = False
        self.waiters: list[asyncio.Future[None]] = []
        self.steps = Steps()
        self.cpu0 = self.wall0 = 0.0
        self.answering = False  # a committed group's writes are still being answered
        self.running = False  # a write's statement runs (a function of it may call us back)
        self.solo = 0  # groups in a row that held one write each (see write_grouped)
        self.queued = 0  # this loop's writes queued from write_grouped, not answered yet

    def burned(self, t0: float, t1: float) -> bool:
        """Did a statement that took ``t1 - t0`` seconds (wall) burn over SLOW_SECONDS of
        this thread's CPU? Only the group's CPU clock is read (a syscall: once per group, and
        here): the thread waited (for the GIL, a core) at most the group's wall time less its
        CPU time, so the statement burned at least its wall time less that."""
        waited = (t1 - self.wall0) - (thread_time() - self.cpu0)
        return (t1 - t0) - max(waited, 0.0) > _costs.SLOW_SECONDS

    def loop_(self) -> asyncio.AbstractEventLoop:
        """Its loop (alive: only its own thread, running it, asks)."""
        loop = self.loop()
        assert loop is not None
        return loop

    def committed(self) -> None:
        """The COMMIT under way is over (whatever its outcome): wake the writes waiting (each
        woken before the list is cleared: one an interrupt leaves is woken next time)."""
        self.committing = False
        waiters = self.waiters
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    def drop(self, error: BaseException) -> None:
        """The open group is gone before its COMMIT: its writes get ``error``."""
        joined, self.joined = self.joined, []
        self.group = self.conn = None
        for fut, _ in joined:
            if not fut.done():
                fut.set_exception(error)


class _Ended(asyncio.Future[None]):
    """The future of a group's ``end`` ticket, resolved on the loop (``_deliver``) once the
    group's COMMIT is over: answers the group's writes (their results, or the error) and wakes
    the writes waiting for the COMMIT -- one answer through the outbox for the whole group.
    The results go out a chunk per loop iteration (as ``_deliver``'s: every task woken runs
    before the loop looks at its timers again); the next group stays open meanwhile."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        lg: _LoopGroup,
        joined: list[tuple[asyncio.Future[Any], Any]],
    ) -> None:
        super().__init__(loop=loop)
        self._lg = lg
        self._joined = joined

    def set_result(self, result: None) -> None:
        joined, self._joined = self._joined, []
        lg = self._lg
        try:
            lg.committed()
            _answer(lg, joined, 0)
        except BaseException:  # (an interrupt: the writes are answered next iteration all the
            lg.loop_().call_soon(_answer_all, lg, joined)  # same; _deliver goes on after it)
            raise
        finally:
            super().set_result(None)

    def set_exception(self, exception: type | BaseException) -> None:
        joined, self._joined = self._joined, []
        try:
            self._lg.committed()
            cause = getattr(exception, "__cause__", None)
            if isinstance(cause, sqlite3.IntegrityError):
                # A deferred constraint failed at COMMIT: alone, the write's own error; in a
                # group, each runs again (queued) and only the guilty one fails.
                error: BaseException = _Again() if len(joined) > 1 else cause
            else:
                error = exception if isinstance(exception, BaseException) else exception()
            try:
                _fail_all(joined, error)
            except BaseException:  # (an interrupt: the rest are told next iteration)
                self._lg.loop_().call_soon(_fail_all, joined, error)
                raise
        finally:
            super().set_result(None)  # (its writes have the error: this future has no reader)


def _fail_all(joined: list[tuple[asyncio.Future[Any], Any]], error: BaseException) -> None:
    """Loop thread: every write of ``joined`` not answered yet gets (a copy of) ``error``."""
    for fut, _ in joined:
        if not fut.done():
            fut.set_exception(copy_error(error))


def _answer(lg: _LoopGroup, joined: list[tuple[asyncio.Future[Any], Any]], start: int) -> None:
    """Loop thread: resolve a committed group's writes from ``start``, a chunk of them now,
    the rest in the next loop iterations (``lg.answering`` meanwhile)."""
    stop = start + _ANSWER_CHUNK
    lg.answering = True
    for fut, value in joined[start:stop]:
        if not fut.done():
            fut.set_result(value)
    if stop < len(joined):  # (the rest behind the wake-ups of the tasks just answered)
        lg.loop_().call_soon(_answer, lg, joined, stop)
    elif start:  # (the group open meanwhile stays open until the last ones ran: see _end)
        lg.loop_().call_soon(_answered, lg)
    else:
        # One chunk: no group is open (none opens while a COMMIT runs), and the one these
        # tasks open ends behind their wake-ups all the same (its end is scheduled after).
        lg.answering = False


def _answered(lg: _LoopGroup) -> None:
    lg.answering = False


def _answer_all(lg: _LoopGroup, joined: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Loop thread, after an interrupt cut answering short: answer every write left."""
    lg.committed()
    for fut, value in joined:
        if not fut.done():
            fut.set_result(value)
    lg.answering = False


def _end(lane: WriteLane, lg: _LoopGroup, group: Group, now: bool = False) -> None:
    """Loop thread (``call_soon``: after the writes of this iteration; ``now``: at once): the
    group's COMMIT goes to the writer thread. While the writes of the last COMMIT are still
    being answered (a chunk per iteration) and nothing else waits for the lane, the group stays
    open for them, within its bounds."""
    try:
        if lg.group is not group:
            return  # (lost meanwhile, or ended early at its bounds)
        joined = lg.joined
        if (
            not now
            and lg.answering
            and len(joined) < lane.opts.max_batch
            and monotonic() - group.started < lane.opts.group_wait
            and not lane.depth
        ):
            lg.loop_().call_soon(_end, lane, lg, group)
            return
        group.size = group.writes = len(joined)
        lg.solo = lg.solo + 1 if len(joined) == 1 else 0
        lg.committing = True  # (first: from here its writes wait for this COMMIT)
        handed = lane.hand_group_here(group)
        lg.group = lg.conn = None
        lg.joined = []
        if not handed:  # (no longer this loop's: nothing of this COMMIT to wait for)
            lg.committed()
    except BaseException:  # (an interrupt: the hand-off is finished all the same)
        if lg.group is group:
            lg.committing = True
            lane.end_group_here()
            lg.group = lg.conn = None
            lg.joined = []
        raise


def _end_current(lane: WriteLane, lg: _LoopGroup) -> bool:
    """Loop thread: end the open group at once (a sync call of this thread wants a lane).
    False if it cannot: one of its statements is running (a function of it called back)."""
    if lg.running:
        return False
    group = lg.group
    if group is not None:
        _end(lane, lg, group, True)
    return True


async def _wait_commit(
    lane: WriteLane, lg: _LoopGroup, loop: asyncio.AbstractEventLoop, timeout: Bound
) -> None:
    """Wait for the loop's group's COMMIT under way, at most ``timeout`` seconds
    (:class:`~litegate.WriteTimeout`: this write never ran)."""
    wait: asyncio.Future[None] = _Future(loop=loop)
    lg.waiters.append(wait)
    if timeout is None:
        await wait
        return
    timer = loop.call_later(timeout, _time_out, wait, lane, timeout)
    try:
        await wait
    finally:
        timer.cancel()


def _time_out(wait: asyncio.Future[None], lane: WriteLane, timeout: float) -> None:
    if not wait.done():
        wait.set_exception(lane.timeout_error("the write", timeout))


def _queued(lane_job: LaneJob, sql: str, params: Params, timeout: Bound) -> Awaitable[Any]:
    return lane_job(WRITE, run_execute, (sql, params), timeout, None, sql, "the write")


async def write_grouped(
    lane: WriteLane,
    lane_job: LaneJob,
    sql: str,
    params: Params,
    timeout: Bound,
    latency: deque[float],
    t0: float,
) -> Any:
    """An async one-statement write (no time limit) where the lane's COMMIT costs an fsync
    (or where it does not, one that came with others: :func:`~._loop_write.write_cheap`): in
    this loop's group when it can (see the module), else queued for the writer thread
    through ``lane_job`` (measured there if its SQL text is new). Its time since ``t0`` (the
    call's ``perf_counter()``), when it succeeds, goes to ``latency``."""
    costs = lane.costs
    cost = costs.get(sql)  # (read without the lane: a stale value picks a path)
    if cost != 0 or not (
        # (no large parameter: judged in C for a tuple of numbers, NULLs, texts and blobs)
        type(params) is tuple
        and _QUICK_TYPES.issuperset(map(type, params))
        and sum(map(getsizeof, params)) < LARGE_VALUE
    ):
        if cost != 0:  # (a savepoint text is never measured quick: see refuse_plain_savepoint)
            refuse_plain_savepoint(sql)
        if cost is None:
            args: Args = (run_execute, costs, sql, params)
            return _took(
                latency,
                t0,
                await lane_job(WRITE, _costs.measured, args, timeout, None, sql, "the write"),
            )
        if cost != 0 or large_params(params):
            return _took(latency, t0, await _queued(lane_job, sql, params, timeout))
    loop = get_running_loop()
    here = lane.loop_groups  # (this thread's, for this lane: of_this_loop inlined)
    lg: _LoopGroup | None = getattr(here, "lg", None)
    if lg is None or lg.loop() is not loop:
        if not lane.opts.group_wait:  # (group_wait=0: every write commits alone)
            return _took(latency, t0, await _queued(lane_job, sql, params, timeout))
        lg = here.lg = _LoopGroup(loop)
    while True:
        if lg.committing:  # (this loop's group's COMMIT runs: the next group starts after it)
            await _wait_commit(lane, lg, loop, timeout)
            continue
        if lg.queued:  # (writes come together: a lone one opens a group again)
            lg.solo = 0
        elif lg.solo >= _SOLO and lg.group is None:
            fut = None  # (a task writing alone: queued whole, see _SOLO)
            break
        fut = _join(lane, lg, loop, sql, params)  # (no await inside: see _join)
        if fut is not _FULL:
            break
    if fut is not None:
        try:
            result = await fut
        except _Again:  # (the group was rolled back for another write's failure)
            fut = None
    if fut is None:  # (the lane is busy, the group rolled back, or a lone write: queued)
        lg.queued += 1
        try:
            result = await _queued(lane_job, sql, params, timeout)
        finally:
            lg.queued -= 1
    latency.append(perf_counter() - t0)
    return result


_SOLO = 3
"""A loop whose last groups held one write each, this many in a row (one task writing alone),
sends its next write to the writer thread whole, statement and COMMIT (the queued path): for
a lone write that costs less than a group's hand-off (one task's one-row writes at FULL:
p50 0.35 ms queued, 0.38 ms in groups of one, medians of 6 interleaved runs). It does so
until a write comes while another of this loop's is queued: the count starts again (a burst
of writes gets groups again, not a queue behind its first)."""


def _took(latency: deque[float], t0: float, result: Any) -> Any:
    """``result``, its write's time (since ``t0``) added to ``latency``."""
    latency.append(perf_counter() - t0)
    return result


_FULL: Any = object()  # _join: the group was at its bound (ended now); wait for its COMMIT


def _join(
    lane: WriteLane, lg: _LoopGroup, loop: asyncio.AbstractEventLoop, sql: str, params: Params
) -> Any:
    """Loop thread: run the write's statement into the loop's group -- opening one on the
    idle lane if none is open -- and return the future of its answer; None if the lane is
    busy; ``_FULL`` if the group was at its size bound (ended now). Raises the statement's
    error (the group rolled back: its other writes run again). No ``await`` in here: the
    repairs below touch only the group this call opened or joined, never one another task
    of the loop opened meanwhile."""
    group = lg.group
    try:
        if group is None:
            group = lane.take_group_here(lg.loop, partial(_end_current, lane, lg), lg.thread)
            if group is None:
                return None
            lg.group, conn = group, lane.group_connection(group)
            lg.conn = conn
            joined = lg.joined = []
            end = group.end = AsyncTicket(loop, lane.outbox)
            end.future = _Ended(loop, lg, joined)
            lg.cpu0, lg.wall0 = thread_time(), perf_counter()
            conn.set_progress_handler(lg.steps, STEP_BUDGET)
            loop.call_soon(_end, lane, lg, group)
        else:
            joined = lg.joined
            if len(joined) >= lane.opts.max_batch:
                _end(lane, lg, group)  # (at its bound: its COMMIT now; this write waits for it)
                return _FULL
            conn = lg.conn  # type: ignore[assignment]
        steps = lg.steps
        n0 = steps.n
        t0 = perf_counter()
        lg.running = True
        try:
            result = run_execute(conn, sql, params)
        except sqlite3.Error as exc:
            lg.running = False
            lg.drop(_Again())  # (the others run again, queued)
            lane.lose_group_here(group, failed=True)
            forget_cost(lane.costs, sql)  # (measured off the loop next time: it may fail again)
            err = job_error(exc)
            if err is exc:
                raise
            raise err from exc
        lg.running = False
        if steps.n - n0 > 1:
            record_cost(lane.costs, sql, steps.n - n0)
        elif (t1 := perf_counter()) - t0 > _costs.SLOW_SECONDS and lg.burned(t0, t1):
            forget_cost(lane.costs, sql)  # (measured off the loop next time: see ran_slow)
        if not conn.in_transaction:  # (its statement ended the shared transaction)
            lg.drop(_Again())
            lane.lose_group_here(group, failed=True)
            raise RolledBack("the write's statement ended its transaction; nothing was committed")
        fut: asyncio.Future[Any] = _Future(loop=loop)
        joined.append((fut, result))
    except BaseException:  # (an interrupt: nothing of the group is kept, the lane is freed)
        lg.running = False
        if group is None or lg.group is None:
            lane.abandon_group_here()  # (cut short in or just after take_group_here)
        elif lg.group is group:
            lg.drop(_Again())
            lane.lose_group_here(group)
        raise
    return fut
