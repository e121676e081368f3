"""The per-thread read pool (``readers="per-thread"``): one reader per OS thread, opened on
the thread's first read and closed when the thread ends. The interface: :mod:`._pool_base`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from _thread import allocate_lock
from collections import deque
from time import monotonic
from typing import Any

from .._config import Options
from .._errors import Closed
from .._types import Bound, Params
from ._authorizer import reraise
from ._connection import open_connection
from ._pool_base import Borrowing, checkin, close_quietly

__all__ = ("PerThreadPool",)


class _Slot:
    """A thread's reader. Stored in a threading.local; when the thread ends, the local is
    cleared, the slot is collected and its connection closed (from that thread).

    ``depth`` and ``reads`` are written only by the slot's own thread. ``busy`` (a raw lock)
    is held by that thread while ``depth > 0``, and by ``fork()`` while it forks; if fork
    cannot get it (the reader stays in use past the quiesce deadline) the child refuses the
    engine instead.
    """

    __slots__ = ("__weakref__", "busy", "conn", "depth", "pool", "reads")

    def __init__(self, pool: PerThreadPool, conn: sqlite3.Connection) -> None:
        self.pool = pool
        self.conn = conn
        self.depth = 0
        self.reads = 0
        self.busy = allocate_lock()

    def __del__(self) -> None:
        self.pool._forget(self)


class PerThreadPool(Borrowing):
    """One reader per OS thread, opened on the thread's first read.

    Shared fields and their guards:

    ==================  ===================================================================
    field               guard
    ==================  ===================================================================
    _slots, _retired,   written under ``_lock`` (an RLock: a slot collected by the garbage
    _orphans, _closed   collector while its thread holds the lock re-enters it); ``_slots``
                        is a tuple of weak references replaced whole (copy on write), so
                        the statistics read it without the lock; ``_closed`` is read
                        without it and re-checked under it
    _opening            held while a thread opens its reader, and by ``fork()`` from its
                        quiesce to its resume: no connection is opened across a fork
                        (``fork()`` also takes ``_lock``, briefly, for the fork itself)
    _held               the forking thread (between quiesce and resume)
    a slot's fields     as :class:`_Slot` says
    ==================  ===================================================================

    In a forked child the dead threads' slots are collected before the engine hears of the
    fork (CPython clears their thread-locals first): their connections are kept, never closed
    there (a thread may have been inside SQLite at the fork), and handed to :meth:`abandon`.
    """

    mode = "per-thread"

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self._local = threading.local()
        self._lock = threading.RLock()
        self._opening = threading.Lock()
        self._slots: tuple[weakref.ref[_Slot], ...] = ()
        self._retired = 0
        self._orphans: list[sqlite3.Connection] = []  # a forked child's dead threads' readers
        self._closed = False
        self._pid = os.getpid()
        self._held: list[_Slot] = []  # slots whose busy lock fork() holds
        self.size = 0
        self.waits = 0
        self.timeouts = 0
        self.wait_times: deque[float] = deque(maxlen=1)

    def _live_slots(self) -> list[_Slot]:
        return [slot for slot in (ref() for ref in self._slots) if slot is not None]

    @property
    def in_use(self) -> int:
        return sum(1 for slot in self._live_slots() if slot.depth)

    @property
    def open_count(self) -> int:
        return len(self._slots)

    @property
    def waiting(self) -> int:
        return 0

    @property
    def reads(self) -> int:
        return self._retired + sum(slot.reads for slot in self._live_slots())

    def _slot(self) -> _Slot:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            with self._opening:  # (fork holds it: no connection is opened during a fork)
                if self._closed:
                    raise Closed("the database is closed")
                slot = _Slot(self, open_connection(self.opts, reader=True))
            with self._lock:
                if self._closed:
                    close_quietly(slot.conn)
                    raise Closed("the database is closed")
                self._slots = (*self._slots, weakref.ref(slot))
            self._local.slot = slot
        return slot

    def acquire(self, timeout: Bound) -> sqlite3.Connection:
        if self._closed:
            raise Closed("the database is closed")
        slot = self._slot()
        if slot.depth == 0:
            slot.busy.acquire()  # uncontended, except while a fork is under way
        slot.depth += 1
        return slot.conn

    def query(self, sql: str, params: Params, timeout: Bound, first: bool) -> Any:
        # The read hot path (benchmarks/hot_paths.py): this thread's open, unborrowed reader,
        # in this one frame; anything else goes the general way.
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.depth or self._closed:
            return super().query(sql, params, timeout, first)
        slot.busy.acquire()  # uncontended, except while a fork is under way
        slot.depth = 1
        conn = slot.conn
        try:
            cur = conn.execute(sql, params)  # (fetch() and release() inlined: as ReadPool.query)
            try:
                result = cur.fetchone() if first else cur.fetchall()
            finally:
                cur.close()
            slot.reads += 1
            return result
        except sqlite3.DatabaseError as exc:
            reraise(exc)
        finally:
            slot.depth = 0
            clean = not conn.in_transaction or checkin(conn)
            slot.busy.release()
            if not clean:
                del self._local.slot  # collected: its connection is closed

    def try_acquire(self) -> sqlite3.Connection | None:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or self._closed:
            return None
        if slot.depth == 0 and not slot.busy.acquire(False):
            return None  # a fork holds it: never wait here (the loop calls this)
        slot.depth += 1
        return slot.conn

    def release(self, conn: sqlite3.Connection, reads: int = 0) -> None:
        # A nested borrow in the same thread (a query inside a snapshot) shares the
        # connection: only the outermost release cleans it up.
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.conn is not conn:  # pragma: no cover - defensive
            checkin(conn)
            return
        slot.reads += reads
        slot.depth -= 1
        if slot.depth:
            return
        ok = checkin(conn)
        slot.busy.release()
        if not ok:
            del self._local.slot  # collected: its connection is closed

    def has_reader(self) -> bool:
        """Whether this thread has its reader (opened, not discarded)."""
        return getattr(self._local, "slot", None) is not None

    def open_for_adoption(self) -> sqlite3.Connection | None:
        """Any thread: open a reader that another thread will :meth:`adopt` (None: closed).
        Under ``_opening``, as every open: never across a fork."""
        with self._opening:
            if self._closed:
                return None
            return open_connection(self.opts, reader=True)

    def adopt(self, conn: sqlite3.Connection) -> None:
        """This thread's reader becomes ``conn``, opened by :meth:`open_for_adoption` on another
        thread (an event loop's thread must not wait for an open). Closed instead if this
        thread has a reader already or the pool is closed (kept unclosed in a forked child)."""
        slot = None if self.has_reader() else _Slot(self, conn)
        with self._lock:
            if slot is None or self._closed:
                if os.getpid() != self._pid:
                    self._orphans.append(conn)
                    return
                close_quietly(conn)
                return
            self._slots = (*self._slots, weakref.ref(slot))
        self._local.slot = slot

    def longest_holder(self) -> tuple[int, float] | None:
        return None

    def _forget(self, slot: _Slot) -> None:
        """A slot was collected (its thread ended): close its reader -- or, in a forked
        child, keep it unclosed for :meth:`abandon` (see the class docstring)."""
        with self._lock:
            kept = [ref for ref in self._slots if ref() is not None and ref() is not slot]
            if len(kept) == len(self._slots):
                return  # forgotten already (closed or abandoned)
            self._slots = tuple(kept)
            self._retired += slot.reads
            if os.getpid() != self._pid:
                self._orphans.append(slot.conn)
                return
        close_quietly(slot.conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            slots = self._live_slots()
            self._slots = ()
            self._retired += sum(slot.reads for slot in slots)
        for slot in slots:
            close_quietly(slot.conn)

    def quiesce(self, deadline: float) -> bool:
        self._opening.acquire()
        idle = True
        try:
            for slot in self._live_slots():
                if slot.busy.acquire(True, max(0.0, deadline - monotonic())):
                    self._held.append(slot)
                else:
                    idle = False
        except BaseException:  # interrupted: leave nothing held
            for slot in self._held:
                slot.busy.release()
            self._held.clear()
            self._opening.release()
            raise
        self._lock.acquire()  # across the fork itself: the child never inherits it taken
        return idle

    def resume(self) -> None:
        self._lock.release()
        for slot in self._held:
            slot.busy.release()
        self._held.clear()
        self._opening.release()

    def abandon(self) -> list[sqlite3.Connection]:
        with self._lock:
            conns = [slot.conn for slot in self._live_slots()] + self._orphans
            self._slots = ()
            self._orphans = []
            self._closed = True
            self._local = threading.local()
        return conns
