"""A transaction's turns on the write lane (group commit) and the lane's async holders.

A lane holder starting a transaction joins the open group or begins one; ending its part, it
hands the lane on, transaction open, to the next transaction waiting, or commits the group
(:mod:`._group`). An async holder (:mod:`._async_lease`) holds the lane from its loop --
the loop's tenure: its tasks take turns on the lane there, handed from task to task without
the lane's lock (:meth:`LaneTurns.queue_turn`) -- while the writer thread runs its statements
that may be slow (``_ops``) and takes the lane over when it is done. COMMITs on a loop are
the next layer's (:mod:`._lane_loop`). Fields and guards: :mod:`._lane_state`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from threading import get_ident
from time import monotonic

from .._errors import Misuse
from ._batch import is_open
from ._connection import (
    BEGIN_IMMEDIATE,
    begin_immediate,
    is_busy,
    rollback,
    rollback_quietly,
)
from ._group import JOIN_RELEASE, JOIN_SAVEPOINT, Group, Ticket, lost_error, undo_savepoint
from ._jobs import (
    EXCLUSIVE,
    AsyncJob,
    AsyncLaneHold,
    AsyncTicket,
    BaseJob,
    LaneHold,
    LaneTurn,
    flush,
)
from ._lane_state import LaneState

__all__ = ("LaneTurns",)

logger = logging.getLogger("litegate")


class LaneTurns(LaneState):
    """A lane holder's turns (group commit: join or begin, hand the lane on, commit for
    all), the repairs that undo a holder's part, and the async holders (who hold the lane
    from a loop; the writer thread runs their slow statements and their COMMIT)."""

    # ---- turns: what a transaction does at its start and end (group commit) ---------------
    def join(self) -> bool:
        """Lane holder, starting a transaction: if a group is open, join it (its own
        savepoint: no I/O) and return True; else False (the caller begins one)."""
        group = self._group
        if group is None:
            return False
        self._conn.execute(JOIN_SAVEPOINT)
        self._joined = True
        group.size += 1
        return True

    def start_turn(self, busy_timeout: float) -> None:
        """Lane holder, starting a transaction: :meth:`join` the open group, else
        :meth:`begin` one. (Both inlined: one call per transaction, benchmarks/hot_paths.py.)"""
        group = self._group
        if group is not None:
            self._conn.execute(JOIN_SAVEPOINT)
            self._joined = True
            group.size += 1
            return
        begin_immediate(self._conn, self.guard, busy_timeout, self.counters)
        self._group = Group()
        self._joined = False

    def try_begin(self) -> bool:
        """Lane holder (an async one, on its loop): ``BEGIN IMMEDIATE`` once, never waiting
        (the writer connection's busy timeout is 0). False if another process holds the lock:
        the caller then begins on the writer thread (:func:`begin_immediate` retries)."""
        if not self._begin_if_free():
            return False
        self._group = Group(True, self._conn.total_changes)
        return True

    def _begin_if_free(self) -> bool:
        """Lane holder: ``BEGIN IMMEDIATE`` once, never waiting; False if another process
        holds the write lock (SQLITE_BUSY)."""
        guard = self.guard
        guard.permit()
        try:
            self._conn.execute(BEGIN_IMMEDIATE)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            return False
        finally:
            guard.revoke()
        return True

    def begin(self, busy_timeout: float) -> None:
        """Lane holder: ``BEGIN IMMEDIATE`` (retrying while another process holds the write
        lock), opening a group."""
        begin_immediate(self._conn, self.guard, busy_timeout, self.counters)
        self._group = Group()
        self._joined = False

    def opened(self) -> None:
        """Lane holder (an async one): a ``BEGIN IMMEDIATE`` run for it on the writer thread
        succeeded."""
        self._group = Group(True, self._conn.total_changes)
        self._joined = False

    def release_turn(self) -> None:
        """Lane holder, committing: release its savepoint if it joined a group.

        :raises RolledBack: that failed; the whole group was rolled back (everyone fails)
        """
        if self._joined:
            try:
                self._conn.execute(JOIN_RELEASE)
            except BaseException as exc:
                self._lose_group("its savepoint could not be released")
                raise lost_error(f"releasing its savepoint failed ({exc!r})") from exc
            self._joined = False

    def undo_turn(self, quiet: bool = False) -> None:
        """Lane holder, rolling back: undo only its own part -- its savepoint if it joined a
        group (the others go on), nothing if it was granted into a group without joining it,
        else the whole transaction (``quiet``: a failed rollback is logged, not raised)."""
        conn = self._conn
        if self._joined and conn.in_transaction:
            if undo_savepoint(conn):
                self._joined = False
                return
            self._lose_group("a transaction of the group could not be undone alone")
            return
        group = self._group
        if group is not None and group.members:
            # Not joined (granted, or interrupted before its savepoint): nothing of its own
            # is in the group, which goes on -- unless SQLite already rolled it back.
            if not conn.in_transaction:
                self._lose_group("SQLite rolled the shared transaction back")
            return
        self._group = None
        self._joined = False
        if quiet:
            rollback_quietly(conn, self.guard)
        else:
            rollback(conn, self.guard)

    def end_turn(self, ticket: AsyncTicket | None, light: bool = False) -> bool:
        """Lane holder, its part of the transaction done (released or undone): with a group
        open, add ``ticket`` (if any: answered after the shared COMMIT) to its members; if
        another transaction waits for the lane, within the group's bounds, hand the lane,
        transaction open, to it and return True. Else False: the caller commits the group
        (:meth:`commit_group`, or an async holder on its loop, :meth:`commit_group_here`, or
        through the writer thread) or, with no group open, gives the lane back. ``light``:
        the part ran on a loop and may COMMIT there (else the group may not any more)."""
        self.counters.transactions += 1  # (still the holder: the counter's guard)
        group = self._group
        if group is None:
            return False
        if not light:
            group.here = False
        if ticket is not None:  # (whoever commits the group answers it)
            group.members.append((ticket, None))
        # A task of the async holder's own loop waiting for a turn first (no lock: see
        # _hand_turn), then the queue. (The queue is peeked without the lock first: nobody
        # waiting is the common case of a quiet lane, and one queued a moment later is served
        # after this group's COMMIT.)
        hold = self._async_holder  # (the holder's own: see the table)
        if hold is not None and hold.waiting and self._hand_turn(hold):
            return True
        return bool(self._queue) and self._pass_on(group)

    def hand_on(self) -> Ticket | None:
        """A sync holder's :meth:`end_turn`, committing where a COMMIT costs an fsync (else
        :meth:`commit_and_pass_on`): the ticket to wait on if it handed the lane on, else None
        (the caller commits the group). The ticket is made only when someone waits: a lone
        transaction pays nothing for grouping."""
        self.counters.transactions += 1  # (still the holder: the counter's guard)
        group = self._group
        if group is None or not self._queue:
            return None
        group.here = False  # (a thread's part: its weight is not known on a loop)
        ticket = Ticket()
        group.members.append((ticket, None))
        if self._pass_on(group):
            return ticket
        group.members.pop()
        return None

    def _pass_on(self, group: Group | None) -> bool:
        """Lane holder: hand the lane, ``group`` open, to the first transaction waiting for
        it, within the group's bounds (``None``: no group open, no bounds). False if there is
        none (or the bounds are reached)."""
        opts = self.opts
        claimed: BaseJob | None = None  # taken from the queue for the lane: it must get it
        leaving: AsyncLaneHold | None = None
        assigned = False  # the lane was made claimed's (then never again: see below)
        try:
            with self._lock:
                queue = self._queue
                leaving = self._async_holder  # (its loop's waiting turns queue behind)
                if group is None and self._paused:
                    return False  # (fork() waits for the lane to go idle: see pause_for_fork)
                while (
                    queue
                    and queue[0].kind == EXCLUSIVE
                    and (group is None or group.open_for(opts.max_batch, opts.group_wait))
                ):
                    nxt = claimed = queue.popleft()
                    if len(queue) == opts.queue_size - 1:
                        self._not_full.notify_all()
                    if not nxt.start(None) or (
                        isinstance(nxt, LaneHold | AsyncLaneHold) and nxt.abandoned
                    ):
                        claimed = None
                        continue  # (cancelled or given up while it waited)
                    if isinstance(nxt, AsyncLaneHold) and nxt.orphaned:
                        claimed = None
                        continue  # (its loop was closed while it waited: never to be used)
                    self.counters.lane_holds.append(monotonic() - self._held_since)
                    self._assign_locked(nxt)  # (first: see _lane_left)
                    assigned = True
                    if leaving is not None:
                        self._lane_left(leaving)
                    break
                else:
                    return False
            self._announce(nxt)
        except BaseException:
            # An interrupt (the loop's thread) once it was claimed: it gets the lane all the
            # same -- else its waiter, and the lane, would wait for ever.
            if claimed is not None:
                self._after_interrupted_pass(claimed, leaving, assigned)
            raise
        return True

    def _after_interrupted_pass(
        self, claimed: BaseJob, leaving: AsyncLaneHold | None, assigned: bool
    ) -> None:
        """:meth:`_pass_on` was interrupted once it had taken ``claimed`` from the queue:
        finish the hand-over, under the lock (its waiter may give up meanwhile, on another
        thread). Assigned already, the lane is never assigned again -- its waiter may have
        given it back since (an async holder's cancelled task does, and stays claimable):
        the leaving loop's waiting turns are queued if the lane has left it, and ``claimed``
        is told if the lane is still its own. Not assigned, it is assigned if ``claimed`` is
        still wanted; if not, the lane is still the leaving holder's (its turn's end hands it
        to the writer thread: :meth:`~._async_lease.AsyncLaneLease._to_writer`)."""
        with self._lock:
            if not assigned:
                if not self._claimable(claimed):
                    return
                self._assign_locked(claimed)
            if leaving is not None and self._async_holder is not leaving:
                self._lane_left(leaving)
            tell = not claimed.answered and (
                self._async_holder is claimed
                if isinstance(claimed, AsyncLaneHold)
                else isinstance(claimed, LaneHold) and self.user == claimed.ident
            )
        if tell:
            self._announce(claimed)

    def _lane_left(self, hold: AsyncLaneHold) -> None:
        """Lock held, on ``hold``'s loop thread, the lane assigned to a queued holder: it has
        left that loop. Its tasks still waiting for a turn queue for the lane instead, and no
        turn of the hold is left: ``turn`` no longer names the lease whose turn ended (that
        lease names the hold: a reference cycle per transaction, 7 objects collected only by
        the GC -- at FULL, 64 tasks of transfers made its collections of the young
        generations take 2-3 ms of the loop ~15 times a second, most of the loop's lag p99;
        issue 11).

        ``turn`` is cleared only once the lane is no longer the hold's (here, in
        :meth:`give_back_async` and :meth:`hand_to_writer` alike): while the hold still holds
        it, ``turn`` None means "handed to a task of its loop", and an interrupted hand-off
        relies on that (:meth:`~._async_lease.AsyncLaneLease._to_writer`): cleared before, an
        interrupt in between left the lane held by a lease that had ended."""
        if hold.waiting:
            self._spill_locked(hold)
        hold.turn = None

    @staticmethod
    def _claimable(hold: BaseJob) -> bool:
        """After an interrupt in :meth:`_pass_on`: may ``hold``, taken from the queue, still
        be granted (claimed -- now, or before the interrupt, or being told -- and still
        wanted)?"""
        if not hold.start(None) and not (
            isinstance(hold, AsyncJob) and hold.state in (AsyncJob.RUNNING, AsyncJob.DONE)
        ):
            return False  # (cancelled while it waited)
        if isinstance(hold, LaneHold | AsyncLaneHold) and hold.abandoned:
            return False
        return not (isinstance(hold, AsyncLaneHold) and hold.orphaned)

    def commit_and_pass_on(self) -> BaseException | bool:
        """A sync holder's commit where a COMMIT costs no fsync, when it may not keep the
        lane (others wait, and its slice is over -- or it was handed a group, which then gives
        up the rest of its slice): COMMIT here (with that group, if any), then hand the lane
        straight to the first waiting transaction. Returns the
        COMMIT's error (everyone in it failed), or whether the lane was handed on (False: the
        caller gives it back).

        Handing the lane on with the group open would keep this thread waiting for the
        group's COMMIT, a second wake for each transaction to save a COMMIT that costs no
        fsync; given back, the lane would wait for the writer thread to wake and grant it."""
        self.counters.transactions += 1  # (still the holder: the counter's guard)
        error = self.commit_group(own=True)
        if error is not None:
            return error
        return bool(self._queue) and self._pass_on(None)

    def commit_group(self, own: bool = False, answer: bool = True) -> BaseException | None:
        """Lane holder (on a thread, never a loop): COMMIT the open group and answer its
        members (``own``: the caller's transaction is in it too, not as a member). Returns
        the COMMIT's error (everyone failed), or None. ``answer=False`` (the writer thread,
        taking the lane over): the async members' answers stay in the outbox, delivered once
        the lane is given back -- answered first, a member's next transaction found the lane
        still taken and queued behind the writer (one more hop to the writer thread and back:
        ~0.1 ms of a one-task transfer's 0.8 ms at FULL)."""
        group = self._group
        if group is None:
            return None
        try:
            return group.commit(self._conn, self.guard, self.counters, 1 if own else 0)
        finally:  # (also when an interrupt cuts it short: nobody is left waiting)
            self._group = None
            self._joined = False
            self._dirty = True
            if group.members:
                group.lose("its COMMIT was interrupted", self.outbox)
            if answer:
                flush(self.outbox)

    # ---- repairs: undoing a holder's part -------------------------------------------------
    def _undo_open_transaction(self) -> bool:
        """Repair paths, holding the lane: end any permit and undo what the holder did, as
        :meth:`undo_turn` does (a failed rollback is logged, not raised). Returns whether a
        transaction was open."""
        self.guard.revoke()
        conn = self._conn
        if not is_open(conn):
            self._lose_group("its connection was closed")
            return False
        open_txn = conn.in_transaction
        self.undo_turn(quiet=True)
        return open_txn

    def _recover_stale(self) -> None:
        """Roll back and give back a lane whose holder is gone (see :meth:`_drop_stale`)."""
        with self._lock:
            if not self._stale:
                return
            self._stale = False
            owner = self.owner
            direct = owner is not None and self.user == owner
        if not direct:
            return
        logger.warning(
            "litegate: a transaction on %s was left without its end (what held it is gone: a "
            "connection dropped with its transaction open, or a block interrupted as it "
            "ended, e.g. by Ctrl-C); rolled it back and gave the write lane back",
            self.opts.name,
        )
        self._undo_open_transaction()
        self._end_direct()

    # ---- async holders ---------------------------------------------------------------------
    def queue_turn(self, loop: asyncio.AbstractEventLoop) -> LaneTurn | None:
        """Loop thread: if a task of ``loop`` holds the lane (its tenure, see
        :class:`~._jobs.AsyncLaneHold`), queue a turn after it and return it: the holder's
        task hands the lane on to it when its turn ends -- no lock, no thread. Else None (the
        caller takes or queues for the lane). No lock: the lane leaves a loop's hold only from
        that loop's thread, this one (see the table)."""
        hold = self._async_holder
        if hold is None or hold.loop is not loop or self._closing:
            return None
        turn = LaneTurn(hold)
        hold.waiting.append(turn)
        return turn

    def _hand_turn(self, hold: AsyncLaneHold) -> bool:
        """Loop thread, the turn of ``hold``'s task ending (it holds the lane): hand the lane,
        group open or not, to the first task of its loop waiting for a turn, within the open
        group's bounds. False if there is none (or the bounds are reached). Its future is
        resolved before its turn leaves ``waiting``, and once taken from there it gets the lane
        whatever interrupts this (as in :meth:`_pass_on`)."""
        if self._stopped:  # (read without the lock: see the table)
            return False  # (the caller gives the lane back: the turns then fail with Closed)
        waiting = hold.waiting
        group = self._group
        opts = self.opts
        while waiting:
            turn = waiting[0]
            fut = turn.future
            if fut.done():  # (timed out or cancelled while it waited)
                waiting.popleft()
                continue
            if group is not None and not group.open_for(opts.max_batch, opts.group_wait):
                return False
            now = monotonic()
            self.counters.lane_holds.append(now - self._held_since)  # (the turn that ends)
            self._held_since = now
            try:
                hold.turn = None  # (the waiter's lease takes the turn when its task runs)
                fut.set_result(None)
                waiting.popleft()
            except BaseException:  # (claimed: it gets the lane all the same, as in _pass_on)
                hold.turn = None
                if not fut.done():
                    fut.set_result(None)
                if waiting and waiting[0] is turn:
                    waiting.popleft()
                raise
            return True
        return False

    def _spill_locked(self, hold: AsyncLaneHold) -> None:
        """Lock held, on ``hold``'s loop thread, the lane leaving that loop (to a queued holder
        or the writer thread, or given back): its tasks still waiting for a turn queue for the
        lane instead, behind those queued already, each with a hold of its own that shares its
        wait's future (granted as any queued hold). Once the writer thread has stopped they fail
        with Closed instead: nothing would serve them. (Safe to call again after an interrupt
        cut it short: a turn leaves ``waiting`` only once queued.)"""
        waiting = hold.waiting
        queue = self._queue
        while waiting:
            turn = waiting[0]
            if not turn.future.done():
                spilled = turn.hold
                if spilled is None:
                    if self._stopped:
                        turn.future.set_exception(
                            self.closed_error("the database was closed while this waited")
                        )
                    else:
                        spilled = turn.hold = AsyncLaneHold(hold.loop, self.outbox, turn.future)
                        queue.append(spilled)
                elif spilled not in queue and not self._stopped:  # (a spill interrupted here)
                    queue.append(spilled)
            waiting.popleft()

    def try_take_async(self, hold: AsyncLaneHold) -> bool:
        """Loop thread: take the idle lane for ``hold`` now (no thread hop); False if busy."""
        with self._lock:
            if self._closing:
                raise self.closed_error("the database is closed; no new writes are accepted")
            if self._active or self._paused or self._queue:
                return False
            self._active = True
            hold.start(None)
            self._assign_locked(hold)
        hold.grant_here()
        return True

    def writer_connection(self, hold: AsyncLaneHold) -> sqlite3.Connection:
        """The writer connection, for the async holder ``hold`` only."""
        if self._async_holder is not hold:
            raise Misuse("the transaction does not hold the write lane (its block has ended)")
        return self._conn

    def post(self, hold: AsyncLaneHold, op: AsyncJob) -> None:
        """Loop thread: have the writer thread run ``op`` for the async holder ``hold``."""
        with self._lock:
            if self._async_holder is not hold:
                raise Misuse("the transaction is over (its block was left)")
            if self._stopped:  # (nobody would run it: its await would never end)
                raise self.closed_error("the database is closed; this statement was not run")
            self._ops.append(op)
            self._ring()

    def hand_to_writer(self, hold: AsyncLaneHold, undo: bool) -> bool:
        """Loop thread: the async holder ``hold`` is done (``undo``: roll back its own part
        first); the writer thread takes the lane over, commits an open group and goes on.
        Once the writer thread has stopped, nobody would: the open group is lost (its members
        told so), what is open rolled back, and the lane given back here. Never blocks. False
        if ``hold`` did not hold the lane (any more)."""
        with self._lock:
            if self._async_holder is not hold:
                return False
            self.counters.lane_holds.append(monotonic() - self._held_since)
            if hold.waiting:
                self._spill_locked(hold)  # (failed with Closed, once stopped)
            if self._stopped:
                self._lose_group("the write lane stopped")
                self._release_locked()
                hold.turn = None  # (after: see _lane_left)
                return True
            self._undo = undo
            self._async_holder = None
            hold.turn = None  # (no turn of it is left: see _lane_left)
            self._held_since = 0.0
            self._handed = True
            self._ring()
        return True

    def abandon_async(self, hold: AsyncLaneHold) -> None:
        """Loop thread: a task gave up waiting for the lane with ``hold`` queued (a timeout, a
        cancellation, an interrupt). Granted meanwhile: its turn ends at once (handed on);
        else it is taken out of the queue, so that its place is free at once (the writer
        would skip it, but only once the lane moves)."""
        if hold.state == AsyncJob.CANCELLED:
            self.cancel(hold)
        else:
            self.give_back_async(hold)

    def give_back_async(self, hold: AsyncLaneHold) -> None:
        """Loop thread: the turn of the async holder ``hold``'s task ends: the lane goes on to
        the next task of its loop waiting for a turn, if no group is open and nothing is
        queued; else back (to the writer thread if a group is still open: it commits it), the
        loop's waiting turns queued behind. A no-op if ``hold`` does not hold it."""
        if (
            self._async_holder is hold  # (its own loop's: read without the lock, see the table)
            and hold.waiting
            and self._group is None
            and not self._queue
            and not self._paused  # (fork() waits for the lane to go idle)
        ):
            self._dirty = True  # (still the holder: the idle checkpoint follows)
            if self._hand_turn(hold):
                return
        with self._lock:
            if self._async_holder is not hold:
                hold.abandoned = True  # (not granted yet: whoever took it will not grant it)
                return
            self.counters.lane_holds.append(monotonic() - self._held_since)
            self._dirty = True
            if hold.waiting:
                self._spill_locked(hold)
            self._release_locked()
            hold.turn = None  # (no turn of it is left; after the release: see _lane_left)

    def _take_over(self) -> None:
        """Writer thread, handed the lane: undo what the last holder asked, then COMMIT the
        open group (or roll back a transaction nobody will end)."""
        undo, self._undo = self._undo, False
        conn = self._conn
        if undo:
            self._undo_open_transaction()
        if not is_open(conn):
            self._ready()
            return
        if self._group is not None:
            if conn.in_transaction:
                self.commit_group(answer=False)  # (the writer's loop answers, after release)
            else:
                self._lose_group("SQLite rolled the shared transaction back")
        elif conn.in_transaction:
            rollback(conn, self.guard)

    def _run_ops(self, ops: list[AsyncJob]) -> None:
        """Writer thread: the async holder's statements, in order. Meanwhile the writer is
        the lane's ``user``: a function that calls the database from there is refused
        (Misuse), as on any lane holder, instead of waiting for itself."""
        me = get_ident()
        with self._lock:
            self.user = me
        try:
            conn = self._conn
            for op in ops:
                if op.start(conn):
                    op.execute(conn)
        finally:
            with self._lock:
                if self.user == me:
                    self.user = None
            flush(self.outbox)
