"""The write lane's writer thread: its loop (batches, grants, take-overs, idle checkpoints),
the lane holder's batch work on the writer connection, and the lane's lifecycle (close,
fork). Fields and guards: :mod:`._lane_state`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from threading import get_ident
from time import monotonic

from .._errors import Closed
from ._batch import LaneBroken, commit_one, group_commit, run_reads
from ._connection import cannot_write, is_read_only, rollback
from ._jobs import EXCLUSIVE, WRITE, AsyncJob, AsyncLaneHold, BaseJob, Job, LaneHold, flush
from ._lane_loop import LaneLoop

__all__ = ("LaneWriter",)

logger = logging.getLogger("litegate")

_SHUTDOWN_CHECKPOINT_SECONDS = 2.0
# close() waits this much beyond the final checkpoint's bound for the writer to finish the
# batch it runs and close its connection (when no caller's transaction holds the lane).
_SHUTDOWN_SLACK_SECONDS = 3.0
# A writer thread stopping on an error waits this long for a thread or task holding the lane to
# give it back before it closes the connection: closing a sqlite3 connection another thread is
# using crashes the interpreter (measured: a segfault in the holder's COMMIT).
_SHUTDOWN_HOLDER_SECONDS = 30.0


class LaneWriter(LaneLoop):
    """The writer thread's loop and the lane's lifecycle: close, fork."""

    # ---- lifecycle -------------------------------------------------------------------------
    def close(self, deadline: float) -> None:
        """Stop accepting jobs, let the writer drain the queue, checkpoint and close; jobs still
        queued when ``deadline`` passes fail with :class:`Closed`."""
        self.start_close()
        if self._thread is threading.current_thread():
            return  # the writer itself, stopping (after request_close): it drained the queue
        self._thread.join(max(0.0, deadline - monotonic()))
        if not self._thread.is_alive():
            return
        with self._lock:
            left = list(self._queue)
            self._queue.clear()
            held = self._held_by_caller()
        for job in left:
            job.finish(error=Closed("the database was closed before this write ran"))
        flush(self.outbox)
        if not held:
            # Its own shutdown (the batch it runs, the final checkpoint, closing the file) is
            # bounded: wait for it, whatever the timeout. Returning while the writer still
            # has the file open let a caller delete the file and open a new one at the same
            # path -- then this late close checkpointed into and deleted the new file's WAL
            # (measured: the drop-in closed with timeout=0 lost committed tables).
            self._thread.join(_SHUTDOWN_CHECKPOINT_SECONDS + _SHUTDOWN_SLACK_SECONDS)
        if self._thread.is_alive():
            logger.warning(
                "litegate: writer for %s did not finish within the close timeout (%s); "
                "%d queued job(s) failed with Closed; its connection closes when it does",
                self.opts.name,
                self._hold_text(),
                len(left),
            )

    def _held_by_caller(self) -> bool:
        """(``_lock`` held) Does a thread or task other than the writer hold the lane? (Its
        transaction ends when its caller says: the writer waits for it before stopping.)"""
        return (
            self.owner is not None
            or self._async_holder is not None
            or self.user not in (None, self._thread.ident)
        )

    def request_close(self, then: Callable[[], None]) -> None:
        """Ask the writer to drain the queue and stop, then call ``then()`` on its thread.
        Takes no lock and never blocks: it runs from ``__del__`` (see the table for how the
        writes below are seen)."""
        self._then = then  # (written before _closing; the writer reads it after stopping)
        self._closing = True
        try:
            self._bell.release()  # wake it now if it sleeps (else it sees _closing next turn)
        except RuntimeError:  # rung already
            pass

    def start_close(self) -> None:
        """Signal the writer to drain and stop, without waiting."""
        with self._lock:
            self._closing = True
            self._ring()
            self._not_full.notify_all()

    def pause_for_fork(self, deadline: float) -> bool:
        """Take ``_lock`` and keep it (until :meth:`resume_after_fork`), with the connection
        idle if that happens before ``deadline``. Returns whether it is idle."""
        self._lock.acquire()
        self._paused = True
        try:
            while self._active:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return False
                self._inactive.wait(remaining)
        except BaseException:  # interrupted: leave nothing held
            self.resume_after_fork()
            raise
        return True

    def resume_after_fork(self) -> None:
        self._paused = False
        self._ring()
        self._lock.release()

    def inherited_connection(self) -> sqlite3.Connection:
        """After fork, in the child: the writer connection copied from the parent (to close or
        to abandon; the child's writer thread does not exist)."""
        return self._conn

    # ---- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        cap = self.opts.queue_size
        max_batch = self.opts.max_batch
        bell = self._bell
        try:
            quiet = False  # the last wait was an idle one that nobody rang
            while True:
                jobs: list[BaseJob] | None = None
                ops: list[AsyncJob] | None = None
                grant: BaseJob | None = None
                idle = take_over = skipped = False
                with self._lock:
                    self._sleeping = self._watching = False
                    if self._ops:  # an async holder's statements (it holds the lane)
                        ops = list(self._ops)
                        self._ops.clear()
                    elif self._handed:  # the last holder left a group (or an undo) to us
                        self._handed = False
                        self.user = get_ident()
                        take_over = True
                    elif self._active or self._paused:  # a caller runs on the lane itself
                        idle_wait = False
                        if self._watch_hold():
                            wait = 0.0
                        elif self._queue and (left := self._slice_left()) > 0:
                            # its slice runs: it may release and retake the lane many times
                            # before the slice ends; watching, the writer is not rung at each
                            # release (a wake and a GIL switch per transaction) but wakes when
                            # the slice ends, and serves the queue then
                            self._watching = True
                            wait = min(left, self._poll)
                        else:
                            wait = self._poll
                    elif self._queue and (left := self._slice_left()) > 0:
                        # a thread's slice runs: it may come back for the lane; serve the
                        # queue when the slice ends (the holder does not ring meanwhile)
                        self._watching = True
                        wait, idle_wait = left, False
                    elif self._queue:
                        was_full = len(self._queue) >= cap
                        if self._queue[0].kind == EXCLUSIVE:
                            # (no local names it after this iteration: the writer may then
                            # sleep for long, and a local kept a granted hold's event loop
                            # alive after the loop had closed)
                            front = self._queue.popleft()
                            if front.start(None):
                                grant = front
                            else:  # cancelled while it waited: look again
                                skipped = True
                            del front
                        else:
                            jobs = self._take_queued(max_batch)
                        if was_full:
                            self._not_full.notify_all()
                    elif self._closing:
                        return
                    elif self._dirty and quiet:
                        idle = True
                    else:
                        # Not dirty: a write may still come on a caller's own thread, which
                        # does not wake the writer; waking every checkpoint_idle (at most 1 s),
                        # the writer sees it and checkpoints within twice that of it
                        wait, idle_wait = (
                            (self.opts.checkpoint_idle, True)
                            if self._dirty
                            else (self._idle, False)
                        )
                    if jobs is not None or idle or grant is not None:
                        self._active = True
                        self.user = get_ident()
                    elif ops is None and not take_over and not skipped:
                        self._sleeping = True
                if skipped:
                    continue
                if ops is not None:
                    self._run_ops(ops)
                    continue
                if grant is not None:
                    try:
                        granted = self._grant(grant)
                    except BaseException:
                        self._end_direct()
                        grant.finish(error=self.closed_error("the lane failed to grant this"))
                        flush(self.outbox)
                        raise
                    if not granted:
                        self._end_direct()
                    continue
                if jobs is None and not idle and not take_over:
                    if self._stale:  # a direct holder is gone without giving the lane back
                        self._recover_stale()
                    quiet = not bell.acquire(True, wait) and idle_wait
                    continue
                quiet = False
                try:
                    if take_over:
                        self._take_over()
                    elif jobs is None:
                        self._checkpoint(self.opts.checkpoint_mode)
                    else:
                        self._batch = jobs
                        self._process(jobs)
                        self._batch = []
                finally:
                    with self._lock:
                        self._release_locked()
                    # Answered after the lane is given back: a caller woken by its answer finds
                    # it idle (an async one then writes on its loop, not queued behind this
                    # release); in the finally: an interrupt of the work never strands them.
                    flush(self.outbox)
        except BaseException as exc:  # the lane cannot continue: stop visibly
            self._stop_broken(exc)
        finally:
            # Whatever was queued after the writer decided to stop (a caller that saw
            # _closing late: request_close writes it without the lock) fails, never hangs.
            self._fail_queued("the database was closed before this write ran")
            self._shutdown()
            then = self._then
            if then is not None:
                then()

    def _grant(self, hold: BaseJob) -> bool:
        """Writer thread, holding the lane: hand it to a queued lease (claimed). False if its
        waiter gave up meanwhile (the writer keeps the lane)."""
        self._ready()
        with self._lock:
            if isinstance(hold, LaneHold | AsyncLaneHold) and hold.abandoned:
                return False
            if isinstance(hold, AsyncLaneHold) and hold.orphaned:
                return False  # (its loop was closed while it waited)
            self._assign_locked(hold)
        self._announce(hold)
        return True

    def _watch_hold(self) -> bool:
        """Writer thread, lock held: report a lease held past hold_warn; take the lane back
        from an async holder whose loop was closed (it can never end its turn): its part is
        undone and an open group committed, as if it had left (True: look again at once)."""
        hold = self._async_holder
        if self._group_loop is not None:
            group_loop = self._group_loop()
            thread = self._group_thread
            if (
                group_loop is None
                or group_loop.is_closed()
                or (thread is not None and not thread.is_alive())
            ):
                # A loop holding the lane for its writes' group was closed (or its thread
                # ended) before the group's end ran: nobody can end it now. Its writes had
                # started: they commit.
                self.counters.lane_holds.append(monotonic() - self._held_since)
                self._conn.set_progress_handler(None, 0)  # (the loop's step counter)
                self._group_loop = self._group_end = self._group_thread = None
                self.user = None
                self._held_since = 0.0
                self._handed = True
                logger.warning(
                    "litegate: the event loop of writes holding the write lane of %s was "
                    "closed before their COMMIT; the lane was taken back and they committed",
                    self.opts.name,
                )
                return True
        if hold is not None and hold.orphaned:
            self.counters.lane_holds.append(monotonic() - self._held_since)
            self._undo = True
            self._async_holder = None
            self._held_since = 0.0
            self._handed = True
            logger.warning(
                "litegate: the event loop of a transaction holding the write lane of %s was "
                "closed; its part was rolled back and the lane taken back",
                self.opts.name,
            )
            return True
        if (
            (self.owner is not None or hold is not None or self._group_loop is not None)
            and self._held_since
            and not self._hold_reported
        ):
            held = monotonic() - self._held_since
            if held > self.opts.hold_warn:
                self._hold_reported = True
                self._report_long_hold(held)
        return False

    def _report_long_hold(self, held: float) -> None:
        """Writer thread: count and log a lease held past ``hold_warn``."""
        self.counters.long_holds += 1
        if self._group_loop is not None:  # (lock held: see _watch_hold)
            logger.warning(
                "litegate: an event loop's group of writes on %s has held the write lane for "
                "%.2fs (hold_warn=%ss); every other writer waits behind it. The group ends "
                "with its loop iteration: a task is blocking the loop (run blocking calls "
                "through asyncio.to_thread)",
                self.opts.name,
                held,
                self.opts.hold_warn,
            )
            return
        logger.warning(
            "litegate: a transaction on %s has held the write lane for %.2fs (hold_warn=%ss); "
            "every other writer waits behind it. Keep transactions short: do slow work "
            "(network, files) before `with db.transaction()`",
            self.opts.name,
            held,
            self.opts.hold_warn,
        )

    def _stop_broken(self, exc: BaseException) -> None:
        """Writer thread, after an error it cannot recover from: log it once, answer every
        waiter (the current batch and the queue) with :class:`Closed` saying why, and close the
        database (``on_broken``)."""
        why = f"its writer thread failed with {exc!r}"
        with self._lock:
            self.broken = why
            self._closing = True
        logger.error(
            "litegate: the write lane of %s %s; closing it", self.opts.name, why, exc_info=exc
        )
        if self._on_broken is not None:  # first: a waiter answered sees the database closed
            try:
                self._on_broken(why)
            except Exception:  # pragma: no cover - closing the rest failed: logged there
                logger.exception("litegate: closing %s after its lane stopped", self.opts.name)
        for job in self._batch:
            if not job.answered:
                job.finish(error=self.closed_error("this write did not finish"))
        self._batch = []
        with self._lock:  # (a thread or task holding the lane owns the group: it commits or
            held = (  # loses it)
                self.owner is not None
                or self._async_holder is not None
                or self._group_loop is not None
            )
        group = None
        if not held:
            group, self._group = self._group, None
        if group is not None:
            group.lose("the write lane stopped", self.outbox)
        self._fail_queued("the database was closed before this write ran")

    def _fail_queued(self, why: str) -> None:
        with self._lock:
            self._closing = True
            self._stopped = True  # (a loop's waiting turns are failed, not queued, from now)
            left: list[BaseJob] = [*self._queue, *self._ops]
            self._queue.clear()
            self._ops.clear()
        for job in left:
            job.finish(error=self.closed_error(why))
        flush(self.outbox)

    def _shutdown(self) -> None:
        conn = self._conn
        if not self._holder_gone_by(monotonic() + _SHUTDOWN_HOLDER_SECONDS):
            logger.error(
                "litegate: a transaction on %s still held the write lane %.0fs after its writer "
                "stopped; its connection is left open (closing it under that transaction "
                "could crash the process)",
                self.opts.name,
                _SHUTDOWN_HOLDER_SECONDS,
            )
            return
        try:
            if conn.in_transaction:
                rollback(conn, self.guard)
            if not self.opts.memory:
                deadline = monotonic() + _SHUTDOWN_CHECKPOINT_SECONDS
                mode = self.opts.checkpoint_mode
                while not self._checkpoint(mode) and monotonic() < deadline:
                    time.sleep(0.01)
        except Exception:
            logger.exception("litegate: final checkpoint of %s failed", self.opts.name)
        finally:
            try:
                conn.close()
            except Exception:
                logger.exception("litegate: closing the writer of %s failed", self.opts.name)

    def _holder_gone_by(self, deadline: float) -> bool:
        """Writer thread, stopping: wait until no thread or task holds the lane (only after a
        failure can one still hold it: a normal stop waits for the lane to be idle). Its
        writes and queued statements have failed already, so it ends its turn soon."""
        with self._lock:
            while self._held_by_caller():
                if monotonic() >= deadline:
                    return False
                self._inactive.wait(0.05)
        return True

    # ---- the lane holder ---------------------------------------------------------------------
    def _process(self, jobs: list[BaseJob]) -> None:
        self._ready()
        segment: list[BaseJob] = []
        reads: list[BaseJob] = []
        for job in jobs:
            kind = job.kind
            # A cancelled async job is skipped. A started write is never interrupted (it
            # shares the batch's transaction); a lane read may be, but only while it runs
            # (run_reads attaches it), never during the others' group commit.
            if type(job) is not Job and not job.start(None):  # (a thread's job: always)
                continue
            if kind == WRITE:
                segment.append(job)
            else:  # (never an exclusive job: batches stop at one, see _take_queued)
                reads.append(job)
        if segment:
            self._commit(segment)
        if reads:
            self._lane_reads(reads)
        now = monotonic()
        if now >= self._next_wal_check:
            self._next_wal_check = now + 1.0
            self._check_wal()

    def _commit(self, jobs: list[BaseJob]) -> None:
        """Group-commit ``jobs``. If a job closed the connection (or it refused to roll back),
        a new one is opened and the jobs that were neither answered nor committed run again
        on it, once."""
        try:
            if len(jobs) == 1:  # (a lone write: one task writing alone, the hot path)
                committed = commit_one(
                    self._conn, self.guard, self.opts.busy_timeout, self.counters, jobs[0]
                )
            else:
                committed = group_commit(
                    self._conn, self.guard, self.opts.busy_timeout, self.counters, jobs
                )
        except LaneBroken as broken:
            self._reopen(str(broken))
            committed = bool(broken.jobs) and group_commit(
                self._conn, self.guard, self.opts.busy_timeout, self.counters, broken.jobs
            )
        if committed:
            self._dirty = True

    def _lane_reads(self, jobs: list[BaseJob]) -> None:
        """Reads on the writer connection (``readers=0``), as :meth:`_commit` for a closed
        connection."""
        try:
            self.reads += run_reads(self._conn, self.guard, jobs)
        except LaneBroken as broken:
            self._reopen(str(broken))
            if broken.jobs:
                self._lane_reads(broken.jobs)

    def _checkpoint(self, mode: str | None) -> bool:
        """Checkpoint the WAL; True if it completed (no reader or writer in the way), or if it
        never can (a read-only database: not worth retrying). ``None`` (``checkpoints="off"``)
        runs none and only measures the WAL; a PASSIVE one never reports a reader in the way."""
        self._dirty = False
        if mode is None:
            self._check_wal()
            return True
        try:
            busy, _, _ = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.OperationalError as exc:
            return is_read_only(exc) or cannot_write(self._conn, self.opts)
        self.counters.checkpoints += 1
        self._check_wal()
        return not busy

    def _check_wal(self) -> None:
        if self._wal_path is None:
            return
        try:
            size = os.path.getsize(self._wal_path)
        except OSError:
            size = 0
        c = self.counters
        c.wal_bytes = size
        if size > self.opts.wal_warn_bytes:
            c.wal_warnings += 1
            if c.wal_warnings == 1 or c.wal_warnings % 60 == 0:
                self._on_large_wal(size)
