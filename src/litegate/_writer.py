"""The write lane: one writer thread, the only write connection, a bounded queue, group commit.

Threads: ``submit``/``cancel``/``close`` run on callers' threads and touch only the queue (under
``_lock``). Everything that touches ``conn`` runs on the writer thread, except while a
:class:`LaneHold` is granted: then the holder's thread uses ``conn`` and the writer thread is
parked in ``LaneHold.hold``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable
from threading import get_ident

from ._config import Options
from ._connection import (
    COMMIT,
    ROLLBACK,
    TxnGuard,
    begin_immediate,
    end_transaction,
    open_connection,
    run_limited,
)
from ._errors import Closed, Misuse, WriteTimeout
from ._jobs import EXCLUSIVE, READ, WRITE, AsyncLaneHold, BaseJob, Job, Outbox, flush
from ._stats import Counters

__all__ = ("WriteLane",)

logger = logging.getLogger("litegate")

_SAVEPOINT = "SAVEPOINT litegate_job"
_RELEASE = "RELEASE litegate_job"
_ROLLBACK_TO = "ROLLBACK TO litegate_job"
_SHUTDOWN_CHECKPOINT_SECONDS = 2.0
_YIELD_AFTER_CONTENTION = 0.0005


def _copy_error(exc: BaseException) -> BaseException:
    """A fresh exception per caller: one object raised in many threads would share and grow one
    traceback. Falls back to the original where the type cannot be rebuilt from its args."""
    try:
        clone = type(exc)(*exc.args)
    except Exception:
        return exc
    for attr in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(exc, attr):
            try:
                setattr(clone, attr, getattr(exc, attr))
            except AttributeError:  # pragma: no cover
                pass
    clone.__cause__ = exc.__cause__
    return clone


class WriteLane:
    """Owns the writer connection and the thread that uses it."""

    def __init__(self, opts: Options, counters: Counters) -> None:
        self.opts = opts
        self.counters = counters
        self.guard = TxnGuard()
        self.conn = open_connection(opts, reader=False)
        self.conn.set_authorizer(self.guard)
        self.owner: int | None = None  # thread ident of a sync LaneHold holder
        self.hold_started = 0.0
        files = [row[2] for row in self.conn.execute("PRAGMA database_list") if row[1] == "main"]
        self.wal_path = files[0] + "-wal" if files and files[0] else None
        self.on_large_wal: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        # The writer thread sleeps on a bell (a raw lock, released to ring) rather than a
        # Condition: under the GIL a Condition's Python-level wait/notify cost more than a
        # small write. ``_sleeping`` (changed under ``_lock``) says whether a ring is needed.
        self._bell = allocate_lock()
        self._bell.acquire()
        self._sleeping = False
        self._not_full = threading.Condition(self._lock)
        self._inactive = threading.Condition(self._lock)
        self._queue: deque[BaseJob] = deque()
        self.outbox: Outbox = deque()  # finished async jobs, delivered in batches
        self._closing = False
        self.active = False  # someone is using the connection (changed under _lock)
        self.user: int | None = None  # the thread using it (for re-entrance checks)
        self._paused = False  # fork(): nobody may start using the connection
        self._hold_reported = False
        self._poll = min(1.0, max(opts.hold_warn / 4, 0.01))
        self._dirty = False
        self._next_wal_check = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"litegate-writer:{opts.name}", daemon=True
        )
        self._thread.start()

    # ---- caller side -------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._queue)

    def try_submit(self, job: BaseJob) -> bool:
        """Queue ``job`` if there is room; never blocks. False when the queue is full.

        :raises Closed: the lane is closing
        """
        with self._lock:
            if self._closing:
                raise Closed("the database is closed; no new writes are accepted")
            if len(self._queue) >= self.opts.queue_size:
                return False
            self._queue.append(job)
            if len(self._queue) == 1 and not self.active:
                self._ring()  # (an active direct user combines it, or rings)
            return True

    def submit(self, job: BaseJob, deadline: float | None) -> None:
        """Queue ``job``; waits for space until ``deadline`` (monotonic) when the queue is full.

        :raises WriteTimeout: the queue stayed full until the deadline
        :raises Closed: the lane is closing
        """
        if self.try_submit(job):
            return
        cap = self.opts.queue_size
        with self._lock:
            start = time.monotonic()
            while len(self._queue) >= cap:
                if self._closing:
                    raise Closed("the database was closed while this write waited")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WriteTimeout(
                        f"the write queue stayed full ({cap} jobs waiting) for "
                        f"{time.monotonic() - start:.2f}s; the load outruns the writer or a "
                        f"transaction holds the lane ({self._hold_text()}). Raise timeout= "
                        "or queue_size=, or keep transactions short"
                    )
                self._not_full.wait(1.0 if remaining is None else min(remaining, 1.0))
            if self._closing:
                raise Closed("the database was closed while this write waited")
            self._queue.append(job)
            if len(self._queue) == 1:
                self._ring()

    def cancel(self, job: BaseJob) -> bool:
        """Remove a job that has not started. True if removed (it will never run)."""
        with self._lock:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            self._not_full.notify()
            return True

    def _hold_text(self) -> str:
        if self.owner is None or not self.hold_started:
            return "no transaction holds it now"
        return f"a transaction has held it for {time.monotonic() - self.hold_started:.2f}s"

    def close(self, deadline: float) -> None:
        """Stop accepting jobs, let the writer drain the queue, checkpoint and close; jobs still
        queued when ``deadline`` passes fail with :class:`Closed`."""
        with self._lock:
            self._closing = True
            self._ring()
            self._not_full.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            with self._lock:
                left = list(self._queue)
                self._queue.clear()
            for job in left:
                job.finish(error=Closed("the database was closed before this write ran"))
            flush(self.outbox)
            logger.warning(
                "litegate: writer for %s did not finish within the close timeout (%s); "
                "%d queued job(s) failed with Closed",
                self.opts.name,
                self._hold_text(),
                len(left),
            )

    def start_close(self) -> None:
        """Signal the writer to drain and stop, without waiting (for ``__del__`` and forks)."""
        with self._lock:
            self._closing = True
            self._ring()
            self._not_full.notify_all()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- direct use by a caller thread -------------------------------------------------
    # When the lane is idle (nothing queued, nobody on the connection) a thread caller runs
    # its job -- or its whole transaction -- on its own thread: no hop to the writer thread
    # and back, which under the GIL costs far more than a small write. Under contention
    # callers queue as usual and the writer group-commits them.
    def try_direct(self) -> bool:
        """Take the idle lane (nobody on it, nothing queued) for the calling thread.

        :raises Closed: the lane is closing
        """
        with self._lock:
            if self._closing:
                raise Closed("the database is closed; no new writes are accepted")
            if self.active or self._paused or self._queue:
                return False
            self.active = True
            self.user = get_ident()
            return True

    def _take_queued(self, limit: int) -> list[BaseJob]:
        """Lock held: pop up to ``limit`` queued jobs from the front, stopping at a queued
        transaction (it is never overtaken)."""
        queue = self._queue
        was_full = len(queue) >= self.opts.queue_size
        taken: list[BaseJob] = []
        while queue and len(taken) < limit and queue[0].kind != EXCLUSIVE:
            taken.append(queue.popleft())
        if was_full and taken:
            self._not_full.notify_all()
        return taken

    def enter(self, job: BaseJob, deadline: float | None) -> list[BaseJob] | None:
        """A thread caller's way in, under one lock: take the idle lane directly (returns the
        queued writes handed over, see :meth:`try_direct`), or queue ``job`` (returns None;
        waits for room until ``deadline`` when the queue is full).

        :raises Closed: the lane is closing
        :raises WriteTimeout: the queue stayed full until the deadline
        """
        with self._lock:
            if self._closing:
                raise Closed("the database is closed; no new writes are accepted")
            queue = self._queue
            if not self.active and not self._paused and (not queue or queue[0].kind != EXCLUSIVE):
                # Writes already queued are committed in our batch: the writer thread, slow
                # to get the GIL while other threads run, is only needed when no thread
                # caller comes along.
                taken = self._take_queued(self.opts.max_batch - 1)
                self.active = True
                self.user = get_ident()
                return taken
            if len(queue) < self.opts.queue_size:
                queue.append(job)
                if len(queue) == 1 and not self.active:
                    self._ring()
                return None
        self.submit(job, deadline)
        return None

    def end_direct(self) -> None:
        """Give the lane back; the writer takes over whatever queued meanwhile."""
        with self._lock:
            self.active = False
            self.user = None
            self._hold_reported = False
            if self._queue or self._closing:
                self._ring()
            if self._paused:
                self._inactive.notify_all()

    def run_direct(self, job: BaseJob, taken: list[BaseJob]) -> None:
        """On the calling thread, between enter() and end_direct(): our job and the ones
        taken over, as one group commit. (Committing further batches here would hold the
        file's write lock back to back and starve other processes; what queues meanwhile is
        taken by the next caller, or by the writer thread.)"""
        if taken:
            self._process([job, *taken])
            flush(self.outbox)
        elif job.kind == WRITE:
            self._group_commit([job])
        else:
            self._run_reads([job])

    def _watch_direct_hold(self) -> None:
        """Writer thread, lock held: report a direct transaction held past hold_warn."""
        if self.owner is not None and self.hold_started and not self._hold_reported:
            held = time.monotonic() - self.hold_started
            if held > self.opts.hold_warn:
                self._hold_reported = True
                self._report_long_hold(held)

    def pause_for_fork(self, deadline: float) -> bool:
        """Take ``_lock`` and keep it (until :meth:`resume_after_fork`), with the connection
        idle if that happens before ``deadline``. Returns whether it is idle."""
        self._lock.acquire()
        self._paused = True
        while self.active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._inactive.wait(remaining)
        return True

    def resume_after_fork(self) -> None:
        self._paused = False
        self._ring()
        self._lock.release()

    # ---- writer thread -----------------------------------------------------------------
    def _ring(self) -> None:
        """Wake the writer thread if it sleeps (called with ``_lock`` held)."""
        if self._sleeping:
            try:
                self._bell.release()
            except RuntimeError:  # rung already
                pass

    def _run(self) -> None:
        cap = self.opts.queue_size
        max_batch = self.opts.max_batch
        bell = self._bell
        try:
            quiet = False  # the last wait was an idle one that nobody rang
            while True:
                jobs: list[BaseJob] | None = None
                idle = False
                with self._lock:
                    if self.active or self._paused:  # a caller runs on the lane itself
                        self._watch_direct_hold()
                        wait, idle_wait = self._poll, False
                    elif self._queue:
                        was_full = len(self._queue) >= cap
                        n = min(len(self._queue), max_batch)
                        jobs = [self._queue.popleft() for _ in range(n)]
                        if was_full:
                            self._not_full.notify_all()
                    elif self._closing:
                        return
                    elif self._dirty and quiet:
                        idle = True
                    else:
                        wait, idle_wait = (
                            (self.opts.checkpoint_idle, True) if self._dirty else (1.0, False)
                        )
                    if jobs is None and not idle:
                        self._sleeping = True
                    else:
                        self.active = True
                        self.user = get_ident()
                if jobs is None and not idle:
                    quiet = not bell.acquire(True, wait) and idle_wait
                    self._sleeping = False
                    continue
                quiet = False
                try:
                    if jobs is None:
                        self._checkpoint("PASSIVE" if self.opts.memory else "TRUNCATE")
                    else:
                        self._process(jobs)
                        flush(self.outbox)
                finally:
                    with self._lock:
                        self.active = False
                        self.user = None
                        if self._paused:
                            self._inactive.notify_all()
        except BaseException:  # pragma: no cover - a bug in the lane itself
            logger.exception("litegate: writer thread for %s crashed", self.opts.name)
            with self._lock:
                self._closing = True
                left = list(self._queue)
                self._queue.clear()
            for job in left:
                job.finish(error=Closed("the writer thread crashed; see the log"))
            flush(self.outbox)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        conn = self.conn
        try:
            if conn.in_transaction:
                end_transaction(conn, self.guard, ROLLBACK)
            if not self.opts.memory:
                deadline = time.monotonic() + _SHUTDOWN_CHECKPOINT_SECONDS
                while not self._checkpoint("TRUNCATE") and time.monotonic() < deadline:
                    time.sleep(0.01)
        except Exception:
            logger.exception("litegate: final checkpoint of %s failed", self.opts.name)
        finally:
            try:
                conn.close()
            except Exception:
                logger.exception("litegate: closing the writer of %s failed", self.opts.name)

    def _process(self, jobs: list[BaseJob]) -> None:
        segment: list[BaseJob] = []
        reads: list[BaseJob] = []
        for job in jobs:
            kind = job.kind
            # A cancelled async job is skipped. A started write is never interrupted (it
            # shares the batch's transaction); a lane read may be, but only while it runs
            # (_run_reads attaches it), never during the others' group commit.
            if type(job) is not Job and not job.start(None):  # (a thread's job: always)
                continue
            if kind == WRITE:
                segment.append(job)
            elif kind == READ:
                reads.append(job)
            else:
                if segment:
                    self._group_commit(segment)
                    segment = []
                if reads:
                    self._run_reads(reads)
                    reads = []
                self._grant(job)
        if segment:
            self._group_commit(segment)
        if reads:
            self._run_reads(reads)
        now = time.monotonic()
        if now >= self._next_wal_check:
            self._next_wal_check = now + 1.0
            self._check_wal()

    def _run_job(self, job: BaseJob) -> object:
        if job.time_limit is None:
            return job.run(self.conn)
        return run_limited(self.conn, job.time_limit, job.sql, job.run)

    def _run_reads(self, jobs: list[BaseJob]) -> None:
        for job in jobs:
            job.attach(self.conn)
            try:
                result = self._run_job(job)
            except BaseException as exc:
                job.finish(error=exc)
            else:
                job.finish(result)
            if self.conn.in_transaction:  # pragma: no cover - the guard forbids BEGIN
                end_transaction(self.conn, self.guard, ROLLBACK)

    def _grant(self, hold: BaseJob) -> None:
        assert hold.kind == EXCLUSIVE
        hold.finish()
        flush(self.outbox)
        held = hold.hold(self.opts.hold_warn, self._report_long_hold, self.conn)
        self.counters.lane_holds.append(held)
        conn = self.conn
        if conn.in_transaction:  # never leak a transaction past its hold
            if not isinstance(hold, AsyncLaneHold):  # a sync holder must end its own
                logger.error("litegate: a lane holder left a transaction open; rolling it back")
            end_transaction(conn, self.guard, ROLLBACK)  # (an async hold ends this way)

    def _report_long_hold(self, held: float) -> None:
        self.counters.long_holds += 1
        logger.warning(
            "litegate: a transaction on %s has held the write lane for %.2fs (hold_warn=%ss); "
            "every other writer waits behind it. Keep transactions short: do slow work "
            "(network, files) before `with db.transaction()`",
            self.opts.name,
            held,
            self.opts.hold_warn,
        )

    def _group_commit(self, jobs: list[BaseJob]) -> None:
        """BEGIN IMMEDIATE; the jobs; one COMMIT; then answer everyone.

        Optimistic first: the jobs run back to back, with no savepoint each (every statement
        hands the GIL back and forth, so two more per job cost real time under load). When a
        job fails, it fails alone: the transaction is rolled back and the others are run again,
        this time each inside its own SAVEPOINT so that a later failure is undone on its own.
        If SQLite itself rolls the transaction back (interrupt, ``OR ROLLBACK``, I/O error),
        the survivors are likewise run again. Nobody is answered before the COMMIT returned.
        If the COMMIT fails on a deferred constraint, each job is retried alone so only the
        guilty one fails; any other COMMIT failure fails every job of the batch.
        """
        conn = self.conn
        c = self.counters
        pending = jobs
        careful = False  # savepoint per job, after a failure in this batch
        while pending:
            retries = c.busy_retries
            try:
                begin_immediate(conn, self.guard, self.opts.busy_timeout, c)
            except BaseException as exc:
                c.jobs_failed += len(pending)
                for job in pending:
                    job.finish(error=_copy_error(exc))
                return
            savepoints = careful and len(pending) > 1
            done: list[tuple[BaseJob, object]] = []
            restart: list[BaseJob] | None = None
            for i, job in enumerate(pending):
                try:
                    if savepoints:
                        conn.execute(_SAVEPOINT)
                    if job.time_limit is None:  # _run_job inline: this runs once per write
                        result = job.ctx.run(job.fn, conn, *job.args)
                    else:
                        result = self._run_job(job)
                    if savepoints:
                        conn.execute(_RELEASE)
                    if not conn.in_transaction:  # it swallowed an error that ended the txn
                        raise Misuse(
                            "this write's function caught an error after which SQLite rolled "
                            "the whole transaction back: the write failed (the others of its "
                            "batch are run again). Let such errors propagate"
                        )
                except BaseException as exc:
                    c.jobs_failed += 1
                    job.finish(error=exc)
                    if savepoints and conn.in_transaction:
                        conn.execute(_ROLLBACK_TO)
                        conn.execute(_RELEASE)
                        continue
                    # Undo everything (it may hold the failed job's partial work) and run
                    # the others again, carefully.
                    end_transaction(conn, self.guard, ROLLBACK)
                    restart = [j for j, _ in done] + pending[i + 1 :]
                    careful = True
                    break
                else:
                    done.append((job, result))
            if restart is not None:
                pending = restart
                continue
            if not done:
                end_transaction(conn, self.guard, ROLLBACK)
                return
            try:
                end_transaction(conn, self.guard, COMMIT)
            except BaseException as exc:
                try:
                    end_transaction(conn, self.guard, ROLLBACK)
                except Exception:
                    logger.exception("litegate: rollback after a failed COMMIT failed")
                if isinstance(exc, sqlite3.IntegrityError) and len(done) > 1:
                    # A deferred constraint failed at COMMIT: find the guilty job by running
                    # each alone, so that it fails alone (none of them was acknowledged).
                    for job, _ in done:
                        self._group_commit([job])
                    return
                c.jobs_failed += len(done)
                for job, _ in done:
                    job.finish(error=_copy_error(exc))
                return
            self._dirty = True
            n = len(done)
            c.batches += 1
            c.jobs_ok += n
            c.batch_sizes.append(n)
            if n > c.max_batch:
                c.max_batch = n
            for job, result in done:
                job.finish(result)
            if c.busy_retries != retries:
                # Another process wanted the lock too: leave it a window before our next
                # BEGIN (its retries poll every <= 2 ms), so no process is starved.
                time.sleep(_YIELD_AFTER_CONTENTION)
            return

    def _checkpoint(self, mode: str) -> bool:
        """Checkpoint the WAL; True if it completed (no reader or writer in the way)."""
        self._dirty = False
        try:
            busy, _, _ = self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.OperationalError:
            return False
        self.counters.checkpoints += 1
        self._check_wal()
        return not busy

    def _check_wal(self) -> None:
        if self.wal_path is None:
            return
        try:
            size = os.path.getsize(self.wal_path)
        except OSError:
            size = 0
        c = self.counters
        c.wal_bytes = size
        if size > self.opts.wal_warn_bytes:
            c.wal_warnings += 1
            if c.wal_warnings == 1 or c.wal_warnings % 60 == 0:
                if self.on_large_wal is not None:
                    self.on_large_wal(size)
