"""Reader threads for asyncio callers: several waiting jobs per wake-up, batched replies.

Async reads that cannot run inline on the loop (longer than the inline budget, user functions,
iterations, snapshot queries) are queued here. Each thread takes up to ``_TAKE`` jobs at once,
runs them on a pool connection (or the job's pinned one), and delivers all their results to
each loop with one ``call_soon_threadsafe``.
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

__all__ = ("ReaderThreads",)

logger = logging.getLogger("litegate")
_TAKE = 8


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
                n = min(len(self._queue), _TAKE)
                jobs = [self._queue.popleft() for _ in range(n)]
            for job in jobs:
                try:
                    self._run_one(job)
                except BaseException:  # pragma: no cover - a bug here must not kill the thread
                    logger.exception("litegate: reader thread failed a job")
                    if job.state != AsyncJob.DONE:  # (this thread is its only finisher)
                        job.finish(error=Closed("internal error in a reader thread"))
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
