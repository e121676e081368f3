"""COMMITs on an event loop, where they cost no fsync (WAL at synchronous NORMAL or OFF, or an
in-memory database): the layer of :class:`~._lane.WriteLane` above :mod:`._lane_turns`.

* :meth:`LaneLoop.commit_here` -- an async transaction alone on the lane commits on its loop;
* :meth:`LaneLoop.commit_group_here` -- a group whose every part ran light on a loop commits
  there and hands the lane on;
* :meth:`LaneLoop.take_here` / :meth:`LaneLoop.end_here` -- a lone async write runs and
  commits on its loop (:mod:`._loop_write`).

SQLite's automatic checkpoint is held off for these COMMITs (:func:`commit_on_loop`): it would
fsync on the loop. Every :data:`~._lane_state.LOOP_COMMITS`-th COMMIT goes to the writer
thread instead, which checkpoints if due. Fields and guards: :mod:`._lane_state`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import weakref
from collections.abc import Callable
from threading import get_ident
from time import monotonic

from .._errors import Misuse
from ._batch import is_open
from ._connection import commit_on_loop, rollback_quietly
from ._group import Group
from ._jobs import AsyncLaneHold, flush
from ._lane_state import LOOP_COMMITS, held_here
from ._lane_turns import LaneTurns

__all__ = ("LaneLoop",)


class LaneLoop(LaneTurns):
    """The lane's COMMITs on an event loop (see the module)."""

    def commit_here(self, hold: AsyncLaneHold) -> bool | BaseException:
        """Loop thread, the async holder ``hold`` committing: where a COMMIT costs no fsync,
        if it leads a group nobody joined and nobody waits for the lane, COMMIT here -- no
        hop to the writer thread and back -- and give the lane back: True. Else False having
        done nothing (the caller hands the lane on or to the writer thread, as
        :meth:`end_turn` says). If the COMMIT fails, its error (rolled back; the lane is still
        held, as after commit_group). The automatic checkpoint is held off for it
        (:func:`commit_on_loop`); every :data:`LOOP_COMMITS`-th goes to the writer thread."""
        group = self._group
        if (
            not self._cheap
            or group is None
            or group.members
            or self._joined
            or self._queue
            or hold.waiting  # (a task of its loop waits for a turn: the lane goes on to it)
            or self._async_holder is not hold
        ):
            return False
        if not self._loop_commit_allowed():
            return False
        c = self.counters
        c.transactions += 1  # (still the holder: the counter's guard)
        conn, guard = self._conn, self.guard
        try:
            commit_on_loop(conn, guard, self._autockpt)
        except BaseException as exc:
            rollback_quietly(conn, guard)
            return exc
        finally:  # (as commit_group's)
            self._group = None
            self._dirty = True
            if self.outbox:
                flush(self.outbox)
        self._count_lone_commit()
        self.give_back_async(hold)
        return True

    def commit_group_here(self, hold: AsyncLaneHold, max_changes: int) -> bool | BaseException:
        """Loop thread, the async holder ``hold`` ending a group's last turn (its ticket a
        member; :meth:`end_turn` returned False): where a COMMIT costs no fsync, if every part
        of the group ran light on a loop (``Group.here``) and together they changed at most
        ``max_changes`` rows, COMMIT here -- no hop to the writer thread and back, and the
        loop no longer idles while the writer commits -- answer every member, and hand the
        lane to the next transaction waiting for it (or give it back): True. Else False having
        done nothing (the caller hands the lane to the writer thread). If the COMMIT fails,
        every member is answered with the error (:meth:`Group.commit`), the lane handed on
        likewise, and the error returned. The automatic checkpoint is held off for it, and
        every :data:`LOOP_COMMITS`-th COMMIT goes to the writer thread, as in
        :meth:`commit_here`."""
        group = self._group
        conn = self._conn
        if (
            not self._cheap
            or group is None
            or group.size < 2  # (alone: commit_here's, which sends every LOOP_COMMITS-th off)
            or not group.here
            or self._joined
            or self._async_holder is not hold
            or conn.total_changes - group.changes0 > max_changes
        ):
            return False
        if not self._loop_commit_allowed():
            return False
        try:
            error = group.commit(conn, self.guard, self.counters, 0, self._autockpt)
        finally:  # (as commit_group's: also when an interrupt cuts it short)
            self._group = None
            self._dirty = True
            try:
                if not group.committed and is_open(conn) and conn.in_transaction:
                    rollback_quietly(conn, self.guard)  # (cut short before its COMMIT ran)
                if group.members:
                    group.lose("its COMMIT was interrupted", self.outbox)
                flush(self.outbox)
            finally:  # (the lane goes on even then: nobody else would hand it on)
                if not self._pass_on(None):
                    self.give_back_async(hold)
        return True if error is None else error

    def _loop_commit_allowed(self) -> bool:
        """Lock or lane held: may this COMMIT run on a loop? Every :data:`LOOP_COMMITS`-th
        goes to the writer thread instead (SQLite checkpoints there if due)."""
        if self._loop_commits >= LOOP_COMMITS:
            self._loop_commits = 0
            return False
        self._loop_commits += 1
        return True

    def _count_lone_commit(self) -> None:
        """Lane holder: count a COMMIT of one transaction or write (Group.commit's counts;
        commit_alone and commit_one hand-inline the same: keep them in step)."""
        c = self.counters
        c.batches += 1
        c.batch_sizes.append(1)
        if c.max_batch < 1:
            c.max_batch = 1

    def take_here(self) -> sqlite3.Connection | None:
        """Loop thread, for a lone write where a COMMIT costs no fsync: the idle lane, held by
        this thread, its ``BEGIN IMMEDIATE`` run (never waiting); None if the lane is busy,
        another process holds the file's write lock, or this write's COMMIT is due off the
        loop (every :data:`LOOP_COMMITS`-th: see :meth:`commit_here`). Then :meth:`end_here`;
        call it inside the ``try`` whose handler calls :meth:`abandon_here` (an interrupt may
        land anywhere, this call's return included).

        :raises Closed: the lane is closing
        """
        with self._lock:
            if self._closing:
                raise self.closed_error("the database is closed; no new writes are accepted")
            if not self._cheap or self._active or self._paused or self._queue:
                return None
            if not self._loop_commit_allowed():
                return None
            self.user = get_ident()  # (before _active: abandon_here recognises the holder by it)
            self._active = True
        try:
            begun = self._begin_if_free()
        except BaseException:  # (an interrupt too: nothing begun is left open, lane given back)
            self.abandon_here()
            raise
        if not begun:
            self.abandon_here()
            return None
        return self._conn

    def end_here(self, commit: bool, failed: bool = True) -> BaseException | None:
        """Loop thread, after :meth:`take_here`: COMMIT (the automatic checkpoint held off:
        :func:`commit_on_loop`) or roll back (``failed``: count it as a failed write), and
        give the lane back. Returns the COMMIT's error (rolled back), or None."""
        conn, guard, c = self._conn, self.guard, self.counters
        error: BaseException | None = None
        try:
            if commit:
                try:
                    commit_on_loop(conn, guard, self._autockpt)
                except BaseException as exc:
                    rollback_quietly(conn, guard)
                    error = exc
            elif is_open(conn) and conn.in_transaction:
                rollback_quietly(conn, guard)
            if commit and error is None:  # (counted while still the holder: their guard)
                c.jobs_ok += 1
                self._count_lone_commit()
            elif failed:
                c.jobs_failed += 1
            self._dirty = True
        finally:
            self._end_direct()
        return error

    def abandon_here(self) -> None:
        """Loop thread, repairing after an exception (an interrupt) escaped between
        :meth:`take_here` and :meth:`end_here`: roll back what is open and give the lane back,
        if this thread still holds it. Idempotent."""
        if self.user != get_ident() or self.owner is not None or self._async_holder is not None:
            return
        try:
            self._undo_open_transaction()
        finally:
            self._end_direct()

    # ---- a loop's group of one-statement writes (_loop_group) -------------------------------
    def take_group_here(
        self,
        loop: weakref.ref[asyncio.AbstractEventLoop],
        end_now: Callable[[], bool],
        thread: threading.Thread,
    ) -> Group | None:
        """Loop thread, a known-quick one-statement write (where a COMMIT costs an fsync, or
        that came with others where it does not: :mod:`._loop_write`): the
        idle lane, held by this thread (``thread``) for its loop (``loop``, a weak reference)
        with a group open (``BEGIN IMMEDIATE``, never waiting) that this loop's writes join
        until :meth:`hand_group_here`; None if the lane is busy or another process holds the
        file's write lock. ``end_now``: ends the group
        (a thread must not wait for any lane while its loop holds one:
        :func:`~._lane_state.end_groups_here`); False if it cannot (a statement of the group
        is running). Call it inside the ``try`` whose handler calls
        :meth:`abandon_group_here` (an interrupt may land anywhere).

        :raises Closed: the lane is closing
        """
        with self._lock:
            if self._closing:
                raise self.closed_error("the database is closed; no new writes are accepted")
            if self._active or self._paused or self._queue:
                return None
            self.user = get_ident()  # (before _active: abandon_here recognises the holder by it)
            self._active = True
            self._group_loop = loop
            self._group_end = end_now
            self._group_thread = thread
            self._held_since = monotonic()
        lanes = held_here()
        if self not in lanes:  # (cheaper than add: a lane stays in the set once added)
            lanes.add(self)
        try:
            if not self._begin_if_free():
                self.abandon_group_here()
                return None
            group = self._group = Group()
            group.size = 0  # (its writes are counted as it ends: _loop_group)
            self._joined = False
        except BaseException:  # (an interrupt too: nothing begun is left open, lane given back)
            self.abandon_group_here()
            raise
        return group

    def group_connection(self, group: Group) -> sqlite3.Connection:
        """Loop thread: the writer connection, for the loop group ``group`` that this thread
        holds the lane for. :raises Misuse: it does not (any more)"""
        if self._group is not group or self.user != get_ident():
            raise Misuse("the loop's write group has ended")
        return self._conn

    def hand_group_here(self, group: Group | None) -> bool:
        """Loop thread: the loop group's writes are in: the writer thread takes the lane over,
        COMMITs the group and answers its members (then ``group.end``). Once the writer thread
        has stopped, nobody would: the group is lost (its members told so) and the lane given
        back here. False if this thread no longer holds the lane for ``group``."""
        with self._lock:
            if self._group is not group or self.user != get_ident():
                return False
            self._conn.set_progress_handler(None, 0)  # (the loop's step counter)
            self.counters.lane_holds.append(monotonic() - self._held_since)
            if self._stopped:
                self._lose_group("the write lane stopped")
            self._release_locked()  # (the group open: to the writer thread, which commits it)
        return True

    def end_group_here(self) -> None:
        """Loop thread, holding the lane for its loop's group, whose record on the loop lost
        track of it (an interrupt cut the group's end short): the writer thread takes the lane
        over and commits it (its writes are answered through the group's ``end``), as
        :meth:`hand_group_here` does for the group the lane holds."""
        if self.user == get_ident() and self._group_loop is not None:
            self.hand_group_here(self._group)  # (the holder reads its own group)

    def end_group_of_this_thread(self) -> bool:
        """A thread about to wait (for this or another lane): if its loop holds this lane for
        a group, end the group (its COMMIT goes to the writer thread). False if it cannot: a
        statement of the group is running on this thread (a function of it called back)."""
        if self.user != get_ident() or self._group_loop is None:
            return True
        end = self._group_end
        if end is not None and not end():
            return False
        self.end_group_here()  # (if the loop's record lost track of it: an interrupt)
        return True

    def lose_group_here(self, group: Group, failed: bool = False) -> None:
        """Loop thread: a write of the loop group ``group`` failed (``failed``: counted; its
        partial work may be in the transaction) or an interrupt cut the group short: roll it
        back and give the lane back (the loop tells the group's writes). A no-op unless this
        thread holds the lane for that group (never another). Idempotent."""
        if self.user != get_ident() or self._group_loop is None:
            return
        if self._group is not group and self._group is not None:
            return  # (another group: never undone here)
        try:
            if failed:
                self.counters.jobs_failed += 1  # (still the holder: the counter's guard)
            self._group = None
            conn = self._conn
            if is_open(conn):
                conn.set_progress_handler(None, 0)
                if conn.in_transaction:
                    rollback_quietly(conn, self.guard)
        finally:
            self._end_direct()

    def abandon_group_here(self) -> None:
        """Loop thread, repairing after an interrupt cut :meth:`take_group_here` (or its
        caller, before it recorded the group) short: undo what is open and give the lane back,
        if this thread holds it for a loop group. Idempotent."""
        if self.user != get_ident() or self._group_loop is None:
            return
        try:
            self._undo_open_transaction()
        finally:
            self._end_direct()
