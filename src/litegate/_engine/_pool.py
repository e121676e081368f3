"""The read pool: read-only connections borrowed by the caller's own thread (no hop).

Two shapes behind one interface, :class:`ReaderPool`: a bounded pool (``readers=N``, opened
lazily, borrowed first-in-first-out) and one connection per OS thread
(``readers="per-thread"``). ``readers=0`` has no pool at all: the engine routes reads through
the write lane.

A borrowed connection has one user, its borrower, until it is released; each connection counts
the reads made on it (:class:`~._connection.EngineConnection`), and :attr:`ReaderPool.reads`
sums them.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import weakref
from _thread import allocate_lock
from collections import deque
from threading import get_ident
from time import monotonic, sleep
from typing import Any, Protocol

from .._config import Options
from .._errors import Closed, PoolTimeout
from .._statements import fetch
from .._types import Bound, Params
from ._connection import ROLLBACK, EngineConnection, open_connection

__all__ = ("PerThreadPool", "ReadPool", "ReaderPool", "make_pool", "thread_name")

logger = logging.getLogger("litegate")

_CLOSED = object()  # put in a closed pool's queue: wakes its waiters with Closed
_WINDOW = 4096


class ReaderPool(Protocol):
    """What the engine needs of a read pool (both shapes implement it)."""

    mode: str
    size: int
    waits: int
    timeouts: int
    wait_times: deque[float]

    @property
    def open_count(self) -> int: ...
    @property
    def in_use(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def reads(self) -> int: ...

    def acquire(self, timeout: Bound) -> EngineConnection:
        """Borrow a reader, waiting up to ``timeout`` seconds (``None``: no bound).

        :raises PoolTimeout: none became free in time
        :raises Closed: the pool is closed
        """

    def try_acquire(self) -> EngineConnection | None:
        """An idle reader at once, or None (never blocks, never opens a connection)."""

    def release(self, conn: EngineConnection) -> None:
        """Give a borrowed reader back (rolled back first if a transaction is open)."""

    def query(self, sql: str, params: Params, timeout: Bound, first: bool) -> Any:
        """Borrow, run one query (its rows, or ``first``: its first row or None), give back."""

    def longest_holder(self) -> tuple[int, float] | None:
        """(thread ident, monotonic time since) of the reader held longest, or None."""

    def close(self) -> None: ...

    def quiesce(self, deadline: float) -> bool:
        """Before fork: stop new borrows until :meth:`resume`; True if no reader is in use
        (waiting until ``deadline`` for that)."""

    def resume(self) -> None: ...

    def abandon(self) -> list[sqlite3.Connection]:
        """After fork, in the child: forget every connection without closing it."""


def thread_name(ident: int) -> str:
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    return f"thread {ident}"


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except Exception:  # close errors are logged, never raised
        logger.exception("litegate: closing a reader failed")


def _checkin(conn: sqlite3.Connection) -> bool:
    """Make a returned reader clean; False if it is broken and must be discarded.
    (Time limits clear their own progress handler.)"""
    if not conn.in_transaction:
        return True
    try:
        conn.execute(ROLLBACK)
        return True
    except sqlite3.Error:
        return False


class _Borrowing:
    """:meth:`query` over a pool's ``acquire`` and ``release``."""

    def acquire(self, timeout: Bound) -> EngineConnection:
        raise NotImplementedError

    def release(self, conn: EngineConnection) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: Params, timeout: Bound, first: bool) -> Any:
        conn = self.acquire(timeout)
        try:
            result = fetch(conn, sql, params, first)
            conn.reads += 1
            return result
        finally:
            self.release(conn)


class ReadPool(_Borrowing):
    """Up to ``size`` reader connections; ``acquire`` waits with a deadline.

    The free connections sit in a :class:`queue.SimpleQueue` (C code, its own lock), so a
    borrow or a return is one call with no Python-level lock or condition: under the GIL a
    ``threading.Condition`` turned every wait into several more thread switches (8 threads on
    4 readers ran 3x slower). Items in the queue: an idle connection, ``None`` (a free slot
    whose connection was discarded: a borrower opens a new one) or the closed mark.

    Shared fields and their guards:

    ============================  ======================================================
    field                         guard
    ============================  ======================================================
    _free                         its own (``SimpleQueue`` is thread-safe)
    _unopened, _open, _conns,     ``_lock``
    _retired, _waiting, waits,
    timeouts, _stash
    _holders                      single dict operations by borrowers (``d[k] = v``,
                                  ``d.pop(k)``: documented atomic); read as a copy
    _closed                       written once by :meth:`close` / :meth:`abandon`;
                                  read without the lock and re-checked at release
    wait_times                    ``deque.append`` (thread-safe)
    ============================  ======================================================

    Fork: :meth:`quiesce` holds ``_lock`` and takes every idle connection out of the queue;
    a borrow or return takes no lock, so a connection between the queue and ``_holders`` is
    in neither -- counting the stash against ``_open`` (counted under ``_lock`` before a
    connection is opened) sees it too.
    """

    mode = "pool"

    def __init__(self, opts: Options, size: int) -> None:
        self.opts = opts
        self.size = size
        self._lock = threading.Lock()
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._unopened = size
        self._open = 0
        self._conns: set[EngineConnection] = set()
        self._retired = 0  # reads of connections closed since
        self._holders: dict[int, tuple[int, float]] = {}  # id(conn) -> (thread ident, since)
        self._waiting = 0
        self._closed = False
        self._stash: list[object] = []  # what fork() took out of the queue meanwhile
        self.waits = 0
        self.timeouts = 0
        self.wait_times: deque[float] = deque(maxlen=_WINDOW)

    @property
    def in_use(self) -> int:
        return len(self._holders)

    @property
    def open_count(self) -> int:
        return self._open

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def reads(self) -> int:
        with self._lock:
            return self._retired + sum(conn.reads for conn in self._conns)

    def acquire(self, timeout: Bound) -> EngineConnection:
        if self._closed:
            raise Closed("the database is closed")
        try:
            item = self._free.get_nowait()
        except queue.Empty:
            item = self._slot_or_wait(timeout)
        if item is None:
            item = self._open_slot()
        elif item is _CLOSED:
            self._free.put(item)  # for the other waiters
            raise Closed("the database is closed")
        self._holders[id(item)] = (get_ident(), monotonic())
        conn: EngineConnection = item
        return conn

    def try_acquire(self) -> EngineConnection | None:
        if self._closed:
            return None
        try:
            item = self._free.get_nowait()
        except queue.Empty:
            return None
        if item is None:  # a free slot: an idle reader may still be queued behind it
            item = self._past_free_slots()
            if item is None:
                return None
        if item is _CLOSED:
            self._free.put(item)
            return None
        self._holders[id(item)] = (get_ident(), monotonic())
        conn: EngineConnection = item
        return conn

    def _past_free_slots(self) -> Any:
        """After taking a free slot: the next item that is not one (or None), with every free
        slot taken put back."""
        slots = 1
        item = None
        for _ in range(self.size):
            try:
                item = self._free.get_nowait()
            except queue.Empty:
                item = None
                break
            if item is not None:
                break
            slots += 1
        for _ in range(slots):
            self._free.put(None)
        return item

    def _slot_or_wait(self, timeout: Bound) -> Any:
        """No idle connection: a slot never opened (``None``), or wait for a free one."""
        with self._lock:
            if self._unopened:
                self._unopened -= 1
                return None
        return self._wait(None if timeout is None else monotonic() + timeout)

    def _open_slot(self) -> EngineConnection:
        """Open the connection of a free slot; on failure the slot goes back. Counted in
        ``_open`` before it is opened, so that fork() sees it (see :meth:`quiesce`)."""
        with self._lock:
            self._open += 1
        try:
            conn = open_connection(self.opts, reader=True)
        except BaseException:
            with self._lock:
                self._open -= 1
            self._free.put(None)
            raise
        with self._lock:
            self._conns.add(conn)
        if self._closed:
            self._discard(conn)
            raise Closed("the database is closed")
        return conn

    def _wait(self, deadline: float | None) -> Any:
        """Block for a free slot until ``deadline``, in slices of at most a second."""
        start = monotonic()
        with self._lock:
            self.waits += 1
            self._waiting += 1
        try:
            while True:
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    with self._lock:
                        self.timeouts += 1
                    raise PoolTimeout(self._timeout_message(monotonic() - start))
                try:
                    item = self._free.get(timeout=1.0 if remaining is None else min(remaining, 1.0))
                except queue.Empty:
                    if self._closed:
                        raise Closed("the database was closed while waiting for a reader") from None
                    continue
                if item is _CLOSED:
                    self._free.put(item)  # for the other waiters
                    raise Closed("the database was closed while waiting for a reader")
                self.wait_times.append(monotonic() - start)
                return item
        finally:
            with self._lock:
                self._waiting -= 1

    def longest_holder(self) -> tuple[int, float] | None:
        held = list(self._holders.values())
        return min(held, key=lambda h: h[1]) if held else None

    def _timeout_message(self, waited: float) -> str:
        longest = self.longest_holder()
        if longest is not None:
            ident, since = longest
            oldest = (
                f"the longest holder ({thread_name(ident)}) has held its reader for "
                f"{monotonic() - since:.2f}s"
            )
        else:
            oldest = "no reader is held (they are being opened)"
        return (
            f"no reader became free within {waited:.2f}s: pool size {self.size}, all in use, "
            f"{self._waiting} caller(s) waiting; {oldest}. Raise readers= or timeout=, or "
            "finish iterations/snapshots sooner"
        )

    def release(self, conn: EngineConnection) -> None:
        ok = not conn.in_transaction or _checkin(conn)
        self._holders.pop(id(conn), None)
        if not ok:
            self._discard(conn)
            self._free.put(None)  # the slot is free again; a borrower opens a new one
            return
        if self._closed:
            self._discard(conn)
            return
        self._free.put(conn)
        if self._closed:  # close() ran meanwhile and may have missed it
            self._drain()

    def _discard(self, conn: EngineConnection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.discard(conn)
                self._retired += conn.reads
                self._open -= 1
        _close_quietly(conn)

    def _take_idle(self) -> list[EngineConnection]:
        """Empty the queue; returns the idle connections that were in it, and leaves the
        closed mark behind for waiters."""
        conns: list[EngineConnection] = []
        while True:
            try:
                item = self._free.get_nowait()
            except queue.Empty:
                break
            if item is not None and item is not _CLOSED:
                conns.append(item)
        self._free.put(_CLOSED)
        return conns

    def _drain(self) -> None:
        """Close every idle connection in the queue; waiters are woken with Closed."""
        for conn in self._take_idle():
            self._discard(conn)

    def close(self) -> None:
        self._closed = True
        self._drain()

    def quiesce(self, deadline: float) -> bool:
        while True:
            self._lock.acquire()
            while True:
                try:
                    self._stash.append(self._free.get_nowait())
                except queue.Empty:
                    break
            stashed = sum(1 for item in self._stash if item is not None and item is not _CLOSED)
            if stashed == self._open or monotonic() >= deadline:
                return stashed == self._open
            self.resume()
            sleep(0.0002)

    def resume(self) -> None:
        for item in self._stash:
            self._free.put(item)
        self._stash.clear()
        self._lock.release()

    def abandon(self) -> list[sqlite3.Connection]:
        self._closed = True
        return list(self._take_idle())


class _Slot:
    """A thread's reader. Stored in a threading.local; when the thread ends, the local is
    cleared, the slot is collected and its connection closed (from that thread).

    ``depth`` is written only by the slot's own thread. ``busy`` (a raw lock) is held by that
    thread while ``depth > 0``, and by fork while it forks: a borrow never overlaps a fork.
    """

    __slots__ = ("__weakref__", "busy", "conn", "depth", "pool")

    def __init__(self, pool: PerThreadPool, conn: EngineConnection) -> None:
        self.pool = pool
        self.conn = conn
        self.depth = 0
        self.busy = allocate_lock()

    def __del__(self) -> None:
        self.pool._forget(self)


class PerThreadPool(_Borrowing):
    """One reader per OS thread, opened on the thread's first read.

    Shared fields and their guards: ``_slots``, ``_retired``, ``_closed`` (set) and
    ``_held`` under ``_lock`` (an RLock: a slot collected while its thread holds the lock
    re-enters it); ``_closed`` is read without the lock and re-checked under it; a slot's
    fields as :class:`_Slot` says.
    """

    mode = "per-thread"

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self._local = threading.local()
        self._lock = threading.RLock()
        self._slots: dict[int, weakref.ref[_Slot]] = {}
        self._retired = 0
        self._closed = False
        self._held: list[_Slot] = []  # slots whose busy lock fork() holds
        self.size = 0
        self.waits = 0
        self.timeouts = 0
        self.wait_times: deque[float] = deque(maxlen=1)

    def _live_slots(self) -> list[_Slot]:
        with self._lock:
            refs = list(self._slots.values())
        return [slot for slot in (ref() for ref in refs) if slot is not None]

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
        with self._lock:
            retired = self._retired
        return retired + sum(slot.conn.reads for slot in self._live_slots())

    def _slot(self) -> _Slot:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            with self._lock:  # (fork holds it: no connection is opened during a fork)
                if self._closed:
                    raise Closed("the database is closed")
                slot = _Slot(self, open_connection(self.opts, reader=True))
                self._slots[id(slot)] = weakref.ref(slot)
            self._local.slot = slot
        return slot

    def acquire(self, timeout: Bound) -> EngineConnection:
        if self._closed:
            raise Closed("the database is closed")
        slot = self._slot()
        if slot.depth == 0:
            slot.busy.acquire()  # uncontended, except while a fork is under way
        slot.depth += 1
        return slot.conn

    def try_acquire(self) -> EngineConnection | None:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or self._closed:
            return None
        return self.acquire(None)

    def release(self, conn: EngineConnection) -> None:
        # A nested borrow in the same thread (a query inside a snapshot) shares the
        # connection: only the outermost release cleans it up.
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.conn is not conn:  # pragma: no cover - defensive
            _checkin(conn)
            return
        slot.depth -= 1
        if slot.depth:
            return
        ok = _checkin(conn)
        slot.busy.release()
        if not ok:
            del self._local.slot  # collected: its connection is closed

    def longest_holder(self) -> tuple[int, float] | None:
        return None

    def _forget(self, slot: _Slot) -> None:
        with self._lock:
            if self._slots.pop(id(slot), None) is not None:
                self._retired += slot.conn.reads
                _close_quietly(slot.conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            slots = [slot for slot in (ref() for ref in self._slots.values()) if slot is not None]
            self._slots = {}
            self._retired += sum(slot.conn.reads for slot in slots)
        for slot in slots:
            _close_quietly(slot.conn)

    def quiesce(self, deadline: float) -> bool:
        self._lock.acquire()
        idle = True
        for slot in self._live_slots():
            if slot.busy.acquire(True, max(0.0, deadline - monotonic())):
                self._held.append(slot)
            else:
                idle = False
        return idle

    def resume(self) -> None:
        for slot in self._held:
            slot.busy.release()
        self._held.clear()
        self._lock.release()

    def abandon(self) -> list[sqlite3.Connection]:
        with self._lock:
            conns: list[sqlite3.Connection] = [slot.conn for slot in self._live_slots()]
            self._slots = {}
            self._closed = True
            self._local = threading.local()
        return conns


def make_pool(opts: Options) -> ReaderPool | None:
    if opts.readers == "per-thread":
        return PerThreadPool(opts)
    if opts.readers == 0:
        return None
    return ReadPool(opts, int(opts.readers))
