"""Jobs: the unit of work handed to a lane, and how their callers are answered.

Thread callers block on a raw lock. Asyncio callers get a future; finished async jobs are put
in an *outbox* and delivered to their loop in batches (one ``call_soon_threadsafe`` per loop
per flush), which keeps the per-call cost of the thread hop small.

Shared fields and their guards (a job is made by its caller and handed to one worker: a lane
holder or a reader thread):

=========================  ==============================  ===================================
field                      written by                      guard / ordering
=========================  ==============================  ===================================
fn, args, sql, time_limit  the caller, before queueing     the queue hand-off (a lock)
ctx, deadline, pinned,
finished
result, error, answered    the worker, before answering    ``Job.done`` released after them;
                                                           an async job's ``outbox.append``
                                                           then ``call_soon_threadsafe``
AsyncJob.state,            loop (cancel, withdraw) and     ``AsyncJob._lock``
running_on                 worker (start, attach, finish)
AsyncJob.stop_asked        loop (withdraw, interrupting)   ``AsyncJob._lock`` to set; a runner's
                                                           progress handler reads it without
                                                           (set once: a stale False delays
                                                           the abort by one chunk of steps)
AsyncJob.future,           the loop thread only            (resolved in ``_deliver``, or by
AsyncTicket.future                                         ``grant_here``, on it; a ticket's
                                                           replaced there and in
                                                           ``await_answer`` after a
                                                           cancellation)
AsyncTicket.result,        whoever commits the group       its one ``finish``: the outbox
error, answered                                            hand-off orders them
AsyncLaneHold.waiting,     its loop's tasks (a turn        its loop's thread only (the lane
AsyncLaneHold.turn,        queued, handed on, spilled)     leaves the loop only from there);
LaneTurn.hold                                              ``WriteLane.depth`` reads the
                                                           length of ``waiting`` from any
                                                           thread (a statistic)
LaneHold.abandoned,        the waiter giving up; read by   the lane's ``_lock``
AsyncLaneHold.abandoned    whoever would grant it
=========================  ==============================  ===================================
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
from _thread import allocate_lock as _lock_type
from asyncio.events import _get_running_loop
from collections import deque
from collections.abc import Callable
from threading import get_ident
from typing import Any

from .._types import Args, Bound, Fn
from ._commit_gate import refused_error
from ._connection import run_limited

__all__ = (
    "EXCLUSIVE",
    "READ",
    "WRITE",
    "AsyncJob",
    "AsyncLaneHold",
    "AsyncTicket",
    "BaseJob",
    "Job",
    "LaneHold",
    "Outbox",
    "LaneTurn",
    "consume",
    "deliverable",
    "flush",
    "running_loop",
)

WRITE = 0  # runs inside the lane's group-commit transaction, isolated by a savepoint
READ = 1  # runs on a connection outside any transaction
EXCLUSIVE = 2  # takes the lane for itself (interactive transactions, snapshots, iterations)

Outbox = deque["AsyncJob | AsyncTicket"]


class BaseJob:
    """What a lane needs of a job: a function to run and a way to publish the outcome."""

    __slots__ = ("answered", "args", "ctx", "error", "fn", "kind", "result", "sql", "time_limit")
    kind: int

    def __init__(
        self, kind: int, fn: Fn[Any], args: Args, sql: str | None = None, time_limit: Bound = None
    ) -> None:
        self.kind = kind
        self.fn = fn
        self.args = args
        self.sql = sql
        self.time_limit = time_limit
        self.ctx = contextvars.copy_context()
        self.result: Any = None
        self.error: BaseException | None = None
        self.answered = False  # finish() was called (the outcome is published)

    def run(self, conn: sqlite3.Connection) -> Any:
        """Run the job's function on ``conn`` in the caller's contextvars context."""
        return self.ctx.run(self.fn, conn, *self.args)

    def execute(self, conn: sqlite3.Connection) -> bool:
        """Run the job on ``conn`` under its time limit and publish the outcome (its result,
        or whatever it raised: any BaseException goes to its caller). True if it succeeded."""
        try:
            result = run_limited(conn, self.time_limit, self.sql, self.run)
        except BaseException as exc:
            self.finish(error=refused_error(exc))
            return False
        self.finish(result)
        return True

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        raise NotImplementedError

    @property
    def cancelled(self) -> bool:
        return False

    def start(self, conn: sqlite3.Connection | None = None) -> bool:
        """Claim the job before running it (``conn``: where it runs, for interrupts)."""
        return True

    def attach(self, conn: sqlite3.Connection) -> None:
        """The job starts running on ``conn`` now (async jobs: a cancellation may interrupt)."""

    def hold(self, warn_after: float, on_long: Callable[[float], None], conn: Any) -> float:
        """Exclusive jobs only: keep the lane until the holder is done."""
        raise NotImplementedError


class Job(BaseJob):
    """A thread caller's job. The caller blocks on ``done``, a raw lock that the lane releases
    once the outcome is final (for writes: after the COMMIT that made it durable); ``result``
    and ``error`` are written before that release and read after the caller's acquire."""

    __slots__ = ("done",)

    def __init__(
        self, kind: int, fn: Fn[Any], args: Args, sql: str | None = None, time_limit: Bound = None
    ) -> None:
        # BaseJob.__init__ inlined: super().__init__ costs ~1,600 of ~69,000 instructions per
        # thread write (benchmarks/hot_paths.py). Keep the two in step.
        self.kind = kind
        self.fn = fn
        self.args = args
        self.sql = sql
        self.time_limit = time_limit
        self.ctx = contextvars.copy_context()
        self.result: Any = None
        self.error: BaseException | None = None
        self.answered = False
        self.done = done = _lock_type()
        done.acquire()

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """Called from the lane's thread: publish the outcome and wake the caller."""
        self.result = result
        self.error = error
        self.answered = True
        self.done.release()

    def outcome(self) -> Any:
        if self.error is not None:
            err = self.error
            self.error = None  # break the traceback -> frame -> job cycle
            raise err
        return self.result


def _noop(conn: sqlite3.Connection) -> None:  # pragma: no cover - never run
    return None


class LaneHold(Job):
    """A thread's queued request for the write lane. Whoever hands the lane on (the holder
    before, or the writer thread) makes the lane ``ident``'s and answers it (``finish``); the
    thread then uses the writer connection itself: no thread hop per statement."""

    __slots__ = ("abandoned", "ident")

    def __init__(self) -> None:
        super().__init__(EXCLUSIVE, _noop, ())
        self.ident = get_ident()  # the thread that will hold the lane
        self.abandoned = False  # its waiter gave up (interrupted): never grant it (lane lock)


class AsyncJob(BaseJob):
    """An asyncio caller's job: the outcome goes to ``future`` on ``loop`` via an outbox."""

    __slots__ = (
        "_lock",
        "deadline",
        "finished",
        "future",
        "loop",
        "outbox",
        "pinned",
        "running_on",
        "state",
        "stop_asked",
    )

    QUEUED, RUNNING, DONE, CANCELLED = 0, 1, 2, 3
    keeps_answer = False  # (see AsyncTicket)

    def __init__(
        self,
        kind: int,
        fn: Callable[..., Any],
        args: Args,
        sql: str | None,
        time_limit: Bound,
        loop: asyncio.AbstractEventLoop,
        outbox: Outbox,
        ctx: contextvars.Context | None = None,
    ) -> None:
        # BaseJob.__init__ inlined, as in Job: two async jobs are made per async transaction
        # under contention (a hold and a ticket; benchmarks/hot_paths.py atx64). Keep them in
        # step. ``ctx``: the context it runs in (default: a copy of the caller's).
        self.kind = kind
        self.fn = fn
        self.args = args
        self.sql = sql
        self.time_limit = time_limit
        self.ctx = contextvars.copy_context() if ctx is None else ctx
        self.result: Any = None
        self.error: BaseException | None = None
        self.answered = False
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.outbox = outbox
        self.state = AsyncJob.QUEUED
        self.running_on: sqlite3.Connection | None = None
        self.pinned: sqlite3.Connection | None = None  # run on this connection, not the pool's
        self.deadline: float | None = None  # for the pool wait of a reader thread
        self.finished: threading.Event | None = None  # set when finished (if someone waits)
        # Set (under _lock) when a cancellation interrupts it while running. sqlite3_interrupt
        # is a no-op before the statement's first step, so a runner's progress handler also
        # reads this flag (unlocked: set once, a stale False only delays the abort a chunk).
        self.stop_asked = False
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self.state == AsyncJob.CANCELLED

    def start(self, conn: sqlite3.Connection | None = None) -> bool:
        """Worker thread: claim the job before running it; False if it was cancelled."""
        with self._lock:
            if self.state != AsyncJob.QUEUED:
                return False
            self.state = AsyncJob.RUNNING
            self.running_on = conn
            return True

    def cancel(self) -> bool:
        """Loop thread: cancel a job. True if it never started (and never will); a running read
        is interrupted so its connection is free at once."""
        return self.withdraw(interrupt=True)

    def attach(self, conn: sqlite3.Connection) -> None:
        """The job starts running on ``conn`` now: a cancellation may interrupt it."""
        with self._lock:
            if self.state == AsyncJob.RUNNING:
                self.running_on = conn

    def withdraw(self, *, interrupt: bool = False) -> bool:
        """Cancel only if it has not started (a timeout: a running job is left to finish, unless
        ``interrupt``). True if it never started (and never will)."""
        with self._lock:
            if self.state == AsyncJob.QUEUED:
                self.state = AsyncJob.CANCELLED
                if self.finished is not None:
                    self.finished.set()  # it will never run
                return True
            if interrupt and self.state == AsyncJob.RUNNING:
                self.stop_asked = True
                if self.running_on is not None:
                    self.running_on.interrupt()
            return False

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            self.state = AsyncJob.DONE
            self.running_on = None
        self.result = result
        self.error = error
        self.answered = True
        self.outbox.append(self)
        if self.finished is not None:
            self.finished.set()


class AsyncTicket:
    """An async transaction's wait for the COMMIT of the group it handed the lane on to. It
    runs nothing -- whoever commits the group answers it -- so it is no job: no function, no
    context, no state, no lock (one is made per grouped transaction; the AsyncJob it was cost
    ~90 bytecodes more each, benchmarks/lean_async_tx.py). Its answer is never dropped: when
    the waiting task is cancelled (which cancels the future it awaits), :func:`_deliver` puts
    the answer into a fresh future, the one ``_bridge.await_answer`` awaits next -- so the
    waiter awaits the future itself, with no ``asyncio.shield`` (a loop iteration more per
    COMMIT)."""

    __slots__ = ("answered", "error", "future", "loop", "outbox", "result")
    keeps_answer = True

    def __init__(self, loop: asyncio.AbstractEventLoop, outbox: Outbox) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.outbox = outbox
        self.result: Any = None
        self.error: BaseException | None = None
        self.answered = False

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """Whoever commits the group: publish the outcome. No lock: it is answered once, by
        the lane holder of the moment; the outbox hand-off orders the outcome before the loop
        reads it."""
        self.result = result
        self.error = error
        self.answered = True
        self.outbox.append(self)


def deliverable(error: BaseException) -> BaseException:
    """``error`` as an awaiting coroutine can take it: asyncio refuses ``StopIteration`` in a
    future (it would end the coroutine as if it returned), and ``GeneratorExit`` raised into a
    coroutine forbids it to await again (``async with`` cleanup then fails: "coroutine ignored
    GeneratorExit"), so either becomes a ``RuntimeError`` caused by it, as PEP 479 does for
    generators."""
    if isinstance(error, (StopIteration, GeneratorExit)):
        wrapped = RuntimeError(f"the function raised {type(error).__name__}: {error!r}")
        wrapped.__cause__ = error
        return wrapped
    return error


_DELIVER_CHUNK = 16  # futures resolved per loop iteration (a group's 64 acks: 4 iterations)


def _deliver(jobs: list[AsyncJob | AsyncTicket]) -> None:
    """On the loop: resolve the futures of a batch of finished jobs. One job's outcome can never
    keep the others from theirs. A long batch is resolved a chunk per loop iteration: every
    task woken runs before the loop looks at its timers again, so a burst of wake-ups would
    make every timer late (event-loop lag)."""
    if len(jobs) > _DELIVER_CHUNK:
        rest = jobs[_DELIVER_CHUNK:]
        jobs = jobs[:_DELIVER_CHUNK]
        jobs[0].loop.call_soon(_deliver, rest)
    for job in jobs:
        fut = job.future
        error, result = job.error, job.result
        job.error = job.result = None
        if fut.done():
            if not (job.keeps_answer and fut.cancelled()):
                continue
            # Its waiter's task was cancelled: the answer goes to a fresh future, which the
            # waiter awaits next (``_bridge.await_answer``; both run on this loop's thread).
            # Marked retrieved: a waiter interrupted before it looked never awaits it.
            fut = job.future = job.loop.create_future()
            fut.add_done_callback(consume)
        try:
            if error is not None:
                fut.set_exception(deliverable(error))
            else:
                fut.set_result(result)
        except BaseException as exc:  # (a future refusing an outcome: answer it anyway)
            if not fut.done():
                failed = RuntimeError(f"litegate could not deliver this call's outcome: {exc!r}")
                failed.__cause__ = error
                fut.set_exception(failed)


def consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve an unawaited future's outcome (unretrieved, asyncio logs it at ERROR)."""
    if not fut.cancelled():
        fut.exception()


def flush(outbox: Outbox) -> None:
    """Hand every finished job in ``outbox`` to its loop: one call per loop."""
    if not outbox:
        return
    if len(outbox) == 1:  # (one answer, a lone write's: no sorting by loop)
        try:
            job = outbox.popleft()
        except IndexError:  # (another thread's flush took it)
            return
        try:
            loop = job.loop
            if loop is running_loop():
                loop.call_soon(_deliver, [job])
            else:
                loop.call_soon_threadsafe(_deliver, [job])
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
        except BaseException:  # (an interrupt: it waits for the next flush)
            outbox.appendleft(job)
            raise
        return
    by_loop: dict[asyncio.AbstractEventLoop, list[AsyncJob | AsyncTicket]] = {}
    try:
        while True:
            try:
                job = outbox.popleft()
            except IndexError:
                break
            by_loop.setdefault(job.loop, []).append(job)
        here = running_loop()
        while by_loop:
            loop, jobs = next(iter(by_loop.items()))
            try:
                if loop is here:  # (on that loop's thread, e.g. a group committed on its loop:
                    loop.call_soon(_deliver, jobs)  # no wake-up through its self-pipe)
                else:
                    loop.call_soon_threadsafe(_deliver, jobs)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
            del by_loop[loop]
    except BaseException:  # (an interrupt: what was not handed to its loop waits for the next)
        for jobs in by_loop.values():
            outbox.extend(jobs)
        raise


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (no exception raised and caught on
    the writer's and readers' threads, as ``get_running_loop`` would)."""
    return _get_running_loop()


class AsyncLaneHold(AsyncJob):
    """A loop's request for the write lane, and then its *tenure*: the lane held from that
    loop, by one of its tasks at a time (a *turn*; see :class:`~._async_lease.AsyncLaneLease`).
    Its future resolves when the lane is its first task's. Other tasks of the loop that want
    the lane meanwhile queue a :class:`LaneTurn` in ``waiting`` -- no lock, no thread -- and the
    task whose turn ends hands the lane on to the first of them (``turn``: the lease whose turn
    it is, None while being handed on, and once the lane has left the loop: see
    :meth:`~._lane_turns.LaneTurns._lane_left`); when the lane leaves the loop, those still waiting
    queue for it each with a hold of its own (:meth:`~._lane_turns.LaneTurns._spill_locked`).
    Fields ``waiting`` and ``turn``: the loop thread's only."""

    __slots__ = ("abandoned", "turn", "waiting")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        outbox: Outbox,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        # It runs no code of its caller's, so it keeps none of its caller's context: a copy
        # would hold the task's previous hold (the engine records the current one in a
        # contextvar), and that one the hold before it -- a chain of every transaction the task
        # ran, never freed while the task lives (8,788 holds in a 2 s benchmark run, their
        # futures and locks: a 30-55 ms pause of each full GC collection; issue 11).
        AsyncJob.__init__(
            self, EXCLUSIVE, _noop, (), None, None, loop, outbox, contextvars.Context()
        )
        if future is not None:  # (a LaneTurn's, spilled: its waiter awaits that one)
            self.future = future
        self.abandoned = False  # its task gave up before the grant: never grant it (lane lock)
        self.waiting: deque[LaneTurn] = deque()  # its loop's tasks waiting for a turn
        # the lease whose turn it is (None: being handed on, or the lane left the loop)
        self.turn: object = None

    @property
    def orphaned(self) -> bool:
        """Its loop is closed: nobody can take or use the lane for it any more. (Read from
        any thread: a loop's closed flag is set once and never cleared; a stale False is
        caught later by the writer's watch, :meth:`LaneWriter._watch_hold`.)"""
        return self.loop.is_closed()

    def grant_here(self) -> None:
        """On its loop's thread: answer the waiter at once (no outbox, no thread hop)."""
        with self._lock:
            self.state = AsyncJob.DONE
            self.running_on = None
        if not self.future.done():
            self.future.set_result(None)
        self.answered = True  # (after: an interrupted grant is made again, see _pass_on)


class LaneTurn:
    """A task's wait for a turn on the lane while a task of its own loop holds it (the hold's
    ``waiting``): its future resolves when the lane is its task's -- handed on by the task
    before it (``hold`` stays None: the lane is the tenure's), or, after the lane left the loop,
    granted to the hold it was queued with (``hold``). The lane's wait timeout
    (:func:`~._bridge.await_job`) withdraws it like a queued job. Loop thread only."""

    __slots__ = ("future", "hold", "loop", "tenure")

    def __init__(self, tenure: AsyncLaneHold) -> None:
        self.tenure = tenure  # the hold of its loop it waits behind
        self.loop = loop = tenure.loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.hold: AsyncLaneHold | None = None  # the hold it queued with, once spilled

    @property
    def granted(self) -> AsyncLaneHold:
        """Once its future resolved: the hold whose lane is its task's."""
        hold = self.hold
        return self.tenure if hold is None else hold

    def withdraw(self, *, interrupt: bool = False) -> bool:
        """Give up the wait (its timeout, its cancellation): True if it never got the lane
        and never will."""
        hold = self.hold
        if hold is None:
            return not self.future.done()  # (handed on only by resolving the future)
        return hold.withdraw()

    def cancel(self) -> bool:
        return self.withdraw()
