"""The read pool: read-only connections borrowed by the caller's own thread (no hop).

Two shapes behind one interface, :class:`ReaderPool` (:mod:`._pool_base`): a bounded pool
(``readers=N``, opened lazily, borrowed first-in-first-out: this module) and one connection
per OS thread (``readers="per-thread"``: :mod:`._pool_per_thread`). ``readers=0`` has no pool
at all: the engine routes reads through the write lane.

A borrowed connection has one user, its borrower, until it is released; the reads made on it
are counted when it is given back (``release(conn, reads)``), on the pool's record of that
connection, and :attr:`ReaderPool.reads` sums them.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from _thread import start_new_thread
from collections import deque
from concurrent.futures import Future
from threading import get_ident
from time import monotonic, sleep
from typing import Any, TypeVar, cast

from .._config import Options
from .._errors import Closed, PoolTimeout
from .._types import Args, Bound, Fn, Params
from ._authorizer import reraise
from ._connection import closed_by_function, open_connection
from ._inline import MISS, PROGRESS_STEPS, InlineGuard, interrupted, run_inline
from ._lane_state import end_groups_here
from ._pool_base import Borrowing, ReaderPool, checkin, close_quietly
from ._pool_per_thread import PerThreadPool

__all__ = ("PerThreadPool", "ReadPool", "ReaderPool", "make_pool", "thread_name")

logger = logging.getLogger("litegate")

T = TypeVar("T")
_SPARE_CLOSE_WAIT = 2.0  # seconds close() waits for a reader being opened for a loop
_CLOSED = object()  # put in a closed pool's queue: wakes its waiters with Closed
_WINDOW = 4096


def thread_name(ident: int) -> str:
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    return f"thread {ident}"


class _Reader:
    """A pooled connection and what the pool knows of it. ``ident``, ``since``, ``reads`` and
    ``guard`` are written only by its borrower of the moment (handed over through the
    queue)."""

    __slots__ = ("conn", "guard", "ident", "reads", "since")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.ident = 0  # the borrowing thread
        self.since = 0.0  # when it was borrowed
        self.reads = 0
        # The inline budget's progress handler, installed on the connection by the loop's
        # inline reads (ReadPool.inline) and left there for the next; removed (None) before
        # the reader is lent any other way (_unguarded).
        self.guard: InlineGuard | None = None


def _unguarded(reader: _Reader) -> _Reader:
    """``reader`` without the inline guard (its borrower's: before any other use)."""
    if reader.guard is not None:
        reader.conn.set_progress_handler(None, 0)
        reader.guard = None
    return reader


class ReadPool(Borrowing):
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
    waits, timeouts, _stash,
    _spare
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
        self._spare: Future[None] | None = None  # a helper thread's open (open_spare; done: stale)
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
        if reader.guard is not None:
            _unguarded(reader)
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
            if self._closed:  # close() emptied the queue meanwhile and may have missed it
                self._drain()
            return super().query(sql, params, timeout, first)
        if reader.guard is not None:
            _unguarded(reader)
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

    def run(self, fn: Fn[T], args: Args, timeout: Bound) -> T:
        # query()'s hot path for a job: borrowed, run and given back in this one frame
        # (run_limited inlined, no time limit) -- the drop-in's reads come this way.
        try:
            reader = self._free.get_nowait()
        except queue.Empty:
            return super().run(fn, args, timeout)
        if type(reader) is not _Reader or self._closed:
            self._free.put(reader)
            if self._closed:  # (as query's)
                self._drain()
            return super().run(fn, args, timeout)
        if reader.guard is not None:
            _unguarded(reader)
        reader.ident = get_ident()
        reader.since = monotonic()
        conn = reader.conn
        self._holders[id(conn)] = reader
        clean = False
        try:
            try:
                result = fn(conn, *args)
            except sqlite3.DatabaseError as exc:
                reraise(exc)  # (a refused PRAGMA or ATTACH: Refused, saying which)
            try:
                clean = not conn.in_transaction
            except sqlite3.ProgrammingError:  # (as run_limited's)
                raise closed_by_function() from None
            reader.reads += 1
            return result
        finally:
            # _give_back, inlined: this is every read of litegate.sqlite3's, and the call was
            # ~600 of its ~34,000 instructions (callgrind)
            if clean and not self._closed:
                del self._holders[id(conn)]
                self._free.put(reader)
                if self._closed:  # close() ran meanwhile and may have missed it
                    self._drain()
            else:
                self.release(conn)

    def inline(self, fn: Fn[T], args: Args) -> T:
        """The loop's inline read (the engine's ``query_inline``): an idle reader borrowed,
        ``fn(conn, *args)`` run on it within the inline budget -- its guard armed, installed
        once and left for the next such read -- and given back, in this one frame. MISS when
        no reader is idle (the caller then waits for one) or the read ran over its budget (it
        was interrupted: a read, nothing of it remains)."""
        try:
            reader = self._free.get_nowait()
        except queue.Empty:
            return cast(T, MISS)
        if type(reader) is not _Reader or self._closed:  # (a free slot or the closed mark)
            self._free.put(reader)
            if self._closed:  # (as query's)
                self._drain()
            conn = self.try_acquire()  # (the general way; unguarded)
            result = cast(T, MISS)
            if conn is None:
                return result
            try:
                result = run_inline(conn, fn, args)
            finally:
                self.release(conn, 0 if result is MISS else 1)
            return result
        reader.ident = get_ident()
        reader.since = monotonic()
        conn = reader.conn
        self._holders[id(conn)] = reader
        guard = reader.guard
        if guard is None:
            reader.guard = guard = InlineGuard()
            conn.set_progress_handler(guard.over, PROGRESS_STEPS)
        clean = False
        try:
            guard.arm()
            try:
                result = fn(conn, *args)
            except sqlite3.DatabaseError as exc:
                if not interrupted(exc):
                    reraise(exc)  # (a refused PRAGMA or ATTACH: Refused, saying which)
                result = cast(T, MISS)
            try:
                clean = not conn.in_transaction
            except sqlite3.ProgrammingError:  # (as run's)
                raise closed_by_function() from None
            if result is not MISS:
                reader.reads += 1
            return result
        finally:
            self._give_back(reader, clean)

    def _give_back(self, reader: _Reader, clean: bool) -> None:
        """The end of run's and inline's one frame: release() inlined for a clean reader of
        an open pool, else the general way."""
        conn = reader.conn
        if clean and not self._closed:
            del self._holders[id(conn)]
            self._free.put(reader)
            if self._closed:  # close() ran meanwhile and may have missed it
                self._drain()
        else:
            self.release(conn)

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

    def open_spare(self) -> Future[None] | None:
        """An event loop found no idle reader: if a slot was never opened, open it on a helper
        thread and make it idle; returns the open's future (set when it ends, opened or not),
        or None (no slot left to open, or the pool's lock busy: the loop never waits for it,
        e.g. behind a fork's :meth:`quiesce`). One such open at a time: callers meanwhile get
        the same future. Without it, reads the loop found no reader for went to reader
        threads, which open one reader each -- the last slot was opened only when one of them
        found none idle: until then the loop read inline only while a reader thread had left
        a reader idle, and at start every task's first read went to a thread (64 tasks: 64
        reads convoyed on the GIL, the loop 30-150 ms late; issue 11)."""
        if not self._lock.acquire(blocking=False):  # (a fork's quiesce holds it: not now)
            return None
        try:
            if self._spare is not None and not self._spare.done():
                return self._spare
            if not self._unopened or self._closed:
                return None
            self._unopened -= 1
            fut: Future[None] = Future()
            self._spare = fut
        finally:
            self._lock.release()
        # A threading.Thread (a raw thread that logs leaves a _DummyThread behind for good),
        # started by a raw one: Thread.start() waits for the new thread to run (_start_spare).
        t = threading.Thread(target=self._open_spare, args=(fut,), daemon=True)
        t.name = f"litegate-open-reader:{self.opts.name}"
        try:
            start_new_thread(self._start_spare, (t, fut))
        except RuntimeError:  # (no thread to be had: the read goes the way it went before)
            self._free.put(None)  # (the slot: a borrower opens it)
            self._spare_done(None, fut)
            return None
        return fut

    def _start_spare(self, t: threading.Thread, fut: Future[None]) -> None:
        try:
            t.start()
        except BaseException:
            self._free.put(None)
            self._spare_done(None, fut)

    def _open_spare(self, fut: Future[None]) -> None:
        """Helper thread: open a slot's reader and make it idle (see :meth:`open_spare`)."""
        reader: _Reader | None = None
        try:
            if not self._closed:
                reader = self._open_slot()  # (on failure the slot goes back as ``None``)
        except Closed:
            pass
        except Exception:
            logger.exception("litegate: opening a reader failed")
        finally:
            self._spare_done(reader, fut)

    def _spare_done(self, reader: _Reader | None, fut: Future[None]) -> None:
        """The spare open ended: its reader is made idle first (a read that found neither it
        nor a spare being opened would open another slot), then the open is over."""
        if reader is not None:
            self._free.put(reader)
            if self._closed:  # close() ran meanwhile and may have missed it
                self._drain()
        if self._lock.acquire(blocking=False):  # (else open_spare finds it done, later)
            if self._spare is fut:
                self._spare = None
            self._lock.release()
        fut.set_result(None)  # (never cancelled: awaited through asyncio.wait, which leaves
        # its futures alone)

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
        """Block for a free slot until ``deadline``, in slices of at most a second. An event
        loop's thread (a blocking call from a coroutine) ends its loop's write groups first:
        a reader's borrower may be waiting for the lane such a group holds."""
        end_groups_here()  # (one that cannot end -- called from its statement -- only waits)
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
            close_quietly(conn)
            return
        reader.reads += reads
        try:
            if conn.in_transaction and not checkin(conn):
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
        close_quietly(reader.conn)

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
        spare = self._spare  # (a reader being opened for a loop: closed by its helper when
        if spare is not None:  # done; waited for briefly, so that none is open after close)
            try:
                spare.result(timeout=_SPARE_CLOSE_WAIT)
            except TimeoutError:
                logger.warning("litegate: a reader still opening at close will close itself")

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


def make_pool(opts: Options) -> ReaderPool | None:
    if opts.readers == "per-thread":
        return PerThreadPool(opts)
    if opts.readers == 0:
        return None
    return ReadPool(opts, int(opts.readers))
