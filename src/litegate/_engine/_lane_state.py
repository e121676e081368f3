"""The write lane's state: its fields and their guards, the writer connection, the queue,
and giving the lane to a holder and back.

:class:`LaneState` is the bottom layer of :class:`~._lane.WriteLane` (see :mod:`._lane`).
Every field of the lane is set here, in ``__init__``; every layer keeps to this table.

Shared fields and their guards:

===================  ==================================  ===================================
field                written by                          guard
===================  ==================================  ===================================
_queue, _closing,    callers, the writer thread          ``_lock`` (``_not_full`` and
_paused, _sleeping                                       ``_inactive`` are its conditions),
                                                         except that ``request_close`` (from
                                                         ``__del__``) sets ``_closing`` and
                                                         ``_then`` without it, then rings;
                                                         the writer re-reads ``_closing``
                                                         under the lock at least every second,
                                                         and fails whatever was queued after
                                                         it stopped. The async holder's loop
                                                         thread reads ``_closing``
                                                         (``queue_turn``), ``_queue`` and
                                                         ``_paused`` (``give_back_async``)
                                                         without it: a stale value only picks
                                                         a path (a turn handed on there
                                                         rather than through the queue; one
                                                         more turn before fork's pause, which
                                                         has its own deadline)
_active, user        whoever takes / gives back the      ``_lock``; ``user`` is read without
                     lane                                it only by a thread comparing it
                                                         with its own ident (a stale value
                                                         never equals it)
owner                a sync lease holder, for itself     ``_lock``; read without it only to
                     (once granted; cleared at release)  compare with the reader's own ident
                                                         (only that thread ever sets it to
                                                         its ident, so a stale value never
                                                         equals it)
_async_holder        whoever grants the lane to an async  ``_lock``; read without it on a
                     hold (cleared when it hands on)     loop's thread, compared with that
                                                         loop's own hold (only that thread
                                                         hands the lane off a hold of its
                                                         loop -- the writer thread only once
                                                         the loop is closed -- so a value
                                                         naming its own loop is current)
_handed, _undo       a holder handing the lane to the     ``_lock``
                     writer thread (which clears them)
_ops                 the async holder appends, the        ``_lock`` (append, then ring)
                     writer pops and runs them
_group, _joined,     the lane holder of the moment (a     the lane (one holder at a time);
costs                group is handed on with the lane)    see :mod:`._group`; ``costs`` is also
                                                         read without it (``dict.get``: a
                                                         stale value only picks a path)
holder               the sync lease holder (``take``): a  the lane; its weakref callback sets
                     weakref to who asked, cleared when  only ``_stale`` (a bool)
                     the lane is given back
_stale               the holder's weakref callback       read by the owner thread and the
                     (set), a new lease (cleared)        writer; acted on under ``_lock``
broken               the writer thread, once, as it      ``_lock``; read without it only for
                     stops on its own                    a message
_batch               the writer thread                   the writer thread only
_group_loop,         a loop thread taking the idle lane  ``_lock``; read without it by the
_group_end,          for its writes' group (weakref to   thread holding the lane (only that
_group_thread        its loop; what ends the group; its  thread clears them -- or the writer,
                     thread); cleared when the lane is   once that loop is closed or its
                     given back or handed to the writer  thread ended), and by anyone for a
                                                         message (``_hold_text``)
loop_groups          each thread, its own attribute (a   a ``threading.local``: each thread
                     loop's record, :mod:`._loop_group`) sees only its own
_held_since          lease grants and releases; a turn   ``_lock``; a turn handed on within a
                     handed on within a loop's tenure    loop's tenure sets it without (the
                                                         holder, on that loop's thread); read
                                                         without it only for a message (the
                                                         long-hold report reads it under the
                                                         lock: a stale value shifts it by a
                                                         turn)
_stopped             the writer thread, failing what     ``_lock``; ``_hand_turn`` reads it
                     was queued as it stops              without (set once: a stale False
                                                         hands the lane on one turn more, as
                                                         if that turn had come a moment
                                                         earlier)
_hold_reported       writer thread, lane givers          ``_lock``
_slice, _slice_end   whoever gives the lane to a thread  ``_lock``; the holder reads them
                     (``take``/``_enter`` on an idle     without it (nobody else writes them
                     lane, ``_assign_locked``)           while the lane is held)
_watching            the writer thread (sleeping until   ``_lock``
                     a slice ends); cleared as it wakes
_conn, _gate,        the lane holder                     the lane (one holder at a time)
_dirty,
_next_wal_check,
reads, _autockpt,
_wal, _sync_level,
_loop_commits
outbox               lane holders append; ``flush``      ``deque`` appends and pops are
                     pops (holders, ``close``)           documented thread-safe
_bell                writer acquires; callers release    a raw lock; released only under
                     it (ring) while it sleeps           ``_lock`` while ``_sleeping``
===================  ==================================  ===================================
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import weakref
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable
from time import monotonic

from .._config import Options
from .._errors import Closed, WriteTimeout
from . import _commit_gate
from ._authorizer import install
from ._batch import is_open
from ._connection import TxnGuard, main_file, open_connection, rollback, rollback_quietly
from ._counters import Counters
from ._group import Group
from ._jobs import (
    EXCLUSIVE,
    AsyncJob,
    AsyncLaneHold,
    BaseJob,
    LaneHold,
    Outbox,
    flush,
    running_loop,
)

__all__ = ("LOOP_COMMITS", "LaneState", "end_groups_here", "held_here")

logger = logging.getLogger("litegate")

# Where a COMMIT costs no fsync (WAL at synchronous NORMAL or OFF; an in-memory database) the
# lane is held in slices: a thread that got it may take it again, ahead of the queue, for this
# long. Handing it on at every transaction's end wakes another thread per transaction (a lock
# convoy: measured at half the throughput of a connection per thread, 8 threads); a slice pays
# that wake once per this many seconds, and bounds how long a waiter is overtaken.
_SLICE = 0.001
# Where a COMMIT costs no fsync, an async transaction alone on the lane commits on its loop,
# with SQLite's automatic checkpoint held off (it would fsync there; held until a COMMIT off
# the loop gives it back: ``commit_on_loop``); every this many such COMMITs in a row, one goes
# to the writer thread instead, and runs the checkpoint if due. A
# one-row transaction adds a few WAL pages: the WAL grows at most some hundreds of pages past
# ``wal_autocheckpoint`` (1000 by default) before its checkpoint.
LOOP_COMMITS = 100


# Each thread's lanes that its event loop took for a group of writes (:mod:`._loop_group`):
# a thread about to wait for any lane ends those groups first (they would wait for it).
_GROUPS_HERE = threading.local()


def held_here() -> weakref.WeakSet[LaneState]:
    """This thread's lanes taken for a loop group (some may be given back since)."""
    lanes: weakref.WeakSet[LaneState] | None = getattr(_GROUPS_HERE, "lanes", None)
    if lanes is None:
        lanes = _GROUPS_HERE.lanes = weakref.WeakSet()
    return lanes


def end_groups_here() -> str | None:
    """A thread about to wait for a lane (or for fork): end every group its loop holds a lane
    for. The reason it must not wait, if one cannot be ended (a statement of it is running on
    this thread: a function of that statement called the database)."""
    lanes = getattr(_GROUPS_HERE, "lanes", None)
    if not lanes:
        return None
    for lane in list(lanes):
        if not lane.end_group_of_this_thread():
            return (
                "from inside a write statement running on the event loop (a function of it "
                "called the database); it would wait for that statement to end (a deadlock)"
            )
    return None


class LaneState:
    """The lane's fields (see the table above) and what every layer of
    :class:`~._lane.WriteLane` uses: the writer connection, the queue, the errors it
    raises, and giving the lane to a holder and back."""

    def __init__(
        self,
        opts: Options,
        counters: Counters,
        on_large_wal: Callable[[int], None],
        on_broken: Callable[[str], None] | None = None,
    ) -> None:
        self.opts = opts
        self.counters = counters
        self.guard = TxnGuard()
        self._conn = self._open_writer()
        path = main_file(self._conn)
        self._wal_path = path + "-wal" if path else None
        self._on_large_wal = on_large_wal
        self._on_broken = on_broken
        self.broken: str | None = None  # why the lane stopped on its own (written once, lock)
        self._batch: list[BaseJob] = []  # the writer thread's current batch (the writer only)
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._inactive = threading.Condition(self._lock)
        self._queue: deque[BaseJob] = deque()
        self._closing = False
        self._paused = False  # fork(): nobody may start using the connection
        self._active = False  # someone is using the connection
        self.user: int | None = None  # the thread using it (for re-entrance checks)
        self.owner: int | None = None  # the thread holding a sync lease
        self._async_holder: AsyncLaneHold | None = None  # the async hold holding the lane
        self._handed = False  # the lane was handed to the writer thread (it takes over)
        self._undo = False  # the writer rolls back the last holder's part when it takes over
        self._ops: deque[AsyncJob] = deque()  # the async holder's statements for the writer
        self._group: Group | None = None  # the open shared write transaction (group commit)
        self._joined = False  # the holder runs inside the group's savepoint (JOIN_SAVEPOINT)
        self.costs: dict[str, int] = {}  # per write SQL text: most step budgets it took
        self.holder: weakref.ref[object] | None = None  # who took the sync lease (recover)
        self._stale = False  # that holder was collected without giving the lane back
        self._on_holder_gone = self._holder_gone  # (bound once: a transaction's cost)
        self._held_since = 0.0  # when the current lease (sync or async) was granted; 0: none
        # the loop whose thread holds the lane for a group of its one-statement writes, and
        # what ends that group at once (see _loop_group)
        self._group_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._group_end: Callable[[], bool] | None = None
        self._group_thread: threading.Thread | None = None  # the thread running that loop
        self.loop_groups = threading.local()  # each thread's record of its loop's group (its own)
        self._stopped = False  # the writer thread stopped: nothing queued now would be served
        self._hold_reported = False
        self._cheap = opts.memory or (  # a COMMIT costs no fsync (WAL: a rollback journal's
            self._sync_level <= 1 and self._wal  # COMMIT syncs at NORMAL too)
        )
        self._slice: int | None = None  # the thread whose slice of the lane runs (see _SLICE)
        self._slice_end = 0.0  # when that slice ends (monotonic)
        self._watching = False  # the writer sleeps until the slice ends, then serves the queue
        # The writer thread sleeps on a bell (a raw lock, released to ring) rather than a
        # Condition: under the GIL a Condition's Python-level wait/notify cost more than a
        # small write.
        self._bell = allocate_lock()
        self._bell.acquire()
        self._sleeping = False
        self.outbox: Outbox = deque()  # finished async jobs, delivered in batches
        self._then: Callable[[], None] | None = None  # run by the writer after it stopped
        self._poll = min(1.0, max(opts.hold_warn / 4, 0.01))
        self._idle = min(1.0, max(opts.checkpoint_idle, 0.01))  # the writer's wait, not dirty
        self._dirty = False
        self._next_wal_check = 0.0
        self._loop_commits = 0  # COMMITs run on a loop since one ran off it (LOOP_COMMITS)
        self.reads = 0  # reads run on the lane (readers=0); written by the lane holder
        self._thread = threading.Thread(
            target=self._run, name=f"litegate-writer:{opts.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        """The writer thread's loop (:meth:`._lane_writer.LaneWriter._run`)."""
        raise NotImplementedError

    def end_group_of_this_thread(self) -> bool:
        """(:meth:`._lane_loop.LaneLoop.end_group_of_this_thread`)"""
        raise NotImplementedError

    def _open_writer(self) -> sqlite3.Connection:
        """A writer connection with the lane's authorizer and commit gate installed."""
        conn = open_connection(self.opts, reader=False)
        # The lane never lets SQLite wait for a lock (begin_immediate retries, and a BEGIN on a
        # loop must not block it): whatever an on_connect hook set, no busy timeout.
        conn.execute("PRAGMA busy_timeout=0")
        self._wal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
        # (as the connection has it: on_connect may have set it; 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA)
        self._sync_level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        install(conn, self.guard)
        self._gate = _commit_gate.install(conn)  # (kept alive as long as the connection)
        self.guard.set_gate(self._gate)
        # its wal_autocheckpoint pages (0: off), held off by COMMITs on a loop
        self._autockpt = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        self.guard.held_pages = 0  # (a new connection has it on: nothing held off)
        return conn

    def _ready(self) -> sqlite3.Connection:
        """Lane holder, before a batch or a grant: the writer connection, fit for use. One a
        function closed is replaced; a transaction the lane did not open (left by an
        interrupted holder) is rolled back first, never built upon."""
        conn = self._conn
        if not is_open(conn):
            if self._group is not None:
                self._lose_group("its connection was closed")
            return self._reopen("a function closed the write lane's connection")
        if conn.in_transaction and self._group is None:
            logger.error(
                "litegate: the writer connection of %s was inside a transaction the lane did "
                "not open (an interrupted holder); rolled it back",
                self.opts.name,
            )
            rollback(conn, self.guard)
        return conn

    def replace_closed(self) -> None:
        """Lane holder (a lease being released): the writer connection was closed by a
        function it was lent to; open a new one for the next holder."""
        self._reopen("a transaction's function closed the write lane's connection")

    def _reopen(self, why: str) -> sqlite3.Connection:
        """Lane holder: replace the writer connection (the old one is closed or unusable)."""
        logger.error("litegate: %s on %s; opening a new one", why, self.opts.name)
        try:
            self._conn.close()
        except Exception:  # pragma: no cover - closing a broken connection
            pass
        self._conn = self._open_writer()
        return self._conn

    # ---- what others may read ---------------------------------------------------------
    @property
    def depth(self) -> int:
        """Transactions and writes waiting for the lane: queued, and the tasks of the async
        holder's loop waiting for a turn (read without the lock: a statistic, and a hint for
        whoever decides whether to wait for others to join its group)."""
        hold = self._async_holder
        return len(self._queue) + (len(hold.waiting) if hold is not None else 0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def commits_cheaply(self) -> bool:
        """Does a COMMIT cost no fsync (WAL at synchronous NORMAL or OFF; in memory)?"""
        return self._cheap

    @property
    def joined(self) -> bool:
        """Lane holder: does it run inside a group's savepoint (others wait for the COMMIT)?"""
        return self._joined

    @property
    def in_group(self) -> bool:
        """Lane holder: is a group open (a transaction to join or to commit)?"""
        return self._group is not None

    def closed_error(self, what: str) -> Closed:
        """The :class:`Closed` for ``what``, saying why when the lane stopped on its own."""
        why = self.broken
        if why is None:
            return Closed(what)
        return Closed(f"{what}: the write lane stopped ({why}); the database is closed")

    def timeout_error(self, what: str, waited: float | None) -> WriteTimeout:
        """The :class:`WriteTimeout` of a caller that waited ``waited`` seconds for the lane."""
        return WriteTimeout(
            f"{what} did not get the write lane within {waited or 0.0:.2f}s ({self.depth} job(s) "
            f"queued; {self._hold_text()}). Raise timeout=, or keep transactions short"
        )

    def _hold_text(self) -> str:
        since = self._held_since  # (read without the lock: a message only)
        if not since:
            return "no transaction holds it now"
        who = "an event loop's group of writes" if self._group_loop is not None else "a transaction"
        return f"{who} has held it for {monotonic() - since:.2f}s"

    # ---- queueing ----------------------------------------------------------------------
    def try_submit(self, job: BaseJob) -> bool:
        """Queue ``job`` if there is room; never blocks. False when the queue is full.

        :raises Closed: the lane is closing
        """
        with self._lock:
            if self._closing:
                raise self.closed_error("the database is closed; no new writes are accepted")
            if len(self._queue) >= self.opts.queue_size:
                return False
            self._queue.append(job)
            if len(self._queue) == 1 and not self._active:
                self._ring()  # (an active direct user combines it, or rings)
            return True

    def submit(self, job: BaseJob, deadline: float | None) -> None:
        """Queue ``job``; waits for space until ``deadline`` (monotonic) when the queue is full.

        :raises WriteTimeout: the queue stayed full until the deadline
        :raises Closed: the lane is closing
        """
        if self.try_submit(job):
            return
        end_groups_here()  # (about to wait: its loop's groups first, they would wait for it)
        cap = self.opts.queue_size
        with self._lock:
            start = monotonic()
            while len(self._queue) >= cap:
                if self._closing:
                    raise Closed("the database was closed while this write waited")
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    raise WriteTimeout(
                        f"the write queue stayed full ({cap} jobs waiting) for "
                        f"{monotonic() - start:.2f}s; the load outruns the writer or a "
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

    def _take_queued(self, limit: int) -> list[BaseJob]:
        """Lock held: pop up to ``limit`` queued jobs from the front, stopping at a queued
        exclusive job (a lease is never overtaken)."""
        queue = self._queue
        was_full = len(queue) >= self.opts.queue_size
        taken: list[BaseJob] = []
        while queue and len(taken) < limit and queue[0].kind != EXCLUSIVE:
            taken.append(queue.popleft())
        if was_full and taken:
            self._not_full.notify_all()
        return taken

    # ---- giving the lane to a holder and back ---------------------------------------------
    def _end_direct(self) -> None:
        """Give the lane back; the writer takes over whatever queued meanwhile. With a group
        still open (members wait for its COMMIT) the lane goes to the writer thread instead,
        which commits it (:meth:`_take_over`)."""
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        """Lock held, by the lane holder: give the lane back (see :meth:`_end_direct`)."""
        if self._group is not None:
            self._handed = True  # (first: once set, the writer takes over whatever interrupts)
        self.owner = None
        self.holder = None
        self._async_holder = None
        self._group_loop = self._group_end = self._group_thread = None
        self._held_since = 0.0
        self._hold_reported = False
        if self._group is not None:  # (stays active: the writer thread is the holder now)
            self.user = None
            self._ring()
            return
        self._active = False
        self.user = None  # (last: _abandon recognises the holder by it)
        if self._closing or (self._queue and not self._watching):
            self._ring()  # (the writer serves the queue; in a slice, once it has ended)
        if self._paused:
            self._inactive.notify_all()

    def _in_slice(self, ident: int) -> bool:
        """Lock held (or by the lane holder): may thread ``ident`` take the lane ahead of the
        queue? Only within its slice, and only where a COMMIT costs no fsync (elsewhere the
        lane goes to the next waiter at once, so that the group shares the COMMIT)."""
        return self._cheap and self._slice == ident and monotonic() < self._slice_end

    def _slice_left(self) -> float:
        """Lock held: seconds left of a thread's slice (0 or less: none runs)."""
        if not self._cheap or self._slice is None:
            return 0.0
        return self._slice_end - monotonic()

    def _start_slice(self, ident: int) -> None:
        """Lock held, giving the lane to thread ``ident``: a slice starts unless its own runs."""
        if self._slice != ident:
            self._slice = ident
            self._slice_end = monotonic() + _SLICE

    def _assign_locked(self, hold: BaseJob) -> None:
        """Lock held: the lane now belongs to ``hold`` (a queued lease, claimed)."""
        now = monotonic()
        if isinstance(hold, AsyncLaneHold):
            self.user = self.owner = self._slice = None
            self._async_holder = hold
        else:
            assert isinstance(hold, LaneHold)
            self.user = self.owner = self._slice = hold.ident
            self._slice_end = now + _SLICE
            self._async_holder = None
        self.holder = None
        self._joined = False
        self._held_since = now
        self._hold_reported = False

    def _announce(self, hold: BaseJob) -> None:
        """Tell ``hold``'s waiter it holds the lane now: on its own loop's thread, at once."""
        if isinstance(hold, AsyncLaneHold) and hold.loop is running_loop():
            hold.grant_here()
            return
        hold.finish()
        flush(self.outbox)

    def _ring(self) -> None:
        """Wake the writer thread if it sleeps (called with ``_lock`` held)."""
        if self._sleeping:
            try:
                self._bell.release()
            except RuntimeError:  # rung already
                pass

    def _holder_gone(self, ref: weakref.ref[object]) -> None:
        """Weakref callback (any thread, possibly inside the GC): the holder of the lane was
        collected. Only flags it (no lock: the GC may run inside this lane's own lock); the
        rest is done by the next caller from that thread or by the writer thread
        (:meth:`_recover_stale`)."""
        if self.holder is ref:
            self._stale = True

    # ---- the group, lost ------------------------------------------------------------------
    def _lose_group(self, why: str) -> None:
        """Lane holder: the shared transaction is lost: roll back what is left, fail every
        member."""
        group, self._group = self._group, None
        self._joined = False
        conn = self._conn
        if is_open(conn) and conn.in_transaction:
            rollback_quietly(conn, self.guard)
        if group is not None:
            group.lose(why, self.outbox)

    def lose_group(self, why: str) -> None:
        """Lane holder: SQLite rolled the shared transaction back (seen after a statement)."""
        if self._group is not None:
            self._lose_group(why)
