"""The read pool: read-only connections borrowed by the caller's own thread (no hop).

Two shapes behind one interface, :class:`ReaderPool`: a bounded pool (``readers=N``, opened
lazily, borrowed first-in-first-out) and one connection per OS thread
(``readers="per-thread"``). ``readers=0`` has no pool at all: the engine routes reads through
the write lane.

A borrowed connection has one user, its borrower, until it is released; the reads made on it
are counted when it is given back (``release(conn, reads)``), on the pool's record of that
connection, and :attr:`ReaderPool.reads` sums them.
"""

from __future__ import annotations

import logging
import os
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
from ._authorizer import reraise
from ._connection import ROLLBACK, open_connection

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

    def acquire(self, timeout: Bound) -> sqlite3.Connection:
        """Borrow a reader, waiting up to ``timeout`` seconds (``None``: no bound).

        :raises PoolTimeout: none became free in time
        :raises Closed: the pool is closed
        """

    def try_acquire(self) -> sqlite3.Connection | None:
        """An idle reader at once, or None (never blocks, never opens a connection)."""

    def release(self, conn: sqlite3.Connection, reads: int = 0) -> None:
        """Give a borrowed reader back (rolled back first if a transaction is open), adding
        ``reads`` to the reads made on it."""

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
    """Make a returned reader clean; False if it is broken and must be discarded: its
    ROLLBACK failed, or the function it was lent to closed it (``ProgrammingError``: its
    caller got :class:`~litegate.Misuse` from ``run_limited``). (Time limits clear their own
    progress handler.)"""
    try:
        if conn.in_transaction:
            conn.execute(ROLLBACK)
        return True
    except sqlite3.Error:
        return False


class _Borrowing:
    """:meth:`query` over a pool's ``acquire`` and ``release``: the general way, when the
    pool's one-frame fast path does not apply."""

    def acquire(self, timeout: Bound) -> sqlite3.Connection:
        raise NotImplementedError

    def release(self, conn: sqlite3.Connection, reads: int = 0) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: Params, timeout: Bound, first: bool) -> Any:
        conn = self.acquire(timeout)
        reads = 0
        try:
            result = fetch(conn, sql, params, first)
            reads = 1
            return result
        except sqlite3.DatabaseError as exc:
            reraise(exc)  # (a refused PRAGMA or ATTACH: Refused, saying which)
        finally:
            self.release(conn, reads)


class _Reader:
    """A pooled connection and what the pool knows of it. ``ident``, ``since`` and ``reads``
    are written only by its borrower of the moment (handed over through the queue)."""

    __slots__ = ("conn", "ident", "reads", "since")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.ident = 0  # the borrowing thread
        self.since = 0.0  # when it was borrowed
        self.reads = 0


class ReadPool(_Borrowing):
    """Up to ``size`` reader connections; ``acquire`` waits with a deadline.

    The free readers sit in a :class:`queue.SimpleQueue` (C code, its own lock), so a borrow or
    a return is one call with no Python-level lock or condition: under the GIL a
    ``threading.Condition`` turned every wait into several more thread switches (8 threads on
    4 readers ran 3x slower). Items in the queue: an idle :class:`_Reader`, ``None`` (a free
    slot whose connection was discarded: a borrower opens a new one) or the closed mark.

    Shared fields and their guards:

    ============================  ======================================================
    field                         guard
    ============================  ======================================================
    _free                         its own (``SimpleQueue`` is thread-safe)
    _unopened, _open, _waiting,   ``_lock``
    waits, timeouts, _stash
    _readers, _retired            written under ``_lock``; ``_readers`` is a tuple replaced
                                  whole (copy on write), so :attr:`reads` reads both
                                  without it (never blocked, e.g. by a fork's quiesce)
    _holders                      single dict operations by borrowers (``d[k] = v``,
                                  ``d.pop(k)``: documented atomic); read as a copy
    _closed                       written once by :meth:`close` / :meth:`abandon`;
                                  read without the lock and re-checked at release
    wait_times                    ``deque.append`` (thread-safe)
    a _Reader's fields            its borrower (see :class:`_Reader`)
    ============================  ======================================================

    Fork: :meth:`quiesce` holds ``_lock`` and takes every idle reader out of the queue; a
    borrow or return takes no lock, so a reader between the queue and ``_holders`` is in
    neither -- counting the stash against ``_open`` (counted under ``_lock`` before a
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
        self._readers: tuple[_Reader, ...] = ()
        self._retired = 0  # reads of readers closed since
        self._holders: dict[int, _Reader] = {}  # id(conn) -> its reader, while borrowed
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
        return self._retired + sum(reader.reads for reader in self._readers)

    def acquire(self, timeout: Bound) -> sqlite3.Connection:
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
        return self._lend(item)

    def _lend(self, reader: _Reader) -> sqlite3.Connection:
        reader.ident = get_ident()
        reader.since = monotonic()
        conn = reader.conn
        self._holders[id(conn)] = reader
        return conn

    def query(self, sql: str, params: Params, timeout: Bound, first: bool) -> Any:
        # The read hot path: an idle reader is borrowed, used and given back in this one
        # frame, with fetch() inlined; anything else -- no idle reader, a free slot, the
        # closed mark -- goes the general way. benchmarks/hot_paths.py: the frames saved
        # are ~1,000 of ~24,000 instructions per point read.
        try:
            reader = self._free.get_nowait()
        except queue.Empty:
            return super().query(sql, params, timeout, first)
        if type(reader) is not _Reader or self._closed:
            self._free.put(reader)
            return super().query(sql, params, timeout, first)
        reader.ident = get_ident()
        reader.since = monotonic()
        conn = reader.conn
        self._holders[id(conn)] = reader
        try:
            cur = conn.execute(sql, params)
            try:
                result = cur.fetchone() if first else cur.fetchall()
            finally:
                cur.close()
            reader.reads += 1
            return result
        except sqlite3.DatabaseError as exc:
            reraise(exc)  # (a refused PRAGMA or ATTACH: Refused, saying which)
        finally:
            # release() inlined for a clean reader of an open pool; else the general way.
            if conn.in_transaction or self._closed:
                self.release(conn)
            else:
                del self._holders[id(conn)]
                self._free.put(reader)
                if self._closed:  # close() ran meanwhile and may have missed it
                    self._drain()

    def try_acquire(self) -> sqlite3.Connection | None:
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
        return self._lend(item)

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
        """No idle reader: a slot never opened (``None``), or wait for a free one."""
        with self._lock:
            if self._unopened:
                self._unopened -= 1
                return None
        return self._wait(None if timeout is None else monotonic() + timeout)

    def _open_slot(self) -> _Reader:
        """Open the connection of a free slot; on failure the slot goes back. Counted in
        ``_open`` before it is opened, so that fork() sees it (see :meth:`quiesce`)."""
        with self._lock:
            self._open += 1
        try:
            reader = _Reader(open_connection(self.opts, reader=True))
        except BaseException:
            with self._lock:
                self._open -= 1
            self._free.put(None)
            raise
        with self._lock:
            self._readers = (*self._readers, reader)
        if self._closed:
            self._discard(reader)
            raise Closed("the database is closed")
        return reader

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
        held = [(r.ident, r.since) for r in list(self._holders.values())]
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

    def release(self, conn: sqlite3.Connection, reads: int = 0) -> None:
        reader = self._holders.pop(id(conn), None)
        if reader is None:  # pragma: no cover - not borrowed from here
            _close_quietly(conn)
            return
        reader.reads += reads
        try:
            if conn.in_transaction and not _checkin(conn):
                self._replace(reader)
                return
        except sqlite3.ProgrammingError:  # closed by the function it was lent to
            self._replace(reader)
            return
        if self._closed:
            self._discard(reader)
            return
        self._free.put(reader)
        if self._closed:  # close() ran meanwhile and may have missed it
            self._drain()

    def _replace(self, reader: _Reader) -> None:
        """Close a broken reader; its slot is free again (a borrower opens a new one)."""
        self._discard(reader)
        self._free.put(None)

    def _discard(self, reader: _Reader) -> None:
        with self._lock:
            if reader in self._readers:
                self._readers = tuple(r for r in self._readers if r is not reader)
                self._retired += reader.reads
                self._open -= 1
        _close_quietly(reader.conn)

    def _take_idle(self) -> list[_Reader]:
        """Empty the queue; returns the idle readers that were in it, and leaves the closed
        mark behind for waiters."""
        readers: list[_Reader] = []
        while True:
            try:
                item = self._free.get_nowait()
            except queue.Empty:
                break
            if item is not None and item is not _CLOSED:
                readers.append(item)
        self._free.put(_CLOSED)
        return readers

    def _drain(self) -> None:
        """Close every idle reader in the queue; waiters are woken with Closed."""
        for reader in self._take_idle():
            self._discard(reader)

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
            sleep(0.0002)  # (interrupted here: nothing is held)

    def resume(self) -> None:
        for item in self._stash:
            self._free.put(item)
        self._stash.clear()
        self._lock.release()

    def abandon(self) -> list[sqlite3.Connection]:
        self._closed = True
        return [reader.conn for reader in self._take_idle()]


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


class PerThreadPool(_Borrowing):
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
                    _close_quietly(slot.conn)
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
            clean = not conn.in_transaction or _checkin(conn)
            slot.busy.release()
            if not clean:
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
                _close_quietly(conn)
                return
            self._slots = (*self._slots, weakref.ref(slot))
        self._local.slot = slot

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
            _checkin(conn)
            return
        slot.reads += reads
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
        _close_quietly(slot.conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            slots = self._live_slots()
            self._slots = ()
            self._retired += sum(slot.reads for slot in slots)
        for slot in slots:
            _close_quietly(slot.conn)

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


def make_pool(opts: Options) -> ReaderPool | None:
    if opts.readers == "per-thread":
        return PerThreadPool(opts)
    if opts.readers == 0:
        return None
    return ReadPool(opts, int(opts.readers))
