"""Async holders taking the write lane on their loop, and parking it there: a loop's
transactions pass the lane to each other without waiting.

An async transaction that ends its part while nobody else waits leaves the lane *parked* for
its loop, its group open (:meth:`LaneParking.park`). A transaction of the same loop starting
meanwhile takes it at once and joins the group (:meth:`LaneParking.try_take_async`) -- no
queue, no wake-up, no loop iteration of its own -- and parks it again when its part ends. The
first to park is the group's *closer*: it gives way once (the loop's ready tasks run and join),
then ends the group (:meth:`LaneParking.close_park`): hands the lane on to whoever queued
meanwhile, or COMMITs (on the loop where that costs no fsync, else on the writer thread). If
the loop's transactions queued behind one that held the lane across an await, the next to end
its part wakes them together to take the parked lane in turn (:meth:`LaneParking.take_parked`);
one that cannot (another holds it, suspended) queues again at the head. The park is an
:class:`~._jobs.AsyncLaneHold` of the loop's, the lane's ``_async_holder`` while parked: the
writer thread takes the lane back if that loop is closed (``_watch_hold``). Fields and guards:
:mod:`._lane_state`; ``Group.closer`` under ``_lock``.
"""

from __future__ import annotations

from time import monotonic

from ._group import Group
from ._jobs import AsyncLaneHold
from ._lane_turns import LaneTurns

__all__ = ("PARKED", "LaneParking")

PARKED = object()
"""What a queued async transaction's wait returns when :meth:`LaneParking.park` woke it to take
the lane parked for its loop (:meth:`LaneParking.take_parked`), not granted it."""


class LaneParking(LaneTurns):
    """The async holders' ways to the lane on their loop: taking it idle or parked, parking
    it, and ending a parked group."""

    def try_take_async(self, hold: AsyncLaneHold) -> bool:
        """Loop thread: take the lane for ``hold`` now (no thread hop, no wait): idle, or
        parked for this loop with its group open for one more (:meth:`park`: ``hold`` joins
        it); False if busy."""
        with self._lock:
            if self._closing:
                raise self.closed_error("the database is closed; no new writes are accepted")
            if self._paused or self._queue:
                return False
            if self._active:
                if not self._take_park_locked(hold):
                    return False
                hold.start(None)
            else:
                self._active = True
                hold.start(None)
                self._assign_locked(hold)
        hold.grant_here()
        return True

    def park(
        self, hold: AsyncLaneHold, may_close: bool = True
    ) -> tuple[Group, AsyncLaneHold] | bool:
        """Loop thread, the async holder ``hold`` having ended its part (its ticket a member;
        :meth:`end_turn` returned False): with nobody waiting, leave the lane parked for its
        loop, group open -- a transaction of the same loop that starts meanwhile takes it at
        once and joins the group (:meth:`try_take_async`), with no wait, no wake-up and no
        hand-off of its own. Returns ``(group, park)`` if the caller is now the group's
        *closer* -- it gives way once (the loop's ready tasks run and join), then calls
        :meth:`close_park` --; True if parked while a closer of this loop is pending (the
        caller waits for its ticket); False having done nothing (a thread or another loop
        waits first, or the lane is closing or pausing, or ``may_close`` is False -- a part
        rolled back, whose caller cannot give way -- and no closer is pending: the caller
        ends the group as before)."""
        group = self._group
        now = monotonic()
        loop = hold.loop
        woken: list[AsyncLaneHold] = []
        with self._lock:
            if self._async_holder is not hold or group is None or self._closing or self._paused:
                return False
            park = self._park
            if park is None or park.loop is not loop:
                if not may_close:
                    return False
                park = self._park = AsyncLaneHold(loop, self.outbox)
            closer = group.closer is not park
            if closer and not may_close:
                return False
            queue = self._queue
            if queue:
                # The loop's transactions at the head of the queue are woken together to take
                # the parked lane in turn (take_parked), not handed it one by one (a wake-up
                # and a loop iteration each). A thread or another loop first: not parked.
                room = self.opts.max_batch - group.size
                was_full = len(queue) >= self.opts.queue_size
                while queue and len(woken) < room:
                    nxt = queue[0]
                    if not isinstance(nxt, AsyncLaneHold) or nxt.loop is not loop:
                        break
                    queue.popleft()
                    if nxt.start(None) and not nxt.abandoned:
                        woken.append(nxt)
                if was_full and len(queue) < self.opts.queue_size:
                    self._not_full.notify_all()
                if not woken and queue:
                    return False
            self.counters.lane_holds.append(now - self._held_since)
            self._async_holder = park
            self._held_since = now
            group.closer = park  # (another loop's closer, if any, finds it is not its own)
        for nxt in woken:  # (on their loop's thread: answered at once)
            nxt.grant_here(PARKED)
        return (group, park) if closer else True

    def take_parked(self, hold: AsyncLaneHold) -> bool:
        """Loop thread, ``hold`` woken by :meth:`park` (taken from the queue): take the lane
        parked for its loop (joining its group), or the idle lane -- ahead of the queue, as
        it was. False if neither (a transaction of the loop holds it, suspended, or the lane
        went on): the caller queues again at the head (:meth:`requeue`).

        :raises Closed: the lane is closing
        """
        with self._lock:
            if self._closing:
                raise self.closed_error("the database is closed; no new writes are accepted")
            if self._paused:
                return False
            if not self._active:
                self._active = True
                self._assign_locked(hold)
                return True
            return self._take_park_locked(hold)

    def _take_park_locked(self, hold: AsyncLaneHold) -> bool:
        """Lock held: if the lane is parked for ``hold``'s loop with its group open for one
        more, make it ``hold``'s (the rest is as the parker left it: no thread user)."""
        park, group = self._park, self._group
        if (
            park is None
            or self._async_holder is not park
            or park.loop is not hold.loop
            or group is None
            or not group.open_for(self.opts.max_batch, self.opts.group_wait)
        ):
            return False
        self._async_holder = hold
        self._held_since = monotonic()
        self._hold_reported = False
        return True

    def requeue(self, hold: AsyncLaneHold) -> None:
        """Loop thread: queue ``hold`` -- a transaction woken by :meth:`park` that could not
        take the lane -- at the head of the queue, where it was (the queue may exceed its
        bound by the few so put back).

        :raises Closed: the lane is closing
        """
        with self._lock:
            if self._closing:
                raise self.closed_error("the database is closed; no new writes are accepted")
            self._queue.appendleft(hold)
            if not self._active:
                self._ring()

    def parked_size(self, group: Group, park: AsyncLaneHold) -> int | None:
        """Loop thread, ``group``'s closer: its size, while the lane is still parked at
        ``park`` with ``group`` open for more and nobody queued; else None (end it now, or it
        is not this closer's to end any more)."""
        with self._lock:
            if (
                group.closer is not park
                or self._async_holder is not park
                or self._group is not group
                or self._queue
                or not group.open_for(self.opts.max_batch, self.opts.group_wait)
            ):
                return None
            return group.size

    def close_park(
        self, group: Group, park: AsyncLaneHold, max_changes: int
    ) -> bool | BaseException:
        """Loop thread, ``group``'s closer (:meth:`park`), having given way: if the lane is
        still parked at ``park`` with ``group`` open, end the group -- hand the lane on,
        group open, to the first transaction waiting (within the group's bounds), else
        COMMIT it here where that costs no fsync (:meth:`commit_group_here`), else on the
        writer thread. Returns True, or the COMMIT's error (as commit_group_here: every
        member was answered with it). False if it was not this closer's to end: a
        transaction of the loop holds the lane (it becomes the closer when it parks), or the
        lane went on."""
        with self._lock:
            if group.closer is not park:
                return False
            group.closer = None
            if self._async_holder is not park or self._group is not group:
                return False
        return self._end_parked(group, park, max_changes)

    def end_full_park(self, loop: object, max_changes: int) -> None:
        """Loop thread, a transaction of ``loop`` about to queue: if the lane is parked for
        ``loop`` with a group its bounds close to newcomers and nobody waits, end that group
        now as its closer would (the closer pending then finds it gone). At NORMAL the lane is
        then idle for the caller at once; else the writer commits, and the caller queues.
        Without this a loop's transactions queued at every group's end, and went on queueing
        one behind the other (one wake-up and loop iteration each) while any did."""
        with self._lock:
            park, group = self._park, self._group
            if (
                park is None
                or park.loop is not loop
                or self._async_holder is not park
                or group is None
                or self._queue
                or group.open_for(self.opts.max_batch, self.opts.group_wait)
            ):
                return
            group.closer = None
        self._end_parked(group, park, max_changes)

    def _end_parked(
        self, group: Group, park: AsyncLaneHold, max_changes: int
    ) -> bool | BaseException:
        """Loop thread, the lane parked at ``park`` with ``group`` open and no closer left:
        end the group (see :meth:`close_park`)."""
        try:
            if self._queue and self._pass_on(group):
                return True
            done = self.commit_group_here(park, max_changes)
        except BaseException:  # (an interrupt: never leave the lane parked with no closer)
            self.hand_to_writer(park, False)
            raise
        if done is False:
            self.hand_to_writer(park, False)
            return True
        return done

    def unpark(self, hold: AsyncLaneHold) -> None:
        """Loop thread, repairing after an interrupt of ``hold``'s commit: if the lane is
        parked for its loop, the writer thread takes it over and commits the open group
        (a closer pending finds the lane gone and leaves it: always safe, only slower)."""
        with self._lock:
            park = self._park
            if park is None or park.loop is not hold.loop or self._async_holder is not park:
                return
        self.hand_to_writer(park, False)
