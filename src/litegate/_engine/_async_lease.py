"""The async write lease: the write lane held by one asyncio task across several awaits, for an
async transaction (or, with ``readers=0``, a snapshot) -- its turn on the lane (see
:class:`~._jobs.AsyncLaneHold`). Quick statements run on the loop itself (writes judged by
:mod:`._costs`); the rest, and every COMMIT that fsyncs or closes a group with a heavy or a
thread's part, on the writer thread, one at a time in the order sent. (The async reader
lease is :mod:`._async_read`'s.)

A lease belongs to the task that took it. Shared with other threads: the operations sent to the
writer thread (the lane's ``_ops``, under its lock; each answered through its future, which the
lease awaits before it uses the connection again).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
from collections.abc import Callable, Sequence
from time import monotonic, perf_counter, thread_time
from typing import Any

from .._errors import Misuse, RolledBack
from .._statements import (
    Result,
    close_cursor,
    close_cursors,
    exec_sql,
    fetch,
    prepare,
    rollback_to_savepoint,
    run_described,
    run_execute,
    run_query,
)
from .._types import Args, Bound, Params
from . import _costs
from ._authorizer import explain
from ._bridge import MISS, await_answer, await_job, give_way, run_inline, submit
from ._commit_gate import refused_error
from ._connection import begin_immediate, begin_snapshot
from ._costs import (
    SMALL_TYPES,
    STEP_BUDGET,
    Steps,
    forget_cost,
    large_params,
    measured,
    record_cost,
)
from ._counters import Counters
from ._group import lost_error
from ._jobs import READ, AsyncJob, AsyncLaneHold, AsyncTicket, LaneTurn, consume, flush
from ._lane import WriteLane

__all__ = ("AsyncLaneLease", "in_own_transaction", "take_async")

logger = logging.getLogger("litegate")

# The lease of the async transaction the current task (and the tasks it starts) is inside:
# closing the database from there would wait for that very transaction.
_HELD: contextvars.ContextVar[tuple[WriteLane, AsyncLaneLease] | None] = contextvars.ContextVar(
    "litegate_async_hold", default=None
)


async def take_async(
    lane: WriteLane, counters: Counters, busy_timeout: float, timeout: Bound, what: str
) -> AsyncLaneLease:
    """The write lane for the calling task (the engine's ``lease_async``): a turn after the
    task of its loop holding it (:meth:`~._lane_turns.LaneTurns.queue_turn`); else taken at
    once if idle, or queued for. Waits at most ``timeout``, then :class:`WriteTimeout`."""
    loop = asyncio.get_running_loop()
    t0 = monotonic()
    turn = lane.queue_turn(loop)
    if turn is not None:  # (a task of this loop holds the lane: a turn after it)
        try:
            await await_job(turn, timeout, lambda: lane.timeout_error(what, monotonic() - t0))
        except BaseException:
            _give_up_turn(lane, counters, busy_timeout, turn)
            raise
        hold = turn.granted  # (its loop's, or, the lane having left the loop, its own)
        counters.lane_wait.append(monotonic() - t0)
    else:
        hold = AsyncLaneHold(loop, lane.outbox)
        if not lane.try_take_async(hold):  # (idle lane: taken at once, on the loop)
            try:
                # (room in the queue: no submit coroutine; else one timeout for both waits)
                left = timeout if lane.try_submit(hold) else await submit(lane, hold, timeout)
                await await_job(hold, left, lambda: lane.timeout_error(what, monotonic() - t0))
            except BaseException:
                lane.abandon_async(hold)  # (granted meanwhile: handed on; else out of the queue)
                raise
            counters.lane_wait.append(monotonic() - t0)
    lease = AsyncLaneLease(lane, hold, counters, busy_timeout)
    _HELD.set((lane, lease))
    return lease


def _give_up_turn(lane: WriteLane, counters: Counters, busy_timeout: float, turn: LaneTurn) -> None:
    """A task gave up waiting for ``turn`` (a timeout, a cancellation, an interrupt): if it was
    granted meanwhile, its turn ends at once -- handed on, or the lane given back; if not, it
    never will be (its future is cancelled: whoever hands the lane on skips it)."""
    spilled = turn.hold
    if spilled is not None:
        lane.abandon_async(spilled)  # (granted meanwhile: handed on; else out of the queue)
        return
    fut = turn.future
    if not fut.done():
        fut.cancel()  # (an interrupt, not a cancellation of its wait: still waiting)
    elif not fut.cancelled() and fut.exception() is None:
        # (handed on to it meanwhile: its turn ends before it began)
        AsyncLaneLease(lane, turn.tenure, counters, busy_timeout).end()


def in_own_transaction(lane: WriteLane) -> bool:
    """Is the calling task (or the task that started it) inside an async transaction of
    ``lane`` that has not ended?"""
    held = _HELD.get()
    return held is not None and held[0] is lane and not held[1].ended


class AsyncLaneLease:
    """The write lane, held for an asyncio task until :meth:`end`.

    Statements run on the loop's thread itself when they are quick: reads under the inline
    budget (interrupted and sent to the writer thread when over it: an interrupted read
    leaves the transaction intact), writes whose SQL text has never taken more than
    :data:`STEP_BUDGET` SQLite VM steps nor :data:`SLOW_SECONDS` and that have no large
    parameter (the first run of a text, and any run with a time limit, goes to the writer
    thread, which measures it: an interrupted write would roll back the whole transaction, so
    a write is never interrupted to move it). Everything else -- functions, ``executemany``,
    scripts, and a COMMIT that fsyncs, follows heavy work (:meth:`_light`) or closes a group
    with a part that was not light on a loop -- runs on the writer thread, in the order sent.
    The connection is used by one of them at a time: nothing runs inline while an operation
    sent to the writer thread has not finished.

    Fields: all written on the loop thread only (the lease is its task's).
    """

    __slots__ = (
        "_began",
        "_busy_timeout",
        "_changes0",
        "_conn",
        "_counters",
        "_heavy",
        "_hold",
        "_lane",
        "_last_op",
        "_loop",
        "_lost",
        "_over",
        "_steps",
        "committed",
    )

    def __init__(
        self, lane: WriteLane, hold: AsyncLaneHold, counters: Counters, busy_timeout: float
    ) -> None:
        self._lane = lane
        self._hold = hold
        self._conn: sqlite3.Connection | None = lane.writer_connection(hold)
        hold.turn = self  # (its loop's turn on the lane is this lease's: see AsyncLaneHold)
        self._loop = hold.loop
        self._counters = counters
        self._busy_timeout = busy_timeout
        self._began = False  # a write transaction was begun
        self._changes0 = 0  # the connection's total_changes when it began
        self._heavy = False  # a write ran on the writer thread, or one run here was slow
        self._lost = False  # SQLite rolled it back: every later operation raises RolledBack
        self._over = False  # its turn has ended (handed on, or given back)
        self._last_op: AsyncJob | None = None  # the last operation sent to the writer thread
        self._steps = Steps()  # counts the VM steps of each write run here (reset per write)
        self.committed = False  # the COMMIT went through (set even if cancelled meanwhile)

    @property
    def ended(self) -> bool:
        """Its turn is over (committed, rolled back, handed on)."""
        return self._over

    @property
    def lost(self) -> bool:
        """SQLite rolled the transaction back: every later operation raises RolledBack."""
        return self._lost

    def _live(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise Misuse("the transaction is over (its block was left)")
        if self._lost:
            raise _rolled_back()
        return conn

    def _free(self) -> bool:
        """No operation sent to the writer thread is unfinished (the connection is ours)."""
        op = self._last_op
        return op is None or op.future.done()

    def _check(self, conn: sqlite3.Connection) -> None:
        """After a statement: if SQLite rolled the transaction back, it (and its group) is
        lost, and this raises RolledBack."""
        if self._began and not conn.in_transaction:
            self._mark_lost()
            raise _rolled_back()

    def _mark_lost(self) -> None:
        self._lost = True
        self._lane.lose_group("SQLite rolled it back (an interrupted or failed statement)")

    def _after_error(self) -> None:
        """After a statement raised: if SQLite rolled the transaction back with it, it is
        lost (later operations raise RolledBack; the error itself goes to the caller)."""
        conn = self._conn
        if self._began and conn is not None and not self._lost and not conn.in_transaction:
            self._mark_lost()

    async def begin(self, busy_timeout: float | None = None) -> None:
        """Join the open group (a savepoint, on the loop) or ``BEGIN IMMEDIATE`` (on the loop
        when the lock is free at once, else on the writer thread, retrying while another
        process holds it).

        :raises Busy: the lock stayed taken for ``busy_timeout`` (default: the database's)
        """
        conn = self._live()
        lane = self._lane
        if not lane.join() and not lane.try_begin():
            timeout = self._busy_timeout if busy_timeout is None else busy_timeout
            await self._op(begin_immediate, (lane.guard, timeout, self._counters), None, None)
            lane.opened()
            conn = self._live()
        self._began = True
        self._changes0 = conn.total_changes

    async def begin_snapshot(self) -> None:
        """A read transaction pinned now (``readers=0`` snapshots); a group left open by the
        holder before is committed first (on the writer thread)."""
        conn = self._live()
        lane = self._lane
        if lane.in_group:
            error = await self._op(_commit_group, (lane,), None, None)
            if error is not None:
                raise error
        begin_snapshot(conn, lane.guard)

    def post(self, fn: Callable[..., Any], args: Args) -> asyncio.Future[Any]:
        """Send ``fn(conn, *args)`` without waiting: it runs after everything sent before it
        (at once, on the loop, for the cheap statement functions when nothing is pending). Its
        outcome is marked retrieved, as every operation's sent to the writer thread is
        (:meth:`_send`): one left unawaited (a block's end, a cancellation) is never logged.

        :raises Misuse: the lease has ended
        """
        conn = self._live()
        if _cheap(fn) and self._free():
            fut: asyncio.Future[Any] = self._loop.create_future()
            fut.add_done_callback(consume)
            try:
                fut.set_result(self._inline(conn, fn, args))
            except Exception as exc:
                fut.set_exception(exc)
            return fut
        return self._send(fn, args, None, None).future

    def _inline(self, conn: sqlite3.Connection, fn: Callable[..., Any], args: Args) -> Any:
        try:
            result = fn(conn, *args)
        except sqlite3.DatabaseError as exc:
            err = self._failed(exc)
            if err is exc:
                raise
            raise err from exc
        self._check(conn)
        return result

    def _failed(self, exc: sqlite3.DatabaseError) -> BaseException:
        """A statement run here raised ``exc``: the error its caller gets (the authorizer's or
        the commit gate's refusal, said plainly); the transaction is lost if SQLite rolled it
        back with it."""
        err = refused_error(explain(exc), in_transaction=self._began)
        self._after_error()
        return err

    async def execute(self, sql: str, params: Params, limit: Bound) -> Result:
        """One write statement's :class:`Result`: :meth:`run` of ``run_execute``, its hot path
        flattened (it runs for every write of every ORM transaction; each call and check
        saved here is saved per statement: benchmarks/hot_paths.py atx). On the loop when its
        SQL text is known to be quick and no parameter is large, counting its steps and CPU
        time; else :meth:`run`."""
        conn = self._conn
        op = self._last_op
        costs = self._lane.costs
        if (
            limit is not None
            or conn is None
            or self._lost
            or (op is not None and not op.future.done())
            or costs.get(sql) != 0
        ):
            result: Result = await self.run(run_execute, (sql, params), sql, limit)
            return result
        began = self._began
        if began and not conn.in_transaction:  # (after an interrupted statement)
            self._mark_lost()
            raise _rolled_back()
        # (large_params, judged in C for a tuple of numbers and NULLs)
        if (type(params) is not tuple or not SMALL_TYPES.issuperset(map(type, params))) and (
            large_params(params)
        ):
            result = await self.run(run_execute, (sql, params), sql, limit)
            return result
        steps = self._steps  # (known quick: here, counting its steps and CPU time)
        steps.n = 0
        t0 = perf_counter()
        c0 = thread_time()
        conn.set_progress_handler(steps, STEP_BUDGET)
        try:
            result = run_execute(conn, sql, params)
        except sqlite3.DatabaseError as exc:
            err = self._failed(exc)
            if err is exc:
                raise
            raise err from exc
        finally:
            conn.set_progress_handler(None, 0)
            if steps.n > 1:
                record_cost(costs, sql, steps.n)
                self._heavy = True  # (its COMMIT writes much: off the loop)
            elif (
                perf_counter() - t0 > _costs.SLOW_SECONDS
                and thread_time() - c0 > _costs.SLOW_SECONDS
            ):
                forget_cost(costs, sql)  # (measured off the loop next time: see ran_slow)
                self._heavy = True
        if began and not conn.in_transaction:
            self._mark_lost()
            raise _rolled_back()
        return result

    async def run(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        """``fn(conn, *args)``: on the loop when known to be quick, else on the writer thread
        (see the class). A cancellation of the latter interrupts it, unless the transaction
        shares a group with others (an interrupted write would roll them back too): then it
        finishes and the block's end undoes it.

        :raises RolledBack: SQLite rolled the transaction back
        :raises Misuse: the lease has ended
        """
        conn = self._conn  # (_live and _free inlined: once per statement, hot_paths.py atx)
        if conn is None or self._lost:
            conn = self._live()  # (raises)
        op = self._last_op
        if op is not None and not op.future.done():  # (an interrupted one still finishing)
            await self._settle()
            conn = self._live()
        if self._began and not conn.in_transaction:  # (after an interrupted statement)
            self._mark_lost()
            raise _rolled_back()
        if limit is None:
            if fn is run_execute:
                costs = self._lane.costs
                if costs.get(args[0]) == 0 and not large_params(args[1]):
                    return await self.execute(args[0], args[1], None)  # (known quick: here)
                return await self._op(measured, (fn, costs, *args), sql, None)
            if _reads(fn):
                try:
                    result = run_inline(conn, fn, args)
                except BaseException:
                    self._after_error()
                    raise
                if result is not MISS:
                    self._check(conn)
                    return result
            elif _cheap(fn):
                return self._inline(conn, fn, args)
        return await self._op(fn, args, sql, limit)

    def _send(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> AsyncJob:
        op = AsyncJob(READ, fn, args, sql, limit, self._loop, self._lane.outbox)
        self._lane.post(self._hold, op)
        self._last_op = op
        if not _reads(fn):  # (a query sent there, e.g. over its inline budget, writes nothing)
            self._heavy = True
        op.future.add_done_callback(consume)
        return op

    async def _op(self, fn: Callable[..., Any], args: Args, sql: str | None, limit: Bound) -> Any:
        """``fn(conn, *args)`` on the writer thread, awaited."""
        op = self._send(fn, args, sql, limit)
        fut = op.future
        try:
            result = await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():  # (we were cancelled, not the operation)
                if fn is _commit_group or (self._lane.in_group and self._lane.joined):
                    if op.withdraw():  # never started: it never will
                        fut.cancel()
                elif op.cancel():  # never started / interrupted (SQLite may roll back)
                    fut.cancel()
            raise
        except BaseException:
            self._after_error()
            raise
        conn = self._conn
        if conn is not None:
            self._check(conn)
        return result

    async def query(self, sql: str, params: Params, limit: Bound) -> list[Any]:
        """The rows of a query: :meth:`run` of ``run_query``, its hot path flattened (as
        :meth:`execute`'s): inline on the loop under the read budget, else on the writer
        thread."""
        conn = self._conn
        op = self._last_op
        if (
            limit is not None
            or conn is None
            or self._lost
            or (op is not None and not op.future.done())
        ):
            rows: list[Any] = await self.run(run_query, (sql, params), sql, limit)
            return rows
        began = self._began
        if began and not conn.in_transaction:  # (after an interrupted statement)
            self._mark_lost()
            raise _rolled_back()
        try:
            rows = run_inline(conn, run_query, (sql, params))
        except BaseException:
            self._after_error()
            raise
        if rows is MISS:  # (over the budget, interrupted: a read leaves the transaction intact)
            rows = await self._op(run_query, (sql, params), sql, None)
            return rows
        if began and not conn.in_transaction:
            self._mark_lost()
            raise _rolled_back()
        return rows

    def _light(self) -> bool:
        """May its COMMIT run on the loop? Only a transaction whose writes all ran there, none
        of them slow, that changed few rows: a COMMIT writes every page changed. (Its queries may
        have gone to the writer thread: a read over its inline budget under load writes
        nothing.)"""
        conn = self._conn
        return (
            not self._heavy
            and conn is not None
            and conn.total_changes - self._changes0 <= HERE_CHANGES
        )

    async def _settle(self) -> None:
        """Wait until every operation sent to the writer thread has finished."""
        op = self._last_op
        if op is not None and not op.future.done():
            await asyncio.wait([op.future])

    async def commit(self) -> None:
        """End this transaction's part and wait for its COMMIT -- the group's, shared with
        those it hands the lane to -- which runs on the writer thread, never on the loop
        where it would fsync (at synchronous NORMAL or OFF it runs here, alone on the lane --
        :meth:`~._lane_loop.LaneLoop.commit_here` -- or for a group whose every part ran
        here, light: :meth:`~._lane_loop.LaneLoop.commit_group_here`). Not
        interrupted once under way: a cancellation meanwhile is re-raised after it finished,
        with :attr:`committed` telling whether it took effect.

        :raises RolledBack: the transaction (or its group) was lost: nothing committed
        """
        op = self._last_op  # (as in run: no _settle coroutine when nothing is pending)
        if op is not None and not op.future.done():
            await self._settle()
        lane, hold = self._lane, self._hold
        light = lane.commits_cheaply and self._light()
        if light and not hold.waiting and not lane.depth:
            # It may COMMIT here (below). First give way once: the loop's other tasks that
            # want the lane ask for it now, and then this one hands it on, the group open,
            # and they share one COMMIT (with a COMMIT here each time, every transaction
            # committed alone: 64 tasks made 6-8.6k transfers/s where groups made 7-11k, in
            # noisy runs). Alone, it costs a loop iteration.
            await give_way()
        if self._lost:
            raise RolledBack(f"the transaction did not commit: {_rolled_back()}")
        self._live()
        if not lane.in_group:  # (its shared transaction is gone: nobody would answer)
            self._lost = True
            raise RolledBack(f"the transaction did not commit: {_rolled_back()}")
        # Alone, with no fsync due: here, no await. (A task of its loop waiting for a turn: the
        # lane is handed on to it below, the group open; commit_here would refuse.)
        done = light and not hold.waiting and lane.commit_here(hold)
        if done is not False:
            self._over = True
            self._conn = None
            if done is True:
                self.committed = True
                return
            lane.give_back_async(hold)  # (its COMMIT failed: rolled back, as a group's)
            if not isinstance(done, Exception):
                raise done  # (an interrupt: its outcome is unknown, never "rolled back")
            raise lost_error(f"the shared COMMIT failed ({done!r})") from done
        try:
            lane.release_turn()
        except RolledBack:
            self._lost = True
            raise
        ticket = AsyncTicket(self._loop, lane.outbox)
        self._over = True
        self._conn = None
        try:
            if not lane.end_turn(ticket, light):
                # The group's last turn: its COMMIT here where that costs no fsync (the ticket
                # is answered by it, a failure included), else on the writer thread.
                done = light and lane.commit_group_here(hold, HERE_CHANGES)
                if done is False:
                    lane.hand_to_writer(hold, False)
                elif not isinstance(done, bool | Exception):
                    raise done  # (an interrupt: its outcome is unknown, never "rolled back")
        except BaseException:
            # An interrupt anywhere in the hand-off (end() does nothing once _over is set):
            # if the lane is still this turn's, the writer thread takes it over, commits the
            # open group for its members and goes on (a no-op once the lane was handed on);
            # answers an interrupted flush left behind are delivered.
            if ticket.answered and ticket.error is None:
                self.committed = True  # (the interrupt came after the shared COMMIT)
            ticket.future.add_done_callback(consume)  # (its answer is never awaited)
            self._to_writer(False)
            flush(lane.outbox)
            raise
        try:
            _, cancelled = await await_answer(ticket)
        except RolledBack as err:
            raise RolledBack(f"the transaction did not commit: {err}") from err
        self.committed = True
        if cancelled:
            raise asyncio.CancelledError

    def end(self) -> None:
        """Give the lane back (or on, or to the writer thread), undoing whatever of this
        transaction is still open. Idempotent, never blocks, safe at any point."""
        if self._over:
            return
        self._over = True
        conn, self._conn = self._conn, None
        lane, hold = self._lane, self._hold
        if conn is None or not self._free():  # (an operation still runs: after it)
            lane.hand_to_writer(hold, True)
            return
        try:
            if conn.in_transaction:
                lane.undo_turn()  # (no I/O: a savepoint or a WAL transaction rolled back)
            if self._began:
                if lane.end_turn(None):
                    return
            lane.give_back_async(hold)
        except BaseException:
            self._to_writer(True)
            raise

    def _to_writer(self, undo: bool) -> None:
        """After an interrupt in its turn's end: if the lane is still this turn's -- not yet
        handed on, to a task of its loop or to another holder -- the writer thread takes it
        over (``undo``: rolling back what is left of this transaction first). (The lane clears
        ``turn`` only after it left the hold: see :meth:`~._lane_turns.LaneTurns._lane_left`.)"""
        if self._hold.turn is self:
            self._lane.hand_to_writer(self._hold, undo)

    async def release(self, cursors: Sequence[sqlite3.Cursor] = ()) -> None:
        """Close ``cursors``, then give the lane back (never blocks)."""
        if cursors and self._conn is not None:
            self.post(close_cursors, (cursors,))
        self.end()


def _rolled_back() -> RolledBack:
    return RolledBack(
        "the transaction was rolled back by SQLite (an interrupted or failed statement); "
        "nothing of it will commit. Leave the block and start again"
    )


def _commit_group(conn: sqlite3.Connection, lane: WriteLane) -> BaseException | None:
    """Writer thread, for the async holder: commit the group left open before it."""
    return lane.commit_group()


HERE_CHANGES = 256
"""Rows an async transaction may change and still COMMIT on the loop (where that costs no
fsync): a COMMIT writes every page changed."""


def _reads(fn: object) -> bool:
    """The lease's own read functions (by identity: a user's callable need not be hashable)."""
    return fn is run_query or fn is fetch or fn is run_described


def _cheap(fn: object) -> bool:
    """The lease's own quick functions, run on the loop (by identity, as :func:`_reads`)."""
    return (
        fn is exec_sql
        or fn is rollback_to_savepoint
        or fn is close_cursors
        or fn is close_cursor
        or fn is prepare
    )
