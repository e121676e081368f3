"""The local engine: one write lane plus one read pool for a database file, in this process.

:class:`LocalEngine` implements :class:`~._interface.Engine`; the data flow is drawn in the
package docstring (:mod:`litegate._engine`).

Shared fields and their guards:

===================================  =====================================================
field                                guard
===================================  =====================================================
_state, _closer                      ``_lock`` (``start_close``, from ``__del__``, writes
                                     ``_state`` only if it gets the lock without waiting);
                                     ``_state`` is also read without it on the hot paths
                                     (a call that races a close is refused by the lane's
                                     or the pool's own closed check)
_readers, _side_pool                 created once under ``_lock`` (double-checked)
_forked, _fork_busy, _fork_idle      written by the forking thread in the fork hooks (no
                                     other thread runs in the child then); ``_forked`` is
                                     cleared under ``_lock`` by the first use in the child
_lane, _pool, _counters              set in ``__init__`` (and replaced under ``_lock`` in a
                                     forked child, before any other thread of it uses them)
_pid, _loop_readers                  as ``_lane`` (_loop_readers: its own guard)
_slow                                set in ``__init__``; its own guard (SlowStatements)
===================================  =====================================================
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from threading import get_ident
from time import monotonic, perf_counter
from typing import Any, TypeVar

from .._config import Options
from .._errors import Misuse
from .._statements import run_execute, run_query
from .._stats import Stats
from .._types import Args, Bound, Fn, Params
from . import _fork
from ._async_lease import AsyncLaneLease, in_own_transaction, take_async
from ._async_read import AsyncPooledRead
from ._authorizer import refuse_plain_savepoints
from ._bridge import MISS, await_job, borrow, run_inline, submit, wait_briefly
from ._connection import run_limited
from ._counters import Counters, ms
from ._jobs import READ, WRITE, AsyncJob, Job
from ._lane import WriteLane
from ._lease import LaneLease, NestedRead, PooledRead
from ._loop_group import write_grouped
from ._loop_write import write_other
from ._pool import PerThreadPool, ReaderPool, ReadPool, make_pool, thread_name
from ._readers import LoopReaders, ReaderThreads, SlowStatements
from ._turns import wait_turn

__all__ = ("LocalEngine",)

logger = logging.getLogger("litegate")

T = TypeVar("T")

_OPEN, _CLOSING, _CLOSED = 0, 1, 2
_ABANDONED: list[object] = []  # connections in use at a fork, in the child: never closed
_EXIT_CLOSE_TIMEOUT = 5.0
_PER_THREAD_READERS = 4  # reader threads (and side-pool size) for async use in per-thread mode


class LocalEngine:
    """Owns the write lane and the read pool of one database file. Thread-safe."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts.validate()
        self._lock = threading.Lock()
        self._closed_event = threading.Event()
        self._state = _OPEN
        self._closer = False  # a close() call is doing the work (start_close only signals)
        self._forked = False
        self._fork_busy = False
        self._fork_idle = True
        self._pid = os.getpid()
        self._slow = SlowStatements()
        self._open()
        _fork.register(self)

    def _open(self) -> None:
        self._counters = Counters()
        self._lane = WriteLane(
            self.opts, self._counters, self._warn_large_wal, on_broken=self._lane_broken
        )
        try:
            self._pool: ReaderPool | None = make_pool(self.opts)
        except BaseException:
            self._lane.close(monotonic() + 1.0)
            raise
        self._readers: ReaderThreads | None = None
        self._side_pool: ReadPool | None = None
        pool = self._pool
        self._loop_readers = LoopReaders(pool) if isinstance(pool, PerThreadPool) else None

    def _reader_threads(self) -> ReaderThreads:
        """Reader threads for async callers (started on first use). Pool modes only."""
        r = self._readers
        if r is None:
            with self._lock:
                if self._readers is None:
                    pool = self._pool
                    assert pool is not None
                    # one fewer than the pool's readers: the loop's inline reads find one idle
                    # (else fast reads go to threads too: a cascade, see SlowStatements)
                    n = pool.size if isinstance(pool, ReadPool) else _PER_THREAD_READERS + 1
                    self._readers = ReaderThreads(pool, max(1, n - 1), self.opts.name, self._slow)
                r = self._readers
        return r

    def _borrow_pool(self) -> ReaderPool:
        """Where an async snapshot borrows a connection it keeps across awaits: the pool
        itself, or (per-thread mode, whose connections belong to threads) a side pool."""
        pool = self._pool
        if isinstance(pool, ReadPool):
            return pool
        side = self._side_pool
        if side is None:
            with self._lock:
                if self._side_pool is None:
                    self._side_pool = ReadPool(self.opts, _PER_THREAD_READERS)
                side = self._side_pool
        return side

    def _pools(self) -> list[ReaderPool]:
        return [p for p in (self._pool, self._side_pool) if p is not None]

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._state != _OPEN

    @property
    def open_in_this_process(self) -> bool:
        return self._state == _OPEN and self._pid == os.getpid()

    def check(self) -> None:
        """Raise :class:`Closed` after close; reopen connections after a fork."""
        if self._state:
            raise self._lane.closed_error(
                f"the database {self.opts.name!r} is closed; open a new one with litegate.connect"
            )
        if self._forked:
            self._reopen_after_fork()

    def close(self, timeout: float | None = None) -> None:
        """Drain queued writes, checkpoint, close every connection. Idempotent.

        Blocks up to ``timeout`` seconds (default: the database's ``timeout``, at least 5 s);
        writes still queued then fail with :class:`Closed`.

        :raises Misuse: called by the holder of the write lane (inside its own transaction or
            ``run_write`` function): it would wait for itself
        """
        if self._state == _OPEN and not self._forked:
            self._no_reentry("close()")
        with self._lock:
            state = self._state
            mine = state == _OPEN or (state == _CLOSING and not self._closer)
            if mine:
                self._state = _CLOSING
                self._closer = True
        if not mine:
            if state == _CLOSING:
                self._closed_event.wait(timeout if timeout is not None else 30.0)
            return
        _fork.unregister(self)
        try:
            if self._forked:
                if self._fork_busy:
                    self._abandon()
                else:
                    self._close_inherited()
                return
            if timeout is None:
                timeout = max(self.opts.timeout or 0.0, _EXIT_CLOSE_TIMEOUT)
            deadline = monotonic() + timeout
            if self._readers is not None:
                self._readers.close(max(0.0, min(1.0, deadline - monotonic())))
            self._lane.close(deadline)
            for pool in self._pools():
                pool.close()
        finally:
            with self._lock:
                self._state = _CLOSED
            self._closed_event.set()

    async def close_async(self, timeout: float | None = None) -> None:
        """:meth:`close` in a worker thread: the loop keeps running meanwhile.

        :raises Misuse: called inside this task's own transaction (it would wait for it)
        """
        if in_own_transaction(self._lane) and not self.closed:
            raise Misuse(
                "close() was called inside this task's own transaction; it would wait for the "
                "transaction to end (a deadlock). Leave the `async with` block first"
            )
        if not self.closed:
            await asyncio.to_thread(self.close, timeout)

    def start_close(self) -> None:
        """Begin closing without blocking and without waiting for any lock: it runs from
        ``__del__``, possibly while this very thread holds one of the engine's locks. The
        writer drains the queue, stops, and then closes the rest (:meth:`close`, on its own
        thread)."""
        if self._state != _OPEN or self._forked or self._pid != os.getpid():
            return
        if self._lock.acquire(blocking=False):  # (if taken, close() will set it in a moment)
            try:
                if self._state == _OPEN:
                    self._state = _CLOSING
            finally:
                self._lock.release()
        self._lane.request_close(self._close_after_writer)

    def _lane_broken(self, why: str) -> None:
        """Writer thread, as its lane stops on its own (before it answers the waiters): the
        whole database closes, visibly (``closed`` is true; calls raise Closed saying why)."""
        with self._lock:  # (the writer thread: it may wait for the lock, unlike __del__)
            if self._state == _OPEN:
                self._state = _CLOSING
        self._lane.request_close(self._close_after_writer)

    def _close_after_writer(self) -> None:
        """Writer thread, after it stopped for :meth:`start_close`: close the rest (unless a
        :meth:`close` call is already doing it: it may be joining this very thread)."""
        with self._lock:
            if self._closer:
                return
        self.close(_EXIT_CLOSE_TIMEOUT)

    # ---- fork (see _fork) ------------------------------------------------------------------
    def before_fork(self, deadline: float) -> None:
        idle = self._lane.pause_for_fork(deadline)
        held: list[ReaderPool] = []
        try:
            for pool in self._pools():
                idle = pool.quiesce(deadline) and idle
                held.append(pool)
        except BaseException:  # interrupted: undo what was done (the fork proceeds anyway)
            for pool in reversed(held):
                pool.resume()
            self._lane.resume_after_fork()
            raise
        self._fork_idle = idle

    def _resume_after_fork(self) -> None:
        for pool in reversed(self._pools()):
            pool.resume()
        self._lane.resume_after_fork()

    def after_fork_in_parent(self) -> None:
        self._resume_after_fork()

    def after_fork_in_child(self) -> None:
        # Runs in the child right after fork(): record the state, replace locks, no I/O.
        self._resume_after_fork()
        self._fork_busy = not self._fork_idle
        self._lock = threading.Lock()
        self._closed_event = threading.Event()
        self._forked = True

    def refuse_after_fork(self) -> None:
        # In the child of a fork that could not hold this engine still: refuse every use.
        self._fork_busy = True
        self._lock = threading.Lock()
        self._closed_event = threading.Event()
        self._forked = True

    def _reopen_after_fork(self) -> None:
        with self._lock:
            if not self._forked:
                return
            if self.opts.memory:
                raise Misuse(
                    "an in-memory database cannot be used in a forked child: the child would "
                    "see a stale copy. Open the database after the fork (e.g. in the worker)"
                )
            if self._fork_busy:
                raise Misuse(
                    f"the database {self.opts.name!r} was in use by another thread when this "
                    "process forked, so SQLite's lock state cannot be carried into the child. "
                    "Open the database in the child (e.g. gunicorn's post_fork hook), or fork "
                    "while it is idle"
                )
            self._close_inherited()
            self._pid = os.getpid()
            self._open()
            self._forked = False

    def _inherited(self) -> list[Any]:
        conns: list[Any] = [self._lane.inherited_connection()]
        for pool in self._pools():
            conns.extend(pool.abandon())
        return conns

    def _close_inherited(self) -> None:
        for conn in self._inherited():
            try:
                conn.close()
            except Exception:  # pragma: no cover
                logger.exception("litegate: closing an inherited connection failed")

    def _abandon(self) -> None:
        """Forget connections that were in use at the fork, never closing them (a thread of
        the parent may have been inside SQLite: its mutexes are copied locked)."""
        _ABANDONED.extend(self._inherited())

    # ---- writes ----------------------------------------------------------------------------
    def _no_reentry(self, what: str) -> None:
        """Refuse a call that would wait for the lane this very thread holds (a deadlock)."""
        why = self._lane.reentrance(get_ident())
        if why is not None:
            raise Misuse(f"{what} was called on the database {why}")

    def write(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T:
        if self._state or self._forked:
            self.check()
        lane = self._lane
        if lane.owner is not None or lane.user is not None:
            self._no_reentry("a write")
        refuse_plain_savepoints(fn, args)
        t0 = perf_counter()
        job = Job(WRITE, fn, args, sql, time_limit)
        lane.call(job, timeout, "the write")
        self._counters.write_latency.append(perf_counter() - t0)
        error = job.error
        if error is not None:
            job.error = None  # break the traceback -> frame -> job cycle
            raise error
        result: T = job.result
        return result

    async def _lane_job(
        self,
        kind: int,
        fn: Callable[..., Any],
        args: Args,
        timeout: Bound,
        time_limit: Bound,
        sql: str | None,
        what: str,
    ) -> Any:
        """An asyncio caller's job on the lane: queued without blocking the loop, answered in
        a batch after its group commit (or its run, for a lane read)."""
        lane = self._lane
        job = AsyncJob(kind, fn, args, sql, time_limit, asyncio.get_running_loop(), lane.outbox)
        m0 = monotonic()
        # (room in the queue: no submit coroutine; else one timeout for both waits)
        left = timeout if lane.try_submit(job) else await submit(lane, job, timeout)
        try:
            return await await_job(job, left, lambda: lane.timeout_error(what, monotonic() - m0))
        except BaseException:
            if job.cancelled:
                lane.cancel(job)  # (its place in the queue is free at once)
            raise

    def write_async(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> Coroutine[Any, Any, T]:
        # (no coroutine of its own: a write of a loop group is awaited one frame nearer)
        if self._state or self._forked:
            self.check()
        lane, latency = self._lane, self._counters.write_latency
        if fn is run_execute and time_limit is None and not lane.commits_cheaply:
            return write_grouped(
                lane, self._lane_job, args[0], args[1], timeout, latency, perf_counter()
            )
        return write_other(lane, self._lane_job, latency, fn, args, timeout, time_limit, sql)

    def lease(
        self,
        timeout: Bound,
        what: str = "the transaction",
        holder: object = None,
    ) -> LaneLease:
        if self._state or self._forked:
            self.check()
        lane = self._lane
        if lane.owner is not None or lane.user is not None:
            self._no_reentry(what)
        t0 = monotonic()
        try:
            conn, hold = lane.take(timeout, what, holder)
            self._counters.lane_wait.append(monotonic() - t0)
            return LaneLease(lane, conn, hold, self.opts.busy_timeout)
        except BaseException:  # (interrupted before the caller has the lease to release)
            lane.recover(get_ident(), holder)
            raise

    def recover(self, holder: object) -> None:
        """After an exception (Ctrl-C) escaped :meth:`lease` or a lease's release on this
        thread: give back the write lane if ``holder`` still holds it. Idempotent."""
        self._lane.recover(get_ident(), holder)

    def lease_async(
        self, timeout: Bound, what: str = "the transaction"
    ) -> Coroutine[Any, Any, AsyncLaneLease]:
        self.check()
        return take_async(self._lane, self._counters, self.opts.busy_timeout, timeout, what)

    # ---- reads -------------------------------------------------------------------------------
    def query(
        self, sql: str, params: Params, timeout: Bound, time_limit: Bound, first: bool
    ) -> Any:
        if self._state or self._forked:
            self.check()
        pool = self._pool
        if pool is None or time_limit is not None:
            rows: list[Any] = self.read(run_query, (sql, params), timeout, time_limit, sql)
            return (rows[0] if rows else None) if first else rows
        t0 = perf_counter()
        result = pool.query(sql, params, timeout, first)
        self._counters.read_latency.append(perf_counter() - t0)
        return result

    def read(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T:
        if self._state or self._forked:
            self.check()
        t0 = perf_counter()
        pool = self._pool
        if pool is None:
            result = self._lane_read(fn, args, timeout, time_limit, sql)
        elif time_limit is None:
            result = pool.run(fn, args, timeout)
        else:
            result = pool.run(run_limited, (time_limit, sql, fn, *args), timeout)
        self._counters.read_latency.append(perf_counter() - t0)
        return result

    def _lane_read(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None
    ) -> T:
        conn = self._lane.held_by(get_ident())
        if conn is not None:  # this thread holds the lane: read on it (its own writes too)
            result = run_limited(conn, time_limit, sql, fn, *args)
            self._lane.reads += 1  # (this thread holds the lane: the counter's guard)
            return result
        self._no_reentry("a read")
        job = Job(READ, fn, args, sql, time_limit)
        self._lane.call(job, timeout, "the read")
        outcome: T = job.outcome()
        return outcome

    def query_inline(
        self, sql: str, params: Params, fn: Fn[Any] = run_query, extra: Args = ()
    ) -> Any:
        if self._state or self._forked:
            self.check()
        pool, slow = self._pool, self._slow
        if pool is None or (slow.known and slow.skip(sql)):
            return MISS  # (a reader thread found it long lately: to a thread at once)
        args = (sql, params, *extra) if extra else (sql, params)
        t0 = perf_counter()
        if type(pool) is ReadPool:  # (borrow, run and give back in one frame)
            rows = pool.inline(fn, args)
        else:
            if (conn := pool.try_acquire()) is None:
                return MISS
            rows = MISS
            try:
                rows = run_inline(conn, fn, args)
            finally:
                pool.release(conn, 0 if rows is MISS else 1)
        if rows is not MISS:  # (else the reader thread that runs it judges it: SlowStatements)
            if slow.known:
                slow.ran_inline(sql)
            self._counters.read_latency.append(perf_counter() - t0)
        return rows

    async def read_async(
        self, fn: Fn[T], args: Args, timeout: Bound, time_limit: Bound, sql: str | None = None
    ) -> T:
        self.check()
        t0 = perf_counter()
        result: T
        if self._pool is None:
            result = await self._lane_job(READ, fn, args, timeout, time_limit, sql, "the read")
        else:
            end = None if timeout is None else monotonic() + timeout  # (one for every wait)
            if fn is run_query and time_limit is None and sql not in self._slow.known:
                # missed inline (no idle reader: one is opened if a slot is left; or long): a
                # turn later once more, before a thread (which convoys with the loop on the GIL)
                if type(self._pool) is ReadPool:
                    if (opening := self._pool.open_spare()) is not None:
                        await wait_briefly(opening, end)
                    await wait_turn()  # (so a burst woken by the open reads in turns)
                    if (result := self.query_inline(*args)) is not MISS:
                        return result
                elif self._loop_readers is not None:  # (per-thread: open this thread's own)
                    self._loop_readers.ensure()
            readers, loop = self._reader_threads(), asyncio.get_running_loop()
            job = AsyncJob(READ, fn, args, sql, time_limit, loop, readers.outbox)
            job.deadline = end
            readers.submit(job)
            left = None if end is None else max(end - monotonic(), 0.0)
            result = await await_job(job, left, lambda: readers.timeout_error(timeout))
        self._counters.read_latency.append(perf_counter() - t0)
        return result

    def borrow(
        self, timeout: Bound, what: str = "the snapshot"
    ) -> PooledRead | NestedRead | LaneLease:
        self.check()
        pool = self._pool
        if pool is not None:
            return PooledRead(pool, pool.acquire(timeout))
        conn = self._lane.held_by(get_ident())
        if conn is not None:
            return NestedRead(conn)
        return self.lease(timeout, what)

    async def borrow_async(
        self, timeout: Bound, what: str = "the snapshot"
    ) -> AsyncPooledRead | AsyncLaneLease:
        self.check()
        if self._pool is None:
            return await self.lease_async(timeout, what)
        pool = self._borrow_pool()
        conn = await borrow(pool, timeout)
        return AsyncPooledRead(pool, conn, self._reader_threads())

    # ---- diagnostics -------------------------------------------------------------------------
    def _warn_large_wal(self, size: int) -> None:
        pool = self._pool
        longest = None if pool is None else pool.longest_holder()
        holders = ""
        if longest is not None:
            ident, since = longest
            holders = (
                f"; the longest-held reader ({thread_name(ident)}) has been in use for "
                f"{monotonic() - since:.1f}s"
            )
        logger.warning(
            "litegate: the WAL of %s is %.1f MiB (wal_warn_bytes=%d): checkpoints cannot "
            "reset it while readers keep old snapshots open%s. End long iterations and "
            "snapshots sooner",
            self.opts.name,
            size / 1048576,
            self.opts.wal_warn_bytes,
            holders,
        )

    def stats(self) -> Stats:
        pool = self._pool
        return Stats(
            **self._counters.figures(),
            queue_depth=self._lane.depth,
            queue_capacity=self.opts.queue_size,
            reads=self._lane.reads + sum(p.reads for p in self._pools()),
            readers_mode="lane" if pool is None else pool.mode,
            pool_size=0 if pool is None else pool.size,
            pool_open=0 if pool is None else pool.open_count,
            pool_in_use=0 if pool is None else pool.in_use,
            pool_waiting=0 if pool is None else pool.waiting,
            pool_waits=0 if pool is None else pool.waits,
            pool_timeouts=0 if pool is None else pool.timeouts,
            pool_wait_p99_ms=0.0 if pool is None else ms(pool.wait_times, 0.99),
        )
