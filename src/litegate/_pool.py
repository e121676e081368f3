"""The read pool: read-only connections borrowed by the caller's own thread (no hop).

Two shapes behind one interface: a bounded pool (``readers=N``, opened lazily, borrowed
first-in-first-out) and one connection per OS thread (``readers="per-thread"``).
``readers=0`` has no pool at all: the engine routes reads through the write lane.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import weakref
from collections import deque
from threading import get_ident
from time import monotonic
from typing import Any

from ._config import Options
from ._connection import ROLLBACK, open_connection
from ._errors import Closed, PoolTimeout
from ._stats import Counters

__all__ = ("PerThreadPool", "ReadPool", "make_pool", "thread_name")

logger = logging.getLogger("litegate")

_CLOSED = object()  # put in a closed pool's queue: wakes its waiters with Closed


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


def _fetch(conn: sqlite3.Connection, sql: str, params: Any, first: bool) -> Any:
    cur = conn.execute(sql, params)
    try:
        return cur.fetchone() if first else cur.fetchall()
    finally:
        cur.close()


def _borrowed_query(
    pool: ReadPool | PerThreadPool, sql: str, params: Any, timeout: float | None, first: bool
) -> Any:
    """A query on a reader borrowed the general way (may wait, may open one)."""
    conn = pool.acquire(None if timeout is None else monotonic() + timeout)
    try:
        return _fetch(conn, sql, params, first)
    finally:
        pool.release(conn)


class ReadPool:
    """Up to ``size`` reader connections; ``acquire`` waits with a deadline.

    The free connections sit in a :class:`queue.SimpleQueue` (C code, its own lock), so a
    borrow or a return is one call with no Python-level lock or condition: under the GIL a
    ``threading.Condition`` turned every wait into several more thread switches (8 threads on
    4 readers ran 3x slower). Slots never opened are counted in ``_unopened`` and opened
    only when no idle connection is there (lazy); a slot freed by a discarded connection is
    a ``None`` in the queue. ``_lock`` guards only the slow paths (waiting, opening, closing).
    """

    mode = "pool"

    def __init__(self, opts: Options, size: int, counters: Counters) -> None:
        self.opts = opts
        self.size = size
        self.counters = counters
        self._lock = threading.Lock()
        # Connections, None (a free slot) or _CLOSED.
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._unopened = size
        self._holders: dict[int, tuple[int, float]] = {}  # id(conn) -> (thread ident, since)
        self._open = 0
        self._waiting = 0
        self._closed = False
        self._stash: list[object] = []  # what fork() took out of the queue meanwhile
        self.waits = 0
        self.timeouts = 0
        self.wait_times: deque[float] = deque(maxlen=4096)

    @property
    def in_use(self) -> int:
        return len(self._holders)

    @property
    def open_count(self) -> int:
        return self._open

    @property
    def waiting(self) -> int:
        return self._waiting

    def acquire(self, deadline: float | None) -> sqlite3.Connection:
        """Borrow a reader; waits until ``deadline`` (monotonic) if all are in use.

        :raises PoolTimeout: none became free in time (the message names size, waiters and the
            longest holder)
        :raises Closed: the pool is closed
        """
        if self._closed:
            raise Closed("the database is closed")
        try:
            item = self._free.get_nowait()
        except queue.Empty:
            item = self._slot_or_wait(deadline)
        if item is None:
            item = self._open_slot()
        elif item is _CLOSED:
            self._free.put(item)  # for the other waiters
            raise Closed("the database is closed")
        self._holders[id(item)] = (get_ident(), monotonic())
        conn: sqlite3.Connection = item
        return conn

    def query(self, sql: str, params: Any, timeout: float | None, first: bool) -> Any:
        """Borrow, run one query (its rows, or ``first``: its first row or None), return:
        the read hot path, in one frame when a reader is idle; else as :meth:`acquire`."""
        if not self._closed:
            try:
                item = self._free.get_nowait()
            except queue.Empty:
                pass
            else:
                if item is None or item is _CLOSED:  # a freed slot or the closed mark
                    self._free.put(item)  # (back, for the general way below)
                else:
                    conn: sqlite3.Connection = item
                    self._holders[id(conn)] = (get_ident(), monotonic())
                    try:
                        cur = conn.execute(sql, params)
                        try:
                            return cur.fetchone() if first else cur.fetchall()
                        finally:
                            cur.close()
                    finally:
                        self.release(conn)
        return _borrowed_query(self, sql, params, timeout, first)

    def try_acquire(self) -> sqlite3.Connection | None:
        """An idle reader at once, or None (never blocks; never opens a connection)."""
        if self._closed:
            return None
        try:
            item = self._free.get_nowait()
        except queue.Empty:
            return None
        if item is None:  # a freed slot: an idle reader may still be queued behind it
            slots = 1
            for _ in range(self.size):
                try:
                    item = self._free.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    break
                slots += 1
            for _ in range(slots):
                self._free.put(None)
            if item is None:
                return None
        if item is _CLOSED:
            self._free.put(item)
            return None
        self._holders[id(item)] = (get_ident(), monotonic())
        conn: sqlite3.Connection = item
        return conn

    def _slot_or_wait(self, deadline: float | None) -> Any:
        """No idle connection: a slot never opened (``None``), or wait for a free one."""
        with self._lock:
            if self._unopened:
                self._unopened -= 1
                return None
        return self._wait(deadline)

    def _open_slot(self) -> sqlite3.Connection:
        """Open the connection of a free slot; on failure the slot goes back. Counted in
        ``_open`` before it is opened, so that fork() sees it (see :meth:`quiet`)."""
        with self._lock:
            self._open += 1
        try:
            conn = open_connection(self.opts, reader=True)
        except BaseException:
            with self._lock:
                self._open -= 1
            self._free.put(None)
            raise
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

    def _timeout_message(self, waited: float) -> str:
        now = monotonic()
        holders = list(self._holders.values())
        if holders:
            ident, since = min(holders, key=lambda h: h[1])
            oldest = (
                f"the longest holder ({thread_name(ident)}) has held its reader for "
                f"{now - since:.2f}s"
            )
        else:
            oldest = "no reader is held (they are being opened)"
        return (
            f"no reader became free within {waited:.2f}s: pool size {self.size}, all in use, "
            f"{self._waiting} caller(s) waiting; {oldest}. Raise readers= or timeout=, or "
            "finish iterations/snapshots sooner"
        )

    def release(self, conn: sqlite3.Connection) -> None:
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

    def _discard(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._open -= 1
        _close_quietly(conn)

    def _take_idle(self) -> list[sqlite3.Connection]:
        """Empty the queue; returns the idle connections that were in it, and leaves the
        closed mark behind for waiters."""
        conns: list[sqlite3.Connection] = []
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

    def quiet(self) -> bool:
        """After :meth:`stash`: is every opened connection in the stash? Borrows and returns
        do not take ``_lock``, so a connection between the queue and ``_holders`` (just taken,
        or being returned) is in neither; counting the stash against ``_open`` (which counts a
        connection before it is opened, under ``_lock``) sees it too."""
        stashed = sum(1 for item in self._stash if item is not None and item is not _CLOSED)
        return stashed == self._open

    def stash(self) -> None:
        """Before fork, ``_lock`` held: take every free connection out of the queue, so that
        nobody borrows one until :meth:`unstash`."""
        while True:
            try:
                self._stash.append(self._free.get_nowait())
            except queue.Empty:
                return

    def unstash(self) -> None:
        for item in self._stash:
            self._free.put(item)
        self._stash.clear()

    def abandon(self) -> list[sqlite3.Connection]:
        """After fork: forget every connection without closing it; returns them."""
        self._closed = True
        return self._take_idle()


class _Slot:
    """A thread's reader. Stored in a threading.local; when the thread ends, the local is
    cleared, the slot is collected and its connection closed (from that thread)."""

    __slots__ = ("__weakref__", "conn", "depth", "pool")

    def __init__(self, pool: PerThreadPool, conn: sqlite3.Connection) -> None:
        self.pool = pool
        self.conn = conn
        self.depth = 0

    def __del__(self) -> None:
        self.pool._forget(self)


class PerThreadPool:
    """One reader per OS thread, opened on the thread's first read."""

    mode = "per-thread"

    def __init__(self, opts: Options, counters: Counters) -> None:
        self.opts = opts
        self.counters = counters
        self._local = threading.local()
        self._lock = threading.Lock()
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        self._conns: set[sqlite3.Connection] = set()
        self._in_use = 0
        self._closed = False
        self.size = 0
        self.waits = 0
        self.timeouts = 0
        self.wait_times: list[float] = []

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def open_count(self) -> int:
        return len(self._conns)

    @property
    def waiting(self) -> int:
        return 0

    def acquire(self, deadline: float | None) -> sqlite3.Connection:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if self._closed:
            raise Closed("the database is closed")
        if slot is None:
            conn = open_connection(self.opts, reader=True)
            slot = _Slot(self, conn)
            with self._lock:
                if self._closed:
                    _close_quietly(conn)
                    raise Closed("the database is closed")
                self._slots.add(slot)
                self._conns.add(conn)
            self._local.slot = slot
        if slot.depth == 0:
            self._in_use += 1
        slot.depth += 1
        return slot.conn

    def query(self, sql: str, params: Any, timeout: float | None, first: bool) -> Any:
        """This thread's reader: one query, in one frame (see :meth:`ReadPool.query`)."""
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.depth or self._closed:
            return _borrowed_query(self, sql, params, timeout, first)
        slot.depth = 1
        self._in_use += 1
        conn = slot.conn
        try:
            cur = conn.execute(sql, params)
            try:
                return cur.fetchone() if first else cur.fetchall()
            finally:
                cur.close()
        finally:
            slot.depth = 0
            self._in_use -= 1
            if conn.in_transaction and not _checkin(conn):
                del self._local.slot

    def try_acquire(self) -> sqlite3.Connection | None:
        """This thread's reader if it is already open, else None (never blocks)."""
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or self._closed:
            return None
        if slot.depth == 0:
            self._in_use += 1
        slot.depth += 1
        return slot.conn

    def release(self, conn: sqlite3.Connection) -> None:
        # A nested borrow in the same thread (a query inside a snapshot) shares the
        # connection: only the outermost release cleans it up.
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.conn is not conn:  # pragma: no cover - defensive
            _checkin(conn)
            return
        slot.depth -= 1
        if slot.depth:
            return
        self._in_use -= 1
        if not _checkin(conn):
            del self._local.slot

    def _forget(self, slot: _Slot) -> None:
        with self._lock:
            if slot.conn in self._conns:
                self._conns.discard(slot.conn)
                _close_quietly(slot.conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, set()
        for conn in conns:
            _close_quietly(conn)

    def quiet(self) -> bool:
        """No connection in use (before fork, ``_lock`` held)."""
        return self._in_use == 0

    def stash(self) -> None:
        """Before fork (``_lock`` held): nothing to take out; :meth:`quiet` tells."""

    def unstash(self) -> None:
        pass

    def abandon(self) -> list[sqlite3.Connection]:
        conns = list(self._conns)
        self._conns = set()
        self._closed = True
        self._local = threading.local()
        return conns


def make_pool(opts: Options, counters: Counters) -> ReadPool | PerThreadPool | None:
    if opts.readers == "per-thread":
        return PerThreadPool(opts, counters)
    if opts.readers == 0:
        return None
    return ReadPool(opts, int(opts.readers), counters)
