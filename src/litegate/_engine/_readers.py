"""Reader threads for asyncio callers: several waiting jobs per wake-up, batched replies.

Async reads that cannot run inline on the loop (longer than the inline budget, user functions,
iterations, snapshot queries) are queued here. Each thread takes its share of the waiting jobs
(up to ``_TAKE``), runs them on a pool connection (or the job's pinned one), and delivers their
results to each loop with one ``call_soon_threadsafe`` -- at once when a job ran long, so an
answer never waits for the rest of the batch. :class:`SlowStatements` remembers which queries
ran over the inline budget, so that their next calls come here without wasting one on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from _thread import start_new_thread
from collections import deque
from time import monotonic

from .._errors import Closed, PoolTimeout
from .._types import Bound
from ._jobs import AsyncJob, Outbox, flush
from ._pool import PerThreadPool, ReaderPool

__all__ = ("LoopReaders", "ReaderThreads", "SlowStatements")

logger = logging.getLogger("litegate")
_TAKE = 8
# A finished job waits for the rest of its batch only while the batch is this young: short
# reads share one wake-up of the loop, a long one is answered as soon as it is done.
_FLUSH_AFTER = 0.000_2
_SKIPS_FIRST = 8  # calls that skip the inline attempt once a statement is known slow
_SKIPS_MAX = 1024  # (doubling each time it is tried inline again and is still slow)
_REMEMBER = 512  # statements remembered (then all forgotten at once: a bound, not an LRU)
# A statement is long when it takes this many SQLite VM steps: ~1 ms of a query returning rows
# (~7 steps/us with their Python tuples; pure VM work runs ~30/us). Steps, not CPU time: with
# reader threads and the loop contending for the GIL, every row's hand-off cost a 100-row scan
# (700 steps, ~0.1 ms alone) over 1 ms of thread CPU time, so fast scans were judged long and
# sent to the threads, which made the contention worse: every read of 64 scanning tasks ended up
# on a thread at 1/5 of the throughput (issue 11; counted: 1,916 skips, 0 inline in 2 s).
_LONG_STEPS = 7_000
_STEP_CHUNK = 1_000  # (the progress handler counts every this many steps)
_PROBING = -1  # (skips left: none, and being tried inline again)


class SlowStatements:
    """Which queries are too long to run inline: their next calls go straight to a reader
    thread instead of spending the inline budget on the loop and then going there anyway.

    The reader thread that runs a query judges it, by the VM steps it took (_LONG_STEPS): an inline
    attempt that ran over the budget may have been stalled rather than long (the process
    descheduled, the GIL held by another thread), and sending a fast statement to the threads
    makes such stalls likelier -- more GIL contention for the loop, more misses: a cascade
    measured in issue 11. A slow statement skips ``_SKIPS_FIRST`` inline attempts, then is tried
    again (its cost may depend on its parameters): still slow, it skips twice as many; one
    inline success forgets it.

    ``_skips`` (SQL -> [skips left or _PROBING, skips after a slow inline try]) is used without
    a lock by the loop threads of the engine's asyncio callers and by the reader threads: single
    dict operations (documented atomic), and a lost update of an entry only moves the next
    inline attempt. ``known`` is the dict itself, so that the hot path tests it (empty: nothing
    to look up) without a call.
    """

    __slots__ = ("_skips", "known")

    def __init__(self) -> None:
        self._skips: dict[str, list[int]] = {}
        self.known = self._skips

    def skip(self, sql: str) -> bool:
        """Loop thread: True if ``sql`` should go straight to a reader thread this time."""
        entry = self._skips.get(sql)
        if entry is None:
            return False
        if entry[0] > 0:
            entry[0] -= 1
            return True
        entry[0] = _PROBING  # skipped enough: this call tries it inline
        return False

    def ran_long(self, sql: str) -> None:
        """Reader thread: ``sql`` took ``_LONG_STEPS`` or more (longer than the inline budget)."""
        skips = self._skips
        entry = skips.get(sql)
        if entry is None:
            if len(skips) >= _REMEMBER:
                skips.clear()
            skips[sql] = [_SKIPS_FIRST, 2 * _SKIPS_FIRST]
        elif entry[0] == _PROBING:  # (not a call that skipped it: it was tried inline again)
            entry[0] = entry[1]
            entry[1] = min(2 * entry[1], _SKIPS_MAX)

    def ran_inline(self, sql: str) -> None:
        """Loop thread: ``sql`` ran within the budget: forget it."""
        self._skips.pop(sql, None)


class ReaderThreads:
    """Up to ``count`` daemon threads, started on demand.

    ``_queue``, ``_threads``, ``_idle``, ``_closed`` and ``submitted`` are guarded by
    ``_cond``'s lock; ``outbox`` is a ``deque`` (thread-safe appends and pops) filled and
    flushed by the reader threads; ``pool``, ``count``, ``name`` and ``slow`` are set in
    ``__init__`` (``slow`` is shared with the engine's loop threads: its own guard).
    """

    def __init__(
        self, pool: ReaderPool, count: int, name: str, slow: SlowStatements | None = None
    ) -> None:
        self.pool = pool
        self.count = max(1, count)
        self.name = name
        self.slow = slow  # told of the queries that took longer than the inline budget
        self.outbox: Outbox = deque()
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[AsyncJob] = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self.submitted = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def timeout_error(self, timeout: Bound) -> PoolTimeout:
        """What a read that waited ``timeout`` seconds here without being served raises."""
        return PoolTimeout(
            f"no reader served this read within {timeout}s: pool size {self.pool.size}, "
            f"{self.depth} async read(s) queued, {self.pool.in_use} reader(s) in use. "
            "Raise readers= or timeout="
        )

    def submit(self, job: AsyncJob) -> None:
        """Loop thread: queue ``job``; never waits for a thread (see :meth:`_start`)."""
        with self._cond:
            if self._closed:
                raise Closed("the database is closed")
            self._queue.append(job)
            self.submitted += 1
            if self._idle or len(self._threads) >= self.count:
                self._cond.notify()
                return
            t = threading.Thread(
                target=self._run,
                name=f"litegate-reader-{len(self._threads)}:{self.name}",
                daemon=True,
            )
            self._threads.append(t)
        # Thread.start() waits until the new thread runs; on a busy machine that held the
        # loop for 35-147 ms (loop-lag samples in issue 11). A short-lived helper thread
        # waits for it instead: creating it is one pthread_create, no wait.
        start_new_thread(self._start, (t,))

    def _start(self, t: threading.Thread) -> None:
        """Helper thread: start reader thread ``t`` (on failure, forget it; with no reader
        thread left, fail the queued jobs rather than leave them waiting)."""
        try:
            t.start()
        except BaseException as exc:
            logger.exception("litegate: starting a reader thread failed")
            with self._cond:
                self._threads.remove(t)
                left = [] if self._threads else list(self._queue)
                if left:
                    self._queue.clear()
            for job in left:
                job.finish(error=exc)
            flush(self.outbox)

    def close(self, timeout: float) -> None:
        """Fail queued jobs with Closed and stop the threads."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        for job in left:
            job.finish(error=Closed("the database was closed before this read ran"))
        flush(self.outbox)
        for t in threads:
            # (a thread still being started is not joined: it finds the closed mark and ends)
            if t is not threading.current_thread() and t.is_alive():
                t.join(timeout)

    def _run(self) -> None:
        outbox = self.outbox
        while True:
            with self._cond:
                self._idle += 1
                try:
                    while not self._queue:
                        if self._closed:
                            return
                        self._cond.wait(1.0)
                finally:
                    self._idle -= 1
                # its share: the jobs taken here wait for each other, while idle or soon
                # free threads could run them
                n = min(len(self._queue) // len(self._threads) or 1, _TAKE)
                jobs = [self._queue.popleft() for _ in range(n)]
                if self._queue and self._idle:
                    self._cond.notify()
            since = monotonic()
            for job in jobs:
                try:
                    self._run_one(job)
                except BaseException:  # pragma: no cover - a bug here must not kill the thread
                    logger.exception("litegate: reader thread failed a job")
                    if job.state != AsyncJob.DONE:  # (this thread is its only finisher)
                        job.finish(error=Closed("internal error in a reader thread"))
                if n > 1 and monotonic() - since > _FLUSH_AFTER:
                    flush(outbox)
                    since = monotonic()
            flush(outbox)
            # (no local names a job while this thread waits, maybe for good: the last one kept
            # its event loop -- closed or not -- and its caller's context alive)
            del jobs, job

    def _run_one(self, job: AsyncJob) -> None:
        if job.cancelled:
            return
        pinned = job.pinned
        conn: sqlite3.Connection
        if pinned is None:
            deadline = job.deadline
            try:
                conn = self.pool.acquire(
                    None if deadline is None else max(deadline - monotonic(), 0)
                )
            except BaseException as exc:
                if not job.cancelled:
                    job.finish(error=exc)
                return
        else:
            conn = pinned
        ok = False
        try:
            if not job.start(conn):
                return
            sql, slow = job.sql, self.slow
            if sql is None or slow is None or job.time_limit is not None:
                ok = job.execute(conn)  # (a time limit uses the progress handler: not judged)
            else:
                steps = [0]  # (thousands of SQLite VM steps, counted on this thread)

                def count() -> int:  # (also aborts a read cancelled before its first step)
                    steps[0] += 1
                    return 1 if job.stop_asked else 0

                conn.set_progress_handler(count, _STEP_CHUNK)
                try:
                    ok = job.execute(conn)
                finally:
                    conn.set_progress_handler(None, 0)
                if steps[0] * _STEP_CHUNK >= _LONG_STEPS:
                    slow.ran_long(sql)
        finally:
            if pinned is None:  # (a snapshot's queries are not counted as reads)
                self.pool.release(conn, 1 if ok else 0)


class LoopReaders:
    """Per-thread readers: an event loop's thread gets a reader of its own, so that its point
    reads run inline as with a pool (else every async read went to a reader thread). Opened on
    a helper thread (the loop never waits for an open) and adopted by the loop thread; once
    per thread (a failed open is not retried: its reads go on in reader threads).

    ``_asked`` (whether a thread's reader was asked for) is a thread-local: each thread's
    own. (Not a set of thread idents: an ended thread's ident is reused at once by the next
    thread started, which then never got a reader of its own.) ``pool`` is set once.
    """

    def __init__(self, pool: PerThreadPool) -> None:
        self.pool = pool
        self._asked = threading.local()

    def ensure(self) -> None:
        """Loop thread: start opening this thread's reader unless it has one or it is under
        way (the read that called this goes to a reader thread meanwhile)."""
        pool = self.pool
        if pool.has_reader():
            return
        asked = self._asked
        if getattr(asked, "done", False):
            return
        asked.done = True
        loop = asyncio.get_running_loop()

        def open_it() -> None:  # helper thread
            try:
                conn = pool.open_for_adoption()
            except Exception:
                logger.exception("litegate: opening the event loop thread's reader failed")
                return
            if conn is None:  # closed meanwhile
                return
            try:
                loop.call_soon_threadsafe(pool.adopt, conn)
            except RuntimeError:  # the loop closed meanwhile
                conn.close()

        start_new_thread(open_it, ())
