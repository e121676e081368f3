"""The loop bridge: how an asyncio caller's job reaches a thread and its answer comes back.

Run inline on the loop under a budget, or queue a job and await its future; timeouts withdraw a
job that has not started, cancellation cancels it (interrupting a running read). Everything
here runs on the loop thread, except where a function says it hands work to a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import sqlite3
import threading
import time
import types
import weakref
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from .._errors import Timeout
from .._types import Bound
from ._inline import INLINE_BUDGET, MISS, run_inline
from ._jobs import AsyncJob, AsyncTicket, LaneTurn
from ._lane import WriteLane
from ._pool import ReaderPool

__all__ = (
    "INLINE_BUDGET",
    "MISS",
    "await_answer",
    "await_job",
    "borrow",
    "give_way",
    "run_inline",
    "submit",
    "wait_briefly",
)

T = TypeVar("T")
logger = logging.getLogger("litegate")

_SPARE_WAIT = 0.1  # seconds a read waits for a reader being opened for the loop


def _expire(job: AsyncJob | LaneTurn, make_error: Callable[[], BaseException]) -> None:
    """Loop thread (timer): a job still queued at its timeout is withdrawn and fails."""
    if job.withdraw() and not job.future.done():
        job.future.set_exception(make_error())


class _Timeouts:
    """One loop's queued jobs' timeouts, on one timer instead of one each: a timer per wait (a
    ``TimerHandle``, its place in the loop's heap -- ordered by a Python ``__lt__`` -- and its
    cancellation) was ~7 % of a transaction's instructions when 64 tasks queue for the lane
    (``benchmarks/hot_paths.py --case atx64``). The timer fires at the earliest deadline it
    was armed for; it then fails the jobs due and re-arms for the earliest left. A job's entry
    is dropped when its wait ends. A timer armed for a later deadline than a newer one is left
    to fire and do nothing (``_armed`` tells the current one), so nothing here holds the loop:
    the registry's key may die. Fields: the loop thread's only."""

    __slots__ = ("_armed", "_loop", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self._waiting: dict[AsyncJob | LaneTurn, tuple[float, Callable[[], BaseException]]] = {}
        self._armed = math.inf  # the deadline the current timer is armed for

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        job: AsyncJob | LaneTurn,
        timeout: float,
        make_error: Callable[[], BaseException],
    ) -> None:
        deadline = loop.time() + timeout
        self._waiting[job] = (deadline, make_error)
        if deadline < self._armed:
            self._armed = deadline
            loop.call_at(deadline, self._fire, deadline)

    def discard(self, job: AsyncJob | LaneTurn) -> None:
        self._waiting.pop(job, None)

    def _fire(self, armed: float) -> None:
        loop = self._loop()
        if armed != self._armed or loop is None:
            return  # (superseded by an earlier deadline's timer)
        self._armed = math.inf
        now = loop.time()  # (one that asyncio runs a hair early re-arms for the same deadline)
        nxt = math.inf
        expired = []
        for job, (deadline, make_error) in list(self._waiting.items()):
            if deadline <= now:
                del self._waiting[job]
                expired.append((job, make_error))
            elif deadline < nxt:
                nxt = deadline
        if nxt < math.inf:  # (re-armed first: one failing expiry must not leave the rest unbounded)
            self._armed = nxt
            loop.call_at(nxt, self._fire, nxt)
        for job, make_error in expired:
            try:
                _expire(job, make_error)
            except Exception:  # pragma: no cover - building the timeout error failed
                logger.exception("litegate: failing a timed-out wait failed")
                if not job.future.done():
                    job.future.set_exception(Timeout("the wait timed out"))


_TIMEOUTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Timeouts] = (
    weakref.WeakKeyDictionary()
)  # guard: _TIMEOUTS_LOCK (loops of several threads); each _Timeouts: its loop's thread
_TIMEOUTS_LOCK = threading.Lock()
# The last loop's registry, per thread (a thread runs one loop at a time): no lock and no
# weak-dict lookup per wait (~460 ns of a queued transaction's; hot_paths.py atx64). The loop is
# held weakly, as in _TIMEOUTS.
_LAST = threading.local()


def _timeouts(loop: asyncio.AbstractEventLoop) -> _Timeouts:
    last = getattr(_LAST, "pair", None)
    if last is not None and last[0]() is loop:
        timeouts: _Timeouts = last[1]
        return timeouts
    with _TIMEOUTS_LOCK:
        timeouts_or_none = _TIMEOUTS.get(loop)
        if timeouts_or_none is None:
            timeouts_or_none = _TIMEOUTS[loop] = _Timeouts(loop)
    _LAST.pair = (weakref.ref(loop), timeouts_or_none)
    return timeouts_or_none


async def await_job(
    job: AsyncJob | LaneTurn, timeout: Bound, make_error: Callable[[], BaseException] | None = None
) -> Any:
    """Await a queued job: ``timeout`` bounds the wait before it starts (then ``make_error()``
    is raised); cancellation withdraws it (or interrupts a running read)."""
    timeouts = None
    if timeout is not None and make_error is not None:
        loop = job.loop
        timeouts = _timeouts(loop)
        timeouts.add(loop, job, timeout, make_error)
    try:
        return await job.future
    except asyncio.CancelledError:
        job.cancel()
        raise
    finally:
        if timeouts is not None:
            timeouts.discard(job)


async def await_answer(job: AsyncTicket) -> tuple[Any, bool]:
    """Wait for ``job``'s outcome even if the task is cancelled meanwhile; returns (result,
    cancelled). It awaits the job's future itself: ``asyncio.shield`` would cost a loop
    iteration per wait (its outer future is resolved by a callback of the inner one). A
    cancellation cancels that future; the answer then goes to a fresh one, made here or, if the
    answer came first, by ``_deliver`` (both on the loop thread)."""
    cancelled = False
    while True:
        fut = job.future
        try:
            return await fut, cancelled
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # (answered before the cancellation)
                return fut.result(), True
            cancelled = True
            if fut.cancelled() and job.future is fut:  # (not answered yet)
                job.future = job.loop.create_future()


async def wait_briefly(opening: concurrent.futures.Future[None], end: float | None) -> None:
    """Wait for a reader being opened for the loop (``ReadPool.open_spare``; the wait never
    cancels it): an open takes milliseconds; past _SPARE_WAIT (a slow open: recovery, a heavy
    ``on_connect``) or ``end`` (monotonic), the read goes on without it."""
    wait = _SPARE_WAIT if end is None else min(end - time.monotonic(), _SPARE_WAIT)
    await asyncio.wait((asyncio.wrap_future(opening),), timeout=max(wait, 0.0))


@types.coroutine
def give_way() -> Generator[None, None, None]:
    """Let every other ready callback of the loop run once (``asyncio.sleep(0)``)."""
    yield


async def submit(lane: WriteLane, job: AsyncJob, timeout: Bound) -> Bound:
    """Queue a lane job that found the queue full (``lane.try_submit`` said so: callers try
    that first, with no coroutine), waiting for room in a thread without blocking the loop.
    Returns what is left of ``timeout`` for the wait that follows (one bound for both)."""
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    try:
        await asyncio.to_thread(lane.submit, job, deadline)
    except asyncio.CancelledError:
        job.cancel()  # if the thread still queues it, the writer skips it
        raise
    return None if timeout is None else max(timeout - (time.monotonic() - start), 0.0)


async def borrow(pool: ReaderPool, timeout: Bound) -> sqlite3.Connection:
    """A reader kept across awaits: an idle one at once, else waited for in a thread."""
    conn = pool.try_acquire()
    if conn is not None:
        return conn
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else time.monotonic() + timeout  # from now, not from
    fut = loop.run_in_executor(  # when an executor thread gets to it
        None,
        lambda: pool.acquire(None if deadline is None else max(deadline - time.monotonic(), 0)),
    )
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        # the thread may still get one: give it back when it does
        fut.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() else pool.release(f.result())
        )
        raise
