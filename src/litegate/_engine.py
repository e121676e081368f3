"""The engine: one writer lane plus one read pool for a database file, shared by facades.

Lifecycle (OPEN -> CLOSING -> CLOSED) changes under ``_lock``. Every public call goes through
:meth:`Engine.check` first. An engine inherited through ``fork()`` never uses the parent's
connections: on first use in the child it closes them and opens its own (see "fork" below).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from threading import get_ident
from time import monotonic, perf_counter
from typing import Any, TypeVar

from ._config import Options
from ._connection import ROLLBACK, Params, end_transaction, run_limited, run_query
from ._errors import Closed, Misuse, WriteTimeout
from ._jobs import READ, WRITE, Job, LaneHold
from ._pool import PerThreadPool, ReadPool, make_pool, thread_name
from ._readers import ReaderThreads
from ._stats import Counters, Stats, percentile
from ._writer import WriteLane

__all__ = ("Engine",)

logger = logging.getLogger("litegate")

T = TypeVar("T")

_OPEN, _CLOSING, _CLOSED = 0, 1, 2
_LIVE: weakref.WeakSet[Engine] = weakref.WeakSet()
_ABANDONED: list[object] = []  # connections inherited through fork(); never closed
_EXIT_CLOSE_TIMEOUT = 5.0
_PER_THREAD_READERS = 4  # reader threads (and side-pool size) for async use in per-thread mode


def _ms(samples: Any, q: float) -> float:
    return round(percentile(list(samples), q) * 1000.0, 3)


class Engine:
    """Owns the writer lane and the read pool. Thread-safe; facades hold one."""

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
        self._open()
        _LIVE.add(self)

    def _open(self) -> None:
        self.counters = Counters()
        self.lane = WriteLane(self.opts, self.counters)
        self.lane.on_large_wal = self._warn_large_wal
        try:
            self.pool: ReadPool | PerThreadPool | None = make_pool(self.opts, self.counters)
        except BaseException:
            self.lane.close(time.monotonic() + 1.0)
            raise
        self._readers: ReaderThreads | None = None
        self._side_pool: ReadPool | None = None

    @property
    def reader_threads(self) -> ReaderThreads:
        """Reader threads for async callers (started on first use). Pool modes only."""
        r = self._readers
        if r is None:
            with self._lock:
                if self._readers is None:
                    pool = self.pool
                    assert pool is not None
                    count = pool.size if isinstance(pool, ReadPool) else _PER_THREAD_READERS
                    self._readers = ReaderThreads(pool, count, self.opts.name)
                r = self._readers
        return r

    @property
    def borrow_pool(self) -> ReadPool:
        """Where an async snapshot or iteration borrows a connection it keeps across awaits:
        the pool itself, or (per-thread mode, whose connections belong to threads) a small
        side pool."""
        pool = self.pool
        if isinstance(pool, ReadPool):
            return pool
        side = self._side_pool
        if side is None:
            with self._lock:
                if self._side_pool is None:
                    self._side_pool = ReadPool(self.opts, _PER_THREAD_READERS, self.counters)
                side = self._side_pool
        return side

    # ---- state ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._state != _OPEN

    def check(self) -> None:
        """Raise :class:`Closed` after close; reopen connections after a fork."""
        if self._state:
            raise Closed(
                f"the database {self.opts.name!r} is closed; open a new one with litegate.connect"
            )
        if self._forked:
            self._reopen_after_fork()

    # ---- fork -----------------------------------------------------------------------------
    # SQLite keeps per-process lock bookkeeping (per inode) in memory, and a child inherits a
    # copy. The child must never use the parent's connections, and its new connections must
    # not share that stale bookkeeping: so the inherited connections are closed in the child
    # first (safe when no thread was inside them at the fork: closing releases no lock the
    # parent holds, and the parent's own shared locks stop any WAL checkpoint-and-delete),
    # then fresh ones are opened. If a connection was in use at the fork, the child cannot
    # tell what state it carries: it refuses with Misuse instead.
    def _pools(self) -> list[ReadPool | PerThreadPool]:
        return [p for p in (self.pool, self._side_pool) if p is not None]

    def _before_fork(self) -> None:
        """Hold the engine still across fork(): the lane paused with nobody on it, the pools
        locked with no reader borrowed -- waiting up to _FORK_QUIESCE seconds for that."""
        deadline = time.monotonic() + _FORK_QUIESCE
        self._fork_idle = self.lane.pause_for_fork(deadline)
        while True:
            for pool in self._pools():
                pool._lock.acquire()
                pool.stash()
            if all(p.quiet() for p in self._pools()) or time.monotonic() >= deadline:
                break
            for pool in self._pools():
                pool.unstash()
                pool._lock.release()
            time.sleep(0.0002)
        self._fork_idle = self._fork_idle and all(p.quiet() for p in self._pools())

    def _release_fork_locks(self) -> None:
        for pool in reversed(self._pools()):
            pool.unstash()
            pool._lock.release()
        self.lane.resume_after_fork()

    def _after_fork_in_parent(self) -> None:
        self._release_fork_locks()

    def _after_fork_in_child(self) -> None:
        # Runs in the child right after fork(): record the state, replace locks, no I/O.
        self._release_fork_locks()
        self._fork_busy = not self._fork_idle
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

    def _close_inherited(self) -> None:
        conns = [self.lane.conn]
        for pool in self._pools():
            conns.extend(pool.abandon())
        for conn in conns:
            try:
                conn.close()
            except Exception:  # pragma: no cover
                logger.exception("litegate: closing an inherited connection failed")

    def _abandon(self) -> None:
        """Forget connections that were in use at the fork, never closing them (a thread of
        the parent may have been inside SQLite: its mutexes are copied locked)."""
        _ABANDONED.append(self.lane.conn)
        for pool in self._pools():
            _ABANDONED.extend(pool.abandon())

    def close(self, timeout: float | None = None) -> None:
        """Drain queued writes, checkpoint, close every connection. Idempotent.

        Blocks up to ``timeout`` seconds (default: the database's ``timeout``, at least 5 s);
        writes still queued then fail with :class:`Closed`.
        """
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
        _LIVE.discard(self)
        try:
            if self._forked:
                if self._fork_busy:
                    self._abandon()
                else:
                    self._close_inherited()
                return
            if timeout is None:
                timeout = max(self.opts.timeout or 0.0, _EXIT_CLOSE_TIMEOUT)
            deadline = time.monotonic() + timeout
            if self._readers is not None:
                self._readers.close(max(0.0, min(1.0, deadline - time.monotonic())))
            self.lane.close(deadline)
            for pool in self._pools():
                pool.close()
        finally:
            self._state = _CLOSED
            self._closed_event.set()

    def start_close(self) -> None:
        """Begin closing without blocking (used by ``__del__``): the writer drains and exits."""
        if self._state == _OPEN and not self._forked and self._pid == os.getpid():
            self._state = _CLOSING
            _LIVE.discard(self)
            self.lane.start_close()
            if self._readers is not None:
                self._readers.close(0.0)
            for pool in self._pools():
                pool.close()

    # ---- the lane ------------------------------------------------------------------------
    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    def _through_lane(self, job: Job, deadline: float | None, what: str) -> None:
        """A thread caller's job: run it (and whatever queued) on an idle lane directly, or
        queue it and wait for its outcome."""
        lane = self.lane
        taken = lane.enter(job, deadline)
        if taken is None:
            self._await(job, deadline, what)
            return
        try:
            lane.run_direct(job, taken)
        finally:
            lane.end_direct()

    def _await(self, job: Job, deadline: float | None, what: str) -> None:
        """Wait for a queued job; on timeout withdraw it if it has not started."""
        if not job.wait(None if deadline is None else deadline - time.monotonic()):
            self._late(job, what)

    def _late(self, job: Job, what: str) -> None:
        """A queued job's caller timed out: withdraw the job if it has not started, else wait
        for it (it is running, bounded by its time limit)."""
        lane = self.lane
        if lane.cancel(job):
            raise WriteTimeout(
                f"{what} did not get the write lane within the timeout "
                f"({lane.depth} job(s) queued; {lane._hold_text()}). Raise timeout=, or keep "
                "transactions short"
            )
        # Already started: its outcome is close (bounded by its time limit).
        while not job.wait(1.0):
            if not lane.alive:
                raise Closed("the writer stopped before this job finished")

    def _not_in_own_transaction(self, what: str) -> None:
        me = threading.get_ident()
        if self.lane.owner == me:
            raise Misuse(
                f"{what} was called on the database inside a transaction held by this thread; "
                "it would wait for the transaction to end (a deadlock). Use the transaction "
                "object (tx.execute, tx.savepoint()) instead"
            )
        if self.lane.user == me:
            raise Misuse(
                f"{what} was called on the database from inside a run_write/run_read function "
                "running on the write lane; it would wait for that function to end (a "
                "deadlock). Use the connection the function was given"
            )

    def write(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        timeout: float | None,
        time_limit: float | None,
        sql: str | None = None,
    ) -> T:
        """Run ``fn(conn, *args)`` in the next group commit; returns after its COMMIT.

        The write hot path: under the GIL every bytecode here is time that the other writers
        wait, so it calls no helper that it can do without (:meth:`_through_lane` unrolled).
        """
        if self._state or self._forked:
            self.check()
        lane = self.lane
        if lane.owner is not None or lane.user is not None:
            me = get_ident()
            if lane.owner == me or lane.user == me:
                self._not_in_own_transaction("a write")
        t0 = perf_counter()
        job = Job(WRITE, fn, args, sql, time_limit)
        deadline = None if timeout is None else monotonic() + timeout
        taken = lane.enter(job, deadline)
        if taken is None:
            done = job._done
            if not (
                done.acquire()
                if deadline is None
                else done.acquire(True, max(deadline - monotonic(), 0.0))
            ):
                self._late(job, "the write")
        else:
            try:
                lane.run_direct(job, taken)
            finally:
                lane.end_direct()
        self.counters.write_latency.append(perf_counter() - t0)
        error = job.error
        if error is not None:
            job.error = None  # break the traceback -> frame -> job cycle
            raise error
        result: T = job.result
        return result

    def query(
        self, sql: str, params: Params, timeout: float | None, time_limit: float | None, first: bool
    ) -> Any:
        """The rows of a read-only statement, or (``first``) its first row or None. The read
        hot path: under the GIL every bytecode a reader runs is time the other threads wait,
        so a plain query goes straight to the pool's one-frame :meth:`ReadPool.query` instead of
        through :meth:`read`.
        """
        if self._state or self._forked:
            self.check()
        pool = self.pool
        if pool is None or time_limit is not None:
            rows: list[Any] = self.read(run_query, (sql, params), timeout, time_limit, sql)
            return (rows[0] if rows else None) if first else rows
        t0 = perf_counter()
        result = pool.query(sql, params, timeout, first)
        c = self.counters
        c.reads += 1
        c.read_latency.append(perf_counter() - t0)
        return result

    def read(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        timeout: float | None,
        time_limit: float | None,
        sql: str | None = None,
    ) -> T:
        """Run ``fn(conn, *args)`` on a reader (or through the lane when ``readers=0``)."""
        self.check()
        t0 = time.perf_counter()
        pool = self.pool
        if pool is None:
            result = self._lane_read(fn, args, timeout, time_limit, sql)
        else:
            conn = pool.acquire(self._deadline(timeout))
            try:
                if time_limit is None:
                    result = fn(conn, *args)
                else:
                    result = run_limited(conn, time_limit, sql, fn, *args)
            finally:
                pool.release(conn)
        c = self.counters
        c.reads += 1
        c.read_latency.append(time.perf_counter() - t0)
        return result

    def _lane_read(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        timeout: float | None,
        time_limit: float | None,
        sql: str | None,
    ) -> T:
        lane = self.lane
        if lane.owner == threading.get_ident():  # this thread holds the lane: run inline
            return run_limited(lane.conn, time_limit, sql, fn, *args)
        if lane.user is not None:
            self._not_in_own_transaction("a read")
        job = Job(READ, fn, args, sql, time_limit)
        self._through_lane(job, self._deadline(timeout), "the read")
        result: T = job.outcome()
        return result

    def hold_lane(self, timeout: float | None, what: str = "the transaction") -> LaneHold:
        """Take the write lane for this thread; the writer thread parks until released."""
        self.check()
        self._not_in_own_transaction(what)
        t0 = time.monotonic()
        lane = self.lane
        hold = LaneHold()
        if lane.try_direct():
            hold.direct = True  # no writer-thread handshake: the lane was idle
        else:
            deadline = self._deadline(timeout)
            lane.submit(hold, deadline)
            try:
                self._await(hold, deadline, what)
            except WriteTimeout:
                raise  # withdrawn: it never gets the lane
            except BaseException:  # e.g. KeyboardInterrupt while waiting: never strand the lane
                if not lane.cancel(hold):
                    hold.release()  # granted (or about to be): hand it straight back
                raise
        lane.owner = threading.get_ident()
        lane.hold_started = now = time.monotonic()
        self.counters.lane_wait.append(now - t0)
        return hold

    def release_lane(self, hold: LaneHold) -> None:
        lane = self.lane
        started = lane.hold_started
        lane.owner = None
        lane.hold_started = 0.0
        if hold.direct:
            self.counters.lane_holds.append(time.monotonic() - started)
            conn = lane.conn
            if conn.in_transaction:  # a holder must end its transaction; never leak one
                logger.error("litegate: a lane holder left a transaction open; rolling back")
                end_transaction(conn, lane.guard, ROLLBACK)
            lane.end_direct()
        else:
            hold.release()

    def owns_lane(self) -> bool:
        return self.lane.owner == threading.get_ident()

    # ---- diagnostics ---------------------------------------------------------------------
    def _warn_large_wal(self, size: int) -> None:
        pool = self.pool
        held = list(pool._holders.values()) if isinstance(pool, ReadPool) else []
        holders = ""
        if held:
            ident, since = min(held, key=lambda h: h[1])
            holders = (
                f"; the longest-held reader ({thread_name(ident)}) has been in use for "
                f"{time.monotonic() - since:.1f}s"
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
        c = self.counters
        pool = self.pool
        sizes = list(c.batch_sizes)
        holds = list(c.lane_holds)
        return Stats(
            queue_depth=self.lane.depth,
            queue_capacity=self.opts.queue_size,
            batches=c.batches,
            jobs_ok=c.jobs_ok,
            jobs_failed=c.jobs_failed,
            max_batch_size=c.max_batch,
            mean_batch_size=round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
            write_p50_ms=_ms(c.write_latency, 0.5),
            write_p99_ms=_ms(c.write_latency, 0.99),
            read_p50_ms=_ms(c.read_latency, 0.5),
            read_p99_ms=_ms(c.read_latency, 0.99),
            reads=c.reads,
            transactions=c.transactions,
            lane_wait_p50_ms=_ms(c.lane_wait, 0.5),
            lane_wait_p99_ms=_ms(c.lane_wait, 0.99),
            lane_hold_p99_ms=_ms(holds, 0.99),
            lane_hold_max_ms=round(max(holds, default=0.0) * 1000.0, 3),
            long_holds=c.long_holds,
            readers_mode="lane" if pool is None else pool.mode,
            pool_size=0 if pool is None else pool.size,
            pool_open=0 if pool is None else pool.open_count,
            pool_in_use=0 if pool is None else pool.in_use,
            pool_waiting=0 if pool is None else pool.waiting,
            pool_waits=0 if pool is None else pool.waits,
            pool_timeouts=0 if pool is None else pool.timeouts,
            pool_wait_p99_ms=0.0 if pool is None else _ms(pool.wait_times, 0.99),
            busy_retries=c.busy_retries,
            busy_timeouts=c.busy_timeouts,
            busy_wait_max_ms=round(c.busy_wait_max * 1000.0, 3),
            checkpoints=c.checkpoints,
            wal_bytes=c.wal_bytes,
            wal_warnings=c.wal_warnings,
        )


def _before_fork() -> None:
    global _FORKING
    _FORKING = [e for e in list(_LIVE) if not e._forked and e._state == _OPEN]
    for engine in _FORKING:
        engine._before_fork()


def _after_fork_in_parent() -> None:
    for engine in _FORKING:
        engine._after_fork_in_parent()
    _FORKING.clear()


def _after_fork_in_child() -> None:
    for engine in _FORKING:
        engine._after_fork_in_child()
    _FORKING.clear()


def _close_all_at_exit() -> None:
    """Drain and close engines nobody closed, so an unclosed engine loses no acknowledged
    write and never keeps the interpreter from exiting (the writer thread is a daemon)."""
    for engine in list(_LIVE):
        if engine._pid != os.getpid():
            continue
        try:
            engine.close(timeout=_EXIT_CLOSE_TIMEOUT)
        except Exception:  # pragma: no cover
            logger.exception("litegate: closing %s at exit failed", engine.opts.name)


_FORKING: list[Engine] = []
_FORK_QUIESCE = 1.0  # seconds fork() may wait for an engine to be between two uses
os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_close_all_at_exit)
