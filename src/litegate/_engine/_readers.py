"""Reader threads for asyncio callers: several waiting jobs per wake-up, batched replies.

Async reads that cannot run inline on the loop (longer than the inline budget, user functions,
iterations, snapshot queries) are queued here. Each thread takes its share of the waiting jobs
(up to ``_TAKE``), runs them on a pool connection (or the job's pinned one), and delivers their
results to each loop with one ``call_soon_threadsafe`` -- at once when a job ran long, so an
answer never waits for the rest of the batch. :class:`SlowStatements` remembers which queries
ran over the inline budget, so that their next calls come here without wasting one on the loop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from time import monotonic

from .._errors import Closed
from ._jobs import AsyncJob, Outbox, flush
from ._pool import ReaderPool

__all__ = ("ReaderThreads", "SlowStatements")

logger = logging.getLogger("litegate")
_TAKE = 8
# A finished job waits for the rest of its batch only while the batch is this young: short
# reads share one wake-up of the loop, a long one is answered as soon as it is done.
_FLUSH_AFTER = 0.000_2
_STRIKES = 2  # consecutive inline attempts over the budget before a statement skips them
_SKIPS_FIRST = 8  # calls that then skip the inline attempt (doubling after each further miss)
_SKIPS_MAX = 1024
_REMEMBER = 512  # statements remembered (then all forgotten at once: a bound, not an LRU)


class SlowStatements:
    """Which queries run over the inline budget: their next calls go straight to a reader thread
    instead of spending the budget on the loop and then going there anyway.

    A statement is marked after ``_STRIKES`` consecutive misses: one miss is often an accident
    (the process descheduled, the GIL held by a reader thread), and sending a fast statement to
    the threads would make such accidents likelier (more GIL contention for the loop). Marked, it
    skips ``_SKIPS_FIRST`` inline attempts, then is tried again (its cost may depend on its
    parameters): a new miss doubles the skips, one inline success forgets it.

    ``_skips`` (SQL -> [skips left, misses in a row]) is used by the loop threads of the
    engine's asyncio callers without a lock: single dict operations (documented atomic), and a
    lost update of an entry only moves the next inline attempt. ``known`` is the dict itself, so
    that the hot path can test it (empty: nothing to look up) without a call.
    """

    __slots__ = ("_skips", "known")

    def __init__(self) -> None:
        self._skips: dict[str, list[int]] = {}
        self.known = self._skips

    def skip(self, sql: str) -> bool:
        """Loop thread: True if ``sql`` should go straight to a reader thread this time."""
        entry = self._skips.get(sql)
        if entry is None or entry[0] <= 0:
            return False
        entry[0] -= 1
        return True

    def missed(self, sql: str) -> None:
        """Loop thread: ``sql`` ran over the inline budget."""
        skips = self._skips
        entry = skips.get(sql)
        if entry is None:
            if len(skips) >= _REMEMBER:
                skips.clear()
            skips[sql] = entry = [0, 0]
        entry[1] = min(entry[1] + 1, _STRIKES + 8)  # (8 doublings reach _SKIPS_MAX)
        if entry[1] >= _STRIKES:
            entry[0] = min(_SKIPS_FIRST << (entry[1] - _STRIKES), _SKIPS_MAX)

    def ran_inline(self, sql: str) -> None:
        """Loop thread: ``sql`` ran within the budget: forget it."""
        self._skips.pop(sql, None)


class ReaderThreads:
    """Up to ``count`` daemon threads, started on demand.

    ``_queue``, ``_threads``, ``_idle``, ``_closed`` and ``submitted`` are guarded by
    ``_cond``'s lock; ``outbox`` is a ``deque`` (thread-safe appends and pops) filled and
    flushed by the reader threads.
    """

    def __init__(self, pool: ReaderPool, count: int, name: str) -> None:
        self.pool = pool
        self.count = max(1, count)
        self.name = name
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

    def submit(self, job: AsyncJob) -> None:
        with self._cond:
            if self._closed:
                raise Closed("the database is closed")
            self._queue.append(job)
            self.submitted += 1
            if self._idle == 0 and len(self._threads) < self.count:
                t = threading.Thread(
                    target=self._run,
                    name=f"litegate-reader-{len(self._threads)}:{self.name}",
                    daemon=True,
                )
                self._threads.append(t)
                t.start()
            else:
                self._cond.notify()

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
            if t is not threading.current_thread():
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
            ok = job.execute(conn)
        finally:
            if pinned is None:  # (a snapshot's queries are not counted as reads)
                self.pool.release(conn, 1 if ok else 0)
