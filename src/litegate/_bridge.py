"""The loop bridge: how an asyncio caller's job reaches a thread and its answer comes back.

Run inline on the loop under a budget, or queue a job and await its future; timeouts withdraw a
job that has not started, cancellation cancels it (interrupting a running read). Shared by
:mod:`litegate._async` (the facade) and :mod:`litegate._async_transaction`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._connection import Params
from ._engine import Engine
from ._errors import WriteTimeout
from ._jobs import AsyncJob
from ._pool import ReadPool

__all__ = ("INLINE_BUDGET",)  # the rest is package-internal (imported by name)

T = TypeVar("T")

INLINE_BUDGET = 0.001
"""Seconds a read may run inline on the event loop before it is moved to a reader thread."""
_YIELD_EVERY = 0.002  # inline reads give other tasks a turn at least this often
_PROGRESS_STEPS = 100
_SQLITE_INTERRUPT = 9
_MISS: Any = object()


def _run_inline(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """Run ``fn(conn, *args)`` on the loop thread within INLINE_BUDGET; _MISS if it ran over."""
    deadline = time.monotonic() + INLINE_BUDGET
    conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    try:
        return fn(conn, *args)
    except sqlite3.OperationalError as exc:
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_INTERRUPT:
            result: T = _MISS
            return result
        raise
    finally:
        conn.set_progress_handler(None, 0)


def _expire(job: AsyncJob, make_error: Callable[[], BaseException]) -> None:
    """Loop thread (timer): a job still queued at its timeout is withdrawn and fails."""
    if job.withdraw() and not job.future.done():
        job.future.set_exception(make_error())


async def _await_job(
    job: AsyncJob, timeout: float | None, make_error: Callable[[], BaseException]
) -> Any:
    """Await a queued job: ``timeout`` bounds the wait before it starts; cancellation withdraws
    it (or interrupts a running read)."""
    handle = None if timeout is None else job.loop.call_later(timeout, _expire, job, make_error)
    try:
        return await job.future
    except asyncio.CancelledError:
        job.cancel()
        raise
    finally:
        if handle is not None:
            handle.cancel()


async def _uncancellable(fut: asyncio.Future[T]) -> tuple[T, bool]:
    """Wait for ``fut`` even if the task is cancelled meanwhile; returns (result, cancelled)."""
    cancelled = False
    while True:
        try:
            return await asyncio.shield(fut), cancelled
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                return fut.result(), True
            cancelled = True


def _first_value(rows: list[Any]) -> Any:
    return rows[0][0] if rows else None


def _fetch_page(conn: sqlite3.Connection, cursor: sqlite3.Cursor, n: int) -> list[Any]:
    return cursor.fetchmany(n)


def _open_cursor(conn: sqlite3.Connection, sql: str, params: Params) -> sqlite3.Cursor:
    return conn.execute(sql, params)


def _close_cursor(conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
    cursor.close()


def _lane_timeout(engine: Engine, what: str, t0: float) -> WriteTimeout:
    lane = engine.lane
    return WriteTimeout(
        f"{what} did not get the write lane within {time.monotonic() - t0:.2f}s "
        f"({lane.depth} job(s) queued; {lane._hold_text()}). Raise timeout=, or keep "
        "transactions short"
    )


async def _submit(engine: Engine, job: AsyncJob, timeout: float | None) -> None:
    """Queue a lane job without blocking the loop (a full queue is waited for in a thread)."""
    if engine.lane.try_submit(job):
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        await asyncio.to_thread(engine.lane.submit, job, deadline)
    except asyncio.CancelledError:
        job.cancel()  # if the thread still queues it, the writer skips it
        raise


def _never() -> BaseException:  # pragma: no cover - only used without a timeout
    return AssertionError("unreachable")


async def _borrow(pool: ReadPool, timeout: float | None) -> sqlite3.Connection:
    """A reader kept across awaits: an idle one at once, else waited for in a thread."""
    conn = pool.try_acquire()
    if conn is not None:
        return conn
    deadline = None if timeout is None else time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, pool.acquire, deadline)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        # the thread may still get one: give it back when it does
        fut.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() else pool.release(f.result())
        )
        raise
