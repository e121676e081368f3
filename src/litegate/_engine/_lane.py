"""The write lane: one writer connection, a bounded queue of jobs, the writer thread.

Who uses the writer connection: exactly one *lane holder* at a time --

* the writer thread, running a batch it took from the queue (group commit, lane reads);
* a thread caller that found the lane idle and runs its own job (plus what queued) directly;
* the holder of a lease (:mod:`._lease`, :mod:`._async_lease`): a sync lease is used on its
  holder's thread; an async lease's statements run on its loop's thread when they are known to
  be quick, the others (and a COMMIT that fsyncs or is shared) on the writer thread, which
  serves them (``_ops``) while the async holder holds the lane;
* a loop thread running a lone async write, COMMIT included, on the idle lane where a COMMIT
  costs no fsync (:mod:`._loop_write`: ``take_here`` / ``end_here``);
* a loop thread running its tasks' one-statement writes into a group it opened on the idle
  lane (where a COMMIT fsyncs; elsewhere, writes that came together); the writer thread takes
  the lane over for the COMMIT
  (:mod:`._loop_group`: ``take_group_here`` / ``hand_group_here``).

A transaction that ends while another waits for the lane hands the lane on without committing
(group commit, :mod:`._group`): the lane passes from holder to holder directly -- no writer
thread in between -- and the last of a group COMMITs for all (an async one through the writer
thread, or where a COMMIT costs no fsync on its loop: alone, ``commit_here``; for a group
whose every part ran light on a loop, ``commit_group_here``).

:class:`WriteLane` is built in layers, one concern a module: :mod:`._lane_state` (the fields
and their guards, the writer connection, the queue, giving the lane to a holder and back),
:mod:`._lane_turns` (a transaction's turns: group commit; async holders), :mod:`._lane_loop`
(COMMITs on an event loop), :mod:`._lane_writer`
(the writer thread; closing; fork) and this module: thread callers and sync leases.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from threading import get_ident
from time import monotonic
from typing import TypeVar

from .._errors import Busy, Misuse, WriteTimeout
from .._types import Args, Bound, Fn
from ._batch import LaneBroken, commit_one
from ._connection import COMMIT, end_transaction, is_busy, rollback_quietly, run_autocommit
from ._group import Ticket
from ._jobs import EXCLUSIVE, WRITE, BaseJob, Job, LaneHold, flush
from ._lane_state import end_groups_here
from ._lane_writer import LaneWriter

__all__ = ("WriteLane",)

_LIVENESS_POLL = 1.0  # seconds between a waiting caller's checks that the writer still runs

# Signal handlers (KeyboardInterrupt) run only on the main thread. So a main-thread caller that
# finds the lane idle runs only its own job there, never other threads' queued ones: an
# interrupt of the main thread must not land inside another caller's write (it would fail that
# write with the main thread's KeyboardInterrupt). Refreshed in a forked child.
_main_thread = threading.main_thread().ident


def _refresh_main_thread() -> None:
    global _main_thread
    _main_thread = threading.main_thread().ident


os.register_at_fork(after_in_child=_refresh_main_thread)


T = TypeVar("T")


class WriteLane(LaneWriter):
    """Owns the writer connection and the thread that uses it."""

    # ---- what others may read ---------------------------------------------------------
    def reentrance(self, ident: int) -> str | None:
        """Why thread ``ident`` must not wait for the lane (it holds it), or None. A group
        of one-statement writes that the loop of thread ``ident`` holds the lane for is ended
        first (its COMMIT goes to the writer thread): the caller then waits as any thread."""
        self._drop_stale(ident)
        if self.user == ident and self._group_loop is not None:
            why = end_groups_here()
            if why is not None:
                return why
        if self.owner == ident:
            return (
                "inside a transaction held by this thread; it would wait for the transaction "
                "to end (a deadlock). Use the transaction object (tx.execute, tx.savepoint()) "
                "instead"
            )
        if self.user == ident:
            return (
                "from inside a run_write/run_read function running on the write lane; it "
                "would wait for that function to end (a deadlock). Use the connection the "
                "function was given"
            )
        return None

    def holds(self, ident: int) -> bool:
        """Does thread ``ident`` hold the lane (a lease or a direct call)? Exact for that
        thread itself (only a grant to it sets ``user`` to its ident)."""
        return self.user == ident

    def held_by(self, ident: int) -> sqlite3.Connection | None:
        """The writer connection if thread ``ident`` holds a sync lease, else None."""
        if self.owner != ident:
            return None
        self._drop_stale(ident)
        return self._conn if self.owner == ident else None

    def _drop_stale(self, ident: int) -> None:
        """Thread ``ident``, calling in: if the transaction that holds the lane for it is gone
        (collected) without giving the lane back -- an interrupt (Ctrl-C) landed as its
        ``__exit__`` began, where no context manager written in Python can act -- roll it back
        and give the lane back, instead of refusing the call as if inside it."""
        if self._stale and self.owner == ident:
            self._recover_stale()

    # ---- thread callers ----------------------------------------------------------------
    # When the lane is idle (nothing queued, nobody on the connection) a thread caller runs
    # its job -- or its whole transaction -- on its own thread: no hop to the writer thread
    # and back, which under the GIL costs far more than a small write. Under contention
    # callers queue as usual and the writer group-commits them.
    def call(self, job: Job, timeout: Bound, what: str) -> None:
        """Run a thread caller's job: on an idle lane directly (committing what queued with
        it), else queued for the writer. Returns when ``job`` has its outcome. Waits up to
        ``timeout`` seconds for the lane (``None``: no bound).

        :raises WriteTimeout: it did not get the lane in time (then it never runs)
        :raises Closed: the lane is closing, or the writer stopped
        """
        deadline = None if timeout is None else monotonic() + timeout
        taken: list[BaseJob] | None = None
        try:
            taken = self._enter(job, deadline)
            if taken is None:
                self._wait(job, deadline, what, timeout)
                return
            if taken or job.kind != WRITE:
                self._run_direct(job, taken)
            else:  # (_run_direct's single-write case inlined: benchmarks/hot_paths.py)
                try:
                    if commit_one(
                        self._conn, self.guard, self.opts.busy_timeout, self.counters, job
                    ):
                        self._dirty = True
                except LaneBroken as broken:
                    self._reopen(str(broken))
            with self._lock:  # (_end_direct inlined)
                self._release_locked()
        except BaseException:
            # Interrupted (KeyboardInterrupt on the main thread) or the lane failed: leave the
            # lane as a next caller needs it, then let the exception go on.
            self._abandon(job, taken)
            raise

    def _wait(self, job: Job, deadline: float | None, what: str, waited: float | None) -> None:
        """A queued job's caller waits for its outcome until ``deadline``; then withdraws it if
        it has not started (:class:`WriteTimeout`), else waits for it (it is running, bounded
        by its time limit). Never past the writer's end: :class:`Closed` then."""
        why = end_groups_here()  # (its loop's groups first: they would wait for this thread)
        if why is not None and self.cancel(job):  # (else it runs already: waited for below)
            raise Misuse(f"{what} was called on the database {why}")
        done = job.done
        # (A LaneHold is granted by making the lane its thread's, then answered: an interrupt
        # of the granting thread in between would leave the answer out; the lane is ours.)
        hold = job.ident if isinstance(job, LaneHold) else None
        while True:
            remaining = _LIVENESS_POLL if deadline is None else deadline - monotonic()
            if remaining <= 0:
                break
            if done.acquire(True, min(remaining, _LIVENESS_POLL)):
                return
            if hold is not None and self.user == hold:
                return
            if not self.alive:
                raise self.closed_error("the writer stopped before this write ran")
        if self.cancel(job):
            raise self.timeout_error(what, waited)
        while not done.acquire(True, _LIVENESS_POLL):
            if hold is not None and self.user == hold:
                return
            if not self.alive:
                raise self.closed_error("the writer stopped before this write finished")

    def _abandon(self, job: BaseJob, taken: list[BaseJob] | None) -> None:
        """Repair after an exception escaped :meth:`call` (idempotent; what a next caller
        needs). Holding the lane directly: no transaction is left open, nothing taken over
        stays unanswered, and the lane is given back. Queued: the job is withdrawn if it has
        not started (else it runs to its end: its outcome is unknown to this caller)."""
        if self.user != get_ident():
            self.cancel(job)
            return
        open_txn = self._undo_open_transaction()
        for other in taken or ():
            if not other.answered:  # (other threads' jobs: never run on the main thread)
                other.finish(
                    error=self.closed_error(
                        "the write lane failed while running this write in a batch"
                        + (" (rolled back)" if open_txn else "; it may have committed")
                    )
                )
        flush(self.outbox)
        self._end_direct()

    def _enter(self, job: BaseJob, deadline: float | None) -> list[BaseJob] | None:
        """Under one lock: take the idle lane (returns the queued writes handed over), or
        queue ``job`` (returns None; waits for room until ``deadline`` if the queue is full).
        """
        with self._lock:
            if self._closing:
                raise self.closed_error("the database is closed; no new writes are accepted")
            queue = self._queue
            me = get_ident()
            if (
                not self._active
                and not self._paused
                and (not queue or queue[0].kind != EXCLUSIVE or self._in_slice(me))
            ):
                # Writes already queued are committed in our batch: the writer thread, slow
                # to get the GIL while other threads run, is only needed when no thread
                # caller comes along (the main thread takes none: see _main_thread).
                self.user = me  # (before _active: _abandon recognises the holder by it)
                self._active = True
                if self._slice != me:  # (else its own slice runs: one call less)
                    self._start_slice(me)
                if not queue or me == _main_thread:
                    return []  # (nothing to take over: _take_queued's call saved)
                return self._take_queued(self.opts.max_batch - 1)
            if len(queue) < self.opts.queue_size:
                queue.append(job)
                if len(queue) == 1 and not self._active:
                    self._ring()
                return None
        self.submit(job, deadline)
        return None

    def _run_direct(self, job: BaseJob, taken: list[BaseJob]) -> None:
        """On the calling thread: our job and the ones taken over, as one group commit (or a
        lane read alone).
        (Committing further batches here would hold the file's write lock back to back and
        starve other processes; what queues meanwhile is taken by the next caller, or by the
        writer thread.)"""
        if taken:
            self._process([job, *taken])
            flush(self.outbox)
        else:  # (a single write is run by call itself: the hot path)
            self._lane_reads([job])

    # ---- leases --------------------------------------------------------------------------
    def take(
        self, timeout: Bound, what: str, holder: object = None
    ) -> tuple[sqlite3.Connection, LaneHold | None]:
        """Hold the lane for the calling thread: directly when it is idle (returns
        ``(conn, None)``), else queued: a :class:`LaneHold` that the lane is handed to (by the
        holder before, or the writer thread). Waits up to ``timeout`` seconds.

        :raises WriteTimeout: not granted in time (the request is withdrawn)
        :raises Closed: the lane is closing, or closed before granting it
        """
        me = get_ident()
        try:
            with self._lock:
                if self._closing:
                    raise self.closed_error("the database is closed; no new writes are accepted")
                if not (self._active or self._paused) and (not self._queue or self._in_slice(me)):
                    if self._slice != me:  # (else its own slice runs: one call less)
                        self._start_slice(me)
                    self._stale = False  # (the holder first: recover tells its own by it)
                    self.holder = (
                        None if holder is None else weakref.ref(holder, self._on_holder_gone)
                    )
                    self.user = self.owner = me
                    self._held_since = monotonic()
                    self._active = True
            if self.user == me:  # holding it directly (every holder leaves the connection fit:
                return self._conn, None  # rolled back, and reopened if closed, at release)
        except BaseException:  # (an interrupt included: never strand the lane)
            self.recover(me, holder)
            raise
        hold = LaneHold()
        deadline = None if timeout is None else monotonic() + timeout
        self.submit(hold, deadline)
        try:
            self._wait(hold, deadline, what, timeout)
            if hold.error is not None:  # failed, never granted (closed meanwhile)
                error, hold.error = hold.error, None
                raise error
            with self._lock:  # (user and owner were set by whoever granted it)
                self._stale = False
                self.holder = None if holder is None else weakref.ref(holder, self._on_holder_gone)
        except WriteTimeout:
            raise  # withdrawn: it never gets the lane
        except BaseException:  # e.g. KeyboardInterrupt while waiting: never strand the lane
            with self._lock:
                hold.abandoned = True  # (whoever took it from the queue will not grant it)
            if not self.cancel(hold):
                self.recover(me, holder)  # granted already: give it back
            raise
        return self._conn, hold

    def give_back(self, hold: LaneHold | None) -> None:
        """End a lease taken with :meth:`take` (its holder has ended its part of the
        transaction). Idempotent, and a no-op once the lane was handed on."""
        if self.user == get_ident():
            try:
                self._dirty = True  # (still the holder: the idle checkpoint follows)
                self.counters.lane_holds.append(monotonic() - self._held_since)
            finally:
                self._end_direct()

    def commit_alone(self) -> bool | BaseException:
        """A sync lease holder, committing, in the common case: it leads a group nobody
        joined and nobody waits to be handed the lane (or its slice runs). Then COMMIT, give
        the lane back and return True; else return False having done nothing (the caller
        takes the general path: :meth:`release_turn`, :meth:`hand_on`, :meth:`commit_group`,
        :meth:`give_back`, which this hand-inlines: benchmarks/hot_paths.py). If the COMMIT
        fails, returns its error (rolled back; the lane is still held), as commit_group."""
        group = self._group
        if (
            group is None
            or group.members
            or self._joined
            or (self._queue and not self._in_slice(get_ident()))
        ):
            return False
        c = self.counters
        c.transactions += 1  # (still the holder: the counter's guard)
        conn, guard = self._conn, self.guard
        try:
            end_transaction(conn, guard, COMMIT)
        except BaseException as exc:
            rollback_quietly(conn, guard)
            return exc
        finally:  # (as commit_group's: also when an interrupt cuts it short)
            self._group = None
            self._dirty = True
            if self.outbox:
                flush(self.outbox)
        c.batches += 1  # (a COMMIT of one transaction: Group.commit's count)
        c.batch_sizes.append(1)
        if c.max_batch < 1:
            c.max_batch = 1
        c.lane_holds.append(monotonic() - self._held_since)  # (give_back's)
        with self._lock:
            self._release_locked()
        return True

    def run_alone(self, fn: Fn[T], args: Args) -> T:
        """A sync lease holder, no transaction of its own begun, where a COMMIT costs no
        fsync: ``fn(conn, *args)`` -- one statement, run to its end -- committed by SQLite at
        the end of its own call (:func:`~._connection.run_autocommit`). A group the lane was
        handed on with is committed first. Why: BEGIN, the statement and COMMIT are three
        calls, each of which gives the GIL up and must win it back while every other writer
        waits for the lane; this is one (benchmarks/dropin_store.py: the difference between a
        writer that holds the lane and one that holds SQLite's lock only inside its
        statement, as a connection per thread does).

        :raises Busy: another process held the write lock (nothing ran: the caller may
            begin a transaction, which waits for it)
        """
        if self._group is not None:
            self.commit_group()  # (a failure is its members' to hear, not this write's)
        conn = self._conn
        before = conn.total_changes
        try:
            result = run_autocommit(conn, self.guard, fn, args)
        except sqlite3.OperationalError as exc:
            # (nothing ran -- no change made, none open -- so the caller may run it again)
            if is_busy(exc) and not conn.in_transaction and conn.total_changes == before:
                raise Busy("another process holds the write lock") from exc
            raise
        c = self.counters
        c.transactions += 1  # (still the holder: the counter's guard)
        c.batches += 1
        c.batch_sizes.append(1)
        if c.max_batch < 1:
            c.max_batch = 1
        self._dirty = True
        return result

    def recover(self, ident: int, holder: object) -> None:
        """After an exception (an interrupt) escaped a lease's set-up or release on thread
        ``ident``, before its holder had the lease object to release: if ``holder`` (on that
        thread) still holds the lane, undo its part and give the lane back. Idempotent; a
        no-op for anyone else."""
        if self.user != ident or self.owner != ident:
            return  # (unlocked reads: only a grant to thread ``ident`` sets them to it)
        ref = self.holder
        if ref is not None and ref() is not holder:
            return  # (another lease of this thread: e.g. a nested transaction was refused)
        self._undo_open_transaction()
        self._end_direct()

    def await_ticket(self, ticket: Ticket) -> None:
        """A thread whose transaction was handed on: wait for the group's COMMIT (whoever
        ends the group answers every member, also when it is lost; a stopped writer thread
        answers them as it stops).

        :raises RolledBack: the group's shared transaction was lost
        """
        done = ticket.done
        if not done.acquire(False):
            end_groups_here()  # (its loop's groups first: they would wait for this thread)
            while not done.acquire(True, _LIVENESS_POLL):
                if not self.alive and not ticket.answered:
                    raise self.closed_error(
                        "the write lane stopped before this transaction's COMMIT"
                    )
        ticket.outcome()
