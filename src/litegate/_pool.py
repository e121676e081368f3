"""The read pool: read-only connections borrowed by the caller's own thread (no hop).

Two shapes behind one interface: a bounded pool (``readers=N``, opened lazily, LIFO so a hot
connection stays hot) and one connection per OS thread (``readers="per-thread"``).
``readers=0`` has no pool at all: the engine routes reads through the write lane.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from threading import get_ident
from time import monotonic

from ._config import Options
from ._connection import ROLLBACK, open_connection
from ._errors import Closed, PoolTimeout
from ._stats import Counters

__all__ = ("PerThreadPool", "ReadPool", "make_pool", "thread_name")

logger = logging.getLogger("litegate")


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


class ReadPool:
    """Up to ``size`` reader connections; ``acquire`` waits with a deadline."""

    mode = "pool"

    def __init__(self, opts: Options, size: int, counters: Counters) -> None:
        self.opts = opts
        self.size = size
        self.counters = counters
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle: list[sqlite3.Connection] = []
        self._holders: dict[int, tuple[int, float]] = {}  # id(conn) -> (thread ident, since)
        self._open = 0
        self._waiting = 0
        self._closed = False
        self.waits = 0
        self.timeouts = 0
        self.wait_times: list[float] = []

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
        with self._lock:
            if self._closed:
                raise Closed("the database is closed")
            if self._idle:
                idle = self._idle.pop()
                self._holders[id(idle)] = (get_ident(), monotonic())
                return idle
            if self._open >= self.size:
                waited = self._wait(deadline)
                if waited is not None:
                    return waited
            self._open += 1  # woken because a slot was freed: open a new one
        try:
            new = open_connection(self.opts, reader=True)
        except BaseException:
            with self._lock:
                self._open -= 1
                self._cond.notify()
            raise
        with self._lock:
            if self._closed:
                self._open -= 1
                _close_quietly(new)
                raise Closed("the database is closed")
            self._holders[id(new)] = (get_ident(), monotonic())
        return new

    def try_acquire(self) -> sqlite3.Connection | None:
        """An idle reader at once, or None (never blocks; never opens a connection)."""
        with self._lock:
            if self._closed or not self._idle:
                return None
            conn = self._idle.pop()
            self._holders[id(conn)] = (get_ident(), monotonic())
            return conn

    def _wait(self, deadline: float | None) -> sqlite3.Connection | None:
        """Called with the lock held. Returns an idle connection, or None if a slot opened."""
        start = time.monotonic()
        self.waits += 1
        self._waiting += 1
        conn: sqlite3.Connection | None = None
        try:
            while True:
                if self._closed:
                    raise Closed("the database was closed while waiting for a reader")
                if self._idle:
                    conn = self._idle.pop()
                    break
                if self._open < self.size:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.timeouts += 1
                    raise PoolTimeout(self._timeout_message(time.monotonic() - start))
                self._cond.wait(1.0 if remaining is None else min(remaining, 1.0))
        finally:
            self._waiting -= 1
        waited = time.monotonic() - start
        self.wait_times.append(waited)
        if len(self.wait_times) > 4096:
            del self.wait_times[:2048]
        if conn is not None:
            self._holders[id(conn)] = (get_ident(), monotonic())
        return conn

    def _timeout_message(self, waited: float) -> str:
        now = time.monotonic()
        if self._holders:
            ident, since = min(self._holders.values(), key=lambda h: h[1])
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
        ok = _checkin(conn)
        with self._lock:
            self._holders.pop(id(conn), None)
            if self._closed or not ok:
                self._open -= 1
                _close_quietly(conn)
            else:
                self._idle.append(conn)
            if self._waiting:
                self._cond.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            _close_quietly(conn)

    def abandon(self) -> list[sqlite3.Connection]:
        """After fork: forget every connection without closing it; returns them."""
        conns, self._idle = self._idle, []
        self._closed = True
        return conns


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
